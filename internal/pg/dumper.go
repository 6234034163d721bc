package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

// DefaultLockWaitTimeout bounds how long pg_dump (and the file-list query) wait for a table lock when
// Dumper.LockWaitTimeout is zero.
const DefaultLockWaitTimeout = 2 * time.Minute

// Supported pg_dump major versions: 12 to 15 write custom archives of version 1.14, the newest Mendix
// Cloud accepts (pg_dump 16 writes 1.15, 17 writes 1.16).
const (
	MinPgDumpMajor = 12
	MaxPgDumpMajor = 15
)

// ErrAborted is in the chain of the error Wait and the Reader return after Abort.
var ErrAborted = errors.New("the database dump was aborted")

// Dumper starts database dumps. Fill the fields, then use it from any number of goroutines; do not copy
// it after first use.
type Dumper struct {
	// BinDir holds pg_dump (PostgreSQL 12 to 15, normally 15). Empty: pg_dump is looked up in PATH.
	BinDir string
	// LockWaitTimeout bounds each wait for a table lock (default DefaultLockWaitTimeout). An app holding
	// a conflicting lock longer than that makes the dump fail with a transient error.
	LockWaitTimeout time.Duration
	Logger          zerolog.Logger

	// hookBeforeDump, when set (tests only), runs after the file list is read and before pg_dump starts.
	hookBeforeDump func(ctx context.Context)

	versionMu sync.Mutex
	version   string // cached after the first successful check
}

// File is one file document of the snapshot. Memory: about 72 bytes per file (the 36-byte UUID string
// in a 48-byte allocation, plus the 24-byte struct), so 100,000 files take about 7 MiB and a million
// about 70 MiB.
type File struct {
	UUID string // as stored in __uuid__ (the blob name); 8-4-4-4-12 hexadecimal digits
	Size int64  // the size column; -1 when NULL. The blob's own size is authoritative.
}

// noPgDump is what users see when pg_dump is missing or of the wrong version; the log has the detail.
const noPgDump = "the backup service has no pg_dump that can write archives Mendix Cloud accepts (PostgreSQL 12 to 15); an operator must fix its installation"

var versionRE = regexp.MustCompile(`\(PostgreSQL\) ((\d+)[0-9A-Za-z.]*)`)

// Version runs `pg_dump --version` and returns the version ("15.18"). The error is a *backup.Error
// (CodeInternal) when pg_dump cannot run or its major version is outside MinPgDumpMajor..MaxPgDumpMajor,
// whose archives Mendix Cloud would refuse. A successful check is remembered.
func (d *Dumper) Version(ctx context.Context) (string, error) {
	d.versionMu.Lock()
	defer d.versionMu.Unlock()
	if d.version != "" {
		return d.version, nil
	}
	bin, err := d.pgDumpPath()
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s --version: %w", bin, ctx.Err())
		}
		return "", backup.Wrap(backup.CodeInternal, fmt.Errorf("%s --version failed: %w: %s", bin, err, bytes.TrimSpace(stderr.Bytes())),
			"%s", noPgDump)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", backup.Wrap(backup.CodeInternal, fmt.Errorf("%s --version printed %q, not a PostgreSQL version", bin, bytes.TrimSpace(out)),
			"%s", noPgDump)
	}
	version := string(m[1])
	major, _ := strconv.Atoi(string(m[2]))
	if major < MinPgDumpMajor || major > MaxPgDumpMajor {
		return version, backup.Wrap(backup.CodeInternal,
			fmt.Errorf("%s is version %s; backups need pg_dump %d to %d (archive version 1.14, the newest Mendix Cloud accepts)",
				bin, version, MinPgDumpMajor, MaxPgDumpMajor), "%s", noPgDump)
	}
	d.version = version
	return version, nil
}

func (d *Dumper) pgDumpPath() (string, error) { return binPath(d.BinDir, "pg_dump") }

// binPath is the PostgreSQL client program name in binDir, or in PATH when binDir is empty.
func binPath(binDir, name string) (string, error) {
	if binDir != "" {
		return filepath.Join(binDir, name), nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", backup.Wrap(backup.CodeInternal, err, "%s is not in PATH and no BinDir is configured", name)
	}
	return p, nil
}

func (d *Dumper) lockWaitTimeout() time.Duration {
	if d.LockWaitTimeout <= 0 {
		return DefaultLockWaitTimeout
	}
	return d.LockWaitTimeout
}

// ArchiveVersion reads the archive version from the first bytes of a custom-format dump: "PGDMP" and
// one byte each for major, minor and revision. ok is false when header is shorter or not a dump.
func ArchiveVersion(header []byte) (major, minor, rev byte, ok bool) {
	if len(header) < 8 || string(header[:5]) != "PGDMP" {
		return 0, 0, 0, false
	}
	return header[5], header[6], header[7], true
}

