// Command devrun runs the service locally (`make run`) and mints tokens for its demo user
// (`make token`).
//
//	devrun run -app dist [-listen 127.0.0.1:7071]   Azurite + PostgreSQL + issuer + local host + demo seed
//	devrun token [-user <oid>]                      a bearer token for the running instance
//	devrun archive -snapshot <id> [-o file]         download a snapshot's archive from its Azurite
package main

import (
	"context"
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

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth/localissuer"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/dev/devstack/stack"
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
	st, err := stack.Start(ctx, stack.Options{AppDir: absApp, Listen: *listen, StateDir: abs, Logger: log})
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
		BlobURL: st.Azurite.BlobURL, StorageConnectionString: st.Azurite.ConnectionString()})
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
  API (local Functions host):  %[1]s/api
  Health:                      %[1]s/api/health
  OpenAPI:                     %[1]s/api/v1/openapi.json
  OIDC issuer:                 %[2]s
  Azurite blob/table:          %[3]s  %[4]s
  Archives:                    container snapshots of that blob endpoint, <namespace>/<environment>/<snapshot>/attempt-NN.tar.gz
  Azurite connection string:   %[10]s
  PostgreSQL 15:               127.0.0.1:%[5]d (user postgres, password %[6]s)
Demo: namespace %[7]q, environment %[8]s (stopped, deployed), user %[9]s.
Get a token:   TOKEN=$(make -s token)
Try:           curl -H "Authorization: Bearer $TOKEN" %[1]s/api/v1/namespaces/%[7]s/environments
These addresses (except %[1]s) change with every run; %[11]s has them too.
Ctrl-C stops everything.
`, st.URL, st.IssuerURL, st.Azurite.BlobURL, st.Azurite.TableURL, st.Postgres.Port, st.Postgres.Password,
		demo.Namespace, demo.EnvironmentID, stack.DemoUserID, st.Azurite.ConnectionString(), filepath.Join(stateDir, runFile))
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
	file, blobName, err := downloadArchive(context.Background(), stateDir, *ns, *env, *snap, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s/%s -> %s\n", snapshotsContainer, blobName, file)
	return nil
}

// snapshotsContainer holds the archives: the handler's default SNAPSHOTS_CONTAINER, which the stack keeps.
const snapshotsContainer = "snapshots"

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

// downloadArchive saves the archive of one snapshot from the running `make run`'s Azurite to out (default
// <snapshot>.tar.gz) and returns the file and the blob it came from.
func downloadArchive(ctx context.Context, dir, namespace, envID, snapshotID, out string) (file, blobName string, err error) {
	state, err := liveRun(ctx, dir)
	if err != nil {
		return "", "", err
	}
	if snapshotID, err = backup.ValidateUUID("snapshot id", snapshotID); err != nil {
		return "", "", err
	}
	client, err := azblob.NewClientFromConnectionString(state.StorageConnectionString, nil)
	if err != nil {
		return "", "", fmt.Errorf("azurite: %w", err)
	}
	prefix := blobstore.Layout{}.SnapshotPrefix(namespace, envID, snapshotID)
	pager := client.NewListBlobsFlatPager(snapshotsContainer, &azblob.ListBlobsFlatOptions{Prefix: &prefix})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return "", "", fmt.Errorf("list %s/%s: %w", snapshotsContainer, prefix, err)
		}
		for _, b := range page.Segment.BlobItems {
			blobName = *b.Name // names sort by attempt: the last one is the newest
		}
	}
	if blobName == "" {
		return "", "", fmt.Errorf("snapshot %s has no archive in container %s (is it Finished?)", snapshotID, snapshotsContainer)
	}
	if out == "" {
		out = snapshotID + ".tar.gz"
	}
	resp, err := client.DownloadStream(ctx, snapshotsContainer, blobName, nil)
	if err != nil {
		return "", "", fmt.Errorf("download %s: %w", blobName, err)
	}
	defer resp.Body.Close()
	f, err := os.Create(out)
	if err != nil {
		return "", "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return "", "", fmt.Errorf("download %s: %w", blobName, err)
	}
	return out, blobName, f.Close()
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
