package snapshotter

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
)

// checkIngested fails unless in stored exactly the upload of dump and files: the result's fields, a
// dump blob that gunzips to exactly dump and that pg_restore restores, and a manifest whose every
// object holds exactly its file's bytes. newFiles are the UUIDs the ingest had to store.
func (f *fixture) checkIngested(t *testing.T, in ingested, dump []byte, files uploadFiles, newFiles ...string) {
	t.Helper()
	r := in.res
	sum := sha256.Sum256(in.archive)
	if r.ArchiveBytes != int64(len(in.archive)) || r.ArchiveSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("archive %d bytes, SHA-256 %s; want %d, %x", r.ArchiveBytes, r.ArchiveSHA256, len(in.archive), sum)
	}
	if r.DumpSizeBytes != int64(len(dump)) || r.FilesCount != len(files) || r.FilesBytes != int64(files.size()) ||
		r.SizeBytes != int64(len(dump)+files.size()) || r.DumpVersion != "1.14.0" {
		t.Errorf("result %+v; want a dump of %d bytes (1.14.0) and %d files of %d bytes", r, len(dump), len(files), files.size())
	}

	blob := f.download(t, in.req.DumpPath)
	if blobSum := sha256.Sum256(blob); hex.EncodeToString(blobSum[:]) != r.SHA256 || int64(len(blob)) != r.DumpBlobBytes {
		t.Errorf("the dump blob has %d bytes and SHA-256 %x; the result says %d and %s", len(blob), blobSum, r.DumpBlobBytes, r.SHA256)
	}
	br := bytes.NewReader(blob)
	zr, err := gzip.NewReader(br)
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	got, err := io.ReadAll(zr)
	if err != nil || br.Len() != 0 || !bytes.Equal(got, dump) {
		t.Errorf("the dump blob gunzips to %d bytes (%v, %d bytes after the member), not exactly the uploaded %d", len(got), err, br.Len(), len(dump))
	}
	f.restoreDump(t, got)

	h, entries := f.manifest(t, in.req.ManifestPath)
	if h.SnapshotID != in.req.SnapshotID || h.Files != len(files) || h.FilesBytes != int64(files.size()) {
		t.Errorf("manifest header %+v, want snapshot %s with %d files", h, in.req.SnapshotID, len(files))
	}
	listed := map[string]backup.StoreObject{}
	if err := f.blobs.WalkObjects(t.Context(), f.env.Namespace, f.env.ID, func(o backup.StoreObject) error {
		listed[o.Name] = o
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, ok := files[e.UUID]
		if !ok {
			t.Errorf("the manifest names file %s, which the upload does not hold", e.UUID)
			continue
		}
		md5Name := backup.ObjectName(backup.SourceFile{UUID: e.UUID, Size: int64(len(data)), MD5: md5Of(data)})
		switch {
		case e.Size != int64(len(data)):
			t.Errorf("entry %+v, want size %d", e, len(data))
		case len(data) <= smallFileBytes && (e.Object != md5Name || !bytes.Equal(e.MD5, md5Of(data))):
			t.Errorf("entry %+v of a small file, want object %s with its MD5", e, md5Name)
		case !bytes.Equal(listed[e.Object].MD5, md5Of(data)):
			t.Errorf("object %s has Content-MD5 %x, want the file's %x", e.Object, listed[e.Object].MD5, md5Of(data))
		}
		if stored := f.readObject(t, e.Object); !bytes.Equal(stored, data) {
			t.Errorf("store object %s: %d bytes, not the file's %d", e.Object, len(stored), len(data))
		}
	}
	if len(entries) != len(files) {
		t.Errorf("the manifest has %d entries, want %d", len(entries), len(files))
	}

	var newBytes int64
	for _, u := range newFiles {
		newBytes += int64(len(files[u]))
	}
	manifestSize, err := f.blobs.BlobSize(t.Context(), in.req.ManifestPath)
	if err != nil {
		t.Fatal(err)
	}
	if r.NewFilesCount != len(newFiles) || r.NewFilesBytes != newBytes || r.StoredBytes != r.DumpBlobBytes+manifestSize+newBytes {
		t.Errorf("new files %d of %d bytes, stored %d; want %d of %d, stored %d", r.NewFilesCount, r.NewFilesBytes, r.StoredBytes,
			len(newFiles), newBytes, r.DumpBlobBytes+manifestSize+newBytes)
	}
	var storeBytes int64
	for _, o := range listed {
		storeBytes += o.Size
	}
	if r.StoreObjects != len(listed) || r.StoreBytes != storeBytes {
		t.Errorf("store of %d objects, %d bytes; the listing has %d, %d", r.StoreObjects, r.StoreBytes, len(listed), storeBytes)
	}
}

