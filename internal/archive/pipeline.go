package archive

import (
	"context"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
)

// pool hands out at most n buffers at a time and reuses them. get blocks while all n are out, which is
// how back-pressure reaches the producers. Buffers are allocated on first use only.
type pool[T any] struct {
	tokens chan struct{}
	free   chan T
	alloc  func() T
}

func newPool[T any](n int, alloc func() T) *pool[T] {
	return &pool[T]{tokens: make(chan struct{}, n), free: make(chan T, n), alloc: alloc}
}

func (p *pool[T]) get(ctx context.Context) (T, error) {
	var zero T
	if ctx.Err() != nil {
		return zero, context.Cause(ctx)
	}
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		return zero, context.Cause(ctx)
	}
	select {
	case v := <-p.free:
		return v, nil
	default:
		return p.alloc(), nil
	}
}

func (p *pool[T]) put(v T) {
	select {
	case p.free <- v:
	default: // cannot happen: at most n buffers are out; drop rather than block
	}
	<-p.tokens
}

// outBuf collects one compressed block. Its capacity is sized for the worst case (incompressible
// input) up front, so it never grows.
type outBuf struct{ b []byte }

func (o *outBuf) Write(p []byte) (int, error) {
	o.b = append(o.b, p...)
	return len(p), nil
}

// compressBound is the largest block one chunk of n bytes can become: deflate's stored blocks add 5
// bytes per 64 KiB, the sync flush 5 and the gzip header 10; the rest is margin.
func compressBound(n int) int { return n + n/64 + 1024 }

// gzipHeader starts the archive's one gzip member (RFC 1952): deflate, no flags, no modification time,
// operating system unknown.
var gzipHeader = [10]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}

// gzipTrailer ends the gzip member: an empty final deflate block with fixed codes (BFINAL set, so
// readers stop there), then the CRC-32 and the length mod 2^32 of the whole tar.
func gzipTrailer(crc uint32, n int64) []byte {
	t := []byte{0x03, 0x00}
	t = binary.LittleEndian.AppendUint32(t, crc)
	return binary.LittleEndian.AppendUint32(t, uint32(n))
}

// job is one full chunk on its way to a compressor.
type job struct {
	id    blockID
	data  []byte // from Builder.ins, returned after compression
	first bool   // the first block of the blob: it starts with the gzip header
}

// rawSum is the CRC-32 and length of one block's uncompressed bytes.
type rawSum struct {
	crc uint32
	n   int64
}

// block is one compressed chunk on its way to the sink.
type block struct {
	id  blockID
	out *outBuf // from Builder.outs, returned after staging
	md5 [md5.Size]byte
}

// stream is one run of consecutive blocks (see the package comment). One goroutine at a time writes to
// a stream; the Builder serialises access to the shared ones.
type stream struct {
	b     *Builder
	kind  byte
	first bool     // committed first: its first block carries the gzip header
	buf   []byte   // chunk being filled, nil between chunks
	ids   []string // IDs of the submitted blocks, in order
	n     int64    // uncompressed bytes written
}

func (b *Builder) newStream(kind byte) *stream { return &stream{b: b, kind: kind} }

