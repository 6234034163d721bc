package snapshotter

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

// TestDatabaseOnlyDownloadIsTheBareDump: a database-only download is exactly the custom-format dump
// the snapshot's dump blob holds, with its size and SHA-256; a snapshot whose dump blob was changed is
// refused and nothing is committed.
func TestDatabaseOnlyDownloadIsTheBareDump(t *testing.T) {
	f := newFixture(t)
	f.addFiles(t, 2, 3000)
	tk := f.backup(t, nil)
	path := strings.TrimSuffix(downloadPath(tk.sn), ".tar.gz") + ".backup"
	res, err := f.snap.MakeDownload(t.Context(), backup.DownloadRequest{Snapshot: tk.sn, DataType: backup.DataDatabaseOnly,
		Path: path, FileName: "database-0a1b2c3d-202612021200.backup", Progress: func(backup.Progress) {}})
	if err != nil {
		t.Fatal(err)
	}
	got := f.download(t, path)
	zr, err := gzip.NewReader(bytes.NewReader(f.download(t, tk.sn.DumpPath)))
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(got)
	if !bytes.Equal(got, want) || res.SizeBytes != int64(len(want)) || res.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("download of %d bytes (result %d, %s); the dump has %d bytes", len(got), res.SizeBytes, res.SHA256, len(want))
	}
	f.checkDump(t, got)

	damaged := tk.sn
	damaged.SHA256 = strings.Repeat("0", 64)
	other := path + "-damaged"
	_, err = f.snap.MakeDownload(t.Context(), backup.DownloadRequest{Snapshot: damaged, DataType: backup.DataDatabaseOnly,
		Path: other, FileName: "x.backup", Progress: func(backup.Progress) {}})
	errorIs(t, err, backup.CodeInternal, "damaged")
	if f.committed(t, other) {
		t.Error("a download of a damaged dump was committed")
	}
}
