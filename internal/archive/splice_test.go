package archive

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dumpBody is what a caller splices: the deflate segments of a dump blob, after checking its ends as
// the caller must, and the dump's size and CRC-32 from the trailer.
func dumpBody(t *testing.T, blob []byte, rawSize int64) ([]byte, uint32) {
	t.Helper()
	if err := CheckGzipHeader(blob[:GzipHeaderSize]); err != nil {
		t.Fatal(err)
	}
	crc, isize, err := ParseGzipTrailer(blob[len(blob)-GzipTrailerSize:])
	if err != nil || isize != uint32(rawSize) {
		t.Fatalf("ParseGzipTrailer: ISIZE %d, %v; want %d", isize, err, uint32(rawSize))
	}
	return blob[GzipHeaderSize : len(blob)-GzipTrailerSize], crc
}

// buildInOrder builds an archive over a memSink, the dump written by writeDump while the files are
// added one after the other, so that two builds of the same files give the same tar.
func buildInOrder(t *testing.T, opts Options, files []testFile, writeDump func(*Builder) error) ([]byte, Result, *memSink) {
	t.Helper()
	sink := newMemSink()
	b := NewBuilder(context.Background(), sink, opts)
	defer b.Abort()
	if err := writeDump(b); err != nil {
		t.Fatalf("writing the dump: %v", err)
	}
	for _, f := range files {
		if err := b.AddFile(f.uuid, int64(len(f.data)), iotestHalfReader(f.data)); err != nil {
			t.Fatalf("AddFile: %v", err)
		}
	}
	res, err := b.Finish(testMeta)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	checkCommitted(t, sink, res.Size, res.Blocks)
	return sink.blob, res, sink
}

// TestSpliceRoundTrip: an archive whose dump is spliced from a dump blob reads with Go, GNU tar,
// Python's tarfile (from a file and streaming) and Inspect, db/db.backup being the dump; its blocks
// hold the blob's deflate bytes verbatim, cut at ChunkSize; and it inflates to the same tar as an
// archive of the same dump and files written with WriteDatabase.
func TestSpliceRoundTrip(t *testing.T) {
	random := make([]byte, 5*dumpChunk+3)
	fillRandom(random, 4)
	copy(random, "PGDMP\x01\x0e\x00")
	tests := []struct {
		name  string
		dump  []byte
		chunk int // the archive's ChunkSize
	}{
		{"empty", nil, 1024},
		{"1 byte", makeDump(1, 1), 1024},
		{"511 bytes", makeDump(511, 2), 1024},
		{"512 bytes, no padding", makeDump(512, 3), 1024},
		{"many segments, blocks cut inside them", makeDump(9*dumpChunk+77, 5), 1024},
		{"many segments in one block", makeDump(9*dumpChunk+77, 5), 64 << 10},
		{"incompressible", random, 512},
	}
	files := makeFiles(0, 100, 3000, 5000, 9000, 20000)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			blob, dres := writeDumpBlob(t, dumpOptions(), tt.dump)
			body, crc := dumpBody(t, blob, dres.RawSize)
			opts := testOptions()
			opts.ChunkSize = tt.chunk // files above ChunkSize/4 are large, streamed in blocks of their own
			spliced, res, sink := buildInOrder(t, opts, files, func(b *Builder) error {
				n, err := b.WriteCompressedDatabase(iotestHalfReader(body), int64(len(body)), dres.RawSize, crc)
				if err == nil && n != int64(len(body)) {
					err = fmt.Errorf("WriteCompressedDatabase read %d bytes, want %d", n, len(body))
				}
				return err
			})
			verifySplicedArchive(t, spliced, res, sink, tt.dump, files, len(tt.dump) >= 8, body)

			var dumpBlocks int
			for _, blk := range res.Blocks {
				if blockName(blk.ID)[0] == 'd' {
					dumpBlocks++
					if blk.Size > int64(tt.chunk) {
						t.Errorf("dump block %s has %d bytes, more than ChunkSize %d", blockName(blk.ID), blk.Size, tt.chunk)
					}
				}
			}
			if want := (len(body)+tt.chunk-1)/tt.chunk + min(padding(int64(len(tt.dump))), 1); dumpBlocks != want {
				t.Errorf("%d dump blocks, want %d: the body cut at ChunkSize, then the padding", dumpBlocks, want)
			}

			plain, _, _ := buildInOrder(t, opts, files, func(b *Builder) error {
				_, err := b.WriteDatabase(bytes.NewReader(tt.dump))
				return err
			})
			if a, b := gunzip(t, spliced), gunzip(t, plain); !bytes.Equal(a, b) {
				t.Errorf("the spliced archive inflates to %d bytes, the one written with WriteDatabase to %d, or they differ", len(a), len(b))
			}
		})
	}
}

