package pg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// listDB has tables with data (one large enough that pg_restore --list exits long before the dump has
// streamed past), one without, and a large object.
const listDB = `
CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
CREATE TABLE small (id int PRIMARY KEY, body text);
INSERT INTO small SELECT g, 'row ' || g FROM generate_series(1, 50) g;
CREATE TABLE empty_t (id int);
SELECT lo_from_bytea(0, decode(repeat('ab', 5000), 'hex'));`

// listDumps makes the dumps the tests check, with the cluster's pg_dump 15: default compression and -Z0.
func listDumps(t *testing.T) (*pgcluster.Cluster, map[string][]byte) {
	c := pgcluster.ForTest(t)
	ctx := testContext(t)
	if err := c.CreateDatabase(ctx, "listed", "postgres"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "listed", listDB); err != nil {
		t.Fatal(err)
	}
	dumps := map[string][]byte{}
	for name, args := range map[string][]string{"-Z6": {"-Fc"}, "-Z0": {"-Fc", "-Z0"}} {
		out, err := exec.CommandContext(ctx, filepath.Join(c.BinDir, "pg_dump"), append(args, "-O", "-x", "--dbname="+c.DSN("listed"))...).Output()
		if err != nil {
			t.Fatalf("pg_dump %v: %v", args, err)
		}
		dumps[name] = out
	}
	return c, dumps
}

func checkDump(t *testing.T, d *Dumper, dump []byte) (DumpList, error) {
	t.Helper()
	c, err := d.CheckDump(testContext(t), "db/db.backup", dump)
	if err != nil {
		t.Fatal(err)
	}
	// Written in odd pieces, as a tee would.
	for rest := dump; len(rest) > 0; {
		n := min(len(rest), 1+rand.IntN(70000))
		if k, err := c.Write(rest[:n]); k != n || err != nil {
			t.Fatalf("Write: %d of %d bytes, %v", k, n, err)
		}
		rest = rest[n:]
	}
	return c.Wait()
}

