package pg

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// extensionSQL adds what a dump made with --schema=public loses: an extension in public and an index
// that needs its operator class.
const extensionSQL = `
CREATE EXTENSION pg_trgm;
CREATE INDEX "idx_shop$customer_name_trgm" ON "shop$customer" USING gin (name gin_trgm_ops);
`

// emptyPublicSQL empties schema public as m2ee-tools does before its restore: every table and
// sequence dropped, the schema (and any extension) kept.
const emptyPublicSQL = `DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
        EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', r.tablename);
    END LOOP;
    FOR r IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
        EXECUTE format('DROP SEQUENCE IF EXISTS public.%I CASCADE', r.sequencename);
    END LOOP;
END $$`

// A plain `pg_restore -O -x -d <fresh database>`, run by the database's owner (no superuser, as in
// Azure), exits 0 and restores every object and row; also when schema public has another owner and a
// comment (a database upgraded from PostgreSQL 14, say).
func testPlainRestoreIntoFreshDatabase(t *testing.T, e *env) {
	for _, tt := range []struct{ name, sql string }{
		{"fresh public", ""},
		{"public owned by the app", `RESET ROLE; ALTER SCHEMA public OWNER TO app; SET ROLE app; COMMENT ON SCHEMA public IS 'the app''s';`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := e.newDB(t, "app", tt.sql+seedSQL+extensionSQL)
			path := e.dumpToFile(t, db)

			if sql := e.pgRestore(t, "--file=-", path); strings.Contains(sql, "CREATE SCHEMA") {
				t.Errorf("the dump creates a schema, want none (a fresh database has public):\n%s", sql)
			}
			list := e.pgRestore(t, "--list", path)
			for _, want := range []string{"EXTENSION - pg_trgm", `INDEX public idx_shop$customer_name_trgm`,
				`SEQUENCE public shop$order_nr_seq`, `TABLE DATA public system$filedocument`} {
				if !strings.Contains(list, want) {
					t.Errorf("pg_restore --list has no %q:\n%s", want, list)
				}
			}

			fresh := e.newDB(t, "app", "")
			e.pgRestoreAs(t, "app", "app-secret", "--no-owner", "--no-privileges", "--dbname="+e.conninfo(fresh, "app"), path)
			e.assertSameApp(t, db, fresh)
		})
	}
}

// m2ee-tools' `pg_restore -O -x -n public -d <db>` into the environment's database, whose schema public
// it emptied first, exits 0 and restores every table and row.
func testM2eeRestoreIntoEmptiedPublic(t *testing.T, e *env) {
	db := e.newDB(t, "app", seedSQL+extensionSQL)
	path := e.dumpToFile(t, db)

	target := e.newDB(t, "app", seedSQL+extensionSQL+`INSERT INTO "shop$customer" VALUES (9999, 'changed since', NULL);`+emptyPublicSQL)
	if n := e.count(t, target, "pg_tables WHERE schemaname = 'public'"); n != 0 {
		t.Fatalf("got %d tables left in public after emptying it, want 0", n)
	}
	e.pgRestoreAs(t, "app", "app-secret", "--no-owner", "--no-privileges", "--schema=public",
		"--dbname="+e.conninfo(target, "app"), path)
	e.assertSameApp(t, db, target)
}

// dumpToFile dumps db as role app and returns the dump's path.
func (e *env) dumpToFile(t *testing.T, db string) string {
	t.Helper()
	dump, err := e.dumper(t, 0).Start(testContext(t), e.appConn(db))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	path := e.readDump(t, dump)
	if err := dump.Wait(); err != nil {
		t.Fatalf("wait: %v", err)
	}
	return path
}

func (e *env) conninfo(db, user string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", e.c.Host, e.c.Port, user, db)
}

// pgRestoreAs runs pg_restore with args as user and fails the test unless it exits 0.
func (e *env) pgRestoreAs(t *testing.T, user, password string, args ...string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(testContext(t), filepath.Join(e.c.BinDir, "pg_restore"), args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGUSER="+user)
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		t.Fatalf("pg_restore %s exited %d, want 0:\n%s", strings.Join(args, " "), exit.ExitCode(), stderr.String())
	case err != nil:
		t.Fatalf("pg_restore: %v", err)
	}
}

// assertSameApp checks that restored has the rows, sequence value, indexes and extension of db.
func (e *env) assertSameApp(t *testing.T, db, restored string) {
	t.Helper()
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
	for _, index := range []string{"idx_shop$order_customer", "idx_shop$customer_name_trgm", "system$filedocument_pkey"} {
		if n := e.count(t, restored, fmt.Sprintf("pg_indexes WHERE schemaname = 'public' AND indexname = '%s'", index)); n != 1 {
			t.Errorf("index %s: got %d restored, want 1", index, n)
		}
	}
	if n := e.count(t, restored, `"shop$customer" WHERE name % 'customer 42'`); n == 0 {
		t.Error("got no row for a trigram match in the restored database, want the extension to work")
	}
}
