package archive

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mixedReader gives n bytes alternating 1 MiB of incompressible and 1 MiB of table-like text, from two
// fixed patterns, so that generating the input allocates nothing.
type mixedReader struct {
	left     int64
	pos      int
	patterns [2][]byte
}

func newMixedReader(n int64) *mixedReader {
	m := &mixedReader{left: n}
	m.patterns[0] = make([]byte, 1<<20)
	m.patterns[1] = make([]byte, 1<<20)
	fillRandom(m.patterns[0], 1)
	fillText(m.patterns[1], 2)
	return m
}

func (m *mixedReader) Read(p []byte) (int, error) {
	if m.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > m.left {
		p = p[:m.left]
	}
	pat := m.patterns[(m.pos>>20)&1]
	k := copy(p, pat[m.pos&(1<<20-1):])
	m.pos += k
	m.left -= int64(k)
	return k, nil
}

// TestMemoryIsBounded streams 256 MiB of dump, and files from several goroutines, through a builder with
// the default chunk size and a sink that discards, and checks that the heap in use stays far below the
// data size. This is a property of the fixed buffer pools, not of timing: samples are taken as the
// build runs and only the peak matters.
func TestMemoryIsBounded(t *testing.T) {
	checkNoLeak(t)
	const dumpSize = 256 << 20
	const bound = 64 << 20
	runtime.GC()

	var peak atomic.Uint64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()

	b := NewBuilder(context.Background(), &discardSink{}, Options{Concurrency: 2, ModTime: testModTime})
	var wg sync.WaitGroup
	wg.Add(1)
	var dumpErr error
	var dumpN int64
	go func() {
		defer wg.Done()
		r := newMixedReader(dumpSize)
		dumpN, dumpErr = b.WriteDatabase(r)
	}()
	files := make(chan int)
	small, large := make([]byte, 20<<10), make([]byte, 3<<20)
	fillText(small, 3)
	fillText(large, 4)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := newRand(uint64(w))
			for i := range files {
				data := small
				if i%100 == 0 {
					data = large
				}
				if err := b.AddFile(uuidFor(rng), int64(len(data)), bytes.NewReader(data)); err != nil {
					t.Errorf("AddFile: %v", err)
				}
			}
		}()
	}
	for i := range 2000 {
		files <- i
	}
	close(files)
	wg.Wait()
	res, err := b.Finish(testMeta)
	close(stop)
	sampler.Wait()
	if dumpErr != nil || err != nil {
		t.Fatalf("WriteDatabase: %v; Finish: %v", dumpErr, err)
	}
	if dumpN != dumpSize || res.DumpSize != dumpSize || res.Files != 2000 {
		t.Errorf("dump %d, Result %+v; want a %d-byte dump and 2000 files", dumpN, res, dumpSize)
	}
	t.Logf("peak heap in use %.1f MiB for %d MiB of dump and %.0f MiB of files, archive %.1f MiB",
		float64(peak.Load())/(1<<20), dumpSize>>20, float64(res.FilesSize)/(1<<20), float64(res.Size)/(1<<20))
	if p := peak.Load(); p > bound {
		t.Errorf("peak heap in use %d bytes, want at most %d", p, bound)
	}
}