// Write appends p to the stream, submitting every chunk that fills up.
func (s *stream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if err := s.ensure(); err != nil {
			return written, err
		}
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf = s.buf[:len(s.buf)+k]
		s.n += int64(k)
		p = p[k:]
		written += k
		if len(s.buf) == cap(s.buf) {
			if err := s.submit(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// readFrom copies r to the stream until EOF, reading straight into chunk buffers. onChunk, if not nil,
// is called after each submitted chunk with the bytes read so far. Errors of r are returned wrapped in
// readError so the caller can tell them from the build's own failure.
func (s *stream) readFrom(r io.Reader, onChunk func(int64)) (int64, error) {
	var total int64
	for {
		if err := s.ensure(); err != nil {
			return total, err
		}
		k, err := r.Read(s.buf[len(s.buf):cap(s.buf)])
		if k < 0 || k > cap(s.buf)-len(s.buf) {
			return total, readError{fmt.Errorf("reader returned an invalid count %d", k)}
		}
		s.buf = s.buf[:len(s.buf)+k]
		s.n += int64(k)
		total += int64(k)
		if len(s.buf) == cap(s.buf) {
			if err := s.submit(); err != nil {
				return total, err
			}
			if onChunk != nil {
				onChunk(total)
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, readError{err}
		}
	}
}

// ensure makes sure a chunk buffer with room is at hand, waiting for one if all are in use.
func (s *stream) ensure() error {
	if err := s.b.ctx.Err(); err != nil {
		return context.Cause(s.b.ctx)
	}
	if s.buf != nil {
		return nil
	}
	buf, err := s.b.ins.get(s.b.ctx)
	if err != nil {
		return err
	}
	s.buf = buf[:0]
	return nil
}

// submit hands the current chunk, if any, to the compressors.
func (s *stream) submit() error {
	if len(s.buf) == 0 {
		return nil
	}
	id, err := s.b.nextID(s.kind)
	if err != nil {
		return err
	}
	j := job{id: id, data: s.buf, first: s.first && len(s.ids) == 0}
	s.buf = nil
	select {
	case s.b.jobs <- j:
	case <-s.b.ctx.Done():
		s.b.ins.put(j.data)
		return context.Cause(s.b.ctx)
	}
	s.ids = append(s.ids, id.id)
	return nil
}

// discard gives back the chunk being filled; used when a stream is abandoned.
func (s *stream) discard() {
	if s.buf != nil {
		s.b.ins.put(s.buf)
		s.buf = nil
	}
}

// readError marks an error of a caller's reader, as opposed to a failure of the build.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

// compressor turns jobs into blocks of raw deflate until the job queue closes or the build fails.
func (b *Builder) compressor() {
	defer b.compressors.Done()
	zw, err := flate.NewWriter(io.Discard, b.opts.Level)
	if err != nil {
		b.fail(fmt.Errorf("deflate writer: %w", err))
		return
	}
	for {
		select {
		case <-b.ctx.Done():
			return
		case j, ok := <-b.jobs:
			if !ok {
				return
			}
			if err := b.compress(zw, j); err != nil {
				b.fail(err)
				return
			}
		}
	}
}

// compress deflates one chunk on its own (a fresh window, so it refers to no other block) and ends it
// on a sync flush (an empty stored block, not final), so that blocks concatenate into one deflate
// stream in any commit order. The CRC-32 of the chunk is kept for the gzip trailer.
func (b *Builder) compress(zw *flate.Writer, j job) error {
	defer b.ins.put(j.data)
	out, err := b.outs.get(b.ctx)
	if err != nil {
		return err
	}
	out.b = out.b[:0]
	if j.first {
		out.b = append(out.b, gzipHeader[:]...)
	}
	zw.Reset(out)
	if _, err := zw.Write(j.data); err != nil {
		b.outs.put(out)
		return fmt.Errorf("compress block %s: %w", j.id.name, err)
	}
	if err := zw.Flush(); err != nil {
		b.outs.put(out)
		return fmt.Errorf("compress block %s: %w", j.id.name, err)
	}
	sum := rawSum{crc: crc32.ChecksumIEEE(j.data), n: int64(len(j.data))}
	b.stagedMu.Lock()
	b.sums[j.id.id] = sum
	b.stagedMu.Unlock()
	// The digests are taken by the compressors, which run in parallel, while the data is hot in cache.
	select {
	case b.blocks <- block{id: j.id, out: out, md5: md5.Sum(out.b)}:
		return nil
	case <-b.ctx.Done():
		b.outs.put(out)
		return context.Cause(b.ctx)
	}
}

// stager hands compressed blocks to the sink until the block queue closes or the build fails.
func (b *Builder) stager() {
	defer b.stagers.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case blk, ok := <-b.blocks:
			if !ok {
				return
			}
			n := len(blk.out.b)
			err := b.sink.StageBlock(b.ctx, blk.id.id, blk.out.b, blk.md5)
			b.outs.put(blk.out)
			if err != nil {
				b.fail(fmt.Errorf("stage block %s: %w", blk.id.name, err))
				return
			}
			b.stagedMu.Lock()
			b.staged[blk.id.id] = Block{ID: blk.id.id, Size: int64(n), MD5: blk.md5}
			b.stagedMu.Unlock()
		}
	}
}
