package snapshotter

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
	"github.com/mxazure/backups/internal/pg"
)

const snapshotsContainer = "snapshots"

var layout = blobstore.Layout{}

// fixture is one environment: a database of its own in the shared PostgreSQL cluster, with a table of
// file documents whose blobs are in a container of its own in the shared Azurite.
type fixture struct {
	cluster *pgcluster.Cluster
	az      *azurite.Azurite
	blobs   *blobstore.Store
	snap    *Snapshotter
	env     backup.Environment
	files   map[string][]byte // the live file documents' bytes, by UUID
	rng     *rand.Rand
}

var fixtures atomic.Int64 // numbers the fixtures' databases and containers

func newFixture(t *testing.T) *fixture {
	t.Helper()
	cluster, az := sharedStack(t)
	return newFixtureOn(t, cluster, az)
}

// newFixtureOn is newFixture with the database in cluster (a PostgreSQL 17 one, say).
func newFixtureOn(t *testing.T, cluster *pgcluster.Cluster, az *azurite.Azurite) *fixture {
	t.Helper()
	ctx := t.Context()
	blobs, err := blobstore.NewFromConnectionString(az.ConnectionString(), snapshotsContainer)
	if err != nil {
		t.Fatal(err)
	}
	if err := blobs.EnsureContainers(ctx); err != nil {
		t.Fatal(err)
	}
	n := fixtures.Add(1)
	db, files := fmt.Sprintf("app%d", n), fmt.Sprintf("app-files-%d", n)
	if _, err := blobs.Client().CreateContainer(ctx, files, nil); err != nil {
		t.Fatal(err)
	}
	if err := cluster.CreateDatabase(ctx, db, "postgres"); err != nil {
		t.Fatal(err)
	}
	err = cluster.Exec(ctx, db, `CREATE TABLE "system$filedocument" (id bigserial, __uuid__ varchar(36), size bigint, hascontents bool, deleteafterdownload bool);
		CREATE TABLE data AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g;`)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{cluster: cluster, az: az, blobs: blobs, files: map[string][]byte{}, rng: rand.New(rand.NewPCG(uint64(n), 1))}
	f.env = backup.Environment{ID: uuid.NewString(), Namespace: "ns", ModelVersion: "1.2.3.4567",
		Database: backup.DatabaseLocation{Host: cluster.Host, Port: cluster.Port, Name: db, Role: "postgres"},
		Files:    backup.FileLocation{Container: files, Prefix: "docs/"}}
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

// --- the environment's file documents ---

// content is n bytes that differ from every other call's.
func (f *fixture) content(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(f.rng.Uint32())
	}
	return b
}

// addFiles adds n file documents of size bytes (rows and blobs; the blobs have a Content-MD5) and
// returns their UUIDs.
func (f *fixture) addFiles(t *testing.T, n, size int) []string {
	t.Helper()
	var uuids, rows []string
	for range n {
		u := uuid.NewString()
		f.putBlob(t, u, f.content(size), true)
		uuids = append(uuids, u)
		rows = append(rows, fmt.Sprintf("('%s', %d, true, false)", u, size))
	}
	if n > 0 {
		f.exec(t, `INSERT INTO "system$filedocument" (__uuid__, size, hascontents, deleteafterdownload) VALUES `+strings.Join(rows, ","))
	}
	return uuids
}

// rewrite replaces the blob of file document u with data: with one Put Blob, which gives it a
// Content-MD5, when withMD5, else with Put Block and Put Block List without one, as large uploads do.
func (f *fixture) rewrite(t *testing.T, u string, data []byte, withMD5 bool) {
	t.Helper()
	f.putBlob(t, u, data, withMD5)
	f.exec(t, fmt.Sprintf(`UPDATE "system$filedocument" SET size = %d WHERE __uuid__ = '%s'`, len(data), u))
}

