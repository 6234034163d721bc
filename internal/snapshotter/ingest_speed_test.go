package snapshotter

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/klauspost/compress/gzip"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// TestIngestSpeed measures Ingest of an archive like the benchmark's upload (internal/dev/bench:
// pg_dump's default compression, files of 256 KiB to 4 MiB, four in five incompressible, gzip level 1
// outside) against `gzip -dc | tar -t` of the same archive, and the heap it holds. It runs only with
// INGEST_SPEED_MB set to the archive's size in MB.
func TestIngestSpeed(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv("INGEST_SPEED_MB"))
	if mb <= 0 {
		t.Skip("set INGEST_SPEED_MB to measure an upload of that many MB")
	}
	f := newFixture(t)
	if os.Getenv("INGEST_SPEED_DISK") != "" { // as the benchmark's stack runs it, rather than in memory
		az, err := azurite.Start(t.Context(), azurite.Options{Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		defer az.Stop(context.WithoutCancel(t.Context()))
		if f.blobs, err = blobstore.NewFromConnectionString(az.ConnectionString(), snapshotsContainer); err != nil {
			t.Fatal(err)
		}
		if err := f.blobs.EnsureContainers(t.Context()); err != nil {
			t.Fatal(err)
		}
		snap := *f.snap
		snap.Blobs, f.snap = f.blobs, &snap
	}
	f.exec(t, `CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, md5((g*7)::text) AS b, now() - g * interval '1 minute' AS at,
		'order ' || g || ' of customer ' || (g % 977) AS note FROM generate_series(1, 1500000) g`)
	dump := f.pgDump(t)
	path := filepath.Join(t.TempDir(), "upload.tar.gz")
	files, filesBytes := writeSpeedArchive(t, path, dump, int64(mb)*1e6)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	out, err := exec.Command("sh", "-c", `gzip -dc < "$1" | tar -t | wc -l`, "sh", path).Output()
	baseline := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("archive: %.1f MB, dump %.1f MB, %d files of %.1f MB; gzip -dc | tar -t: %s (%s entries)",
		float64(st.Size())/1e6, float64(len(dump))/1e6, files, float64(filesBytes)/1e6, baseline.Round(time.Millisecond), strings.TrimSpace(string(out)))

	ctx := t.Context()
	upload := f.env.Namespace + "/" + f.env.ID + "/speed.tar.gz"
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.blobs.Client().UploadFile(ctx, f.blobs.UploadsContainer(), upload, file, &azblob.UploadFileOptions{BlockSize: 8 << 20, Concurrency: 4})
	file.Close()
	if err != nil {
		t.Fatal(err)
	}

	s := f.ingester(archive.Limits{})
	s.Log = zerolog.New(zerolog.NewTestWriter(t))
	s.FileWorkers = 16 // the service's default
	if n, err := strconv.Atoi(os.Getenv("INGEST_SPEED_WORKERS")); err == nil {
		s.FileWorkers = n
	}
	if os.Getenv("INGEST_SPEED_PARTS") != "" {
		speedParts(t, s, path, upload, string(*resp.ETag))
	}
	id := newID()
	ns, env := f.env.Namespace, f.env.ID
	req := backup.IngestRequest{Namespace: ns, EnvironmentID: env, SnapshotID: id, UploadPath: upload, UploadETag: string(*resp.ETag),
		DumpPath: layout.SnapshotDump(ns, env, id, 1), ManifestPath: layout.SnapshotManifest(ns, env, id, 1)}
	runtime.GC()
	idle := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(idle)
	// The heap in use (garbage not yet collected included) and the live heap after each GC.
	var peak, live atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var m runtime.MemStats
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if v := m.HeapInuse + m.StackInuse; v > peak.Load() {
				peak.Store(v)
			}
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > live.Load() {
				live.Store(v)
			}
		}
	}()
	var before, after syscallUsage
	before.read()
	busyBefore := systemBusy()
	if path := os.Getenv("INGEST_SPEED_PROFILE"); path != "" {
		prof, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer prof.Close()
		if err := pprof.StartCPUProfile(prof); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	start = time.Now()
	res, err := s.Ingest(ctx, req)
	wall := time.Since(start)
	after.read()
	busy := systemBusy() - busyBefore
	close(stop)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ingest: %s = %.2f × the baseline; %.1f s CPU of this process, %.1f s of the machine; peak heap %d MiB in use, %d MiB live (%d MiB before); dump blob %.1f MB; %d files",
		wall.Round(time.Millisecond), wall.Seconds()/baseline.Seconds(), after.cpu-before.cpu, busy, peak.Load()>>20, live.Load()>>20, idle[0].Value.Uint64()>>20,
		float64(res.DumpBlobBytes)/1e6, res.FilesCount)
}

