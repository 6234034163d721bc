package pg

// The PostgreSQL side of an all-or-nothing restore (design.md, "Restore: all or nothing"):
// CreateStaging makes an empty database <db>_restore_<id> like the environment's, Restore streams a
// custom-format dump into it with pg_restore, and Swap renames the current database away and the
// staging database into its place in one transaction. Every step can be repeated after a crash:
// CreateStaging and Swap inspect the state first, DropDatabase is IF EXISTS.
//
// The session role is Conn.User, the service role: not a superuser, but with CREATEDB and membership
// in the environment's role (as on Azure Flexible Server). The environment's role is the owner of the
// current database (Conn.Database); the staging database and every restored object belong to it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

// DefaultMaintenanceDB is the database Restorer connects to for CREATE, ALTER and DROP DATABASE.
const DefaultMaintenanceDB = "postgres"

// maxIdentifier is PostgreSQL's longest name in bytes (NAMEDATALEN - 1); longer names are truncated.
const maxIdentifier = 63

// SQLSTATE codes of the database-level statements.
const (
	sqlDuplicateDatabase = "42P04"
	sqlObjectInUse       = "55006" // database is being accessed by other users
)

// Restorer creates, fills, swaps and drops databases for a restore. Fill the fields, then use it from
// any number of goroutines; do not copy it after first use.
type Restorer struct {
	// Clients are the pg_restore programs to choose from by the target server's major version and the
	// dump's archive version (Clients.ForRestore); check them with Clients.Check at start. Empty:
	// BinDir's.
	Clients Clients
	// BinDir, when Clients is empty, holds the one pg_restore, of the major version its directory's
	// `pg_dump --version` reports. Empty too: PATH.
	BinDir string
	// MaintenanceDB is the database connected to for database-level statements (default "postgres"):
	// a database cannot be renamed or dropped from a session connected to it.
	MaintenanceDB string
	Logger        zerolog.Logger

	// hookStarted, when set (tests only), runs once pg_restore has started, with its pid.
	hookStarted func(pid int)
	// swapAttempts bounds the renames tried when a session is still connected (0: defaultSwapAttempts).
	swapAttempts int

	tools toolbox
}

// RestoreResult describes a successful Restore.
type RestoreResult struct {
	Bytes    int64         // read from the dump
	Duration time.Duration // from pg_restore's start to its exit
	Messages string        // the end of pg_restore's stderr (warnings), empty when it printed nothing
}

// StagingName is the staging database of a restore of db: <db>_restore_<shortID>. shortID must be
// lowercase hexadecimal; the name must fit in 63 bytes.
func StagingName(db, shortID string) (string, error) { return derivedName(db, "_restore_", shortID) }

// PreviousName is the name the current database db gets on Swap: <db>_pre_restore_<shortID>.
func PreviousName(db, shortID string) (string, error) {
	return derivedName(db, "_pre_restore_", shortID)
}

var hexID = regexp.MustCompile(`^[0-9a-f]+$`)

func derivedName(db, infix, shortID string) (string, error) {
	name := db + infix + shortID
	switch {
	case !hexID.MatchString(shortID):
		return "", backup.Errorf(backup.CodeInternal, "the restore id %q is not lowercase hexadecimal", shortID)
	case len(name) > maxIdentifier:
		return "", backup.Errorf(backup.CodeInvalidState,
			"the database name %q is too long to name a restore database after it (%q has more than %d bytes)", db, name, maxIdentifier)
	}
	return name, nil
}

// checkStaging refuses a staging name that is not <db>_restore_<hex> for conn's database.
func checkStaging(conn Conn, staging string) error {
	id, ok := strings.CutPrefix(staging, conn.Database+"_restore_")
	if !ok || !hexID.MatchString(id) || len(staging) > maxIdentifier {
		return backup.Errorf(backup.CodeInternal,
			"%q is not a restore database of %q (want %s_restore_<hexadecimal id>, at most %d bytes)",
			staging, conn.Database, conn.Database, maxIdentifier)
	}
	return nil
}

func (r *Restorer) maintenanceDB() string {
	if r.MaintenanceDB == "" {
		return DefaultMaintenanceDB
	}
	return r.MaintenanceDB
}