// Start begins a dump of conn's database. It checks pg_dump's version, connects, opens a REPEATABLE READ
// READ ONLY transaction, exports its snapshot, reads the database size and the file list in it, and
// starts pg_dump on that snapshot. The transaction stays open until the dump ends.
//
// On success the caller must read Dump.Reader to its end and call Dump.Wait, or call Dump.Abort; the end
// of ctx aborts the dump too. On error nothing is left open.
func (d *Dumper) Start(ctx context.Context, conn Conn) (*Dump, error) {
	if err := conn.usable(ctx); err != nil {
		return nil, err
	}
	version, err := d.Version(ctx)
	if err != nil {
		return nil, err
	}
	pw, err := conn.password(ctx)
	if err != nil {
		return nil, err
	}
	log := d.Logger.With().Str("database", conn.Database).Str("host", conn.Host).Logger()
	dump := &Dump{conn: conn, log: log, lockWait: d.lockWaitTimeout(), closeCtx: context.WithoutCancel(ctx),
		exited: make(chan struct{}), ended: make(chan struct{})}
	if err := dump.openSnapshot(ctx, pw, version); err != nil {
		return nil, err
	}
	if d.hookBeforeDump != nil {
		d.hookBeforeDump(ctx)
	}
	bin, err := d.pgDumpPath()
	if err == nil {
		err = dump.startPgDump(bin, pw)
	}
	if err != nil {
		dump.closeSnapshot()
		return nil, err
	}
	go dump.watch(ctx)
	log.Info().Str("snapshot", dump.snapshot).Int64("database_size", dump.dbSize).Int("files", len(dump.files)).
		Int("warnings", len(dump.warnings)).Int("pid", dump.cmd.Process.Pid).Msg("pg_dump started")
	return dump, nil
}

// openSnapshot connects, exports the snapshot and reads the size and file list in it. On error the
// connection is closed.
func (dump *Dump) openSnapshot(ctx context.Context, pw, pgDumpVersion string) error {
	c := dump.conn
	conn, err := connect(ctx, c, pw)
	if err != nil {
		return err
	}
	dump.db = conn
	fail := func(err error) error {
		dump.closeSnapshot()
		return err
	}
	if err := checkServerVersion(conn.PgConn().ParameterStatus("server_version"), c, pgDumpVersion); err != nil {
		return fail(err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fail(dump.queryError(ctx, err, "begin the snapshot transaction"))
	}
	dump.tx = tx
	// Bound our own lock waits like pg_dump's; never time out the idle snapshot transaction while pg_dump
	// runs; no statement timeout from the role's settings on the file-list query.
	settings := []struct{ name, value string }{
		{"lock_timeout", strconv.FormatInt(max(dump.lockWait.Milliseconds(), 1), 10)},
		{"idle_in_transaction_session_timeout", "0"},
		{"statement_timeout", "0"},
	}
	for _, s := range settings {
		if _, err := tx.Exec(ctx, "SELECT set_config($1, $2, true)", s.name, s.value); err != nil {
			return fail(dump.queryError(ctx, err, "set "+s.name))
		}
	}
	if err := tx.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&dump.snapshot); err != nil {
		return fail(dump.queryError(ctx, err, "export the snapshot"))
	}
	if err := tx.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&dump.dbSize); err != nil {
		return fail(dump.queryError(ctx, err, "read the database size"))
	}
	if err := dump.readFiles(ctx); err != nil {
		return fail(err)
	}
	return nil
}

// checkServerVersion refuses a server newer than pg_dump, which pg_dump would refuse with a less clear
// message after the snapshot work.
func checkServerVersion(server string, c Conn, pgDumpVersion string) error {
	sm, okS := leadingInt(server)
	dm, okD := leadingInt(pgDumpVersion)
	if okS && okD && sm > dm {
		return backup.Errorf(backup.CodeInvalidState,
			"database %s runs PostgreSQL %s, newer than this service's pg_dump %s; it cannot be dumped into an archive Mendix Cloud accepts",
			c, server, pgDumpVersion)
	}
	return nil
}

func leadingInt(s string) (int, bool) {
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(s[:end])
	return n, err == nil
}

// pgDumpEnv is the environment of pg_dump: the worker's, without any libpq (PG*) variable that could
// redirect or reconfigure the connection or leak the service's settings, plus the password, the
// application name and English messages (errors are classified by their text).
func pgDumpEnv(pw string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_ALL=") || strings.HasPrefix(kv, "LC_MESSAGES=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PGAPPNAME="+ApplicationName, "LC_MESSAGES=C")
	if pw != "" {
		env = append(env, "PGPASSWORD="+pw)
	}
	return env
}
