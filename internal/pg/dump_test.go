package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// Every test against PostgreSQL shares one cluster, each with databases of its own.
func TestAgainstPostgres(t *testing.T) {
	c := pgcluster.ForTest(t)
	if err := c.CreateRole(t.Context(), "app", "app-secret"); err != nil {
		t.Fatal(err)
	}
	e := &env{c: c}
	tests := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"DumpRestoresWithSameRows", testDumpRestoresWithSameRows},
		{"PlainRestoreIntoFreshDatabase", testPlainRestoreIntoFreshDatabase},
		{"M2eeRestoreIntoEmptiedPublic", testM2eeRestoreIntoEmptiedPublic},
		{"ListAndDumpShareOneSnapshot", testListAndDumpShareOneSnapshot},
		{"LockWaitTimesOutTransient", testLockWaitTimesOutTransient},
		{"LockedFileTableFailsStart", testLockedFileTableFailsStart},
		{"AbortMidStream", testAbortMidStream},
		{"ContextCancelAborts", testContextCancelAborts},
		{"NoFileDocumentTable", testNoFileDocumentTable},
		{"PermanentConnectErrors", testPermanentConnectErrors},
		{"TransientConnectErrors", testTransientConnectErrors},
		{"PasswordFuncSuppliesPassword", testPasswordFuncSuppliesPassword},
		{"MissingTablePrivilege", testMissingTablePrivilege},
		{"FileTableWithoutMendixColumns", testFileTableWithoutMendixColumns},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, e)
		})
	}
}

// Seeded file documents: every flag combination, a NULL and an invalid UUID, a repeated UUID and a NULL size.
const (
	uuidIncluded = "0d3e301f-5551-46f8-ad44-8de2be084c95"
	uuidNoSize   = "1fbdf930-67f9-47ee-b30e-e84c4c983e85"
	uuidUpper    = "AB000000-0000-4000-8000-000000000001"
)

var seedSQL = `
CREATE TABLE "shop$customer" (id bigint PRIMARY KEY, name varchar(200) NOT NULL, email varchar(200));
CREATE TABLE "shop$order" (id bigint PRIMARY KEY, customer bigint REFERENCES "shop$customer"(id),
    total numeric(12,2), createddate timestamp DEFAULT now());
CREATE INDEX "idx_shop$order_customer" ON "shop$order" (customer);
CREATE SEQUENCE "shop$order_nr_seq" START 1000;
SELECT nextval('"shop$order_nr_seq"');
INSERT INTO "shop$customer" SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 300) g;
INSERT INTO "shop$order" (id, customer, total) SELECT g, 1 + g % 300, g * 1.5 FROM generate_series(1, 2000) g;
CREATE TABLE "system$filedocument" (id bigint PRIMARY KEY, "__uuid__" varchar(36), name varchar(400),
    size bigint, hascontents bool, deleteafterdownload bool);
INSERT INTO "system$filedocument" VALUES
    (1, '` + uuidIncluded + `', 'included.pdf', 1000, true, false),
    (2, '2a000000-0000-4000-8000-000000000002', 'to-delete.pdf', 2000, true, true),
    (3, '3a000000-0000-4000-8000-000000000003', 'no-contents.pdf', 3000, false, false),
    (4, '4a000000-0000-4000-8000-000000000004', 'neither.pdf', 4000, false, true),
    (5, NULL, 'null-uuid.pdf', 5000, true, false),
    (6, 'not-a-uuid', 'bad-uuid.pdf', 6000, true, false),
    (7, '` + strings.ToUpper(uuidIncluded) + `', 'same-uuid-again.pdf', 1000, true, false),
    (8, '` + uuidNoSize + `', 'no-size.pdf', NULL, true, false),
    (9, '9a000000-0000-4000-8000-000000000009', 'null-flags.pdf', 9000, NULL, NULL),
    (10, '` + uuidUpper + `', 'upper.pdf', 10, true, false);
`

