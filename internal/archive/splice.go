package archive

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"slices"
)

// syncFlush is how every deflate segment DumpWriter writes ends: the LEN and NLEN of an empty stored
// block, not final.
var syncFlush = []byte{0x00, 0x00, 0xff, 0xff}

// WriteCompressedDatabase writes db/db.backup from a dump already compressed by DumpWriter, instead of
// WriteDatabase: body gives exactly bodySize bytes, the deflate segments of the dump blob (its bytes
// from GzipHeaderSize to its size less GzipTrailerSize); dumpSize and crc are the dump's length and
// CRC-32 (the blob's CompressedResult, or its trailer read with ParseGzipTrailer). The bytes are staged
// as they are, neither inflated nor recompressed, in blocks of at most ChunkSize bytes, after the head
// and before the padding of the entry (see the package comment for why that is valid). It returns the
// bytes read from body.
//
// body is trusted to inflate to dumpSize bytes with that CRC-32: the caller checks the blob's ends with
// CheckGzipHeader and ParseGzipTrailer, and VerifyBlob against the dump blob's blocks proves the rest.
// A body that gives more or fewer than bodySize bytes, or does not end on a sync flush, fails the
// build; so does any other error. Call it once, instead of WriteDatabase; it may run concurrently with
// AddFile.
func (b *Builder) WriteCompressedDatabase(body io.Reader, bodySize, dumpSize int64, crc uint32) (int64, error) {
	if err := b.enter(b.claimDump); err != nil {
		return 0, err
	}
	defer b.leave()
	n, err := b.spliceDump(body, bodySize, dumpSize, crc)
	if err != nil {
		err = fmt.Errorf("write compressed database: %w", err)
		b.fail(err)
		return n, context.Cause(b.ctx)
	}
	b.mu.Lock()
	b.dumpDone, b.dumpSize = true, dumpSize
	b.mu.Unlock()
	b.dumpBytes.Store(dumpSize)
	b.report()
	return n, nil
}

func (b *Builder) spliceDump(body io.Reader, bodySize, dumpSize int64, crc uint32) (int64, error) {
	switch {
	case bodySize < 0 || dumpSize < 0:
		return 0, fmt.Errorf("negative size: body %d bytes, dump %d", bodySize, dumpSize)
	case bodySize == 0 && dumpSize > 0:
		return 0, fmt.Errorf("an empty body cannot inflate to a dump of %d bytes", dumpSize)
	case dumpSize == 0 && crc != 0:
		return 0, fmt.Errorf("CRC-32 %08x for an empty dump, whose CRC-32 is 0", crc)
	}
	n, err := b.dump.splice(body, bodySize, rawSum{crc: crc, n: dumpSize}, func(read int64) {
		// Dump bytes are not seen: progress advances with the compressed bytes read.
		b.dumpBytes.Store(int64(float64(dumpSize) * (float64(read) / float64(bodySize))))
		b.report()
	})
	if err != nil {
		if errors.As(err, new(readError)) {
			err = fmt.Errorf("read the compressed dump: %w", err)
		}
		return n, err
	}
	if _, err := b.dump.Write(zeroBlocks[:padding(dumpSize)]); err != nil {
		return n, err
	}
	return n, b.dump.submit()
}

// claimDump refuses a second WriteDatabase or WriteCompressedDatabase; called with b.mu held.
func (b *Builder) claimDump() error {
	if b.dumpCalled {
		return errors.New("write database: called twice")
	}
	b.dumpCalled = true
	return nil
}

// splice stages exactly size bytes of r verbatim, in blocks of at most ChunkSize bytes, through the
// output pool and the stagers (the compressors are not involved). The bytes must be deflate segments
// compressed elsewhere, ending on a sync flush; sum, the CRC-32 and length of all they inflate to, is
// recorded with the first block and an empty sum with the others, so that the CRC chain takes it in at
// this position. onBlock gets the bytes read so far after each block.
func (s *stream) splice(r io.Reader, size int64, sum rawSum, onBlock func(int64)) (int64, error) {
	b := s.b
	if s.buf != nil || len(s.ids) > 0 {
		return 0, errors.New("splice into a stream already written")
	}
	var read int64
	var tail []byte // the last bytes read, up to 4
	for read < size {
		out, err := b.outs.get(b.ctx)
		if err != nil {
			return read, err
		}
		k, err := io.ReadFull(r, out.b[:min(int64(b.opts.ChunkSize), size-read)])
		read += int64(k)
		if err != nil {
			b.outs.put(out)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("short read: got %d of %d bytes", read, size)
			}
			return read, readError{err}
		}
		out.b = out.b[:k]
		tail = slices.Concat(tail, out.b[max(0, k-len(syncFlush)):])
		tail = tail[max(0, len(tail)-len(syncFlush)):]
		id, err := b.nextID(s.kind)
		if err != nil {
			b.outs.put(out)
			return read, err
		}
		var bs rawSum
		if len(s.ids) == 0 {
			bs = sum
		}
		b.stagedMu.Lock()
		b.sums[id.id] = bs
		b.stagedMu.Unlock()
		select {
		case b.blocks <- block{id: id, out: out, md5: md5.Sum(out.b)}:
		case <-b.ctx.Done():
			b.outs.put(out)
			return read, context.Cause(b.ctx)
		}
		s.ids = append(s.ids, id.id)
		s.n += bs.n
		onBlock(read)
	}
	if err := expectEOF(r, size); err != nil {
		return read, readError{err}
	}
	if size > 0 && !bytes.Equal(tail, syncFlush) {
		return read, fmt.Errorf("the compressed dump ends with % x, not on a sync flush (% x): it is not deflate data written by DumpWriter", tail, syncFlush)
	}
	return read, nil
}
