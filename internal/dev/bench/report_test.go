package bench

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		want float64
	}{
		{"none", nil, 0},
		{"one", []float64{3}, 3},
		{"odd, unsorted", []float64{9, 1, 5}, 5},
		{"even: mean of the middle two", []float64{4, 1, 3, 10}, 3.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Median(tt.xs); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100 .. 1, unsorted
	}
	tests := []struct {
		name string
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{"none", nil, 50, 0},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p99 of three is the max", ms(5, 1, 9), 99, 9 * time.Millisecond},
		{"p0 is the min", ms(5, 1, 9), 0, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.ds, tt.p); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// line returns the report line that starts (after spaces) with prefix, or fails.
func line(t *testing.T, out, prefix string, nth int) string {
	t.Helper()
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			if n == nth {
				return l
			}
			n++
		}
	}
	t.Fatalf("no line %d starting with %q in\n%s", nth, prefix, out)
	return ""
}

func TestRenderVerdicts(t *testing.T) {
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	store := func(dumps int, total int64) EnvStorage {
		return EnvStorage{Dumps: Usage{Blobs: dumps, Bytes: total - 400e6 - int64(dumps)*1e5}, Manifests: Usage{Blobs: dumps, Bytes: int64(dumps) * 1e5},
			Store: Usage{Blobs: 20000, Bytes: 400e6}}
	}
	first := BackupResult{Wall: sec(20), SizeBytes: 1100e6, PeakRSS: 100 << 20, FilesCount: 20000, NewFiles: 20000, StoredBytes: 600e6}
	r := Report{Started: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), CPUs: 2, Postgres: "15.18", DefaultLevel: 6,
		Dataset: DatasetInfo{Files: 20000, FilesBytes: 400e6, Databases: sec(40), Upload: sec(50), Total: sec(50)},
		Sizes: []SizeResult{
			{Label: "700 MB", DatabaseBytes: 701e6, Files: 20000,
				Naive:   []NaiveResult{{Total: sec(60), ArchiveBytes: 500e6}, {Total: sec(70), ArchiveBytes: 500e6}},
				Service: []BackupResult{first, {Wall: sec(40), PeakRSS: 90 << 20}, {Wall: sec(22), PeakRSS: 90 << 20}}},
			{Label: "175 MB", DatabaseBytes: 176e6, Files: 20000,
				Service: []BackupResult{{Wall: sec(12), PeakRSS: 160 << 20}}},
		},
		Nightly: NightlyResult{Nights: 14, Changed: 200, Backups: []BackupResult{first,
			{Wall: sec(12), NewFiles: 200, StoredBytes: 204e6, PeakRSS: 110 << 20},
			{Wall: sec(14), NewFiles: 199, StoredBytes: 204e6, PeakRSS: 80 << 20}},
			Storage: []EnvStorage{store(1, 600e6), store(2, 804e6), store(3, 1010e6)}},
		Assembly:  AssemblyResult{Wall: sec(30), SizeBytes: 510e6, FilesCount: 20000, Entries: TarEntries{Files: 20002}},
		Reference: ReferenceResult{Tar: sec(25), SizeBytes: 498e6, Entries: TarEntries{Files: 20002, Dirs: 18000}},
		Levels:    []LevelResult{{Level: 6, Runs: []BackupResult{{Wall: sec(12), StoredBytes: 204e6}}}, {Level: 9, Runs: []BackupResult{{Wall: sec(30), StoredBytes: 190e6}}}},
		List:      ListResult{Records: 1000, Calls: 100, P50: 12 * time.Millisecond, P99: 30 * time.Millisecond, Max: 31 * time.Millisecond},
	}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	tests := []struct {
		name, prefix string
		nth          int
		want         string // regexp the line must match
	}{
		{"first backup median: 22 s of 65 s", "1. first backup, median (naive 2, service 3 runs)", 0, `65\.0 s\s+22\.0 s\s+0\.34\s+<= 0\.35\s+met$`},
		{"first backup best: 20 s of 60 s", "first backup, best", 0, `60\.0 s\s+20\.0 s\s+0\.33\s+<= 0\.35\s+met$`},
		{"second backup: 12 s of 65 s", "2. second backup, 200 files (1.0%) changed", 0, `65\.0 s\s+12\.0 s\s+0\.18\s+<= 0\.20\s+met$`},
		{"later backups: median 13 s", "backups 2 to 3, median", 0, `65\.0 s\s+13\.0 s\s+0\.20\s+<= 0\.20\s+met$`},
		{"second backup copied the changed files", "new_files_count of the second backup", 0, `-\s+200\s+= 200\s+met$`},
		{"a later backup copied one file less", "new_files_count of backups 2 to 3, each", 0, `199 to 200\s+= 200\s+NOT MET$`},
		// 600 MB + 13 × the median growth (205 MB) = 3265 MB, against 14 × 500 MB.
		{"storage projected", "3. stored after 14 nightly backups, projected", 0, `7000\.0 MB\s+3265\.0 MB\s+0\.466\s+<= 0\.15\s+NOT MET$`},
		{"projection named", "(projected from measured backups 1 to 3)", 0, `\)\s*$`},
		{"assembly time", "4. download archive: Assemble vs tar czf", 0, `25\.0 s\s+30\.0 s\s+1\.20\s+\(none\)\s*$`},
		{"assembled archive 1.02 x the naive", "archive size, assembled vs naive archive", 0, `500\.0 MB\s+510\.0 MB\s+1\.020\s+<= 1\.05\s+met$`},
		{"assembled vs tar czf", "archive size, assembled vs tar czf", 0, `498\.0 MB\s+510\.0 MB\s+1\.024\s*$`},
		{"entries", "files tar -tzf lists", 0, `20002\s+20002\s+equal\s+met$`},
		{"large RSS: max of every backup", "peak RSS of the handler", 0, `110 MiB\s+< 150 MiB\s+met$`},
		{"small RSS over the limit", "peak RSS of the handler", 1, `160 MiB\s+< 150 MiB\s+NOT MET$`},
		{"small first backup, no naive", "1. first backup, median of 1 runs", 0, `-\s+12\.0 s\s*$`},
		{"flat: 160 vs 110", "peak RSS flat", 0, `110 MiB vs 160 MiB\s+1\.45\s+<= 1\.25\s+NOT MET$`},
		{"level 9 row", "L9 (1 runs)", 0, `30\.0 s\s+0\.46 miss\s+190\.0 MB`},
		{"default level named", "L6 (1 runs), the default", 0, `12\.0 s\s+0\.18 ok`},
		{"listing", "list 1000 snapshots", 0, `p50 12\.0 ms, p99 30\.0 ms, max 31\.0 ms`},
		{"storage details", "stored after backup 3 of the series", 0, `3 dumps 609\.7 MB, 3 manifests 0\.3 MB, 0 other blobs 0\.0 MB; file store 20000 objects 400\.0 MB; total 1010\.0 MB \(the snapshots' stored_bytes add up to 1008\.0 MB\)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := line(t, out, tt.prefix, tt.nth)
			if !regexp.MustCompile(tt.want).MatchString(l) {
				t.Errorf("line %q does not match %q", l, tt.want)
			}
		})
	}
	if strings.Contains(out, "NaN") || strings.Contains(out, "REDUCED") {
		t.Errorf("report:\n%s", out)
	}
}

func TestRenderMeasuredSeries(t *testing.T) {
	var backups []BackupResult
	var storage []EnvStorage
	for i := range 14 {
		backups = append(backups, BackupResult{Wall: time.Second, NewFiles: 200})
		storage = append(storage, EnvStorage{Dumps: Usage{Blobs: i + 1, Bytes: int64(i+1) * 10e6}, Store: Usage{Blobs: 1, Bytes: 400e6}})
	}
	r := Report{Scale: 0.05, Skipped: []string{"first backup 2 of 3", "first backup 3 of 3"}, Dataset: DatasetInfo{Files: 20000}, Sizes: []SizeResult{{Label: "35 MB", Naive: []NaiveResult{{Total: time.Minute, ArchiveBytes: 500e6}},
		Service: backups[:1]}, {Label: "9 MB"}}, Nightly: NightlyResult{Nights: 14, Changed: 200, Backups: backups, Storage: storage}}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	if l := line(t, out, "3. stored after 14 nightly backups, measured", 0); !regexp.MustCompile(`7000\.0 MB\s+540\.0 MB\s+0\.077\s+<= 0\.15\s+met$`).MatchString(l) {
		t.Errorf("storage line %q", l)
	}
	line(t, out, "(14 backups measured; naive: 14 x 500.0 MB)", 0)
	line(t, out, "REDUCED DATASET: 0.05 of the reference", 0)
	line(t, out, "not measured, to stay within the time budget: first backup 2 of 3; first backup 3 of 3", 0)
	if strings.Contains(out, "4. download archive") {
		t.Errorf("a report without an assembly shows one:\n%s", out)
	}
	// The small database's first backups were all skipped.
	if l := line(t, out, "backup, 9 MB database", 0); !strings.Contains(out, l+"\n  not measured\n") || strings.Count(out, "peak RSS of the handler") != 1 {
		t.Errorf("an unmeasured size:\n%s", out)
	}
}

func TestRenderWithoutMeasurements(t *testing.T) {
	r := Report{CPUs: 2, DefaultLevel: 6, Sizes: []SizeResult{{Label: "700 MB", Naive: []NaiveResult{{Total: time.Minute}}}}}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	if l := line(t, out, "1. first backup, median", 0); !strings.HasSuffix(l, "n/a") {
		t.Errorf("wall time without runs: %q, want n/a", l)
	}
	for _, s := range []string{"list ", "2. second backup", "3. stored", "4. download"} {
		if strings.Contains(out, s) {
			t.Errorf("a report without measurements prints %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, " met") {
		t.Errorf("a report without measurements meets something:\n%s", out)
	}
}

func TestRenderSizeWithoutNaive(t *testing.T) {
	r := Report{CPUs: 2, DefaultLevel: 6, Sizes: []SizeResult{{Label: "175 MB",
		Service: []BackupResult{{Wall: 20 * time.Second, SizeBytes: 300e6, PeakRSS: 100 << 20}}}},
		Assembly: AssemblyResult{Wall: time.Second, SizeBytes: 1e6}}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	if l := line(t, out, "1. first backup, median of 1 runs", 0); !regexp.MustCompile(`-\s+20\.0 s\s*$`).MatchString(l) {
		t.Errorf("wall time line %q: want no naive value and no verdict", l)
	}
	if strings.Contains(out, "NaN") || strings.Contains(out, "NOT MET") {
		t.Errorf("a size without naive runs shows a ratio or a verdict:\n%s", out)
	}
}

func TestNightlyStorage(t *testing.T) {
	tests := []struct {
		name   string
		after  []int64
		nights int
		want   int64
		how    string
	}{
		{"none", nil, 14, 0, ""},
		{"only the first: nothing to project from", []int64{600}, 14, 0, ""},
		{"backups 1 and 2", []int64{600, 810}, 14, 600 + 13*210, "projected"},
		{"median growth", []int64{600, 800, 1100, 1310}, 14, 600 + 13*210, "projected"},
		{"measured", []int64{600, 800, 1000}, 3, 1000, "measured"},
		{"longer than asked: the nights-th", []int64{600, 800, 1000, 1200}, 2, 800, "measured"},
		{"one night", []int64{600}, 1, 600, "measured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, how := NightlyStorage(tt.after, tt.nights)
			if got != tt.want || how != tt.how {
				t.Errorf("got %d %q, want %d %q", got, how, tt.want, tt.how)
			}
		})
	}
}

func TestEnvStorage(t *testing.T) {
	var s EnvStorage
	for _, b := range []struct {
		name string
		size int64
	}{
		{"bench/e/s1/attempt-01.db.backup.gz", 1000},
		{"bench/e/s1/attempt-01.manifest.gz", 10},
		{"bench/e/s2/attempt-02.db.backup.gz", 2000},
		{"bench/e/s2/attempt-02.manifest.gz", 20},
		{"bench/e/s0/attempt-01.tar.gz", 5},
	} {
		s.classify(b.name, b.size)
	}
	s.Store.add(400)
	want := EnvStorage{Dumps: Usage{2, 3000}, Manifests: Usage{2, 30}, Other: Usage{1, 5}, Store: Usage{1, 400}}
	if s != want || s.Snapshots() != (Usage{5, 3035}) || s.Total() != 3435 {
		t.Errorf("got %+v (snapshots %+v, total %d), want %+v", s, s.Snapshots(), s.Total(), want)
	}
}

func TestCountEntries(t *testing.T) {
	n, err := countEntries(strings.NewReader(".metadata\ndb/db.backup\ntree/\ntree/0d/\ntree/0d/3e/\ntree/0d/3e/0d3e301f\n\n"))
	if err != nil || n != (TarEntries{Files: 3, Dirs: 3}) {
		t.Errorf("got %+v %v", n, err)
	}
}
