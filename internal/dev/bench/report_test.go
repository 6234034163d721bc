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
	r := Report{Started: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), CPUs: 2, Postgres: "15.18", DefaultLevel: 6,
		Dataset: DatasetInfo{Files: 20000, FilesBytes: 400e6, Databases: sec(40), Upload: sec(50), Total: sec(50)},
		Sizes: []SizeResult{
			{Label: "700 MB", DatabaseBytes: 701e6, Files: 20000,
				Naive:   []NaiveResult{{Total: sec(60), ArchiveBytes: 500e6}, {Total: sec(70), ArchiveBytes: 500e6}},
				Service: []BackupResult{{Wall: sec(20), SizeBytes: 540e6, PeakRSS: 100 << 20}, {Wall: sec(40), SizeBytes: 540e6, PeakRSS: 90 << 20}}},
			{Label: "175 MB", DatabaseBytes: 176e6, Files: 20000,
				Naive:   []NaiveResult{{Total: sec(40), ArchiveBytes: 300e6}},
				Service: []BackupResult{{Wall: sec(12), SizeBytes: 310e6, PeakRSS: 160 << 20}}},
		},
		Levels: []LevelResult{{Level: 6, Runs: []BackupResult{{Wall: sec(30), SizeBytes: 540e6}}}, {Level: 9, Runs: []BackupResult{{Wall: sec(50), SizeBytes: 505e6}}}},
		List:   ListResult{Records: 1000, Calls: 100, P50: 12 * time.Millisecond, P99: 30 * time.Millisecond, Max: 31 * time.Millisecond},
	}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	tests := []struct {
		name, prefix string
		nth          int
		want         string // regexp the line must match
	}{
		{"large median wall: 30 s of 65 s", "wall time, median", 0, `65\.0 s\s+30\.0 s\s+0\.46\s+<= 0\.50\s+PASS$`},
		{"large best wall: 20 s of 60 s", "wall time, best", 0, `60\.0 s\s+20\.0 s\s+0\.33\s+<= 0\.50\s+PASS$`},
		{"large archive 1.08 x", "archive size", 0, `500\.0 MB\s+540\.0 MB\s+1\.080\s+<= 1\.05\s+FAIL$`},
		{"large RSS: max of runs", "peak RSS of the handler", 0, `100 MiB\s+< 150 MiB\s+PASS$`},
		{"small RSS over the limit", "peak RSS of the handler", 1, `160 MiB\s+< 150 MiB\s+FAIL$`},
		{"small archive", "archive size", 1, `1\.033\s+<= 1\.05\s+PASS$`},
		{"flat: 160 vs 100", "peak RSS flat", 0, `100 MiB vs 160 MiB\s+1\.60\s+<= 1\.25\s+FAIL$`},
		{"level 9 row", "L9 (1 runs)", 0, `50\.0 s\s+0\.77 miss\s+505\.0 MB\s+1\.010 ok`},
		{"default level named", "L6 (1 runs), the default", 0, `30\.0 s\s+0\.46 ok`},
		{"listing", "list 1000 snapshots", 0, `p50 12\.0 ms, p99 30\.0 ms, max 31\.0 ms`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := line(t, out, tt.prefix, tt.nth)
			if !regexp.MustCompile(tt.want).MatchString(l) {
				t.Errorf("line %q does not match %q", l, tt.want)
			}
		})
	}
}

func TestRenderWithoutMeasurements(t *testing.T) {
	r := Report{CPUs: 2, DefaultLevel: 6, Sizes: []SizeResult{{Label: "700 MB", Naive: []NaiveResult{{Total: time.Minute}}}}}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	if l := line(t, out, "wall time, median", 0); !strings.HasSuffix(l, "n/a") {
		t.Errorf("wall time without runs: %q, want n/a", l)
	}
	if strings.Contains(out, "list ") {
		t.Errorf("a report without a listing measurement prints one:\n%s", out)
	}
	if strings.Contains(out, "PASS") {
		t.Errorf("a report without measurements passes something:\n%s", out)
	}
}

func TestRenderSizeWithoutNaive(t *testing.T) {
	r := Report{CPUs: 2, DefaultLevel: 6, Sizes: []SizeResult{{Label: "175 MB",
		Service: []BackupResult{{Wall: 20 * time.Second, SizeBytes: 300e6, PeakRSS: 100 << 20}}}}}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	if l := line(t, out, "wall time, median of 1 runs", 0); !regexp.MustCompile(`-\s+20\.0 s\s*$`).MatchString(l) {
		t.Errorf("wall time line %q: want no naive value and no verdict", l)
	}
	if strings.Contains(out, "NaN") || strings.Contains(out, "FAIL") {
		t.Errorf("a size without naive runs shows a ratio or a verdict:\n%s", out)
	}
}
