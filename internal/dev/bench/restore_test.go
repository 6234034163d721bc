package bench

import (
	"bytes"
	"context"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A "restore verified" line as the local host writes it to .local/bench-handler.log, around the
// handler's own JSON line; the logger's context names the staging database under "database" too.
const restoreLine = `{"level":"info","source":"handler","stream":"stdout","time":"2026-12-03T10:00:00Z","message":"{\"level\":\"info\",\"service\":\"backups\",\"database\":\"bench_restore\",\"restore\":\"0193a1b2-0000-7000-8000-00000000beef\",\"staging\":\"bench_restore_restore_0193a1b2\",\"dump_bytes\":640000000,\"tables\":6,\"rows\":5000000,\"added\":20000,\"replaced\":0,\"unchanged\":0,\"database\":31250.5,\"files\":22100.25,\"total\":33900.75,\"message\":\"restore verified\"}"}`

func TestRestorePhasesFromLog(t *testing.T) {
	id := "0193a1b2-0000-7000-8000-00000000beef"
	log := strings.Join([]string{
		`{"level":"info","source":"host","message":"Executing 'Functions.RestoreJobs'"}`,
		`not json at all`,
		strings.Replace(restoreLine, id, "0193a1b2-1111-7000-8000-00000000beef", 1),                         // another restore
		strings.Replace(restoreLine, "restore verified", "restoring files", 1),                              // another message
		strings.Replace(restoreLine, `\"total\":33900.75,`, "", 1),                                          // no total: skipped
		strings.NewReplacer("31250.5", "1000", "22100.25", "2000", "33900.75", "3000").Replace(restoreLine), // a first attempt
		restoreLine, // the last attempt wins
		`{"level":"info","source":"handler","stream":"stdout","message":"{\"message\":\"restore completed\"}"}`,
	}, "\n")
	got, ok := RestorePhasesFromLog(strings.NewReader(log), id)
	want := RestorePhases{DatabaseDone: 31250500 * time.Microsecond, FilesDone: 22100250 * time.Microsecond, Verified: 33900750 * time.Microsecond}
	if !ok || got != want {
		t.Errorf("got %+v %v, want %+v", got, ok, want)
	}
	if _, ok := RestorePhasesFromLog(strings.NewReader(log), "0193a1b2-2222-7000-8000-00000000beef"); ok {
		t.Error("found phases of a restore that has no line")
	}
}

func TestRecordSpans(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	at := func(s float64) *time.Time { v := t0.Add(time.Duration(s * float64(time.Second))); return &v }
	tests := []struct {
		name           string
		rec            restoreView
		queued, worker time.Duration
	}{
		{"not started", restoreView{CreatedAt: t0}, 0, 0},
		{"both", restoreView{CreatedAt: t0, StartedAt: at(0.5), FinishedAt: at(30.5)}, 500 * time.Millisecond, 30 * time.Second},
		{"no finish", restoreView{CreatedAt: t0, StartedAt: at(2)}, 2 * time.Second, 0},
		{"clocks backwards: not shown", restoreView{CreatedAt: t0, StartedAt: at(-1), FinishedAt: at(-2)}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if q, w := recordSpans(tt.rec); q != tt.queued || w != tt.worker {
				t.Errorf("got %v %v, want %v %v", q, w, tt.queued, tt.worker)
			}
		})
	}
}

func TestNaiveRestoreNames(t *testing.T) {
	if db, c := naiveRestoreNames("Bench-Naive_Restore-1"); db != "bench_naive_restore_1" || c != "bench-naive-restore-1" {
		t.Errorf("got %q %q", db, c)
	}
}

func TestRestoreChecked(t *testing.T) {
	for _, tt := range []struct {
		r    RestoreResult
		want bool
	}{
		{RestoreResult{Rows: 10, FilesAdded: 5, SnapshotFiles: 5}, true},
		{RestoreResult{Rows: 0, FilesAdded: 5, SnapshotFiles: 5}, false},
		{RestoreResult{Rows: 10, FilesAdded: 4, SnapshotFiles: 5}, false},
	} {
		if got := tt.r.Checked(); got != tt.want {
			t.Errorf("%+v: got %v", tt.r, got)
		}
	}
}

func restoreReport(rs RestoreReport) string {
	r := Report{CPUs: 2, DefaultLevel: 6, Restore: rs, Sizes: []SizeResult{{Label: "700 MB", Files: 20000,
		Naive: []NaiveResult{{Total: time.Minute}}, Service: []BackupResult{{Wall: 20 * time.Second}}}}}
	var buf bytes.Buffer
	r.Render(&buf)
	return buf.String()
}