func TestListDumps(t *testing.T) {
	c, dumps := listDumps(t)
	d := &Dumper{BinDir: c.BinDir, Logger: zerolog.New(zerolog.NewTestWriter(t))}

	t.Run("accepted", func(t *testing.T) {
		for name, dump := range dumps {
			res, err := checkDump(t, d, dump)
			if err != nil || !res.Walked || res.Tables != 3 || res.Entries < 8 {
				t.Errorf("%s: %+v, %v; want 3 tables walked", name, res, err)
			}
		}
	})

	t.Run("compression from the header", func(t *testing.T) {
		for name, want := range map[string]bool{"-Z6": true, "-Z0": false} {
			if got, ok := DumpCompressed(dumps[name][:4096]); got != want || !ok {
				t.Errorf("%s: compressed %v, %v; want %v", name, got, ok, want)
			}
		}
		if _, ok := DumpCompressed(dumps["-Z6"][:12]); ok {
			t.Error("a header cut short was read")
		}
	})

	t.Run("pg_restore stops reading early", func(t *testing.T) {
		dump := dumps["-Z0"]
		chk, err := d.CheckDump(testContext(t), "db/db.backup", dump)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = chk.Write(dump[:len(dump)/4])
		select {
		case <-chk.p.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("pg_restore --list did not exit after reading the table of contents")
		}
		if chk.p.exitErr != nil || chk.Err() != nil {
			t.Fatalf("pg_restore --list: %v, %v", chk.p.exitErr, chk.Err())
		}
		if k, err := chk.Write(dump[len(dump)/4:]); k != len(dump)-len(dump)/4 || err != nil {
			t.Fatalf("Write after pg_restore exited: %d, %v", k, err)
		}
		if res, err := chk.Wait(); err != nil || res.Tables != 3 {
			t.Errorf("Wait: %+v, %v", res, err)
		}
	})

	refusals := map[string]struct {
		dump []byte
		want []string
	}{
		"archive version 1.16": {patchVersion(dumps["-Z6"], 1, 16), []string{
			"db/db.backup is a dump of archive version 1.16 (pg_dump 17 or later)",
			"reads archive versions up to 1.14 (pg_dump 15 and earlier); make the dump with pg_dump 15 or earlier"}},
		"plain SQL": {[]byte("--\n-- PostgreSQL database dump\n--\nCREATE TABLE x (id int);\n"), []string{
			"db/db.backup is not a PostgreSQL custom-format dump that pg_restore --list can read (it says:"}},
		"cut inside the table of contents": {dumps["-Z6"][:300], []string{"db/db.backup is not a PostgreSQL custom-format dump that pg_restore --list can read"}},
		"cut inside the data":              {dumps["-Z0"][:len(dumps["-Z0"])*2/3], []string{"db/db.backup is incomplete or damaged: the data of table public.big is cut short or damaged (the file ends there)"}},
		// The last data block is a table's or the large objects', as pg_dump orders them that run: the
		// message names whichever is missing.
		"cut between blocks":           {cutAtLastData(t, dumps["-Z6"]), []string{"db/db.backup is incomplete or damaged: it ends before the data of "}},
		"garbage after the last block": {append(bytes.Clone(dumps["-Z6"]), 9, 9, 9), []string{"it has a block of unknown type 9"}},
	}
	for name, tc := range refusals {
		t.Run(name, func(t *testing.T) {
			_, err := checkDump(t, d, tc.dump)
			var be *backup.Error
			if !errors.As(err, &be) || be.Code != backup.CodeInvalidParameters {
				t.Fatalf("got %v, want a *backup.Error with code %s", err, backup.CodeInvalidParameters)
			}
			t.Logf("refused: %s", be.Message)
			for _, want := range tc.want {
				if !strings.Contains(be.Message, want) {
					t.Errorf("message %q does not say %q", be.Message, want)
				}
			}
		})
	}

	t.Run("cut anywhere after the table of contents", func(t *testing.T) {
		for name, dump := range dumps {
			// Every byte of the tail (the last blocks, their chunk lengths and ends), and cuts spread
			// over the last table's data.
			from := len(cutAtLastData(t, dump))
			cuts := []int{}
			for cut := max(from, len(dump)-1500); cut < len(dump); cut++ {
				cuts = append(cuts, cut)
			}
			for cut := from; cut < len(dump)-1500; cut += max(1, (len(dump)-from)/200) {
				cuts = append(cuts, cut)
			}
			for _, cut := range cuts {
				if res, err := walkDump(bufio.NewReader(bytes.NewReader(dump[:cut]))); err == nil {
					t.Fatalf("%s cut at %d of %d bytes: walked as whole (%+v)", name, cut, len(dump), res)
				}
			}
		}
	})

	t.Run("the header picks pg_restore", func(t *testing.T) {
		stand17 := fakePgDump17(t)
		marker := filepath.Join(t.TempDir(), "ran")
		if err := os.WriteFile(filepath.Join(stand17, "pg_restore"), []byte("#!/bin/sh\ntouch "+marker+"\ncat >/dev/null\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		both := &Dumper{Clients: Clients{{Major: 15, Dir: c.BinDir}, {Major: 17, Dir: stand17}}, Logger: d.Logger}
		if res, err := checkDump(t, both, dumps["-Z6"]); err != nil || res.Tables != 3 {
			t.Errorf("archive 1.14 with 15 and 17: %+v, %v; want pg_restore 15's acceptance", res, err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("pg_restore 17 listed an archive of version 1.14; 15's should have")
		}
		_, _ = checkDump(t, both, patchVersion(dumps["-Z6"], 1, 16)) // the stand-in's listing proves nothing
		if _, err := os.Stat(marker); err != nil {
			t.Errorf("pg_restore 17 did not list an archive of version 1.16: %v", err)
		}
	})

	t.Run("refused early", func(t *testing.T) {
		dump := patchVersion(dumps["-Z6"], 1, 16)
		chk, err := d.CheckDump(testContext(t), "db/db.backup", dump)
		if err != nil {
			t.Fatal(err)
		}
		defer chk.Abort()
		_, _ = chk.Write(dump[:4096])
		deadline := time.Now().Add(30 * time.Second)
		for chk.Err() == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if backup.CodeOf(chk.Err()) != backup.CodeInvalidParameters {
			t.Errorf("Err = %v while the dump streams, want the refusal", chk.Err())
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testContext(t))
		chk, err := d.CheckDump(ctx, "db/db.backup", dumps["-Z0"])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = chk.Write(dumps["-Z0"][:100])
		cancel()
		if _, err := chk.Wait(); !errors.Is(err, context.Canceled) {
			t.Errorf("Wait after cancel: %v", err)
		}
	})

	t.Run("aborted", func(t *testing.T) {
		chk, err := d.CheckDump(testContext(t), "db/db.backup", dumps["-Z0"])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = chk.Write(dumps["-Z0"][:100])
		chk.Abort()
		chk.Abort()
		if _, err := chk.Write(dumps["-Z0"][100:200]); err != nil {
			t.Errorf("Write after Abort: %v", err)
		}
	})
}

// patchVersion is dump with the archive version of its header changed, as a newer pg_dump writes it.
func patchVersion(dump []byte, major, minor byte) []byte {
	out := bytes.Clone(dump)
	out[5], out[6] = major, minor
	return out
}

// cutAtLastData cuts a dump where its last table data block starts: a dump that ends between two
// blocks, every block before the cut whole.
func cutAtLastData(t *testing.T, dump []byte) []byte {
	t.Helper()
	src := &countedReader{r: bytes.NewReader(dump)}
	a := &archiveReader{r: bufio.NewReader(src)}
	if _, err := a.header(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.toc(); err != nil {
		t.Fatal(err)
	}
	last := -1
	for {
		off := src.n - a.r.Buffered()
		typ, err := a.byte()
		if err != nil {
			break
		}
		if _, err := a.int(); err != nil {
			t.Fatal(err)
		}
		if typ == blkData {
			last = off
			if err := (&chunks{a: a}).drain(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		for { // large objects
			oid, err := a.int()
			if err != nil {
				t.Fatal(err)
			}
			if oid == 0 {
				break
			}
			if err := (&chunks{a: a}).drain(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if last < 0 {
		t.Fatal("the dump has no data block")
	}
	return dump[:last]
}

type countedReader struct {
	r io.Reader
	n int
}

func (c *countedReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += k
	return k, err
}
