package pg

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mxazure/backups/internal/backup"
)

// sqlState is the SQLSTATE of err, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// stderrPattern maps text in pg_dump's stderr (LC_MESSAGES=C) to a classified error.
type stderrPattern struct {
	anyOf [][]string // matches when stderr contains every string of one of these groups
	code  backup.Code
	msg   string // the sentence users see; never any of stderr
}

// dumpFailures are checked in order, after the lock timeout. Failures not listed are transient: a
// dump that broke for an unknown reason (a killed server session, a failover, a signal) may well
// succeed when retried, and the job bounds its retries.
var dumpFailures = []stderrPattern{
	{[][]string{{"password authentication failed"}, {"no pg_hba.conf entry"}, {"authentication failed"}},
		backup.CodeInvalidState, "the database server refused the backup service's login (its role or access token); a retry will not help until its access is fixed"},
	{[][]string{{`database "`, "does not exist"}},
		backup.CodeInvalidState, "the app's database does not exist on its server"},
	{[][]string{{"permission denied"}},
		backup.CodeInvalidState, "the backup service may not read every table and sequence of the app's database; its role needs SELECT on all of them"},
	{[][]string{{"server version mismatch"}},
		backup.CodeInvalidState, "the app's database server runs a newer PostgreSQL than the backup service's pg_dump; ask its operator to add that PostgreSQL's client tools (PG_BIN_DIRS)"},
	{[][]string{{"certificate verify failed"}, {"server certificate for"}, {"root certificate file"}, {"certificate present, but not private key"}},
		backup.CodeInvalidState, "the backup service could not verify the TLS certificate of the app's database server"},
}

func (p stderrPattern) matches(stderr string) bool {
	for _, group := range p.anyOf {
		all := true
		for _, s := range group {
			all = all && strings.Contains(stderr, s)
		}
		if all {
			return true
		}
	}
	return false
}

// classifyDumpFailure turns pg_dump's failure into a *backup.Error whose Message is a sentence for
// users and whose cause (Err, for the log) carries the connection and the end of pg_dump's stderr.
func classifyDumpFailure(c Conn, lockWait time.Duration, exitErr error, stderr string) error {
	cause := fmt.Errorf("pg_dump of %s: %w", c, exitErr)
	if stderr != "" {
		cause = fmt.Errorf("pg_dump of %s: %w: %s", c, exitErr, stderr)
	}
	if table, ok := lockTimeout(stderr); ok {
		return backup.Wrap(backup.CodeTransient, cause,
			"the database dump could not lock %s within %s: the app holds a conflicting lock; retry when the app is idle", table, lockWait)
	}
	for _, p := range dumpFailures {
		if p.matches(stderr) {
			return backup.Wrap(p.code, cause, "%s", p.msg)
		}
	}
	return backup.Wrap(backup.CodeTransient, cause, "the database dump failed for a reason that may be temporary")
}

// lockedTables matches the table list of pg_dump's LOCK TABLE statement: schema-qualified names, plain
// or double-quoted (no control characters), each perhaps after ONLY, separated by ", ".
var lockedTables = func() *regexp.Regexp {
	ident := `(?:[\pL_][\pL\pN_$]*|"(?:[^"\x00-\x1f]|"")+")`
	name := `(?:ONLY )?` + ident + `(?:\.` + ident + `)?`
	return regexp.MustCompile(`^` + name + `(?:, ` + name + `)*$`)
}()

// lockTimeout recognises pg_dump's failure to lock a table within --lock-wait-timeout: pg_dump sets
// statement_timeout before its LOCK TABLE statements, so the server cancels the one that waits too long
// and pg_dump prints it as "Query was: LOCK TABLE <table> IN ACCESS SHARE MODE". It returns the table
// for users ("table public.orders", "one of the tables public.a, public.b"), or "a table" when the text
// is not a list of table names (it is stderr: nothing else of it reaches users).
func lockTimeout(stderr string) (string, bool) {
	i := strings.Index(stderr, "LOCK TABLE ")
	if i < 0 || !(strings.Contains(stderr, "statement timeout") || strings.Contains(stderr, "lock timeout") ||
		strings.Contains(stderr, "canceling statement")) {
		return "", false
	}
	rest := stderr[i+len("LOCK TABLE "):]
	if end := strings.IndexByte(rest, '\n'); end >= 0 {
		rest = rest[:end]
	}
	rest = strings.TrimSuffix(strings.TrimSpace(rest), " IN ACCESS SHARE MODE")
	switch {
	case len(rest) > 200 || !lockedTables.MatchString(rest):
		return "a table", true
	case strings.Contains(rest, ", "):
		return "one of the tables " + strings.ReplaceAll(rest, "ONLY ", ""), true
	}
	return "table " + strings.TrimPrefix(rest, "ONLY "), true
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.buf, t.dropped = t.buf[:0], true
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = t.buf[:copy(t.buf, t.buf[over:])]
		t.dropped = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String is the kept text, trimmed; when the start was dropped it begins at a line start after "…".
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.buf)
	if t.dropped {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		s = "…" + strings.ToValidUTF8(s, "")
	}
	return strings.TrimSpace(s)
}
