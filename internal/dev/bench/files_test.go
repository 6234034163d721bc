package bench

import (
	"bytes"
	"compress/gzip"
	"slices"
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

func TestChangeSet(t *testing.T) {
	a := ChangeSet(20000, 200, 2)
	if len(a) != 200 {
		t.Fatalf("%d files changed, want 200", len(a))
	}
	text := 0
	for i, x := range a {
		if x < 0 || x >= 20000 || (i > 0 && x <= a[i-1]) {
			t.Fatalf("index %d is %d: want distinct increasing indexes in [0, 20000): %v", i, x, a)
		}
		if x%2 == 0 { // Files makes the even ones text-like
			text++
		}
	}
	if text < 60 || text > 140 {
		t.Errorf("%d of 200 changed files are text-like: want a mix", text)
	}
	if b := ChangeSet(20000, 200, 2); !slices.Equal(a, b) {
		t.Error("the same night changes other files on another call")
	}
	if c := ChangeSet(20000, 200, 3); slices.Equal(a, c) {
		t.Error("two nights change the same files")
	}
	if all := ChangeSet(5, 9, 1); !slices.Equal(all, []int{0, 1, 2, 3, 4}) {
		t.Errorf("more changes than files: %v, want every file once", all)
	}
	if none := ChangeSet(5, 0, 1); len(none) != 0 {
		t.Errorf("no changes: %v", none)
	}
}

func TestChange(t *testing.T) {
	files := Files(10)
	before := files[3].Content()
	changed := Change(files, []int{3, 4})
	if len(changed) != 2 || changed[0].UUID != files[3].UUID || changed[0].Rev != 1 || files[3].Rev != 1 || files[5].Rev != 0 {
		t.Fatalf("changed %+v; files now %+v", changed, files)
	}
	after := files[3].Content()
	if len(after) != len(before) || bytes.Equal(after, before) {
		t.Errorf("revision 1 has %d bytes (revision 0 %d), equal: %v; want other bytes of the same size", len(after), len(before), bytes.Equal(after, before))
	}
	if text := gzipRatio(t, files[3].Content()); files[3].Text != (text < 0.5) {
		t.Errorf("revision 1 of a text=%v file gzips to %.2f", files[3].Text, text)
	}
	if !bytes.Equal(Files(10)[3].Content(), before) {
		t.Error("revision 0 changed")
	}
	Change(files, []int{3})
	if files[3].Rev != 2 || bytes.Equal(files[3].Content(), after) {
		t.Error("revision 2 is revision 1")
	}
}
