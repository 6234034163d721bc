package archive

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// CompressedResult describes a committed dump blob (see DumpWriter).
type CompressedResult struct {
	Size    int64   // bytes of the blob: gzip header, deflate segments and trailer
	RawSize int64   // bytes compressed: what the blob gunzips to
	CRC32   uint32  // CRC-32 (IEEE) of those bytes, as in the gzip trailer
	Blocks  []Block // the committed blocks, in blob order: what VerifyBlob checks the blob against
}

// DumpWriter compresses a stream of unknown length, pg_dump's output, into a blob that is one standard
// gzip member of exactly those bytes, with the Builder's machinery: chunks of Options.ChunkSize bytes
// deflated in parallel, staged as blocks with their MD5, the same pools and back-pressure, at most
// MaxBlocks blocks. Builder.WriteCompressedDatabase can splice the blob into an archive later.
//
// Write and ReadFrom add bytes in the order of the calls; they must not run concurrently with each
// other. Any failure (the sink, the reader, ctx, a misuse) stops the goroutines and ensures Commit is
// never called. Call Finish or Abort exactly once; Abort and Err are safe from any goroutine.
type DumpWriter struct{ b *Builder }

// NewDumpWriter starts the compressing and staging goroutines of a new dump blob. ctx bounds the whole
// write; Options are those of a Builder (ModTime is not used, Progress reports DumpBytes). Invalid
// options fail the writer at once; the error is returned by every later call.
func NewDumpWriter(ctx context.Context, sink BlockSink, opts Options) *DumpWriter {
	b := NewBuilder(ctx, sink, opts)
	b.dump.first = true // the only stream: its first block carries the gzip header
	return &DumpWriter{b: b}
}

// WriteCompressed writes r, until its EOF, as a dump blob through sink and commits it: NewDumpWriter,
// ReadFrom and Finish in one call. Cancel ctx to abort it; nothing is committed on error. A reader that
// blocks (pg_dump's stdout) should end when ctx ends, for example with exec.CommandContext.
func WriteCompressed(ctx context.Context, sink BlockSink, r io.Reader, opts Options) (CompressedResult, error) {
	w := NewDumpWriter(ctx, sink, opts)
	if _, err := w.ReadFrom(r); err != nil {
		w.Abort()
		return CompressedResult{}, err
	}
	return w.Finish()
}

// ReadFrom compresses r until its EOF, reading straight into chunk buffers, and returns the bytes read.
// Any error fails the whole blob. A reader that blocks (pg_dump's stdout) should end when the writer's
// context ends, for example with exec.CommandContext.
func (w *DumpWriter) ReadFrom(r io.Reader) (int64, error) {
	b := w.b
	if err := w.enter(); err != nil {
		return 0, err
	}
	defer b.leave()
	before := b.dump.n
	n, err := b.dump.readFrom(r, func(total int64) {
		b.dumpBytes.Store(before + total)
		b.report()
	})
	if err != nil {
		if errors.As(err, new(readError)) {
			err = fmt.Errorf("read database dump: %w", err)
		}
		b.fail(err)
		return n, err
	}
	if err := b.Err(); err != nil { // the build failed while r gave its last bytes
		return n, err
	}
	b.dumpBytes.Store(b.dump.n)
	b.report()
	return n, nil
}

// Write compresses p, so that a DumpWriter can be exec.Cmd's Stdout. Progress is reported each time a
// chunk fills up. An error fails the whole blob.
func (w *DumpWriter) Write(p []byte) (int, error) {
	b := w.b
	if err := w.enter(); err != nil {
		return 0, err
	}
	defer b.leave()
	chunk := int64(b.opts.ChunkSize)
	before := b.dump.n
	n, err := b.dump.Write(p)
	if err != nil {
		b.fail(err)
		return n, err
	}
	b.dumpBytes.Store(b.dump.n)
	if b.dump.n/chunk > before/chunk {
		b.report()
	}
	return n, nil
}

