package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Targets of design.md, "Performance the benchmark must show".
const (
	TimeRatioTarget = 0.50      // backup wall time at most 0.5 × the naive pipeline's
	SizeRatioTarget = 1.05      // archive at most 1.05 × the naive archive
	RSSLimit        = 150 << 20 // the handler's peak RSS under 150 MiB
	// FlatTolerance is how much larger the peak RSS at one database size may be than at the other
	// (the larger over the smaller) and still count as flat.
	FlatTolerance = 1.25
)

// Report is everything one benchmark run measured.
type Report struct {
	Started  time.Time
	CPUs     int
	Postgres string // server version
	Dataset  DatasetInfo
	Sizes    []SizeResult  // the service at DefaultLevel against the naive pipeline, largest first
	Levels   []LevelResult // the service at each compression level on the largest database
	List     ListResult
	// DefaultLevel is the compression level of Sizes (the service's default).
	DefaultLevel int
	Total        time.Duration
}

// DatasetInfo describes the generated dataset and how long generating it took.
type DatasetInfo struct {
	Files      int
	FilesBytes int64
	Databases  time.Duration // all databases, one after the other
	Upload     time.Duration // the file blobs, concurrently with the databases
	Total      time.Duration
}

// SizeResult compares the service with the naive pipeline on one database.
type SizeResult struct {
	Label         string // "700 MB"
	DatabaseBytes int64  // pg_database_size
	Files         int
	FilesBytes    int64
	Naive         []NaiveResult
	Service       []BackupResult
}

// LevelResult is the service's backups at one compression level.
type LevelResult struct {
	Level int
	Runs  []BackupResult
}

// Median returns the median of xs (the mean of the middle two for an even count); 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Percentile returns the nearest-rank p-th percentile of ds; 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

func seconds[T any](runs []T, f func(T) time.Duration) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = f(r).Seconds()
	}
	return out
}

func values[T any](runs []T, f func(T) int64) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = float64(f(r))
	}
	return out
}

func naiveWall(r NaiveResult) time.Duration    { return r.Total }
func serviceWall(r BackupResult) time.Duration { return r.Wall }
func naiveSize(r NaiveResult) int64            { return r.ArchiveBytes }
func serviceSize(r BackupResult) int64         { return r.SizeBytes }
func servicePeak(r BackupResult) int64         { return r.PeakRSS }

