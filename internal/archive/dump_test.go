package archive

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const dumpChunk = 4096 // ChunkSize of the dump blobs in these tests

func dumpOptions() Options {
	o := testOptions()
	o.ChunkSize = dumpChunk
	return o
}

// writeDumpBlob writes data as a dump blob through a memSink, checks what every blob must satisfy and
// returns it.
func writeDumpBlob(t *testing.T, opts Options, data []byte) ([]byte, CompressedResult) {
	t.Helper()
	sink := newMemSink()
	res, err := WriteCompressed(context.Background(), sink, iotestHalfReader(data), opts)
	if err != nil {
		t.Fatalf("WriteCompressed: %v", err)
	}
	checkDumpBlob(t, sink, res, data)
	return sink.blob, res
}

// checkDumpBlob checks a committed dump blob against the data it was written from: the result, the
// blocks (header first, a self-contained segment each, the trailer last), one gzip member of exactly
// data, and the helpers' reading of its ends.
func checkDumpBlob(t *testing.T, sink *memSink, res CompressedResult, data []byte) {
	t.Helper()
	blob := sink.blob
	checkCommitted(t, sink, res.Size, res.Blocks)
	if want := crc32.ChecksumIEEE(data); res.Size != int64(len(blob)) || res.RawSize != int64(len(data)) || res.CRC32 != want {
		t.Errorf("result: Size %d RawSize %d CRC32 %08x, want %d %d %08x", res.Size, res.RawSize, res.CRC32, len(blob), len(data), want)
	}
	if sink.commits != 1 || len(res.Blocks) != len(sink.ids) {
		t.Fatalf("commits %d, %d blocks in the result, %d committed", sink.commits, len(res.Blocks), len(sink.ids))
	}
	wantBlocks := (len(data)+dumpChunk-1)/dumpChunk + 1
	if sink.ids[0] != res.Blocks[0].ID || len(sink.ids) != wantBlocks {
		t.Errorf("%d blocks committed, want %d: one per chunk and the trailer", len(sink.ids), wantBlocks)
	}
	for i, id := range sink.ids {
		raw, _ := base64.StdEncoding.DecodeString(id)
		want := byte('d')
		if i == len(sink.ids)-1 {
			want = 'z'
		}
		if raw[0] != want {
			t.Errorf("block %d is %s, want a block of stream %c", i, raw, want)
		}
	}
	if got := checkOneMember(t, blob); !bytes.Equal(got, data) {
		t.Errorf("the gzip member inflates to %d bytes, want the %d written", len(got), len(data))
	}
	if err := CheckGzipHeader(blob[:GzipHeaderSize]); err != nil {
		t.Errorf("CheckGzipHeader: %v", err)
	}
	crc, isize, err := ParseGzipTrailer(blob[len(blob)-GzipTrailerSize:])
	if err != nil || crc != res.CRC32 || isize != uint32(len(data)) {
		t.Errorf("ParseGzipTrailer: %08x %d %v, want %08x %d", crc, isize, err, res.CRC32, len(data))
	}
}

// TestDumpBlobGunzips: a dump blob is a .gz that Go, gzip, gunzip and Python read back as exactly the
// bytes written, at every size from empty to many chunks.
func TestDumpBlobGunzips(t *testing.T) {
	const pyGunzip = `
import gzip, hashlib, sys
data = gzip.decompress(sys.stdin.buffer.read())
print(len(data), hashlib.sha256(data).hexdigest())
`
	random := make([]byte, 3*dumpChunk+5)
	fillRandom(random, 9)
	tests := map[string][]byte{"random": random}
	for _, n := range []int{0, 1, 100, dumpChunk - 1, dumpChunk, dumpChunk + 1, 7*dumpChunk + 123} {
		tests[strconv.Itoa(n)] = makeDump(n, uint64(n))
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			checkNoLeak(t)
			blob, _ := writeDumpBlob(t, dumpOptions(), data)
			if got := gunzip(t, blob); !bytes.Equal(got, data) {
				t.Errorf("compress/gzip: %d bytes, want the %d written", len(got), len(data))
			}
			runTool(t, blob, "gzip", "-t")
			if got := runTool(t, blob, "gunzip", "-c"); got != string(data) {
				t.Errorf("gunzip -c: %d bytes, want the %d written", len(got), len(data))
			}
			if got, want := runTool(t, blob, "python3", "-c", pyGunzip), fmt.Sprintln(len(data), sum(data)); got != want {
				t.Errorf("python gzip.decompress: %q, want %q", got, want)
			}
		})
	}
}

