package blobstore

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/mxazure/backups/internal/backup"
)

// A manifest is one gzip stream (a single member) of JSON lines: the first line is the
// backup.ManifestHeader, each further line one backup.ManifestEntry, in strictly increasing UUID
// order, every line ended by "\n". Nothing may follow the last line, nor the gzip stream. The
// encoder refuses what the decoder would: a manifest written is always read back.

// ErrManifestDamaged is the cause, for errors.Is, of every error about a manifest that is not one: not
// gzip, cut short, malformed, or disagreeing with its header.
var ErrManifestDamaged = errors.New("the manifest is damaged")

// maxManifestLine is the longest line a manifest may have. An entry has about 200 bytes and a header
// about 300: the bound only keeps the decoder's memory fixed whatever it is given.
const maxManifestLine = 64 << 10

// manifestDamage is an ErrManifestDamaged that says where and why.
type manifestDamage struct {
	line int // 0: not about one line
	why  string
	err  error // the decoder's, if any
}

func (d *manifestDamage) Error() string {
	s := "the manifest is damaged"
	if d.line > 0 {
		s += fmt.Sprintf(" at line %d", d.line)
	}
	s += ": " + d.why
	if d.err != nil {
		s += " (" + d.err.Error() + ")"
	}
	return s
}

// refusal says why the encoder refused to write the manifest.
func (d *manifestDamage) refusal() string {
	if d.line > 1 {
		return fmt.Sprintf("%s (entry %d)", d.why, d.line-1)
	}
	return d.why
}

func (d *manifestDamage) Unwrap() []error {
	if d.err == nil {
		return []error{ErrManifestDamaged}
	}
	return []error{ErrManifestDamaged, d.err}
}

func damaged(line int, err error, format string, args ...any) error {
	return &manifestDamage{line: line, why: fmt.Sprintf(format, args...), err: err}
}

// encodeManifest writes the manifest of h and entries to w. A zero Format and Version are
// ManifestFormat and ManifestVersion; anything the decoder would refuse is an error (an
// ErrManifestDamaged) and nothing is written.
func encodeManifest(w io.Writer, h backup.ManifestHeader, entries []backup.ManifestEntry) error {
	if h.Format == "" && h.Version == 0 {
		h.Format, h.Version = backup.ManifestFormat, backup.ManifestVersion
	}
	if err := checkHeader(h); err != nil {
		return err
	}
	var c entryCheck
	for i, e := range entries {
		if err := c.next(i+2, h, e); err != nil {
			return err
		}
	}
	if err := c.end(h); err != nil {
		return err
	}
	return writeGzipLines(w, "the manifest", h, entries)
}

// writeGzipLines writes a header line and one line per entry as gzip-compressed JSON lines: the form
// of manifests and restore plans. what names the document in errors.
func writeGzipLines[E any](w io.Writer, what string, h any, entries []E) error {
	zw := gzip.NewWriter(w)
	if err := writeLine(zw, 1, h); err != nil {
		return err
	}
	for i, e := range entries {
		if err := writeLine(zw, i+2, e); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compress %s: %w", what, err)
	}
	return nil
}

func writeLine(w io.Writer, line int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode line %d of the manifest: %w", line, err)
	}
	if len(b)+1 > maxManifestLine {
		return damaged(line, nil, "the line would have %d bytes, more than the %d a line may have", len(b)+1, maxManifestLine)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("compress line %d of the manifest: %w", line, err)
	}
	return nil
}

// decodeManifest reads a manifest from r, calls fn for each entry in order, and returns the header.
// Its memory does not grow with the manifest: one line at a time, at most maxManifestLine bytes. fn
// may have been called for entries of a manifest that then proves damaged (its count or sum checked
// at the end): its caller keeps nothing of a read that fails. Errors: fn's own, as is; r's own, as is;
// every other is an ErrManifestDamaged.
func decodeManifest(r io.Reader, fn func(backup.ManifestEntry) error) (backup.ManifestHeader, error) {
	src := &recordingReader{r: r}
	h, err := decodeFrom(src, fn)
	var d *manifestDamage
	if errors.As(err, &d) && src.err != nil {
		return backup.ManifestHeader{}, src.err // what looks damaged was not read
	}
	return h, err
}