// bigTableSQL adds about 7 MB of rows in a table dumped before the others, so pg_dump blocks on its
// output pipe long before it reaches them.
const bigTableSQL = `
CREATE TABLE "aaa$big" (id bigint PRIMARY KEY, payload text);
INSERT INTO "aaa$big" SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 50000) g;
`

var wantFiles = []File{{UUID: uuidIncluded, Size: 1000}, {UUID: uuidNoSize, Size: -1}, {UUID: uuidUpper, Size: 10}}

func testDumpRestoresWithSameRows(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", seedSQL)
	dump, err := e.dumper(t, 0).Start(ctx, e.appConn(db))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if got := dump.Files(); !slices.Equal(got, wantFiles) {
		t.Errorf("got files %v, want %v", got, wantFiles)
	}
	warnings := strings.Join(dump.Warnings(), "\n")
	for _, want := range []string{"file document 5 has no UUID", `file document 6 has an invalid UUID "not-a-uuid"`,
		"file document 7 repeats UUID " + strings.ToUpper(uuidIncluded)} {
		if !strings.Contains(warnings, want) {
			t.Errorf("got warnings %q, want one containing %q", warnings, want)
		}
	}
	if n := len(dump.Warnings()); n != 3 {
		t.Errorf("got %d warnings, want 3: %q", n, dump.Warnings())
	}
	if got := dump.DatabaseSize(); got < 1<<20 {
		t.Errorf("got database size %d, want at least 1 MiB (an empty PostgreSQL 15 database is about 7 MiB)", got)
	}
	path := e.readDump(t, dump)
	if err := dump.Wait(); err != nil {
		t.Fatalf("wait: %v", err)
	}

	header := make([]byte, 8)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadFull(f, header)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if major, minor, _, ok := ArchiveVersion(header); !ok || major != 1 || minor != 14 {
		t.Errorf("got archive version %d.%d (ok %v), want 1.14", major, minor, ok)
	}
	list := e.pgRestore(t, "--list", path)
	for _, want := range []string{`TABLE public shop$order`, `TABLE public shop$customer`, `TABLE public system$filedocument`,
		`SEQUENCE public shop$order_nr_seq`, `INDEX public idx_shop$order_customer`, `TABLE DATA public shop$order`} {
		if !strings.Contains(list, want) {
			t.Errorf("pg_restore --list has no %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "OWNER") || strings.Contains(list, "ACL") {
		t.Errorf("pg_restore --list shows owners or privileges, want none (-O -x):\n%s", list)
	}

	restored := e.restore(t, path)
	for _, table := range []string{`"shop$customer"`, `"shop$order"`, `"system$filedocument"`} {
		if got, want := e.count(t, restored, table), e.count(t, db, table); got != want {
			t.Errorf("%s: got %d rows restored, want %d", table, got, want)
		}
	}
	var seq int64
	e.queryRow(t, restored, `SELECT last_value FROM "shop$order_nr_seq"`, &seq)
	if seq != 1000 {
		t.Errorf("got sequence value %d restored, want 1000", seq)
	}
	e.assertNoSessions(t, db)
}

func testListAndDumpShareOneSnapshot(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", seedSQL+bigTableSQL)
	const (
		hookUUID  = "b0000000-0000-4000-8000-00000000000b"
		afterUUID = "a0000000-0000-4000-8000-00000000000a"
	)
	insert := func(ctx context.Context, id int64, uuid string) error {
		return e.c.Exec(ctx, db, fmt.Sprintf(`INSERT INTO "system$filedocument" VALUES (%d, '%s', 'new.pdf', 1, true, false);
			INSERT INTO "shop$order" (id, customer, total) VALUES (%d, 1, 1)`, id, uuid, id))
	}
	d := e.dumper(t, 0)
	var hookErr error
	// Between the file list and pg_dump's start: pg_dump would see these rows without --snapshot.
	d.hookBeforeDump = func(ctx context.Context) { hookErr = insert(ctx, 100001, hookUUID) }
	dump, err := d.Start(ctx, e.appConn(db))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer dump.Abort()
	if hookErr != nil {
		t.Fatalf("insert before pg_dump: %v", hookErr)
	}
	// After Start, while pg_dump is blocked writing the big table.
	if err := insert(ctx, 100002, afterUUID); err != nil {
		t.Fatalf("insert during the dump: %v", err)
	}
	path := e.readDump(t, dump)
	if err := dump.Wait(); err != nil {
		t.Fatalf("wait: %v", err)
	}
	for _, f := range dump.Files() {
		if f.UUID == hookUUID || f.UUID == afterUUID {
			t.Errorf("got file %s in Files(), inserted after the snapshot", f.UUID)
		}
	}
	restored := e.restore(t, path)
	for _, tc := range []struct {
		table string
		want  int64
	}{{`"system$filedocument"`, 10}, {`"shop$order"`, 2000}, {`"aaa$big"`, 50000}} {
		if got := e.count(t, restored, tc.table); got != tc.want {
			t.Errorf("%s: got %d rows in the dump, want %d (the rows at the snapshot)", tc.table, got, tc.want)
		}
	}
	if got := e.count(t, db, `"system$filedocument"`); got != 12 {
		t.Errorf("got %d file rows in the live database, want 12 (the inserts happened)", got)
	}
}

func testLockWaitTimesOutTransient(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", seedSQL)
	release := e.holdLock(t, db, `"shop$order"`)
	defer release()
	dump, err := e.dumper(t, time.Second).Start(ctx, e.appConn(db))
	if err != nil {
		t.Fatalf("start: %v (the file list does not need the locked table)", err)
	}
	defer dump.Abort()
	_, readErr := io.Copy(io.Discard, dump.Reader())
	err = dump.Wait()
	if readErr == nil || readErr.Error() != errString(err) {
		t.Errorf("got read error %v, want the same error as Wait", readErr)
	}
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeTransient {
		t.Fatalf("got %v, want a transient *backup.Error", err)
	}
	want := `the database dump could not lock table public."shop$order" within 1s: the app holds a conflicting lock; retry when the app is idle`
	if be.Message != want {
		t.Errorf("got message %q, want %q", be.Message, want)
	}
	if !strings.Contains(err.Error(), "statement timeout") {
		t.Errorf("got %q, want pg_dump's stderr in it", err.Error())
	}
	assertProcessGone(t, dump)
	e.assertNoSessions(t, db)
}

func testLockedFileTableFailsStart(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", seedSQL)
	release := e.holdLock(t, db, `"system$filedocument"`)
	defer release()
	_, err := e.dumper(t, time.Second).Start(ctx, e.appConn(db))
	checkErr(t, err, "could not lock table system$filedocument within 1s", backup.CodeTransient)
	e.assertNoSessions(t, db)
}

func testAbortMidStream(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", seedSQL+bigTableSQL)
	dump, err := e.dumper(t, 0).Start(ctx, e.appConn(db))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	r := dump.Reader()
	if _, err := io.ReadFull(r, make([]byte, 64<<10)); err != nil {
		t.Fatalf("read the start of the dump: %v", err)
	}
	dump.Abort()
	assertProcessGone(t, dump)
	e.assertNoSessions(t, db)
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrAborted) {
		t.Errorf("read after Abort: got %v, want %v", err, ErrAborted)
	}
	if err := dump.Wait(); !errors.Is(err, ErrAborted) {
		t.Errorf("wait after Abort: got %v, want %v", err, ErrAborted)
	}
	dump.Abort() // again: nothing happens
}

func testContextCancelAborts(t *testing.T, e *env) {
	db := e.newDB(t, "app", seedSQL+bigTableSQL)
	ctx, cancel := context.WithCancel(testContext(t))
	dump, err := e.dumper(t, 0).Start(ctx, e.appConn(db))
	if err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	if _, err := io.ReadFull(dump.Reader(), make([]byte, 1024)); err != nil {
		t.Fatalf("read the start of the dump: %v", err)
	}
	cancel()
	_, readErr := io.Copy(io.Discard, dump.Reader())
	if !errors.Is(readErr, context.Canceled) {
		t.Errorf("read after cancel: got %v, want %v", readErr, context.Canceled)
	}
	if err := dump.Wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("wait after cancel: got %v, want %v", err, context.Canceled)
	}
	assertProcessGone(t, dump)
	e.assertNoSessions(t, db)
}

