package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/klauspost/compress/gzip"

	"github.com/mxazure/backups/internal/backup"
)

// Limits bound what Inspect reads. A zero field takes its default.
type Limits struct {
	// MaxArchiveBytes bounds the compressed archive. Inspect reads at most one byte more (to tell an
	// archive of exactly the limit from a larger one). Default 64 GiB.
	MaxArchiveBytes int64
	// MaxEntryBytes bounds each entry's stated size; a larger entry is rejected before its data is read.
	// Default 64 GiB.
	MaxEntryBytes int64
	// MaxUnpackedBytes bounds the uncompressed tar stream, which guards against gzip bombs. Default 256 GiB.
	MaxUnpackedBytes int64
	// MaxEntries bounds the number of tar entries, directories included. Default 5,000,000.
	MaxEntries int
}

// DefaultLimits are the limits Inspect applies to zero fields of Limits.
var DefaultLimits = Limits{
	MaxArchiveBytes:  64 << 30,
	MaxEntryBytes:    64 << 30,
	MaxUnpackedBytes: 256 << 30,
	MaxEntries:       5_000_000,
}

func (l Limits) withDefaults() Limits {
	if l.MaxArchiveBytes <= 0 {
		l.MaxArchiveBytes = DefaultLimits.MaxArchiveBytes
	}
	if l.MaxEntryBytes <= 0 {
		l.MaxEntryBytes = DefaultLimits.MaxEntryBytes
	}
	if l.MaxUnpackedBytes <= 0 {
		l.MaxUnpackedBytes = DefaultLimits.MaxUnpackedBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	return l
}

// CheckArchiveSize rejects, as Inspect would after reading past the limit, an archive whose size is
// known before it is read (a blob's) and larger than l.MaxArchiveBytes.
func (l Limits) CheckArchiveSize(size int64) error {
	if max := l.withDefaults().MaxArchiveBytes; size > max {
		has, limit := formatSizes(size, max)
		return backup.Errorf(backup.CodeInvalidParameters, "archive exceeds the size limit of %s: it has %s", limit, has)
	}
	return nil
}

// formatSizes prints a size and the limit it exceeds for a person, in bytes when rounding would make
// them read the same.
func formatSizes(n, limit int64) (string, string) {
	a, b := formatBytes(n), formatBytes(limit)
	if a == b {
		return fmt.Sprintf("%d bytes", n), fmt.Sprintf("%d bytes", limit)
	}
	return a, b
}

// EntryKind says what an entry handed to the visit function is.
type EntryKind int

const (
	EntryDatabase EntryKind = iota + 1 // db/db.backup
	EntryFile                          // a file document under tree/
)

// Entry is an entry handed to the visit function of Inspect.
type Entry struct {
	Kind EntryKind
	Name string // cleaned path in the archive, without a leading "./"
	UUID string // lowercase canonical UUID of a file document; empty for the database
	Size int64
}

// FileEntry is one file document of an archive.
type FileEntry struct {
	UUID string
	Size int64
}

// Manifest describes an archive that Inspect accepted.
type Manifest struct {
	Metadata       *Metadata // parsed .metadata; nil when missing or unreadable (see Warnings)
	DumpSize       int64
	DumpVersion    string // custom-format archive version of the dump, "1.14.0"
	Files          []FileEntry
	FilesSize      int64
	Warnings       []string // things ignored, for the user
	CompressedSize int64    // bytes of the archive as read
	SHA256         string   // hex SHA-256 of the archive as read
}

const (
	maxMetadataBytes = 64 << 10
	maxWarnings      = 50
	// sourceBuffer is how much of the archive one read asks for: a network stream read in gzip's
	// default 4 KiB pieces costs a system call (and a hash call) per 4 KiB.
	sourceBuffer = 128 << 10
)

// Inspect reads an archive from r once, checks it against docs/archive-format.md and limits, and returns what
// it holds. visit, if not nil, is called for db/db.backup and for each file document, in archive order,
// with a reader of that entry's bytes; it may read all, part or none of them. r is read to its end, so
// that CompressedSize and SHA256 cover all of it.
//
// Every rejection of the archive is a *backup.Error with code backup.CodeInvalidParameters and a message
// for the user. An error of visit is returned wrapped with the entry's name, unless it was caused by
// the archive itself (then the rejection is returned). Errors of r and of ctx are returned as they are.
//
// Accepted: a leading "./", directory entries (ignored), flat tree/<uuid> names, a missing or unreadable
// .metadata (a warning), other entries at the root (ignored with a warning), a single zero record as
// end-of-archive marker (a warning). Rejected, besides what the spec lists: an archive that ends without
// any end-of-archive marker. GNU tar accepts that, but a gzip stream that stops at an entry boundary is
// exactly what a multi-member archive cut between two members looks like, and entries would be lost
// silently. Data after the end of the gzip stream is rejected too.
func Inspect(ctx context.Context, r io.Reader, limits Limits, visit func(Entry, io.Reader) error) (Manifest, error) {
	limits = limits.withDefaults()
	in := &inspector{
		ctx:    ctx,
		limits: limits,
		visit:  visit,
		src:    &sourceReader{ctx: ctx, r: r, h: sha256.New(), limit: limits.MaxArchiveBytes},
		seen:   map[string]bool{},
	}
	if err := in.run(); err != nil {
		return Manifest{}, err
	}
	in.m.CompressedSize = in.src.n
	in.m.SHA256 = hex.EncodeToString(in.src.h.Sum(nil))
	return in.m, nil
}

type inspector struct {
	ctx    context.Context
	limits Limits
	visit  func(Entry, io.Reader) error
	src    *sourceReader
	tar    *unpackedReader
	m      Manifest

	entries       int
	lastName      string // of the last entry read, for messages
	lastEnd       int64  // offset in the tar stream where the last entry's data and padding end
	stated        int64  // sum of stated entry sizes
	seen          map[string]bool
	dumpSeen      bool
	dropped       int  // warnings not recorded beyond maxWarnings
	overflowNoted bool // the last warning counts the dropped ones
}

func (in *inspector) run() error {
	zr, err := gzip.NewReader(bufio.NewReaderSize(in.src, sourceBuffer))
	if err != nil {
		if errors.Is(err, io.EOF) {
			return in.reject(err, "archive is empty")
		}
		if errors.Is(err, gzip.ErrHeader) {
			return in.reject(err, "archive is not gzip-compressed")
		}
		return in.streamError(err)
	}
	in.tar = &unpackedReader{r: zr, limit: in.limits.MaxUnpackedBytes}
	tr := tar.NewReader(in.tar)
	for {
		if err := in.ctx.Err(); err != nil {
			return context.Cause(in.ctx)
		}
		hdr, err := tr.Next()
		if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
			err = nil // judged below, with a message of our own
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return in.streamError(err)
		}
		if err := in.entry(hdr, tr); err != nil {
			return err
		}
	}
	if err := in.end(); err != nil {
		return err
	}
	// Read the rest of the gzip stream (tar's record padding) and of r, checking the last CRC.
	if _, err := io.Copy(io.Discard, in.tar); err != nil {
		return in.streamError(err)
	}
	if _, err := io.Copy(io.Discard, in.src); err != nil {
		return in.streamError(err)
	}
	return nil
}