// TestEmptyDumpBlob: an empty dump is the smallest .gz there is: the header, an empty final block, the
// CRC-32 and length of nothing, in one block.
func TestEmptyDumpBlob(t *testing.T) {
	blob, res := writeDumpBlob(t, dumpOptions(), nil)
	want := append(gzipHeader[:], 0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0)
	if !bytes.Equal(blob, want) || len(res.Blocks) != 1 {
		t.Errorf("blob % x in %d blocks, want % x in 1", blob, len(res.Blocks), want)
	}
}

// TestDumpWriterWriteAndReadFrom: Write (as exec.Cmd and io.Copy from a WriterTo use it) and ReadFrom
// add on to each other in call order, across chunk boundaries.
func TestDumpWriterWriteAndReadFrom(t *testing.T) {
	checkNoLeak(t)
	data := makeDump(5*dumpChunk+17, 3)
	sink := newMemSink()
	w := NewDumpWriter(context.Background(), sink, dumpOptions())
	parts := [][]byte{data[:10], data[10 : dumpChunk+3], data[dumpChunk+3 : 3*dumpChunk], data[3*dumpChunk:]}
	if n, err := w.Write(parts[0]); n != len(parts[0]) || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if n, err := w.ReadFrom(iotestHalfReader(parts[1])); n != int64(len(parts[1])) || err != nil {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	if n, err := io.Copy(w, bytes.NewReader(parts[2])); n != int64(len(parts[2])) || err != nil { // bytes.Reader.WriteTo calls Write
		t.Fatalf("io.Copy: %d, %v", n, err)
	}
	if n, err := w.ReadFrom(bytes.NewReader(parts[3])); n != int64(len(parts[3])) || err != nil {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	res, err := w.Finish()
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	checkDumpBlob(t, sink, res, data)
}

func TestDumpWriterProgress(t *testing.T) {
	checkNoLeak(t)
	var mu sync.Mutex
	var seen []int64
	opts := dumpOptions()
	opts.Progress = func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, p.DumpBytes)
	}
	data := makeDump(6*dumpChunk+1, 4)
	writeDumpBlob(t, opts, data)
	if len(seen) < 6 || seen[len(seen)-1] != int64(len(data)) {
		t.Fatalf("progress %v, want at least one report per chunk, the last %d", seen, len(data))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Errorf("progress went back: %v", seen)
		}
	}
}

// blockingReader gives data, then signals entered and blocks until release is closed, then gives EOF.
type blockingReader struct {
	data    []byte
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		k := copy(p, r.data)
		r.data = r.data[k:]
		return k, nil
	}
	r.once.Do(func() { close(r.entered) })
	<-r.release
	return 0, io.EOF
}

func newBlockingReader(data []byte) *blockingReader {
	return &blockingReader{data: data, entered: make(chan struct{}), release: make(chan struct{})}
}