func decodeFrom(src io.Reader, fn func(backup.ManifestEntry) error) (backup.ManifestHeader, error) {
	in := bufio.NewReader(src) // a flate.Reader: the gzip reader reads no byte past its stream
	zr, err := gzip.NewReader(in)
	switch {
	case err == io.EOF:
		return backup.ManifestHeader{}, damaged(0, nil, "it is empty")
	case err != nil:
		return backup.ManifestHeader{}, damaged(0, err, "it is not gzip-compressed")
	}
	zr.Multistream(false)
	lines := &lineReader{r: bufio.NewReaderSize(zr, maxManifestLine)}
	h, err := readHeader(lines)
	if err != nil {
		return backup.ManifestHeader{}, err
	}
	var c entryCheck
	for {
		line, err := lines.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return backup.ManifestHeader{}, err
		}
		var e backup.ManifestEntry
		if err := decodeLine(line, &e); err != nil {
			return backup.ManifestHeader{}, damaged(lines.n, err, "the line is not a manifest entry")
		}
		if err := c.next(lines.n, h, e); err != nil {
			return backup.ManifestHeader{}, err
		}
		if err := fn(e); err != nil {
			return backup.ManifestHeader{}, err
		}
	}
	if err := c.end(h); err != nil {
		return backup.ManifestHeader{}, err
	}
	switch _, err := in.ReadByte(); {
	case err == nil:
		return backup.ManifestHeader{}, damaged(0, nil, "data follows the end of its compressed stream")
	case err != io.EOF:
		return backup.ManifestHeader{}, damaged(0, err, "what follows its compressed stream cannot be read")
	}
	return h, nil
}

// readHeader reads and checks the first line.
func readHeader(lines *lineReader) (backup.ManifestHeader, error) {
	line, err := lines.next()
	if err == io.EOF {
		return backup.ManifestHeader{}, damaged(0, nil, "it has no header")
	}
	if err != nil {
		return backup.ManifestHeader{}, err
	}
	// Format and version first, so that a manifest of another format or version says so rather
	// than that it has fields this version does not know.
	var kind struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(line, &kind); err != nil {
		return backup.ManifestHeader{}, damaged(1, err, "the header is not a JSON object")
	}
	if kind.Format != backup.ManifestFormat || kind.Version != backup.ManifestVersion {
		return backup.ManifestHeader{}, damaged(1, nil, "it is format %q version %d, not %q version %d",
			kind.Format, kind.Version, backup.ManifestFormat, backup.ManifestVersion)
	}
	var h backup.ManifestHeader
	if err := decodeLine(line, &h); err != nil {
		return backup.ManifestHeader{}, damaged(1, err, "the line is not a manifest header")
	}
	return h, checkHeader(h)
}

// decodeLine decodes one JSON object into v, refusing fields v does not have and anything after it.
func decodeLine(line []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("something follows the JSON object on its line")
	}
	return nil
}

// lineReader gives the lines of the decompressed manifest, "\n" included, each at most
// maxManifestLine bytes; n is the number of the last line read (from 1). Its errors are io.EOF after
// the last full line, or an ErrManifestDamaged.
type lineReader struct {
	r *bufio.Reader
	n int
}

func (l *lineReader) next() ([]byte, error) {
	line, err := l.r.ReadSlice('\n')
	l.n++
	switch {
	case err == nil && len(line) == 1:
		return nil, damaged(l.n, nil, "the line is empty")
	case err == nil:
		return line, nil
	case err == bufio.ErrBufferFull:
		return nil, damaged(l.n, nil, "the line is longer than the %d bytes a line may have", maxManifestLine)
	case err == io.EOF && len(line) == 0:
		return nil, io.EOF
	case err == io.EOF:
		return nil, damaged(l.n, nil, "the last line does not end with a line feed")
	case err == io.ErrUnexpectedEOF:
		return nil, damaged(l.n, err, "it is cut short")
	}
	return nil, damaged(l.n, err, "its compressed data is damaged")
}

