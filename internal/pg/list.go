package pg

// Checking a custom-format dump made elsewhere (an uploaded archive's db.backup) as it streams past,
// before it becomes a snapshot: pg_restore --list reads its header and table of contents, exactly as
// the pg_restore of a later restore will, and a walk of its blocks (the format rowcount.go reads)
// checks that the data of every table is there and whole. The walk skips the data without inflating
// it: a compressed dump costs no more to check than an uncompressed one.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// DumpCheck checks one dump written to it (Dumper.CheckDump). Write, Err, Wait and Abort are called
// from one goroutine at a time.
type DumpCheck struct {
	name string // of the dump, for messages: "db/db.backup"
	bin  string
	ctx  context.Context
	p    *pgRestore
	walk *dumpWalker

	stdinDone bool // pg_restore has all it reads, or no longer reads
	ended     sync.Once
	failOnce  sync.Once
	failure   error
}

// DumpList is what a DumpCheck found in a dump it accepted.
type DumpList struct {
	// Walked: the walk knew the dump's archive version (1.12 to 1.16) and checked its blocks; Entries
	// and Tables are 0 when it did not.
	Walked  bool
	Entries int // entries of the table of contents
	Tables  int // tables whose data the dump holds
}

// CheckDump starts pg_restore --list reading a custom-format dump from what is written to the
// DumpCheck, and the walk of its blocks. head is the start of the dump (a few bytes are enough): its
// archive version picks the pg_restore among the Dumper's clients (Clients.ForList), as a restore of
// it will. name is the dump as the user knows it, for messages. Write the whole dump, then call Wait;
// or call Abort. The end of ctx kills pg_restore.
func (d *Dumper) CheckDump(ctx context.Context, name string, head []byte) (*DumpCheck, error) {
	clients, err := d.tools.clients(ctx, d.Clients, d.BinDir)
	if err != nil {
		return nil, err
	}
	client := clients.ForList(archiveOf(head))
	if _, err := d.tools.version(ctx, client); err != nil {
		return nil, err
	}
	bin := client.pgRestore()
	p := &pgRestore{log: d.Logger.With().Str("dump", name).Logger()}
	if err := p.start(bin, []string{"--list"}, ""); err != nil {
		return nil, err
	}
	c := &DumpCheck{name: name, bin: bin, ctx: ctx, p: p, walk: newDumpWalker()}
	go func() {
		select {
		case <-ctx.Done():
			p.kill()
		case <-p.exited:
		}
	}()
	return c, nil
}

// Write hands p to pg_restore, while it still reads, and to the walk. It never fails: pg_restore
// --list stops reading after the table of contents and exits, and the rest of the dump, which the
// walk still needs, must go on streaming to its other readers.
func (c *DumpCheck) Write(p []byte) (int, error) {
	if !c.stdinDone {
		select {
		case <-c.p.exited:
			c.closeStdin()
		default:
			if _, err := c.p.stdin.Write(p); err != nil { // EPIPE: pg_restore has exited meanwhile
				c.closeStdin()
			}
		}
	}
	_, _ = c.walk.pw.Write(p) // the walk drains to the end, so this never blocks for good
	return len(p), nil
}

func (c *DumpCheck) closeStdin() {
	c.stdinDone = true
	_ = c.p.stdin.Close()
}

// Err returns, without waiting, why pg_restore refused the dump if it has already exited failing, so
// that a dump it cannot read is refused before the rest of it streams past; nil otherwise.
func (c *DumpCheck) Err() error {
	select {
	case <-c.p.exited:
		if c.p.exitErr != nil && c.ctx.Err() == nil {
			return c.refusal()
		}
	default:
	}
	return nil
}

// Wait ends the dump and returns what pg_restore and the walk found. A dump either refuses is a
// *backup.Error with CodeInvalidParameters whose message names it and says why.
func (c *DumpCheck) Wait() (DumpList, error) {
	c.end()
	switch {
	case c.ctx.Err() != nil:
		return DumpList{}, fmt.Errorf("check %s with pg_restore --list: %w", c.name, context.Cause(c.ctx))
	case c.p.exitErr != nil:
		return DumpList{}, c.refusal()
	}
	res, err := c.walk.result()
	var unknown unwalkable
	switch {
	case errors.As(err, &unknown):
		c.p.log.Info().Err(err).Msg("the dump's blocks were not walked; pg_restore --list accepted it")
		return DumpList{}, nil
	case err != nil:
		return DumpList{}, backup.Wrap(backup.CodeInvalidParameters, err, "%s is incomplete or damaged: %s", c.name, err.Error())
	}
	res.Walked = true
	return res, nil
}

