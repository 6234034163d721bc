package snapshotter

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
)

// The files of an uploaded archive go into the environment's file store under the same names as a
// backup's (backup.ObjectName), while the archive streams past: their bytes pass through the worker
// here, where a backup copies its files server-side.
//
//   - A file up to smallFileBytes is read whole into a pooled buffer and named by its MD5 (the md5
//     kind); unless the store's listing has that object already, it is written with one Put Blob that
//     never replaces an object.
//   - A larger file cannot be named by its MD5 before all its bytes have streamed past, and cannot be
//     held whole: its blocks are staged as they come under a name of its own (stagingName), then
//     committed with the file's Content-MD5, unless the store holds that content already
//     (sameContent).
//
// Uploads run on FileWorkers goroutines; the buffers waiting for them are bounded by fileBufferBytes,
// which blocks the reading of the archive (back-pressure) rather than growing.

const (
	smallFileBytes  = 4 << 20  // files up to this are stored with one Put Blob
	largeBlockBytes = 4 << 20  // the blocks of a larger file
	fileBufferBytes = 16 << 20 // the file bytes read and not yet stored, at most
	minFileBuffer   = 4 << 10  // the smallest pooled buffer
	confirmPoll     = 2 * time.Second
)

// fileBufs pools buffers by size class: minFileBuffer << i bytes in fileBufs[i], up to
// largeBlockBytes (4 KiB << 10), so that a buffer counts against fileBufferBytes for what it holds.
var fileBufs [11]sync.Pool

// fileIngest puts one archive's files into the store and writes its manifest.
type fileIngest struct {
	s    *Snapshotter
	req  backup.IngestRequest
	ctx  context.Context // the reading's: it ends when anything fails
	g    *errgroup.Group
	prog *progress

	workers chan struct{}       // a token per upload in flight
	mem     *semaphore.Weighted // bytes of buffers out

	listed  chan struct{} // closed once stamp and store are set
	stamp   backup.ReferenceStamp
	store   map[string]backup.StoreObject // as listed after BeginReferences; read-only once listed
	indexed sync.Once
	byMD5   map[contentKey]string // objects of the listing with a Content-MD5, by what they hold

	mu       sync.Mutex
	entries  []backup.ManifestEntry
	created  map[string]int64 // objects this ingest wrote, with their sizes
	newBytes int64
}

func newFileIngest(s *Snapshotter, req backup.IngestRequest, ctx context.Context, g *errgroup.Group, prog *progress) *fileIngest {
	workers := s.FileWorkers
	if workers <= 0 {
		workers = 16
	}
	return &fileIngest{s: s, req: req, ctx: ctx, g: g, prog: prog, workers: make(chan struct{}, workers),
		mem: semaphore.NewWeighted(fileBufferBytes), listed: make(chan struct{}), created: map[string]int64{}}
}

// begin follows the collector protocol's first step, then lists the store, which decides what is
// written and what referenced. It runs while the archive is being read; uploads wait for it.
func (f *fileIngest) begin() error {
	stamp, err := backup.BeginReferences(f.ctx, f.s.Blobs, f.req.Namespace, f.req.EnvironmentID, f.s.now())
	if err != nil {
		return err
	}
	store, err := f.listStore(f.ctx)
	if err != nil {
		return err
	}
	f.stamp, f.store = stamp, store
	close(f.listed)
	return nil
}