// checkHeader is what a header must be, read or written.
func checkHeader(h backup.ManifestHeader) error {
	switch {
	case h.Format != backup.ManifestFormat || h.Version != backup.ManifestVersion:
		return damaged(1, nil, "the header is format %q version %d, not %q version %d", h.Format, h.Version, backup.ManifestFormat, backup.ManifestVersion)
	case !validNamespace(h.Namespace):
		return damaged(1, nil, "the header's namespace %q is not a namespace", h.Namespace)
	case !canonicalUUID(h.EnvironmentID):
		return damaged(1, nil, "the header's environment id %q is not a UUID in lowercase canonical form", h.EnvironmentID)
	case !canonicalUUID(h.SnapshotID):
		return damaged(1, nil, "the header's snapshot id %q is not a UUID in lowercase canonical form", h.SnapshotID)
	case h.Files < 0 || h.FilesBytes < 0:
		return damaged(1, nil, "the header announces %d files of %d bytes", h.Files, h.FilesBytes)
	}
	return nil
}

// entryCheck checks the entries in order against each other and, at the end, against the header.
type entryCheck struct {
	prev  string // UUID of the previous entry
	count int
	bytes int64
}

// next checks entry e, on the given line.
func (c *entryCheck) next(line int, h backup.ManifestHeader, e backup.ManifestEntry) error {
	uuid, size, objOK := backup.ParseObjectName(e.Object)
	switch {
	case !canonicalUUID(e.UUID):
		return damaged(line, nil, "the entry's uuid %q is not a UUID in lowercase canonical form", e.UUID)
	case c.count > 0 && e.UUID == c.prev:
		return damaged(line, nil, "file %s is listed twice", e.UUID)
	case c.count > 0 && e.UUID < c.prev:
		return damaged(line, nil, "file %s comes after %s: the entries are not in UUID order", e.UUID, c.prev)
	case e.Size < 0:
		return damaged(line, nil, "file %s has a negative size, %d", e.UUID, e.Size)
	case len(e.MD5) != 0 && len(e.MD5) != md5.Size:
		return damaged(line, nil, "file %s has an MD5 of %d bytes, not %d", e.UUID, len(e.MD5), md5.Size)
	case !objOK:
		return damaged(line, nil, "file %s names %q, which is not the name of a store object", e.UUID, e.Object)
	case uuid != e.UUID || size != e.Size:
		return damaged(line, nil, "file %s of %d bytes names object %s, which is of another file or size", e.UUID, e.Size, e.Object)
	case len(e.MD5) != 0 && e.Object != backup.ObjectName(backup.SourceFile{UUID: e.UUID, Size: e.Size, MD5: e.MD5}):
		return damaged(line, nil, "file %s names object %s, which is not the object of its MD5", e.UUID, e.Object)
	case c.count == h.Files:
		return damaged(line, nil, "it has more entries than the %d its header announces", h.Files)
	case c.bytes > math.MaxInt64-e.Size:
		return damaged(line, nil, "the sizes of its files add up to more than %d bytes", int64(math.MaxInt64))
	}
	c.prev, c.count, c.bytes = e.UUID, c.count+1, c.bytes+e.Size
	return nil
}

// end checks the entries, all seen, against the header.
func (c *entryCheck) end(h backup.ManifestHeader) error {
	switch {
	case c.count != h.Files:
		return damaged(0, nil, "it has %d entries where its header announces %d", c.count, h.Files)
	case c.bytes != h.FilesBytes:
		return damaged(0, nil, "its files have %d bytes where its header announces %d", c.bytes, h.FilesBytes)
	}
	return nil
}

// recordingReader keeps the first error of r other than io.EOF: a read that failed is not damage.
type recordingReader struct {
	r   io.Reader
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}