func testNoFileDocumentTable(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", `CREATE TABLE "shop$note" (id bigint PRIMARY KEY, body text); INSERT INTO "shop$note" VALUES (1, 'hi')`)
	dump, err := e.dumper(t, 0).Start(ctx, e.appConn(db))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if got := dump.Files(); len(got) != 0 {
		t.Errorf("got files %v, want none", got)
	}
	if got := dump.Warnings(); len(got) != 0 {
		t.Errorf("got warnings %q, want none", got)
	}
	path := e.readDump(t, dump)
	if err := dump.Wait(); err != nil {
		t.Fatalf("wait: %v", err)
	}
	if list := e.pgRestore(t, "--list", path); !strings.Contains(list, "TABLE DATA public shop$note") {
		t.Errorf("pg_restore --list has no data for shop$note:\n%s", list)
	}
}

func testPermanentConnectErrors(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", "")
	tests := []struct {
		name    string
		change  func(*Conn)
		wantMsg string
	}{
		{"wrong password", func(c *Conn) { c.Password = "wrong" }, fmt.Sprintf(`database %s refused the login of role "app"`, db)},
		{"unknown role", func(c *Conn) { c.User = "nobody" }, `refused the login of role "nobody"`},
		{"missing database", func(c *Conn) { c.Database = "no_such_db" },
			fmt.Sprintf(`database "no_such_db" does not exist on server 127.0.0.1:%d`, e.c.Port)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := e.appConn(db)
			tt.change(&conn)
			_, err := e.dumper(t, 0).Start(ctx, conn)
			checkErr(t, err, tt.wantMsg, backup.CodeInvalidState)
			if backup.IsRetryable(err) {
				t.Errorf("got retryable error %v, want a permanent one", err)
			}
			if err != nil && strings.Contains(err.Error(), "app-secret") {
				t.Errorf("got the password in the error %q", err)
			}
		})
	}
}

