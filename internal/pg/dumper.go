package pg

import (
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

// ErrAborted is in the chain of the error Wait and the Reader return after Abort.
var ErrAborted = errors.New("the database dump was aborted")

// Dumper starts database dumps. Fill the fields, then use it from any number of goroutines; do not copy
// it after first use.
type Dumper struct {
	// Clients are the pg_dump programs to choose from by the server's major version (clients.go); the
	// check of an uploaded dump picks pg_restore among them too. Check them with Clients.Check at start.
	// Empty: BinDir's.
	Clients Clients
	// BinDir, when Clients is empty, holds the one pg_dump and pg_restore, of the major version
	// `pg_dump --version` reports (12 or later). Empty too: they are looked up in PATH.
	BinDir string
	// LockWaitTimeout bounds each wait for a table lock (default DefaultLockWaitTimeout). An app holding
	// a conflicting lock longer than that makes the dump fail with a transient error.
	LockWaitTimeout time.Duration
	Logger          zerolog.Logger

	// hookBeforeDump, when set (tests only), runs after the file list is read and before pg_dump starts.
	hookBeforeDump func(ctx context.Context)

	tools toolbox
}

// File is one file document of the snapshot. Memory: about 72 bytes per file (the 36-byte UUID string
// in a 48-byte allocation, plus the 24-byte struct), so 100,000 files take about 7 MiB and a million
// about 70 MiB.
type File struct {
	UUID string // as stored in __uuid__ (the blob name); 8-4-4-4-12 hexadecimal digits
	Size int64  // the size column; -1 when NULL. The blob's own size is authoritative.
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) ((\d+)[0-9A-Za-z.]*)`)

// toolbox resolves and checks the client programs of a Dumper or Restorer: BinDir's major version
// when no Clients are configured, and each Client's `pg_dump --version`, once. Its zero value is ready.
type toolbox struct {
	mu      sync.Mutex
	single  Clients           // BinDir's (or PATH's) one client, once its major version is known
	checked map[string]string // Client.Dir: pg_dump's version, once it reported the Client's Major
}

// clients returns configured when it is not empty, else the one client in binDir (or PATH's), whose
// major version its pg_dump reports. The error is a *backup.Error (CodeInternal): the service is
// misconfigured.
func (t *toolbox) clients(ctx context.Context, configured Clients, binDir string) (Clients, error) {
	if len(configured) > 0 {
		return configured, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.single != nil {
		return t.single, nil
	}
	if binDir == "" {
		p, err := exec.LookPath("pg_dump")
		if err != nil {
			return nil, backup.Wrap(backup.CodeInternal, err, "pg_dump is not in PATH and no client programs are configured (PG_BIN_DIRS)")
		}
		binDir = filepath.Dir(p)
	}
	version, major, err := ClientVersion(ctx, binDir)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return nil, backup.Wrap(backup.CodeInternal, err, "%s", noClient)
	}
	if major < MinClientMajor {
		return nil, backup.Wrap(backup.CodeInternal,
			fmt.Errorf("%s/pg_dump is version %s; the service needs PostgreSQL %d or later", binDir, version, MinClientMajor), "%s", noClient)
	}
	t.single = Clients{{Major: major, Dir: binDir}}
	return t.single, nil
}

// noClient is what users see when the chosen pg_dump or pg_restore cannot run or is not the version
// configured; the log has the detail.
const noClient = "the backup service's PostgreSQL client programs (pg_dump, pg_restore) are missing or broken; an operator must fix its installation"

// version runs c's `pg_dump --version` once and checks that it is c.Major. The error is a
// *backup.Error (CodeInternal) naming nothing of the installation; its cause names the program.
func (t *toolbox) version(ctx context.Context, c Client) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.checked[c.Dir]; ok {
		return v, nil
	}
	version, major, err := ClientVersion(ctx, c.Dir)
	switch {
	case err != nil && ctx.Err() != nil:
		return "", fmt.Errorf("%w: %w", ctx.Err(), err)
	case err != nil:
		return "", backup.Wrap(backup.CodeInternal, err, "%s", noClient)
	case major != c.Major:
		return "", backup.Wrap(backup.CodeInternal,
			fmt.Errorf("%s is version %s, configured as PostgreSQL %d", c.pgDump(), version, c.Major), "%s", noClient)
	}
	if t.checked == nil {
		t.checked = map[string]string{}
	}
	t.checked[c.Dir] = version
	return version, nil
}

// ErrNoClient is in the chain of the error when no configured client programs fit the server or the
// archive (Clients.ForDump, Clients.ForRestore): nothing was started, and a retry cannot help.
var ErrNoClient = errors.New("no configured PostgreSQL client programs fit")

// noFit wraps the *backup.Error of a failed choice with the detail for the log.
func noFit(err error, format string, args ...any) error {
	var be *backup.Error
	if !errors.As(err, &be) {
		return err
	}
	return backup.Wrap(be.Code, fmt.Errorf("%w: %s", ErrNoClient, fmt.Sprintf(format, args...)), "%s", be.Message)
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

// Start begins a dump of conn's database. It connects, reads the server's major version and picks the
// pg_dump for it (Clients.ForDump: a server newer than every configured pg_dump is refused here, before
// anything is written), opens a REPEATABLE READ READ ONLY transaction, exports its snapshot, reads the
// database size and the file list in it, and starts pg_dump on that snapshot. The transaction stays
// open until the dump ends.
//
// On success the caller must read Dump.Reader to its end and call Dump.Wait, or call Dump.Abort; the end
// of ctx aborts the dump too. On error nothing is left open.
func (d *Dumper) Start(ctx context.Context, conn Conn) (*Dump, error) {
	if err := conn.usable(ctx); err != nil {
		return nil, err
	}
	clients, err := d.tools.clients(ctx, d.Clients, d.BinDir)
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
	if err := dump.openSnapshot(ctx, pw, func(server int, serverVersion string) error {
		client, err := clients.ForDump(server)
		if err != nil {
			return noFit(err, "database %s runs PostgreSQL %s; pg_dump is configured for %s", conn, serverVersion, clients)
		}
		dump.client = client
		dump.pgDumpVersion, err = d.tools.version(ctx, client)
		return err
	}); err != nil {
		return nil, err
	}
	if d.hookBeforeDump != nil {
		d.hookBeforeDump(ctx)
	}
	if err := dump.startPgDump(dump.client.pgDump(), pw); err != nil {
		dump.closeSnapshot()
		return nil, err
	}
	go dump.watch(ctx)
	log.Info().Str("snapshot", dump.snapshot).Int64("database_size", dump.dbSize).Int("files", len(dump.files)).
		Int("warnings", len(dump.warnings)).Str("server_version", dump.serverVersion).Str("pg_dump", dump.pgDumpVersion).
		Int("pid", dump.cmd.Process.Pid).Msg("pg_dump started")
	return dump, nil
}

// openSnapshot connects, reads the server's version and hands it to choose (which picks pg_dump),
// exports the snapshot and reads the size and file list in it. On error the connection is closed.
func (dump *Dump) openSnapshot(ctx context.Context, pw string, choose func(server int, serverVersion string) error) error {
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
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('server_version')").
		Scan(&num, &dump.serverVersion); err != nil {
		return fail(dump.queryError(ctx, err, "read the server version"))
	}
	if err := choose(serverMajor(num), dump.serverVersion); err != nil {
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

// serverMajor is the major version in a server_version_num: 170002 is 17, 90624 is 9 (9.6).
func serverMajor(num int) int { return num / 10000 }

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
