// Command devrun runs the service locally (`make run`) and mints tokens for its demo user
// (`make token`).
//
//	devrun run -app dist [-listen 127.0.0.1:7071]   Azurite + PostgreSQL + issuer + local host + demo seed
//	devrun token [-user <oid>]                      a bearer token for the running instance
//	devrun archive -snapshot <id> [-o file]         a snapshot's Mendix archive, assembled in its Azurite
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth/localissuer"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/dev/devstack/stack"
	"github.com/mxazure/backups/internal/snapshotter"
	"github.com/mxazure/backups/internal/tablestore"
)

// stateDir keeps the issuer key and the description of the running instance, for `make token`.
const (
	stateDir      = ".local"
	runFile       = "run.json"       // written when the stack is up, removed when it stops
	issuerKeyFile = "issuer-key.pem" // stack.Start keeps the issuer's key here
)

// runState is .local/run.json: what `make token` and scripts need of the running instance.
type runState struct {
	URL       string `json:"url"`
	IssuerURL string `json:"issuer_url"`
	Audience  string `json:"audience"`
	// BlobURL and StorageConnectionString reach the local Azurite, e.g. to download an archive.
	BlobURL                 string `json:"blob_url"`
	StorageConnectionString string `json:"storage_connection_string"`
	// TablePrefix, SnapshotsContainer and FileStoreContainer are the handler's TABLE_PREFIX,
	// SNAPSHOTS_CONTAINER and FILE_STORE_CONTAINER: where its records and blobs are. A run.json without
	// the containers means the handler's defaults.
	TablePrefix        string `json:"table_prefix"`
	SnapshotsContainer string `json:"snapshots_container,omitempty"`
	FileStoreContainer string `json:"file_store_container,omitempty"`
}

// The storage settings `make run` gives the handler (the handler's defaults, set explicitly so that
// run.json says what the handler was given).
const (
	runTablePrefix        = ""
	runSnapshotsContainer = "snapshots"
	runFileStoreContainer = blobstore.DefaultFileStoreContainer
)

// storageSettings are the handler settings that runState records.
// demoScheduleSpread is SCHEDULE_SPREAD under make run.
const demoScheduleSpread = "1m"

func storageSettings() map[string]string {
	return map[string]string{"TABLE_PREFIX": runTablePrefix, "SNAPSHOTS_CONTAINER": runSnapshotsContainer,
		"FILE_STORE_CONTAINER": runFileStoreContainer}
}

func (s runState) snapshotsContainer() string {
	if s.SnapshotsContainer == "" {
		return runSnapshotsContainer
	}
	return s.SnapshotsContainer
}

func (s runState) fileStoreContainer() string {
	if s.FileStoreContainer == "" {
		return runFileStoreContainer
	}
	return s.FileStoreContainer
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: devrun run -app DIR | devrun token [-user OID] | devrun archive -snapshot ID [-o FILE]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "token":
		err = token(os.Args[2:])
	case "archive":
		err = archiveCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (run, token, archive)", os.Args[1])
	}
	if errors.Is(err, errNotRunning) {
		fmt.Fprintln(os.Stderr, err) // a sentence for the user, nothing more
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devrun:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	app := fs.String("app", "dist", "app folder: host.json, function folders and the handler binary (make package)")
	listen := fs.String("listen", "127.0.0.1:7071", "address of the local Functions host")
	_ = fs.Parse(args)

	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stdout, TimeFormat: time.TimeOnly}).With().Timestamp().Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	absApp, err := filepath.Abs(*app)
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(stateDir)
	env := storageSettings()
	// The demo's automatic backups run within a minute of a timer (POST /admin/functions/NightlyBackups),
	// not spread over the two hours a deployment uses.
	env["SCHEDULE_SPREAD"] = demoScheduleSpread
	st, err := stack.Start(ctx, stack.Options{AppDir: absApp, Listen: *listen, StateDir: abs, Logger: log, Env: env})
	if err != nil {
		return err
	}
	defer func() {
		log.Info().Msg("stopping")
		stopCtx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		if err := st.Stop(stopCtx); err != nil {
			log.Warn().Err(err).Msg("stop")
		}
	}()
	state, _ := json.Marshal(runState{URL: st.URL, IssuerURL: st.IssuerURL, Audience: stack.Audience,
		BlobURL: st.Azurite.BlobURL, StorageConnectionString: st.Azurite.ConnectionString(),
		TablePrefix: runTablePrefix, SnapshotsContainer: runSnapshotsContainer, FileStoreContainer: runFileStoreContainer})
	runPath := filepath.Join(abs, runFile)
	if err := os.WriteFile(runPath, state, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", runPath, err)
	}
	defer os.Remove(runPath) // runs before the stack stops: make token refuses from then on
	log.Info().Msg("seeding the demo environment")
	demo, err := st.SeedDemo(ctx)
	if err != nil {
		return err
	}
	fmt.Printf(`
The backup service is running.
  Web console:                 %[14]s  (signs in as the demo user)
  API (local Functions host):  %[1]s/api
  Health:                      %[1]s/api/health
  OpenAPI:                     %[1]s/api/v1/openapi.json
  OIDC issuer:                 %[2]s
  Azurite blob/table:          %[3]s  %[4]s
  Snapshots:                   container %[12]s of that blob endpoint, <namespace>/<environment>/<snapshot>/attempt-NN.{db.backup,manifest}.gz
  File stores:                 container %[13]s, <namespace>/<environment>/<uuid>/<size>-...
  An archive:                  bin/devrun archive -snapshot <snapshot_id> -o snap.tar.gz
  Azurite connection string:   %[10]s
  PostgreSQL 15:               127.0.0.1:%[5]d (user postgres, password %[6]s)
Demo: namespace %[7]q, environment %[8]s (stopped, deployed), user %[9]s.
Get a token:   TOKEN=$(make -s token)
Try:           curl -H "Authorization: Bearer $TOKEN" %[1]s/api/v1/namespaces/%[7]s/environments
These addresses (except %[1]s) change with every run; %[11]s has them too.
Ctrl-C stops everything.
`, st.URL, st.IssuerURL, st.Azurite.BlobURL, st.Azurite.TableURL, st.Postgres.Port, st.Postgres.Password,
		demo.Namespace, demo.EnvironmentID, stack.DemoUserID, st.Azurite.ConnectionString(), filepath.Join(stateDir, runFile),
		runSnapshotsContainer, runFileStoreContainer, st.ConsoleURL())
	<-ctx.Done()
	return nil
}

