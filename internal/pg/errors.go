package pg

import (
	"errors"
	"fmt"
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
	msg   string // user-facing message; %s is the connection (user@host:port/db)
}

// dumpFailures are checked in order, after the lock timeout. Failures not listed are transient: a
// dump that broke for an unknown reason (a killed server session, a failover, a signal) may well
// succeed when retried, and the job bounds its retries.
var dumpFailures = []stderrPattern{
	{[][]string{{"password authentication failed"}, {"no pg_hba.conf entry"}, {"authentication failed"}},
		backup.CodeInvalidState, "pg_dump could not log in to %s (wrong password or token, or no pg_hba.conf entry)"},
	{[][]string{{`database "`, "does not exist"}},
		backup.CodeInvalidState, "pg_dump: the database of %s does not exist"},
	{[][]string{{"permission denied"}},
		backup.CodeInvalidState, "pg_dump was refused access to an object in %s: the role needs SELECT on every table and sequence in schema public"},
	{[][]string{{"server version mismatch"}},
		backup.CodeInvalidState, "the server of %s is newer than this service's pg_dump"},
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

// classifyDumpFailure turns pg_dump's failure into a *backup.Error whose cause carries the end of its
// stderr.
func classifyDumpFailure(c Conn, lockWait time.Duration, exitErr error, stderr string) error {
	cause := fmt.Errorf("pg_dump: %w", exitErr)
	if stderr != "" {
		cause = fmt.Errorf("pg_dump: %w: %s", exitErr, stderr)
	}
	if table, ok := lockTimeout(stderr); ok {
		return backup.Wrap(backup.CodeTransient, cause,
			"pg_dump could not lock %s within %s: the app holds a conflicting lock; retry when the app is idle", table, lockWait)
	}
	for _, p := range dumpFailures {
		if p.matches(stderr) {
			return backup.Wrap(p.code, cause, p.msg, c)
		}
	}
	return backup.Wrap(backup.CodeTransient, cause, "pg_dump of %s failed", c)
}

// lockTimeout recognises pg_dump's failure to lock a table within --lock-wait-timeout: pg_dump sets
// statement_timeout before its LOCK TABLE statements, so the server cancels the one that waits too long
// and pg_dump prints it as "Query was: LOCK TABLE <table> IN ACCESS SHARE MODE". It returns the table
// ("table public.orders", or "one of the tables ..." when pg_dump locked several at once).
func lockTimeout(stderr string) (string, bool) {
	i := strings.Index(stderr, "LOCK TABLE ")
	if i < 0 || !(strings.Contains(stderr, "statement timeout") || strings.Contains(stderr, "lock timeout") ||
		strings.Contains(stderr, "canceling statement")) {
		return "", false
	}
	rest := stderr[i+len("LOCK TABLE "):]
	if end := strings.Index(rest, " IN "); end >= 0 {
		rest = rest[:end]
	} else if end := strings.IndexByte(rest, '\n'); end >= 0 {
		rest = rest[:end]
	}
	rest = strings.TrimSpace(strings.TrimPrefix(rest, "ONLY "))
	switch {
	case rest == "":
		return "a table", true
	case strings.Contains(rest, ","):
		return "one of the tables " + truncate(rest, 200), true
	}
	return "table " + rest, true
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