// admin connects as conn.User to the maintenance database, after the same checks as Dumper.Start.
func (r *Restorer) admin(ctx context.Context, conn Conn) (*pgx.Conn, error) {
	if err := conn.usable(ctx); err != nil {
		return nil, err
	}
	pw, err := conn.password(ctx)
	if err != nil {
		return nil, err
	}
	m := conn
	m.Database = r.maintenanceDB()
	return connect(ctx, m, pw)
}

func closeConn(db *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = db.Close(ctx)
}

// stmtError classifies a failed database-level statement; what is a sentence fragment ("create
// database x").
func stmtError(ctx context.Context, err error, what string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, errors.Join(ctx.Err(), err))
	}
	switch sqlState(err) {
	case sqlInsufficientPriv:
		return backup.Wrap(backup.CodeInvalidState, err, "the backup service's role may not %s", what)
	case sqlDuplicateDatabase, sqlInvalidCatalogName:
		var pgErr *pgconn.PgError
		errors.As(err, &pgErr)
		return backup.Wrap(backup.CodeInvalidState, err, "could not %s: %s", what, pgErr.Message)
	case sqlObjectInUse:
		return backup.Wrap(backup.CodeTransient, err, "could not %s: other sessions still use the database", what)
	}
	return backup.Wrap(backup.CodeTransient, err, "could not %s", what)
}

// dbInfo is what a new database copies from the current one.
type dbInfo struct {
	oid                      uint32
	owner                    string
	encoding, collate, ctype string
	settings                 []string // "name=value" of pg_db_role_setting for the database, all roles
	grants                   []grant
	hasACL                   bool
}

type grant struct {
	grantee   string // "" is PUBLIC
	privilege string // CREATE, TEMPORARY, CONNECT
	option    bool
}

func readDBInfo(ctx context.Context, db *pgx.Conn, name string) (dbInfo, bool, error) {
	var info dbInfo
	err := db.QueryRow(ctx, `SELECT d.oid, r.rolname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
			d.datacl IS NOT NULL,
			coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}')
		FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = $1`, name).
		Scan(&info.oid, &info.owner, &info.encoding, &info.collate, &info.ctype, &info.hasACL, &info.settings)
	if errors.Is(err, pgx.ErrNoRows) {
		return info, false, nil
	}
	if err != nil {
		return info, false, stmtError(ctx, err, fmt.Sprintf("read the settings of database %q", name))
	}
	rows, err := db.Query(ctx, `SELECT coalesce(r.rolname, ''), a.privilege_type, a.is_grantable
		FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
		WHERE d.datname = $1 ORDER BY 1, 2`, name)
	if err == nil {
		info.grants, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (grant, error) {
			var g grant
			return g, row.Scan(&g.grantee, &g.privilege, &g.option)
		})
	}
	if err != nil {
		return info, false, stmtError(ctx, err, fmt.Sprintf("read the privileges on database %q", name))
	}
	return info, true, nil
}