func testTransientConnectErrors(t *testing.T, e *env) {
	ctx := testContext(t)
	conn := e.appConn("postgres")
	conn.Port = closedPort(t)
	_, err := e.dumper(t, 0).Start(ctx, conn)
	checkErr(t, err, "could not connect to database app@127.0.0.1:", backup.CodeTransient)
	if !backup.IsRetryable(err) {
		t.Errorf("got non-retryable error %v, want a retryable one", err)
	}
}

func testPasswordFuncSuppliesPassword(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", seedSQL)
	var calls atomic.Int32
	conn := e.appConn(db)
	conn.Password = "not-this-one"
	conn.PasswordFunc = func(context.Context) (string, error) {
		calls.Add(1)
		return "app-secret", nil
	}
	dump, err := e.dumper(t, 0).Start(ctx, conn)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	e.readDump(t, dump)
	if err := dump.Wait(); err != nil {
		t.Fatalf("wait: %v (pg_dump must log in with the same password)", err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("got %d PasswordFunc calls, want 1", got)
	}
}

func testMissingTablePrivilege(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", seedSQL)
	role := "reader_" + db
	if err := e.c.CreateRole(ctx, role, "reader-secret"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Exec(ctx, db, fmt.Sprintf(`GRANT SELECT ON "system$filedocument" TO %s`, pgx.Identifier{role}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	conn := e.appConn(db)
	conn.User, conn.Password = role, "reader-secret"
	dump, err := e.dumper(t, 0).Start(ctx, conn)
	if err != nil {
		t.Fatalf("start: %v (the role may read the file list)", err)
	}
	_, _ = io.Copy(io.Discard, dump.Reader())
	err = dump.Wait()
	checkErr(t, err, "may not read every table and sequence", backup.CodeInvalidState)
	if !strings.Contains(errString(err), "permission denied") {
		t.Errorf("got %v, want pg_dump's stderr in it", err)
	}
	e.assertNoSessions(t, db)
}

func testFileTableWithoutMendixColumns(t *testing.T, e *env) {
	ctx := testContext(t)
	db := e.newDB(t, "app", `CREATE TABLE "system$filedocument" (id bigint PRIMARY KEY, "__uuid__" varchar(36), size bigint, hascontents bool)`)
	_, err := e.dumper(t, 0).Start(ctx, e.appConn(db))
	checkErr(t, err, "lacks a column Mendix uses", backup.CodeInvalidState)
	e.assertNoSessions(t, db)
}

// --- helpers ---

type env struct {
	c   *pgcluster.Cluster
	dbs atomic.Int32
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) dumper(t *testing.T, lockWait time.Duration) *Dumper {
	t.Helper()
	return &Dumper{BinDir: e.c.BinDir, LockWaitTimeout: lockWait,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()}
}

// newDB creates a database owned by owner and runs sql in it as that owner.
func (e *env) newDB(t *testing.T, owner, sql string) string {
	t.Helper()
	ctx := testContext(t)
	name := fmt.Sprintf("app%d", e.dbs.Add(1))
	if err := e.c.CreateDatabase(ctx, name, owner); err != nil {
		t.Fatal(err)
	}
	if sql != "" {
		conn, err := pgx.Connect(ctx, e.c.DSN(name))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "SET ROLE "+pgx.Identifier{owner}.Sanitize()+";\n"+sql); err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
	}
	return name
}

func (e *env) appConn(db string) Conn {
	return Conn{Host: e.c.Host, Port: e.c.Port, Database: db, User: "app", Password: "app-secret", SSLMode: "disable"}
}

// readDump copies the dump to a file and returns its path.
func (e *env) readDump(t *testing.T, dump *Dump) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db.backup")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, dump.Reader()); err != nil {
		t.Fatalf("read the dump: %v", err)
	}
	return path
}

// pgRestore runs pg_restore with args and returns its stdout.
func (e *env) pgRestore(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(testContext(t), filepath.Join(e.c.BinDir, "pg_restore"), args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+e.c.Password)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pg_restore %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// restore loads the dump at path into a new database, as m2ee-tools does (-O -x -n public into an
// empty public schema), and returns the database's name.
func (e *env) restore(t *testing.T, path string) string {
	t.Helper()
	db := e.newDB(t, "postgres", "")
	conninfo := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", e.c.Host, e.c.Port, e.c.User, db)
	e.pgRestore(t, "--no-owner", "--no-privileges", "--schema=public", "--exit-on-error", "--dbname="+conninfo, path)
	return db
}

func (e *env) queryRow(t *testing.T, db, sql string, dest any) {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, e.c.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(dest); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) count(t *testing.T, db, table string) int64 {
	t.Helper()
	var n int64
	e.queryRow(t, db, "SELECT count(*) FROM "+table, &n)
	return n
}

// holdLock takes an ACCESS EXCLUSIVE lock on table in another session until release is called.
func (e *env) holdLock(t *testing.T, db, table string) (release func()) {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, e.c.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err == nil {
		_, err = tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE")
	}
	if err != nil {
		conn.Close(ctx)
		t.Fatalf("lock %s: %v", table, err)
	}
	return func() {
		_ = tx.Rollback(ctx)
		conn.Close(ctx)
	}
}

// assertNoSessions waits (generously) until no session of this package is connected to db: neither the
// snapshot transaction nor pg_dump's.
func (e *env) assertNoSessions(t *testing.T, db string) {
	t.Helper()
	const sql = `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2`
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, e.c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, sql, db, ApplicationName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("got %d %s sessions in %s 30s after the dump ended, want 0", n, ApplicationName, db)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertProcessGone checks that pg_dump has exited and been reaped.
func assertProcessGone(t *testing.T, dump *Dump) {
	t.Helper()
	select {
	case <-dump.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("pg_dump (pid %d) still running 30s after the dump ended", dump.cmd.Process.Pid)
	}
	if err := syscall.Kill(dump.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("signal 0 to pg_dump pid %d: got %v, want %v", dump.cmd.Process.Pid, err, syscall.ESRCH)
	}
}

// closedPort returns a TCP port on 127.0.0.1 that nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}