// Abort stops pg_restore and the walk; after Wait it does nothing.
func (c *DumpCheck) Abort() {
	c.p.kill()
	c.end()
}

func (c *DumpCheck) end() {
	c.ended.Do(func() {
		c.closeStdin()
		<-c.p.exited
		_ = c.walk.pw.Close()
		<-c.walk.done
	})
}

// refusal explains pg_restore's failure to list the dump, once.
func (c *DumpCheck) refusal() error {
	c.failOnce.Do(func() {
		stderr := c.p.stderr.String()
		cause := fmt.Errorf("pg_restore --list of %s: %w: %s", c.name, c.p.exitErr, stderr)
		if m := unsupportedVersion.FindStringSubmatch(stderr); m != nil {
			c.failure = backup.Wrap(backup.CodeInvalidParameters, cause, "%s", c.versionRefusal(m[1]))
			return
		}
		why := "it exited with " + c.p.exitErr.Error()
		for _, line := range strings.Split(stderr, "\n") {
			if rest, ok := strings.CutPrefix(line, "pg_restore: error: "); ok {
				why = "it says: " + objectName(rest)
				break
			}
		}
		c.failure = backup.Wrap(backup.CodeInvalidParameters, cause,
			"%s is not a PostgreSQL custom-format dump that pg_restore --list can read (%s)", c.name, why)
	})
	return c.failure
}

// unsupportedVersion is pg_restore's "unsupported version (1.16) in file header".
var unsupportedVersion = regexp.MustCompile(`unsupported version \((\d+\.\d+)\) in file header`)

// versionRefusal tells which pg_dump wrote the dump's archive version and which ones the service's
// pg_restore reads.
func (c *DumpCheck) versionRefusal(version string) string {
	dump := fmt.Sprintf("%s is a dump of archive version %s (%s)", c.name, version, archiveWriter(version))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.bin, "--version").Output()
	m := versionRE.FindSubmatch(out)
	if err != nil || m == nil {
		return dump + ", which the service's pg_restore cannot read"
	}
	major, _ := strconv.Atoi(string(m[2]))
	most, ok := readableVersion(major)
	if !ok {
		return fmt.Sprintf("%s, which the service's pg_restore %s cannot read", dump, m[1])
	}
	return fmt.Sprintf("%s: the service's pg_restore %s reads archive versions up to %s (pg_dump %d and earlier); make the dump with pg_dump %d or earlier",
		dump, m[1], most, major, major)
}

// readableVersion is the newest archive version the pg_restore of a major version reads.
func readableVersion(major int) (string, bool) {
	switch {
	case major >= 12 && major <= 15:
		return "1.14", true
	case major == 16:
		return "1.15", true
	case major == 17:
		return "1.16", true
	}
	return "", false
}

// archiveWriter names the pg_dump versions that write an archive version (pg_backup_archiver.h).
func archiveWriter(version string) string {
	switch version {
	case "1.12":
		return "pg_dump 9.0 to 10"
	case "1.13":
		return "pg_dump 11"
	case "1.14":
		return "pg_dump 12 to 15"
	case "1.15":
		return "pg_dump 16"
	case "1.16":
		return "pg_dump 17 or later"
	}
	return "a pg_dump this service does not know"
}

// DumpCompressed reports whether the data blocks of the custom-format dump that head starts are
// compressed (pg_dump's default, -Z1 to -Z9), from its header. ok is false when head is not a header
// of an archive version 1.12 to 1.16 or is too short to hold all of it (a few hundred bytes).
func DumpCompressed(head []byte) (compressed, ok bool) {
	a := &archiveReader{r: bufio.NewReader(bytes.NewReader(head))}
	compressed, err := a.header()
	return compressed, err == nil
}

// dumpWalker walks the blocks of a dump written to its pipe, in a goroutine of its own, like
// RowCounter.
type dumpWalker struct {
	pw   *io.PipeWriter
	done chan struct{}
	res  DumpList
	err  error
}

