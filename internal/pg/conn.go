// Package pg is the PostgreSQL adapter of backups: it takes a consistent dump of an environment's
// database as a stream, together with the facts the archive needs from that same moment (the database
// size and the list of file documents). It owns the connection settings for environments' databases
// (Conn), the snapshot transaction, and the pg_dump child process; it writes nothing to the database.
//
// Contract, in short (details on each identifier):
//   - Dumper.Start picks pg_dump by the server's major version among the configured Clients
//     (clients.go: 15 for servers up to 15, 17 for 16 and 17), exports a REPEATABLE READ snapshot, reads
//     the size and the file list in it, and starts `pg_dump -Fc -Z0 -O -x --snapshot=<id>` (pgDumpArgs)
//     against it; the dump and the list describe the same moment.
//   - pgx and pg_dump get the same conninfo (conninfo): sslmode (default verify-full) and sslrootcert
//     travel in it, and a host off Conn.AllowedHosts is refused before any password or token is fetched.
//   - Every error is a *backup.Error: backup.CodeTransient when a retry may succeed (connection trouble, a
//     table lock held by the app), backup.CodeInvalidState when the environment's database cannot be dumped
//     as configured (login refused, database missing, permission denied, a server newer than every
//     configured pg_dump, host not allowed, certificate not verified), and backup.CodeInternal when this
//     service is misconfigured (a configured pg_dump missing, or not the version configured).
//     Cancellation keeps context.Canceled in the chain. Message is a sentence for users; the detail
//     (pg_dump's stderr, the connection) is only in the cause, for the log.
//   - Nothing leaks: Dump.Wait or Dump.Abort (or the end of Start's context) ends pg_dump and the snapshot
//     transaction.
package pg

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	// verify-full.
	SSLMode string
	// SSLRootCert is the PEM file of the CAs that verify the server's certificate; verify-ca and
	// verify-full need it, since pg_dump 15 (libpq 15) cannot use the system store (sslrootcert=system
	// came in libpq 16) and would look for ~/.postgresql/root.crt. pgx reads the same file. With require,
	// a root file makes libpq and pgx verify the chain, as verify-ca does.
	SSLRootCert string
	// AllowedHosts, unless zero, lists the servers this Conn may reach; Dumper.Start refuses any other
	// Host before it asks for a password or token.
	AllowedHosts backup.HostAllowList
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
// usable is the check before any connection: ctx still open, settings valid, host allowed.
func (c Conn) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return backup.Wrap(backup.CodeInternal, fmt.Errorf("connection settings for database %s: %w", c, err),
			"the backup service's settings for the app's database are invalid")
	}
	return c.checkHost()
}

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
	case !sslModes[c.sslMode()]:
		return fmt.Errorf("sslmode %q is not one of disable, allow, prefer, require, verify-ca, verify-full", c.SSLMode)
	case strings.HasPrefix(c.sslMode(), "verify-") && c.SSLRootCert == "":
		return fmt.Errorf("sslmode %s needs a CA bundle file (SSLRootCert): pg_dump 15 cannot use the system store", c.sslMode())
	}
	for _, v := range []string{c.Host, c.Database, c.User, c.Password, c.SSLRootCert} {
		if strings.ContainsRune(v, 0) {
			return errors.New("connection settings contain a NUL byte")
		}
	}
	return nil
}

func (c Conn) sslMode() string {
	if c.SSLMode == "" {
		return "verify-full"
	}
	return c.SSLMode
}

// checkHost refuses a Host off AllowedHosts, so that a forged environment cannot make the service
// send its token to another server.
func (c Conn) checkHost() error {
	if c.AllowedHosts.IsZero() || c.AllowedHosts.Allows(c.Host) {
		return nil
	}
	return backup.Wrap(backup.CodeInvalidState,
		fmt.Errorf("host %q of %s is not on the allowed database hosts %s", c.Host, c, c.AllowedHosts),
		"the backup service may not connect to the database server this environment names")
}

// conninfo is the libpq keyword/value string for c, the same for pgx and pg_dump, without the password
// (which travels in PGPASSWORD for pg_dump and in the config struct for pgx). Every value is quoted, so
// user input cannot add keywords. sslrootcert is left out with sslmode disable, where pgx would still
// read the file.
func (c Conn) conninfo() string {
	kv := []struct{ k, v string }{
		{"host", c.Host},
		{"port", strconv.Itoa(c.port())},
		{"dbname", c.Database},
		{"user", c.User},
		{"sslmode", c.sslMode()},
		{"application_name", ApplicationName},
		{"connect_timeout", strconv.Itoa(int(connectTimeout / time.Second))},
	}
	if c.SSLRootCert != "" && c.sslMode() != "disable" {
		kv = append(kv, struct{ k, v string }{"sslrootcert", c.SSLRootCert})
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
	var be *backup.Error
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return "", fmt.Errorf("get the password for %s: %w", c, err)
	case errors.As(err, &be):
		return "", err // already classified, e.g. a refused host
	default:
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
	if err != nil { // an unreadable sslrootcert, say
		return nil, backup.Wrap(backup.CodeInternal, fmt.Errorf("connection settings for database %s: %w", c, err),
			"the backup service's settings for the app's database are invalid")
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
	sqlUndefinedTable       = "42P01"
	sqlUndefinedColumn      = "42703"
	sqlLockNotAvailable     = "55P03"
	sqlQueryCanceled        = "57014" // statement_timeout, as pg_dump's --lock-wait-timeout uses it
)

// classifyConnectError turns a failed connection to c into a *backup.Error (or keeps a cancellation).
func classifyConnectError(ctx context.Context, c Conn, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("connect to database %s: %w", c, errors.Join(ctx.Err(), err))
	}
	if tlsVerifyFailed(err) {
		return backup.Wrap(backup.CodeInvalidState, fmt.Errorf("connect to database %s: %w", c, err),
			"the backup service could not verify the TLS certificate of the app's database server")
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

// tlsVerifyFailed reports whether err says the server's certificate did not verify: a retry will not
// help until the CA bundle or the server's certificate changes.
func tlsVerifyFailed(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &authority) || errors.As(err, &hostname) || errors.As(err, &invalid)
}
