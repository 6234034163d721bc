package bench

import (
	"os"
	"testing"

	"github.com/mxazure/backups/internal/archive"
)

// TestUploadArchiveIsAValidMendixArchive: the archive the upload measurement sends is one the service
// accepts (the service's own inspector reads it), of about the asked size, and what gzip -dc | tar -t
// lists of it is its entries.
func TestUploadArchiveIsAValidMendixArchive(t *testing.T) {
	n, _, _ := naiveCluster(t, 5)
	a, err := BuildUploadArchive(t.Context(), n.BinDir, n.DSN, t.TempDir(), 6e6)
	if err != nil {
		t.Fatal(err)
	}
	if a.Bytes < 6e6 || a.Bytes > 12e6 || a.Files < 2 || a.DumpBytes <= 0 {
		t.Fatalf("archive: %+v, want about 6 MB with a dump and some files", a)
	}
	f, err := os.Open(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := archive.Inspect(t.Context(), f, archive.Limits{}, nil)
	if err != nil {
		t.Fatalf("the service's inspector refuses the upload archive: %v", err)
	}
	if len(m.Files) != a.Files || m.DumpSize != a.DumpBytes || m.CompressedSize != a.Bytes || m.FilesSize != a.FilesBytes {
		t.Errorf("inspected %d files of %d bytes, dump %d, %d compressed; built %+v", len(m.Files), m.FilesSize, m.DumpSize, m.CompressedSize, a)
	}
	_, entries, err := ReadBaseline(t.Context(), a.Path)
	if err != nil || entries != a.Files+2 {
		t.Errorf("gzip -dc | tar -t listed %d entries (%v), want %d", entries, err, a.Files+2)
	}
}