// verdict is PASS when ok, else FAIL; "n/a" when there was nothing to compare.
func verdict(ok, measured bool) string {
	switch {
	case !measured:
		return "n/a"
	case ok:
		return "PASS"
	default:
		return "FAIL"
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func mb(b float64) string  { return fmt.Sprintf("%.1f MB", b/1e6) }
func mib(b float64) string { return fmt.Sprintf("%.0f MiB", b/(1<<20)) }
func secs(s float64) string {
	return fmt.Sprintf("%.1f s", s)
}

// Column layout of the comparison tables: label, naive, service, ratio, target, verdict.
const (
	headFormat = "%-52s %-12s %-14s %-7s %-11s %s"
	rowFormat  = "%-50s %-12s %-14s %-7s %-11s %s"
)

// Render writes the report's table.
func (r Report) Render(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("Backup benchmark, %s, %d CPUs, PostgreSQL %s; total run %s", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.CPUs, r.Postgres, r.Total.Round(time.Second))
	d := r.Dataset
	p("dataset: %d files, %s (half text-like, half already compressed); generated in %s (databases %s, blobs %s, concurrently)",
		d.Files, mb(float64(d.FilesBytes)), secs(d.Total.Seconds()), secs(d.Databases.Seconds()), secs(d.Upload.Seconds()))
	p("")
	row := "  " + rowFormat
	var peaks []float64
	for _, s := range r.Sizes {
		p(headFormat, fmt.Sprintf("backup, %s database (%s) + %d files", s.Label, mb(float64(s.DatabaseBytes)), s.Files),
			"naive", fmt.Sprintf("service L%d", r.DefaultLevel), "ratio", "target", "")
		nw, sw := seconds(s.Naive, naiveWall), seconds(s.Service, serviceWall)
		ok := len(nw) > 0 && len(sw) > 0
		nMed, sMed := Median(nw), Median(sw)
		if len(nw) == 0 { // the small size shows memory only, unless asked for
			p(row, fmt.Sprintf("wall time, median of %d runs", len(sw)), "-", secs(sMed), "", "", "")
			p(row, "archive size", "-", mb(Median(values(s.Service, serviceSize))), "", "", "")
		} else {
			p(row, fmt.Sprintf("wall time, median (naive %d, service %d runs)", len(nw), len(sw)), secs(nMed), secs(sMed),
				fmt.Sprintf("%.2f", ratio(sMed, nMed)), fmt.Sprintf("<= %.2f", TimeRatioTarget), verdict(ratio(sMed, nMed) <= TimeRatioTarget, ok))
		}
		if ok {
			nBest, sBest := slices.Min(nw), slices.Min(sw)
			p(row, "wall time, best", secs(nBest), secs(sBest), fmt.Sprintf("%.2f", ratio(sBest, nBest)),
				fmt.Sprintf("<= %.2f", TimeRatioTarget), verdict(ratio(sBest, nBest) <= TimeRatioTarget, ok))
		}
		nSize, sSize := Median(values(s.Naive, naiveSize)), Median(values(s.Service, serviceSize))
		if len(nw) > 0 {
			p(row, "archive size", mb(nSize), mb(sSize), fmt.Sprintf("%.3f", ratio(sSize, nSize)),
				fmt.Sprintf("<= %.2f", SizeRatioTarget), verdict(ratio(sSize, nSize) <= SizeRatioTarget, ok))
		}
		peak := 0.0
		if len(s.Service) > 0 {
			peak = slices.Max(values(s.Service, servicePeak))
			peaks = append(peaks, peak)
		}
		p(row, "peak RSS of the handler, max of runs", "-", mib(peak), "", fmt.Sprintf("< %s", mib(RSSLimit)),
			verdict(peak < RSSLimit, len(s.Service) > 0))
		for i, n := range s.Naive {
			p("  naive run %d: pg_dump -Fc %s (%s), download %d blobs %s, tar czf %s, upload %s", i+1, secs(n.Dump.Seconds()),
				mb(float64(n.DumpBytes)), n.Files, secs(n.Download.Seconds()), secs(n.Tar.Seconds()), secs(n.Upload.Seconds()))
		}
		for i, b := range s.Service {
			p("  service run %d: %s, %s, %d files, peak RSS %s (at start %s)%s", i+1, secs(b.Wall.Seconds()), mb(float64(b.SizeBytes)),
				b.FilesCount, mib(float64(b.PeakRSS)), mib(float64(b.StartRSS)), phasesText(b.Phases))
		}
	}
	if len(peaks) >= 2 {
		lo, hi := slices.Min(peaks), slices.Max(peaks)
		p("%-52s %-27s %-7s %-11s %s", "peak RSS flat across database sizes", strings.Join(mapF(peaks, mib), " vs "),
			fmt.Sprintf("%.2f", ratio(hi, lo)), fmt.Sprintf("<= %.2f", FlatTolerance), verdict(hi <= FlatTolerance*lo, true))
	}
	r.renderLevels(p)
	l := r.List
	if l.Calls == 0 {
		return
	}
	p("")
	p("list %d snapshots through the API (%d calls): p50 %.1f ms, p99 %.1f ms, max %.1f ms", l.Records, l.Calls,
		ms(l.P50), ms(l.P99), ms(l.Max))
}

func (r Report) renderLevels(p func(string, ...any)) {
	if len(r.Levels) == 0 || len(r.Sizes) == 0 {
		return
	}
	large := r.Sizes[0]
	nWall, nSize := Median(seconds(large.Naive, naiveWall)), Median(values(large.Naive, naiveSize))
	p("")
	p("%-52s %-12s %-9s %-12s %-9s %s", fmt.Sprintf("compression level on the %s database, median", large.Label),
		"wall time", "vs naive", "archive", "vs naive", "peak RSS")
	for _, lv := range r.Levels {
		w, s := Median(seconds(lv.Runs, serviceWall)), Median(values(lv.Runs, serviceSize))
		peak := 0.0
		if len(lv.Runs) > 0 {
			peak = slices.Max(values(lv.Runs, servicePeak))
		}
		name := fmt.Sprintf("  L%d (%d runs)", lv.Level, len(lv.Runs))
		if lv.Level == r.DefaultLevel {
			name += ", the default"
		}
		timeOK, sizeOK := ratio(w, nWall) <= TimeRatioTarget, ratio(s, nSize) <= SizeRatioTarget
		p("%-52s %-12s %-9s %-12s %-9s %s", name, secs(w), fmt.Sprintf("%.2f %s", ratio(w, nWall), mark(timeOK)),
			mb(s), fmt.Sprintf("%.3f %s", ratio(s, nSize), mark(sizeOK)), mib(peak))
	}
}

func mark(ok bool) string {
	if ok {
		return "ok"
	}
	return "miss"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mapF(xs []float64, f func(float64) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// phasesText tells when each part of the archive was done, from the start of the build.
func phasesText(ph *Phases) string {
	if ph == nil {
		return ""
	}
	return fmt.Sprintf("; archive: dump done at %s, files at %s, committed at %s, verified at %s",
		secs(ph.DumpDone.Seconds()), secs(ph.FilesDone.Seconds()), secs(ph.Committed.Seconds()), secs(ph.Verified.Seconds()))
}