func token(args []string) error {
	fs := flag.NewFlagSet("token", flag.ExitOnError)
	user := fs.String("user", stack.DemoUserID, "principal (oid) of the token")
	name := fs.String("name", stack.DemoUserName, "display name")
	ttl := fs.Duration("ttl", 8*time.Hour, "token lifetime")
	_ = fs.Parse(args)
	tok, err := mintToken(context.Background(), stateDir, localissuer.TokenRequest{Subject: *user, ObjectID: *user, Name: *name, TTL: *ttl})
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}

func archiveCmd(args []string) error {
	fs := flag.NewFlagSet("archive", flag.ExitOnError)
	ns := fs.String("namespace", stack.DemoNamespace, "namespace")
	env := fs.String("environment", stack.DemoEnvironmentID, "environment id")
	snap := fs.String("snapshot", "", "snapshot id (required)")
	out := fs.String("o", "", "output file (default <snapshot>.tar.gz)")
	_ = fs.Parse(args)
	// Ctrl-C ends the download cleanly: the temporary blob of an assembly is deleted, no partial file
	// is left.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).With().Timestamp().Logger().Level(zerolog.WarnLevel)
	got, err := downloadArchive(ctx, stateDir, *ns, *env, *snap, *out, log)
	if err != nil {
		return err
	}
	how := "downloaded " + got.Source
	if got.Assembled {
		how = "assembled from " + got.Source
	}
	fmt.Fprintf(os.Stderr, "snapshot %s: %d bytes, %s -> %s\n", *snap, got.Size, how, got.File)
	fmt.Printf("%s  %s\n", got.SHA256, got.File) // the format of sha256sum, so `sha256sum -c` can check it
	return nil
}

// errNotRunning is what `make token` says when there is no `make run` to mint a token for.
var errNotRunning = errors.New("make run is not running: start it in another terminal first")

// mintToken mints a token for the `make run` described in dir/run.json, with its issuer key and
// audience; errNotRunning unless that run is alive (see liveRun).
func mintToken(ctx context.Context, dir string, req localissuer.TokenRequest) (string, error) {
	state, err := liveRun(ctx, dir)
	if err != nil {
		return "", err
	}
	iss, err := localissuer.New(localissuer.Options{KeyFile: filepath.Join(dir, issuerKeyFile), Issuer: state.IssuerURL})
	if err != nil {
		return "", fmt.Errorf("read the issuer key of make run: %w", err)
	}
	req.Audience = state.Audience
	tok, err := iss.Token(req)
	if err != nil {
		return "", fmt.Errorf("mint a token: %w", err)
	}
	return tok, nil
}

// liveRun returns the running `make run` described in dir/run.json, or errNotRunning: when there is no
// run.json (it is removed when the run stops), or the run's issuer or Functions host does not answer
// (the file outlives a killed run).
func liveRun(ctx context.Context, dir string) (runState, error) {
	raw, err := os.ReadFile(filepath.Join(dir, runFile))
	if err != nil {
		return runState{}, errNotRunning
	}
	var state runState
	if err := json.Unmarshal(raw, &state); err != nil || state.URL == "" || state.IssuerURL == "" {
		return runState{}, errNotRunning
	}
	if !answers(ctx, state.IssuerURL+localissuer.DiscoveryPath) || !answers(ctx, state.URL+"/admin/host/status") {
		return runState{}, errNotRunning
	}
	return state, nil
}

