package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

var errRead = errors.New("injected read failure")

// failingReader gives data, then fails with err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	k := copy(p, f.data)
	f.data = f.data[k:]
	return k, nil
}

// endless gives text forever and counts what it gave.
type endless struct {
	mu sync.Mutex
	n  int64
}

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	e.mu.Lock()
	e.n += int64(len(p))
	e.mu.Unlock()
	return len(p), nil
}

func (e *endless) count() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// waitFor fails the test if f does not return within a generous timeout (a hang, not a timing check).
func waitFor(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not return", what)
	}
}

func TestStageFailureFailsTheBuild(t *testing.T) {
	opts := testOptions()
	opts.ChunkSize = 4096
	dump := makeDump(10*4096, 1)
	files := makeFiles(100, 20000)
	// How many blocks a good build stages: failing the last one fails the build inside Finish.
	_, _, sink := buildArchive(t, opts, dump, files, testMeta)
	for _, k := range []int{1, 2, 7, sink.staged} {
		t.Run(fmt.Sprintf("block %d of %d", k, sink.staged), func(t *testing.T) {
			checkNoLeak(t)
			sink := newMemSink()
			sink.failOn = k
			b := NewBuilder(context.Background(), sink, opts)
			var dumpErr error
			waitFor(t, "WriteDatabase", func() { _, dumpErr = b.WriteDatabase(bytes.NewReader(dump)) })
			if dumpErr != nil && !errors.Is(dumpErr, errStage) {
				t.Errorf("WriteDatabase: got %v, want nil or the stage error", dumpErr)
			}
			for _, f := range files {
				if err := b.AddFile(f.uuid, int64(len(f.data)), bytes.NewReader(f.data)); err != nil && !errors.Is(err, errStage) {
					t.Errorf("AddFile: got %v, want nil or the stage error", err)
				}
			}
			var err error
			waitFor(t, "Finish", func() { _, err = b.Finish(testMeta) })
			if !errors.Is(err, errStage) {
				t.Errorf("Finish: got %v, want %v", err, errStage)
			}
			if n := sink.commitCount(); n != 0 {
				t.Errorf("Commit called %d times, want 0", n)
			}
			if err := b.AddFile(uuidFor(newRand(1)), 0, bytes.NewReader(nil)); !errors.Is(err, errStage) {
				t.Errorf("AddFile after the failure: got %v, want %v", err, errStage)
			}
		})
	}
}

func TestCommitFailure(t *testing.T) {
	checkNoLeak(t)
	errCommit := errors.New("put block list: 503")
	sink := newMemSink()
	sink.commitErr = errCommit
	b := NewBuilder(context.Background(), sink, testOptions())
	if _, err := b.WriteDatabase(bytes.NewReader(makeDump(1000, 1))); err != nil {
		t.Fatal(err)
	}
	_, err := b.Finish(testMeta)
	if !errors.Is(err, errCommit) || !strings.HasPrefix(err.Error(), "commit 4 blocks: ") {
		t.Errorf("Finish: got %v, want %v with context", err, errCommit)
	}
	if b.Err() == nil {
		t.Error("Err() = nil after a failed commit")
	}
}

func TestDumpReaderFailureFailsTheBuild(t *testing.T) {
	checkNoLeak(t)
	sink := newMemSink()
	b := NewBuilder(context.Background(), sink, testOptions())
	_, err := b.WriteDatabase(&failingReader{data: makeDump(200<<10, 2), err: errRead})
	if !errors.Is(err, errRead) || !strings.Contains(err.Error(), "read database dump") {
		t.Errorf("WriteDatabase: got %v, want %v with context", err, errRead)
	}
	if err := b.AddFile(uuidFor(newRand(1)), 3, strings.NewReader("abc")); !errors.Is(err, errRead) {
		t.Errorf("AddFile after the failure: got %v, want %v", err, errRead)
	}
	if _, err := b.Finish(testMeta); !errors.Is(err, errRead) {
		t.Errorf("Finish: got %v, want %v", err, errRead)
	}
	if n := sink.commitCount(); n != 0 {
		t.Errorf("Commit called %d times, want 0", n)
	}
}

