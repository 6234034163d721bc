package snapshotter

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
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
)

// fixture is a real PostgreSQL database with file documents and their blobs in real Azurite.
type fixture struct {
	snap    *Snapshotter
	blobs   *blobstore.Store
	az      *azurite.Azurite
	cluster *pgcluster.Cluster
	env     backup.Environment
	files   []string          // UUIDs, in insertion order
	content map[string][]byte // by UUID
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	cluster := pgcluster.ForTest(t)
	az := azurite.ForTest(t)
	blobs, err := blobstore.NewFromConnectionString(az.ConnectionString(), "snapshots")
	if err != nil {
		t.Fatal(err)
	}
	if err := blobs.EnsureContainers(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := blobs.Client().CreateContainer(ctx, "app-files", nil); err != nil {
		t.Fatal(err)
	}
	if err := cluster.CreateDatabase(ctx, "app", "postgres"); err != nil {
		t.Fatal(err)
	}
	f := &fixture{blobs: blobs, az: az, cluster: cluster, content: map[string][]byte{}}
	var rows []string
	for i := 0; i < 8; i++ {
		u := uuid.NewString()
		f.files = append(f.files, u)
		content := []byte(strings.Repeat(fmt.Sprintf("file %d ", i), 5000))
		f.content[u] = content
		if _, err := blobs.Client().UploadBuffer(ctx, "app-files", "docs/"+u, content, nil); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, fmt.Sprintf("(%d, '%s', %d, true, false)", i, u, len(content)))
	}
	err = cluster.Exec(ctx, "app", `CREATE TABLE "system$filedocument" (id bigint, __uuid__ varchar(36), size bigint, hascontents bool, deleteafterdownload bool);
		INSERT INTO "system$filedocument" VALUES `+strings.Join(rows, ",")+`;
		CREATE TABLE data AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;`)
	if err != nil {
		t.Fatal(err)
	}
	f.env = backup.Environment{ID: uuid.NewString(), Namespace: "ns", ModelVersion: "1.2.3",
		Database: backup.DatabaseLocation{Host: cluster.Host, Port: cluster.Port, Name: "app", Role: "postgres"},
		Files:    backup.FileLocation{Container: "app-files", Prefix: "docs/"}}
	f.snap = &Snapshotter{
		Dumper: &pg.Dumper{BinDir: cluster.BinDir, Logger: zerolog.Nop()},
		Blobs:  blobs,
		Conn: func(env backup.Environment) pg.Conn {
			return pg.Conn{Host: env.Database.Host, Port: env.Database.Port, Database: env.Database.Name,
				User: cluster.User, Password: cluster.Password, SSLMode: "disable"}
		},
		FileWorkers: 4,
		RetryDelay:  10 * time.Millisecond,
		Log:         zerolog.Nop(),
	}
	return f
}

// blobNames lists the snapshots container under prefix.
func (f *fixture) blobNames(t *testing.T, prefix string) []string {
	t.Helper()
	pager := f.blobs.Client().NewListBlobsFlatPager("snapshots", &container.ListBlobsFlatOptions{Prefix: &prefix})
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
	return names
}

// archivedFiles reads the archive at path with Go's gzip and tar readers: the files under tree/, by UUID.
func (f *fixture) archivedFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	resp, err := f.blobs.Client().DownloadStream(context.Background(), "snapshots", path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			if _, err := io.Copy(io.Discard, zr); err != nil { // the gzip trailer's CRC-32 and length
				t.Fatalf("after the tar's end: %v", err)
			}
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(h.Name, "tree/") {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[h.Name[strings.LastIndexByte(h.Name, '/')+1:]] = data
		}
	}
}

// checkIntact fails unless the archive at path holds every file of the fixture with its bytes.
func (f *fixture) checkIntact(t *testing.T, path string) {
	t.Helper()
	got := f.archivedFiles(t, path)
	if len(got) != len(f.files) {
		t.Errorf("the archive has %d files, want %d", len(got), len(f.files))
	}
	for _, u := range f.files {
		if !bytes.Equal(got[u], f.content[u]) {
			t.Errorf("file %s: %d bytes in the archive, want its %d bytes", u, len(got[u]), len(f.content[u]))
		}
	}
}

