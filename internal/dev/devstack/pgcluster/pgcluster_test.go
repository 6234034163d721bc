package pgcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

// orphanHelperEnv makes the test binary start a cluster, report it and wait to be killed, for
// TestKilledParentTakesServerDown.
const orphanHelperEnv = "PGCLUSTER_ORPHAN_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(orphanHelperEnv) == "1" {
		os.Exit(runOrphanHelper())
	}
	os.Exit(m.Run())
}

func runOrphanHelper() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", c.proc.Pid(), c.Port, c.Dir)
	select {} // until killed
}

func TestClusterServesRolesDatabasesAndPgDump(t *testing.T) {
	t.Parallel()
	c := ForTest(t)
	ctx := testContext(t)

	var versionNum int
	queryRow(t, c.DSN("postgres"), "SELECT current_setting('server_version_num')::int", &versionNum)
	if versionNum/10000 != wantMajor {
		t.Errorf("got server_version_num %d, want major %d", versionNum, wantMajor)
	}
	if err := c.CreateRole(ctx, "app", "app-secret"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateDatabase(ctx, "appdb", "app"); err != nil {
		t.Fatal(err)
	}
	var owner string
	queryRow(t, c.DSN("postgres"), "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'appdb'", &owner)
	if owner != "app" {
		t.Errorf("got appdb owner %q, want %q", owner, "app")
	}

	appDSN := roleDSN(t, c, "app", "app-secret", "appdb")
	conn, err := pgx.Connect(ctx, appDSN)
	if err != nil {
		t.Fatalf("connect as app: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE note (id int PRIMARY KEY, body text); INSERT INTO note VALUES (1, 'hello')"); err != nil {
		t.Fatalf("create table as app: %v", err)
	}

	dump := pgDump(t, c, appDSN)
	if len(dump) < 8 || string(dump[:5]) != "PGDMP" {
		t.Fatalf("got dump header %q, want it to start with PGDMP", dump[:min(len(dump), 8)])
	}
	if got := [2]byte{dump[5], dump[6]}; got != [2]byte{1, 14} {
		t.Errorf("got archive version %d.%d, want 1.14", got[0], got[1])
	}
	if !bytes.Contains(dump, []byte("note")) {
		t.Errorf("dump does not mention table note")
	}
}

func TestServerSettings(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	c, err := Start(testContext(t), Options{Logger: log, Settings: map[string]string{
		"work_mem":       "7MB",
		"shared_buffers": "16MB", // overrides a default
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, c) })
	tests := []struct {
		name, setting, want string
	}{
		{"extra setting", "work_mem", "7MB"},
		{"overridden default", "shared_buffers", "16MB"},
		{"fsync off", "fsync", "off"},
		{"tcp on loopback only", "listen_addresses", Host},
		{"socket in run dir", "unix_socket_directories", c.SocketDir},
		{"max connections", "max_connections", "100"},
		{"utf8", "server_encoding", "UTF8"},
		{"scram passwords", "password_encryption", "scram-sha-256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			queryRow(t, c.DSN("postgres"), "SELECT current_setting('"+tt.setting+"')", &got)
			if got != tt.want {
				t.Errorf("got %s = %q, want %q", tt.setting, got, tt.want)
			}
		})
	}
}

func TestStopStopsServerAndRemovesItsDir(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	ctx := testContext(t)
	c, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Stop is idempotent: this cleanup only matters if the test fails early.
	t.Cleanup(func() { stop(t, c) })
	conn, err := pgx.Connect(ctx, c.DSN("postgres")) // an open session must not block the stop
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	assertPortClosed(t, c.Port)
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got stat %s error %v, want not exist", c.Dir, err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second stop: got %v, want nil", err)
	}
}

func TestStopKeepsGivenDir(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	ctx := testContext(t)
	dir := traversableTempDir(t)
	c, err := Start(ctx, Options{Dir: dir, Password: "given-password"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, c) })
	if c.Password != "given-password" {
		t.Errorf("got password %q, want the given one", c.Password)
	}
	if c.Dir != dir || c.DataDir != filepath.Join(dir, "data") {
		t.Errorf("got Dir %q DataDir %q, want %q and its data/", c.Dir, c.DataDir, dir)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	assertPortClosed(t, c.Port)
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Errorf("data dir not kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "initdb.pw")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got password file stat error %v, want not exist", err)
	}
}

