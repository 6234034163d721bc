package pg

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

func TestConnDefaultsToVerifyFull(t *testing.T) {
	c := Conn{Host: "srv.postgres.database.azure.com", Database: "d", User: "u"}
	if got := c.sslMode(); got != "verify-full" {
		t.Errorf("got sslmode %q for an empty SSLMode, want verify-full", got)
	}
	if err := c.validate(); !strings.Contains(errString(err), "verify-full needs a CA bundle file") {
		t.Errorf("got %v, want verify-full without a CA bundle refused", err)
	}
	c.SSLMode = "verify-ca"
	if err := c.validate(); !strings.Contains(errString(err), "verify-ca needs a CA bundle file") {
		t.Errorf("got %v, want verify-ca without a CA bundle refused", err)
	}
	c.SSLRootCert = "/etc/ssl/roots.pem"
	if err := c.validate(); err != nil {
		t.Errorf("got %v, want a verify-ca Conn with a CA bundle valid", err)
	}
	c.SSLRootCert = "/etc/ssl/a\x00b"
	if err := c.validate(); !strings.Contains(errString(err), "NUL") {
		t.Errorf("got %v, want a NUL byte refused", err)
	}
}

// pgx and pg_dump get sslmode and sslrootcert from the one conninfo; the environment cannot change them.
func TestConninfoCarriesSSLSettings(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "roots")
	rootFile := filepath.Join(dir, "it's roots.pem")
	ca.writeCert(t, rootFile)

	c := Conn{Host: "srv.postgres.database.azure.com", Database: "d", User: "u", SSLRootCert: rootFile}
	dump := &Dump{conn: c, snapshot: "00000003-0000001B-1", lockWait: time.Minute}
	args := dump.pgDumpCommandArgs()
	dbname := args[len(args)-1]
	info, ok := strings.CutPrefix(dbname, "--dbname=")
	if !ok {
		t.Fatalf("got last pg_dump argument %q, want --dbname=<conninfo>", dbname)
	}
	for _, want := range []string{`sslmode='verify-full'`, `sslrootcert='` + strings.ReplaceAll(rootFile, `'`, `\'`) + `'`} {
		if !strings.Contains(info, want) {
			t.Errorf("got pg_dump conninfo %q, want %s in it", info, want)
		}
	}
	if strings.Contains(strings.Join(args, " "), "--schema") {
		t.Errorf("got pg_dump arguments %q, want no --schema", args)
	}
	cfg, err := pgx.ParseConfig(info)
	if err != nil {
		t.Fatalf("pgx cannot parse %q: %v", info, err)
	}
	if tls := cfg.TLSConfig; tls == nil || tls.InsecureSkipVerify || tls.ServerName != c.Host || tls.RootCAs == nil ||
		!tls.RootCAs.Equal(ca.pool()) || len(cfg.Fallbacks) != 0 {
		t.Errorf("got pgx TLS config %+v, want verify-full of %s against the file's CA only, no fallback", cfg.TLSConfig, c.Host)
	}

	c.SSLMode, c.SSLRootCert = "disable", filepath.Join(dir, "missing.pem")
	if info := c.conninfo(); strings.Contains(info, "sslrootcert") {
		t.Errorf("sslmode disable: got %q, want no sslrootcert (pgx would read the file)", info)
	}

	t.Setenv("PGSSLMODE", "disable")
	t.Setenv("PGSSLROOTCERT", "/tmp/evil.pem")
	t.Setenv("PGSSLNEGOTIATION", "direct")
	for _, kv := range pgDumpEnv("pw") {
		if strings.HasPrefix(kv, "PGSSL") {
			t.Errorf("got %q in pg_dump's environment, want every PGSSL* variable removed", kv)
		}
	}
}