func (f *fixture) putBlob(t *testing.T, u string, data []byte, withMD5 bool) {
	t.Helper()
	ctx := t.Context()
	name := f.env.Files.Prefix + u
	if withMD5 {
		if _, err := f.blobs.Client().UploadBuffer(ctx, f.env.Files.Container, name, data, nil); err != nil {
			t.Fatal(err)
		}
	} else {
		bb := f.blobs.Client().ServiceClient().NewContainerClient(f.env.Files.Container).NewBlockBlobClient(name)
		var ids []string
		for i, part := range [][]byte{data[:len(data)/2], data[len(data)/2:]} {
			id := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("block-%06d", i)))
			if _, err := bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(part)), nil); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if _, err := bb.CommitBlockList(ctx, ids, nil); err != nil {
			t.Fatal(err)
		}
	}
	f.files[u] = data
}

// removeFiles deletes file documents, rows and blobs.
func (f *fixture) removeFiles(t *testing.T, uuids ...string) {
	t.Helper()
	for _, u := range uuids {
		f.deleteSourceBlob(t, u)
		f.exec(t, fmt.Sprintf(`DELETE FROM "system$filedocument" WHERE __uuid__ = '%s'`, u))
	}
}

// deleteSourceBlob deletes the blob of file document u, leaving its row: the Mendix app lost it.
func (f *fixture) deleteSourceBlob(t *testing.T, u string) {
	t.Helper()
	if _, err := f.blobs.Client().DeleteBlob(t.Context(), f.env.Files.Container, f.env.Files.Prefix+u, nil); err != nil {
		t.Fatal(err)
	}
	delete(f.files, u)
}

// dropObject deletes the store object of file document u as listed now, so that the next backup
// copies it again.
func (f *fixture) dropObject(t *testing.T, u string) {
	t.Helper()
	if err := f.blobs.DeleteObject(t.Context(), f.env.Namespace, f.env.ID, backup.ObjectName(f.sources(t)[u])); err != nil {
		t.Fatal(err)
	}
}

func newID() string { return uuid.NewString() }

func (f *fixture) exec(t *testing.T, sql string) {
	t.Helper()
	if err := f.cluster.Exec(t.Context(), f.env.Database.Name, sql); err != nil {
		t.Fatal(err)
	}
}

