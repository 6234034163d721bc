package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// The restore primitives against a cluster of their own, run as role svc: no superuser, CREATEDB and
// membership in the app's role, as the service's role on Azure Flexible Server.
func TestRestoreOps(t *testing.T) {
	c := pgcluster.ForTest(t)
	ctx := testContext(t)
	for _, r := range []struct{ name, pw string }{{"app", "app-secret"}, {"svc", "svc-secret"}, {"reader", "reader-secret"}} {
		if err := c.CreateRole(ctx, r.name, r.pw); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Exec(ctx, "postgres", "ALTER ROLE svc CREATEDB; GRANT app TO svc"); err != nil {
		t.Fatal(err)
	}
	e := &env{c: c}
	tests := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"CreateStagingAndRestore", testCreateStagingAndRestore},
		{"StagingNameRefused", testStagingNameRefused},
		{"SwapAndSwapBack", testSwapAndSwapBack},
		{"SwapFailedSecondRenameChangesNothing", testSwapFailedSecondRename},
		{"TruncatedDump", testRestoreTruncatedDump},
		{"DumpReadFails", testRestoreDumpReadFails},
		{"LastObjectFails", testRestoreLastObjectFails},
		{"DropDatabaseWithSession", testDropDatabaseWithSession},
		{"CancelKillsPgRestore", testRestoreCancelKills},
		{"ConnectionFailuresTransient", testRestoreConnectionFailures},
		{"RowCounts", testRowCounts},
		{"PgRestoreByArchiveVersion", testPgRestoreByArchiveVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, e)
		})
	}
}

func (e *env) restorer(t *testing.T) *Restorer {
	return &Restorer{BinDir: e.c.BinDir, Logger: zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()}
}

func (e *env) svcConn(db string) Conn {
	return Conn{Host: e.c.Host, Port: e.c.Port, Database: db, User: "svc", Password: "svc-secret", SSLMode: "disable"}
}

