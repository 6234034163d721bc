// Command bench is `make bench`: the backup performance benchmark of design.md ("Performance the
// benchmark must show"). In one run it starts the local stack with the handler built from this tree,
// generates the deterministic reference dataset (a Mendix-like database of about 700 MB and one of
// about 175 MB sharing 20,000 file blobs of about 20 KB), measures the naive pipeline and the service's
// backup through its HTTP API side by side, compares compression levels, times listing 1,000
// snapshots, and prints a table with the targets, also written to .local/bench-results.txt.
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
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/bench"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// The benchmark's environments; both backed-up databases use the same file container.
const (
	largeEnvID    = "b7e0c001-0000-4000-8000-00000000a700"
	smallEnvID    = "b7e0c001-0000-4000-8000-00000000a175"
	listEnvID     = "b7e0c001-0000-4000-8000-00000000a001"
	appRole       = "bench_app"
	filesBucket   = "bench-app-files"
	naiveBucket   = "bench-naive"
	uploadWorkers = 32
)

type config struct {
	runs, naiveRuns    int
	smallNaive         bool
	levels             []int
	defaultLevel       int
	files              int
	largeMB, smallMB   int
	listRecords, calls int
	out                string
}

func main() {
	var cfg config
	var levels string
	// One run each by default: Azurite serves a blob read in time proportional to the blobs it holds
	// (about 80 reads/s at 20,000 blobs), so each backup of 20,000 files takes minutes and more runs
	// would take the benchmark far past 20 minutes.
	flag.IntVar(&cfg.runs, "runs", 3, "service backups per measurement (best and median are reported)")
	flag.IntVar(&cfg.naiveRuns, "naive-runs", 3, "naive pipeline runs on the large database")
	flag.BoolVar(&cfg.smallNaive, "small-naive", false, "also run the naive pipeline on the small database (-naive-runs times)")
	flag.StringVar(&levels, "levels", "6,7,9", "compression levels compared on the large database")
	flag.IntVar(&cfg.defaultLevel, "default-level", 6, "the service's default ARCHIVE_COMPRESSION_LEVEL, used for the size comparison")
	flag.IntVar(&cfg.files, "files", 20000, "file documents (blobs of about 20 KB)")
	flag.IntVar(&cfg.largeMB, "large-mb", 700, "size of the large database, MB on disk")
	flag.IntVar(&cfg.smallMB, "small-mb", 175, "size of the small database, MB on disk")
	flag.IntVar(&cfg.listRecords, "list", 1000, "snapshot records listed in one call")
	flag.IntVar(&cfg.calls, "list-calls", 100, "timed list calls")
	flag.StringVar(&cfg.out, "out", filepath.Join(".local", "bench-results.txt"), "where the table is written too")
	flag.Parse()
	for _, f := range strings.Split(levels, ",") {
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
	report := &bench.Report{Started: time.Now(), CPUs: runtime.NumCPU(), DefaultLevel: cfg.defaultLevel}
	err := run(ctx, cfg, log, report)
	report.Total = time.Since(report.Started)
	var buf bytes.Buffer
	report.Render(&buf)
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
	// The host's and the handler's logs go to a file beside the results (the handler logs each archive's
	// phase timings there); warnings and errors also to the console.
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
	sizes := []struct {
		label, env, db string
		mb             int
	}{
		{fmt.Sprintf("%d MB", cfg.largeMB), largeEnvID, "bench_large", cfg.largeMB},
		{fmt.Sprintf("%d MB", cfg.smallMB), smallEnvID, "bench_small", cfg.smallMB},
	}
	envs := []bench.Environment{{ID: listEnvID, Name: "listing", Role: appRole, Container: filesBucket}}
	for _, s := range sizes {
		envs = append(envs, bench.Environment{ID: s.env, Name: "size-" + strings.ReplaceAll(s.label, " ", ""), Database: s.db, Role: appRole, Container: filesBucket})
	}
	if err := lab.Register(ctx, envs); err != nil {
		return err
	}

	files := bench.Files(cfg.files)
	if err := generate(ctx, lab, cfg, files, report, log, sizes[0].db, sizes[1].db); err != nil {
		return err
	}
	for _, s := range sizes {
		n, err := bench.DatabaseSize(ctx, pg.DSN("postgres"), s.db)
		if err != nil {
			return err
		}
		report.Sizes = append(report.Sizes, bench.SizeResult{Label: s.label, DatabaseBytes: n, Files: len(files), FilesBytes: bench.TotalSize(files)})
	}

	for i, s := range sizes {
		res := &report.Sizes[i]
		naive := bench.Naive{BinDir: pg.BinDir, DSN: pg.DSN(s.db), Blobs: lab.Blobs, FilesContainer: filesBucket,
			ArchiveContainer: naiveBucket, Downloads: 16, Uploads: 8}
		naiveRuns := cfg.naiveRuns
		if i > 0 && !cfg.smallNaive {
			naiveRuns = 0 // the small size is there to show memory stays flat
		}
		for r := range naiveRuns {
			log.Info().Msgf("naive pipeline, %s database, run %d of %d", s.label, r+1, naiveRuns)
			nr, err := naive.Run(ctx, fmt.Sprintf("naive-%s-%d", s.db, r))
			if err != nil {
				return err
			}
			res.Naive = append(res.Naive, nr)
			log.Info().Msgf("naive: %s, archive %.1f MB", bench.Elapsed(nr.Total), float64(nr.ArchiveBytes)/1e6)
		}
		if res.Service, err = backups(ctx, lab, s.env, s.label, cfg.defaultLevel, cfg.runs, logPath, log); err != nil {
			return err
		}
	}

	report.Levels = []bench.LevelResult{{Level: cfg.defaultLevel, Runs: report.Sizes[0].Service}}
	for _, lv := range cfg.levels {
		if lv == cfg.defaultLevel {
			continue
		}
		log.Info().Msgf("restarting the Functions host with ARCHIVE_COMPRESSION_LEVEL=%d", lv)
		if err := lab.SetCompressionLevel(ctx, lv); err != nil {
			return err
		}
		runs, err := backups(ctx, lab, sizes[0].env, sizes[0].label, lv, cfg.runs, logPath, log)
		report.Levels = append(report.Levels, bench.LevelResult{Level: lv, Runs: runs})
		if err != nil {
			return err
		}
	}

	log.Info().Msgf("listing %d snapshots, %d calls", cfg.listRecords, cfg.calls)
	report.List, err = lab.ListLatency(ctx, listEnvID, cfg.listRecords, cfg.calls)
	return err
}

// generate creates the app role, both databases and the file blobs; the blobs upload while the
// databases are generated (PostgreSQL and Azurite each keep one core busy).
func generate(ctx context.Context, lab *bench.Lab, cfg config, files []bench.File, report *bench.Report, log zerolog.Logger, large, small string) error {
	pg := lab.Stack.Postgres
	if err := pg.CreateRole(ctx, appRole, "bench-app-password"); err != nil {
		return err
	}
	log.Info().Msgf("generating the dataset: %d MB and %d MB databases, %d file blobs", cfg.largeMB, cfg.smallMB, len(files))
	start := time.Now()
	var uploadErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		uploadErr = bench.UploadFiles(ctx, lab.Blobs, filesBucket, files, uploadWorkers)
		report.Dataset.Upload = time.Since(start)
		log.Info().Msgf("file blobs uploaded in %s", bench.Elapsed(report.Dataset.Upload))
	})
	var dbErr error
	for _, d := range []struct {
		name string
		mb   int
	}{{large, cfg.largeMB}, {small, cfg.smallMB}} {
		t := time.Now()
		if dbErr = pg.CreateDatabase(ctx, d.name, appRole); dbErr != nil {
			break
		}
		if dbErr = bench.GenerateDatabase(ctx, pg.DSN(d.name), appRole, bench.CustomersFor(d.mb), files); dbErr != nil {
			break
		}
		log.Info().Msgf("database %s generated in %s", d.name, bench.Elapsed(time.Since(t)))
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

// backups takes n measured snapshots of envID, with their phases from the handler's log at logPath.
func backups(ctx context.Context, lab *bench.Lab, envID, label string, level, n int, logPath string, log zerolog.Logger) ([]bench.BackupResult, error) {
	var out []bench.BackupResult
	for i := range n {
		log.Info().Msgf("service backup, %s database, level %d, run %d of %d", label, level, i+1, n)
		r, err := lab.Backup(ctx, envID, level)
		if err != nil {
			return out, fmt.Errorf("service backup of the %s database at level %d: %w", label, level, err)
		}
		if f, err := os.Open(logPath); err == nil {
			if ph, ok := bench.PhasesFromLog(f, r.SnapshotID); ok {
				r.Phases = &ph
			}
			f.Close()
		}
		out = append(out, r)
		log.Info().Msgf("service: %s, archive %.1f MB, peak RSS %d MiB", bench.Elapsed(r.Wall), float64(r.SizeBytes)/1e6, r.PeakRSS>>20)
	}
	return out, nil
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