// end checks the end-of-archive marker and that a dump was found.
func (in *inspector) end() error {
	if in.entries == 0 && in.tar.n == 0 {
		return backup.Errorf(backup.CodeInvalidParameters, "archive is not a tar archive: it holds no data")
	}
	switch trailer := in.tar.n - in.lastEnd; {
	case trailer <= 0:
		return backup.Errorf(backup.CodeInvalidParameters, "archive is truncated: it ends without the tar end-of-archive marker, after entry %q (byte %d of the unpacked archive)",
			in.lastName, in.tar.n)
	case trailer < 2*blockSize:
		in.warn("archive ends with a single zero record instead of two")
	}
	if !in.dumpSeen {
		return backup.Errorf(backup.CodeInvalidParameters, "archive has no %s", DumpName)
	}
	return nil
}

// entry checks one tar header and hands the entry on.
func (in *inspector) entry(hdr *tar.Header, tr *tar.Reader) error {
	in.entries++
	if in.entries > in.limits.MaxEntries {
		return backup.Errorf(backup.CodeInvalidParameters, "archive has more than %d entries", in.limits.MaxEntries)
	}
	in.lastName = hdr.Name
	in.lastEnd = in.tar.n
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if err := checkType(hdr); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		in.directory(name)
		return nil
	case tar.TypeXGlobalHeader: // PAX defaults for what follows, as git archive writes; no data
		return nil
	}
	if hdr.Size > in.limits.MaxEntryBytes {
		size, limit := formatSizes(hdr.Size, in.limits.MaxEntryBytes)
		return backup.Errorf(backup.CodeInvalidParameters, "entry %q size %s exceeds the limit of %s", hdr.Name, size, limit)
	}
	in.stated += hdr.Size
	if in.stated > in.limits.MaxUnpackedBytes {
		return in.unpackedTooLarge()
	}
	in.lastEnd = in.tar.n + hdr.Size + int64(padding(hdr.Size))
	switch {
	case name == MetadataName:
		return in.metadata(tr)
	case name == DumpName:
		return in.dump(hdr, tr)
	case strings.HasPrefix(name, treeDir):
		return in.file(name, hdr, tr)
	default:
		in.warn(fmt.Sprintf("entry %q ignored: a snapshot archive holds only %s, db/ and tree/", hdr.Name, MetadataName))
		return nil
	}
}