// CreateStaging creates database staging (<conn.Database>_restore_<hex>) owned by the owner of
// conn.Database, from template0 with its encoding, collation and ctype, its database-level settings
// (ALTER DATABASE ... SET) and its privileges. When staging exists already with that owner, the
// settings and privileges are applied again and nil is returned (its contents are not checked: drop
// it before restoring again after a failed Restore); another owner is an error.
// ICU locales (PostgreSQL 15 and later) are not copied.
func (r *Restorer) CreateStaging(ctx context.Context, conn Conn, staging string) error {
	if err := checkStaging(conn, staging); err != nil {
		return err
	}
	db, err := r.admin(ctx, conn)
	if err != nil {
		return err
	}
	defer closeConn(db)
	cur, ok, err := readDBInfo(ctx, db, conn.Database)
	if err != nil {
		return err
	}
	if !ok {
		return backup.Errorf(backup.CodeInvalidState, "database %q does not exist, so no restore database can be made like it", conn.Database)
	}
	existing, exists, err := readDBInfo(ctx, db, staging)
	switch {
	case err != nil:
		return err
	case exists && existing.owner != cur.owner:
		return backup.Errorf(backup.CodeInvalidState, "the restore database %q exists already, owned by %q instead of %q",
			staging, existing.owner, cur.owner)
	case !exists:
		sql := fmt.Sprintf("CREATE DATABASE %s OWNER %s TEMPLATE template0 ENCODING %s LC_COLLATE %s LC_CTYPE %s",
			ident(staging), ident(cur.owner), literal(cur.encoding), literal(cur.collate), literal(cur.ctype))
		if _, err := db.Exec(ctx, sql); err != nil && sqlState(err) != sqlDuplicateDatabase {
			return stmtError(ctx, err, fmt.Sprintf("create database %q", staging))
		}
	}
	stmts := []string{"ALTER DATABASE " + ident(staging) + " RESET ALL"}
	for _, s := range cur.settings {
		stmt, err := alterDatabaseSet(staging, s)
		if err != nil {
			return err
		}
		stmts = append(stmts, stmt)
	}
	if cur.hasACL {
		stmts = append(stmts, fmt.Sprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC, %s", ident(staging), ident(cur.owner)))
		for _, g := range cur.grants {
			stmt := fmt.Sprintf("GRANT %s ON DATABASE %s TO %s", g.privilege, ident(staging), granteeSQL(g.grantee))
			if g.option {
				stmt += " WITH GRANT OPTION"
			}
			stmts = append(stmts, stmt)
		}
	}
	for _, stmt := range stmts {
		if _, err := db.Exec(ctx, stmt); err != nil {
			return stmtError(ctx, fmt.Errorf("%s: %w", stmt, err), fmt.Sprintf("copy the settings and privileges of database %q to %q", conn.Database, staging))
		}
	}
	r.Logger.Info().Str("database", conn.Database).Str("staging", staging).Str("owner", cur.owner).
		Int("settings", len(cur.settings)).Int("grants", len(cur.grants)).Bool("existed", exists).Msg("restore database ready")
	return nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// literal quotes s as an escape string literal, right whatever standard_conforming_strings is.
func literal(s string) string {
	return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func granteeSQL(role string) string {
	if role == "" {
		return "PUBLIC"
	}
	return ident(role)
}

// listQuoteGUCs are the settings whose stored value is a list of quoted elements (GUC_LIST_QUOTE, as
// pg_dump's variable_is_guc_list_quote knows them): each element is one literal in ALTER ... SET.
var listQuoteGUCs = map[string]bool{"local_preload_libraries": true, "search_path": true,
	"session_preload_libraries": true, "shared_preload_libraries": true, "temp_tablespaces": true,
	"unix_socket_directories": true}

// alterDatabaseSet turns one "name=value" of pg_db_role_setting into ALTER DATABASE db SET.
func alterDatabaseSet(db, setting string) (string, error) {
	name, value, ok := strings.Cut(setting, "=")
	if !ok || name == "" {
		return "", backup.Errorf(backup.CodeInternal, "the database setting %q has no name=value form", setting)
	}
	var values []string
	if listQuoteGUCs[strings.ToLower(name)] {
		elems, err := splitGUCList(value)
		if err != nil {
			return "", backup.Wrap(backup.CodeInternal, err, "the database setting %s cannot be copied", name)
		}
		for _, e := range elems {
			values = append(values, literal(e))
		}
		if len(values) == 0 {
			values = []string{"''"}
		}
	} else {
		values = []string{literal(value)}
	}
	return fmt.Sprintf("ALTER DATABASE %s SET %s = %s", ident(db), ident(name), strings.Join(values, ", ")), nil
}

// splitGUCList splits a list setting as PostgreSQL's SplitGUCList does: elements separated by commas
// and white space, each perhaps double-quoted with "" for a quote.
func splitGUCList(s string) ([]string, error) {
	var out []string
	rest := strings.TrimLeft(s, " \t\n\r")
	for rest != "" {
		var elem string
		if rest[0] == '"' {
			var b strings.Builder
			i := 1
			for {
				if i >= len(rest) {
					return nil, fmt.Errorf("unterminated quote in %q", s)
				}
				if rest[i] == '"' {
					if i+1 < len(rest) && rest[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					break
				}
				b.WriteByte(rest[i])
				i++
			}
			elem, rest = b.String(), rest[i+1:]
		} else {
			end := strings.IndexAny(rest, ", \t\n\r")
			if end < 0 {
				end = len(rest)
			}
			elem, rest = rest[:end], rest[end:]
		}
		out = append(out, elem)
		rest = strings.TrimLeft(rest, " \t\n\r")
		if rest == "" {
			break
		}
		if rest[0] != ',' {
			return nil, fmt.Errorf("missing comma in %q", s)
		}
		rest = strings.TrimLeft(rest[1:], " \t\n\r")
	}
	return out, nil
}

// pgRestoreArgs are pg_restore's arguments before --role and --dbname: objects are created by the
// role given with --role (no ALTER OWNER, no GRANT from the archive), and the first error stops it.
// --verbose makes it say which TOC entry failed; restoreMessages drops its progress lines.
var pgRestoreArgs = []string{"--no-owner", "--no-privileges", "--exit-on-error", "--no-password", "--verbose"}

// Restore runs pg_restore into database staging (<conn.Database>_restore_<hex>, made by
// CreateStaging), reading the custom-format dump from dump, with --role set to staging's owner so
// every object belongs to it. The pg_restore is the one for the server's major version and the dump's
// archive version (Clients.ForRestore); when none fits, nothing is started and the error, with
// ErrNoClient in its chain, says which PostgreSQL's client programs are missing. It returns after pg_restore has exited and the last Read of dump has
// returned. The end of ctx kills pg_restore. On error the staging database is left as it is, for the
// caller to drop.
//
// Errors are *backup.Error: CodeInvalidState for a corrupt or truncated dump and for an object that
// fails to restore (the message names it), CodeTransient for connection trouble; a failed Read of dump
// is returned in the chain (its own *backup.Error if it has one).
func (r *Restorer) Restore(ctx context.Context, conn Conn, staging string, dump io.Reader) (RestoreResult, error) {
	if err := checkStaging(conn, staging); err != nil {
		return RestoreResult{}, err
	}
	db, err := r.admin(ctx, conn)
	if err != nil {
		return RestoreResult{}, err
	}
	var owner, serverVersion string
	var serverNum int
	err = db.QueryRow(ctx, `SELECT r.rolname, current_setting('server_version_num')::int, current_setting('server_version')
		FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = $1`, staging).Scan(&owner, &serverNum, &serverVersion)
	closeConn(db)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return RestoreResult{}, backup.Errorf(backup.CodeInvalidState, "the restore database %q does not exist", staging)
	case err != nil:
		return RestoreResult{}, stmtError(ctx, err, fmt.Sprintf("read the owner of database %q", staging))
	}
	clients, err := r.tools.clients(ctx, r.Clients, r.BinDir)
	if err != nil {
		return RestoreResult{}, err
	}
	// The dump's header says which pg_restore reads it. A failed Read is not an error yet: the reader
	// keeps it, and pg_restore's copy meets it (run tells a broken stream from a failing pg_restore).
	br := bufio.NewReaderSize(dump, 64<<10)
	head, _ := br.Peek(archiveHeaderLen)
	archive := archiveOf(head)
	client, err := clients.ForRestore(serverMajor(serverNum), archive)
	if err != nil {
		return RestoreResult{}, noFit(err, "restore into %s, which runs PostgreSQL %s, of a dump of archive version %q; pg_restore is configured for %s",
			conn, serverVersion, archive, clients)
	}
	pgRestoreVersion, err := r.tools.version(ctx, client)
	if err != nil {
		return RestoreResult{}, err
	}
	bin := client.pgRestore()
	pw, err := conn.password(ctx)
	if err != nil {
		return RestoreResult{}, err
	}
	target := conn
	target.Database = staging
	p := &pgRestore{log: r.Logger.With().Str("database", staging).Str("host", conn.Host).Str("server_version", serverVersion).
		Str("archive_version", archive).Str("pg_restore", pgRestoreVersion).Logger(), conn: target}
	args := append(append([]string{}, pgRestoreArgs...), "--role="+owner, "--dbname="+target.conninfo())
	if err := p.start(bin, args, pw); err != nil {
		return RestoreResult{}, err
	}
	if r.hookStarted != nil {
		r.hookStarted(p.cmd.Process.Pid)
	}
	return p.run(ctx, br)
}

// pgRestore is one running pg_restore.
type pgRestore struct {
	log     zerolog.Logger
	conn    Conn
	cmd     *exec.Cmd
	stdin   *os.File
	stderr  *tailBuffer
	started time.Time
	exited  chan struct{}
	exitErr error
	killed  sync.Once
}

func (p *pgRestore) start(bin string, args []string, pw string) error {
	rd, w, err := os.Pipe()
	if err != nil {
		return backup.Wrap(backup.CodeTransient, fmt.Errorf("create a pipe for pg_restore: %w", err), "the backup service could not start pg_restore")
	}
	cmd, stderr := toolCommand(bin, args, pw)
	cmd.Stdin = rd
	p.stderr = stderr
	if err := cmd.Start(); err != nil {
		rd.Close()
		w.Close()
		return backup.Wrap(backup.CodeInternal, fmt.Errorf("start %s: %w", bin, err), "the backup service could not start pg_restore")
	}
	rd.Close() // pg_restore holds the read end now
	p.cmd, p.stdin, p.started, p.exited = cmd, w, time.Now(), make(chan struct{})
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	return nil
}

// kill ends pg_restore's process group; it has not been reaped when exited is open, so the pid is
// still its own.
func (p *pgRestore) kill() {
	p.killed.Do(func() {
		select {
		case <-p.exited:
		default:
			if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				p.log.Warn().Err(err).Int("pid", p.cmd.Process.Pid).Msg("could not kill pg_restore")
			}
		}
	})
}

// readError marks a failed Read of the dump, as opposed to a failed write to pg_restore.
type readError struct{ err error }

func (e *readError) Error() string { return "read the dump: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

type markedReader struct{ r io.Reader }

func (m markedReader) Read(b []byte) (int, error) {
	n, err := m.r.Read(b)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &readError{err}
	}
	return n, err
}

// run feeds dump to pg_restore and waits for both.
func (p *pgRestore) run(ctx context.Context, dump io.Reader) (RestoreResult, error) {
	var n int64
	var copyErr error
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		n, copyErr = io.Copy(p.stdin, markedReader{dump})
		p.stdin.Close() // EOF for pg_restore
		var re *readError
		if errors.As(copyErr, &re) {
			p.kill() // a truncated stream must not look like a complete one
		}
	}()
	select {
	case <-p.exited:
	case <-ctx.Done():
		p.kill()
		<-p.exited
	}
	p.stdin.Close() // a Write blocked on the pipe fails now that pg_restore is gone
	<-copied
	res := RestoreResult{Bytes: n, Duration: time.Since(p.started), Messages: restoreMessages(p.stderr.String())}
	log := p.log.With().Int64("bytes", n).Dur("duration", res.Duration).Logger()
	var re *readError
	switch {
	case p.exitErr == nil && copyErr == nil:
	case ctx.Err() != nil:
		log.Info().Err(ctx.Err()).Msg("pg_restore aborted")
		return res, fmt.Errorf("pg_restore into %s: %w", p.conn, ctx.Err())
	case errors.As(copyErr, &re):
		log.Warn().Err(copyErr).Msg("pg_restore stopped: the dump could not be read")
		var be *backup.Error
		if errors.As(re.err, &be) {
			return res, fmt.Errorf("pg_restore into %s: %w", p.conn, re.err)
		}
		return res, backup.Wrap(backup.CodeTransient, fmt.Errorf("pg_restore into %s: %w", p.conn, copyErr),
			"the restore could not read the snapshot's database dump")
	case p.exitErr != nil:
		err := classifyRestoreFailure(p.conn, p.exitErr, res.Messages)
		log.Warn().Err(err).Msg("pg_restore failed")
		return res, err
	}
	if res.Messages != "" {
		log.Warn().Str("stderr", res.Messages).Msg("pg_restore succeeded with messages")
	}
	log.Info().Msg("pg_restore finished")
	return res, nil
}

// restoreFailures are checked in order before the failing object; connection trouble comes first,
// since pg_restore names the object it was restoring when the connection broke.
var restoreFailures = []stderrPattern{
	{[][]string{{"server closed the connection unexpectedly"}, {"terminating connection"}, {"connection to server"},
		{"could not connect to server"}, {"timeout expired"}, {"Connection refused"}, {"no connection to the server"},
		{"SSL SYSCALL error"}, {"could not send data to server"}, {"could not receive data from server"}},
		backup.CodeTransient, "the connection to the database server broke during the restore; a retry may succeed"},
	{[][]string{{"password authentication failed"}, {"no pg_hba.conf entry"}, {"authentication failed"}},
		backup.CodeInvalidState, "the database server refused the backup service's login (its role or access token); a retry will not help until its access is fixed"},
	{[][]string{{"certificate verify failed"}, {"server certificate for"}, {"root certificate file"}},
		backup.CodeInvalidState, "the backup service could not verify the TLS certificate of the app's database server"},
	{[][]string{{"did not find magic string"}, {"not appear to be a valid archive"}, {"unsupported version"},
		{"could not read input file"}, {"unexpected end of file"}, {"could not uncompress"}, {"input file is too short"},
		{"could not find block ID"}, {"found unexpected block ID"}, {"bad dumpId"}, {"bad table dumpId"},
		{"unrecognized data block type"}, {"could not read from input file"}},
		backup.CodeInvalidState, "the snapshot's database dump is corrupt or incomplete; it cannot be restored"},
}

// tocEntry matches pg_restore's "from TOC entry 215; 1259 16390 TABLE shop$order app": the object's
// kind and name, then its owner.
var tocEntry = regexp.MustCompile(`from TOC entry \d+; \d+ \d+ ([^\n]+) \S+\n`)

// classifyRestoreFailure turns pg_restore's failure into a *backup.Error; the cause carries stderr.
func classifyRestoreFailure(c Conn, exitErr error, stderr string) error {
	cause := fmt.Errorf("pg_restore into %s: %w: %s", c, exitErr, stderr)
	for _, p := range restoreFailures {
		if p.matches(stderr) {
			return backup.Wrap(p.code, cause, "%s", p.msg)
		}
	}
	if m := tocEntry.FindStringSubmatch(stderr + "\n"); m != nil {
		return backup.Wrap(backup.CodeInvalidState, cause,
			"the database dump could not be restored: PostgreSQL refused %s; the restore database was left unfinished", objectName(m[1]))
	}
	if strings.Contains(stderr, "permission denied") {
		return backup.Wrap(backup.CodeInvalidState, cause, "the backup service's role lacks a privilege the restore needs")
	}
	return backup.Wrap(backup.CodeTransient, cause, "the restore of the database dump failed for a reason that may be temporary")
}

// restoreMessages is pg_restore's stderr without the progress lines of --verbose: the errors,
// warnings, their details and the TOC entry that failed.
func restoreMessages(stderr string) string {
	var kept []string
	for _, line := range strings.Split(stderr, "\n") {
		rest, ok := strings.CutPrefix(line, "pg_restore: ")
		if !ok || strings.HasPrefix(rest, "error:") || strings.HasPrefix(rest, "warning:") || strings.HasPrefix(rest, "detail:") ||
			strings.HasPrefix(rest, "hint:") || strings.HasPrefix(rest, "from TOC entry ") {
			kept = append(kept, line)
		}
	}
	return strings.TrimSpace(strings.Join(kept, "\n"))
}

// objectName is a TOC entry's description for users, printable and bounded.
func objectName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return strings.TrimSpace(s)
}

