package snapshotter

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
)

// checkNothingStored fails unless the ingest left nothing at its dump and manifest paths.
func (f *fixture) checkNothingStored(t *testing.T, in ingested) {
	t.Helper()
	if f.committed(t, in.req.DumpPath) {
		t.Error("a dump blob was committed")
	}
	if f.committed(t, in.req.ManifestPath) {
		t.Error("a manifest was written")
	}
}

// TestIngestRejects: every archive that docs/archive-format.md ("Accepting an upload") or the limits
// refuse is refused with a message that says what is wrong and where, and nothing is stored as a
// snapshot.
func TestIngestRejects(t *testing.T) {
	f := newFixture(t)
	dump := f.pgDump(t)
	u := newID()
	meta := f.metadata(dump, 5)
	valid := []goEntry{regular(".metadata", meta), regular("db/db.backup", dump), regular(archive.TreeName(u), []byte("hello"))}
	with := func(extra ...goEntry) []goEntry { return append(append([]goEntry{}, valid...), extra...) }
	validTar := goTar(t, valid...)
	validTgz := gzipped(validTar)

	badChecksum := bytes.Clone(validTar)
	third := len(goTar(t, valid[:2]...)) - 1024 // where the file's header starts
	badChecksum[third+3] ^= 0x01
	newer := bytes.Clone(dump)
	newer[5], newer[6] = 1, 16
	cutDump := dump[:len(dump)-200]
	bomb := goTarGz(t, regular("db/db.backup", dump), regular(archive.TreeName(u), make([]byte, 40<<20)))
	// The dump blob is committed while the files stream past; a refusal after them removes it.
	late := []goEntry{regular("db/db.backup", dump)}
	for u, data := range f.newFiles(40, 300_000) {
		late = append(late, regular(archive.TreeName(u), data))
	}
	late = append(late, regular("tree/photo.jpg", []byte("x")))

	cases := []struct {
		name   string
		data   []byte
		limits archive.Limits
		want   []string
	}{
		{name: "not gzip", data: []byte("PK\x03\x04 a zip file"), want: []string{"archive is not gzip-compressed"}},
		{name: "truncated gzip", data: validTgz[:len(validTgz)*2/3],
			want: []string{fmt.Sprintf("archive is truncated at byte %d (inside entry %q)", len(validTgz)*2/3, "db/db.backup")}},
		{name: "truncated tar", data: gzipped(validTar[:third-3000]),
			want: []string{"archive is truncated at byte", `(inside entry "db/db.backup")`}},
		{name: "tar without its end", data: gzipped(validTar[:len(validTar)-1024]),
			want: []string{"archive is truncated: it ends without the tar end-of-archive marker, after entry \"tree/"}},
		{name: "bad header checksum", data: gzipped(badChecksum),
			want: []string{fmt.Sprintf("archive is corrupt: invalid tar header at byte %d of the unpacked archive, after entry %q", third, "db/db.backup")}},
		{name: "parent path", data: goTarGz(t, with(regular("../../etc/cron.d/x", []byte("evil")))...), want: []string{`entry "../../etc/cron.d/x" leaves the archive root`}},
		{name: "absolute path", data: goTarGz(t, with(regular("/etc/passwd", []byte("evil")))...), want: []string{`entry "/etc/passwd" has an absolute path`}},
		{name: "symbolic link", data: goTarGz(t, with(goEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "tree/" + newID(), Linkname: "/etc/passwd"}})...),
			want: []string{"is a symbolic link; links are not allowed"}},
		{name: "hard link", data: goTarGz(t, with(goEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "db/other", Linkname: "db/db.backup"}})...),
			want: []string{`entry "db/other" is a hard link; links are not allowed`}},
		{name: "device file", data: goTarGz(t, with(goEntry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Devmajor: 1, Devminor: 3}})...),
			want: []string{`entry "dev/null" is a device file`}},
		{name: "name under tree/ not a UUID", data: goTarGz(t, with(regular("tree/photo.jpg", []byte("x")))...),
			want: []string{`entry "tree/photo.jpg" is not named by a UUID`}},
		{name: "duplicate file", data: goTarGz(t, with(regular("./tree/"+u, []byte("again")))...),
			want: []string{"archive has more than one entry for tree/" + u}},
		{name: "duplicate dump", data: goTarGz(t, with(regular("./db/db.backup", dump))...),
			want: []string{"archive has more than one entry for db/db.backup"}},
		{name: "refused after the dump was stored", data: goTarGz(t, late...), want: []string{`entry "tree/photo.jpg" is not named by a UUID`}},
		{name: "no db/db.backup", data: goTarGz(t, regular(".metadata", meta), regular(archive.TreeName(u), []byte("x"))),
			want: []string{"archive has no db/db.backup"}},
		{name: "plain-SQL dump", data: goTarGz(t, regular("db/db.backup", []byte("--\n-- PostgreSQL database dump\n--\nCREATE TABLE x ();\n"))),
			want: []string{"db/db.backup is not a PostgreSQL custom-format dump"}},
		{name: "newer archive version", data: goTarGz(t, regular("db/db.backup", newer)),
			want: []string{"db/db.backup is a dump of archive version 1.16 (pg_dump 17 or later)",
				"the service's pg_restore 15.", "reads archive versions up to 1.14 (pg_dump 15 and earlier)"}},
		{name: "dump cut short inside a whole archive", data: goTarGz(t, regular("db/db.backup", cutDump)),
			want: []string{"db/db.backup is incomplete or damaged:"}},
		{name: "entry over the size limit", data: validTgz, limits: archive.Limits{MaxEntryBytes: int64(len(dump)) - 1},
			want: []string{fmt.Sprintf(`entry "db/db.backup" size %d bytes exceeds the limit of %d bytes`, len(dump), len(dump)-1)}},
		{name: "gzip bomb", data: bomb, limits: archive.Limits{MaxUnpackedBytes: 8 << 20},
			want: []string{"archive unpacks to more than the limit of 8 MiB"}},
		{name: "archive over the size limit", data: validTgz, limits: archive.Limits{MaxArchiveBytes: int64(len(validTgz)) - 1},
			want: []string{"archive exceeds the size limit of"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, err := f.ingest(t, f.ingester(c.limits), c.data)
			be := errorIs(t, err, backup.CodeInvalidParameters, c.want...)
			t.Logf("refused: %s", be.Message)
			f.checkNothingStored(t, in)
		})
	}
	if len(bomb) > 1<<20 {
		t.Errorf("the gzip bomb has %d bytes; it should be tiny", len(bomb))
	}
}