// TestAddFileBadReader: a file whose reader fails or gives the wrong number of bytes is left out and the
// build goes on, for small files (read fully first) and large ones (streamed into their own blocks).
func TestAddFileBadReader(t *testing.T) {
	const small, large = 1000, 100 << 10 // ChunkSize/4 is 16 KiB
	tests := []struct {
		name    string
		size    int64
		r       func() io.Reader
		wantErr string
	}{
		{"small short", small, func() io.Reader { return bytes.NewReader(make([]byte, small-1)) }, "short read: got 999 of 1000 bytes"},
		{"small long", small, func() io.Reader { return bytes.NewReader(make([]byte, small+1)) }, "more than the stated 1000 bytes"},
		{"small fails", small, func() io.Reader { return &failingReader{data: make([]byte, 10), err: errRead} }, errRead.Error()},
		{"large short", large, func() io.Reader { return bytes.NewReader(make([]byte, large-1)) }, "short read: got 102399 of 102400 bytes"},
		{"large long", large, func() io.Reader { return bytes.NewReader(make([]byte, large+1)) }, "more than the stated 102400 bytes"},
		{"large fails", large, func() io.Reader { return &failingReader{data: make([]byte, large/2), err: errRead} }, errRead.Error()},
		{"large fails at the end", large, func() io.Reader { return &failingReader{data: make([]byte, large), err: errRead} }, errRead.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			sink := newMemSink()
			b := NewBuilder(context.Background(), sink, testOptions())
			dump := makeDump(100<<10, 3)
			if _, err := b.WriteDatabase(bytes.NewReader(dump)); err != nil {
				t.Fatal(err)
			}
			good := makeFiles(300, 50<<10)
			if err := b.AddFile(good[0].uuid, int64(len(good[0].data)), bytes.NewReader(good[0].data)); err != nil {
				t.Fatal(err)
			}
			err := b.AddFile(uuidFor(newRand(7)), tt.size, tt.r())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("AddFile: got %v, want an error containing %q", err, tt.wantErr)
			}
			if err := b.AddFile(good[1].uuid, int64(len(good[1].data)), bytes.NewReader(good[1].data)); err != nil {
				t.Fatalf("AddFile after a bad file: %v", err)
			}
			res, err := b.Finish(testMeta)
			if err != nil {
				t.Fatalf("Finish: %v", err)
			}
			verifyArchive(t, sink.blob, res, sink, dump, good, true)
		})
	}
}

func TestContextCancelStopsTheBuild(t *testing.T) {
	checkNoLeak(t)
	ctx, cancel := context.WithCancel(context.Background())
	sink := newMemSink()
	b := NewBuilder(ctx, sink, testOptions())
	r := &endless{}
	var dumpErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, dumpErr = b.WriteDatabase(r)
	}()
	for r.count() < 1<<20 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	waitFor(t, "WriteDatabase after cancel", wg.Wait)
	if !errors.Is(dumpErr, context.Canceled) {
		t.Errorf("WriteDatabase: got %v, want %v", dumpErr, context.Canceled)
	}
	if _, err := b.Finish(testMeta); !errors.Is(err, context.Canceled) {
		t.Errorf("Finish: got %v, want %v", err, context.Canceled)
	}
	if n := sink.commitCount(); n != 0 {
		t.Errorf("Commit called %d times, want 0", n)
	}
}

func TestAbort(t *testing.T) {
	checkNoLeak(t)
	sink := newMemSink()
	b := NewBuilder(context.Background(), sink, testOptions())
	r := &endless{}
	var dumpErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, dumpErr = b.WriteDatabase(r)
	}()
	for r.count() < 1<<20 {
		time.Sleep(time.Millisecond)
	}
	waitFor(t, "Abort", b.Abort)
	waitFor(t, "WriteDatabase after Abort", wg.Wait)
	if !errors.Is(dumpErr, ErrAborted) {
		t.Errorf("WriteDatabase: got %v, want %v", dumpErr, ErrAborted)
	}
	if _, err := b.Finish(testMeta); !errors.Is(err, ErrAborted) {
		t.Errorf("Finish: got %v, want %v", err, ErrAborted)
	}
	b.Abort() // twice is harmless
	if n := sink.commitCount(); n != 0 {
		t.Errorf("Commit called %d times, want 0", n)
	}
}

