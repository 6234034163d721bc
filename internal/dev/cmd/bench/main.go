// Command bench is `make bench`: the backup performance benchmark of design.md ("Performance the
// benchmark must show") and of incremental snapshots. In one run it starts the local stack with the
// handler built from this tree, generates the deterministic reference dataset (a Mendix-like database
// of about 700 MB and one of about 175 MB sharing 20,000 file blobs of about 20 KB), and measures side
// by side with the naive pipeline (pg_dump -Fc, download, tar czf, upload; median of -naive-runs):
//
//  1. the first (full) backup of an environment through the HTTP API, its file store still empty
//     (each of the -runs first backups is of another environment of the same database);
//  2. the backups that follow it, each after 1% of the file blobs changed in Azurite (new bytes, same
//     names), and the files each copied into the store (new_files_count, which must be the change);
//  3. the bytes stored after 14 such nightly backups (the snapshots container and the file store under
//     the environment's prefix, listed) against 14 naive archives: measured when the whole series fits
//     the time budget (-budget), otherwise projected from the backups it measured, and said so;
//  4. the download archive of the series' last snapshot, assembled in this process
//     (snapshotter.Assemble against the lab's Azurite), against `tar czf` of the same content on local
//     disk (the last naive run's dump and files, changed as in Azurite); its size against the naive
//     archive, and what `tar -tzf` lists in both;
//  5. the restore of the series' first (full) snapshot into a new, stopped environment of the same
//     namespace (an empty database owned by the app's role, an empty container) through the HTTP API,
//     from the POST to `completed`, which must have restored rows and added every file of the snapshot
//     (files_added = its files_count), with the handler's peak RSS during it and, from its "restore
//     verified" log line, when its database and its files were done; against what a user would run
//     otherwise (median of -naive-runs; bench.NaiveRestore): download the archive the last naive backup
//     uploaded, `tar xzf` it, `pg_restore -j2 --no-owner --no-acl` of its db.backup into an empty
//     database, and upload its tree/ files into an empty container 16 at a time (the handler's
//     BACKUP_FILE_WORKERS, how many copies a restore runs at once), each step timed;
//  8. first of all, on the same Azurite, the fan-out of a day's automatic backups (bench.FanOut: the
//     schedule timer's RunSchedule) over -fanout environments (1,000 and 10,000) seeded in tables of
//     their own, with its time, Table Storage calls, Publish calls, messages and estimated Service Bus
//     batches, and the largest size against the smallest (-fanout-only runs this part alone);
//
// plus the handler's peak RSS at both database sizes and the latency of listing 1,000 snapshots, and
// prints a table with the targets, also written to .local/bench-results.txt. What the targets need is
// measured first (the series' first backup, the series, the download archive), then the restore and its
// baseline; the other first backups (for the median and the small database) follow while the budget
// allows, and the report names anything skipped.
//
// -scale (or BENCH_SCALE) shrinks the dataset for a quick check of the benchmark itself (e.g. -scale
// 0.05: 1,000 files, 35 MB and 9 MB databases); the report then says it is reduced.
//
// It exits non-zero only on errors, never on a missed target; after an error it still prints what it
// measured. Ctrl-C stops everything it started.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/bench"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// The benchmark's environments: the large database's are full-1 to full-<runs> (the first holds the
// nightly series), the small one's small-1 to small-<small-runs>; all use the same file container.
// The restore's target has its own database and container, both empty until the restore.
const (
	listEnvID     = "b7e0c001-0000-4000-8000-00000000a001"
	restoreEnvID  = "b7e0c001-0000-4000-8000-00000000a002"
	restoreDB     = "bench_restore"
	restoreBucket = "bench-restore-files"
	appRole       = "bench_app"
	filesBucket   = "bench-app-files"
	naiveBucket   = "bench-naive"
	uploadWorkers = 32
	modelVersion  = "9.24.0"
)

func largeEnvID(i int) string { return fmt.Sprintf("b7e0c001-0000-4000-8000-0000000a70%02x", i+1) }
func smallEnvID(i int) string { return fmt.Sprintf("b7e0c001-0000-4000-8000-0000000a17%02x", i+1) }

type config struct {
	scale              float64
	runs, naiveRuns    int
	smallRuns          int
	smallNaive         bool
	nights             int
	change             float64
	levels             []int
	levelRuns          int
	defaultLevel       int
	files              int
	largeMB, smallMB   int
	listRecords, calls int
	uploadMB           int
	budget             time.Duration
	out                string
	fanOut             []int // environments of each fan-out measurement, smallest first
	fanOutRuns         int
	fanOutOnly         bool
}