// TestDumpWriterFailures: whatever fails, the caller gets the cause with context and nothing is
// committed.
func TestDumpWriterFailures(t *testing.T) {
	data := makeDump(10*dumpChunk, 5)
	tests := []struct {
		name    string
		sink    func(*memSink)
		run     func(t *testing.T, w *DumpWriter) error // returns the error of Finish
		wantErr error
		wantMsg string
	}{
		{"first block fails to stage", func(s *memSink) { s.failOn = 1 }, readAll(data), errStage, "stage block d-"},
		{"a middle block fails to stage", func(s *memSink) { s.failOn = 5 }, readAll(data), errStage, "stage block d-"},
		{"the last block staged fails", func(s *memSink) { s.failOn = 11 }, readAll(data), errStage, "stage block "},
		{"commit fails", func(s *memSink) { s.commitErr = errRead }, readAll(data), errRead, "commit 11 blocks: "},
		{"the reader fails", nil, func(t *testing.T, w *DumpWriter) error {
			if _, err := w.ReadFrom(&failingReader{data: data, err: errRead}); !errors.Is(err, errRead) {
				t.Errorf("ReadFrom: got %v, want %v", err, errRead)
			}
			_, err := w.Finish()
			return err
		}, errRead, "read database dump: "},
		{"too many blocks", nil, func(t *testing.T, w *DumpWriter) error {
			w.b.maxBlocks = 5
			_, _ = w.ReadFrom(bytes.NewReader(data))
			_, err := w.Finish()
			return err
		}, nil, "raise Options.ChunkSize (now 4096 bytes)"},
		{"Write while ReadFrom runs", nil, func(t *testing.T, w *DumpWriter) error {
			r := newBlockingReader(data[:100])
			done := make(chan error)
			go func() { _, err := w.ReadFrom(r); done <- err }()
			<-r.entered
			if _, err := w.Write([]byte("x")); err == nil {
				t.Error("Write while ReadFrom runs: no error")
			}
			close(r.release)
			if err := <-done; err == nil {
				t.Error("ReadFrom after a concurrent Write: no error")
			}
			_, err := w.Finish()
			return err
		}, nil, "Write or ReadFrom called while another is running"},
		{"Finish while ReadFrom runs", nil, func(t *testing.T, w *DumpWriter) error {
			r := newBlockingReader(data[:100])
			done := make(chan struct{})
			go func() { defer close(done); _, _ = w.ReadFrom(r) }()
			<-r.entered
			_, err := w.Finish()
			close(r.release)
			<-done
			return err
		}, nil, "finish: called while Write or ReadFrom is running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			sink := newMemSink()
			if tt.sink != nil {
				tt.sink(sink)
			}
			w := NewDumpWriter(context.Background(), sink, dumpOptions())
			var err error
			waitFor(t, "the failing write", func() { err = tt.run(t, w) })
			if (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got %v, want %v saying %q", err, tt.wantErr, tt.wantMsg)
			}
			if n := sink.commitCount(); n != 0 && sink.commitErr == nil || sink.ids != nil {
				t.Errorf("Commit called %d times, a blob of %d blocks committed; want none", n, len(sink.ids))
			}
			if w.Err() == nil {
				t.Error("Err() = nil after a failure")
			}
			w.Abort() // harmless after a failure
		})
	}
}

func readAll(data []byte) func(t *testing.T, w *DumpWriter) error {
	return func(t *testing.T, w *DumpWriter) error {
		if _, err := w.ReadFrom(bytes.NewReader(data)); err != nil && !errors.Is(err, errStage) {
			t.Errorf("ReadFrom: %v", err)
		}
		_, err := w.Finish()
		return err
	}
}

