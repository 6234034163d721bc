package pg

// Which pg_dump and pg_restore to run. pg_dump refuses a server newer than itself, and pg_restore
// refuses an archive newer than the pg_dump of its own version writes, so the service carries the
// client programs of several PostgreSQL majors (PG_BIN_DIRS) and picks one per dump, restore or check:
//   - a dump of a server of major M takes the smallest configured major >= M: pg_dump 15 for servers up
//     to 15 (archive version 1.14, which Mendix Cloud accepts), pg_dump 17 for 16 and 17 (1.16, which it
//     may refuse; the snapshot says so);
//   - a restore takes the smallest configured major >= both the target server's major and the oldest
//     pg_restore that reads the archive (12 for 1.14, 16 for 1.15, 17 for 1.16);
//   - the check of an uploaded dump (pg_restore --list) takes the smallest that reads its archive.
// None fitting is a permanent error (backup.CodeInvalidState) that says which PostgreSQL's client
// programs the operator must add.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// Client is the client programs (pg_dump and pg_restore) of one PostgreSQL major version.
type Client struct {
	Major int    // the major version of pg_dump and pg_restore in Dir: 15
	Dir   string // the directory that holds them: /usr/lib/postgresql/15/bin
}

func (c Client) pgDump() string    { return filepath.Join(c.Dir, "pg_dump") }
func (c Client) pgRestore() string { return filepath.Join(c.Dir, "pg_restore") }

// Clients are the client programs the service may run, one entry per major version, in ascending
// order of Major (ParseClients makes them so).
type Clients []Client

// The majors a Client may have: pg_dump 12 is the oldest that writes archive version 1.14, as 15 does;
// 30 is only a bound against typing mistakes.
const (
	MinClientMajor = 12
	MaxClientMajor = 30
)

// DefaultClients is PostgreSQL 15's client programs where Debian and Ubuntu install them.
const DefaultClients = "15=/usr/lib/postgresql/15/bin"

// ParseClients reads a comma-separated list of <major>=<dir>, as PG_BIN_DIRS holds it:
// "15=/usr/lib/postgresql/15/bin,17=/usr/lib/postgresql/17/bin". Majors must be MinClientMajor to
// MaxClientMajor and appear once; white space around items is ignored. It does not look at the
// directories: Clients.Check does.
func ParseClients(s string) (Clients, error) {
	var out Clients
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		m, dir, ok := strings.Cut(item, "=")
		m, dir = strings.TrimSpace(m), strings.TrimSpace(dir)
		if !ok || dir == "" {
			return nil, fmt.Errorf("%q is not <major>=<directory>, like 15=/usr/lib/postgresql/15/bin", item)
		}
		major, err := strconv.Atoi(m)
		if err != nil || major < MinClientMajor || major > MaxClientMajor {
			return nil, fmt.Errorf("%q: the major version %q is not a whole number from %d to %d", item, m, MinClientMajor, MaxClientMajor)
		}
		if i := slices.IndexFunc(out, func(c Client) bool { return c.Major == major }); i >= 0 {
			return nil, fmt.Errorf("PostgreSQL %d appears twice (%s and %s)", major, out[i].Dir, dir)
		}
		out = append(out, Client{Major: major, Dir: dir})
	}
	if len(out) == 0 {
		return nil, errors.New("lists no client programs; want <major>=<directory>, like 15=/usr/lib/postgresql/15/bin")
	}
	slices.SortFunc(out, func(a, b Client) int { return a.Major - b.Major })
	return out, nil
}

// String is the list in ParseClients's form.
func (cs Clients) String() string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = strconv.Itoa(c.Major) + "=" + c.Dir
	}
	return strings.Join(parts, ",")
}

// MarshalText is String, so that a logged configuration shows the list as it is set.
func (cs Clients) MarshalText() ([]byte, error) { return []byte(cs.String()), nil }

