package pg

// Row counts from a custom-format dump as it streams into pg_restore, to compare with the restored
// tables before a restore commits. The format (PostgreSQL's pg_backup_archiver.c and
// pg_backup_custom.c): a header, the table of contents, then one block per TOC entry with data, in
// chunks, zlib-compressed per block when the archive is compressed. A TABLE DATA block is the table's
// COPY text: one line per row (COPY escapes newlines inside values), then "\.\n\n\n".

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/jackc/pgx/v5"
)

// TableRows is one table's row count in a dump.
type TableRows struct {
	Schema string
	Table  string
	Rows   int64
}

// Block types of the custom format.
const (
	blkData  = 1
	blkBlobs = 3
)

// Archive versions this reader knows (1.12: PostgreSQL 11 … 1.16: PostgreSQL 17).
const (
	minCountVersion = 0x010c00
	maxCountVersion = 0x011000
)

// maxTOCString bounds one string of the TOC (a table's definition can be long, not gigabytes).
const maxTOCString = 64 << 20

// RowCounter counts the rows of every table's data in a custom-format dump written to it. Write never
// fails, so that the tee feeding pg_restore is never broken by it: a stream it cannot read makes Counts
// say why instead. Memory is bounded by one chunk of the dump and the TOC's table names.
type RowCounter struct {
	pw   *io.PipeWriter
	done chan struct{}

	mu     sync.Mutex
	counts []TableRows
	err    error
	closed bool
}

// NewRowCounter starts a counter; call Counts once the whole dump was written.
func NewRowCounter() *RowCounter {
	pr, pw := io.Pipe()
	c := &RowCounter{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		counts, err := countRows(bufio.NewReaderSize(pr, 256<<10))
		// Whatever is left (after an error, or data after the last block) is read and dropped.
		_, _ = io.Copy(io.Discard, pr)
		c.mu.Lock()
		c.counts, c.err = counts, err
		c.mu.Unlock()
	}()
	return c
}

func (c *RowCounter) Write(p []byte) (int, error) {
	_, _ = c.pw.Write(p) // the reader drains to the end, so this never blocks for good
	return len(p), nil
}

// Counts ends the stream and returns the row count of every table whose data the dump holds, in the
// dump's order.
func (c *RowCounter) Counts() ([]TableRows, error) {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.mu.Unlock()
		_ = c.pw.Close()
	} else {
		c.mu.Unlock()
	}
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts, c.err
}

// archiveReader reads the custom format's primitives.
type archiveReader struct {
	r               *bufio.Reader
	version         int
	intSize, offLen int
}

func (a *archiveReader) byte() (byte, error) { return a.r.ReadByte() }

// int reads an integer: a sign byte, then intSize bytes, least significant first.
func (a *archiveReader) int() (int64, error) {
	sign, err := a.r.ReadByte()
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := 0; i < a.intSize; i++ {
		b, err := a.r.ReadByte()
		if err != nil {
			return 0, err
		}
		if i < 8 {
			v |= uint64(b) << (8 * i)
		}
	}
	if v > 1<<62 {
		return 0, errors.New("an integer out of range")
	}
	if sign != 0 {
		return -int64(v), nil
	}
	return int64(v), nil
}