func TestSpliceProgress(t *testing.T) {
	checkNoLeak(t)
	dump := makeDump(20*dumpChunk, 6)
	blob, dres := writeDumpBlob(t, dumpOptions(), dump)
	body, crc := dumpBody(t, blob, dres.RawSize)
	var mu sync.Mutex
	var seen []int64
	opts := testOptions()
	opts.ChunkSize = 512
	opts.Progress = func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, p.DumpBytes)
	}
	buildInOrder(t, opts, nil, func(b *Builder) error {
		_, err := b.WriteCompressedDatabase(bytes.NewReader(body), int64(len(body)), dres.RawSize, crc)
		return err
	})
	if want := len(body) / 512; len(seen) < want || seen[len(seen)-1] != int64(len(dump)) {
		t.Fatalf("%d reports ending with %v, want at least %d (one per block) ending with %d", len(seen), seen[max(0, len(seen)-1):], want, len(dump))
	}
	for i, p := range seen {
		if p < 0 || p > int64(len(dump)) || (i > 0 && p < seen[i-1]) {
			t.Fatalf("progress %d after %d: not rising from 0 to the dump's size %d", p, seen[max(0, i-1)], len(dump))
		}
	}
}

// TestSpliceFailures: a body that is not what the caller said, or a sink that fails while the body is
// staged, fails the build with a clear error, and nothing is committed.
func TestSpliceFailures(t *testing.T) {
	dump := makeDump(8*dumpChunk+5, 7)
	blob, dres := writeDumpBlob(t, dumpOptions(), dump)
	body, crc := dumpBody(t, blob, dres.RawSize)
	size := int64(len(body))
	tests := []struct {
		name    string
		sink    func(*memSink)
		write   func(*Builder) (int64, error)
		wantErr error
		wantMsg string
	}{
		{"body shorter than bodySize", nil, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(body[:size-1]), size, dres.RawSize, crc)
		}, nil, fmt.Sprintf("write compressed database: read the compressed dump: short read: got %d of %d bytes", size-1, size)},
		{"body longer than bodySize", nil, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(append(bytes.Clone(body), 0)), size, dres.RawSize, crc)
		}, nil, fmt.Sprintf("read the compressed dump: reader has more than the stated %d bytes", size)},
		{"empty body, bodySize 1", nil, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(nil), 1, 10, crc)
		}, nil, "short read: got 0 of 1 bytes"},
		{"body reader fails", nil, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(&failingReader{data: body[:3000], err: errRead}, size, dres.RawSize, crc)
		}, errRead, "read the compressed dump: "},
		{"body cut short at a plausible size", nil, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(body[:size-1]), size-1, dres.RawSize, crc)
		}, nil, "not on a sync flush (00 00 ff ff)"},
		{"negative bodySize", nil, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(body), -1, dres.RawSize, crc)
		}, nil, "negative size"},
		{"an empty body for a dump", nil, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(nil), 0, 5, crc)
		}, nil, "an empty body cannot inflate to a dump of 5 bytes"},
		{"a CRC-32 for an empty dump", nil, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(nil), 0, 0, 7)
		}, nil, "CRC-32 00000007 for an empty dump"},
		{"the first body block fails to stage", func(s *memSink) { s.failOn = 1 }, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(body), size, dres.RawSize, crc)
		}, errStage, "stage block d-"},
		{"a later body block fails to stage", func(s *memSink) { s.failOn = 4 }, func(b *Builder) (int64, error) {
			return b.WriteCompressedDatabase(bytes.NewReader(body), size, dres.RawSize, crc)
		}, errStage, "stage block d-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			sink := newMemSink()
			if tt.sink != nil {
				tt.sink(sink)
			}
			opts := testOptions()
			opts.ChunkSize = 512 // the body is about 10 blocks
			b := NewBuilder(context.Background(), sink, opts)
			var err error
			waitFor(t, "WriteCompressedDatabase", func() { _, err = tt.write(b) })
			// A failure to stage may surface in Finish only, once the body has been read.
			f := makeFiles(100)[0]
			addErr := b.AddFile(f.uuid, 100, bytes.NewReader(f.data))
			var finishErr error
			waitFor(t, "Finish", func() { _, finishErr = b.Finish(testMeta) })
			for what, err := range map[string]error{"Finish": finishErr, "WriteCompressedDatabase or Finish": errors.Join(err, finishErr)} {
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
					t.Errorf("%s: got %v, want an error saying %q", what, err, tt.wantMsg)
				}
			}
			if tt.sink == nil && (err == nil || addErr == nil) {
				t.Errorf("WriteCompressedDatabase: %v, AddFile after it: %v; want both to fail", err, addErr)
			}
			if n := sink.commitCount(); n != 0 {
				t.Errorf("Commit called %d times, want 0", n)
			}
		})
	}
}

// TestSpliceAbort: Abort stops a splice in progress; nothing is committed.
func TestSpliceAbort(t *testing.T) {
	checkNoLeak(t)
	sink := newMemSink()
	b := NewBuilder(context.Background(), sink, testOptions())
	r := &endless{}
	done := make(chan error, 1)
	go func() {
		_, err := b.WriteCompressedDatabase(r, 1<<40, 1<<42, 1)
		done <- err
	}()
	for r.count() < 1<<20 {
		time.Sleep(time.Millisecond)
	}
	waitFor(t, "Abort", b.Abort)
	var err error
	waitFor(t, "WriteCompressedDatabase after Abort", func() { err = <-done })
	if !errors.Is(err, ErrAborted) {
		t.Errorf("WriteCompressedDatabase: got %v, want %v", err, ErrAborted)
	}
	if _, err := b.Finish(testMeta); !errors.Is(err, ErrAborted) {
		t.Errorf("Finish: got %v, want %v", err, ErrAborted)
	}
	if n := sink.commitCount(); n != 0 {
		t.Errorf("Commit called %d times, want 0", n)
	}
}