func (f *fileIngest) listStore(ctx context.Context) (map[string]backup.StoreObject, error) {
	store := map[string]backup.StoreObject{}
	err := f.s.Blobs.WalkObjects(ctx, f.req.Namespace, f.req.EnvironmentID, func(o backup.StoreObject) error {
		store[o.Name] = o
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the file store: %w", err)
	}
	return store, nil
}

// waitListed waits for the listing.
func (f *fileIngest) waitListed() error {
	select {
	case <-f.listed:
		return nil
	case <-f.ctx.Done():
		return context.Cause(f.ctx)
	}
}

// inStore waits for the listing and reports whether it has object name.
func (f *fileIngest) inStore(name string) (bool, error) {
	if err := f.waitListed(); err != nil {
		return false, err
	}
	_, ok := f.store[name]
	return ok, nil
}

// contentKey is what an object with a Content-MD5 holds.
type contentKey struct {
	uuid string
	size int64
	md5  [md5.Size]byte
}

// sameContent waits for the listing and returns an object that holds file uuid of size bytes with
// that MD5, whatever the kind of its name: a backup's (md5), or an earlier upload's (etag, with the
// Content-MD5 it was committed with). The store trusts the property as Storage keeps it.
func (f *fileIngest) sameContent(uuid string, size int64, sum []byte) (string, bool, error) {
	if err := f.waitListed(); err != nil {
		return "", false, err
	}
	f.indexed.Do(func() {
		f.byMD5 = map[contentKey]string{}
		for name, o := range f.store {
			u, sz, ok := backup.ParseObjectName(name)
			if !ok || len(o.MD5) != md5.Size {
				continue
			}
			k := contentKey{uuid: u, size: sz, md5: [md5.Size]byte(o.MD5)}
			if prev, dup := f.byMD5[k]; !dup || (strings.Contains(name, "-md5-") && !strings.Contains(prev, "-md5-")) {
				f.byMD5[k] = name
			}
		}
	})
	name, ok := f.byMD5[contentKey{uuid: uuid, size: size, md5: [md5.Size]byte(sum)}]
	return name, ok, nil
}

// add reads one file of the archive and hands its storing to the workers.
func (f *fileIngest) add(e archive.Entry, r io.Reader) error {
	if e.Size <= smallFileBytes {
		return f.addSmall(e, r)
	}
	return f.addLarge(e, r)
}

func (f *fileIngest) addSmall(e archive.Entry, r io.Reader) error {
	buf, release, err := f.buffer(e.Size)
	if err != nil {
		return err
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		release()
		return err
	}
	return f.run(release, func() error {
		sum := md5.Sum(buf)
		entry := backup.ManifestEntry{UUID: e.UUID, Size: e.Size, MD5: sum[:]}
		entry.Object = backup.ObjectName(backup.SourceFile{UUID: e.UUID, Size: e.Size, MD5: sum[:]})
		found, err := f.inStore(entry.Object)
		if err != nil {
			return err
		}
		if found {
			f.settle(entry, false)
			return nil
		}
		var existed bool
		err = f.s.retry(f.ctx, "storing a file document of the upload", e.UUID, func() error {
			existed, err = f.s.Blobs.PutObject(f.ctx, f.req.Namespace, f.req.EnvironmentID, entry.Object, buf, sum[:])
			return err
		})
		if err != nil {
			return fmt.Errorf("store file document %s: %w", e.UUID, err)
		}
		f.settle(entry, !existed)
		return nil
	})
}

func (f *fileIngest) addLarge(e archive.Entry, r io.Reader) error {
	if blocks := (e.Size + largeBlockBytes - 1) / largeBlockBytes; blocks > archive.MaxBlocks {
		return backup.Errorf(backup.CodeInvalidParameters, "entry %q has %d bytes, more than the %d bytes the service stores as one file",
			e.Name, e.Size, int64(archive.MaxBlocks)*largeBlockBytes)
	}
	name := stagingName(f.req, e.UUID, e.Size)
	w, err := f.s.Blobs.NewObjectBlocks(f.req.Namespace, f.req.EnvironmentID, name)
	if err != nil {
		return err
	}
	whole := md5.New()
	var ids []string
	var staging sync.WaitGroup
	for left := e.Size; left > 0; {
		buf, release, err := f.buffer(min(left, largeBlockBytes))
		if err != nil {
			return err
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			release()
			return err
		}
		left -= int64(len(buf))
		whole.Write(buf)
		id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "u-%010d", len(ids)))
		ids = append(ids, id)
		staging.Add(1)
		err = f.run(func() { release(); staging.Done() }, func() error {
			return f.s.retry(f.ctx, "storing a block of a file document of the upload", e.UUID, func() error {
				return w.StageBlock(f.ctx, id, buf, md5.Sum(buf))
			})
		})
		if err != nil {
			return err
		}
	}
	sum := whole.Sum(nil)
	// The commit waits for the blocks without a worker of its own, while the archive reading goes on.
	f.g.Go(func() error {
		staging.Wait()
		if f.ctx.Err() != nil {
			return context.Cause(f.ctx)
		}
		same, found, err := f.sameContent(e.UUID, e.Size, sum)
		if err != nil {
			return err
		}
		if found {
			// The store has this very file (from a backup or an earlier upload): refer to it and leave
			// the blocks uncommitted, which Storage discards after a week.
			f.settle(referTo(e, same, sum), false)
			return nil
		}
		var existed bool
		err = f.s.retry(f.ctx, "storing a file document of the upload", e.UUID, func() error {
			existed, err = w.Commit(f.ctx, ids, e.Size, sum)
			return err
		})
		if err != nil {
			return fmt.Errorf("store file document %s: %w", e.UUID, err)
		}
		// The object carries the MD5 as its Content-MD5; the entry, of the etag kind, does not.
		f.settle(referTo(e, name, sum), !existed)
		return nil
	})
	return nil
}

// referTo is the manifest entry of file e held by object name, of MD5 sum. An entry records the MD5
// only with an object of the md5 kind, whose name it must make (a manifest's rule).
func referTo(e archive.Entry, name string, sum []byte) backup.ManifestEntry {
	entry := backup.ManifestEntry{UUID: e.UUID, Size: e.Size, Object: name}
	if md5Name := backup.ObjectName(backup.SourceFile{UUID: e.UUID, Size: e.Size, MD5: sum}); name == md5Name {
		entry.MD5 = sum
	}
	return entry
}