// newLatin1DB creates a database owned by app with an encoding and locale other than the cluster's
// default, and runs sql in it as app.
func (e *env) newLatin1DB(t *testing.T, sql string) string {
	t.Helper()
	ctx := testContext(t)
	name := fmt.Sprintf("latin%d", e.dbs.Add(1))
	if err := e.c.Exec(ctx, "postgres", "CREATE DATABASE "+name+" OWNER app TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Exec(ctx, name, "SET ROLE app;\n"+sql); err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
	return name
}

// dumpBytes dumps db with the Dumper and returns the archive.
func (e *env) dumpBytes(t *testing.T, db string) []byte {
	t.Helper()
	b, err := os.ReadFile(e.dumpToFile(t, db))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// staged creates the staging database of db for id and returns its name.
func (e *env) staged(t *testing.T, r *Restorer, db, id string) string {
	t.Helper()
	staging, err := StagingName(db, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CreateStaging(testContext(t), e.svcConn(db), staging); err != nil {
		t.Fatalf("create staging: %v", err)
	}
	return staging
}

// tableDigests is md5 of the ordered rows of every table in public, by table.
func (e *env) tableDigests(t *testing.T, db string) map[string]string {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, e.c.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'")
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, table := range tables {
		var sum string
		q := fmt.Sprintf(`SELECT md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '')) || ':' || count(*) FROM public.%s t`, table)
		if err := conn.QueryRow(ctx, q).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		out[table] = sum
	}
	return out
}

// dbFacts are the database-level facts CreateStaging copies, as comparable text.
func (e *env) dbFacts(t *testing.T, db string) string {
	t.Helper()
	var s string
	e.queryRow(t, "postgres", fmt.Sprintf(`SELECT concat_ws(' | ', pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
		d.datdba::regrole::text,
		(SELECT array_agg(c ORDER BY c)::text FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid AND s.setrole = 0),
		(SELECT array_agg(g ORDER BY g)::text FROM (SELECT format('%%s=%%s/%%s/%%s', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
			a.privilege_type, a.is_grantable, a.grantor::regrole) g FROM aclexplode(d.datacl) a) acl))
		FROM pg_database d WHERE d.datname = '%s'`, db), &s)
	return s
}

const dbSettingsSQL = `
RESET ROLE;
ALTER DATABASE %[1]s SET search_path = "$user", public, "My Schema";
ALTER DATABASE %[1]s SET work_mem = '8MB';
ALTER DATABASE %[1]s SET application_name = 'it''s mine';
REVOKE TEMPORARY ON DATABASE %[1]s FROM PUBLIC;
GRANT CONNECT ON DATABASE %[1]s TO reader;
`

func testCreateStagingAndRestore(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newLatin1DB(t, seedSQL+extensionSQL+`CREATE FUNCTION "shop$total"() RETURNS numeric LANGUAGE sql AS 'SELECT sum(total) FROM "shop$order"';
		CREATE VIEW "shop$big" AS SELECT * FROM "shop$order" WHERE total > 100;`)
	if err := e.c.Exec(ctx, db, fmt.Sprintf(dbSettingsSQL, db)); err != nil {
		t.Fatal(err)
	}
	r := e.restorer(t)
	staging := e.staged(t, r, db, "0a1b2c")
	got, want := e.dbFacts(t, staging), e.dbFacts(t, db)
	if got != want {
		t.Errorf("staging database facts:\n got %s\nwant %s", got, want)
	}
	for _, part := range []string{"LATIN1 | C | C | app", `search_path=\"$user\", public, \"My Schema\"`, "work_mem=8MB",
		"reader=CONNECT/f/app", "PUBLIC=CONNECT/f/app"} {
		if !strings.Contains(want, part) {
			t.Errorf("source database facts %s lack %q: the test does not test what it should", want, part)
		}
	}
	if strings.Contains(want, "PUBLIC=TEMPORARY") {
		t.Errorf("source database facts %s grant TEMPORARY to PUBLIC, want it revoked", want)
	}
	// Idempotent: again, and with the settings changed in between.
	if err := e.c.Exec(ctx, "postgres", "ALTER DATABASE "+staging+" SET work_mem = '1MB'"); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateStaging(ctx, e.svcConn(db), staging); err != nil {
		t.Fatalf("create staging again: %v", err)
	}
	if got := e.dbFacts(t, staging); got != want {
		t.Errorf("staging database facts after a second CreateStaging:\n got %s\nwant %s", got, want)
	}

	// Streamed straight from pg_dump into pg_restore.
	dump, err := e.dumper(t, 0).Start(ctx, e.appConn(db))
	if err != nil {
		t.Fatal(err)
	}
	defer dump.Abort()
	res, err := r.Restore(ctx, e.svcConn(db), staging, dump.Reader())
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := dump.Wait(); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if res.Bytes < 100<<10 {
		t.Errorf("got %d bytes restored, want the whole dump (over 100 KiB)", res.Bytes)
	}
	src, dst := e.tableDigests(t, db), e.tableDigests(t, staging)
	if len(src) != 3 {
		t.Errorf("got tables %v in the source, want 3", src)
	}
	for table, sum := range src {
		if dst[table] != sum {
			t.Errorf("table %s: got digest %q restored, want %q", table, dst[table], sum)
		}
	}
	e.assertSameApp(t, db, staging)
	// Members of a trusted extension belong to the bootstrap superuser, in the source too.
	var foreign string
	e.queryRow(t, staging, `SELECT coalesce(string_agg(what, ', '), '') FROM (
		SELECT 'relation ' || relname AS what, 'pg_class'::regclass AS cls, oid FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relowner <> 'app'::regrole
		UNION ALL SELECT 'function ' || proname, 'pg_proc'::regclass, oid FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND proowner <> 'app'::regrole
		UNION ALL SELECT 'type ' || typname, 'pg_type'::regclass, oid FROM pg_type t WHERE typnamespace = 'public'::regnamespace AND typowner <> 'app'::regrole
			AND NOT EXISTS (SELECT FROM pg_type e WHERE e.typarray = t.oid)
		UNION ALL SELECT 'extension ' || extname, 'pg_extension'::regclass, oid FROM pg_extension WHERE extname <> 'plpgsql' AND extowner <> 'app'::regrole) o
		WHERE NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = o.cls AND d.objid = o.oid AND d.deptype = 'e')`, &foreign)
	var owned int64
	e.queryRow(t, staging, `SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relowner = 'app'::regrole`, &owned)
	if owned < 8 {
		t.Errorf("got %d relations owned by app in the restored database, want every table, index, sequence and view", owned)
	}
	if foreign != "" {
		t.Errorf("got objects not owned by app in the restored database: %s", foreign)
	}
	if n := e.count(t, staging, `pg_proc WHERE proname = 'shop$total'`); n != 1 {
		t.Errorf("got %d functions shop$total restored, want 1", n)
	}
}

func testStagingNameRefused(t *testing.T, e *env) {
	ctx := testContext(t)
	r := e.restorer(t)
	for _, name := range []string{"app1", "other_restore_ab", "app1_restore_", "app1_restore_XYZ", "app1_restore_ab; DROP", "app1_pre_restore_ab",
		"app1_restore_" + strings.Repeat("a", 60)} {
		err := r.CreateStaging(ctx, e.svcConn("app1"), name)
		if !isCode(err, backup.CodeInternal) || !strings.Contains(err.Error(), "is not a restore database") {
			t.Errorf("CreateStaging(%q): got %v, want a refusal", name, err)
		}
		if _, err := r.Restore(ctx, e.svcConn("app1"), name, strings.NewReader("")); !isCode(err, backup.CodeInternal) {
			t.Errorf("Restore(%q): got %v, want a refusal", name, err)
		}
	}
	if _, err := StagingName("app1", "AB"); err == nil {
		t.Error("StagingName with an uppercase id: got nil error")
	}
	if _, err := PreviousName(strings.Repeat("d", 50), "0123456789ab"); !isCode(err, backup.CodeInvalidState) {
		t.Errorf("PreviousName of a long name: got %v, want an invalid state", err)
	}
	// An existing database of that name owned by another role.
	db := e.newDB(t, "app", "")
	staging, _ := StagingName(db, "ff")
	if err := e.c.CreateDatabase(ctx, staging, "reader"); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateStaging(ctx, e.svcConn(db), staging); !isCode(err, backup.CodeInvalidState) || !strings.Contains(err.Error(), `owned by "reader"`) {
		t.Errorf("CreateStaging over a database of another owner: got %v, want an invalid state naming the owner", err)
	}
}

func isCode(err error, code backup.Code) bool {
	var be *backup.Error
	return errors.As(err, &be) && be.Code == code
}

// restoreBytes restores archive into the staging database of db for id and returns its name.
func (e *env) restoreBytes(t *testing.T, r *Restorer, db, id string, archive []byte) string {
	t.Helper()
	staging := e.staged(t, r, db, id)
	if _, err := r.Restore(testContext(t), e.svcConn(db), staging, bytes.NewReader(archive)); err != nil {
		t.Fatalf("restore: %v", err)
	}
	return staging
}

func (e *env) marker(t *testing.T, db string) string {
	t.Helper()
	var s string
	e.queryRow(t, db, `SELECT name FROM "shop$customer" WHERE id = 1`, &s)
	return s
}

func testSwapAndSwapBack(t *testing.T, e *env) {
	ctx := testContext(t)
	r := e.restorer(t)
	db := e.newDB(t, "app", seedSQL)
	archive := e.dumpBytes(t, db)
	if err := e.c.Exec(ctx, db, `UPDATE "shop$customer" SET name = 'changed after the snapshot' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	staging := e.restoreBytes(t, r, db, "beef", archive)
	previous, _ := PreviousName(db, "beef")

	// Sessions of the app on both databases are ended.
	app, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:app-secret@%s:%d/%s?sslmode=disable", e.c.Host, e.c.Port, db))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	appStaging, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:app-secret@%s:%d/%s?sslmode=disable", e.c.Host, e.c.Port, staging))
	if err != nil {
		t.Fatal(err)
	}
	defer appStaging.Close(ctx)

	conn := e.svcConn(db)
	if err := r.Swap(ctx, conn, db, staging, previous); err != nil {
		t.Fatalf("swap: %v", err)
	}
	e.assertDatabases(t, r, conn, map[string]bool{db: true, staging: false, previous: true})
	if got := e.marker(t, db); got != "customer 1" {
		t.Errorf("got %q in %s after the swap, want the snapshot's %q", got, db, "customer 1")
	}
	if got := e.marker(t, previous); got != "changed after the snapshot" {
		t.Errorf("got %q in %s after the swap, want the replaced database's row", got, previous)
	}
	if err := app.Ping(ctx); err == nil {
		t.Error("the app's session on the replaced database survived the swap")
	}
	if err := r.Swap(ctx, conn, db, staging, previous); err != nil {
		t.Errorf("swap again: got %v, want nil (done already)", err)
	}

	if err := r.SwapBack(ctx, conn, db, previous, staging); err != nil {
		t.Fatalf("swap back: %v", err)
	}
	e.assertDatabases(t, r, conn, map[string]bool{db: true, staging: true, previous: false})
	if got := e.marker(t, db); got != "changed after the snapshot" {
		t.Errorf("got %q in %s after the swap back, want the original row", got, db)
	}
	if err := r.SwapBack(ctx, conn, db, previous, staging); err != nil {
		t.Errorf("swap back again: got %v, want nil (done already)", err)
	}

	// States that are neither before nor after.
	other, _ := StagingName(db, "0000")
	if err := r.Swap(ctx, conn, db, other, previous); !isCode(err, backup.CodeInvalidState) || !strings.Contains(err.Error(), other+`" does not`) {
		t.Errorf("swap with no staging database: got %v, want an invalid state", err)
	}
	if err := e.c.CreateDatabase(ctx, previous, "app"); err != nil {
		t.Fatal(err)
	}
	if err := r.Swap(ctx, conn, db, staging, previous); !isCode(err, backup.CodeInvalidState) {
		t.Errorf("swap with all three databases: got %v, want an invalid state", err)
	}
	e.assertDatabases(t, r, conn, map[string]bool{db: true, staging: true, previous: true})
	if err := r.Swap(ctx, conn, db, db, previous); !isCode(err, backup.CodeInternal) {
		t.Errorf("swap with a repeated name: got %v, want a refusal", err)
	}
}

func (e *env) assertDatabases(t *testing.T, r *Restorer, conn Conn, want map[string]bool) {
	t.Helper()
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	got, err := r.Databases(testContext(t), conn, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if got[n] != want[n] {
			t.Errorf("database %s: got exists=%v, want %v", n, got[n], want[n])
		}
	}
}

// The second rename fails (a superuser's session on the staging database, which the service's role
// may not end): the first is rolled back with it.
func testSwapFailedSecondRename(t *testing.T, e *env) {
	ctx := testContext(t)
	r := e.restorer(t)
	r.swapAttempts = 1
	db := e.newDB(t, "app", "CREATE TABLE t (x int)")
	staging := e.staged(t, r, db, "5a")
	previous, _ := PreviousName(db, "5a")
	super, err := pgx.Connect(ctx, e.c.DSN(staging))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	conn := e.svcConn(db)
	err = r.Swap(ctx, conn, db, staging, previous)
	if !isCode(err, backup.CodeTransient) || !strings.Contains(err.Error(), "RENAME TO "+ident(db)) {
		t.Fatalf("swap with a superuser session on the staging database: got %v, want a transient failure of the second rename", err)
	}
	e.assertDatabases(t, r, conn, map[string]bool{db: true, staging: true, previous: false})
	if n := e.count(t, db, "t"); n != 0 {
		t.Errorf("got %d rows in %s, want its table t there", n, db)
	}
	// Once the session is gone the same call succeeds.
	super.Close(ctx)
	if err := r.Swap(ctx, conn, db, staging, previous); err != nil {
		t.Fatalf("swap: %v", err)
	}
	e.assertDatabases(t, r, conn, map[string]bool{db: true, staging: false, previous: true})
}

func testRestoreTruncatedDump(t *testing.T, e *env) {
	ctx := testContext(t)
	r := e.restorer(t)
	db := e.newDB(t, "app", seedSQL)
	archive := e.dumpBytes(t, db)
	for _, tt := range []struct {
		id, name string
		data     []byte
	}{
		{"1", "half", archive[:len(archive)/2]},
		{"2", "header only", archive[:200]},
		{"3", "not a dump", []byte("this is not a database dump at all, just text")},
		{"4", "empty", nil},
	} {
		staging := e.staged(t, r, db, tt.id)
		_, err := r.Restore(ctx, e.svcConn(db), staging, bytes.NewReader(tt.data))
		if !isCode(err, backup.CodeInvalidState) || !strings.Contains(err.Error(), "corrupt or incomplete") {
			t.Errorf("%s: got %v, want an invalid state saying the dump is corrupt or incomplete", tt.name, err)
		}
		e.assertDatabases(t, r, e.svcConn(db), map[string]bool{staging: true})
	}
}

// failingReader returns the first n bytes of data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func testRestoreDumpReadFails(t *testing.T, e *env) {
	ctx := testContext(t)
	r := e.restorer(t)
	db := e.newDB(t, "app", seedSQL)
	archive := e.dumpBytes(t, db)
	staging := e.staged(t, r, db, "abc")
	blobErr := backup.Errorf(backup.CodeTransient, "the snapshot's blob could not be read")
	_, err := r.Restore(ctx, e.svcConn(db), staging, &failingReader{data: archive[:len(archive)/2], err: blobErr})
	if !errors.Is(err, blobErr) {
		t.Errorf("got %v, want the reader's error in the chain", err)
	}
}

// failLastSQL makes the last entry of the dump, the materialized view's data, fail in any database
// whose name contains _restore_.
const failLastSQL = `
CREATE FUNCTION "shop$check"() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF current_database() LIKE '%\_restore\_%' THEN RAISE EXCEPTION 'restored elsewhere'; END IF;
    RETURN 1;
END $$;
CREATE MATERIALIZED VIEW "zz$report" AS SELECT "shop$check"() AS ok;
`

func testRestoreLastObjectFails(t *testing.T, e *env) {
	ctx := testContext(t)
	r := e.restorer(t)
	db := e.newDB(t, "app", seedSQL+failLastSQL)
	archive := e.dumpBytes(t, db)
	if list := e.pgRestore(t, "--list", e.writeTemp(t, archive)); !strings.Contains(lastLine(list), "MATERIALIZED VIEW DATA public zz$report") {
		t.Fatalf("the last entry of the dump is %q, want the materialized view's data", lastLine(list))
	}
	staging := e.staged(t, r, db, "1a57")
	_, err := r.Restore(ctx, e.svcConn(db), staging, bytes.NewReader(archive))
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeInvalidState || !strings.Contains(be.Message, "MATERIALIZED VIEW DATA zz$report") {
		t.Fatalf("got %v, want an invalid state naming MATERIALIZED VIEW DATA zz$report", err)
	}
	if strings.Contains(be.Message, "restored elsewhere") {
		t.Errorf("message %q shows pg_restore's stderr, want it only in the cause", be.Message)
	}
	if !strings.Contains(err.Error(), "restored elsewhere") {
		t.Errorf("error %v lacks the server's message in its cause", err)
	}
	// Left for the caller, with what came before.
	e.assertDatabases(t, r, e.svcConn(db), map[string]bool{staging: true})
	if n := e.count(t, staging, `"shop$order"`); n != 2000 {
		t.Errorf("got %d orders in the unfinished staging database, want 2000", n)
	}
}

func (e *env) writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	path := t.TempDir() + "/db.backup"
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func testDropDatabaseWithSession(t *testing.T, e *env) {
	ctx := testContext(t)
	r := e.restorer(t)
	db := e.newDB(t, "app", "")
	staging := e.staged(t, r, db, "d0")
	app, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:app-secret@%s:%d/%s?sslmode=disable", e.c.Host, e.c.Port, staging))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	if err := r.DropDatabase(ctx, e.svcConn(db), staging); err != nil {
		t.Fatalf("drop with a session open: %v", err)
	}
	e.assertDatabases(t, r, e.svcConn(db), map[string]bool{staging: false, db: true})
	if err := r.DropDatabase(ctx, e.svcConn(db), staging); err != nil {
		t.Errorf("drop again: got %v, want nil", err)
	}
	for _, name := range []string{db, "postgres", ""} {
		if err := r.DropDatabase(ctx, e.svcConn(db), name); !isCode(err, backup.CodeInternal) {
			t.Errorf("drop %q: got %v, want a refusal", name, err)
		}
	}
	e.assertDatabases(t, r, e.svcConn(db), map[string]bool{db: true})
}

// blockingReader returns data, then blocks until release is closed, then fails.
type blockingReader struct {
	data    []byte
	drained chan struct{}
	release chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	close(b.drained)
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

// The end of the context kills pg_restore, even while the dump's reader is stuck.
func testRestoreCancelKills(t *testing.T, e *env) {
	r := e.restorer(t)
	db := e.newDB(t, "app", seedSQL)
	archive := e.dumpBytes(t, db)
	staging := e.staged(t, r, db, "cafe")
	pid := make(chan int, 1)
	r.hookStarted = func(p int) { pid <- p }
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	reader := &blockingReader{data: archive[:len(archive)/2], drained: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := r.Restore(ctx, e.svcConn(db), staging, reader)
		done <- err
	}()
	p := <-pid
	<-reader.drained
	cancel()
	deadline := time.Now().Add(20 * time.Second)
	for syscall.Kill(p, 0) == nil {
		if time.Now().After(deadline) {
			close(reader.release)
			t.Fatalf("pg_restore (pid %d) still running 20s after the context ended", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(reader.release)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled in the chain", err)
	}
	e.assertNoSessions(t, staging)
}

// gatedReader returns first, waits for gate to close, then returns rest.
type gatedReader struct {
	first, rest []byte
	drained     chan struct{}
	gate        chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if len(g.first) > 0 {
		n := copy(p, g.first)
		g.first = g.first[n:]
		return n, nil
	}
	if g.drained != nil {
		close(g.drained)
		g.drained = nil
		<-g.gate
	}
	if len(g.rest) == 0 {
		return 0, io.EOF
	}
	n := copy(p, g.rest)
	g.rest = g.rest[n:]
	return n, nil
}

func testRestoreConnectionFailures(t *testing.T, e *env) {
	ctx := testContext(t)
	r := e.restorer(t)
	db := e.newDB(t, "app", seedSQL+bigTableSQL)
	archive := e.dumpBytes(t, db)
	staging := e.staged(t, r, db, "c0")

	down := e.svcConn(db)
	down.Port = closedPort(t)
	if _, err := r.Restore(ctx, down, staging, bytes.NewReader(archive)); !isCode(err, backup.CodeTransient) {
		t.Errorf("restore to a closed port: got %v, want a transient error", err)
	}

	// pg_restore's session ends halfway through the dump.
	half := len(archive) / 2
	g := &gatedReader{first: archive[:half], rest: archive[half:], drained: make(chan struct{}), gate: make(chan struct{})}
	drained := g.drained
	done := make(chan error, 1)
	go func() {
		_, err := r.Restore(ctx, e.svcConn(db), staging, g)
		done <- err
	}()
	<-drained
	var n int
	for deadline := time.Now().Add(10 * time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		e.queryRow(t, "postgres", fmt.Sprintf(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '%s' AND application_name = '%s'`,
			staging, ApplicationName), &n)
	}
	close(g.gate)
	if n == 0 {
		t.Fatal("found no session of pg_restore to end")
	}
	if err := <-done; !isCode(err, backup.CodeTransient) || !strings.Contains(err.Error(), "connection to the database server broke") {
		t.Errorf("restore whose session was ended: got %v, want a transient error about the connection", err)
	}
}

func TestSplitGUCList(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{`"$user", public`, []string{"$user", "public"}},
		{`"My ""Schema""",b ,  c`, []string{`My "Schema"`, "b", "c"}},
		{``, nil},
		{`""`, []string{""}},
	} {
		got, err := splitGUCList(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("splitGUCList(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{`"open`, `a b`} {
		if _, err := splitGUCList(bad); err == nil {
			t.Errorf("splitGUCList(%q): got nil error", bad)
		}
	}
	got, err := alterDatabaseSet("d", `search_path="$user", public`)
	if want := `ALTER DATABASE "d" SET "search_path" = E'$user', E'public'`; err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}

// testPgRestoreByArchiveVersion: the dump's header picks pg_restore. With pg_restore 15 only, an archive
// of version 1.16 (pg_dump 17) is refused before pg_restore starts, permanently, saying which client
// programs are missing; with 17 configured too, 17's runs (a stand-in: the machine has no pg_restore
// 17), and a 1.14 archive still gets 15's, which restores it.
func testPgRestoreByArchiveVersion(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", seedSQL)
	archive := e.dumpBytes(t, db)
	newer := patchVersion(archive, 1, 16)
	log := zerolog.New(zerolog.NewTestWriter(t))

	only15 := &Restorer{Clients: Clients{{Major: 15, Dir: realBinDir}}, Logger: log}
	staging := e.staged(t, only15, db, "a1")
	res, err := only15.Restore(ctx, e.svcConn(db), staging, bytes.NewReader(newer))
	want := "the database dump is of archive version 1.16 (pg_dump 17 or later), and this service has pg_restore for PostgreSQL 15 only, which cannot read it; ask its operator to add PostgreSQL 17's client tools (PG_BIN_DIRS)"
	var be *backup.Error
	if !errors.As(err, &be) || be.Message != want || be.Code != backup.CodeInvalidState || !errors.Is(err, ErrNoClient) || res.Bytes != 0 {
		t.Errorf("got %+v, %v; want nothing read and %q", res, err, want)
	}

	stand17 := fakePgDump17(t)
	marker := filepath.Join(t.TempDir(), "ran")
	if err := os.WriteFile(filepath.Join(stand17, "pg_restore"), []byte("#!/bin/sh\ntouch "+marker+"\ncat >/dev/null\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	both := &Restorer{Clients: Clients{{Major: 15, Dir: realBinDir}, {Major: 17, Dir: stand17}}, Logger: log}
	if _, err := both.Restore(ctx, e.svcConn(db), staging, bytes.NewReader(newer)); err == nil || errors.Is(err, ErrNoClient) {
		t.Errorf("got %v, want the stand-in pg_restore 17's failure", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("pg_restore 17 did not run for an archive of version 1.16: %v", err)
	}
	if err := both.DropDatabase(ctx, e.svcConn(db), staging); err != nil {
		t.Fatal(err)
	}
	staging = e.staged(t, both, db, "a2")
	if _, err := both.Restore(ctx, e.svcConn(db), staging, bytes.NewReader(archive)); err != nil {
		t.Errorf("a 1.14 archive into PostgreSQL 15 with 15 and 17 configured: %v", err)
	}
}
