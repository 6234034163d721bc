package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/snapshotter"
	"github.com/mxazure/backups/internal/tablestore"
)

// A snapshot is stored as parts (a dump blob, a manifest, objects of its environment's file store);
// its Mendix archive is assembled on demand. These helpers assemble it the way the service will for a
// download (snapshotter.Assemble over the stack's storage, the handler's table prefix and containers)
// and check it with independent tools.

// The handler's storage settings in these tests: the defaults (the stack sets none).
const (
	snapshotsContainer = "snapshots"
	fileStoreContainer = blobstore.DefaultFileStoreContainer
	tablePrefix        = ""
)

var storageOnce struct {
	sync.Once
	tables *tablestore.Store
	blobs  *blobstore.Store
	err    error
}

// storage returns the stack's Table Storage and Blob Storage as the handler sees them.
func storage(t *testing.T) (*tablestore.Store, *blobstore.Store) {
	t.Helper()
	storageOnce.Do(func() {
		conn := env.Azurite.ConnectionString()
		if storageOnce.tables, storageOnce.err = tablestore.NewFromConnectionString(conn, tablePrefix); storageOnce.err != nil {
			return
		}
		storageOnce.blobs, storageOnce.err = blobstore.NewFromConnectionString(conn, snapshotsContainer,
			blobstore.Options{FileStoreContainer: fileStoreContainer})
	})
	if storageOnce.err != nil {
		t.Fatal(storageOnce.err)
	}
	return storageOnce.tables, storageOnce.blobs
}

func randomHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// assembleArchive assembles the Mendix archive of a Finished snapshot from its record's parts into a
// temporary blob in the snapshot's folder, downloads it into a temporary folder of the test and
// deletes the blob. It checks the download against the size and SHA-256 the assembly reports.
func assembleArchive(t *testing.T, namespace, envID, snapshotID string) string {
	t.Helper()
	ctx := context.Background()
	tables, blobs := storage(t)
	sn, err := tables.GetSnapshot(ctx, namespace, envID, snapshotID)
	if err != nil {
		t.Fatalf("the record of snapshot %s: %v", snapshotID, err)
	}
	if !sn.Incremental() || sn.BlobPath != "" {
		t.Fatalf("snapshot %s is not stored as parts: %+v", snapshotID, sn)
	}
	tmp := blobstore.Layout{}.SnapshotPrefix(namespace, envID, snapshotID) + "e2e-" + randomHex(t) + ".tar.gz"
	defer func() {
		if err := blobs.DeleteBlob(ctx, tmp); err != nil {
			t.Errorf("delete the assembled archive: %v", err)
		}
	}()
	s := &snapshotter.Snapshotter{Blobs: blobs, FileWorkers: 4, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	a, err := s.Assemble(ctx, sn, tmp, nil)
	if err != nil {
		t.Fatalf("assemble the archive of snapshot %s: %v", snapshotID, err)
	}
	if a.FilesCount != sn.FilesCount || a.FilesBytes != sn.FilesBytes {
		t.Errorf("assembled %d files of %d bytes, the record says %d of %d", a.FilesCount, a.FilesBytes, sn.FilesCount, sn.FilesBytes)
	}
	path := filepath.Join(t.TempDir(), snapshotID+".tar.gz")
	n, sum := downloadBlob(t, snapshotsContainer, tmp, path)
	if sum != a.SHA256 || n != a.SizeBytes {
		t.Errorf("the assembled blob has %d bytes, SHA-256 %s; Assemble reported %d bytes, %s", n, sum, a.SizeBytes, a.SHA256)
	}
	return path
}

// downloadBlob saves a blob to path and returns its size and SHA-256.
func downloadBlob(t *testing.T, containerName, name, path string) (int64, string) {
	t.Helper()
	resp, err := blobClient(t).DownloadStream(context.Background(), containerName, name, nil)
	if err != nil {
		t.Fatalf("download %s/%s: %v", containerName, name, err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	if err != nil {
		t.Fatalf("download %s/%s: %v", containerName, name, err)
	}
	return n, hex.EncodeToString(h.Sum(nil))
}

func readBlob(t *testing.T, containerName, name string) []byte {
	t.Helper()
	resp, err := blobClient(t).DownloadStream(context.Background(), containerName, name, nil)
	if err != nil {
		t.Fatalf("download %s/%s: %v", containerName, name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wantArchive is what an archive must hold.
type wantArchive struct {
	Files        map[string]string // SHA-256 of every file document, by UUID
	Tables       []string          // pg_restore --list must name them
	DumpSize     int64             // db/db.backup's size (the snapshot's dump_size_bytes)
	ModelVersion string
}

// checkArchive checks an archive with GNU tar, pg_restore and Python's tarfile: exactly the entries
// .metadata, db/db.backup and tree/xx/yy/<uuid> of want.Files, each file with its bytes, a dump that
// pg_restore reads, and .metadata's five string fields. It returns the folder it was extracted to.
func checkArchive(t *testing.T, archivePath string, want wantArchive) string {
	t.Helper()
	dir := filepath.Dir(archivePath)
	names := []string{".metadata", "db/db.backup"}
	for u := range want.Files {
		names = append(names, "tree/"+u[0:2]+"/"+u[2:4]+"/"+u)
	}
	got := strings.Fields(run(t, dir, "tar", "-tzf", archivePath))
	sort.Strings(names)
	sort.Strings(got)
	if !slices.Equal(got, names) {
		t.Fatalf("tar -t lists\n%v\nwant\n%v", got, names)
	}
	out, err := os.MkdirTemp(dir, "x-")
	if err != nil {
		t.Fatal(err)
	}
	run(t, dir, "tar", "-xzf", archivePath, "-C", out)

	// db/db.backup: custom format, archive version 1.14, readable by pg_restore.
	dumpPath := filepath.Join(out, "db", "db.backup")
	header := make([]byte, 8)
	df, err := os.Open(dumpPath)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadFull(df, header)
	df.Close()
	if string(header[:5]) != "PGDMP" || header[5] != 1 || header[6] != 14 {
		t.Errorf("dump header % x: want PGDMP 1.14", header)
	}
	listing := run(t, dir, filepath.Join(env.Postgres.BinDir, "pg_restore"), "--list", dumpPath)
	for _, table := range want.Tables {
		if !strings.Contains(listing, table) {
			t.Errorf("pg_restore --list does not mention %s", table)
		}
	}
	// Every file's bytes match the file document's.
	for u, sum := range want.Files {
		b, err := os.ReadFile(filepath.Join(out, "tree", u[0:2], u[2:4], u))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("file %s (%d bytes) differs from the file document", u, len(b))
		}
	}
	// .metadata: the five fields, every value a string.
	var meta map[string]any
	raw, _ := os.ReadFile(filepath.Join(out, ".metadata"))
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatalf(".metadata: %v", err)
	}
	for _, k := range []string{"duration", "dumpSize", "modelVersion", "databaseSize", "filesSize"} {
		if _, ok := meta[k].(string); !ok {
			t.Errorf(".metadata %s = %#v, want a string", k, meta[k])
		}
	}
	st, _ := os.Stat(dumpPath)
	if meta["dumpSize"] != strconv.FormatInt(st.Size(), 10) || st.Size() != want.DumpSize || meta["modelVersion"] != want.ModelVersion {
		t.Errorf(".metadata %v (dump is %d bytes, the snapshot says %d)", meta, st.Size(), want.DumpSize)
	}
	// Python's tarfile reads it too.
	py := `import sys, tarfile
t = tarfile.open(sys.argv[1], "r:gz")
n = 0
for m in t.getmembers():
    assert m.isfile(), m.name
    data = t.extractfile(m).read()
    assert len(data) == m.size, m.name
    n += 1
print(n)`
	if got := strings.TrimSpace(run(t, dir, "python3", "-c", py, archivePath)); got != strconv.Itoa(len(names)) {
		t.Errorf("python tarfile read %s members, want %d", got, len(names))
	}
	return out
}

// manifestEntry is one line after the header of a manifest, as docs/snapshot-layout.md describes it.
type manifestEntry struct {
	UUID   string `json:"uuid"`
	Size   int64  `json:"size"`
	Object string `json:"object"`
}

// readManifest reads a manifest blob on its own terms (gzip, JSON lines: a header, then one entry per
// file document) and checks the header against the entries.
func readManifest(t *testing.T, name string) []manifestEntry {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(gunzip(t, readBlob(t, snapshotsContainer, name))))
	sc.Buffer(nil, 1<<20)
	var header struct {
		Format     string `json:"format"`
		Version    int    `json:"version"`
		Files      int    `json:"files"`
		FilesBytes int64  `json:"files_bytes"`
	}
	var entries []manifestEntry
	var total int64
	for i := 0; sc.Scan(); i++ {
		var err error
		if i == 0 {
			err = json.Unmarshal(sc.Bytes(), &header)
		} else {
			var e manifestEntry
			err = json.Unmarshal(sc.Bytes(), &e)
			entries = append(entries, e)
			total += e.Size
		}
		if err != nil {
			t.Fatalf("manifest %s line %d: %v", name, i+1, err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if header.Format != "mxbackup-manifest" || header.Version != 1 || header.Files != len(entries) || header.FilesBytes != total {
		t.Errorf("manifest %s: header %+v, %d entries of %d bytes", name, header, len(entries), total)
	}
	return entries
}

// listBlobs lists a container under prefix: sizes by name relative to the prefix.
func listBlobs(t *testing.T, containerName, prefix string) map[string]int64 {
	t.Helper()
	pager := blobClient(t).NewListBlobsFlatPager(containerName, &container.ListBlobsFlatOptions{Prefix: &prefix})
	out := map[string]int64{}
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			out[strings.TrimPrefix(*b.Name, prefix)] = *b.Properties.ContentLength
		}
	}
	return out
}

// storeObjects lists an environment's file store: its objects' sizes by name (<uuid>/<size>-...),
// without the collector's state.
func storeObjects(t *testing.T, namespace, envID string) map[string]int64 {
	t.Helper()
	objs := listBlobs(t, fileStoreContainer, blobstore.Layout{}.StorePrefix(namespace, envID))
	delete(objs, ".collector.json")
	return objs
}

func totalSize(objs map[string]int64) int64 {
	var n int64
	for _, s := range objs {
		n += s
	}
	return n
}