// Databases reports for each of names whether a database of that name exists on conn's server.
func (r *Restorer) Databases(ctx context.Context, conn Conn, names ...string) (map[string]bool, error) {
	db, err := r.admin(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer closeConn(db)
	return databases(ctx, db, names)
}

func databases(ctx context.Context, db *pgx.Conn, names []string) (map[string]bool, error) {
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = false
	}
	rows, err := db.Query(ctx, "SELECT datname FROM pg_database WHERE datname = ANY($1)", names)
	if err == nil {
		var found []string
		found, err = pgx.CollectRows(rows, pgx.RowTo[string])
		for _, n := range found {
			out[n] = true
		}
	}
	if err != nil {
		return nil, stmtError(ctx, err, "list the databases")
	}
	return out, nil
}

// Swap puts the restored database in place in one transaction: current is renamed to previous and
// staging to current, after the other sessions on both are terminated (the environment must be
// stopped). When current and previous exist and staging does not, the swap was done and Swap returns
// nil; any state but that and "current and staging exist, previous does not" is an error.
func (r *Restorer) Swap(ctx context.Context, conn Conn, current, staging, previous string) error {
	return r.rotate(ctx, conn, current, staging, previous, "swap in the restored database")
}

// SwapBack undoes Swap: current (the restored database) is renamed to aside (the staging name, say)
// and previous back to current, in one transaction, with the same state checks as Swap.
func (r *Restorer) SwapBack(ctx context.Context, conn Conn, current, previous, aside string) error {
	return r.rotate(ctx, conn, current, previous, aside, "swap the previous database back")
}