func TestTwoClustersAtOnce(t *testing.T) {
	t.Parallel()
	a, b := ForTest(t), ForTest(t)
	if a.Port == b.Port {
		t.Fatalf("got the same port %d twice", a.Port)
	}
	ctx := testContext(t)
	if err := a.Exec(ctx, "postgres", "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    *Cluster
		want bool
	}{{"a has it", a, true}, {"b does not", b, false}} {
		var got bool
		queryRow(t, tc.c.DSN("postgres"), "SELECT to_regclass('only_in_a') IS NOT NULL", &got)
		if got != tc.want {
			t.Errorf("%s: got table exists %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestStartRetriesWhenPickedPortIsTaken(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	taken := listen(t)
	picks := 0
	c, err := Start(testContext(t), Options{pickPort: func() (int, error) {
		picks++
		if picks == 1 {
			return taken, nil
		}
		return freePort(t), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, c) })
	if picks != 2 {
		t.Errorf("got %d port picks, want 2", picks)
	}
	if c.Port == taken {
		t.Errorf("got port %d, the taken one", c.Port)
	}
	var one int
	queryRow(t, c.DSN("postgres"), "SELECT 1", &one)
}

func TestStartErrors(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		opts    Options
		wantErr string
	}{
		{"given port taken shows server log", testContext(t), Options{Port: listen(t)}, "Address already in use"},
		{"bin dir without postgres", testContext(t), Options{BinDir: t.TempDir()}, "initdb in"},
		{"canceled context", canceled, Options{}, context.Canceled.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Start(tt.ctx, tt.opts)
			if err == nil {
				stop(t, c)
				t.Fatalf("got no error, want one containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCreateRoleQuotesNameAndPassword(t *testing.T) {
	t.Parallel()
	c := ForTest(t)
	ctx := testContext(t)
	tests := []struct {
		name, role, password string
	}{
		{"plain", "plain_role", "secret"},
		{"quotes and backslash in password", "quoted", `it's "x" \ y`},
		{"mixed case and space in name", "Mixed Role", "p w"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.CreateRole(ctx, tt.role, tt.password); err != nil {
				t.Fatal(err)
			}
			var got string
			queryRow(t, roleDSN(t, c, tt.role, tt.password, "postgres"), "SELECT current_user", &got)
			if got != tt.role {
				t.Errorf("got current_user %q, want %q", got, tt.role)
			}
		})
	}
	if err := c.CreateRole(ctx, "nul", "a\x00b"); err == nil {
		t.Error("got no error for a password with a NUL byte, want one")
	}
}

func TestDSN(t *testing.T) {
	t.Parallel()
	c := &Cluster{Host: Host, Port: 54321, User: Superuser, Password: "p@ss/word:1"}
	for _, db := range []string{"postgres", "my db", "weird/name?x=1", "ünïcode"} {
		t.Run(db, func(t *testing.T) {
			cfg, err := pgx.ParseConfig(c.DSN(db))
			if err != nil {
				t.Fatalf("parse %q: %v", c.DSN(db), err)
			}
			got := fmt.Sprintf("%s@%s:%d/%s pw=%s", cfg.User, cfg.Host, cfg.Port, cfg.Database, cfg.Password)
			want := fmt.Sprintf("postgres@127.0.0.1:54321/%s pw=p@ss/word:1", db)
			if got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

func TestKilledParentTakesServerDown(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), orphanHelperEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := readLineWithin(stdout, 2*time.Minute)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper: %v", err)
	}
	var pid, port int
	var dir string
	if _, err := fmt.Sscanf(line, "ready %d %d %s", &pid, &port, &dir); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper said %q: %v", line, err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) }) // a killed helper cannot clean up
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		open := portOpen(port)
		gone := processGone(pid)
		if gone && !open {
			break
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("30s after its parent was killed: got postgres pid %d gone %v, port %d open %v; want gone, closed",
				pid, gone, port, open)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- helpers ---

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func stop(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func queryRow(t *testing.T, dsn, sql string, dest any) {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(dest); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func roleDSN(t *testing.T, c *Cluster, user, password, db string) string {
	t.Helper()
	u, err := url.Parse(c.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

func pgDump(t *testing.T, c *Cluster, dsn string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(testContext(t), filepath.Join(c.BinDir, "pg_dump"), "-Fc", "-d", dsn)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, stderr.String())
	}
	return stdout.Bytes()
}

// traversableTempDir returns an empty directory the postgres user can reach when tests run as root
// (t.TempDir's parent is 0700).
func traversableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgcluster-given-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "cluster")
}

// listen holds a port on the server's address until the test ends and returns it.
func listen(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(Host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(Host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func assertPortClosed(t *testing.T, port int) {
	t.Helper()
	if portOpen(port) {
		t.Errorf("port %d still accepts connections", port)
	}
}

func portOpen(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(Host, strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func readLineWithin(r interface{ Read([]byte) (int, error) }, d time.Duration) (string, error) {
	lines := make(chan string, 1)
	errs := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil {
			errs <- fmt.Errorf("read: %w (got %q)", err, line)
			return
		}
		lines <- strings.TrimSpace(line)
	}()
	select {
	case line := <-lines:
		return line, nil
	case err := <-errs:
		return "", err
	case <-time.After(d):
		return "", fmt.Errorf("no line within %s", d)
	}
}

// processGone reports whether pid has exited. A zombie nobody reaped counts as gone; callers also
// check the port, which a half-exited process could still hold.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// Format: pid (comm) state ...; comm may contain spaces, so look after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// skipIfShort skips a test that starts a real PostgreSQL: `go test -short` runs the unit tests only.
func skipIfShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: starts a real PostgreSQL; run without -short")
	}
}
