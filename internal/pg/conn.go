// Package pg is the PostgreSQL adapter of backups: it takes a consistent dump of an environment's
// database as a stream, together with the facts the archive needs from that same moment (the database
// size and the list of file documents). It owns the connection settings for environments' databases
// (Conn), the snapshot transaction, and the pg_dump child process; it writes nothing to the database.
//
// Contract, in short (details on each identifier):
//   - Dumper.Start exports a REPEATABLE READ snapshot, reads the size and the file list in it, and starts
//     `pg_dump -Fc -Z0 -O -x --snapshot=<id>` (pgDumpArgs) against it; the dump and the list describe the same
//     moment.
//   - Every error is a *backup.Error: backup.CodeTransient when a retry may succeed (connection trouble, a
//     table lock held by the app), backup.CodeInvalidState when the environment's database cannot be dumped
//     as configured (login refused, database missing, permission denied, server newer than pg_dump), and
//     backup.CodeInternal when this service is misconfigured (no pg_dump 12 to 15). Cancellation keeps
//     context.Canceled in the chain.
//   - Nothing leaks: Dump.Wait or Dump.Abort (or the end of Start's context) ends pg_dump and the snapshot
//     transaction.
package pg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mxazure/backups/internal/backup"
)

const (
	// ApplicationName is the application_name of every session this package opens, so that operators
	// can tell backup sessions apart in pg_stat_activity.
	ApplicationName = "mendix-backups"
	defaultPort     = 5432
	connectTimeout  = 30 * time.Second
)

// PasswordFunc returns the password to log in with. In Azure it returns an Entra access token for the
// service's managed identity; locally it returns a configured password. It is called once per Start,
// right before connecting, so a token is always fresh.
type PasswordFunc func(ctx context.Context) (string, error)

// Conn says how to reach one environment's database. Its String form never shows the password.
type Conn struct {
	Host     string // one host name or address (no lists)
	Port     int    // default 5432
	Database string
	User     string
	Password string // may be empty: trust authentication, or PasswordFunc
	// PasswordFunc, when set, supplies the password instead of Password.
	PasswordFunc PasswordFunc
	// SSLMode is libpq's sslmode (disable, allow, prefer, require, verify-ca, verify-full); empty means
	// prefer. pg_dump 15 resolves verify-ca/verify-full roots from ~/.postgresql/root.crt, not the system
	// store.
	SSLMode string
}

// String describes c without its password: user@host:port/database.
func (c Conn) String() string {
	return fmt.Sprintf("%s@%s/%s", c.User, net.JoinHostPort(c.Host, strconv.Itoa(c.port())), c.Database)
}

func (c Conn) port() int {
	if c.Port == 0 {
		return defaultPort
	}
	return c.Port
}

var sslModes = map[string]bool{"disable": true, "allow": true, "prefer": true, "require": true,
	"verify-ca": true, "verify-full": true}

// validate reports the first field that cannot be used.
func (c Conn) validate() error {
	switch {
	case c.Host == "":
		return errors.New("host is empty")
	case strings.ContainsAny(c.Host, ", \t\n"):
		return fmt.Errorf("host %q is not a single host name", c.Host)
	case c.Port < 0 || c.Port > 65535:
		return fmt.Errorf("port %d is out of range", c.Port)
	case c.Database == "":
		return errors.New("database name is empty")
	case c.User == "":
		return errors.New("user is empty")
	case c.SSLMode != "" && !sslModes[c.SSLMode]:
		return fmt.Errorf("sslmode %q is not one of disable, allow, prefer, require, verify-ca, verify-full", c.SSLMode)
	}
	for _, v := range []string{c.Host, c.Database, c.User, c.Password} {
		if strings.ContainsRune(v, 0) {
			return errors.New("connection settings contain a NUL byte")
		}
	}
	return nil
}

// conninfo is the libpq keyword/value string for c, without the password (which travels in PGPASSWORD
// for pg_dump and in the config struct for pgx). Every value is quoted, so user input cannot add keywords.
func (c Conn) conninfo() string {
	sslmode := c.SSLMode
	if sslmode == "" {
		sslmode = "prefer"
	}
	kv := []struct{ k, v string }{
		{"host", c.Host},
		{"port", strconv.Itoa(c.port())},
		{"dbname", c.Database},
		{"user", c.User},
		{"sslmode", sslmode},
		{"application_name", ApplicationName},
		{"connect_timeout", strconv.Itoa(int(connectTimeout / time.Second))},
	}
	var b strings.Builder
	for i, p := range kv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(quoteConninfo(p.v))
	}
	return b.String()
}

// quoteConninfo quotes a conninfo value: single quotes around it, backslash before ' and \.
func quoteConninfo(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}

// password returns the password to use: PasswordFunc's when set, else Password.
func (c Conn) password(ctx context.Context) (string, error) {
	if c.PasswordFunc == nil {
		return c.Password, nil
	}
	pw, err := c.PasswordFunc(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("get the password for %s: %w", c, err)
		}
		return "", backup.Wrap(backup.CodeTransient, err, "could not get a password or access token for database %s", c)
	}
	if strings.ContainsRune(pw, 0) {
		return "", backup.Errorf(backup.CodeInternal, "the password for database %s contains a NUL byte", c)
	}
	return pw, nil
}

// connect opens a pgx connection to c with password pw.
func connect(ctx context.Context, c Conn, pw string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.conninfo())
	if err != nil {
		return nil, backup.Wrap(backup.CodeInternal, err, "connection settings for database %s", c)
	}
	cfg.Password = pw
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classifyConnectError(ctx, c, err)
	}
	return conn, nil
}

// SQLSTATE codes this package tells apart.
const (
	sqlInvalidPassword      = "28P01"
	sqlInvalidAuthorization = "28000"
	sqlInvalidCatalogName   = "3D000" // database does not exist
	sqlInsufficientPriv     = "42501"
	sqlUndefinedColumn      = "42703"
	sqlLockNotAvailable     = "55P03"
	sqlQueryCanceled        = "57014" // statement_timeout, as pg_dump's --lock-wait-timeout uses it
)

// classifyConnectError turns a failed connection to c into a *backup.Error (or keeps a cancellation).
func classifyConnectError(ctx context.Context, c Conn, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("connect to database %s: %w", c, errors.Join(ctx.Err(), err))
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlInvalidPassword, sqlInvalidAuthorization:
			return backup.Wrap(backup.CodeInvalidState, err,
				"database %s refused the login of role %q (wrong password or token, or no pg_hba.conf entry); a retry will not help until the credentials are fixed",
				c.Database, c.User)
		case sqlInvalidCatalogName:
			return backup.Wrap(backup.CodeInvalidState, err, "database %q does not exist on server %s",
				c.Database, net.JoinHostPort(c.Host, strconv.Itoa(c.port())))
		case sqlInsufficientPriv:
			return backup.Wrap(backup.CodeInvalidState, err, "role %q may not connect to database %q", c.User, c.Database)
		}
	}
	return backup.Wrap(backup.CodeTransient, err, "could not connect to database %s", c)
}