// cleanName strips leading "./" and cleans the path, rejecting any that could leave the archive root.
// It returns "" for the root itself.
func cleanName(raw string) (string, error) {
	name := raw
	for strings.HasPrefix(name, "./") {
		name = strings.TrimLeft(name[2:], "/")
	}
	if strings.HasPrefix(name, "/") {
		return "", backup.Errorf(backup.CodeInvalidParameters, "entry %q has an absolute path; entries must be relative to the archive root", raw)
	}
	cleaned := path.Clean(name)
	if cleaned == ".." || strings.HasPrefix(cleaned, "../") {
		return "", backup.Errorf(backup.CodeInvalidParameters, "entry %q leaves the archive root", raw)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", backup.Errorf(backup.CodeInvalidParameters, "entry %q contains \"..\"; parent references are not allowed", raw)
		}
	}
	if cleaned == "." {
		return "", nil
	}
	return cleaned, nil
}

// checkType accepts regular files, directories and PAX global headers only.
func checkType(hdr *tar.Header) error {
	kind := ""
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir: // the reader turns the old '\x00' type into one of these
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				kind = "a sparse file; sparse files are"
			}
		}
	case tar.TypeXGlobalHeader:
	case tar.TypeSymlink:
		kind = "a symbolic link; links are"
	case tar.TypeLink:
		kind = "a hard link; links are"
	case tar.TypeChar, tar.TypeBlock:
		kind = "a device file; device files are"
	case tar.TypeFifo:
		kind = "a FIFO; FIFOs are"
	case tar.TypeGNUSparse:
		kind = "a sparse file; sparse files are"
	default:
		return backup.Errorf(backup.CodeInvalidParameters, "entry %q has tar type %q; only regular files and directories are allowed", hdr.Name, hdr.Typeflag)
	}
	if kind != "" {
		return backup.Errorf(backup.CodeInvalidParameters, "entry %q is %s not allowed", hdr.Name, kind)
	}
	return nil
}

func (in *inspector) directory(name string) {
	switch {
	case name == "", name == "db", name == "tree", strings.HasPrefix(name, "db/"), strings.HasPrefix(name, treeDir):
	default:
		in.warn(fmt.Sprintf("directory %q ignored: a snapshot archive holds only %s, db/ and tree/", name+"/", MetadataName))
	}
}

func (in *inspector) metadata(tr *tar.Reader) error {
	if err := in.once(MetadataName); err != nil {
		return err
	}
	data, err := io.ReadAll(io.LimitReader(tr, maxMetadataBytes+1))
	if err != nil {
		return in.streamError(err)
	}
	if len(data) > maxMetadataBytes {
		in.warn(fmt.Sprintf("%s ignored: larger than %s", MetadataName, formatBytes(maxMetadataBytes)))
		return nil
	}
	meta, warning := parseMetadata(data)
	in.m.Metadata = meta
	if warning != "" {
		in.warn(warning)
	}
	return nil
}

// parseMetadata reads .metadata leniently: missing and extra fields are fine, numbers are taken as
// their text. It returns nil and a warning when the entry is not a JSON object.
func parseMetadata(data []byte) (*Metadata, string) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, fmt.Sprintf("%s ignored: not a JSON object", MetadataName)
	}
	var m Metadata
	var bad []string
	for key, dst := range map[string]*string{
		"duration": &m.Duration, "dumpSize": &m.DumpSize, "modelVersion": &m.ModelVersion,
		"databaseSize": &m.DatabaseSize, "filesSize": &m.FilesSize,
	} {
		raw, ok := fields[key]
		if !ok {
			continue
		}
		var n json.Number
		switch {
		case json.Unmarshal(raw, dst) == nil:
		case json.Unmarshal(raw, &n) == nil:
			*dst = n.String()
		default:
			bad = append(bad, key)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return &m, fmt.Sprintf("%s: fields %s ignored: not strings", MetadataName, strings.Join(bad, ", "))
	}
	return &m, ""
}