// TestIngestRefusesAnUploadChangedSinceCompleted: an upload blob overwritten after it was completed is
// refused, at its first byte, not read as the new content.
func TestIngestRefusesAnUploadChangedSinceCompleted(t *testing.T) {
	f := newFixture(t)
	dump := f.pgDump(t)
	data := goTarGz(t, regular("db/db.backup", dump))
	path, etag := f.putUpload(t, data)
	if _, err := f.blobs.Client().UploadBuffer(t.Context(), f.blobs.UploadsContainer(), path, data, nil); err != nil {
		t.Fatal(err)
	}
	id := newID()
	req := backup.IngestRequest{Namespace: f.env.Namespace, EnvironmentID: f.env.ID, SnapshotID: id, UploadPath: path, UploadETag: etag,
		DumpPath: layout.SnapshotDump(f.env.Namespace, f.env.ID, id, 1), ManifestPath: layout.SnapshotManifest(f.env.Namespace, f.env.ID, id, 1)}
	_, err := f.ingester(archive.Limits{}).Ingest(t.Context(), req)
	errorIs(t, err, backup.CodeInvalidParameters, "changed after the upload was completed")
	f.checkNothingStored(t, ingested{req: req})
}

// TestIngestFailureLeavesNoSnapshot: a read of the upload that fails half-way (after files were
// stored) is a transient failure that commits no dump and writes no manifest; the files it stored
// are young objects no manifest names, for the collector.
func TestIngestFailureLeavesNoSnapshot(t *testing.T) {
	f := newFixture(t)
	dump := f.pgDump(t)
	files := f.newFiles(20, 100_000)
	data := gnuTarGz(t, append(treeParts(files, "", true), part{"db/db.backup", dump})...)
	s := f.ingester(archive.Limits{})
	broken := backup.Errorf(backup.CodeTransient, "could not read the uploaded archive: the connection broke")
	s.Uploads = testUploads{f: f, wrap: func(rc io.ReadCloser) io.ReadCloser {
		return &brokenReader{inner: rc, left: len(data) - 3000, err: broken}
	}}
	in, err := f.ingest(t, s, data)
	errorIs(t, err, backup.CodeTransient, "the connection broke")
	f.checkNothingStored(t, in)
	if n := len(f.storeObjects(t)); n == 0 {
		t.Log("no file was stored before the failure")
	}
}