// archiveFile is what downloadArchive saved.
type archiveFile struct {
	File   string
	Size   int64
	SHA256 string
	// Source names what it came from: the dump and manifest it was assembled from, or the archive blob
	// of a snapshot made before incremental snapshots.
	Source    string
	Assembled bool
}

// downloadArchive saves the Mendix archive of one Finished snapshot of the running `make run` to out
// (default <snapshot>.tar.gz). It reads the snapshot's record from the run's Table Storage: an
// incremental snapshot's archive is assembled (snapshotter.Assemble, which verifies it) into a
// temporary blob in the snapshot's folder, downloaded and deleted again; a snapshot made before
// incremental snapshots has its archive blob, which is downloaded. The file is written under a
// temporary name and renamed when complete and checked against the SHA-256 the assembly (or the
// record) gives, so that no partial or wrong file is left under out.
func downloadArchive(ctx context.Context, dir, namespace, envID, snapshotID, out string, log zerolog.Logger) (archiveFile, error) {
	state, err := liveRun(ctx, dir)
	if err != nil {
		return archiveFile{}, err
	}
	if err := backup.ValidateNamespace(namespace); err != nil {
		return archiveFile{}, err
	}
	if envID, err = backup.ValidateUUID("environment id", envID); err != nil {
		return archiveFile{}, err
	}
	if snapshotID, err = backup.ValidateUUID("snapshot id", snapshotID); err != nil {
		return archiveFile{}, err
	}
	tables, err := tablestore.NewFromConnectionString(state.StorageConnectionString, state.TablePrefix)
	if err != nil {
		return archiveFile{}, fmt.Errorf("azurite: %w", err)
	}
	blobs, err := blobstore.NewFromConnectionString(state.StorageConnectionString, state.snapshotsContainer(),
		blobstore.Options{FileStoreContainer: state.fileStoreContainer()})
	if err != nil {
		return archiveFile{}, fmt.Errorf("azurite: %w", err)
	}
	sn, err := tables.GetSnapshot(ctx, namespace, envID, snapshotID)
	switch {
	case backup.IsNotFound(err) || (err == nil && sn.Deleted()):
		return archiveFile{}, fmt.Errorf("snapshot %s not found in environment %s of namespace %s", snapshotID, envID, namespace)
	case err != nil:
		return archiveFile{}, fmt.Errorf("read the snapshot's record: %w", err)
	case sn.Status != backup.SnapshotFinished:
		return archiveFile{}, fmt.Errorf("snapshot %s is %s: only a Finished snapshot has an archive", snapshotID, sn.Status)
	}
	if out == "" {
		out = snapshotID + ".tar.gz"
	}

	got := archiveFile{File: out}
	path, want := sn.BlobPath, sn.SHA256
	switch {
	case sn.Incremental():
		got.Source, got.Assembled = sn.DumpPath+" and "+sn.ManifestPath, true
		path = blobstore.Layout{}.SnapshotPrefix(namespace, envID, snapshotID) + "devrun-" + randomHex() + ".tar.gz"
		defer func() {
			// Also after a failure or Ctrl-C: the assembly commits nothing on error, and a blob that is
			// not there is fine.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := blobs.DeleteBlob(dctx, path); err != nil {
				log.Warn().Err(err).Str("blob", path).Msg("could not delete the temporary archive blob; deleting the snapshot removes it")
			}
		}()
		assembler := &snapshotter.Snapshotter{Blobs: blobs, Log: log}
		a, err := assembler.Assemble(ctx, sn, path, nil)
		if err != nil {
			return archiveFile{}, fmt.Errorf("assemble the archive: %w", err)
		}
		want = a.SHA256
	case sn.BlobPath != "":
		got.Source = sn.BlobPath
	default:
		return archiveFile{}, fmt.Errorf("snapshot %s has neither an archive blob nor a dump and manifest", snapshotID)
	}
	got.Size, got.SHA256, err = download(ctx, blobs, path, out)
	if err != nil {
		return archiveFile{}, err
	}
	if want != "" && got.SHA256 != want {
		_ = os.Remove(out)
		return archiveFile{}, fmt.Errorf("the archive downloaded from %s has SHA-256 %s, not %s", path, got.SHA256, want)
	}
	return got, nil
}

// download saves a blob of the snapshots container to out (renamed into place when complete) and
// returns its size and SHA-256.
func download(ctx context.Context, blobs *blobstore.Store, path, out string) (int64, string, error) {
	rc, _, err := blobs.OpenArchive(ctx, path)
	if err != nil {
		return 0, "", fmt.Errorf("download %s: %w", path, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".part-*")
	if err != nil {
		return 0, "", err
	}
	defer os.Remove(f.Name()) // fails once renamed
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), rc)
	if err != nil {
		f.Close()
		return 0, "", fmt.Errorf("download %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return 0, "", err
	}
	if err := f.Close(); err != nil {
		return 0, "", err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// answers reports whether a GET of u answers 200 within a second.
func answers(ctx context.Context, u string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