func TestTooManyBlocks(t *testing.T) {
	tests := []struct {
		name      string
		maxBlocks int64
		dump      int
	}{
		{"while streaming", 10, 20 << 10},
		{"at finish", 9, 2048}, // 4 dump and 2 file blocks stream; the end-of-archive (2) and head (3) pass 9
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			sink := newMemSink()
			opts := testOptions()
			opts.ChunkSize = 512
			b := NewBuilder(context.Background(), sink, opts)
			b.maxBlocks = tt.maxBlocks
			_, _ = b.WriteDatabase(bytes.NewReader(makeDump(tt.dump, 1)))
			f := makeFiles(100)[0]
			_ = b.AddFile(f.uuid, 100, bytes.NewReader(f.data))
			_, err := b.Finish(testMeta)
			if err == nil || !strings.Contains(err.Error(), "raise Options.ChunkSize (now 512 bytes)") {
				t.Errorf("Finish: got %v, want an error naming Options.ChunkSize", err)
			}
			if n := sink.commitCount(); n != 0 {
				t.Errorf("Commit called %d times, want 0", n)
			}
		})
	}
}

func TestInvalidOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"chunk too small", Options{ChunkSize: 100}, "ChunkSize 100"},
		{"chunk too large", Options{ChunkSize: 1 << 30}, "ChunkSize 1073741824"},
		{"negative concurrency", Options{Concurrency: -1}, "Concurrency"},
		{"negative uploads", Options{Uploads: -2}, "Uploads"},
		{"level too high", Options{Level: 10}, "Level 10"},
		{"level negative", Options{Level: -2}, "Level -2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			sink := newMemSink()
			b := NewBuilder(context.Background(), sink, tt.opts)
			if _, err := b.WriteDatabase(strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("WriteDatabase: got %v, want an error containing %q", err, tt.wantErr)
			}
			if _, err := b.Finish(testMeta); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Finish: got %v, want an error containing %q", err, tt.wantErr)
			}
			if sink.commitCount() != 0 {
				t.Error("Commit called")
			}
		})
	}
	t.Run("nil sink", func(t *testing.T) {
		b := NewBuilder(context.Background(), nil, Options{})
		if _, err := b.Finish(testMeta); err == nil || !strings.Contains(err.Error(), "nil BlockSink") {
			t.Errorf("Finish: got %v, want a nil-sink error", err)
		}
	})
}

func TestMisuse(t *testing.T) {
	okUUID := "0d3e301f-5551-46f8-ad44-8de2be084c95"
	tests := []struct {
		name    string
		run     func(b *Builder) error
		wantErr string
	}{
		{"no dump", func(b *Builder) error { _, err := b.Finish(testMeta); return err }, "no database dump was written"},
		{"dump twice", func(b *Builder) error {
			_, _ = b.WriteDatabase(strings.NewReader("PGDMP"))
			_, err := b.WriteDatabase(strings.NewReader("PGDMP"))
			return err
		}, "called twice"},
		{"not a UUID", func(b *Builder) error { return b.AddFile("../../etc/passwd", 1, strings.NewReader("x")) }, "not a UUID"},
		{"negative size", func(b *Builder) error { return b.AddFile(okUUID, -1, strings.NewReader("")) }, "negative size"},
		{"duplicate UUID", func(b *Builder) error {
			_, _ = b.WriteDatabase(strings.NewReader("PGDMP"))
			_ = b.AddFile(okUUID, 1, strings.NewReader("x"))
			_ = b.AddFile(strings.ToUpper(okUUID), 1, strings.NewReader("y"))
			_, err := b.Finish(testMeta)
			return err
		}, "file " + okUUID + " was added twice"},
		{"finish twice", func(b *Builder) error {
			_, _ = b.WriteDatabase(strings.NewReader("PGDMP"))
			if _, err := b.Finish(testMeta); err != nil {
				return err
			}
			_, err := b.Finish(testMeta)
			return err
		}, "called twice"},
		{"add after finish", func(b *Builder) error {
			_, _ = b.WriteDatabase(strings.NewReader("PGDMP"))
			_, _ = b.Finish(testMeta)
			return b.AddFile(okUUID, 1, strings.NewReader("x"))
		}, "already finished"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			b := NewBuilder(context.Background(), newMemSink(), testOptions())
			defer b.Abort()
			if err := tt.run(b); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
