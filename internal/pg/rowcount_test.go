package pg

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rowsDB is a database whose tables test the counter: an empty one, text with newlines, tabs and
// backslashes (escaped by COPY), a second schema, many rows, and a large object.
const rowsDB = `
CREATE TABLE empty_t (id int PRIMARY KEY);
CREATE TABLE texts (id int PRIMARY KEY, body text);
INSERT INTO texts SELECT g, E'first line\nsecond line\\backslash\ttab\r\n' || g FROM generate_series(1, 500) g;
CREATE SCHEMA other;
CREATE TABLE other."odd name" (id bigint);
INSERT INTO other."odd name" SELECT g FROM generate_series(1, 120000) g;
SELECT lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'));`

func testRowCounts(t *testing.T, e *env) {
	db := e.newLatin1DB(t, rowsDB)
	want := []TableRows{{"other", "odd name", 120000}, {"public", "empty_t", 0}, {"public", "texts", 500}}
	sortRows := func(rs []TableRows) []TableRows {
		return slices.SortedFunc(slices.Values(rs), func(a, b TableRows) int { return strings.Compare(a.Schema+"."+a.Table, b.Schema+"."+b.Table) })
	}
	dumps := map[string][]byte{"-Z0 (the service's)": e.dumpBytes(t, db)}
	z6 := filepath.Join(t.TempDir(), "z6.backup")
	cmd := exec.Command(filepath.Join(e.c.BinDir, "pg_dump"), "-Fc", "-Z6", "-f", z6, e.conninfo(db, "app"))
	cmd.Env = append(os.Environ(), "PGPASSWORD=app-secret")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_dump -Z6: %v\n%s", err, out)
	}
	z6dump, err := os.ReadFile(z6)
	if err != nil {
		t.Fatal(err)
	}
	dumps["-Z6"] = z6dump
	for name, dump := range dumps {
		c := NewRowCounter()
		// Written in odd pieces, as a tee would.
		for rest := dump; len(rest) > 0; {
			n := min(len(rest), 1+rand.IntN(70000))
			_, _ = c.Write(rest[:n])
			rest = rest[n:]
		}
		got, err := c.Counts()
		if err != nil || !slices.Equal(sortRows(got), want) {
			t.Errorf("%s: counts %v, %v; want %v", name, got, err, want)
		}
	}

	// A dump cut short is an error, never a count of fewer tables.
	cut := NewRowCounter()
	_, _ = cut.Write(dumps["-Z0 (the service's)"][:len(dumps["-Z0 (the service's)"])*2/3])
	if got, err := cut.Counts(); err == nil {
		t.Errorf("a dump cut at two thirds counted %v", got)
	}
	// A dump of INSERT statements (--inserts) has no rows to count: nothing is claimed.
	ins := filepath.Join(t.TempDir(), "inserts.backup")
	cmd = exec.Command(filepath.Join(e.c.BinDir, "pg_dump"), "-Fc", "--inserts", "-f", ins, e.conninfo(db, "app"))
	cmd.Env = append(os.Environ(), "PGPASSWORD=app-secret")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_dump --inserts: %v\n%s", err, out)
	}
	insDump, err := os.ReadFile(ins)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := writeAll(NewRowCounter(), insDump).Counts(); err != nil || len(got) != 0 {
		t.Errorf("--inserts: %v, %v; want no counts", got, err)
	}

	// Restored, the counts agree; a row deleted after is found.
	r := e.restorer(t)
	staging := e.restoreBytes(t, r, db, "c0ffee", dumps["-Z6"])
	conn := e.svcConn(db)
	if m, err := r.CheckRowCounts(testContext(t), conn, staging, want); err != nil || len(m) != 0 {
		t.Fatalf("restored: mismatches %v, %v", m, err)
	}
	if err := e.c.Exec(testContext(t), staging, `DELETE FROM texts WHERE id = 7`); err != nil {
		t.Fatal(err)
	}
	missing := append(slices.Clone(want), TableRows{"public", "gone", 1})
	m, err := r.CheckRowCounts(testContext(t), conn, staging, missing)
	if err != nil || len(m) != 2 || !strings.Contains(m[0]+m[1], `"public"."texts" has 499 rows where the dump holds 500`) ||
		!strings.Contains(m[0]+m[1], `"public"."gone" of the dump is not in the restored database`) {
		t.Errorf("mismatches %q, %v", m, err)
	}
}

// A damaged or cut stream never panics, never blocks the writer, and makes Counts fail or count less.
func TestRowCounterSurvivesDamage(t *testing.T) {
	dump := fakeDump(t)
	c := NewRowCounter()
	_, _ = c.Write(dump)
	if got, err := c.Counts(); err != nil || len(got) != 1 || got[0].Rows != 3 {
		t.Fatalf("the fake dump: %v, %v", got, err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		b := slices.Clone(dump)
		switch i % 3 {
		case 0:
			b = b[:rng.IntN(len(b))]
		case 1:
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		default:
			b = append(b[:rng.IntN(len(b))], bytes.Repeat([]byte{0xff}, rng.IntN(100))...)
		}
		c := NewRowCounter()
		_, _ = c.Write(b)
		_, _ = c.Write(bytes.Repeat([]byte{1}, 1<<16)) // more after an error is swallowed
		_, _ = c.Counts()
	}
	if _, err := writeAll(NewRowCounter(), []byte("PGDMP not really")).Counts(); err == nil {
		t.Error("a stream that is not a dump counted")
	}
}

func writeAll(c *RowCounter, b []byte) *RowCounter {
	_, _ = c.Write(b)
	return c
}

// fakeDump is a minimal archive 1.14, uncompressed, with one TABLE DATA entry of 3 rows.
func fakeDump(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	i := func(v int) {
		if v < 0 {
			b.WriteByte(1)
			v = -v
		} else {
			b.WriteByte(0)
		}
		for k := 0; k < 4; k++ {
			b.WriteByte(byte(v >> (8 * k)))
		}
	}
	s := func(v string, null bool) {
		if null {
			i(-1)
			return
		}
		i(len(v))
		b.WriteString(v)
	}
	b.WriteString("PGDMP")
	b.Write([]byte{1, 14, 0, 4, 8, 1})
	i(0) // compression level
	for k := 0; k < 7; k++ {
		i(1)
	}
	s("db", false)
	s("15.0", false)
	s("15.0", false)
	i(1) // one entry
	i(5)
	i(1)
	for _, f := range []string{"0", "0", "t", "TABLE DATA"} {
		s(f, false)
	}
	i(2) // section
	for _, f := range []string{"", "", "COPY", "public", "", "heap", "owner", "false"} {
		s(f, false)
	}
	s("", true) // no dependencies
	b.WriteByte(1)
	b.Write(make([]byte, 8))
	b.WriteByte(blkData)
	i(5)
	i(6)
	b.WriteString("1\ta\n2\t")
	i(6)
	b.WriteString("b\n3\tc\n")
	i(0)
	return b.Bytes()
}