// enter admits one Write or ReadFrom; a concurrent one is a misuse that fails the blob, as its bytes
// would have no defined place.
func (w *DumpWriter) enter() error {
	return w.b.enter(func() error {
		if w.b.active > 0 {
			err := errors.New("dump writer: Write or ReadFrom called while another is running")
			w.b.fail(err)
			return err
		}
		return nil
	})
}

// Finish compresses the bytes left, stages the block that ends the gzip member, waits for every block
// to be staged and commits the blob. Call it once, after the last Write or ReadFrom returned. On error
// nothing is committed; the blocks already staged are dropped by Azure after a week.
func (w *DumpWriter) Finish() (CompressedResult, error) {
	b := w.b
	var res CompressedResult
	err := b.finishOnce("Write or ReadFrom", func() error {
		if b.ctx.Err() != nil {
			return context.Cause(b.ctx)
		}
		if err := b.dump.submit(); err != nil {
			return err
		}
		blocks, sum, err := b.commit([]*stream{b.dump})
		if err != nil {
			return err
		}
		res = CompressedResult{RawSize: sum.n, CRC32: sum.crc, Blocks: blocks}
		for _, blk := range blocks {
			res.Size += blk.Size
		}
		return nil
	})
	if err != nil {
		return CompressedResult{}, err
	}
	return res, nil
}

// Abort stops the writer: the goroutines end and nothing is committed. Abort after a successful Finish
// does nothing; Abort after a failed one, or twice, is harmless. A running Write or ReadFrom returns
// ErrAborted once it next needs the pipeline.
func (w *DumpWriter) Abort() { w.b.Abort() }

// Err returns the error that failed the writer, or nil while it is healthy and after it is committed.
func (w *DumpWriter) Err() error { return w.b.Err() }

// Sizes of the gzip header that opens a dump blob and of the block that closes it; a dump blob has at
// least GzipHeaderSize + GzipTrailerSize bytes, and its deflate segments are the bytes in between.
const (
	GzipHeaderSize  = 10
	GzipTrailerSize = 10
)

var _ [GzipHeaderSize]byte = gzipHeader // the constant is the header's length

// ErrNotDumpBlob is wrapped by the errors of CheckGzipHeader and ParseGzipTrailer: the blob was not
// written by DumpWriter, so its deflate bytes cannot be spliced into an archive.
var ErrNotDumpBlob = errors.New("not a dump blob written by archive.DumpWriter")

// CheckGzipHeader checks that head, the first GzipHeaderSize bytes of a blob, is exactly the gzip
// header DumpWriter writes (no optional fields, so the deflate data starts right after it).
func CheckGzipHeader(head []byte) error {
	if len(head) != GzipHeaderSize {
		return fmt.Errorf("%w: a gzip header of %d bytes, want %d", ErrNotDumpBlob, len(head), GzipHeaderSize)
	}
	if !bytes.Equal(head, gzipHeader[:]) {
		return fmt.Errorf("%w: gzip header % x, want % x", ErrNotDumpBlob, head, gzipHeader)
	}
	return nil
}

// ParseGzipTrailer parses tail, the last GzipTrailerSize bytes of a dump blob: the empty final deflate
// block (03 00) that ends DumpWriter's member, then the CRC-32 and the ISIZE (length mod 2^32) of what
// the blob inflates to. The caller checks that ISIZE is the dump's size mod 2^32.
func ParseGzipTrailer(tail []byte) (crc, isize uint32, err error) {
	if len(tail) != GzipTrailerSize {
		return 0, 0, fmt.Errorf("%w: a gzip trailer of %d bytes, want %d", ErrNotDumpBlob, len(tail), GzipTrailerSize)
	}
	if tail[0] != 0x03 || tail[1] != 0x00 {
		return 0, 0, fmt.Errorf("%w: it does not end with an empty final deflate block (03 00) and the gzip trailer: % x", ErrNotDumpBlob, tail)
	}
	return binary.LittleEndian.Uint32(tail[2:6]), binary.LittleEndian.Uint32(tail[6:10]), nil
}
