package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
	"github.com/mxazure/backups/internal/pg"
	"github.com/mxazure/backups/internal/snapshotter"
	"github.com/mxazure/backups/internal/tablestore"
)

// The run the archive tests describe: a table prefix and containers other than the handler's defaults,
// so that a devrun that ignored run.json would find nothing.
const (
	testNamespace   = "devrun-ns"
	testEnvironment = "0b6c1c52-8f1e-4c3a-9d7e-5a2b3c4d5e6f"
	testPrefix      = "devrun"
	testSnapshots   = "devrun-snapshots"
	testFileStore   = "devrun-files"
	testFiles       = "app-files"
)

// archiveFixture is a live run (fake host and issuer, see fakeRun) whose storage is a real Azurite,
// with an environment whose database is a real PostgreSQL database and whose file documents are
// blobs: snapshots are made by the real snapshotter and recorded in Table Storage as the handler does.
type archiveFixture struct {
	dir     string // the run's state dir (.local)
	tables  *tablestore.Store
	blobs   *blobstore.Store
	snap    *snapshotter.Snapshotter
	env     backup.Environment
	content map[string][]byte // the file documents, by UUID
}

func newArchiveFixture(t *testing.T) *archiveFixture {
	t.Helper()
	ctx := context.Background()
	cluster := pgcluster.ForTest(t)
	az := azurite.ForTest(t)
	f := &archiveFixture{dir: filepath.Join(t.TempDir(), stateDir), content: map[string][]byte{}}
	if err := os.Mkdir(f.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	state := fakeRun(t, f.dir)
	state.StorageConnectionString = az.ConnectionString()
	state.TablePrefix, state.SnapshotsContainer, state.FileStoreContainer = testPrefix, testSnapshots, testFileStore
	writeRun(t, f.dir, state)

	var err error
	if f.tables, err = tablestore.NewFromConnectionString(az.ConnectionString(), testPrefix); err != nil {
		t.Fatal(err)
	}
	if err := f.tables.EnsureTables(ctx); err != nil {
		t.Fatal(err)
	}
	if f.blobs, err = blobstore.NewFromConnectionString(az.ConnectionString(), testSnapshots, blobstore.Options{FileStoreContainer: testFileStore}); err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.EnsureContainers(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.blobs.Client().CreateContainer(ctx, testFiles, nil); err != nil {
		t.Fatal(err)
	}
	if err := cluster.CreateDatabase(ctx, "app", "postgres"); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for i := range 5 {
		u := uuid.NewString()
		content := bytes.Repeat([]byte(fmt.Sprintf("document %d\n", i)), 300*(i+1))
		f.content[u] = content
		if _, err := f.blobs.Client().UploadBuffer(ctx, testFiles, "docs/"+u, content, nil); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, fmt.Sprintf("(%d, '%s', %d, true, false)", i, u, len(content)))
	}
	err = cluster.Exec(ctx, "app", `CREATE TABLE "system$filedocument" (id bigint, __uuid__ varchar(36), size bigint, hascontents bool, deleteafterdownload bool);
		INSERT INTO "system$filedocument" VALUES `+strings.Join(rows, ",")+`;
		CREATE TABLE "shop$order" AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g;`)
	if err != nil {
		t.Fatal(err)
	}
	f.env = backup.Environment{ID: testEnvironment, Namespace: testNamespace, ModelVersion: "1.2.3",
		Database: backup.DatabaseLocation{Host: cluster.Host, Port: cluster.Port, Name: "app", Role: "postgres"},
		Files:    backup.FileLocation{Container: testFiles, Prefix: "docs/"}}
	f.snap = &snapshotter.Snapshotter{
		Dumper: &pg.Dumper{BinDir: cluster.BinDir, Logger: zerolog.Nop()},
		Blobs:  f.blobs,
		Conn: func(env backup.Environment) pg.Conn {
			return pg.Conn{Host: env.Database.Host, Port: env.Database.Port, Database: env.Database.Name,
				User: cluster.User, Password: cluster.Password, SSLMode: "disable"}
		},
		Log: zerolog.Nop(),
	}
	return f
}

// incremental makes a snapshot as a backup job does (under fence 1) and records it Finished.
func (f *archiveFixture) incremental(t *testing.T) backup.Snapshot {
	t.Helper()
	ctx := context.Background()
	id := uuid.NewString()
	l := blobstore.Layout{}
	created := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	sn := backup.Snapshot{ID: id, Namespace: testNamespace, EnvironmentID: testEnvironment, Kind: backup.KindManual,
		CreatedAt: created, UpdatedAt: created, ExpiresAt: created.AddDate(0, 0, 14), ModelVersion: f.env.ModelVersion,
		DumpPath: l.SnapshotDump(testNamespace, testEnvironment, id, 1), ManifestPath: l.SnapshotManifest(testNamespace, testEnvironment, id, 1)}
	res, err := f.snap.Create(ctx, backup.SnapshotRequest{Environment: f.env, SnapshotID: id, DumpPath: sn.DumpPath, ManifestPath: sn.ManifestPath})
	if err != nil {
		t.Fatal(err)
	}
	if res.FilesCount != len(f.content) {
		t.Fatalf("the snapshot has %d files, want %d (warnings %v)", res.FilesCount, len(f.content), res.Warnings)
	}
	sn.Status, sn.FinishedAt = backup.SnapshotFinished, time.Now().UTC()
	sn.SizeBytes, sn.SHA256, sn.DatabaseSizeBytes, sn.DumpSizeBytes = res.SizeBytes, res.SHA256, res.DatabaseSizeBytes, res.DumpSizeBytes
	sn.FilesBytes, sn.FilesCount = res.FilesBytes, res.FilesCount
	f.record(t, sn)
	return sn
}

func (f *archiveFixture) record(t *testing.T, sn backup.Snapshot) {
	t.Helper()
	if err := f.tables.CreateSnapshot(context.Background(), sn); err != nil {
		t.Fatal(err)
	}
}

// snapshotBlobs lists the blobs in the snapshot's folder.
func (f *archiveFixture) snapshotBlobs(t *testing.T, id string) []string {
	t.Helper()
	prefix := blobstore.Layout{}.SnapshotPrefix(testNamespace, testEnvironment, id)
	pager := f.blobs.Client().NewListBlobsFlatPager(testSnapshots, &container.ListBlobsFlatOptions{Prefix: &prefix})
	var names []string
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	slices.Sort(names)
	return names
}

func (f *archiveFixture) download(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := f.blobs.Client().DownloadStream(context.Background(), testSnapshots, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *archiveFixture) archive(t *testing.T, id, out string) (archiveFile, error) {
	t.Helper()
	return downloadArchive(context.Background(), f.dir, testNamespace, testEnvironment, id, out, zerolog.New(zerolog.NewTestWriter(t)))
}

// readArchive reads a .tar.gz with Go's readers: every entry's bytes by name.
func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	zr, err := gzip.NewReader(file)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			if _, err := io.Copy(io.Discard, zr); err != nil { // the gzip trailer
				t.Fatalf("after the tar's end: %v", err)
			}
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if out[h.Name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// onlyFile fails unless dir holds exactly the file name (no partial download left beside it).
func onlyFile(t *testing.T, dir, name string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{name}; name == "" && len(names) != 0 || name != "" && !slices.Equal(names, want) {
		t.Errorf("%s holds %v, want only %q", dir, names, name)
	}
}

// TestArchive: devrun archive reads the snapshot's record from the run's Table Storage (its table
// prefix and containers from run.json), assembles an incremental snapshot's archive into a temporary
// blob that it deletes again, downloads a one-archive snapshot's blob as it is, and refuses what has no
// archive without leaving a file or a blob behind.
func TestArchive(t *testing.T) {
	f := newArchiveFixture(t)
	sn := f.incremental(t)
	parts := f.snapshotBlobs(t, sn.ID)

	t.Run("incremental snapshot: assembled, checked, temporary blob deleted", func(t *testing.T) {
		dir := t.TempDir()
		out := filepath.Join(dir, "snap.tar.gz")
		got, err := f.archive(t, sn.ID, out)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Assembled || got.File != out || !strings.Contains(got.Source, sn.DumpPath) || !strings.Contains(got.Source, sn.ManifestPath) {
			t.Errorf("result %+v", got)
		}
		if sum := sha256File(t, out); got.SHA256 != sum {
			t.Errorf("reported SHA-256 %s, the file's is %s", got.SHA256, sum)
		}
		if st, _ := os.Stat(out); st == nil || st.Size() != got.Size {
			t.Errorf("reported %d bytes, the file is %v", got.Size, st)
		}
		entries := readArchive(t, out)
		want := []string{".metadata", "db/db.backup"}
		for u, content := range f.content {
			name := "tree/" + u[0:2] + "/" + u[2:4] + "/" + u
			want = append(want, name)
			if !bytes.Equal(entries[name], content) {
				t.Errorf("%s: %d bytes, want the file document's %d", name, len(entries[name]), len(content))
			}
		}
		var names []string
		for name := range entries {
			names = append(names, name)
		}
		slices.Sort(names)
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Errorf("entries %v, want %v", names, want)
		}
		// db/db.backup is the dump blob's content, byte for byte.
		zr, err := gzip.NewReader(bytes.NewReader(f.download(t, sn.DumpPath)))
		if err != nil {
			t.Fatal(err)
		}
		dump, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(entries["db/db.backup"], dump) || !bytes.HasPrefix(dump, []byte("PGDMP")) || int64(len(dump)) != sn.DumpSizeBytes {
			t.Errorf("db/db.backup: %d bytes, the dump blob holds %d (record %d)", len(entries["db/db.backup"]), len(dump), sn.DumpSizeBytes)
		}
		if !bytes.Contains(entries[".metadata"], []byte(`"modelVersion":"1.2.3"`)) {
			t.Errorf(".metadata %s", entries[".metadata"])
		}
		if left := f.snapshotBlobs(t, sn.ID); !slices.Equal(left, parts) {
			t.Errorf("blobs of the snapshot after the download %v, want only its parts %v", left, parts)
		}
		onlyFile(t, dir, "snap.tar.gz")
	})

	t.Run("default output file", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		got, err := f.archive(t, sn.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if got.File != sn.ID+".tar.gz" || sha256File(t, got.File) != got.SHA256 {
			t.Errorf("result %+v", got)
		}
		onlyFile(t, dir, sn.ID+".tar.gz")
	})

	t.Run("one-archive snapshot: its blob as it is", func(t *testing.T) {
		id := uuid.NewString()
		path := blobstore.Layout{}.SnapshotArchive(testNamespace, testEnvironment, id, 2)
		content := bytes.Repeat([]byte("an archive made before incremental snapshots\n"), 1000)
		if _, err := f.blobs.Client().UploadBuffer(context.Background(), testSnapshots, path, content, nil); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(content)
		old := sn
		old.ID, old.DumpPath, old.ManifestPath, old.BlobPath, old.SHA256 = id, "", "", path, hex.EncodeToString(sum[:])
		f.record(t, old)
		out := filepath.Join(t.TempDir(), "old.tar.gz")
		got, err := f.archive(t, id, out)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(out)
		if got.Assembled || got.Source != path || got.SHA256 != old.SHA256 || !bytes.Equal(b, content) {
			t.Errorf("result %+v, %d bytes; want the blob's %d bytes", got, len(b), len(content))
		}
		if left := f.snapshotBlobs(t, id); !slices.Equal(left, []string{path}) {
			t.Errorf("blobs after the download %v", left)
		}
	})

	refusals := map[string]struct {
		setup func(t *testing.T) string // returns the snapshot id
		want  string
	}{
		"unknown snapshot": {func(*testing.T) string { return uuid.NewString() }, "not found"},
		"processing": {func(t *testing.T) string {
			p := sn
			p.ID, p.Status, p.DumpPath, p.ManifestPath, p.SHA256 = uuid.NewString(), backup.SnapshotProcessing, "", "", ""
			f.record(t, p)
			return p.ID
		}, "is Processing"},
		"deleted": {func(t *testing.T) string {
			d := sn
			d.ID, d.DeletedAt = uuid.NewString(), time.Now().UTC()
			f.record(t, d)
			return d.ID
		}, "not found"},
		"manifest lost: the assembly fails": {func(t *testing.T) string {
			lost := f.incremental(t)
			if err := f.blobs.DeleteBlob(context.Background(), lost.ManifestPath); err != nil {
				t.Fatal(err)
			}
			return lost.ID
		}, "assemble the archive"},
		"one-archive blob that differs from its record": {func(t *testing.T) string {
			id := uuid.NewString()
			path := blobstore.Layout{}.SnapshotArchive(testNamespace, testEnvironment, id, 1)
			if _, err := f.blobs.Client().UploadBuffer(context.Background(), testSnapshots, path, []byte("changed"), nil); err != nil {
				t.Fatal(err)
			}
			old := sn
			old.ID, old.DumpPath, old.ManifestPath, old.BlobPath = id, "", "", path
			old.SHA256 = strings.Repeat("ab", 32)
			f.record(t, old)
			return id
		}, "has SHA-256"},
	}
	for name, tc := range refusals {
		t.Run(name, func(t *testing.T) {
			id := tc.setup(t)
			before := f.snapshotBlobs(t, id)
			dir := t.TempDir()
			got, err := f.archive(t, id, filepath.Join(dir, "a.tar.gz"))
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errNotRunning) {
				t.Errorf("got %+v, %v; want an error saying %q", got, err, tc.want)
			}
			onlyFile(t, dir, "")
			if after := f.snapshotBlobs(t, id); !slices.Equal(after, before) {
				t.Errorf("blobs of the snapshot %v, before %v: a temporary blob was left", after, before)
			}
		})
	}

	// The command itself: the SHA-256 on stdout in sha256sum's format, what it did on stderr.
	t.Run("command", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "devrun")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		cmd := exec.Command(bin, "archive", "-namespace", testNamespace, "-environment", testEnvironment, "-snapshot", sn.ID, "-o", "x.tar.gz")
		cmd.Dir = filepath.Dir(f.dir) // holds .local
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("devrun archive: %v\n%s", err, stderr.String())
		}
		file := filepath.Join(cmd.Dir, "x.tar.gz")
		defer os.Remove(file)
		if want := sha256File(t, file) + "  x.tar.gz\n"; stdout.String() != want {
			t.Errorf("stdout %q, want %q", stdout.String(), want)
		}
		if !strings.Contains(stderr.String(), "assembled from "+sn.DumpPath) {
			t.Errorf("stderr %q", stderr.String())
		}
		check := exec.Command("sha256sum", "-c")
		check.Dir, check.Stdin = cmd.Dir, strings.NewReader(stdout.String())
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
	})
}
