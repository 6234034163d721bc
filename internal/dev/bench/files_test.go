package bench

import (
	"bytes"
	"compress/gzip"
	"testing"
)

func gzipRatio(t *testing.T, b []byte) float64 {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return float64(buf.Len()) / float64(len(b))
}

func TestFilesAreDeterministicAndMixed(t *testing.T) {
	a, b := Files(400), Files(400)
	seen := map[string]bool{}
	var textRatio, binRatio float64
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("file %d: %+v then %+v", i, a[i], b[i])
		}
		if seen[a[i].UUID] {
			t.Fatalf("file %d: UUID %s repeated", i, a[i].UUID)
		}
		seen[a[i].UUID] = true
		if a[i].Size < minFileSize || a[i].Size > maxFileSize {
			t.Errorf("file %d: size %d outside [%d, %d]", i, a[i].Size, minFileSize, maxFileSize)
		}
		c := a[i].Content()
		if len(c) != a[i].Size {
			t.Fatalf("file %d: content %d bytes, size %d", i, len(c), a[i].Size)
		}
		if !bytes.Equal(c, b[i].Content()) {
			t.Fatalf("file %d: content differs between calls", i)
		}
		if i < 20 {
			if a[i].Text {
				textRatio += gzipRatio(t, c) / 10
			} else {
				binRatio += gzipRatio(t, c) / 10
			}
		}
	}
	if textRatio > 0.45 || textRatio < 0.15 {
		t.Errorf("text-like files gzip to %.2f of their size, want 0.15 to 0.45", textRatio)
	}
	if binRatio < 0.99 {
		t.Errorf("already-compressed-like files gzip to %.2f of their size, want about 1", binRatio)
	}
	avg := float64(TotalSize(a)) / float64(len(a))
	if avg < 18_000 || avg > 22_000 {
		t.Errorf("average size %.0f bytes, want about 20 KB", avg)
	}
}

func TestCustomersFor(t *testing.T) {
	tests := []struct {
		mb, want int
	}{
		{700, (700_000_000 - emptyDatabaseBytes) / bytesPerCustomer},
		{175, (175_000_000 - emptyDatabaseBytes) / bytesPerCustomer},
		{1, 1000},
	}
	for _, tt := range tests {
		if got := CustomersFor(tt.mb); got != tt.want {
			t.Errorf("CustomersFor(%d) = %d, want %d", tt.mb, got, tt.want)
		}
	}
}