// defaultSwapAttempts bounds the tries when a session stays connected (each rename waits 5 s for it).
const defaultSwapAttempts = 3

func (r *Restorer) maxSwapAttempts() int {
	if r.swapAttempts <= 0 {
		return defaultSwapAttempts
	}
	return r.swapAttempts
}

// rotate renames current to out and in to current, in one transaction.
func (r *Restorer) rotate(ctx context.Context, conn Conn, current, in, out, what string) error {
	for _, n := range []string{current, in, out} {
		if n == "" || len(n) > maxIdentifier {
			return backup.Errorf(backup.CodeInternal, "cannot %s: database name %q is empty or longer than %d bytes", what, n, maxIdentifier)
		}
	}
	if current == in || current == out || in == out {
		return backup.Errorf(backup.CodeInternal, "cannot %s: the names %q, %q and %q are not distinct", what, current, in, out)
	}
	if current == r.maintenanceDB() || in == r.maintenanceDB() || out == r.maintenanceDB() {
		return backup.Errorf(backup.CodeInternal, "cannot %s: the maintenance database %q cannot take part", what, r.maintenanceDB())
	}
	db, err := r.admin(ctx, conn)
	if err != nil {
		return err
	}
	defer closeConn(db)
	log := r.Logger.With().Str("current", current).Str("in", in).Str("out", out).Logger()
	for attempt := 1; ; attempt++ {
		state, err := databases(ctx, db, []string{current, in, out})
		if err != nil {
			return err
		}
		switch {
		case state[current] && state[out] && !state[in]:
			log.Info().Msg("databases already swapped")
			return nil
		case !(state[current] && state[in] && !state[out]):
			return backup.Errorf(backup.CodeInvalidState,
				"cannot %s: want databases %q and %q and no %q, but %s", what, current, in, out, describeState(state, current, in, out))
		}
		// Only sessions this role may end: a superuser's (a provider's monitoring, say) makes the rename
		// fail instead of this statement.
		if _, err := db.Exec(ctx, `SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
			WHERE a.datname = ANY($1) AND a.pid <> pg_backend_pid() AND NOT r.rolsuper
				AND (pg_has_role(r.oid, 'MEMBER') OR pg_has_role('pg_signal_backend', 'MEMBER'))`, []string{current, in}); err != nil {
			return stmtError(ctx, err, fmt.Sprintf("end the sessions on databases %q and %q", current, in))
		}
		err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			for _, stmt := range []string{
				fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", ident(current), ident(out)),
				fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", ident(in), ident(current)),
			} {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", stmt, err)
				}
			}
			return nil
		})
		if err == nil {
			log.Info().Int("attempt", attempt).Msg("databases swapped")
			return nil
		}
		if sqlState(err) != sqlObjectInUse || attempt >= r.maxSwapAttempts() || ctx.Err() != nil {
			return stmtError(ctx, err, what)
		}
		log.Info().Err(err).Int("attempt", attempt).Msg("a session reconnected before the rename; trying again")
	}
}

func describeState(state map[string]bool, names ...string) string {
	var parts []string
	for _, n := range names {
		if state[n] {
			parts = append(parts, fmt.Sprintf("%q exists", n))
		} else {
			parts = append(parts, fmt.Sprintf("%q does not", n))
		}
	}
	return strings.Join(parts, ", ")
}

// DropDatabase drops database name if it exists, ending its sessions (WITH (FORCE), PostgreSQL 13 and
// later). It refuses conn.Database, the environment's live database, and the maintenance database.
func (r *Restorer) DropDatabase(ctx context.Context, conn Conn, name string) error {
	if name == "" || name == conn.Database || name == r.maintenanceDB() {
		return backup.Errorf(backup.CodeInternal, "refusing to drop database %q: it is the environment's or the maintenance database", name)
	}
	db, err := r.admin(ctx, conn)
	if err != nil {
		return err
	}
	defer closeConn(db)
	if _, err := db.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
		return stmtError(ctx, err, fmt.Sprintf("drop database %q", name))
	}
	r.Logger.Info().Str("dropped", name).Msg("database dropped")
	return nil
}