// syscallUsage is the CPU time this process used so far.
type syscallUsage struct{ cpu float64 }

func (u *syscallUsage) read() {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return
	}
	fields := strings.Fields(string(data)[strings.LastIndexByte(string(data), ')')+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	u.cpu = (utime + stime) / 100 // clock ticks of 10 ms
}

// systemBusy is the CPU time all processes used so far (/proc/stat), in seconds.
func systemBusy() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	fields := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])[1:]
	var busy float64
	for i, v := range fields {
		n, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 { // idle and iowait
			busy += n
		}
	}
	return busy / 100
}

// writeSpeedArchive writes the measured archive to path: .metadata, the dump, then files until the
// archive has target bytes.
func writeSpeedArchive(t *testing.T, path string, dump []byte, target int64) (int, int64) {
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	counted := &countingFile{f: out}
	bw := bufio.NewWriterSize(counted, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	put := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(data)), Mode: 0o644, ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	put(".metadata", fmt.Appendf(nil, `{"dumpSize":"%d","modelVersion":"1.0.0.1"}`, len(dump)))
	put("db/db.backup", dump)
	rng := rand.New(rand.NewPCG(7, 7))
	words := strings.Fields("invoice order customer delivery amount total payment shipped pending the of and to for with")
	files, filesBytes := 0, int64(0)
	for counted.n+int64(bw.Buffered()) < target {
		size := 256<<10 + rng.IntN(4<<20-256<<10)
		data := make([]byte, 0, size+100)
		if files%5 == 0 {
			for line := 1; len(data) < size; line++ {
				data = fmt.Appendf(data, "%04d %s %s %s %d.%02d EUR.\n", line, words[rng.IntN(len(words))], words[rng.IntN(len(words))],
					words[rng.IntN(len(words))], rng.IntN(100000), rng.IntN(100))
			}
			data = data[:size]
		} else {
			data = data[:size]
			for i := 0; i+8 <= size; i += 8 {
				v := rng.Uint64()
				for j := range 8 {
					data[i+j] = byte(v >> (8 * j))
				}
			}
		}
		put(archive.TreeName(newID()), data)
		files++
		filesBytes += int64(size)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return files, filesBytes
}

type countingFile struct {
	f *os.File
	n int64
}

func (c *countingFile) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	c.n += int64(n)
	return n, err
}

// speedParts times the parts of an ingest on their own: reading the upload blob, and Inspect of the
// archive on local disk.
func speedParts(t *testing.T, s *Snapshotter, path, upload, etag string) {
	start, busy := time.Now(), systemBusy()
	rc, _, err := s.Uploads.OpenUpload(t.Context(), upload, etag)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	t.Logf("reading the upload blob: %s, %.1f s CPU (%d bytes, %v)", time.Since(start).Round(time.Millisecond), systemBusy()-busy, n, err)
	start, busy = time.Now(), systemBusy()
	g, gctx := errgroup.WithContext(t.Context())
	g.SetLimit(16)
	data := make([]byte, 2<<20)
	sum := md5Of(data)
	for range 128 {
		g.Go(func() error {
			_, err := s.Blobs.PutObject(gctx, "ns", newID(), backup.ObjectName(backup.SourceFile{UUID: newID(), Size: int64(len(data)), MD5: sum}), data, sum)
			return err
		})
	}
	err = g.Wait()
	t.Logf("256 MB of Put Blob: %s, %.1f s CPU (%v)", time.Since(start).Round(time.Millisecond), systemBusy()-busy, err)
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	start = time.Now()
	_, err = archive.Inspect(t.Context(), file, archive.Limits{}, nil)
	t.Logf("Inspect of the local file: %s (%v)", time.Since(start).Round(time.Millisecond), err)
	file.Seek(0, 0)
	start = time.Now()
	_, err = archive.Inspect(t.Context(), file, archive.Limits{}, func(e archive.Entry, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	})
	t.Logf("Inspect reading every entry: %s (%v)", time.Since(start).Round(time.Millisecond), err)
}
