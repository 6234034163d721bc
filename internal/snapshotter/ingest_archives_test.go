package snapshotter

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
)

// How the ingest tests make uploads: archives written by GNU tar, by Python's tarfile and, for hostile
// ones, by archive/tar, of a real pg_dump 15 dump of the fixture's database and some files, put into
// the uploads container in Azurite and read back through testUploads.

// part is one entry of an archive to make, in archive order.
type part struct {
	name string
	data []byte
}

// gnuTarGz makes a .tar.gz with GNU tar of parts, named exactly as given ("./" included), in order.
func gnuTarGz(t *testing.T, parts ...part) []byte {
	t.Helper()
	dir := t.TempDir()
	args := []string{"-czf", "-", "-C", dir}
	for _, p := range parts {
		path := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(p.name, "./")))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, p.data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p.name)
	}
	return runOutput(t, nil, "tar", args...)
}

// pyTarGz makes a .tar.gz with Python's tarfile, written as a stream ("w|gz"), of parts in order.
func pyTarGz(t *testing.T, parts ...part) []byte {
	t.Helper()
	dir := t.TempDir()
	var list [][2]string
	for i, p := range parts {
		path := filepath.Join(dir, fmt.Sprintf("part-%d", i))
		if err := os.WriteFile(path, p.data, 0o644); err != nil {
			t.Fatal(err)
		}
		list = append(list, [2]string{p.name, path})
	}
	spec, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	script := `import json, sys, tarfile
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|gz") as tf:
    for name, path in json.loads(sys.argv[1]):
        tf.add(path, arcname=name, recursive=False)`
	return runOutput(t, nil, "python3", "-c", script, string(spec))
}

// goTarGz makes a .tar.gz with archive/tar of hand-made headers; an entry's Size is set from its data
// unless given.
func goTarGz(t *testing.T, entries ...goEntry) []byte {
	t.Helper()
	return gzipped(goTar(t, entries...))
}

type goEntry struct {
	hdr  tar.Header
	data []byte
}

func regular(name string, data []byte) goEntry {
	return goEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}, data: data}
}

func goTar(t *testing.T, entries ...goEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = time.Unix(1_700_000_000, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatalf("tar data %s: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(data []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(data)
	_ = zw.Close()
	return buf.Bytes()
}

func runOutput(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, stderr.String())
	}
	return out
}

// --- the upload's contents ---

// pgDump dumps the fixture's database with pg_dump 15 as Mendix does (-Fc -O -x), with extra flags
// (-Z0 say).
func (f *fixture) pgDump(t *testing.T, flags ...string) []byte {
	t.Helper()
	args := append([]string{"-Fc", "-O", "-x"}, flags...)
	args = append(args, "--dbname="+f.cluster.DSN(f.env.Database.Name))
	return runOutput(t, nil, filepath.Join(f.cluster.BinDir, "pg_dump"), args...)
}

// metadata is a .metadata as Mendix writes it, every value a string.
func (f *fixture) metadata(dump []byte, filesSize int) []byte {
	return fmt.Appendf(nil, `{"duration":"12","dumpSize":"%d","modelVersion":"%s","databaseSize":"9730584","filesSize":"%d"}`,
		len(dump), f.env.ModelVersion, filesSize)
}

// uploadFiles are file documents of an upload, by UUID.
type uploadFiles map[string][]byte

func (u uploadFiles) size() int {
	n := 0
	for _, b := range u {
		n += len(b)
	}
	return n
}

// newFiles makes n file documents of size bytes each.
func (f *fixture) newFiles(n, size int) uploadFiles {
	out := uploadFiles{}
	for range n {
		out[newID()] = f.content(size)
	}
	return out
}

// treeParts are the files as archive entries: nested (tree/xx/yy/<uuid>) or flat (tree/<uuid>),
// under prefix ("" or "./").
func treeParts(files uploadFiles, prefix string, nested bool) []part {
	var out []part
	for u, data := range files {
		name := "tree/" + u
		if nested {
			name = archive.TreeName(u)
		}
		out = append(out, part{prefix + name, data})
	}
	return out
}