// stagingName is the object a file too large for one Put Blob is stored as: a name of the etag kind,
// which backup.ParseObjectName (and so the collector) accepts, whose hex is the first 16 bytes of
// SHA-256 of the snapshot, the file and the claim's dump and manifest paths (they hold its fence). It
// is unique to the file in this claim, so that no two ingests write one object and a new attempt of
// the job writes new objects; the names ObjectName makes from a blob's ETag are SHA-256 of an ETag,
// which none of these inputs is.
func stagingName(req backup.IngestRequest, uuid string, size int64) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{"upload", req.SnapshotID, uuid, req.DumpPath, req.ManifestPath}, "\x00")))
	return fmt.Sprintf("%s/%d-etag-%s", uuid, size, hex.EncodeToString(sum[:16]))
}

// buffer takes a buffer of n bytes from the pools, waiting while fileBufferBytes are out; release
// gives it back.
func (f *fileIngest) buffer(n int64) ([]byte, func(), error) {
	class := 0
	if n > minFileBuffer {
		class = bits.Len64(uint64(n-1)) - bits.Len64(minFileBuffer-1)
	}
	size := int64(minFileBuffer) << class
	if err := f.mem.Acquire(f.ctx, size); err != nil {
		return nil, nil, context.Cause(f.ctx)
	}
	p, _ := fileBufs[class].Get().(*[]byte)
	if p == nil {
		b := make([]byte, size)
		p = &b
	}
	return (*p)[:n], func() {
		fileBufs[class].Put(p)
		f.mem.Release(size)
	}, nil
}

// run runs work on a worker, waiting for one to be free; done runs after it, or at once if it never
// starts.
func (f *fileIngest) run(done func(), work func() error) error {
	select {
	case f.workers <- struct{}{}:
	case <-f.ctx.Done():
		done()
		return context.Cause(f.ctx)
	}
	f.g.Go(func() error {
		defer func() { <-f.workers }()
		defer done()
		return work()
	})
	return nil
}

func (f *fileIngest) settle(e backup.ManifestEntry, isNew bool) {
	f.mu.Lock()
	f.entries = append(f.entries, e)
	if isNew {
		f.created[e.Object] = e.Size
		f.newBytes += e.Size
	}
	done := len(f.entries)
	f.mu.Unlock()
	f.prog.filesDecided(done)
}

// storedFiles is the snapshot's share of the store, once its manifest is written and confirmed.
type storedFiles struct {
	Entries       []backup.ManifestEntry
	FilesBytes    int64
	NewFiles      int
	NewBytes      int64
	ManifestBytes int64
	StoreObjects  int
	StoreBytes    int64
}

// finish writes the manifest and follows the collector protocol's second step. If a collector run
// claimed objects since the listing, ConfirmReferences has waited for every run that may have missed
// the manifest to end, so a listing taken now shows all they deleted: an object of the manifest that
// is missing then fails the ingest as transient (the job runs it again from the upload blob), and
// otherwise every object stays while the manifest is live. Called once every file is settled.
func (f *fileIngest) finish(ctx context.Context) (storedFiles, error) {
	entries := slices.SortedFunc(slices.Values(f.entries), func(a, b backup.ManifestEntry) int { return strings.Compare(a.UUID, b.UUID) })
	res := storedFiles{Entries: entries, NewFiles: len(f.created), NewBytes: f.newBytes}
	for _, e := range entries {
		res.FilesBytes += e.Size
	}
	h := backup.ManifestHeader{Format: backup.ManifestFormat, Version: backup.ManifestVersion, Namespace: f.req.Namespace,
		EnvironmentID: f.req.EnvironmentID, SnapshotID: f.req.SnapshotID, CreatedAt: time.Now().UTC(), Files: len(entries), FilesBytes: res.FilesBytes}
	if err := f.s.Blobs.WriteManifest(ctx, f.req.ManifestPath, h, entries); err != nil {
		return storedFiles{}, fmt.Errorf("write the manifest: %w", err)
	}
	ok, _, err := backup.ConfirmReferences(ctx, f.s.Blobs, f.req.Namespace, f.req.EnvironmentID, f.stamp, f.s.now, confirmPoll)
	if err != nil {
		return storedFiles{}, err
	}
	store := f.store
	if !ok {
		if store, err = f.listStore(ctx); err != nil {
			return storedFiles{}, err
		}
		for _, e := range entries {
			if _, found := store[e.Object]; !found {
				return storedFiles{}, backup.Errorf(backup.CodeTransient,
					"the file store's cleanup deleted file document %s, which the upload refers to, while the upload was stored; it is stored again", e.UUID)
			}
		}
	}
	for _, o := range store {
		res.StoreObjects++
		res.StoreBytes += o.Size
	}
	for name, size := range f.created {
		if _, listed := store[name]; !listed {
			res.StoreObjects++
			res.StoreBytes += size
		}
	}
	if res.ManifestBytes, err = f.s.Blobs.BlobSize(ctx, f.req.ManifestPath); err != nil {
		return storedFiles{}, err
	}
	return res, nil
}
