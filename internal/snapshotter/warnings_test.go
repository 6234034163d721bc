package snapshotter

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
)

func checkBounded(t *testing.T, ws []string) {
	t.Helper()
	total := 0
	for _, w := range ws {
		total += len(w)
	}
	if total > maxWarningsBytes || len(ws) > 50 {
		t.Errorf("%d warnings of %d bytes in all, want at most 50 and %d bytes", len(ws), total, maxWarningsBytes)
	}
}

// TestWarningsStayBounded: however many and however long the dump's warnings and the missing blobs,
// the list stays within its bounds, names the smallest UUIDs, and counts the rest.
func TestWarningsStayBounded(t *testing.T) {
	var dump []string
	for i := range 50 {
		dump = append(dump, fmt.Sprintf("file document %d has an invalid UUID %q; it is not in the snapshot", i, strings.Repeat("x", 2000)))
	}
	dump = append(dump, "7,000 more file documents were left out of the snapshot")
	m := &missingBlobs{}
	var all []string
	for range 10000 {
		u := uuid.NewString()
		all = append(all, u)
		m.add(u)
	}
	ws := warnings(dump, m, "app-files")
	checkBounded(t, ws)
	if ws[0] != clip(dump[0]) {
		t.Errorf("first warning %q, want the dump's first", ws[0])
	}
	i := slices.Index(ws, dump[len(dump)-1])
	if i < 1 || !strings.HasSuffix(ws[i-1], "more warnings about file document rows not listed") {
		t.Errorf("the dump's last line is not kept after a count of what was left out: %q", ws)
	}
	slices.Sort(all)
	missing := ws[i+1:]
	if len(missing) != maxListedMissing+1 {
		t.Fatalf("%d lines about missing blobs, want %d", len(missing), maxListedMissing+1)
	}
	for j, u := range all[:maxListedMissing] {
		if !strings.Contains(missing[j], u) {
			t.Errorf("line %d %q does not name the UUID %s", j, missing[j], u)
		}
	}
	if want := "and 9,980 more file documents without a blob in container app-files"; missing[maxListedMissing] != want {
		t.Errorf("got %q, want %q", missing[maxListedMissing], want)
	}

	few := warnings([]string{"a", "b"}, &missingBlobs{}, "c")
	if !slices.Equal(few, []string{"a", "b"}) {
		t.Errorf("a short list is changed: %q", few)
	}
}

// TestTenThousandMissingBlobs: an environment whose 10,000 file rows have no blob (and 60 bad rows, for
// the dump's own warnings) is backed up with a short, bounded list of warnings and an empty manifest,
// and its progress counts the missing files as done.
func TestTenThousandMissingBlobs(t *testing.T) {
	f := newFixture(t)
	f.exec(t, `INSERT INTO "system$filedocument" (__uuid__, size, hascontents, deleteafterdownload)
		SELECT gen_random_uuid()::text, 100, true, false FROM generate_series(1, 10000) g;
		INSERT INTO "system$filedocument" (__uuid__, size, hascontents, deleteafterdownload)
		SELECT 'not-a-uuid-' || g, 100, true, false FROM generate_series(1, 60) g;`)
	spy := newSpy(f)
	s := f.with(spy)
	s.FileWorkers = 32
	var filesDone atomic.Int64
	start := time.Now()
	tk, err := f.tryBackup(t, s, func(p backup.Progress) {
		if p.Phase == "dumping" {
			filesDone.Store(int64(p.FilesDone))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup of 10,000 missing files took %s", time.Since(start))
	res := tk.res
	checkBounded(t, res.Warnings)
	t.Logf("warnings:\n%s", strings.Join(res.Warnings, "\n"))
	if res.FilesCount != 0 || filesDone.Load() != 10000 {
		t.Errorf("files in the snapshot %d, done %d; want 0 and 10,000", res.FilesCount, filesDone.Load())
	}
	if _, calls := spy.copied(); calls != 0 {
		t.Errorf("%d copies of files without a blob", calls)
	}
	if last := res.Warnings[len(res.Warnings)-1]; last != "and 9,980 more file documents without a blob in container "+f.env.Files.Container {
		t.Errorf("last warning %q", last)
	}
	if n := len(res.Warnings); n < maxListedMissing+1+3 {
		t.Errorf("%d warnings: the dump's are missing: %q", n, res.Warnings)
	}
	if h, _ := f.manifest(t, tk.sn.ManifestPath); h.Files != 0 {
		t.Errorf("the manifest has %d files", h.Files)
	}
}