func TestCreateWritesAVerifiedArchive(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	var seen []backup.Progress
	path := "ns/e/s/attempt-01.tar.gz"
	res, err := f.snap.Create(context.Background(), backup.SnapshotRequest{Environment: f.env, BlobPath: path,
		Progress: func(p backup.Progress) { mu.Lock(); seen = append(seen, p); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if res.FilesCount != len(f.files) || res.SizeBytes == 0 || len(res.SHA256) != 64 || res.DumpSizeBytes == 0 || res.DatabaseSizeBytes == 0 || len(res.Warnings) != 0 {
		t.Errorf("result: %+v", res)
	}
	if names := f.blobNames(t, ""); len(names) != 1 || names[0] != path {
		t.Errorf("blobs: %v", names)
	}
	f.checkIntact(t, path)

	// Progress goes through the phases in order, and grows within each.
	var phases []string
	for _, p := range seen {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}
	if strings.Join(phases, ",") != "dumping,finishing,verifying" {
		t.Errorf("phases %v", phases)
	}
	var verifying []int64
	for _, p := range seen {
		if p.Phase == "dumping" && p.FilesTotal != len(f.files) {
			t.Errorf("progress %+v: want FilesTotal %d", p, len(f.files))
		}
		if p.Phase == "verifying" {
			verifying = append(verifying, p.BytesDone)
		}
	}
	if len(verifying) < 3 || verifying[len(verifying)-1] != res.SizeBytes {
		t.Errorf("verification reported %d times (%v), want several, ending at the archive's %d bytes", len(verifying), verifying, res.SizeBytes)
	}
	for i := 2; i < len(verifying); i++ { // the first is the phase's start, at 0
		if verifying[i] <= verifying[i-1] {
			t.Errorf("verification progress does not grow: %v", verifying)
			break
		}
	}
}

func TestMissingBlobBecomesAWarning(t *testing.T) {
	f := newFixture(t)
	if _, err := f.blobs.Client().DeleteBlob(context.Background(), "app-files", "docs/"+f.files[2], nil); err != nil {
		t.Fatal(err)
	}
	var last backup.Progress
	res, err := f.snap.Create(context.Background(), backup.SnapshotRequest{Environment: f.env, BlobPath: "ns/e/s/attempt-01.tar.gz",
		Progress: func(p backup.Progress) {
			if p.Phase == "dumping" {
				last = p
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.FilesCount != len(f.files)-1 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], f.files[2]) {
		t.Errorf("got %d files, warnings %v", res.FilesCount, res.Warnings)
	}
	if last.FilesDone != len(f.files) {
		t.Errorf("files done %d of %d: a missing blob counts as done", last.FilesDone, last.FilesTotal)
	}
}

// faultyFiles injects failures into the reads of one blob, and counts opens.
type faultyFiles struct {
	FileSource
	target   string // blob name whose reads fail
	failOpen int    // the first failOpen opens of target fail with err
	failRead int    // the next failRead opens give a reader failing with err after 1000 bytes
	err      error
	hang     bool // every reader of target blocks after 1000 bytes until ctx ends

	opens    atomic.Int64 // of target
	allOpens atomic.Int64
}

func (f *faultyFiles) OpenFile(ctx context.Context, c, name string) (io.ReadCloser, int64, bool, error) {
	f.allOpens.Add(1)
	if name != f.target {
		return f.FileSource.OpenFile(ctx, c, name)
	}
	n := int(f.opens.Add(1))
	if n <= f.failOpen {
		return nil, 0, false, f.err
	}
	r, size, found, err := f.FileSource.OpenFile(ctx, c, name)
	if err != nil || !found {
		return r, size, found, err
	}
	switch {
	case f.hang:
		return &brokenReader{inner: r, left: 1000, ctx: ctx}, size, true, nil
	case n <= f.failOpen+f.failRead:
		return &brokenReader{inner: r, left: 1000, err: f.err}, size, true, nil
	}
	return r, size, true, nil
}

// brokenReader gives left bytes of inner, then fails with err, or blocks until ctx ends.
type brokenReader struct {
	inner io.ReadCloser
	left  int
	err   error
	ctx   context.Context
}

var errConnectionReset = errors.New("read: connection reset by peer")

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		if b.ctx != nil {
			<-b.ctx.Done()
			return 0, b.ctx.Err()
		}
		return 0, b.err
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.inner.Read(p)
	b.left -= n
	return n, err
}

func (b *brokenReader) Close() error { return b.inner.Close() }

// TestFileReadFailures: what one file's read failures do to a backup. Retries restart the file from
// its first byte; the archive then holds its bytes intact (read back with Go's gzip and tar).
func TestFileReadFailures(t *testing.T) {
	f := newFixture(t)
	transientErr := backup.Wrap(backup.CodeTransient, errConnectionReset, "could not read blob docs/x in container app-files: the connection was reset")
	refusedErr := backup.Wrap(backup.CodeInvalidState, errors.New("403 AuthorizationPermissionMismatch"),
		"could not read blob docs/x in container app-files: the service's identity lacks permission (Blob Storage answered 403 AuthorizationPermissionMismatch)")
	target := "docs/" + f.files[3]
	run := func(t *testing.T, files *faultyFiles, tune func(*Snapshotter)) (string, error) {
		snap := *f.snap
		files.FileSource, files.target = f.blobs, target
		snap.Files = files
		if tune != nil {
			tune(&snap)
		}
		path := "ns/e/" + strings.ReplaceAll(t.Name(), "/", "-") + "/attempt-01.tar.gz"
		_, err := snap.Create(t.Context(), backup.SnapshotRequest{Environment: f.env, BlobPath: path})
		return path, err
	}
	smallChunks := func(s *Snapshotter) { s.Archive.ChunkSize = 64 << 10 } // files above 16 KiB stream into blocks of their own

	for _, tt := range []struct {
		name  string
		files *faultyFiles
		tune  func(*Snapshotter)
	}{
		{"a transient failure at open is retried", &faultyFiles{failOpen: 1, err: transientErr}, nil},
		{"a transient failure half-way is retried", &faultyFiles{failRead: 1, err: transientErr}, nil},
		{"a transient failure half-way through a large file is retried", &faultyFiles{failRead: 1, err: transientErr}, smallChunks},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path, err := run(t, tt.files, tt.tune)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.files.opens.Load(); got != 2 {
				t.Errorf("the file was opened %d times, want 2", got)
			}
			f.checkIntact(t, path)
		})
	}

	t.Run("a refused read fails the backup at once", func(t *testing.T) {
		files := &faultyFiles{failOpen: 100, err: refusedErr}
		path, err := run(t, files, nil)
		var be *backup.Error
		if !errors.As(err, &be) || be.Code != backup.CodeInvalidState || be.Message != refusedErr.Message {
			t.Errorf("got %v, want the refusal with its message", err)
		}
		if got := files.opens.Load(); got != 1 {
			t.Errorf("a permanent failure was tried %d times", got)
		}
		if names := f.blobNames(t, strings.TrimSuffix(path, "attempt-01.tar.gz")); len(names) != 0 {
			t.Errorf("a failed build left blobs: %v", names)
		}
	})

	t.Run("repeated transient failures are a transient error", func(t *testing.T) {
		files := &faultyFiles{failRead: 100, err: transientErr}
		path, err := run(t, files, nil)
		if backup.CodeOf(err) != backup.CodeTransient || !errors.Is(err, errConnectionReset) {
			t.Errorf("got %v, want a transient error", err)
		}
		if got := files.opens.Load(); got != fileTries {
			t.Errorf("the file was opened %d times, want %d", got, fileTries)
		}
		if names := f.blobNames(t, strings.TrimSuffix(path, "attempt-01.tar.gz")); len(names) != 0 {
			t.Errorf("a failed build left blobs: %v", names)
		}
	})

	t.Run("an unclassified failure half-way fails the build and commits nothing", func(t *testing.T) {
		files := &faultyFiles{failRead: 1, err: errConnectionReset}
		path, err := run(t, files, nil)
		if !errors.Is(err, errConnectionReset) || files.opens.Load() != 1 {
			t.Errorf("got %v after %d opens, want the read failure after 1", err, files.opens.Load())
		}
		if names := f.blobNames(t, strings.TrimSuffix(path, "attempt-01.tar.gz")); len(names) != 0 {
			t.Errorf("a failed build left blobs: %v", names)
		}
	})

	t.Run("a hung read ends when the context is cancelled", func(t *testing.T) {
		snap := *f.snap
		snap.Files = &faultyFiles{FileSource: f.blobs, target: target, hang: true}
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(500*time.Millisecond, cancel)
		start := time.Now()
		_, err := snap.Create(ctx, backup.SnapshotRequest{Environment: f.env, BlobPath: "ns/e/hung/attempt-01.tar.gz"})
		if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
			t.Errorf("got %v after %s, want context.Canceled soon after the cancel", err, time.Since(start))
		}
		if names := f.blobNames(t, "ns/e/hung/"); len(names) != 0 {
			t.Errorf("a cancelled build left blobs: %v", names)
		}
	})

	t.Run("a build cancelled at the first open commits nothing", func(t *testing.T) {
		snap := *f.snap
		ctx, cancel := context.WithCancel(t.Context())
		snap.Files = cancelOnOpen{FileSource: f.blobs, cancel: cancel}
		_, err := snap.Create(ctx, backup.SnapshotRequest{Environment: f.env, BlobPath: "ns/e/cancelled/attempt-01.tar.gz"})
		if err == nil {
			t.Fatal("a cancelled build succeeded")
		}
		if names := f.blobNames(t, "ns/e/cancelled/"); len(names) != 0 {
			t.Errorf("a cancelled build left blobs: %v", names)
		}
	})

	t.Run("a missing file container is one permanent error", func(t *testing.T) {
		snap := *f.snap
		files := &faultyFiles{FileSource: f.blobs}
		snap.Files = files
		env := f.env
		env.Files.Container = "no-such-container"
		_, err := snap.Create(t.Context(), backup.SnapshotRequest{Environment: env, BlobPath: "ns/e/nocontainer/attempt-01.tar.gz"})
		var be *backup.Error
		if !errors.As(err, &be) || be.Code != backup.CodeInvalidState || backup.IsRetryable(err) || !strings.Contains(be.Message, "no-such-container") {
			t.Errorf("got %v, want a permanent error naming the container", err)
		}
		if got := files.allOpens.Load(); got != 0 {
			t.Errorf("%d file blobs were opened in a container that does not exist", got)
		}
		if names := f.blobNames(t, "ns/e/nocontainer/"); len(names) != 0 {
			t.Errorf("a failed build left blobs: %v", names)
		}
	})
}

// TestStorageErrorsReadAsSentences: a Blob Storage refusal met while writing the archive reaches the
// caller as a *backup.Error whose message says what failed, without the request's URL or the response.
func TestStorageErrorsReadAsSentences(t *testing.T) {
	f := newFixture(t)
	blobs, err := blobstore.NewFromConnectionString(f.az.ConnectionString(), "no-such-snapshots")
	if err != nil {
		t.Fatal(err)
	}
	snap := *f.snap
	snap.Blobs, snap.Files = blobs, f.blobs
	_, err = snap.Create(t.Context(), backup.SnapshotRequest{Environment: f.env, BlobPath: "ns/e/s/attempt-01.tar.gz"})
	var be *backup.Error
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a *backup.Error", err)
	}
	t.Logf("code %s, message %q", be.Code, be.Message)
	if !strings.HasPrefix(be.Message, "could not upload a block of the archive: ") || strings.Contains(be.Message, "http") ||
		strings.Contains(be.Message, "127.0.0.1") || strings.Contains(be.Message, "RequestId") {
		t.Errorf("message %q", be.Message)
	}
	if !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("the SDK's error, with the URL for the logs, is not the cause: %v", err)
	}
}

type cancelOnOpen struct {
	FileSource
	cancel context.CancelFunc
}

func (c cancelOnOpen) OpenFile(ctx context.Context, ct, name string) (io.ReadCloser, int64, bool, error) {
	c.cancel()
	return c.FileSource.OpenFile(ctx, ct, name)
}