func TestRenderRestore(t *testing.T) {
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	naive := func(total float64) NaiveRestoreResult {
		return NaiveRestoreResult{Download: sec(5), Extract: sec(10), PgRestore: sec(total - 35), Upload: sec(20), Total: sec(total),
			ArchiveBytes: 500e6, Files: 20000, FilesBytes: 400e6, Workers: 16}
	}
	svc := &RestoreResult{RestoreID: "r1", SnapshotID: "s1", Wall: sec(40), PeakRSS: 120 << 20, StartRSS: 40 << 20, SnapshotFiles: 20000,
		Tables: 6, Rows: 5e6, DatabaseBytes: 640e6, FilesCount: 20000, FilesAdded: 20000, Queued: sec(0.5), Worker: sec(38),
		Phases: &RestorePhases{DatabaseDone: sec(31.25), FilesDone: sec(22.1), Verified: sec(33.9)}}
	out := restoreReport(RestoreReport{Service: svc, Naive: []NaiveRestoreResult{naive(80), naive(100), naive(70)}})
	tests := []struct {
		name, prefix string
		want         string
	}{
		{"40 s of the median 80 s", "5. restore of the first snapshot (naive: 3 runs)", `80\.0 s\s+40\.0 s\s+0\.50\s+<= 0\.60\s+met$`},
		{"rows", "rows restored", `-\s+5000000\s+> 0\s+met$`},
		{"files", "files_added = the snapshot's files_count", `-\s+20000\s+= 20000\s+met$`},
		{"peak RSS", "peak RSS of the handler during the restore", `-\s+120 MiB\s+< 150 MiB\s+met$`},
		{"download", "download of the naive archive", `5\.0 s\s+-\s*$`},
		{"tar xzf", "tar xzf of it", `10\.0 s\s+-\s*$`},
		{"database: median pg_restore, the service's done at", "database (pg_restore; service: done at)", `45\.0 s\s+at 31\.2 s\s*$`},
		{"files", "files, 16 at a time (service: copies, done at)", `20\.0 s\s+at 22\.1 s\s*$`},
		{"verified", "service: both verified", `-\s+at 33\.9 s\s*$`},
		{"queued", "service: queued before its worker started", `-\s+0\.5 s\s*$`},
		{"the rest: 40 - 0.5 - 33.9", "service: the rest", `-\s+5\.6 s\s*$`},
		{"baseline details", "naive restore run 2:", `download of the archive 5\.0 s \(500\.0 MB\), tar xzf 10\.0 s, pg_restore -j2 --no-owner --no-acl 65\.0 s, upload 20000 files \(400\.0 MB, 16 at a time\) 20\.0 s; total 100\.0 s$`},
		{"service details", "restore r1 of snapshot s1:", `40\.0 s, 6 tables, 5000000 rows, dump 640\.0 MB; files 20000 added, 0 replaced, 0 unchanged \(the snapshot has 20000\); peak RSS 120 MiB \(at start 40 MiB\); queued 0\.5 s, worker 38\.0 s \(the record's times\); database done at 31\.2 s, files at 22\.1 s, verified at 33\.9 s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := line(t, out, tt.prefix, 0)
			if !regexp.MustCompile(tt.want).MatchString(l) {
				t.Errorf("line %q does not match %q", l, tt.want)
			}
		})
	}
	// The labels fit their column: every row's naive value starts where the table's header says.
	head := line(t, out, "backup, 700 MB database", 0)
	col := strings.Index(head, "naive")
	for _, prefix := range []string{"5. restore", "database (pg_restore", "files, 16 at a time", "service: the rest", "files_added"} {
		l := line(t, out, prefix, 0)
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("row %q: its naive value does not start at column %d", l, col)
		}
	}
	// The restore's rows follow the backup rows, before the handler's peak RSS over the backups.
	if strings.Index(out, "5. restore") > strings.Index(out, "peak RSS of the handler, max of backups") {
		t.Errorf("restore rows after the backups' peak RSS:\n%s", out)
	}
}

func TestRenderRestoreMisses(t *testing.T) {
	svc := &RestoreResult{Wall: 50 * time.Second, PeakRSS: 200 << 20, SnapshotFiles: 20000, FilesAdded: 19999}
	out := restoreReport(RestoreReport{Service: svc, Naive: []NaiveRestoreResult{{Total: 80 * time.Second}}})
	for prefix, want := range map[string]string{
		"5. restore of the first snapshot (naive: 1 run)": `80\.0 s\s+50\.0 s\s+0\.62\s+<= 0\.60\s+NOT MET$`,
		"rows restored": `0\s+> 0\s+NOT MET$`,
		"files_added":   `19999\s+= 20000\s+NOT MET$`,
		"peak RSS of the handler during the restore": `200 MiB\s+< 150 MiB\s+NOT MET$`,
		"database (pg_restore; service: done at)":    `0\.0 s\s+-\s*$`,
	} {
		if l := line(t, out, prefix, 0); !regexp.MustCompile(want).MatchString(l) {
			t.Errorf("line %q does not match %q", l, want)
		}
	}
	for _, s := range []string{"service: both verified", "service: queued", "service: the rest", "worker"} {
		if strings.Contains(out, s) {
			t.Errorf("a restore without phases or record times shows %q:\n%s", s, out)
		}
	}
}

func TestRenderRestoreWithoutBaseline(t *testing.T) {
	out := restoreReport(RestoreReport{Service: &RestoreResult{Wall: 40 * time.Second, Rows: 1, PeakRSS: 100 << 20}})
	if l := line(t, out, "5. restore of the first snapshot", 0); !regexp.MustCompile(`-\s+40\.0 s\s+<= 0\.60\s+n/a$`).MatchString(l) {
		t.Errorf("restore without a baseline: %q", l)
	}
	if strings.Contains(out, "NaN") || strings.Contains(out, "naive restore run") {
		t.Errorf("report:\n%s", out)
	}
	if out := restoreReport(RestoreReport{}); strings.Contains(out, "restore") {
		t.Errorf("a report without a restore shows one:\n%s", out)
	}
}

func TestNaiveRestore(t *testing.T) {
	n, files, pg := naiveCluster(t, 30)
	n.KeepArchive = true
	ctx := t.Context()
	nr, err := n.Run(ctx, "kept-archive")
	if err != nil {
		t.Fatal(err)
	}
	if nr.Archive != "kept-archive.tar.gz" {
		t.Fatalf("kept archive %q", nr.Archive)
	}
	source := fingerprint(t, pg, "app")
	want := map[string]int64{}
	for _, f := range files {
		want[f.UUID] = int64(f.Size)
	}
	var verified bool
	restore := NaiveRestore{Postgres: pg, Owner: "bench_owner", Blobs: n.Blobs, ArchiveContainer: "naive", Archive: nr.Archive,
		WorkDir: t.TempDir(), Downloads: 2, Uploads: 4, Verify: func(ctx context.Context, db, container string) error {
			if got := fingerprint(t, pg, db); !maps.Equal(got, source) {
				t.Errorf("restored database %v, want %v", got, source)
			}
			var owner string
			if err := queryRow(ctx, pg.DSN(db), `SELECT tableowner FROM pg_tables WHERE tablename = 'sales$customer'`, &owner); err != nil || owner != "bench_owner" {
				t.Errorf("restored tables owned by %q (%v), want bench_owner", owner, err)
			}
			got := map[string]int64{}
			pager := n.Blobs.NewListBlobsFlatPager(container, nil)
			for pager.More() {
				page, err := pager.NextPage(ctx)
				if err != nil {
					return err
				}
				for _, b := range page.Segment.BlobItems {
					got[*b.Name] = *b.Properties.ContentLength
				}
			}
			if !maps.Equal(got, want) {
				t.Errorf("uploaded %d blobs, want the %d files under their names", len(got), len(want))
			}
			verified = true
			return nil
		}}
	res, err := restore.Run(ctx, "Restore-Run-1")
	if err != nil {
		t.Fatal(err)
	}
	if !verified || res.Files != len(files) || res.FilesBytes != TotalSize(files) || res.Workers != 4 || res.ArchiveBytes <= 0 {
		t.Errorf("result %+v (verified %v), want %d files, %d bytes", res, verified, len(files), TotalSize(files))
	}
	if sum := res.Download + res.Extract + res.PgRestore + res.Upload; res.Total < sum || res.PgRestore <= 0 {
		t.Errorf("total %v is less than its steps %v", res.Total, sum)
	}
	// The run's database and container are gone; the archive stays until deleted.
	var dbs int
	if err := queryRow(ctx, pg.DSN("postgres"), `SELECT count(*) FROM pg_database WHERE datname = 'restore_run_1'`, &dbs); err != nil || dbs != 0 {
		t.Errorf("the run's database is left (%d, %v)", dbs, err)
	}
	if _, err := n.Blobs.ServiceClient().NewContainerClient("restore-run-1").GetProperties(ctx, nil); err == nil {
		t.Error("the run's container is left")
	}
	if _, err := n.Blobs.ServiceClient().NewContainerClient("naive").NewBlobClient(nr.Archive).GetProperties(ctx, nil); err != nil {
		t.Errorf("the kept archive: %v", err)
	}
	if err := DeleteArchive(ctx, n.Blobs, "naive", nr.Archive); err != nil {
		t.Fatal(err)
	}
	if err := DeleteArchive(ctx, n.Blobs, "naive", nr.Archive); err != nil {
		t.Errorf("deleting a deleted archive: %v", err)
	}
}

func queryRow(ctx context.Context, dsn, q string, dest any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, q).Scan(dest)
}