// collectorRun is a collector run between an ingest's listing of the store and its confirmation:
// it deletes objects and ends its claim (a new generation).
func (f *fixture) collectorRun(t *testing.T, objects ...string) {
	ctx := context.WithoutCancel(t.Context())
	st, etag, err := f.blobs.ReadCollectorState(ctx, f.env.Namespace, f.env.ID)
	if err != nil {
		t.Error(err)
		return
	}
	for _, o := range objects {
		if err := f.blobs.DeleteObject(ctx, f.env.Namespace, f.env.ID, o); err != nil {
			t.Error(err)
		}
	}
	st.Generation++
	if _, err := f.blobs.WriteCollectorState(ctx, f.env.Namespace, f.env.ID, st, etag); err != nil {
		t.Error(err)
	}
}

// atEnd runs fn once when the upload has been read to its end, before Read reports it.
type atEnd struct {
	io.ReadCloser
	once sync.Once
	fn   func()
}

func (a *atEnd) Read(p []byte) (int, error) {
	n, err := a.ReadCloser.Read(p)
	if err == io.EOF {
		a.once.Do(a.fn)
	}
	return n, err
}

// TestIngestFollowsTheCollectorProtocol: an object the upload refers to (a backup's) that a collector
// run deletes between the listing and the confirmation fails the ingest as transient, with nothing
// stored as a snapshot; a run that deleted nothing the upload names lets it succeed.
func TestIngestFollowsTheCollectorProtocol(t *testing.T) {
	f := newFixture(t)
	backedUp := f.addFiles(t, 2, 2000)
	f.backup(t, nil)
	files := uploadFiles{backedUp[0]: f.files[backedUp[0]], backedUp[1]: f.files[backedUp[1]]}
	dump := f.pgDump(t)
	data := gnuTarGz(t, append(treeParts(files, "", true), part{"db/db.backup", dump})...)
	referenced := backup.ObjectName(backup.SourceFile{UUID: backedUp[0], Size: int64(len(files[backedUp[0]])), MD5: md5Of(files[backedUp[0]])})

	s := f.ingester(archive.Limits{})
	s.Uploads = testUploads{f: f, wrap: func(rc io.ReadCloser) io.ReadCloser {
		return &atEnd{ReadCloser: rc, fn: func() { f.collectorRun(t) }}
	}}
	in, err := f.ingest(t, s, data)
	if err != nil {
		t.Fatalf("a collector run that deleted nothing the upload names: %v", err)
	}
	f.checkIngested(t, in, dump, files)

	s.Uploads = testUploads{f: f, wrap: func(rc io.ReadCloser) io.ReadCloser {
		return &atEnd{ReadCloser: rc, fn: func() { f.collectorRun(t, referenced) }}
	}}
	in, err = f.ingest(t, s, data)
	errorIs(t, err, backup.CodeTransient, "the file store's cleanup deleted file document "+backedUp[0])
	f.checkNothingStored(t, in)
	if strings.Contains(strings.Join(f.storeObjects(t), " "), referenced) {
		t.Errorf("object %s is still there", referenced)
	}
}