// A host off AllowedHosts is refused with a permanent error before the password (the managed identity's
// token) is asked for.
func TestHostNotAllowedIsRefusedBeforeThePassword(t *testing.T) {
	hosts, err := backup.ParseHostAllowList(backup.DefaultDatabaseHosts)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	c := Conn{Host: "collector.attacker.example", Database: "d", User: "u", SSLRootCert: "/etc/ssl/roots.pem",
		AllowedHosts: hosts, PasswordFunc: func(context.Context) (string, error) {
			calls.Add(1)
			return "token", nil
		}}
	d := &Dumper{BinDir: realBinDir}
	_, err = d.Start(t.Context(), c)
	checkErr(t, err, `host "collector.attacker.example" of u@collector.attacker.example:5432/d is not on the allowed database hosts .postgres.database.azure.com`,
		backup.CodeInvalidState)
	var be *backup.Error
	if backup.IsRetryable(err) || !errors.As(err, &be) || be.Message != "the backup service may not connect to the database server this environment names" {
		t.Errorf("got %v, want a permanent error with a sentence for users", err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("got %d PasswordFunc calls, want none", n)
	}
	// An allowed host gets as far as connecting (nothing listens there: transient).
	c.Host, c.AllowedHosts = "127.0.0.1", mustHosts(t, "127.0.0.1,localhost")
	c.SSLMode, c.Port = "disable", closedPort(t)
	_, err = d.Start(t.Context(), c)
	checkErr(t, err, "could not connect", backup.CodeTransient)
	if n := calls.Load(); n != 1 {
		t.Errorf("got %d PasswordFunc calls for an allowed host, want 1", n)
	}
}

// A real server with TLS: pgx and pg_dump both connect with verify-full against the configured CA (HOME
// has no ~/.postgresql/root.crt, and the role may not log in without TLS), and a certificate that does
// not verify is a permanent, clear error.
func TestTLSAgainstPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs a real PostgreSQL; run without -short")
	}
	t.Setenv("HOME", t.TempDir())
	certDir := serverCertDir(t)
	ca := newTestCA(t, "test roots")
	ca.writeCert(t, filepath.Join(certDir, "roots.pem"))
	ca.writeServer(t, certDir, "localhost") // a DNS name only: 127.0.0.1 does not match it
	other := newTestCA(t, "other roots")
	other.writeCert(t, filepath.Join(certDir, "other.pem"))
	chownToPostgres(t, certDir)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
		Settings: map[string]string{"ssl": "on", "ssl_cert_file": filepath.Join(certDir, "server.crt"),
			"ssl_key_file": filepath.Join(certDir, "server.key")}})
	if err != nil {
		t.Fatalf("start postgres with TLS: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop(context.WithoutCancel(ctx)) })
	e := &env{c: c}
	if err := c.CreateRole(ctx, "app", "app-secret"); err != nil {
		t.Fatal(err)
	}
	db := e.newDB(t, "app", seedSQL)
	requireTLSFor(t, c, "app", db)

	conn := e.appConn(db)
	conn.Host, conn.SSLMode, conn.SSLRootCert = "localhost", "verify-full", filepath.Join(certDir, "roots.pem")
	t.Run("verify-full", func(t *testing.T) {
		dump, err := e.dumper(t, 0).Start(ctx, conn)
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		path := e.readDump(t, dump)
		if err := dump.Wait(); err != nil {
			t.Fatalf("wait: %v (pg_dump must verify the server with the same CA file)", err)
		}
		if list := e.pgRestore(t, "--list", path); !strings.Contains(list, "TABLE DATA public shop$order") {
			t.Errorf("pg_restore --list has no data for shop$order:\n%s", list)
		}
	})
	t.Run("verify-ca ignores the name", func(t *testing.T) {
		c := conn
		c.Host, c.SSLMode = "127.0.0.1", "verify-ca"
		dump, err := e.dumper(t, 0).Start(ctx, c)
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		e.readDump(t, dump)
		if err := dump.Wait(); err != nil {
			t.Fatalf("wait: %v", err)
		}
	})
	failures := []struct {
		name   string
		change func(*Conn)
	}{
		{"name mismatch", func(c *Conn) { c.Host = "127.0.0.1" }},
		{"unknown authority", func(c *Conn) { c.SSLRootCert = filepath.Join(certDir, "other.pem") }},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			c := conn
			tt.change(&c)
			_, err := e.dumper(t, 0).Start(ctx, c)
			checkErr(t, err, "could not verify the TLS certificate", backup.CodeInvalidState)
			// pg_dump (libpq 15) fails the same way, and its stderr is classified alike.
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, filepath.Join(e.c.BinDir, "pg_dump"), "--schema-only", "--dbname="+c.conninfo())
			cmd.Env, cmd.Stderr = pgDumpEnv(c.Password), &stderr
			runErr := cmd.Run()
			if runErr == nil {
				t.Fatal("pg_dump connected, want a certificate failure")
			}
			err = classifyDumpFailure(c, time.Minute, runErr, stderr.String())
			checkErr(t, err, "could not verify the TLS certificate", backup.CodeInvalidState)
		})
	}
}

// requireTLSFor makes the server refuse role's logins without TLS (the superuser keeps its own).
func requireTLSFor(t *testing.T, c *pgcluster.Cluster, role, db string) {
	t.Helper()
	hba := filepath.Join(c.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	rule := "hostnossl all " + role + " all reject\n"
	if err := os.WriteFile(hba, append([]byte(rule), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(t.Context(), "postgres", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	plain := "host=" + c.Host + " port=" + strconv.Itoa(c.Port) + " user=" + role + " password=app-secret dbname=" + db + " sslmode=disable"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		conn, err := pgx.Connect(t.Context(), plain)
		if err != nil {
			return // refused: the rule is in force
		}
		conn.Close(t.Context())
		if time.Now().After(deadline) {
			t.Fatal("the server still accepts logins without TLS after the pg_hba.conf reload")
		}
	}
}

func mustHosts(t *testing.T, s string) backup.HostAllowList {
	t.Helper()
	l, err := backup.ParseHostAllowList(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// --- certificates ---

type testCA struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, der: der, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func (ca *testCA) writeCert(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeServer writes server.crt and server.key (0600) into dir, for dnsName.
func (ca *testCA) writeServer(t *testing.T, dir, dnsName string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serverCertDir is a directory the server (the postgres user, when tests run as root) can enter.
func serverCertDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pg-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// chownToPostgres gives the files in dir to the postgres user when running as root: the server refuses
// a key file it does not own (or that others can read).
func chownToPostgres(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Chown(filepath.Join(dir, e.Name()), uid, gid); err != nil {
			t.Fatal(err)
		}
	}
}
