package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

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
	snap  *Snapshotter
	blobs *blobstore.Store
	env   backup.Environment
	files []string
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
	f := &fixture{blobs: blobs}
	var rows []string
	for i := 0; i < 8; i++ {
		u := uuid.NewString()
		f.files = append(f.files, u)
		content := strings.Repeat(fmt.Sprintf("file %d ", i), 5000)
		if _, err := blobs.Client().UploadBuffer(ctx, "app-files", "docs/"+u, []byte(content), nil); err != nil {
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
		Log:         zerolog.Nop(),
	}
	return f
}

func (f *fixture) blobNames(t *testing.T) []string {
	t.Helper()
	pager := f.blobs.Client().NewListBlobsFlatPager("snapshots", &container.ListBlobsFlatOptions{})
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

// failingFiles breaks the body of the n-th file opened after some bytes.
type failingFiles struct {
	inner  FileSource
	opened atomic.Int64
	failAt int64
}

func (f *failingFiles) OpenFile(ctx context.Context, c, name string) (io.ReadCloser, int64, bool, error) {
	r, size, found, err := f.inner.OpenFile(ctx, c, name)
	if err != nil || !found || f.opened.Add(1) != f.failAt {
		return r, size, found, err
	}
	return &brokenReader{inner: r, left: 1000}, size, true, nil
}

type brokenReader struct {
	inner io.ReadCloser
	left  int
}

var errConnectionReset = errors.New("read: connection reset by peer")

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errConnectionReset
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.inner.Read(p)
	b.left -= n
	return n, err
}

func (b *brokenReader) Close() error { return b.inner.Close() }

func TestCreateWritesAVerifiedArchive(t *testing.T) {
	f := newFixture(t)
	var progressed atomic.Bool
	res, err := f.snap.Create(context.Background(), backup.SnapshotRequest{Environment: f.env, BlobPath: "ns/e/s/attempt-01.tar.gz",
		Progress: func(backup.Progress) { progressed.Store(true) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.FilesCount != len(f.files) || res.SizeBytes == 0 || len(res.SHA256) != 64 || res.DumpSizeBytes == 0 || res.DatabaseSizeBytes == 0 {
		t.Errorf("result: %+v", res)
	}
	if !progressed.Load() {
		t.Error("no progress reported")
	}
	if names := f.blobNames(t); len(names) != 1 || names[0] != "ns/e/s/attempt-01.tar.gz" {
		t.Errorf("blobs: %v", names)
	}
}

func TestBlobReadFailingHalfWayCommitsNothing(t *testing.T) {
	f := newFixture(t)
	f.snap.Files = &failingFiles{inner: f.blobs, failAt: 3}
	_, err := f.snap.Create(context.Background(), backup.SnapshotRequest{Environment: f.env, BlobPath: "ns/e/s/attempt-01.tar.gz"})
	if !errors.Is(err, errConnectionReset) {
		t.Fatalf("got %v, want the read failure", err)
	}
	if names := f.blobNames(t); len(names) != 0 {
		t.Errorf("a failed build left blobs: %v", names)
	}
}

func TestMissingBlobBecomesAWarning(t *testing.T) {
	f := newFixture(t)
	if _, err := f.blobs.Client().DeleteBlob(context.Background(), "app-files", "docs/"+f.files[2], nil); err != nil {
		t.Fatal(err)
	}
	res, err := f.snap.Create(context.Background(), backup.SnapshotRequest{Environment: f.env, BlobPath: "ns/e/s/attempt-01.tar.gz"})
	if err != nil {
		t.Fatal(err)
	}
	if res.FilesCount != len(f.files)-1 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], f.files[2]) {
		t.Errorf("got %d files, warnings %v", res.FilesCount, res.Warnings)
	}
}

func TestCancelledBuildCommitsNothing(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	f.snap.Files = cancelOnOpen{inner: f.blobs, cancel: cancel}
	_, err := f.snap.Create(ctx, backup.SnapshotRequest{Environment: f.env, BlobPath: "ns/e/s/attempt-01.tar.gz"})
	if err == nil {
		t.Fatal("a cancelled build succeeded")
	}
	if names := f.blobNames(t); len(names) != 0 {
		t.Errorf("a cancelled build left blobs: %v", names)
	}
}

type cancelOnOpen struct {
	inner  FileSource
	cancel context.CancelFunc
}

func (c cancelOnOpen) OpenFile(ctx context.Context, ct, name string) (io.ReadCloser, int64, bool, error) {
	c.cancel()
	return c.inner.OpenFile(ctx, ct, name)
}