// sources lists the environment's container: each file document's blob as the snapshotter sees it.
func (f *fixture) sources(t *testing.T) map[string]backup.SourceFile {
	t.Helper()
	out := map[string]backup.SourceFile{}
	err := f.blobs.ListFiles(t.Context(), f.env.Files.Container, f.env.Files.Prefix, func(fi blobstore.FileInfo) error {
		u := strings.TrimPrefix(fi.Name, f.env.Files.Prefix)
		out[u] = backup.SourceFile{UUID: u, Size: fi.Size, MD5: fi.ContentMD5, ETag: string(fi.ETag)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// --- snapshots ---

// taken is a snapshot made by Create: the record the backup job would write, and the file documents
// it must hold.
type taken struct {
	sn    backup.Snapshot
	res   backup.SnapshotResult
	files map[string][]byte
}

// backup makes a snapshot with s (f.snap when nil) as the backup job does, under fence 1.
func (f *fixture) backup(t *testing.T, s *Snapshotter) taken {
	t.Helper()
	tk, err := f.tryBackup(t, s, nil)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return tk
}

// tryBackup is backup with a progress callback, returning Create's error.
func (f *fixture) tryBackup(t *testing.T, s *Snapshotter, progress func(backup.Progress)) (taken, error) {
	t.Helper()
	return f.create(t.Context(), s, progress)
}

// create runs Create in ctx. On error, the snapshot's id and paths are still returned, for the test to
// look for blobs left behind.
func (f *fixture) create(ctx context.Context, s *Snapshotter, progress func(backup.Progress)) (taken, error) {
	if s == nil {
		s = f.snap
	}
	id := uuid.NewString()
	req := f.request(id)
	req.Progress = progress
	created := time.Now().UTC().Truncate(time.Second)
	res, err := s.Create(ctx, req)
	if err != nil {
		return taken{sn: backup.Snapshot{ID: id, Namespace: f.env.Namespace, EnvironmentID: f.env.ID, DumpPath: req.DumpPath, ManifestPath: req.ManifestPath}}, err
	}
	finished := created.Add(3 * time.Second)
	sn := backup.Snapshot{ID: id, Namespace: f.env.Namespace, EnvironmentID: f.env.ID, Status: backup.SnapshotFinished,
		Kind: backup.KindManual, CreatedAt: created, UpdatedAt: finished, FinishedAt: finished, ExpiresAt: backup.KindManual.ExpiresAt(created),
		ModelVersion: f.env.ModelVersion, SizeBytes: res.SizeBytes, DatabaseSizeBytes: res.DatabaseSizeBytes, DumpSizeBytes: res.DumpSizeBytes,
		FilesBytes: res.FilesBytes, FilesCount: res.FilesCount, SHA256: res.SHA256, Warnings: res.Warnings,
		DumpPath: req.DumpPath, ManifestPath: req.ManifestPath,
		NewFilesCount: res.NewFilesCount, NewFilesBytes: res.NewFilesBytes, StoredBytes: res.StoredBytes}
	return taken{sn: sn, res: res, files: maps.Clone(f.files)}, nil
}

func (f *fixture) request(snapshotID string) backup.SnapshotRequest {
	ns, env := f.env.Namespace, f.env.ID
	return backup.SnapshotRequest{Environment: f.env, SnapshotID: snapshotID,
		DumpPath: layout.SnapshotDump(ns, env, snapshotID, 1), ManifestPath: layout.SnapshotManifest(ns, env, snapshotID, 1)}
}

// snapshotBlobs lists the snapshots container under the snapshot's folder.
func (f *fixture) snapshotBlobs(t *testing.T, snapshotID string) []string {
	t.Helper()
	return f.blobNames(t, snapshotsContainer, layout.SnapshotPrefix(f.env.Namespace, f.env.ID, snapshotID))
}

func (f *fixture) blobNames(t *testing.T, containerName, prefix string) []string {
	t.Helper()
	pager := f.blobs.Client().NewListBlobsFlatPager(containerName, &container.ListBlobsFlatOptions{Prefix: &prefix})
	var names []string
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	return names
}

// manifest reads a manifest with the Store.
func (f *fixture) manifest(t *testing.T, path string) (backup.ManifestHeader, []backup.ManifestEntry) {
	t.Helper()
	var entries []backup.ManifestEntry
	h, err := f.blobs.ReadManifest(t.Context(), path, func(e backup.ManifestEntry) error {
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	return h, entries
}

// objects are the store objects the manifest at path names, by UUID.
func (f *fixture) objects(t *testing.T, path string) map[string]string {
	t.Helper()
	_, entries := f.manifest(t, path)
	out := map[string]string{}
	for _, e := range entries {
		out[e.UUID] = e.Object
	}
	return out
}

// storeObjects lists the environment's file store.
func (f *fixture) storeObjects(t *testing.T) []string {
	t.Helper()
	var names []string
	err := f.blobs.WalkObjects(t.Context(), f.env.Namespace, f.env.ID, func(o backup.StoreObject) error {
		names = append(names, o.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// readObject reads a store object.
func (f *fixture) readObject(t *testing.T, name string) []byte {
	t.Helper()
	rc, _, err := f.blobs.OpenObject(t.Context(), f.env.Namespace, f.env.ID, name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// download reads a whole blob of the snapshots container.
func (f *fixture) download(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := f.blobs.Client().DownloadStream(t.Context(), snapshotsContainer, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// upload replaces a blob of the snapshots container (to damage one).
func (f *fixture) upload(t *testing.T, path string, data []byte) {
	t.Helper()
	if _, err := f.blobs.Client().UploadBuffer(t.Context(), snapshotsContainer, path, data, nil); err != nil {
		t.Fatal(err)
	}
}

// committed reports whether a blob exists at path in the snapshots container (staged blocks are not
// a blob).
func (f *fixture) committed(t *testing.T, path string) bool {
	t.Helper()
	_, err := f.blobs.BlobSize(t.Context(), path)
	if err != nil && !backup.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// --- checks ---

// checkManifest fails unless the manifest of tk names exactly the source blobs of tk's files, as
// listed now, and the store holds each named object with the file's bytes.
func (f *fixture) checkManifest(t *testing.T, tk taken) {
	t.Helper()
	h, entries := f.manifest(t, tk.sn.ManifestPath)
	if h.SnapshotID != tk.sn.ID || h.EnvironmentID != f.env.ID || h.Namespace != f.env.Namespace || h.Files != len(tk.files) {
		t.Errorf("manifest header %+v, want snapshot %s of environment %s with %d files", h, tk.sn.ID, f.env.ID, len(tk.files))
	}
	var srcs map[string]backup.SourceFile
	if len(entries) > 0 { // (an environment without files may have no container)
		srcs = f.sources(t)
	}
	var total int64
	for _, e := range entries {
		src, ok := srcs[e.UUID]
		switch {
		case tk.files[e.UUID] == nil:
			t.Errorf("the manifest names file %s, which the snapshot does not hold", e.UUID)
			continue
		case !ok:
			t.Errorf("file %s has no source blob", e.UUID)
			continue
		}
		if e.Size != src.Size || !bytes.Equal(e.MD5, src.MD5) || e.Object != backup.ObjectName(src) {
			t.Errorf("entry %+v, want size %d, MD5 %x, object %s", e, src.Size, src.MD5, backup.ObjectName(src))
		}
		if got := f.readObject(t, e.Object); !bytes.Equal(got, tk.files[e.UUID]) {
			t.Errorf("store object %s: %d bytes, not the file's %d", e.Object, len(got), len(tk.files[e.UUID]))
		}
		total += e.Size
	}
	if len(entries) != len(tk.files) || h.FilesBytes != total || tk.res.FilesBytes != total {
		t.Errorf("%d entries of %d bytes (header %d, result %d), want %d entries", len(entries), total, h.FilesBytes, tk.res.FilesBytes, len(tk.files))
	}
}

// checkDumpBlob fails unless the dump blob of tk is a standard gzip of a custom-format dump that
// pg_restore reads, of the size and SHA-256 recorded.
func (f *fixture) checkDumpBlob(t *testing.T, tk taken) {
	t.Helper()
	blob := f.download(t, tk.sn.DumpPath)
	if sum := sha256.Sum256(blob); hex.EncodeToString(sum[:]) != tk.res.SHA256 || int64(len(blob)) != tk.res.DumpBlobBytes {
		t.Errorf("the dump blob has %d bytes and SHA-256 %x; the result says %d and %s", len(blob), sum, tk.res.DumpBlobBytes, tk.res.SHA256)
	}
	br := bytes.NewReader(blob) // an io.ByteReader: gzip reads no further than its member
	zr, err := gzip.NewReader(br)
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	dump, err := io.ReadAll(zr) // checks the trailer's CRC-32 and length
	if err != nil {
		t.Fatalf("gunzip the dump blob: %v", err)
	}
	if br.Len() != 0 {
		t.Errorf("%d bytes after the gzip member: the dump blob is not one standard member", br.Len())
	}
	if int64(len(dump)) != tk.res.DumpSizeBytes {
		t.Errorf("the dump blob gunzips to %d bytes; the result says %d", len(dump), tk.res.DumpSizeBytes)
	}
	f.checkDump(t, dump)
}

// checkDump fails unless dump is a custom-format dump of the fixture's database that pg_restore lists.
func (f *fixture) checkDump(t *testing.T, dump []byte) {
	t.Helper()
	if !bytes.HasPrefix(dump, []byte("PGDMP")) {
		t.Fatalf("the dump starts with %q, not PGDMP", dump[:min(len(dump), 8)])
	}
	path := filepath.Join(t.TempDir(), "db.backup")
	if err := os.WriteFile(path, dump, 0o600); err != nil {
		t.Fatal(err)
	}
	list := f.run(t, nil, filepath.Join(f.cluster.BinDir, "pg_restore"), "--list", path)
	for _, want := range []string{"TABLE public data ", "TABLE public system$filedocument ", "TABLE DATA public data ", "TABLE DATA public system$filedocument "} {
		if !strings.Contains(list, want) {
			t.Errorf("pg_restore --list has no %q:\n%s", want, list)
		}
	}
}

// run runs a command and fails the test unless it exits 0; it returns its output.
func (f *fixture) run(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// assemble assembles the archive of tk and checks it (checkArchive).
func (f *fixture) assemble(t *testing.T, s *Snapshotter, tk taken) {
	t.Helper()
	if s == nil {
		s = f.snap
	}
	dst := downloadPath(tk.sn)
	a, err := s.Assemble(t.Context(), tk.sn, dst, nil)
	if err != nil {
		t.Fatalf("assemble snapshot %s: %v", tk.sn.ID, err)
	}
	f.checkArchive(t, tk, a)
	if err := f.blobs.DeleteBlob(t.Context(), dst); err != nil {
		t.Fatal(err)
	}
}

var downloads atomic.Int64

// downloadPath is where a test puts an assembled archive: next to the snapshot's blobs, under a name
// that is none of theirs.
func downloadPath(sn backup.Snapshot) string {
	return fmt.Sprintf("%sdownload-%d.tar.gz", layout.SnapshotPrefix(sn.Namespace, sn.EnvironmentID, sn.ID), downloads.Add(1))
}

// checkArchive fails unless the archive a, downloaded, is the Mendix archive of tk as three readers
// see it: GNU tar lists and extracts it, Python's tarfile reads it as a stream, and pg_restore lists
// its db/db.backup; every file has its bytes, .metadata is right and the SHA-256 is the download's.
func (f *fixture) checkArchive(t *testing.T, tk taken, a Assembled) {
	t.Helper()
	data := f.download(t, a.Path)
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != a.SHA256 || int64(len(data)) != a.SizeBytes {
		t.Errorf("the archive has %d bytes and SHA-256 %x; Assemble says %d and %s", len(data), sum, a.SizeBytes, a.SHA256)
	}
	var filesBytes int64
	want := []string{archive.MetadataName, archive.DumpName}
	for u, b := range tk.files {
		want = append(want, archive.TreeName(u))
		filesBytes += int64(len(b))
	}
	slices.Sort(want)
	if a.FilesCount != len(tk.files) || a.FilesBytes != filesBytes {
		t.Errorf("Assemble says %d files of %d bytes, want %d of %d", a.FilesCount, a.FilesBytes, len(tk.files), filesBytes)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "archive.tar.gz")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(f.run(t, nil, "tar", "-tzf", file))
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Errorf("tar -tzf lists %d entries, want %d:\n%v\nwant %v", len(names), len(want), names, want)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	f.run(t, nil, "tar", "-xzf", file, "-C", out)
	extracted := map[string][]byte{}
	for _, name := range want {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		extracted[name] = b
	}
	for u, b := range tk.files {
		if !bytes.Equal(extracted[archive.TreeName(u)], b) {
			t.Errorf("file %s: %d bytes extracted, not its %d bytes", u, len(extracted[archive.TreeName(u)]), len(b))
		}
	}

	// Python's tarfile, reading the archive as a stream (as a pipe gives it), names the same entries
	// with the same bytes.
	script := `import hashlib, sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|gz") as tf:
    for m in tf:
        data = tf.extractfile(m).read() if m.isfile() else b""
        print(m.name, m.size, hashlib.sha256(data).hexdigest())`
	var py []string
	for line := range strings.Lines(f.run(t, data, "python3", "-c", script)) {
		py = append(py, strings.TrimSpace(line))
	}
	var wantPy []string
	for _, name := range want {
		sum := sha256.Sum256(extracted[name])
		wantPy = append(wantPy, fmt.Sprintf("%s %d %x", name, len(extracted[name]), sum))
	}
	slices.Sort(py)
	if !slices.Equal(py, wantPy) {
		t.Errorf("python's tarfile reads:\n%s\nwant:\n%s", strings.Join(py, "\n"), strings.Join(wantPy, "\n"))
	}

	// Go's gzip reader checks the CRC-32 and length of the whole member.
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		t.Errorf("gunzip the archive: %v", err)
	}

	dump := extracted[archive.DumpName]
	if int64(len(dump)) != tk.sn.DumpSizeBytes {
		t.Errorf("db/db.backup has %d bytes, the snapshot's dump %d", len(dump), tk.sn.DumpSizeBytes)
	}
	f.checkDump(t, dump)

	var meta map[string]any
	if err := json.Unmarshal(extracted[archive.MetadataName], &meta); err != nil {
		t.Fatalf(".metadata: %v", err)
	}
	wantMeta := map[string]string{"dumpSize": strconv.Itoa(len(dump)), "filesSize": strconv.FormatInt(filesBytes, 10),
		"modelVersion": f.env.ModelVersion, "databaseSize": strconv.FormatInt(tk.sn.DatabaseSizeBytes, 10), "duration": "3"}
	for k, v := range meta {
		if _, ok := v.(string); !ok {
			t.Errorf(".metadata field %s is %T %v, not a string", k, v, v)
		}
	}
	for k, v := range wantMeta {
		if meta[k] != v {
			t.Errorf(".metadata %s = %v, want %q (all: %s)", k, meta[k], v, extracted[archive.MetadataName])
		}
	}
}

// --- injected behaviour ---

// spyFiles counts and records the calls the snapshotter makes of its FileSource, and lets a test
// change what one call does.
type spyFiles struct {
	FileSource
	prefix string // of the file documents' blob names

	mu     sync.Mutex
	copies map[string]int // CopyFile calls, by file document UUID
	opens  map[string]int // OpenObject calls, by object name

	// onCopy, when set, runs before each CopyFile (n counts the calls for that UUID, from 1); an error
	// is returned instead of copying.
	onCopy func(ctx context.Context, uuid string, n int) error
	// onOpen, when set, runs before each OpenObject; an error is returned instead of opening. wrap,
	// when set, wraps the reader of each successful OpenObject.
	onOpen func(ctx context.Context, object string, n int) error
	wrap   func(ctx context.Context, object string, n int, rc io.ReadCloser) io.ReadCloser
}

var _ FileSource = (*blobstore.Store)(nil) // what spyFiles wraps

func newSpy(f *fixture) *spyFiles {
	return &spyFiles{FileSource: f.blobs, prefix: f.env.Files.Prefix, copies: map[string]int{}, opens: map[string]int{}}
}

// with returns a copy of f.snap reading through the spy.
func (f *fixture) with(spy *spyFiles) *Snapshotter {
	s := *f.snap
	s.Files = spy
	return &s
}

func (s *spyFiles) CopyFile(ctx context.Context, srcContainer, srcName, dstPath string, want blobstore.CopyCheck) (blobstore.CopyResult, error) {
	u := strings.TrimPrefix(srcName, s.prefix)
	s.mu.Lock()
	s.copies[u]++
	n := s.copies[u]
	s.mu.Unlock()
	if s.onCopy != nil {
		if err := s.onCopy(ctx, u, n); err != nil {
			return blobstore.CopyResult{}, err
		}
	}
	return s.FileSource.CopyFile(ctx, srcContainer, srcName, dstPath, want)
}

func (s *spyFiles) OpenObject(ctx context.Context, namespace, envID, name string) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	s.opens[name]++
	n := s.opens[name]
	s.mu.Unlock()
	if s.onOpen != nil {
		if err := s.onOpen(ctx, name, n); err != nil {
			return nil, 0, err
		}
	}
	rc, size, err := s.FileSource.OpenObject(ctx, namespace, envID, name)
	if err == nil && s.wrap != nil {
		rc = s.wrap(ctx, name, n, rc)
	}
	return rc, size, err
}

// copied returns the UUIDs CopyFile was called for, sorted, and the number of calls.
func (s *spyFiles) copied() ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	calls := 0
	for _, n := range s.copies {
		calls += n
	}
	return slices.Sorted(maps.Keys(s.copies)), calls
}

func (s *spyFiles) copiesOf(u string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copies[u]
}

func (s *spyFiles) opensOf(object string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opens[object]
}

// brokenReader gives left bytes of inner, then fails with err, or (err nil) blocks until ctx ends.
type brokenReader struct {
	inner io.ReadCloser
	left  int
	err   error
	ctx   context.Context
}

var errConnectionReset = errors.New("read: connection reset by peer")

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		if b.err == nil {
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

// errorIs fails unless err is a *backup.Error with code whose message contains every part.
func errorIs(t *testing.T, err error, code backup.Code, parts ...string) *backup.Error {
	t.Helper()
	var be *backup.Error
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a *backup.Error with code %s", err, code)
	}
	if be.Code != code {
		t.Errorf("got code %s (%v), want %s", be.Code, err, code)
	}
	for _, p := range parts {
		if !strings.Contains(be.Message, p) {
			t.Errorf("message %q does not name %q", be.Message, p)
		}
	}
	return be
}
