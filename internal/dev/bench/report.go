package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Targets: design.md ("Performance the benchmark must show") and the incremental-snapshots issue.
const (
	// FullTimeTarget: the first (full) backup of an environment, into an empty file store, takes at most
	// 0.35 × the naive pipeline's time.
	FullTimeTarget = 0.35
	// IncrementalTimeTarget: a backup after 1% of the files changed takes at most 0.2 × the naive
	// pipeline's time (which always does everything).
	IncrementalTimeTarget = 0.20
	// StorageTarget: NightlyBackups nightly backups, each after a fresh 1% change, store at most 0.15 ×
	// NightlyBackups naive archives.
	StorageTarget  = 0.15
	NightlyBackups = 14
	// SizeRatioTarget: the download archive (assembled on demand) is at most 1.05 × the naive archive.
	SizeRatioTarget = 1.05
	RSSLimit        = 150 << 20 // the handler's peak RSS under 150 MiB
	// RestoreTimeTarget: a restore of the first (full) snapshot into an empty, stopped environment takes
	// at most 0.6 × what a user would otherwise run (NaiveRestore).
	RestoreTimeTarget = 0.6
	// FlatTolerance is how much larger the peak RSS at one database size may be than at the other
	// (the larger over the smaller) and still count as flat.
	FlatTolerance = 1.25
)

// Report is everything one benchmark run measured.
type Report struct {
	Started  time.Time
	CPUs     int
	Postgres string // server version
	// Scale is the dataset's size relative to the reference dataset (1, or 0 for unset, is the reference).
	Scale   float64
	Dataset DatasetInfo
	// Sizes are the first (full) backups of environments whose file store is empty, at DefaultLevel,
	// against the naive pipeline; the largest database first.
	Sizes []SizeResult
	// Nightly is the series of nightly backups of one environment on the largest database.
	Nightly NightlyResult
	// Assembly is the download archive of the series' last snapshot, Reference its naive counterpart.
	Assembly  AssemblyResult
	Reference ReferenceResult
	Restore   RestoreReport // the series' first snapshot restored into a new environment, against NaiveRestore
	Transfers TransferReport
	Levels    []LevelResult // incremental backups at each compression level on the largest database
	List      ListResult
	FanOut    FanOutReport // the day's run of automatic backups over thousands of environments
	// DefaultLevel is the compression level of Sizes and Nightly (the service's default).
	DefaultLevel int
	// Skipped names what was not measured to stay within the run's time budget.
	Skipped []string
	Total   time.Duration
}

// DatasetInfo describes the generated dataset and how long generating it took.
type DatasetInfo struct {
	Files      int
	FilesBytes int64
	Databases  time.Duration // all databases, one after the other
	Upload     time.Duration // the file blobs, concurrently with the databases
	Total      time.Duration
}

// SizeResult compares the service's first backups with the naive pipeline on one database.
type SizeResult struct {
	Label         string // "700 MB"
	DatabaseBytes int64  // pg_database_size
	Files         int
	FilesBytes    int64
	Naive         []NaiveResult
	Service       []BackupResult // first backups, each of another environment (an empty file store)
}

// NightlyResult is a series of backups of one environment: the first into its empty file store, each
// later one after Changed files changed.
type NightlyResult struct {
	Nights  int // the length the series was meant to have
	Changed int
	Backups []BackupResult
	Storage []EnvStorage // listed after each backup of Backups
}

