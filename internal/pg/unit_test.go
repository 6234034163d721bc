package pg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mxazure/backups/internal/backup"
)

func TestArchiveVersion(t *testing.T) {
	tests := []struct {
		name              string
		header            []byte
		major, minor, rev byte
		ok                bool
	}{
		{"pg_dump 15", []byte("PGDMP\x01\x0e\x00\x04\x08"), 1, 14, 0, true},
		{"pg_dump 16", []byte("PGDMP\x01\x0f\x00"), 1, 15, 0, true},
		{"exactly 8 bytes", []byte("PGDMP\x01\x0e\x02"), 1, 14, 2, true},
		{"too short", []byte("PGDMP\x01\x0e"), 0, 0, 0, false},
		{"empty", nil, 0, 0, 0, false},
		{"plain SQL", []byte("--\n-- PostgreSQL database dump"), 0, 0, 0, false},
		{"gzip", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}, 0, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			major, minor, rev, ok := ArchiveVersion(tt.header)
			if got, want := fmt.Sprint(major, minor, rev, ok), fmt.Sprint(tt.major, tt.minor, tt.rev, tt.ok); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

func TestConninfoQuotesEveryValue(t *testing.T) {
	tests := []struct {
		name string
		conn Conn
	}{
		{"plain", Conn{Host: "db.example.com", Port: 6543, Database: "app_db", User: "backup", SSLMode: "require"}},
		{"default port and sslmode", Conn{Host: "10.0.0.4", Database: "d", User: "u"}},
		{"verify-ca", Conn{Host: "h", Database: "d", User: "u", SSLMode: "verify-ca"}},
		{"prefer", Conn{Host: "h", Database: "d", User: "u", SSLMode: "prefer"}},
		{"quotes and backslashes", Conn{Host: "h", Database: `it's a \ db`, User: `o'brien\`, SSLMode: "disable"}},
		{"keyword injection attempt", Conn{Host: "h", Database: "x' host='evil", User: "u sslmode=disable"}},
		{"entra user name", Conn{Host: "srv.postgres.database.azure.com", Database: "d", User: "mendix-backups-identity@tenant"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := pgx.ParseConfig(tt.conn.conninfo())
			if err != nil {
				t.Fatalf("parse %s: %v", tt.conn.conninfo(), err)
			}
			wantSSL := tt.conn.SSLMode
			if wantSSL == "" {
				wantSSL = "verify-full"
			}
			got := fmt.Sprintf("%s|%d|%s|%s|%s|%s", cfg.Host, cfg.Port, cfg.Database, cfg.User,
				cfg.RuntimeParams["application_name"], tlsMode(cfg))
			want := fmt.Sprintf("%s|%d|%s|%s|%s|%s", tt.conn.Host, tt.conn.port(), tt.conn.Database, tt.conn.User,
				ApplicationName, wantSSL)
			if got != want {
				t.Errorf("got %s, want %s", got, want)
			}
			if cfg.ConnectTimeout != connectTimeout {
				t.Errorf("got connect timeout %s, want %s", cfg.ConnectTimeout, connectTimeout)
			}
		})
	}
}

// tlsMode says how pgx will use TLS, in sslmode words.
func tlsMode(cfg *pgx.ConnConfig) string {
	switch tls := cfg.TLSConfig; {
	case tls == nil:
		return "disable"
	case len(cfg.Fallbacks) > 0 && cfg.Fallbacks[0].TLSConfig == nil:
		return "prefer"
	case tls.InsecureSkipVerify && tls.VerifyPeerCertificate == nil:
		return "require"
	case tls.InsecureSkipVerify:
		return "verify-ca"
	case tls.ServerName == cfg.Host:
		return "verify-full"
	}
	return "unknown"
}

func TestConnValidate(t *testing.T) {
	ok := Conn{Host: "h", Database: "d", User: "u", SSLRootCert: "/etc/ssl/roots.pem"}
	tests := []struct {
		name    string
		change  func(*Conn)
		wantErr string
	}{
		{"valid", func(*Conn) {}, ""},
		{"no host", func(c *Conn) { c.Host = "" }, "host is empty"},
		{"host list", func(c *Conn) { c.Host = "a,b" }, "not a single host"},
		{"bad port", func(c *Conn) { c.Port = 70000 }, "out of range"},
		{"no database", func(c *Conn) { c.Database = "" }, "database name is empty"},
		{"no user", func(c *Conn) { c.User = "" }, "user is empty"},
		{"bad sslmode", func(c *Conn) { c.SSLMode = "on" }, "sslmode"},
		{"verify-full without CA bundle", func(c *Conn) { c.SSLRootCert = "" }, "verify-full needs a CA bundle"},
		{"require without CA bundle", func(c *Conn) { c.SSLMode, c.SSLRootCert = "require", "" }, ""},
		{"nul byte", func(c *Conn) { c.Password = "a\x00b" }, "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			err := c.validate()
			if got := errString(err); tt.wantErr == "" && err != nil || !strings.Contains(got, tt.wantErr) {
				t.Errorf("got error %q, want one containing %q", got, tt.wantErr)
			}
		})
	}
}

func TestConnStringHidesPassword(t *testing.T) {
	c := Conn{Host: "h", Port: 5433, Database: "d", User: "u", Password: "s3cret-token"}
	for _, got := range []string{c.String(), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c)} {
		if strings.Contains(got, "s3cret") {
			t.Errorf("got %q, want no password in it", got)
		}
	}
	if got, want := c.String(), "u@h:5433/d"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPasswordFunc(t *testing.T) {
	ctx := t.Context()
	c := Conn{Password: "static"}
	if got, err := c.password(ctx); got != "static" || err != nil {
		t.Errorf("static: got %q, %v; want %q, nil", got, err, "static")
	}
	c.PasswordFunc = func(context.Context) (string, error) { return "token", nil }
	if got, err := c.password(ctx); got != "token" || err != nil {
		t.Errorf("func: got %q, %v; want %q, nil", got, err, "token")
	}
	c.PasswordFunc = func(context.Context) (string, error) { return "", errors.New("imds unreachable") }
	_, err := c.password(ctx)
	if got := backup.CodeOf(err); got != backup.CodeTransient {
		t.Errorf("failing func: got code %s, want %s (error %v)", got, backup.CodeTransient, err)
	}
	if !strings.Contains(errString(err), "imds unreachable") {
		t.Errorf("failing func: got %q, want the cause in it", errString(err))
	}
}

func TestPgDumpEnv(t *testing.T) {
	t.Setenv("PGHOST", "elsewhere")
	t.Setenv("PGSERVICE", "evil")
	t.Setenv("PG_PASSWORD", "service-config-secret")
	t.Setenv("LC_ALL", "de_DE.UTF-8")
	t.Setenv("HOME", "/home/worker")
	env := strings.Join(pgDumpEnv("pw"), "\n") + "\n"
	for _, want := range []string{"PGPASSWORD=pw\n", "PGAPPNAME=mendix-backups\n", "LC_MESSAGES=C\n", "HOME=/home/worker\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("got no %q in the environment", strings.TrimSpace(want))
		}
	}
	for _, unwanted := range []string{"PGHOST=", "PGSERVICE=", "PG_PASSWORD=", "LC_ALL="} {
		if strings.Contains(env, unwanted) {
			t.Errorf("got %q in the environment, want it removed", unwanted)
		}
	}
	if strings.Contains(strings.Join(pgDumpEnv(""), "\n"), "PGPASSWORD") {
		t.Error("got PGPASSWORD for an empty password, want none")
	}
}

func TestSingleClient(t *testing.T) {
	ctx := t.Context()
	tests := []struct {
		name      string
		script    string // body of a fake pg_dump; "" uses the real PostgreSQL 15 one
		wantMajor int
		wantErr   string
	}{
		{"real pg_dump 15", "", 15, ""},
		{"pg_dump 12", `echo "pg_dump (PostgreSQL) 12.19"`, 12, ""},
		{"debian suffix", `echo "pg_dump (PostgreSQL) 14.3 (Debian 14.3-1.pgdg110+1)"`, 14, ""},
		{"pg_dump 16", `echo "pg_dump (PostgreSQL) 16.2"`, 16, ""},
		{"pg_dump 17 beta", `echo "pg_dump (PostgreSQL) 17beta1"`, 17, ""},
		{"pg_dump 11", `echo "pg_dump (PostgreSQL) 11.22"`, 0, "needs PostgreSQL 12 or later"},
		{"not pg_dump", `echo "hello"`, 0, "not a PostgreSQL version"},
		{"fails", `echo "boom" >&2; exit 3`, 0, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := realBinDir
			if tt.script != "" {
				dir = fakePgDump(t, tt.script)
			}
			var tools toolbox
			got, err := tools.clients(ctx, nil, dir)
			checkErr(t, err, tt.wantErr, backup.CodeInternal)
			if err == nil && (len(got) != 1 || got[0].Major != tt.wantMajor || got[0].Dir != dir) {
				t.Errorf("got %v, want %d=%s", got, tt.wantMajor, dir)
			}
		})
	}
	t.Run("missing binary", func(t *testing.T) {
		var tools toolbox
		_, err := tools.clients(ctx, nil, t.TempDir())
		checkErr(t, err, "pg_dump", backup.CodeInternal)
	})
	t.Run("configured clients are used as they are", func(t *testing.T) {
		var tools toolbox
		cs := Clients{{Major: 15, Dir: "/nowhere"}}
		if got, err := tools.clients(ctx, cs, realBinDir); err != nil || got.String() != "15=/nowhere" {
			t.Errorf("got %v, %v; want the configured clients", got, err)
		}
	})
	t.Run("refused at Start", func(t *testing.T) {
		d := &Dumper{BinDir: fakePgDump(t, `echo "pg_dump (PostgreSQL) 11.2"`)}
		_, err := d.Start(ctx, Conn{Host: "127.0.0.1", Port: 1, Database: "d", User: "u", SSLMode: "disable"})
		checkErr(t, err, "needs PostgreSQL 12 or later", backup.CodeInternal)
	})
}

func TestClientVersionChecked(t *testing.T) {
	ctx := t.Context()
	var tools toolbox
	if v, err := tools.version(ctx, Client{Major: 15, Dir: realBinDir}); err != nil || !strings.HasPrefix(v, "15.") {
		t.Errorf("real pg_dump 15: got %q, %v", v, err)
	}
	dir := fakePgDump(t, `echo "pg_dump (PostgreSQL) 17.2"`)
	_, err := tools.version(ctx, Client{Major: 15, Dir: dir})
	checkErr(t, err, "is version 17.2, configured as PostgreSQL 15", backup.CodeInternal)
	var be *backup.Error
	if errors.As(err, &be) && strings.Contains(be.Message, dir) {
		t.Errorf("message %q names the directory; only the cause may", be.Message)
	}
	if v, err := tools.version(ctx, Client{Major: 17, Dir: dir}); err != nil || v != "17.2" {
		t.Errorf("got %q, %v; want 17.2", v, err)
	}
}

func TestClassifyDumpFailure(t *testing.T) {
	c := Conn{Host: "h", Database: "appdb", User: "u"}
	exit1 := errors.New("exit status 1")
	tests := []struct {
		name     string
		stderr   string
		wantCode backup.Code
		wantMsg  string
	}{
		{"lock timeout, one table",
			"pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout\n" +
				"pg_dump: detail: Query was: LOCK TABLE public.\"shop$order\" IN ACCESS SHARE MODE",
			backup.CodeTransient, `the database dump could not lock table public."shop$order" within 2m0s: the app holds a conflicting lock; retry when the app is idle`},
		{"lock timeout, batch",
			"pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout\n" +
				"pg_dump: detail: Query was: LOCK TABLE public.a, public.b IN ACCESS SHARE MODE",
			backup.CodeTransient, "could not lock one of the tables public.a, public.b within 2m0s"},
		{"password",
			`pg_dump: error: connection to server at "h" (10.0.0.1), port 5432 failed: FATAL:  password authentication failed for user "u"`,
			backup.CodeInvalidState, "refused the backup service's login"},
		{"hba",
			`pg_dump: error: connection to server at "h", port 5432 failed: FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "u", database "appdb", no encryption`,
			backup.CodeInvalidState, "refused the backup service's login"},
		{"database gone",
			`pg_dump: error: connection to server at "h", port 5432 failed: FATAL:  database "appdb" does not exist`,
			backup.CodeInvalidState, "does not exist"},
		{"permission",
			"pg_dump: error: query failed: ERROR:  permission denied for table secret\npg_dump: detail: Query was: LOCK TABLE public.secret IN ACCESS SHARE MODE",
			backup.CodeInvalidState, "may not read every table and sequence"},
		{"version mismatch",
			"pg_dump: error: aborting because of server version mismatch\npg_dump: detail: server version: 16.1; pg_dump version: 15.18",
			backup.CodeInvalidState, "runs a newer PostgreSQL"},
		{"connection lost",
			"pg_dump: error: Dumping the contents of table \"x\" failed: PQgetResult() failed.\npg_dump: detail: Error message from server: server closed the connection unexpectedly",
			backup.CodeTransient, "the database dump failed for a reason that may be temporary"},
		{"tls", `pg_dump: error: connection to server at "h" (10.0.0.1), port 5432 failed: SSL error: certificate verify failed`,
			backup.CodeInvalidState, "could not verify the TLS certificate"},
		{"no stderr", "", backup.CodeTransient, "the database dump failed for a reason that may be temporary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := classifyDumpFailure(c, 2*time.Minute, exit1, tt.stderr)
			var be *backup.Error
			if !errors.As(err, &be) {
				t.Fatalf("got %T %v, want a *backup.Error", err, err)
			}
			if be.Code != tt.wantCode {
				t.Errorf("got code %s, want %s", be.Code, tt.wantCode)
			}
			if !strings.Contains(be.Message, tt.wantMsg) {
				t.Errorf("got message %q, want it to contain %q", be.Message, tt.wantMsg)
			}
			if !strings.Contains(err.Error(), tt.stderr) || !errors.Is(err, exit1) || !strings.Contains(err.Error(), "u@h:5432/appdb") {
				t.Errorf("got %q, want the stderr, the exit status and the connection in it", err.Error())
			}
		})
	}
}

// pg_dump's stderr (server messages, addresses, names, query text) goes to the log through the cause,
// never into the Message users see.
func TestDumpFailureMessagesHideStderr(t *testing.T) {
	c := Conn{Host: "h", Database: "appdb", User: "u"}
	const leak = "LEAK-10.0.0.7-hunter2"
	stderrs := []string{
		"pg_dump: error: connection to server at \"h\" (10.0.0.7) failed: FATAL:  password authentication failed for user \"" + leak + "\"",
		"pg_dump: error: connection failed: FATAL:  database \"" + leak + "\" does not exist",
		"pg_dump: error: query failed: ERROR:  permission denied for table " + leak,
		"pg_dump: error: aborting because of server version mismatch " + leak,
		"pg_dump: error: SSL error: certificate verify failed " + leak,
		"pg_dump: error: " + leak,
		// A lock timeout whose query text is not a list of table names.
		"pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout\npg_dump: detail: Query was: LOCK TABLE " + leak + ": FATAL x",
		"ERROR:  canceling statement due to statement timeout\nQuery was: LOCK TABLE public.a IN ACCESS SHARE MODE; " + leak,
		"ERROR:  canceling statement due to statement timeout\nQuery was: LOCK TABLE public.\"a\nb\" IN ACCESS SHARE MODE " + leak,
	}
	for _, stderr := range stderrs {
		err := classifyDumpFailure(c, time.Minute, errors.New("exit status 1"), stderr)
		var be *backup.Error
		if !errors.As(err, &be) {
			t.Fatalf("got %T %v, want a *backup.Error", err, err)
		}
		for _, bad := range []string{leak, "pg_dump:", "FATAL", "ERROR", "Query was"} {
			if strings.Contains(be.Message, bad) {
				t.Errorf("stderr %q: got message %q, want no %q in it", stderr, be.Message, bad)
			}
		}
		if be.Err == nil || !strings.Contains(be.Err.Error(), leak) {
			t.Errorf("stderr %q: got cause %v, want the stderr in it (for the log)", stderr, be.Err)
		}
	}
	// Real table names do reach users: they name the app's own entities.
	err := classifyDumpFailure(c, time.Minute, errors.New("exit status 1"),
		"ERROR:  canceling statement due to statement timeout\nQuery was: LOCK TABLE ONLY public.\"shop$order\", public.plain IN ACCESS SHARE MODE")
	if be := (*backup.Error)(nil); !errors.As(err, &be) || !strings.Contains(be.Message, `one of the tables public."shop$order", public.plain within 1m0s`) {
		t.Errorf("got %v, want the locked tables named", err)
	}
}

func TestVersionMessagesHideOutput(t *testing.T) {
	for _, script := range []string{`echo "hello LEAK"`, `echo "LEAK" >&2; exit 3`, `echo "pg_dump (PostgreSQL) 11.2 LEAK"`} {
		var tools toolbox
		_, err := tools.clients(t.Context(), nil, fakePgDump(t, script))
		var be *backup.Error
		if !errors.As(err, &be) {
			t.Fatalf("%s: got %v, want a *backup.Error", script, err)
		}
		if strings.Contains(be.Message, "LEAK") || strings.Contains(be.Message, "/pg_dump") {
			t.Errorf("%s: got message %q, want no output or path of pg_dump in it", script, be.Message)
		}
		if !strings.Contains(err.Error(), "/pg_dump") {
			t.Errorf("%s: got %q, want the path of pg_dump in the cause", script, err)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"fits", []string{"a\n", "b\n"}, "a\nb"},
		{"drops old lines", []string{"line one\n", "line two\n", "three\n"}, "…line two\nthree"},
		{"one huge write", []string{strings.Repeat("x", 30) + "\nlast\n"}, "…last"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &tailBuffer{max: 16}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("write: got %d, %v; want %d, nil", n, err, len(w))
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if len(b.buf) > b.max {
				t.Errorf("got %d bytes kept, want at most %d", len(b.buf), b.max)
			}
		})
	}
}

// --- helpers shared by the tests ---

const realBinDir = "/usr/lib/postgresql/15/bin"

// fakePgDump writes a pg_dump shell script with body into a new directory and returns the directory.
func fakePgDump(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pg_dump"), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// checkErr fails unless err is nil and wantErr empty, or err contains wantErr and has code.
func checkErr(t *testing.T, err error, wantErr string, code backup.Code) {
	t.Helper()
	if wantErr == "" {
		if err != nil {
			t.Errorf("got error %v, want none", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Errorf("got error %v, want one containing %q", err, wantErr)
		return
	}
	if got := backup.CodeOf(err); got != code {
		t.Errorf("got code %s, want %s (error %v)", got, code, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