// --- uploads in Azurite ---

// testUploads reads uploads with the Store's OpenUpload, through wrap when it is set.
type testUploads struct {
	f    *fixture
	wrap func(io.ReadCloser) io.ReadCloser
}

func (u testUploads) OpenUpload(ctx context.Context, path, etag string) (io.ReadCloser, int64, error) {
	rc, size, err := u.f.blobs.OpenUpload(ctx, path, etag)
	if err == nil && u.wrap != nil {
		rc = u.wrap(rc)
	}
	return rc, size, err
}

var uploads atomic.Int64

// putUpload stores data as an upload blob and returns its path and ETag.
func (f *fixture) putUpload(t *testing.T, data []byte) (string, string) {
	t.Helper()
	path := fmt.Sprintf("%s/%s/upload-%d.tar.gz", f.env.Namespace, f.env.ID, uploads.Add(1))
	resp, err := f.blobs.Client().UploadBuffer(t.Context(), f.blobs.UploadsContainer(), path, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	return path, string(*resp.ETag)
}

// ingester is f.snap reading uploads from Azurite, with limits.
func (f *fixture) ingester(limits archive.Limits) *Snapshotter {
	s := *f.snap
	s.Uploads = testUploads{f: f}
	s.UploadLimits = limits
	return &s
}

// ingested is one Ingest call: its request and what it returned.
type ingested struct {
	req     backup.IngestRequest
	res     backup.IngestResult
	archive []byte
}

// ingest uploads data and runs Ingest with s (f.ingester(zero limits) when nil) under fence 1.
func (f *fixture) ingest(t *testing.T, s *Snapshotter, data []byte) (ingested, error) {
	t.Helper()
	if s == nil {
		s = f.ingester(archive.Limits{})
	}
	path, etag := f.putUpload(t, data)
	id := newID()
	ns, env := f.env.Namespace, f.env.ID
	req := backup.IngestRequest{Namespace: ns, EnvironmentID: env, SnapshotID: id, UploadPath: path, UploadETag: etag,
		DumpPath: layout.SnapshotDump(ns, env, id, 1), ManifestPath: layout.SnapshotManifest(ns, env, id, 1)}
	res, err := s.Ingest(t.Context(), req)
	return ingested{req: req, res: res, archive: data}, err
}

// snapshot is the record the upload job makes of an accepted upload, as a taken snapshot of files.
func (in ingested) snapshot(files uploadFiles) taken {
	created := time.Now().UTC().Truncate(time.Second)
	finished := created.Add(3 * time.Second)
	r := in.res
	sn := backup.Snapshot{ID: in.req.SnapshotID, Namespace: in.req.Namespace, EnvironmentID: in.req.EnvironmentID,
		Status: backup.SnapshotFinished, Kind: backup.KindManual, CreatedAt: created, UpdatedAt: finished, FinishedAt: finished,
		ExpiresAt: backup.KindManual.ExpiresAt(created), ModelVersion: r.ModelVersion, SizeBytes: r.SizeBytes,
		DatabaseSizeBytes: r.DatabaseSizeBytes, DumpSizeBytes: r.DumpSizeBytes, FilesBytes: r.FilesBytes, FilesCount: r.FilesCount,
		SHA256: r.SHA256, Warnings: r.Warnings, DumpPath: in.req.DumpPath, ManifestPath: in.req.ManifestPath,
		NewFilesCount: r.NewFilesCount, NewFilesBytes: r.NewFilesBytes, StoredBytes: r.StoredBytes}
	return taken{sn: sn, res: r.SnapshotResult, files: files}
}

// md5Of is the MD5 of data.
func md5Of(data []byte) []byte {
	sum := md5.Sum(data)
	return sum[:]
}