// TestDumpWriterStops: Abort, or cancelling ctx, stops a dump being read: the read returns the cause
// and nothing is committed.
func TestDumpWriterStops(t *testing.T) {
	for _, how := range []string{"Abort", "cancel"} {
		t.Run(how, func(t *testing.T) {
			checkNoLeak(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sink := newMemSink()
			w := NewDumpWriter(ctx, sink, dumpOptions())
			r := &endless{}
			done := make(chan error, 1)
			go func() {
				_, err := w.ReadFrom(r)
				done <- err
			}()
			for r.count() < 1<<20 {
				time.Sleep(time.Millisecond)
			}
			want := ErrAborted
			if how == "Abort" {
				waitFor(t, "Abort", w.Abort)
			} else {
				cancel()
				want = context.Canceled
			}
			var err error
			waitFor(t, "ReadFrom", func() { err = <-done })
			if !errors.Is(err, want) {
				t.Errorf("ReadFrom: got %v, want %v", err, want)
			}
			if _, err := w.Finish(); !errors.Is(err, want) {
				t.Errorf("Finish: got %v, want %v", err, want)
			}
			if _, err := w.Write([]byte("x")); !errors.Is(err, want) {
				t.Errorf("Write after the stop: got %v, want %v", err, want)
			}
			if n := sink.commitCount(); n != 0 {
				t.Errorf("Commit called %d times, want 0", n)
			}
		})
	}
	t.Run("WriteCompressed", func(t *testing.T) {
		checkNoLeak(t)
		ctx, cancel := context.WithCancel(context.Background())
		sink := newMemSink()
		r := &endless{}
		done := make(chan error, 1)
		go func() {
			_, err := WriteCompressed(ctx, sink, r, dumpOptions())
			done <- err
		}()
		for r.count() < 1<<20 {
			time.Sleep(time.Millisecond)
		}
		cancel()
		var err error
		waitFor(t, "WriteCompressed", func() { err = <-done })
		if !errors.Is(err, context.Canceled) || sink.commitCount() != 0 {
			t.Errorf("WriteCompressed: got %v and %d commits, want %v and none", err, sink.commitCount(), context.Canceled)
		}
	})
}

func TestDumpWriterMisuse(t *testing.T) {
	checkNoLeak(t)
	w := NewDumpWriter(context.Background(), newMemSink(), dumpOptions())
	if _, err := w.Write([]byte("PGDMP")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Finish(); err == nil || !strings.Contains(err.Error(), "called twice") {
		t.Errorf("Finish twice: got %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil || !strings.Contains(err.Error(), "already finished") {
		t.Errorf("Write after Finish: got %v", err)
	}
	if _, err := w.ReadFrom(strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "already finished") {
		t.Errorf("ReadFrom after Finish: got %v", err)
	}
	w.Abort() // does nothing once committed
	if w.Err() != nil {
		t.Errorf("Err() after a commit and Abort: %v", w.Err())
	}

	for name, w := range map[string]*DumpWriter{
		"Level 12":      NewDumpWriter(context.Background(), newMemSink(), Options{Level: 12}),
		"nil BlockSink": NewDumpWriter(context.Background(), nil, Options{}),
	} {
		if _, err := w.ReadFrom(strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("ReadFrom with %s: got %v", name, err)
		}
		if _, err := w.Finish(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Finish with %s: got %v", name, err)
		}
	}
}

func TestGzipHelpers(t *testing.T) {
	blob, res := writeDumpBlob(t, dumpOptions(), makeDump(1000, 1))
	// What compress/gzip writes at its default level has the same 10 bytes of header, but a different end.
	var std bytes.Buffer
	zw := stdgzip.NewWriter(&std)
	_, _ = zw.Write(makeDump(1000, 1))
	_ = zw.Close()
	gzipCLI := []byte{0x1f, 0x8b, 8, 0x08, 0x12, 0x34, 0x56, 0x78, 0, 3} // a name and a modification time
	for name, head := range map[string][]byte{"short": blob[:9], "long": blob[:11], "gzip(1)": gzipCLI, "not gzip": []byte("PGDMP\x01\x0e\x00\x04\x08")} {
		if err := CheckGzipHeader(head); !errors.Is(err, ErrNotDumpBlob) {
			t.Errorf("CheckGzipHeader(%s % x): got %v, want ErrNotDumpBlob", name, head, err)
		}
	}
	if err := CheckGzipHeader(std.Bytes()[:GzipHeaderSize]); err != nil {
		t.Errorf("CheckGzipHeader of compress/gzip's header: %v", err)
	}
	tail := blob[len(blob)-GzipTrailerSize:]
	badFinal := append([]byte{0x01, 0x00}, tail[2:]...)
	for name, tail := range map[string][]byte{"short": tail[1:], "long": blob[len(blob)-11:], "not final": badFinal, "compress/gzip": std.Bytes()[std.Len()-GzipTrailerSize:]} {
		if _, _, err := ParseGzipTrailer(tail); !errors.Is(err, ErrNotDumpBlob) {
			t.Errorf("ParseGzipTrailer(%s % x): got %v, want ErrNotDumpBlob", name, tail, err)
		}
	}
	if crc, isize, err := ParseGzipTrailer(tail); err != nil || crc != res.CRC32 || isize != 1000 {
		t.Errorf("ParseGzipTrailer: %08x %d %v, want %08x 1000", crc, isize, err, res.CRC32)
	}
}