// gateSink holds every StageBlock call until open is closed.
type gateSink struct {
	open   chan struct{}
	staged atomic.Int64
}

func (g *gateSink) StageBlock(ctx context.Context, id string, data []byte, contentMD5 [md5.Size]byte) error {
	select {
	case <-g.open:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	g.staged.Add(1)
	return nil
}

func (g *gateSink) Commit(context.Context, []string) error { return nil }

// TestSpliceBackPressure: while the sink stages nothing, a splice reads no more of the body than the
// output pool holds (Concurrency + Uploads blocks), then goes on when the sink does.
func TestSpliceBackPressure(t *testing.T) {
	checkNoLeak(t)
	dump := makeDump(64*dumpChunk, 8)
	random := make([]byte, 100*dumpChunk)
	fillRandom(random, 8)
	dump = append(dump, random...) // incompressible: the body is many blocks
	blob, dres := writeDumpBlob(t, dumpOptions(), dump)
	body, crc := dumpBody(t, blob, dres.RawSize)
	opts := testOptions()
	opts.ChunkSize = 1024
	opts.Concurrency, opts.Uploads = 2, 3
	bound := int64((opts.Concurrency + opts.Uploads) * opts.ChunkSize)
	if int64(len(body)) < 10*bound {
		t.Fatalf("a body of %d bytes is too small to show a bound of %d", len(body), bound)
	}
	sink := &gateSink{open: make(chan struct{})}
	b := NewBuilder(context.Background(), sink, opts)
	defer b.Abort()
	r := &countingReader{r: bytes.NewReader(body)}
	done := make(chan error, 1)
	go func() {
		_, err := b.WriteCompressedDatabase(r, int64(len(body)), dres.RawSize, crc)
		done <- err
	}()
	// Wait until the reads stop (or pass the bound, which fails at once).
	for last, still := int64(-1), 0; still < 20 && r.count() <= bound; {
		time.Sleep(5 * time.Millisecond)
		if n := r.count(); n == last && n > 0 {
			still++
		} else {
			last, still = n, 0
		}
	}
	if n := r.count(); n > bound || n == 0 {
		t.Errorf("with the sink stalled, %d bytes of the body were read, want 1 to %d", n, bound)
	}
	close(sink.open)
	var err error
	waitFor(t, "WriteCompressedDatabase", func() { err = <-done })
	if err != nil || r.count() != int64(len(body)) {
		t.Errorf("WriteCompressedDatabase: %v after reading %d of %d bytes", err, r.count(), len(body))
	}
	if _, err := b.Finish(testMeta); err != nil {
		t.Errorf("Finish: %v", err)
	}
}

// TestSpliceAfterWriteDatabase: a second dump is refused, as a second WriteDatabase is, and the build
// goes on with the first.
func TestSpliceAfterWriteDatabase(t *testing.T) {
	checkNoLeak(t)
	dump := makeDump(3000, 9)
	blob, dres := writeDumpBlob(t, dumpOptions(), makeDump(5000, 10))
	body, crc := dumpBody(t, blob, dres.RawSize)
	files := makeFiles(10)
	archive, res, sink := buildInOrder(t, testOptions(), files, func(b *Builder) error {
		if _, err := b.WriteDatabase(bytes.NewReader(dump)); err != nil {
			return err
		}
		_, err := b.WriteCompressedDatabase(bytes.NewReader(body), int64(len(body)), dres.RawSize, crc)
		if err == nil || !strings.Contains(err.Error(), "write database: called twice") {
			t.Errorf("WriteCompressedDatabase after WriteDatabase: got %v, want a refusal", err)
		}
		return nil
	})
	verifyArchive(t, archive, res, sink, dump, files, true)
}

// TestSpliceTrustsTheCRC: the builder does not inflate the body, so a wrong CRC-32 is not caught while
// building; it makes an archive whose gzip trailer gzip readers reject.
func TestSpliceTrustsTheCRC(t *testing.T) {
	checkNoLeak(t)
	blob, dres := writeDumpBlob(t, dumpOptions(), makeDump(3000, 11))
	body, crc := dumpBody(t, blob, dres.RawSize)
	archive, _, _ := buildInOrder(t, testOptions(), nil, func(b *Builder) error {
		_, err := b.WriteCompressedDatabase(bytes.NewReader(body), int64(len(body)), dres.RawSize, crc^1)
		return err
	})
	zr, err := stdgzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(zr); !errors.Is(err, stdgzip.ErrChecksum) {
		t.Errorf("compress/gzip of an archive spliced with a wrong CRC-32: got %v, want %v", err, stdgzip.ErrChecksum)
	}
}