// majors names the configured majors for messages: "15", "15 and 17", "14, 15 and 17".
func (cs Clients) majors() string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = strconv.Itoa(c.Major)
	}
	switch len(names) {
	case 0:
		return "no version"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// smallestFrom is the client of the smallest major >= min.
func (cs Clients) smallestFrom(from int) (Client, bool) {
	for _, c := range cs {
		if c.Major >= from {
			return c, true
		}
	}
	return Client{}, false
}

// ForDump picks the pg_dump for a server of major version server: the smallest configured major at
// least as new. None is a *backup.Error with CodeInvalidState (a retry cannot help) whose message says
// which client programs are missing.
func (cs Clients) ForDump(server int) (Client, error) {
	if c, ok := cs.smallestFrom(server); ok {
		return c, nil
	}
	return Client{}, backup.Errorf(backup.CodeInvalidState,
		"the database server runs PostgreSQL %d, and this service has pg_dump for PostgreSQL %s only; ask its operator to add PostgreSQL %d's client tools (PG_BIN_DIRS)",
		server, cs.majors(), server)
}

// ForRestore picks the pg_restore that restores an archive of version archive (ArchiveVersion's
// "1.14", say; "" when unknown) into a server of major version server: the smallest configured major
// at least as new as both the server and the oldest pg_restore that reads the archive. None is a
// *backup.Error with CodeInvalidState naming what is missing.
func (cs Clients) ForRestore(server int, archive string) (Client, error) {
	reader := readerMajor(archive)
	if c, ok := cs.smallestFrom(max(server, reader)); ok {
		return c, nil
	}
	if reader > server {
		return Client{}, backup.Errorf(backup.CodeInvalidState,
			"the database dump is of archive version %s (%s), and this service has pg_restore for PostgreSQL %s only, which cannot read it; ask its operator to add PostgreSQL %d's client tools (PG_BIN_DIRS)",
			archive, archiveWriter(archive), cs.majors(), reader)
	}
	return Client{}, backup.Errorf(backup.CodeInvalidState,
		"the target database server runs PostgreSQL %d, and this service has pg_restore for PostgreSQL %s only; ask its operator to add PostgreSQL %d's client tools (PG_BIN_DIRS)",
		server, cs.majors(), server)
}

// ForList picks the pg_restore that lists an archive of version archive: the smallest that reads it,
// else the newest, whose refusal explains itself (DumpCheck.refusal).
func (cs Clients) ForList(archive string) Client {
	if c, ok := cs.smallestFrom(readerMajor(archive)); ok {
		return c
	}
	return cs[len(cs)-1]
}

// readerMajor is the oldest PostgreSQL major whose pg_restore reads archive version archive
// ("1.14"); MinClientMajor for versions up to 1.14 and for "" (unknown: any may try).
func readerMajor(archive string) int {
	maj, mi, ok := parseArchiveVersion(archive)
	switch {
	case !ok || maj < 1 || (maj == 1 && mi <= 14):
		return MinClientMajor
	case maj == 1 && mi == 15:
		return 16
	case maj == 1 && mi == 16:
		return 17
	}
	return 18 // newer than any pg_restore 17 reads
}

// archiveOf is the archive version ("1.14") of the dump that head starts, "" when head is too short
// or not a custom-format dump.
func archiveOf(head []byte) string {
	major, minor, _, ok := ArchiveVersion(head)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d.%d", major, minor)
}

// parseArchiveVersion reads "1.16" or "1.16.0".
func parseArchiveVersion(v string) (major, minor int, ok bool) {
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return major, minor, err1 == nil && err2 == nil
}

// newerThanMendix reports whether archive version v is newer than 1.14, the newest Mendix Cloud is
// documented to accept (docs/archive-format.md).
func newerThanMendix(v string) bool {
	maj, mi, ok := parseArchiveVersion(v)
	return ok && (maj > 1 || (maj == 1 && mi > 14))
}

// Check confirms every client before the service starts: its directory holds pg_dump and pg_restore
// and pg_dump --version reports its Major. The errors name the directory; it is for operators.
func (cs Clients) Check(ctx context.Context) error {
	var errs []error
	for _, c := range cs {
		if err := c.check(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c Client) check(ctx context.Context) error {
	for _, p := range []string{c.pgDump(), c.pgRestore()} {
		st, err := os.Stat(p)
		switch {
		case err != nil:
			return fmt.Errorf("PostgreSQL %d: %w", c.Major, err)
		case st.IsDir() || st.Mode().Perm()&0o111 == 0:
			return fmt.Errorf("PostgreSQL %d: %s is not an executable file", c.Major, p)
		}
	}
	version, major, err := ClientVersion(ctx, c.Dir)
	switch {
	case err != nil:
		return fmt.Errorf("PostgreSQL %d: %w", c.Major, err)
	case major != c.Major:
		return fmt.Errorf("PostgreSQL %d: %s is version %s, not %d", c.Major, c.pgDump(), version, c.Major)
	}
	return nil
}

// versionTimeout bounds `pg_dump --version`.
const versionTimeout = 30 * time.Second

// ClientVersion runs `pg_dump --version` in dir and returns its version ("15.18") and major version
// (15). The error names the program and carries its output, for operators.
func ClientVersion(ctx context.Context, dir string) (version string, major int, err error) {
	bin := filepath.Join(dir, "pg_dump")
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", 0, fmt.Errorf("%s --version failed: %w: %s", bin, err, bytes.TrimSpace(stderr.Bytes()))
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", 0, fmt.Errorf("%s --version printed %q, not a PostgreSQL version", bin, bytes.TrimSpace(out))
	}
	major, _ = strconv.Atoi(string(m[2]))
	return string(m[1]), major, nil
}