// str reads a string: its length (-1 for NULL), then its bytes.
func (a *archiveReader) str() (string, bool, error) {
	n, err := a.int()
	if err != nil {
		return "", false, err
	}
	if n < 0 {
		return "", false, nil
	}
	if n > maxTOCString {
		return "", false, fmt.Errorf("a string of %d bytes in the table of contents", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(a.r, b); err != nil {
		return "", false, err
	}
	return string(b), true, nil
}

func (a *archiveReader) skip(n int) error {
	_, err := a.r.Discard(n)
	return err
}

// header reads the archive's header and reports whether its data blocks are zlib-compressed.
func (a *archiveReader) header() (compressed bool, err error) {
	magic := make([]byte, 5)
	if _, err := io.ReadFull(a.r, magic); err != nil || string(magic) != "PGDMP" {
		return false, errors.New("not a custom-format dump (no PGDMP magic)")
	}
	v := make([]byte, 6)
	if _, err := io.ReadFull(a.r, v); err != nil {
		return false, err
	}
	a.version, a.intSize, a.offLen = int(v[0])<<16|int(v[1])<<8|int(v[2]), int(v[3]), int(v[4])
	switch {
	case a.version < minCountVersion || a.version > maxCountVersion:
		return false, fmt.Errorf("archive version %d.%d, which this counter does not know", v[0], v[1])
	case a.intSize < 1 || a.intSize > 8 || a.offLen < 1 || a.offLen > 16:
		return false, fmt.Errorf("integer size %d and offset size %d", a.intSize, a.offLen)
	case v[5] != 1:
		return false, fmt.Errorf("archive format %d, not custom (1)", v[5])
	}
	if a.version >= 0x010f00 { // 1.15: the compression algorithm
		alg, err := a.byte()
		if err != nil {
			return false, err
		}
		switch alg {
		case 0:
		case 1:
			compressed = true
		default:
			return false, fmt.Errorf("data compressed with algorithm %d (lz4 or zstd), which this counter does not read", alg)
		}
	} else {
		level, err := a.int()
		if err != nil {
			return false, err
		}
		compressed = level != 0 // -1 is zlib's default level
	}
	for i := 0; i < 7; i++ { // the creation time
		if _, err := a.int(); err != nil {
			return false, err
		}
	}
	for i := 0; i < 3; i++ { // database name, server version, pg_dump version
		if _, _, err := a.str(); err != nil {
			return false, err
		}
	}
	return compressed, nil
}

// dumpEntry is what the counter needs of one TOC entry.
type dumpEntry struct {
	desc, namespace, tag string
	// copy: the data is COPY text (a dump made with --inserts has INSERT statements instead, whose
	// lines are not rows); hasData: a data block follows for it.
	copy, hasData bool
}

func (a *archiveReader) toc() (map[int64]dumpEntry, error) {
	n, err := a.int()
	if err != nil {
		return nil, err
	}
	if n < 0 || n > 10_000_000 {
		return nil, fmt.Errorf("a table of contents of %d entries", n)
	}
	entries := make(map[int64]dumpEntry)
	for i := int64(0); i < n; i++ {
		id, err := a.int()
		if err != nil {
			return nil, err
		}
		hasData, err := a.int()
		if err != nil {
			return nil, err
		}
		// tableoid, oid, tag, desc, (section), defn, dropStmt, copyStmt, namespace, tablespace, tableam,
		// (relkind from 1.16), owner, withOids
		fields := []string{"tableoid", "oid", "tag", "desc", "section", "defn", "drop", "copy", "namespace", "tablespace"}
		if a.version >= 0x010e00 { // 1.14
			fields = append(fields, "tableam")
		}
		if a.version >= 0x011000 { // 1.16
			fields = append(fields, "relkind")
		}
		fields = append(fields, "owner", "withoids")
		var e dumpEntry
		for _, name := range fields {
			if name == "section" || name == "relkind" {
				if _, err := a.int(); err != nil {
					return nil, err
				}
				continue
			}
			s, _, err := a.str()
			if err != nil {
				return nil, fmt.Errorf("entry %d, %s: %w", id, name, err)
			}
			switch name {
			case "tag":
				e.tag = s
			case "desc":
				e.desc = s
			case "namespace":
				e.namespace = s
			case "copy":
				e.copy = s != ""
			}
		}
		for { // dependencies, up to a NULL string
			_, ok, err := a.str()
			if err != nil {
				return nil, err
			}
			if !ok {
				break
			}
		}
		if _, err := a.byte(); err != nil { // the data offset: whether it is set, then the offset
			return nil, err
		}
		if err := a.skip(a.offLen); err != nil {
			return nil, err
		}
		e.hasData = hasData != 0
		entries[id] = e
	}
	return entries, nil
}

// chunks reads one block's chunks (length-prefixed, a zero length ends them) as one stream.
type chunks struct {
	a    *archiveReader
	left int64
	end  bool
	err  error
}

func (c *chunks) Read(p []byte) (int, error) {
	for c.left == 0 && !c.end {
		n, err := c.a.int()
		if err != nil {
			c.err = err
			return 0, err
		}
		switch {
		case n == 0:
			c.end = true
		case n < 0:
			c.err = fmt.Errorf("a chunk of %d bytes", n)
			return 0, c.err
		default:
			c.left = n
		}
	}
	if c.end {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.a.r.Read(p)
	c.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		c.err = err
	}
	return n, err
}

// drain reads the rest of the block, so the reader stands at the next block.
func (c *chunks) drain() error {
	_, err := io.Copy(io.Discard, c)
	return err
}

func countRows(r *bufio.Reader) ([]TableRows, error) {
	a := &archiveReader{r: r}
	compressed, err := a.header()
	if err != nil {
		return nil, fmt.Errorf("read the dump's header: %w", err)
	}
	entries, err := a.toc()
	if err != nil {
		return nil, fmt.Errorf("read the dump's table of contents: %w", err)
	}
	var out []TableRows
	buf := make([]byte, 64<<10)
	seen := map[int64]bool{}
	for {
		typ, err := a.byte()
		if err == io.EOF {
			for id, e := range entries {
				if e.hasData && e.desc == "TABLE DATA" && !seen[id] {
					return nil, fmt.Errorf("the dump ended before the data of %s.%s", e.namespace, e.tag)
				}
			}
			return out, nil
		} else if err != nil {
			return nil, err
		}
		id, err := a.int()
		if err != nil {
			return nil, err
		}
		switch typ {
		case blkData:
			e, ok := entries[id]
			if !ok {
				return nil, fmt.Errorf("a data block of entry %d, which the table of contents does not have", id)
			}
			if seen[id] {
				return nil, fmt.Errorf("a second data block of %s.%s", e.namespace, e.tag)
			}
			seen[id] = true
			c := &chunks{a: a}
			rows, err := countLines(c, compressed, buf)
			if err != nil {
				return nil, fmt.Errorf("the data of %s.%s: %w", e.namespace, e.tag, err)
			}
			if err := c.drain(); err != nil {
				return nil, err
			}
			if e.desc == "TABLE DATA" && e.copy {
				out = append(out, TableRows{Schema: e.namespace, Table: e.tag, Rows: rows})
			}
		case blkBlobs:
			for { // large objects: an OID, its chunks; OID 0 ends them
				oid, err := a.int()
				if err != nil {
					return nil, err
				}
				if oid == 0 {
					break
				}
				if err := (&chunks{a: a}).drain(); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("a block of unknown type %d", typ)
		}
	}
}

// countLines counts the newlines of a block's data, inflating it first when compressed.
func countLines(c *chunks, compressed bool, buf []byte) (int64, error) {
	var src io.Reader = c
	if compressed {
		z, err := zlib.NewReader(c)
		if err == io.EOF { // an empty block
			return 0, nil
		} else if err != nil {
			return 0, err
		}
		defer z.Close()
		src = z
	}
	var (
		rows int64
		tail []byte // the last bytes read, to recognise the end marker
	)
	for {
		n, err := src.Read(buf)
		rows += int64(bytes.Count(buf[:n], []byte{'\n'}))
		if n > 0 {
			tail = append(tail, buf[:n]...)
			tail = tail[max(0, len(tail)-len(copyEnd)):]
		}
		if err == io.EOF {
			if bytes.Equal(tail, copyEnd) {
				rows -= int64(bytes.Count(copyEnd, []byte{'\n'}))
			}
			return rows, nil
		} else if err != nil {
			return rows, err
		}
	}
}

// copyEnd is how pg_dump ends a table's COPY data in an archive (dumpTableData_copy): not a row.
var copyEnd = []byte("\\.\n\n\n")

// connectTo connects as conn.User to database on conn's server, after the same checks as Dumper.Start.
func connectTo(ctx context.Context, conn Conn, database string) (*pgx.Conn, error) {
	if err := conn.usable(ctx); err != nil {
		return nil, err
	}
	pw, err := conn.password(ctx)
	if err != nil {
		return nil, err
	}
	c := conn
	c.Database = database
	return connect(ctx, c, pw)
}

// CheckRowCounts counts the rows of each table of want in database and describes, in a sentence each,
// the tables whose count differs from the dump's.
func (r *Restorer) CheckRowCounts(ctx context.Context, conn Conn, database string, want []TableRows) ([]string, error) {
	db, err := connectTo(ctx, conn, database)
	if err != nil {
		return nil, err
	}
	defer closeConn(db)
	var mismatches []string
	for _, t := range want {
		name := pgx.Identifier{t.Schema, t.Table}.Sanitize()
		var n int64
		if err := db.QueryRow(ctx, "SELECT count(*) FROM ONLY "+name).Scan(&n); err != nil {
			if sqlState(err) == sqlUndefinedTable {
				mismatches = append(mismatches, fmt.Sprintf("table %s of the dump is not in the restored database", name))
				continue
			}
			return nil, stmtError(ctx, err, "count the rows of table "+name)
		}
		if n != t.Rows {
			mismatches = append(mismatches, fmt.Sprintf("table %s has %d rows where the dump holds %d", name, n, t.Rows))
		}
	}
	return mismatches, nil
}

// FileDocuments calls fn with the UUID and size of every file document of database with contents
// (the rows a snapshot includes, fileDocuments); a database without the table has none.
func (r *Restorer) FileDocuments(ctx context.Context, conn Conn, database string, fn func(uuid string, size int64) error) error {
	db, err := connectTo(ctx, conn, database)
	if err != nil {
		return err
	}
	defer closeConn(db)
	var exists bool
	if err := db.QueryRow(ctx, fileDocumentExists).Scan(&exists); err != nil {
		return stmtError(ctx, err, "look for table system$filedocument")
	}
	if !exists {
		return nil
	}
	rows, err := db.Query(ctx, fileDocuments)
	if err != nil {
		return stmtError(ctx, err, "read table system$filedocument")
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id   int64
			uuid *string
			size *int64
		)
		if err := rows.Scan(&id, &uuid, &size); err != nil {
			return stmtError(ctx, err, "read table system$filedocument")
		}
		if uuid == nil || !isUUID(*uuid) {
			continue // a backup warned about it and kept no file for it
		}
		var n int64
		if size != nil {
			n = *size
		}
		if err := fn(*uuid, n); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return stmtError(ctx, err, "read table system$filedocument")
	}
	return nil
}