func (in *inspector) dump(hdr *tar.Header, tr *tar.Reader) error {
	if err := in.once(DumpName); err != nil {
		return err
	}
	in.dumpSeen = true
	notDump := backup.Errorf(backup.CodeInvalidParameters, "%s is not a PostgreSQL custom-format dump", DumpName)
	if hdr.Size < 8 {
		return notDump
	}
	var head [8]byte
	if _, err := io.ReadFull(tr, head[:]); err != nil {
		return in.streamError(err)
	}
	if !bytes.Equal(head[:5], []byte("PGDMP")) {
		return notDump
	}
	in.m.DumpSize = hdr.Size
	in.m.DumpVersion = fmt.Sprintf("%d.%d.%d", head[5], head[6], head[7])
	entry := Entry{Kind: EntryDatabase, Name: DumpName, Size: hdr.Size}
	return in.hand(entry, io.MultiReader(bytes.NewReader(head[:]), tr))
}

func (in *inspector) file(name string, hdr *tar.Header, tr *tar.Reader) error {
	u, ok := treeUUID(name)
	if !ok {
		return backup.Errorf(backup.CodeInvalidParameters, "entry %q is not named by a UUID (tree/<uuid> or tree/xx/yy/<uuid>)", hdr.Name)
	}
	if err := in.once(treeDir + u); err != nil {
		return err
	}
	in.m.Files = append(in.m.Files, FileEntry{UUID: u, Size: hdr.Size})
	in.m.FilesSize += hdr.Size
	return in.hand(Entry{Kind: EntryFile, Name: name, UUID: u, Size: hdr.Size}, tr)
}

// treeUUID returns the UUID of a file document path: tree/<u> or tree/<u[0:2]>/<u[2:4]>/<u>.
func treeUUID(name string) (string, bool) {
	parts := strings.Split(strings.TrimPrefix(name, treeDir), "/")
	u, ok := backup.CanonicalUUID(parts[len(parts)-1])
	switch {
	case !ok:
		return "", false
	case len(parts) == 1:
		return u, true
	case len(parts) == 3 && strings.ToLower(parts[0]) == u[0:2] && strings.ToLower(parts[1]) == u[2:4]:
		return u, true
	}
	return "", false
}

// hand gives an entry to visit. If visit fails because the archive itself is broken, the archive's
// error wins.
func (in *inspector) hand(e Entry, r io.Reader) error {
	if in.visit == nil {
		return nil
	}
	er := &entryReader{r: r}
	if err := in.visit(e, er); err != nil {
		if er.err != nil {
			return in.streamError(er.err)
		}
		return fmt.Errorf("%s: %w", e.Name, err)
	}
	if er.err != nil {
		return in.streamError(er.err)
	}
	return nil
}

// once rejects a second entry with the same meaning.
func (in *inspector) once(key string) error {
	if in.seen[key] {
		return backup.Errorf(backup.CodeInvalidParameters, "archive has more than one entry for %s", key)
	}
	in.seen[key] = true
	return nil
}

func (in *inspector) warn(msg string) {
	if len(in.m.Warnings) < maxWarnings {
		in.m.Warnings = append(in.m.Warnings, msg)
		return
	}
	in.dropped++
	note := backup.Count(in.dropped, "more warning") + " not shown"
	if in.overflowNoted {
		in.m.Warnings[len(in.m.Warnings)-1] = note
	} else {
		in.m.Warnings = append(in.m.Warnings, note)
		in.overflowNoted = true
	}
}

func (in *inspector) reject(cause error, format string, args ...any) error {
	return backup.Wrap(backup.CodeInvalidParameters, cause, format, args...)
}

func (in *inspector) unpackedTooLarge() error {
	return backup.Errorf(backup.CodeInvalidParameters, "archive unpacks to more than the limit of %s", formatBytes(in.limits.MaxUnpackedBytes))
}