// restoreDump restores dump into a new database with pg_restore, as a restore does, and checks its rows.
func (f *fixture) restoreDump(t *testing.T, dump []byte) {
	t.Helper()
	ctx := t.Context()
	db := fmt.Sprintf("restored%d", fixtures.Add(1))
	if err := f.cluster.CreateDatabase(ctx, db, "postgres"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "db.backup")
	if err := os.WriteFile(path, dump, 0o600); err != nil {
		t.Fatal(err)
	}
	f.run(t, nil, filepath.Join(f.cluster.BinDir, "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
		"--dbname="+f.cluster.DSN(db), path)
	conn, err := pgx.Connect(ctx, f.cluster.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM data").Scan(&n); err != nil || n != 5000 {
		t.Errorf("the restored table has %d rows (%v), want 5000", n, err)
	}
}

func keys(files uploadFiles) []string {
	var out []string
	for u := range files {
		out = append(out, u)
	}
	return out
}

// TestIngestAcceptsMendixArchives: archives as GNU tar and Python's tarfile write them, nested and flat,
// with and without "./", in any entry order, with .metadata as Mendix writes it, without it and with
// other fields, of dumps with and without compression and with a file larger than one Put Blob, are
// each stored whole; the snapshot assembles back into an archive that every reader reads.
func TestIngestAcceptsMendixArchives(t *testing.T) {
	f := newFixture(t)
	z6, z0 := f.pgDump(t), f.pgDump(t, "-Z0")
	type tc struct {
		name       string
		dump       []byte
		files      uploadFiles
		archive    func(meta []byte, dump []byte, files uploadFiles) []byte
		model      string // the .metadata's modelVersion
		dbSize     int64
		warning    string
		reassemble bool
	}
	cases := []tc{
		{name: "GNU tar, nested", dump: z6, files: f.newFiles(3, 2000), model: f.env.ModelVersion, dbSize: 9730584, reassemble: true,
			archive: func(meta, dump []byte, files uploadFiles) []byte {
				return gnuTarGz(t, append([]part{{".metadata", meta}, {"db/db.backup", dump}}, treeParts(files, "", true)...)...)
			}},
		{name: "GNU tar, flat with ./, files before the dump", dump: z6, files: f.newFiles(2, 100), model: f.env.ModelVersion, dbSize: 9730584,
			archive: func(meta, dump []byte, files uploadFiles) []byte {
				return gnuTarGz(t, append(treeParts(files, "./", false), part{"./db/db.backup", dump}, part{"./.metadata", meta})...)
			}},
		{name: "Python tarfile, nested, files first", dump: z6, files: f.newFiles(3, 5000), model: f.env.ModelVersion, dbSize: 9730584, reassemble: true,
			archive: func(meta, dump []byte, files uploadFiles) []byte {
				return pyTarGz(t, append(treeParts(files, "", true), part{"db/db.backup", dump}, part{".metadata", meta})...)
			}},
		{name: "Python tarfile, flat with ./", dump: z6, files: f.newFiles(1, 0), model: f.env.ModelVersion, dbSize: 9730584,
			archive: func(meta, dump []byte, files uploadFiles) []byte {
				return pyTarGz(t, append([]part{{"./.metadata", meta}, {"./db/db.backup", dump}}, treeParts(files, "./", false)...)...)
			}},
		{name: "no .metadata", dump: z6, files: f.newFiles(1, 10),
			archive: func(_, dump []byte, files uploadFiles) []byte {
				return gnuTarGz(t, append([]part{{"db/db.backup", dump}}, treeParts(files, "", true)...)...)
			}},
		{name: ".metadata with numbers, extra and missing fields", dump: z6, files: f.newFiles(1, 10), model: "9.24.0.1", dbSize: 12345,
			archive: func(_, dump []byte, files uploadFiles) []byte {
				meta := []byte(`{"modelVersion":"9.24.0.1","databaseSize":12345,"dumpSize":1,"comment":{"by":["hand"]}}`)
				return gnuTarGz(t, append([]part{{".metadata", meta}, {"db/db.backup", dump}}, treeParts(files, "", true)...)...)
			}},
		{name: ".metadata with a field of another type", dump: z6, files: f.newFiles(1, 10), model: "1.0", warning: ".metadata: fields databaseSize ignored: not strings",
			archive: func(_, dump []byte, files uploadFiles) []byte {
				meta := []byte(`{"modelVersion":"1.0","databaseSize":[1]}`)
				return gnuTarGz(t, append([]part{{".metadata", meta}, {"db/db.backup", dump}}, treeParts(files, "", true)...)...)
			}},
		{name: "a dump without compression", dump: z0, files: f.newFiles(2, 3000), model: f.env.ModelVersion, dbSize: 9730584, reassemble: true,
			archive: func(meta, dump []byte, files uploadFiles) []byte {
				return gnuTarGz(t, append([]part{{".metadata", meta}, {"db/db.backup", dump}}, treeParts(files, "", true)...)...)
			}},
		{name: "a file larger than one Put Blob", dump: z6, files: uploadFiles{newID(): f.content(smallFileBytes + 5000), newID(): f.content(700)},
			model: f.env.ModelVersion, dbSize: 9730584, reassemble: true,
			archive: func(meta, dump []byte, files uploadFiles) []byte {
				return pyTarGz(t, append(treeParts(files, "", true), part{"db/db.backup", dump}, part{".metadata", meta})...)
			}},
		{name: "other entries at the root", dump: z6, files: f.newFiles(1, 10), model: f.env.ModelVersion, dbSize: 9730584,
			warning: `entry "README" ignored: a snapshot archive holds only .metadata, db/ and tree/`,
			archive: func(meta, dump []byte, files uploadFiles) []byte {
				return gnuTarGz(t, append([]part{{"README", []byte("hi")}, {".metadata", meta}, {"db/db.backup", dump}}, treeParts(files, "", true)...)...)
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := c.archive(f.metadata(c.dump, c.files.size()), c.dump, c.files)
			in, err := f.ingest(t, nil, data)
			if err != nil {
				t.Fatalf("ingest: %v", err)
			}
			f.checkIngested(t, in, c.dump, c.files, keys(c.files)...)
			if in.res.ModelVersion != c.model || in.res.DatabaseSizeBytes != c.dbSize {
				t.Errorf("model version %q, database size %d; want %q, %d", in.res.ModelVersion, in.res.DatabaseSizeBytes, c.model, c.dbSize)
			}
			if got := strings.Join(in.res.Warnings, "\n"); (c.warning == "") != (got == "") || !strings.Contains(got, c.warning) {
				t.Errorf("warnings %q, want %q", got, c.warning)
			}
			if c.reassemble {
				f.assemble(t, nil, in.snapshot(map[string][]byte(c.files)))
			}
		})
	}
}

// TestIngestReferencesWhatTheStoreHas: files that a backup put into the store already, small and
// large, are referenced, not written again; an upload of the same archive again writes nothing new.
func TestIngestReferencesWhatTheStoreHas(t *testing.T) {
	f := newFixture(t)
	backedUp := f.addFiles(t, 2, 1500)
	backedUp = append(backedUp, f.addFiles(t, 1, smallFileBytes+1)...)
	tk := f.backup(t, nil)
	files := uploadFiles{}
	for _, u := range backedUp {
		files[u] = f.files[u]
	}
	fresh := f.newFiles(1, 800)
	large := f.newFiles(1, smallFileBytes+100)
	for u, b := range fresh {
		files[u] = b
	}
	for u, b := range large {
		files[u] = b
	}
	dump := f.pgDump(t)
	data := gnuTarGz(t, append([]part{{".metadata", f.metadata(dump, files.size())}, {"db/db.backup", dump}}, treeParts(files, "", true)...)...)

	first, err := f.ingest(t, nil, data)
	if err != nil {
		t.Fatal(err)
	}
	f.checkIngested(t, first, dump, files, append(keys(fresh), keys(large)...)...)
	objects, backupObjects := f.objects(t, first.req.ManifestPath), f.objects(t, tk.sn.ManifestPath)
	for _, u := range backedUp {
		if objects[u] != backupObjects[u] {
			t.Errorf("file %s: the upload names object %s, the backup %s", u, objects[u], backupObjects[u])
		}
	}

	again, err := f.ingest(t, nil, data)
	if err != nil {
		t.Fatal(err)
	}
	f.checkIngested(t, again, dump, files)
	if o := f.objects(t, again.req.ManifestPath); fmt.Sprint(o) != fmt.Sprint(objects) {
		t.Errorf("the same upload again names other objects:\n%v\nwant\n%v", o, objects)
	}
	f.assemble(t, nil, again.snapshot(map[string][]byte(files)))
}

// TestIngestReportsProgress: while the archive is read, the bytes read and the files stored advance,
// so that the job's watchdog sees a healthy ingest advance; then it finishes.
func TestIngestReportsProgress(t *testing.T) {
	f := newFixture(t)
	dump := f.pgDump(t)
	files := f.newFiles(5, 50_000)
	data := gnuTarGz(t, append([]part{{"db/db.backup", dump}}, treeParts(files, "", true)...)...)
	path, etag := f.putUpload(t, data)
	id := newID()
	ns, env := f.env.Namespace, f.env.ID
	log := &progressLog{}
	_, err := f.ingester(archive.Limits{}).Ingest(t.Context(), backup.IngestRequest{Namespace: ns, EnvironmentID: env, SnapshotID: id,
		UploadPath: path, UploadETag: etag, DumpPath: layout.SnapshotDump(ns, env, id, 1), ManifestPath: layout.SnapshotManifest(ns, env, id, 1),
		Progress: log.report})
	if err != nil {
		t.Fatal(err)
	}
	if got := log.phases(); got != "validating,finishing" {
		t.Errorf("phases %s", got)
	}
	reading := log.in("validating")
	var bytesDone int64
	filesDone := 0
	for _, p := range reading {
		bytesDone, filesDone = max(bytesDone, p.BytesDone), max(filesDone, p.FilesDone)
	}
	if len(reading) < 3 || bytesDone != int64(len(data)) || filesDone != len(files) {
		t.Errorf("%d reports while reading, up to %d bytes and %d files; want several, up to %d bytes and %d files",
			len(reading), bytesDone, filesDone, len(data), len(files))
	}
}