// RestoreReport is the service's restore of the series' first snapshot (nil when not measured) and the
// runs of the naive restore of the naive archive.
type RestoreReport struct {
	Service *RestoreResult
	Naive   []NaiveRestoreResult
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
func servicePeak(r BackupResult) int64         { return r.PeakRSS }
func serviceStored(r BackupResult) int64       { return r.StoredBytes }

// verdict is "met" when ok, else "NOT MET"; "n/a" when there was nothing to compare.
func verdict(ok, measured bool) string {
	switch {
	case !measured:
		return "n/a"
	case ok:
		return "met"
	default:
		return "NOT MET"
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
	if r.Scale != 0 && r.Scale != 1 {
		p("REDUCED DATASET: %g of the reference dataset's size; the targets are for the reference dataset", r.Scale)
	}
	if len(r.Skipped) > 0 {
		p("not measured, to stay within the time budget: %s", strings.Join(r.Skipped, "; "))
	}
	p("")
	var peaks []float64
	for i, s := range r.Sizes {
		if i > 0 {
			p("")
		}
		peak, ok := r.renderSize(p, i, s)
		if ok {
			peaks = append(peaks, peak)
		}
	}
	if len(peaks) >= 2 {
		lo, hi := slices.Min(peaks), slices.Max(peaks)
		p("%-52s %-27s %-7s %-11s %s", "peak RSS flat across database sizes", strings.Join(mapF(peaks, mib), " vs "),
			fmt.Sprintf("%.2f", ratio(hi, lo)), fmt.Sprintf("<= %.2f", FlatTolerance), verdict(hi <= FlatTolerance*lo, true))
	}
	r.renderLevels(p)
	r.renderFanOut(p)
	l := r.List
	if l.Calls == 0 {
		return
	}
	p("")
	p("list %d snapshots through the API (%d calls): p50 %.1f ms, p99 %.1f ms, max %.1f ms", l.Records, l.Calls,
		ms(l.P50), ms(l.P99), ms(l.Max))
}

// renderSize writes the rows of one database size (the first also gets the nightly series and the
// download archive) and returns the handler's peak RSS over its backups.
func (r Report) renderSize(p func(string, ...any), i int, s SizeResult) (peak float64, measured bool) {
	row := func(label, naive, service, rat, target, verdict string) {
		p("  "+rowFormat, label, naive, service, rat, target, verdict)
	}
	p(headFormat, fmt.Sprintf("backup, %s database (%s) + %d files", s.Label, mb(float64(s.DatabaseBytes)), s.Files),
		"naive", fmt.Sprintf("service L%d", r.DefaultLevel), "ratio", "target", "")
	if len(s.Naive) == 0 && len(s.Service) == 0 && i > 0 {
		p("  not measured")
		return 0, false
	}
	nw, sw := seconds(s.Naive, naiveWall), seconds(s.Service, serviceWall)
	ok := len(nw) > 0 && len(sw) > 0
	nMed, sMed := Median(nw), Median(sw)
	if len(nw) == 0 { // the small size shows memory only, unless asked for
		row(fmt.Sprintf("1. first backup, median of %d runs", len(sw)), "-", secs(sMed), "", "", "")
	} else {
		row(fmt.Sprintf("1. first backup, median (naive %d, service %d runs)", len(nw), len(sw)), secs(nMed), secs(sMed),
			fmt.Sprintf("%.2f", ratio(sMed, nMed)), fmt.Sprintf("<= %.2f", FullTimeTarget), verdict(ratio(sMed, nMed) <= FullTimeTarget, ok))
	}
	if ok {
		nBest, sBest := slices.Min(nw), slices.Min(sw)
		row("   first backup, best", secs(nBest), secs(sBest), fmt.Sprintf("%.2f", ratio(sBest, nBest)),
			fmt.Sprintf("<= %.2f", FullTimeTarget), verdict(ratio(sBest, nBest) <= FullTimeTarget, ok))
	}
	backups := s.Service
	if i == 0 {
		r.renderNightly(row, nMed, Median(values(s.Naive, naiveSize)), len(nw) > 0)
		r.renderAssembly(row, Median(values(s.Naive, naiveSize)), len(nw) > 0)
		r.renderRestore(row)
		r.renderTransfers(row)
		backups = append(slices.Clone(backups), r.Nightly.laterBackups()...)
	}
	if len(backups) > 0 {
		peak = slices.Max(values(backups, servicePeak))
	}
	row("peak RSS of the handler, max of backups", "-", mib(peak), "", fmt.Sprintf("< %s", mib(RSSLimit)),
		verdict(peak < RSSLimit, len(backups) > 0))
	for k, n := range s.Naive {
		p("  naive run %d: pg_dump -Fc %s (%s), download %d blobs %s, tar czf %s, upload %s; archive %s", k+1, secs(n.Dump.Seconds()),
			mb(float64(n.DumpBytes)), n.Files, secs(n.Download.Seconds()), secs(n.Tar.Seconds()), secs(n.Upload.Seconds()), mb(float64(n.ArchiveBytes)))
	}
	for k, b := range s.Service {
		p("  first backup %d: %s", k+1, backupText(b))
	}
	if i == 0 {
		r.renderNightlyDetails(p)
		r.renderRestoreDetails(p)
		r.renderTransferDetails(p)
	}
	return peak, len(s.Service) > 0
}

// laterBackups are the series' backups after its first.
func (n NightlyResult) laterBackups() []BackupResult {
	if len(n.Backups) < 2 {
		return nil
	}
	return n.Backups[1:]
}

// storedAfter is the storage listed after each backup of the series.
func (n NightlyResult) storedAfter() []int64 {
	out := make([]int64, len(n.Storage))
	for i, s := range n.Storage {
		out[i] = s.Total()
	}
	return out
}

func (r Report) renderNightly(row func(label, naive, service, rat, target, verdict string), naiveTime, naiveArchive float64, haveNaive bool) {
	n := r.Nightly
	later := n.laterBackups()
	if len(later) == 0 {
		return
	}
	pct := ""
	if r.Dataset.Files > 0 {
		pct = fmt.Sprintf(" (%.1f%%)", 100*float64(n.Changed)/float64(r.Dataset.Files))
	}
	naiveText := func(s string) string {
		if !haveNaive {
			return "-"
		}
		return s
	}
	timeRow := func(label string, t float64) {
		row(label, naiveText(secs(naiveTime)), secs(t), fmt.Sprintf("%.2f", ratio(t, naiveTime)),
			fmt.Sprintf("<= %.2f", IncrementalTimeTarget), verdict(ratio(t, naiveTime) <= IncrementalTimeTarget, haveNaive))
	}
	timeRow(fmt.Sprintf("2. second backup, %d files%s changed", n.Changed, pct), later[0].Wall.Seconds())
	last := len(n.Backups)
	if len(later) > 1 {
		timeRow(fmt.Sprintf("   backups 2 to %d, median", last), Median(seconds(later, serviceWall)))
	}
	want := fmt.Sprintf("= %d", n.Changed)
	row("   new_files_count of the second backup", "-", fmt.Sprint(later[0].NewFiles), "", want,
		verdict(later[0].NewFiles == n.Changed, true))
	if len(later) > 1 {
		counts := make([]float64, len(later))
		all := true
		for k, b := range later {
			counts[k] = float64(b.NewFiles)
			all = all && b.NewFiles == n.Changed
		}
		row(fmt.Sprintf("   new_files_count of backups 2 to %d, each", last), "-",
			fmt.Sprintf("%.0f to %.0f", slices.Min(counts), slices.Max(counts)), "", want, verdict(all, true))
	}
	nights := n.Nights
	if nights <= 0 {
		nights = NightlyBackups
	}
	stored, how := NightlyStorage(n.storedAfter(), nights)
	if how == "" {
		return
	}
	naive14 := float64(nights) * naiveArchive
	row(fmt.Sprintf("3. stored after %d nightly backups, %s", nights, how), naiveText(mb(naive14)), mb(float64(stored)),
		fmt.Sprintf("%.3f", ratio(float64(stored), naive14)), fmt.Sprintf("<= %.2f", StorageTarget),
		verdict(ratio(float64(stored), naive14) <= StorageTarget, haveNaive))
	if how == "measured" {
		row(fmt.Sprintf("   (%d backups measured; naive: %d x %s)", nights, nights, mb(naiveArchive)), "", "", "", "", "")
	} else {
		row(fmt.Sprintf("   (projected from measured backups 1 to %d)", len(n.Storage)), "", "", "", "", "")
	}
}

func (r Report) renderAssembly(row func(label, naive, service, rat, target, verdict string), naiveArchive float64, haveNaive bool) {
	a, ref := r.Assembly, r.Reference
	if a.Wall == 0 {
		return
	}
	refOK := ref.Tar > 0
	refText := func(s string) string {
		if !refOK {
			return "-"
		}
		return s
	}
	row("4. download archive: Assemble vs tar czf", refText(secs(ref.Tar.Seconds())), secs(a.Wall.Seconds()),
		refText(fmt.Sprintf("%.2f", ratio(a.Wall.Seconds(), ref.Tar.Seconds()))), "(none)", "")
	if haveNaive {
		s := float64(a.SizeBytes)
		row("   archive size, assembled vs naive archive", mb(naiveArchive), mb(s), fmt.Sprintf("%.3f", ratio(s, naiveArchive)),
			fmt.Sprintf("<= %.2f", SizeRatioTarget), verdict(ratio(s, naiveArchive) <= SizeRatioTarget, true))
	}
	if refOK {
		row("   archive size, assembled vs tar czf", mb(float64(ref.SizeBytes)), mb(float64(a.SizeBytes)),
			fmt.Sprintf("%.3f", ratio(float64(a.SizeBytes), float64(ref.SizeBytes))), "", "")
		row("   files tar -tzf lists, tar czf vs assembled", fmt.Sprint(ref.Entries.Files), fmt.Sprint(a.Entries.Files), "",
			"equal", verdict(ref.Entries.Files == a.Entries.Files && a.Entries.Files == a.FilesCount+2, true))
	}
}

func (r Report) renderNightlyDetails(p func(string, ...any)) {
	n := r.Nightly
	for k, b := range n.laterBackups() {
		p("  backup %d of the series: %s", k+2, backupText(b))
	}
	if len(n.Storage) > 0 {
		last := n.Storage[len(n.Storage)-1]
		var sum int64
		for _, b := range n.Backups {
			sum += b.StoredBytes
		}
		p("  stored after backup %d of the series: %d dumps %s, %d manifests %s, %d other blobs %s; file store %d objects %s; total %s (the snapshots' stored_bytes add up to %s)",
			len(n.Storage), last.Dumps.Blobs, mb(float64(last.Dumps.Bytes)), last.Manifests.Blobs, mb(float64(last.Manifests.Bytes)),
			last.Other.Blobs, mb(float64(last.Other.Bytes)), last.Store.Blobs, mb(float64(last.Store.Bytes)), mb(float64(last.Total())), mb(float64(sum)))
		after := n.storedAfter()
		if len(after) >= 2 {
			growth := make([]float64, 0, len(after)-1)
			for k := 1; k < len(after); k++ {
				growth = append(growth, float64(after[k]-after[k-1]))
			}
			p("  storage: %s after the first backup, then %s more per backup (median)", mb(float64(after[0])), mb(Median(growth)))
		}
	}
	if a, ref := r.Assembly, r.Reference; a.Wall > 0 {
		p("  Assemble of the series' last snapshot (in the benchmark process): %s, %s, %d files, tar -tzf lists %d files and %d directories; peak RSS of the process %s",
			secs(a.Wall.Seconds()), mb(float64(a.SizeBytes)), a.FilesCount, a.Entries.Files, a.Entries.Dirs, mib(float64(a.PeakRSS)))
		if ref.Tar > 0 {
			p("  tar czf of the same content on disk (the naive run's dump and files, changed as in Azurite): %s, %s, tar -tzf lists %d files and %d directories",
				secs(ref.Tar.Seconds()), mb(float64(ref.SizeBytes)), ref.Entries.Files, ref.Entries.Dirs)
		}
	}
}

func (r Report) renderLevels(p func(string, ...any)) {
	if len(r.Levels) == 0 || len(r.Sizes) == 0 {
		return
	}
	large := r.Sizes[0]
	nWall := Median(seconds(large.Naive, naiveWall))
	p("")
	p("%-52s %-12s %-9s %-12s %s", fmt.Sprintf("compression level, backups after %d changed, median", r.Nightly.Changed),
		"wall time", "vs naive", "stored", "peak RSS")
	for _, lv := range r.Levels {
		w, s := Median(seconds(lv.Runs, serviceWall)), Median(values(lv.Runs, serviceStored))
		peak := 0.0
		if len(lv.Runs) > 0 {
			peak = slices.Max(values(lv.Runs, servicePeak))
		}
		name := fmt.Sprintf("  L%d (%d runs)", lv.Level, len(lv.Runs))
		if lv.Level == r.DefaultLevel {
			name += ", the default"
		}
		p("%-52s %-12s %-9s %-12s %s", name, secs(w), fmt.Sprintf("%.2f %s", ratio(w, nWall), mark(ratio(w, nWall) <= IncrementalTimeTarget)),
			mb(s), mib(peak))
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

// backupText is one backup's details line.
func backupText(b BackupResult) string {
	return fmt.Sprintf("%s, %d files (%d new, %s), dump %s, stored %s, peak RSS %s (at start %s)%s", secs(b.Wall.Seconds()),
		b.FilesCount, b.NewFiles, mb(float64(b.NewFilesBytes)), mb(float64(b.DumpBytes)), mb(float64(b.StoredBytes)),
		mib(float64(b.PeakRSS)), mib(float64(b.StartRSS)), phasesText(b.Phases))
}

// phasesText tells when each part of the snapshot was done, from the start of the backup.
func phasesText(ph *Phases) string {
	if ph == nil {
		return ""
	}
	return fmt.Sprintf("; dump done at %s, files at %s, committed at %s, verified at %s",
		secs(ph.DumpDone.Seconds()), secs(ph.FilesDone.Seconds()), secs(ph.Committed.Seconds()), secs(ph.Verified.Seconds()))
}