// streamError explains an error met while reading the gzip and tar streams, saying where it broke:
// the byte of the archive as uploaded (compressed) where it ended, or, for a damaged stream, about
// where (reads run up to sourceBuffer bytes ahead), and the entry it was in.
func (in *inspector) streamError(err error) error {
	var be *backup.Error
	switch {
	case errors.As(err, &be):
		return err
	case in.src.err != nil: // r failed, ctx ended or the size limit was reached: that comes first
		if errors.Is(in.src.err, errArchiveTooLarge) {
			return backup.Errorf(backup.CodeInvalidParameters, "archive exceeds the size limit of %s", formatBytes(in.limits.MaxArchiveBytes))
		}
		return in.src.err
	case errors.Is(err, errUnpackedTooLarge):
		return in.unpackedTooLarge()
	case errors.Is(err, io.ErrUnexpectedEOF) && in.entries == 0 && in.tar != nil && in.tar.eof:
		// The gzip stream is whole but does not hold even one tar header.
		return in.reject(err, "archive is not a tar archive")
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return in.reject(err, "archive is truncated at byte %d (%s)", in.src.n, in.where())
	case errors.Is(err, gzip.ErrChecksum):
		return in.reject(err, "archive is corrupt: gzip checksum mismatch at the end of its gzip stream, near byte %d; the archive was damaged after it was written", in.src.n)
	case errors.Is(err, gzip.ErrHeader):
		return in.reject(err, "archive is corrupt: it has data that is not gzip-compressed after a gzip member, near byte %d", in.src.n)
	case errors.Is(err, tar.ErrHeader) && in.entries == 0:
		return in.reject(err, "archive is not a tar archive")
	case errors.Is(err, tar.ErrHeader):
		return in.reject(err, "archive is corrupt: invalid tar header at byte %d of the unpacked archive, after entry %q", in.lastEnd, in.lastName)
	}
	return in.reject(err, "archive is corrupt near byte %d (%s)", in.src.n, in.where())
}

// where names the place in the tar stream the reading reached: inside an entry's data, or between
// entries.
func (in *inspector) where() string {
	switch {
	case in.entries == 0 || in.tar == nil:
		return "before the first entry"
	case in.tar.n < in.lastEnd:
		return fmt.Sprintf("inside entry %q", in.lastName)
	}
	return fmt.Sprintf("after entry %q", in.lastName)
}

var (
	errArchiveTooLarge  = errors.New("archive exceeds the size limit")
	errUnpackedTooLarge = errors.New("archive unpacks beyond the limit")
)

// sourceReader reads the compressed archive, hashing and counting it and enforcing the size limit. Its
// first error sticks.
type sourceReader struct {
	ctx   context.Context
	r     io.Reader
	h     hash.Hash
	n     int64
	limit int64
	err   error // error of r (not io.EOF), ctx's cause, or errArchiveTooLarge
	eof   bool
}

func (s *sourceReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.eof {
		return 0, io.EOF
	}
	if s.ctx.Err() != nil {
		s.err = context.Cause(s.ctx)
		return 0, s.err
	}
	if room := s.limit + 1 - s.n; int64(len(p)) > room {
		p = p[:room]
	}
	k, err := s.r.Read(p)
	s.h.Write(p[:k])
	s.n += int64(k)
	switch {
	case s.n > s.limit:
		s.err = errArchiveTooLarge
		return 0, s.err
	case err == io.EOF:
		s.eof = true
	case err != nil:
		s.err = fmt.Errorf("read archive: %w", err)
		return k, s.err
	}
	return k, err
}

// unpackedReader counts the uncompressed tar stream and enforces its limit.
type unpackedReader struct {
	r     io.Reader
	n     int64
	limit int64
	eof   bool // the gzip stream ended cleanly
}

func (u *unpackedReader) Read(p []byte) (int, error) {
	if u.n >= u.limit {
		// Allow a probe for EOF at exactly the limit.
		var one [1]byte
		k, err := u.r.Read(one[:])
		if k > 0 {
			return 0, errUnpackedTooLarge
		}
		if err == io.EOF {
			u.eof = true
		}
		return 0, err
	}
	if room := u.limit - u.n; int64(len(p)) > room {
		p = p[:room]
	}
	k, err := u.r.Read(p)
	u.n += int64(k)
	if err == io.EOF {
		u.eof = true
	}
	return k, err
}

// entryReader remembers an error of the archive met while visit reads an entry.
type entryReader struct {
	r   io.Reader
	err error
}

func (e *entryReader) Read(p []byte) (int, error) {
	k, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return k, err
}