func newDumpWalker() *dumpWalker {
	pr, pw := io.Pipe()
	w := &dumpWalker{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.res, w.err = walkDump(bufio.NewReaderSize(pr, 256<<10))
		// Whatever is left (after an error) is read and dropped, so that writes never block for good.
		_, _ = io.Copy(io.Discard, pr)
	}()
	return w
}

func (w *dumpWalker) result() (DumpList, error) {
	<-w.done
	return w.res, w.err
}

// unwalkable is the walk's error for a header it does not know (another archive version, say):
// pg_restore --list alone judges such a dump.
type unwalkable struct{ err error }

func (u unwalkable) Error() string { return "the dump's header: " + u.err.Error() }
func (u unwalkable) Unwrap() error { return u.err }

// walkDump reads a dump's header and table of contents and then every data block, as countRows does
// but skipping the data, and checks that each table's data is there once and the dump ends after the
// last block.
func walkDump(r *bufio.Reader) (DumpList, error) {
	a := &archiveReader{r: r}
	if _, err := a.header(); err != nil {
		return DumpList{}, unwalkable{err}
	}
	entries, err := a.toc()
	if err != nil {
		return DumpList{}, fmt.Errorf("its table of contents is cut short or damaged (%w)", eofAsCut(err))
	}
	res := DumpList{Entries: len(entries)}
	seen := map[int64]bool{}
	for {
		typ, err := a.byte()
		if err == io.EOF {
			// Every entry with data has its block (pg_dump writes one for each); one missing is a cut
			// between blocks.
			for id, e := range entries {
				if e.hasData && !seen[id] {
					return DumpList{}, fmt.Errorf("it ends before the data of %s", e.describe())
				}
			}
			return res, nil
		} else if err != nil {
			return DumpList{}, err
		}
		if typ != blkData && typ != blkBlobs {
			return DumpList{}, fmt.Errorf("it has a block of unknown type %d after its last valid block", typ)
		}
		id, err := a.int()
		if err != nil {
			return DumpList{}, fmt.Errorf("it ends inside a block header (%w)", eofAsCut(err))
		}
		e, ok := entries[id]
		switch {
		case !ok || !e.hasData:
			return DumpList{}, fmt.Errorf("it has a data block of entry %d, which its table of contents does not give data", id)
		case seen[id]:
			return DumpList{}, fmt.Errorf("it has a second data block of %s", e.describe())
		}
		seen[id] = true
		if typ == blkData {
			if err := skipChunks(a); err != nil {
				return DumpList{}, fmt.Errorf("the data of %s is cut short or damaged (%w)", e.describe(), eofAsCut(err))
			}
			if e.desc == "TABLE DATA" {
				res.Tables++
			}
			continue
		}
		for { // large objects: an OID, its chunks; OID 0 ends them
			oid, err := a.int()
			if err == nil && oid != 0 {
				err = skipChunks(a)
			}
			if err != nil {
				return DumpList{}, fmt.Errorf("its large objects are cut short or damaged (%w)", eofAsCut(err))
			}
			if oid == 0 {
				break
			}
		}
	}
}

// describe names a TOC entry for messages: "table public.data", "large objects".
func (e dumpEntry) describe() string {
	switch e.desc {
	case "TABLE DATA":
		return fmt.Sprintf("table %s.%s", objectName(e.namespace), objectName(e.tag))
	case "BLOBS":
		return "its large objects"
	}
	return objectName(e.desc + " " + e.namespace + " " + e.tag)
}

// skipChunks skips one block's chunks: their lengths, up to a zero one, and their bytes. (chunks.drain
// reads them too, but would take an end of input right before a chunk's length for the block's end.)
func skipChunks(a *archiveReader) error {
	for {
		n, err := a.int()
		switch {
		case err != nil:
			return err
		case n == 0:
			return nil
		case n < 0:
			return fmt.Errorf("a chunk of %d bytes", n)
		}
		if _, err := a.r.Discard(int(n)); err != nil {
			return err
		}
	}
}

// eofAsCut names an end of input met inside a structure for what it is.
func eofAsCut(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the file ends there")
	}
	return err
}