func main() {
	var cfg config
	var levels, fanOut string
	defaultScale := 1.0
	if v := os.Getenv("BENCH_SCALE"); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s <= 0 || s > 1 {
			fmt.Fprintf(os.Stderr, "bench: BENCH_SCALE=%q is not a number in (0, 1]\n", v)
			os.Exit(2)
		}
		defaultScale = s
	}
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `Usage: go run ./internal/dev/cmd/bench [flags]

The backup benchmark (make bench): first backups, nightly backups after 1%% of the files changed, the
storage of 14 nightly backups, the download archive and a restore of the first snapshot, each against
the naive pipeline, on the reference dataset. A full run takes about 12.5 minutes on 2 cores (at most
-budget).

The fan-out of a day's automatic backups over 1,000 and 10,000 environments runs first (about 20
seconds); -fanout-only runs it alone, on an Azurite of its own, e.g.
  go run ./internal/dev/cmd/bench -fanout-only -fanout 1000,10000 -fanout-runs 5

For a quick check of the benchmark itself, shrink the dataset: -scale 0.05 (or BENCH_SCALE=0.05)
makes 1,000 files and databases of 35 MB and 9 MB; fewer runs make it quicker still, e.g.
  go run ./internal/dev/cmd/bench -scale 0.05 -runs 1 -naive-runs 1 -nights 4 -list 100 -list-calls 10

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Float64Var(&cfg.scale, "scale", defaultScale, "size of the dataset relative to the reference (multiplies -files, -large-mb and -small-mb); also BENCH_SCALE")
	flag.IntVar(&cfg.runs, "runs", 3, "first backups of the large database, each of another environment (empty file store); the median is reported")
	flag.IntVar(&cfg.naiveRuns, "naive-runs", 3, "naive pipeline runs on the large database, and naive restores of its archive")
	flag.IntVar(&cfg.smallRuns, "small-runs", 1, "first backups of the small database (for the peak RSS at another size); 0: no small database")
	flag.BoolVar(&cfg.smallNaive, "small-naive", false, "also run the naive pipeline on the small database (-naive-runs times)")
	flag.IntVar(&cfg.nights, "nights", bench.NightlyBackups, "backups in the nightly series (the first included); fewer are projected to 14")
	flag.Float64Var(&cfg.change, "change", 0.01, "fraction of the files changed before each backup of the series after the first")
	flag.StringVar(&levels, "levels", "", "other compression levels to compare, on backups after a change (e.g. 7,9)")
	flag.IntVar(&cfg.levelRuns, "level-runs", 2, "backups per level of -levels")
	flag.IntVar(&cfg.defaultLevel, "default-level", 6, "the service's default ARCHIVE_COMPRESSION_LEVEL, also of the assembled archive")
	flag.IntVar(&cfg.files, "files", 20000, "file documents (blobs of about 20 KB)")
	flag.IntVar(&cfg.largeMB, "large-mb", 700, "size of the large database, MB on disk")
	flag.IntVar(&cfg.smallMB, "small-mb", 175, "size of the small database, MB on disk")
	flag.IntVar(&cfg.listRecords, "list", 1000, "snapshot records listed in one call")
	flag.IntVar(&cfg.calls, "list-calls", 100, "timed list calls")
	flag.IntVar(&cfg.uploadMB, "upload-mb", 1000, "size of the archive uploaded (validated and stored) through the API, MB; 0: no upload")
	flag.DurationVar(&cfg.budget, "budget", 20*time.Minute, "time the whole run should take: the nightly series stops early (its storage is then projected), and the other first backups are skipped, when they would not fit")
	flag.StringVar(&cfg.out, "out", filepath.Join(".local", "bench-results.txt"), "where the table is written too (with -fanout-only: .local/bench-fanout.txt unless set)")
	flag.StringVar(&fanOut, "fanout", "1000,10000", "environments of each fan-out measurement of the day's automatic backups, comma-separated; \"\" for none")
	flag.IntVar(&cfg.fanOutRuns, "fanout-runs", 5, "timed fan-out runs per size (after an untimed one), each for another day; the median is reported")
	flag.BoolVar(&cfg.fanOutOnly, "fanout-only", false, "measure only the fan-out, on an Azurite of its own (no handler, no PostgreSQL, no dataset)")
	flag.Parse()
	outSet := false
	flag.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
	if cfg.fanOutOnly && !outSet {
		cfg.out = filepath.Join(".local", "bench-fanout.txt")
	}
	for _, f := range strings.Split(fanOut, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -fanout: %q is not a number of environments\n", f)
			os.Exit(2)
		}
		cfg.fanOut = append(cfg.fanOut, n)
	}
	slices.Sort(cfg.fanOut)
	if cfg.fanOutRuns < 1 || (cfg.fanOutOnly && len(cfg.fanOut) == 0) {
		fmt.Fprintln(os.Stderr, "bench: -fanout-runs must be at least 1, and -fanout-only needs -fanout sizes")
		os.Exit(2)
	}
	if cfg.scale <= 0 || cfg.scale > 1 {
		fmt.Fprintf(os.Stderr, "bench: -scale %g is not in (0, 1]\n", cfg.scale)
		os.Exit(2)
	}
	cfg.files = max(20, int(math.Round(float64(cfg.files)*cfg.scale)))
	cfg.largeMB = max(10, int(math.Round(float64(cfg.largeMB)*cfg.scale)))
	cfg.smallMB = max(5, int(math.Round(float64(cfg.smallMB)*cfg.scale)))
	cfg.uploadMB = int(math.Round(float64(cfg.uploadMB) * cfg.scale))
	if cfg.runs < 1 || cfg.nights < 1 || cfg.change <= 0 || cfg.change > 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs and -nights must be at least 1, -change in (0, 1]")
		os.Exit(2)
	}
	for _, f := range strings.Split(levels, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		lv, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || lv < 1 || lv > 9 {
			fmt.Fprintf(os.Stderr, "bench: -levels: %q is not a gzip level from 1 to 9\n", f)
			os.Exit(2)
		}
		cfg.levels = append(cfg.levels, lv)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stdout, TimeFormat: time.TimeOnly}).With().Timestamp().Logger()
	report := &bench.Report{Started: time.Now(), CPUs: runtime.NumCPU(), DefaultLevel: cfg.defaultLevel, Scale: cfg.scale}
	var err error
	if cfg.fanOutOnly {
		err = runFanOutOnly(ctx, cfg, log, report)
	} else {
		err = run(ctx, cfg, log, report)
	}
	report.Total = time.Since(report.Started)
	var buf bytes.Buffer
	if cfg.fanOutOnly {
		report.RenderFanOut(&buf)
	} else {
		report.Render(&buf)
	}
	if err != nil {
		fmt.Fprintf(&buf, "\nINCOMPLETE: %v\n", err)
	}
	fmt.Print("\n" + buf.String())
	if werr := writeResults(cfg.out, buf.Bytes()); werr != nil {
		err = errors.Join(err, werr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

func writeResults(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// size is one generated database and the environments that back it up.
type size struct {
	label, db string
	mb        int
	envs      []string
}

// run does the whole benchmark, filling report as results arrive.
func run(ctx context.Context, cfg config, log zerolog.Logger, report *bench.Report) (err error) {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := azurite.FindRepoRoot(wd)
	if err != nil {
		return err
	}
	// The host's and the handler's logs go to a file beside the results (the handler logs each
	// snapshot's phase timings there); warnings and errors also to the console.
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(filepath.Dir(cfg.out), "bench-handler.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	console := zerolog.ConsoleWriter{Out: os.Stdout, TimeFormat: time.TimeOnly}
	hostLog := zerolog.New(zerolog.MultiLevelWriter(logFile, warningsOnly{console})).Level(zerolog.InfoLevel).
		With().Timestamp().Logger()
	log.Info().Str("file", logPath).Msg("the host's and the handler's logs go to a file")
	log.Info().Msg("building the handler and starting the local stack (Azurite, PostgreSQL 15, issuer, Functions host)")
	lab, err := bench.StartLab(ctx, bench.LabOptions{RepoRoot: root, Level: cfg.defaultLevel, Logger: log, HostLogger: hostLog})
	if err != nil {
		return err
	}
	defer func() {
		log.Info().Msg("stopping the stack")
		if serr := lab.Stop(context.WithoutCancel(ctx)); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop the stack: %w", serr))
		}
	}()
	pg := lab.Stack.Postgres
	if report.Postgres, err = bench.ServerVersion(ctx, pg.DSN("postgres")); err != nil {
		return err
	}
	// The fan-out first, on a quiet machine and an Azurite that holds nothing else yet; its tables are
	// removed afterwards.
	if err := measureFanOut(ctx, lab.Stack.Azurite.ConnectionString(), cfg, report, log); err != nil {
		return err
	}
	sizes := []size{{label: fmt.Sprintf("%d MB", cfg.largeMB), db: "bench_large", mb: cfg.largeMB}}
	for i := range cfg.runs {
		sizes[0].envs = append(sizes[0].envs, largeEnvID(i))
	}
	if cfg.smallRuns > 0 {
		sizes = append(sizes, size{label: fmt.Sprintf("%d MB", cfg.smallMB), db: "bench_small", mb: cfg.smallMB})
		for i := range cfg.smallRuns {
			sizes[1].envs = append(sizes[1].envs, smallEnvID(i))
		}
	}
	envs := []bench.Environment{{ID: listEnvID, Name: "listing", Role: appRole, Container: filesBucket},
		{ID: restoreEnvID, Name: "restore-target", Database: restoreDB, Role: appRole, Container: restoreBucket}}
	for _, s := range sizes {
		for i, id := range s.envs {
			envs = append(envs, bench.Environment{ID: id, Name: fmt.Sprintf("%s-%d", s.db, i+1), Database: s.db, Role: appRole, Container: filesBucket})
		}
	}
	if err := lab.Register(ctx, envs); err != nil {
		return err
	}

	files := bench.Files(cfg.files)
	if err := generate(ctx, lab, cfg, files, report, log, sizes); err != nil {
		return err
	}
	for _, s := range sizes {
		n, err := bench.DatabaseSize(ctx, pg.DSN("postgres"), s.db)
		if err != nil {
			return err
		}
		report.Sizes = append(report.Sizes, bench.SizeResult{Label: s.label, DatabaseBytes: n, Files: len(files), FilesBytes: bench.TotalSize(files)})
	}

	// The naive pipeline; the last run on the large database keeps its folder (the dump and the files)
	// for the download archive's comparison, and its archive in Azurite for the restore's baseline.
	var kept, archive string
	defer func() {
		if kept != "" {
			os.RemoveAll(kept)
		}
		if derr := bench.DeleteArchive(context.WithoutCancel(ctx), lab.Blobs, naiveBucket, archive); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	for i, s := range sizes {
		naive := bench.Naive{BinDir: pg.BinDir, DSN: pg.DSN(s.db), Blobs: lab.Blobs, FilesContainer: filesBucket,
			ArchiveContainer: naiveBucket, Downloads: 16, Uploads: 8}
		runs := cfg.naiveRuns
		if i > 0 && !cfg.smallNaive {
			runs = 0 // the small size is there to show memory stays flat
		}
		for r := range runs {
			log.Info().Msgf("naive pipeline, %s database, run %d of %d", s.label, r+1, runs)
			naive.Keep = i == 0 && r == runs-1
			naive.KeepArchive = naive.Keep
			nr, err := naive.Run(ctx, fmt.Sprintf("naive-%s-%d", s.db, r))
			if err != nil {
				return err
			}
			if nr.Dir != "" {
				kept = nr.Dir
			}
			if nr.Archive != "" {
				archive = nr.Archive
			}
			report.Sizes[i].Naive = append(report.Sizes[i].Naive, nr)
			log.Info().Msgf("naive: %s, archive %.1f MB", bench.Elapsed(nr.Total), float64(nr.ArchiveBytes)/1e6)
		}
	}

	// What is measured first, in this order, is what the targets need: the first backup of the series'
	// environment, the nightly series, the download archive. The restore of the series' first snapshot
	// and its baseline follow, then what adds medians and the other size, while the budget allows (fits).
	fits := func(what string, cost time.Duration) bool {
		const tail = 45 * time.Second // the listing and stopping the stack
		if time.Since(report.Started)+cost+tail <= cfg.budget {
			return true
		}
		log.Warn().Msgf("skipping %s to stay within %s", what, cfg.budget)
		report.Skipped = append(report.Skipped, what)
		return false
	}
	series := sizes[0].envs[0]
	nightly := &report.Nightly
	nightly.Nights, nightly.Changed = cfg.nights, max(1, int(math.Round(cfg.change*float64(len(files)))))
	log.Info().Msgf("first backup, %s database, environment 1 of %d (the nightly series' first)", sizes[0].label, len(sizes[0].envs))
	b, err := backup(ctx, lab, series, cfg.defaultLevel, true, logPath)
	if err != nil {
		return fmt.Errorf("first backup of the %s database: %w", sizes[0].label, err)
	}
	report.Sizes[0].Service = append(report.Sizes[0].Service, b)
	logBackup(log, b)
	if err := addStorage(ctx, lab, series, nightly, b); err != nil {
		return err
	}

	// The nightly series: before each backup after the first, 1% of the files change in Azurite (and
	// in the kept naive folder). It stops early when the rest would not fit the budget.
	firstWall := b.Wall
	naiveTar := time.Duration(0)
	for _, n := range report.Sizes[0].Naive {
		naiveTar = max(naiveTar, n.Tar)
	}
	// The download archive reads every file as a first backup copies them, then tar czf and listings.
	assembly := firstWall + 2*naiveTar + 30*time.Second
	var last time.Duration
	for night := 2; night <= cfg.nights; night++ {
		if night > 2 && !fits(fmt.Sprintf("backups %d to %d of the nightly series (the storage is projected)", night, cfg.nights), last+assembly) {
			break
		}
		t := time.Now()
		changed := bench.Change(files, bench.ChangeSet(len(files), nightly.Changed, night))
		if err := bench.UploadFiles(ctx, lab.Blobs, filesBucket, changed, uploadWorkers); err != nil {
			return fmt.Errorf("change files before backup %d: %w", night, err)
		}
		if kept != "" {
			if err := bench.ApplyChanges(kept, changed); err != nil {
				return err
			}
		}
		log.Info().Msgf("backup %d of %d of the series, after %d files changed", night, cfg.nights, len(changed))
		b, err := backup(ctx, lab, series, cfg.defaultLevel, true, logPath)
		if err != nil {
			return fmt.Errorf("backup %d of the series: %w", night, err)
		}
		logBackup(log, b)
		if err := addStorage(ctx, lab, series, nightly, b); err != nil {
			return err
		}
		last = time.Since(t)
	}

	lastSnap := nightly.Backups[len(nightly.Backups)-1]
	log.Info().Msgf("assembling the download archive of snapshot %s", lastSnap.SnapshotID)
	work, err := os.MkdirTemp("", "bench-assembled-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if report.Assembly, err = lab.Assemble(ctx, series, lastSnap.SnapshotID, cfg.defaultLevel, work, max(5*time.Minute, 10*firstWall)); err != nil {
		return err
	}
	log.Info().Msgf("assembled: %s, %.1f MB", bench.Elapsed(report.Assembly.Wall), float64(report.Assembly.SizeBytes)/1e6)
	if kept != "" {
		log.Info().Msg("tar czf of the same content on disk")
		dump := report.Sizes[0].Naive[len(report.Sizes[0].Naive)-1].DumpBytes
		meta := bench.ArchiveMetadata(dump, report.Sizes[0].DatabaseBytes, bench.TotalSize(files), modelVersion)
		if report.Reference, err = bench.TarReference(ctx, kept, meta); err != nil {
			return err
		}
		log.Info().Msgf("tar czf: %s, %.1f MB", bench.Elapsed(report.Reference.Tar), float64(report.Reference.SizeBytes)/1e6)
		os.RemoveAll(kept)
		kept = ""
	}

	// The same download through the API, right after: Azurite then holds what it held for Assemble (the
	// restore below adds tens of thousands of blobs to it, which slows every later read).
	if err := measureDownload(ctx, lab, report, log, fits, series, lastSnap); err != nil {
		return err
	}

	if err := measureRestore(ctx, lab, cfg, report, log, logPath, fits, series, nightly.Backups[0], archive); err != nil {
		return err
	}
	if err := measureUpload(ctx, lab, cfg, report, log, fits); err != nil {
		return err
	}

	// More first backups, each of another environment so that each starts with an empty file store:
	// the large database's for the median, then the small one's for the peak RSS at another size.
	// They are deleted afterwards (their file stores stay).
	for i, s := range sizes {
		for k, env := range s.envs {
			if i == 0 && k == 0 {
				continue // the series' first
			}
			if !fits(fmt.Sprintf("first backup %d of %d of the %s database", k+1, len(s.envs), s.label), firstWall+10*time.Second) {
				continue
			}
			log.Info().Msgf("first backup, %s database, environment %d of %d", s.label, k+1, len(s.envs))
			b, err := backup(ctx, lab, env, cfg.defaultLevel, false, logPath)
			if err != nil {
				return fmt.Errorf("first backup of the %s database: %w", s.label, err)
			}
			report.Sizes[i].Service = append(report.Sizes[i].Service, b)
			logBackup(log, b)
		}
	}

	// Other compression levels: backups of the series' environment after a change, deleted afterwards.
	for k, lv := range cfg.levels {
		if !fits(fmt.Sprintf("compression level %d", lv), time.Duration(cfg.levelRuns+1)*last+20*time.Second) {
			continue
		}
		log.Info().Msgf("restarting the Functions host with ARCHIVE_COMPRESSION_LEVEL=%d", lv)
		if err := lab.SetCompressionLevel(ctx, lv); err != nil {
			return err
		}
		res := bench.LevelResult{Level: lv}
		for r := range cfg.levelRuns {
			changed := bench.Change(files, bench.ChangeSet(len(files), nightly.Changed, 1000+k*100+r))
			if err := bench.UploadFiles(ctx, lab.Blobs, filesBucket, changed, uploadWorkers); err != nil {
				return err
			}
			log.Info().Msgf("backup at level %d, run %d of %d", lv, r+1, cfg.levelRuns)
			b, err := backup(ctx, lab, series, lv, false, logPath)
			if err != nil {
				report.Levels = append(report.Levels, res)
				return fmt.Errorf("backup at level %d: %w", lv, err)
			}
			res.Runs = append(res.Runs, b)
			logBackup(log, b)
		}
		report.Levels = append(report.Levels, res)
	}
	if len(report.Levels) > 0 {
		report.Levels = append([]bench.LevelResult{{Level: cfg.defaultLevel, Runs: nightly.Backups[1:]}}, report.Levels...)
	}

	log.Info().Msgf("listing %d snapshots, %d calls", cfg.listRecords, cfg.calls)
	report.List, err = lab.ListLatency(ctx, listEnvID, cfg.listRecords, cfg.calls)
	return err
}

// runFanOutOnly measures the fan-out alone, on an Azurite of its own.
func runFanOutOnly(ctx context.Context, cfg config, log zerolog.Logger, report *bench.Report) (err error) {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := azurite.FindRepoRoot(wd)
	if err != nil {
		return err
	}
	log.Info().Msg("starting Azurite")
	az, err := azurite.Start(ctx, azurite.Options{RepoRoot: root, Logger: log.Level(zerolog.WarnLevel)})
	if err != nil {
		return err
	}
	defer func() {
		if serr := az.Stop(context.WithoutCancel(ctx)); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	return measureFanOut(ctx, az.ConnectionString(), cfg, report, log)
}

// measureFanOut runs the fan-out of the day's automatic backups over each of -fanout environments.
func measureFanOut(ctx context.Context, conn string, cfg config, report *bench.Report, log zerolog.Logger) error {
	for _, n := range cfg.fanOut {
		log.Info().Msgf("fan-out of the day's automatic backups over %d environments: seeding, then %d runs", n, cfg.fanOutRuns)
		r, err := bench.FanOut(ctx, bench.FanOutOptions{ConnectionString: conn, Environments: n, Runs: cfg.fanOutRuns, Log: log})
		if err != nil {
			return err
		}
		report.FanOut.Runs = append(report.FanOut.Runs, r)
		log.Info().Msgf("fan-out over %d environments: %s (median of %d), %d Table calls, %d Publish calls, %d messages",
			n, bench.Elapsed(r.Wall()), len(r.Walls), r.Table.Total(), r.Publish.Calls, r.Publish.Messages)
	}
	return nil
}

// measureRestore restores the series' first (full) snapshot into the restore's target, a new stopped
// environment with an empty database and an empty container, through the API; then runs the naive
// restore of the kept naive archive -naive-runs times, each into its own empty database and container.
// The restore and the first naive run must fit the budget together; each further naive run on its own.
func measureRestore(ctx context.Context, lab *bench.Lab, cfg config, report *bench.Report, log zerolog.Logger, logPath string,
	fits func(string, time.Duration) bool, series string, first bench.BackupResult, archive string) error {
	var naive []float64
	for _, n := range report.Sizes[0].Naive {
		naive = append(naive, n.Total.Seconds())
	}
	naiveCost := time.Duration(1.2 * bench.Median(naive) * float64(time.Second)) // pg_restore builds the indexes too
	if !fits("the restore of the series' first snapshot and its naive baseline", first.Wall+naiveCost+20*time.Second) {
		return nil
	}
	pg := lab.Stack.Postgres
	if err := pg.CreateDatabase(ctx, restoreDB, appRole); err != nil {
		return err
	}
	if _, err := lab.Blobs.CreateContainer(ctx, restoreBucket, nil); err != nil {
		return fmt.Errorf("create container %s: %w", restoreBucket, err)
	}
	log.Info().Msgf("restore of snapshot %s (the series' first) into a new stopped environment", first.SnapshotID)
	r, err := lab.Restore(ctx, restoreEnvID, series, first.SnapshotID, first.FilesCount)
	if err != nil {
		return fmt.Errorf("restore of the series' first snapshot: %w", err)
	}
	if f, err := os.Open(logPath); err == nil {
		if ph, ok := bench.RestorePhasesFromLog(f, r.RestoreID); ok {
			r.Phases = &ph
		}
		f.Close()
	}
	report.Restore.Service = &r
	log.Info().Msgf("restore: %s, %d tables, %d rows, %d files added of %d, peak RSS %d MiB", bench.Elapsed(r.Wall), r.Tables,
		r.Rows, r.FilesAdded, r.SnapshotFiles, r.PeakRSS>>20)
	if !r.Checked() {
		log.Warn().Msgf("the restore restored %d rows and added %d files of the snapshot's %d", r.Rows, r.FilesAdded, r.SnapshotFiles)
	}
	if archive == "" {
		return nil // no naive run kept an archive (-naive-runs 0)
	}
	nr := bench.NaiveRestore{Postgres: pg, Owner: appRole, Blobs: lab.Blobs, ArchiveContainer: naiveBucket, Archive: archive,
		Downloads: 8, Uploads: bench.RestoreFileWorkers}
	var last time.Duration
	for k := range cfg.naiveRuns {
		if k > 0 && !fits(fmt.Sprintf("naive restore run %d of %d", k+1, cfg.naiveRuns), last+10*time.Second) {
			break
		}
		log.Info().Msgf("naive restore, run %d of %d", k+1, cfg.naiveRuns)
		t := time.Now()
		res, err := nr.Run(ctx, fmt.Sprintf("bench-naive-restore-%d", k+1))
		if err != nil {
			return err
		}
		last = time.Since(t)
		report.Restore.Naive = append(report.Restore.Naive, res)
		log.Info().Msgf("naive restore: %s (download %s, tar xzf %s, pg_restore %s, upload %s)", bench.Elapsed(res.Total),
			bench.Elapsed(res.Download), bench.Elapsed(res.Extract), bench.Elapsed(res.PgRestore), bench.Elapsed(res.Upload))
	}
	return nil
}

// measureDownload downloads the series' last snapshot through the API, against the tar czf of the
// same content measured for the download archive.
func measureDownload(ctx context.Context, lab *bench.Lab, report *bench.Report, log zerolog.Logger,
	fits func(string, time.Duration) bool, series string, last bench.BackupResult) error {
	if !fits("the download through the API", report.Assembly.Wall+20*time.Second) {
		return nil
	}
	log.Info().Msgf("download of snapshot %s through the API", last.SnapshotID)
	d, err := lab.Download(ctx, series, last.SnapshotID)
	if err != nil {
		return err
	}
	report.Transfers.Download = &d
	log.Info().Msgf("download: %s, %.1f MB, peak RSS %d MiB", bench.Elapsed(d.Wall), float64(d.SizeBytes)/1e6, d.PeakRSS>>20)
	return nil
}

// measureUpload uploads a Mendix archive of about -upload-mb MB into the restore's target, measuring
// its validation against gzip -dc | tar -t of the same archive.
func measureUpload(ctx context.Context, lab *bench.Lab, cfg config, report *bench.Report, log zerolog.Logger,
	fits func(string, time.Duration) bool) error {
	// Building the archive, putting it through its link and validating it: about 100 MB/s each.
	if cfg.uploadMB <= 0 || !fits(fmt.Sprintf("the %d MB upload", cfg.uploadMB), time.Duration(cfg.uploadMB)*40*time.Millisecond+30*time.Second) {
		return nil
	}
	dir, err := os.MkdirTemp("", "bench-upload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log.Info().Msgf("building a %d MB Mendix archive to upload", cfg.uploadMB)
	pg := lab.Stack.Postgres
	a, err := bench.BuildUploadArchive(ctx, pg.BinDir, pg.DSN("bench_large"), dir, int64(cfg.uploadMB)*1e6)
	if err != nil {
		return err
	}
	log.Info().Msg("gzip -dc | tar -t of it")
	baseline, entries, err := bench.ReadBaseline(ctx, a.Path)
	if err != nil {
		return err
	}
	log.Info().Msgf("upload of %.1f MB through the API (%d files)", float64(a.Bytes)/1e6, a.Files)
	u, err := lab.Upload(ctx, restoreEnvID, a)
	if err != nil {
		return fmt.Errorf("the upload: %w", err)
	}
	u.Baseline, u.Entries = baseline, entries
	report.Transfers.Upload = &u
	log.Info().Msgf("upload accepted in %s (gzip -dc | tar -t %s), peak RSS %d MiB", bench.Elapsed(u.Wall), bench.Elapsed(baseline), u.PeakRSS>>20)
	return nil
}

// addStorage records backup b of the series and lists the storage of env after it.
func addStorage(ctx context.Context, lab *bench.Lab, env string, n *bench.NightlyResult, b bench.BackupResult) error {
	st, err := lab.Storage(ctx, env)
	if err != nil {
		return fmt.Errorf("list the storage after backup %d of the series: %w", len(n.Backups)+1, err)
	}
	n.Backups = append(n.Backups, b)
	n.Storage = append(n.Storage, st)
	return nil
}

// generate creates the app role, the databases and the file blobs; the blobs upload while the
// databases are generated (PostgreSQL and Azurite each keep one core busy).
func generate(ctx context.Context, lab *bench.Lab, cfg config, files []bench.File, report *bench.Report, log zerolog.Logger, sizes []size) error {
	pg := lab.Stack.Postgres
	if err := pg.CreateRole(ctx, appRole, "bench-app-password"); err != nil {
		return err
	}
	labels := make([]string, len(sizes))
	for i, s := range sizes {
		labels[i] = s.label
	}
	log.Info().Msgf("generating the dataset: %s databases, %d file blobs", strings.Join(labels, " and "), len(files))
	start := time.Now()
	var uploadErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		uploadErr = bench.UploadFiles(ctx, lab.Blobs, filesBucket, files, uploadWorkers)
		report.Dataset.Upload = time.Since(start)
		log.Info().Msgf("file blobs uploaded in %s", bench.Elapsed(report.Dataset.Upload))
	})
	var dbErr error
	for _, s := range sizes {
		t := time.Now()
		if dbErr = pg.CreateDatabase(ctx, s.db, appRole); dbErr != nil {
			break
		}
		if dbErr = bench.GenerateDatabase(ctx, pg.DSN(s.db), appRole, bench.CustomersFor(s.mb), files); dbErr != nil {
			break
		}
		log.Info().Msgf("database %s generated in %s", s.db, bench.Elapsed(time.Since(t)))
	}
	report.Dataset.Databases = time.Since(start)
	wg.Wait()
	report.Dataset.Total = time.Since(start)
	report.Dataset.Files, report.Dataset.FilesBytes = len(files), bench.TotalSize(files)
	if err := errors.Join(dbErr, uploadErr); err != nil {
		return fmt.Errorf("generate the dataset: %w", err)
	}
	log.Info().Msgf("dataset generated in %s", bench.Elapsed(report.Dataset.Total))
	return nil
}

// backup takes one measured snapshot of envID, with its phases from the handler's log at logPath.
func backup(ctx context.Context, lab *bench.Lab, envID string, level int, keep bool, logPath string) (bench.BackupResult, error) {
	r, err := lab.Backup(ctx, envID, level, keep)
	if err != nil {
		return r, err
	}
	if f, err := os.Open(logPath); err == nil {
		if ph, ok := bench.PhasesFromLog(f, r.SnapshotID); ok {
			r.Phases = &ph
		}
		f.Close()
	}
	return r, nil
}

func logBackup(log zerolog.Logger, b bench.BackupResult) {
	log.Info().Msgf("service: %s, %d new files of %d, stored %.1f MB, peak RSS %d MiB", bench.Elapsed(b.Wall), b.NewFiles,
		b.FilesCount, float64(b.StoredBytes)/1e6, b.PeakRSS>>20)
}

// warningsOnly passes warnings and worse to w and drops the rest.
type warningsOnly struct{ w io.Writer }

func (o warningsOnly) Write(p []byte) (int, error) { return o.w.Write(p) }

func (o warningsOnly) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if l < zerolog.WarnLevel {
		return len(p), nil
	}
	return o.w.Write(p)
}
