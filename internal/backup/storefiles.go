package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// StoreFilesRequest is what StoreFiles needs to put one snapshot's file documents into the store.
type StoreFilesRequest struct {
	Namespace, EnvironmentID, SnapshotID string
	// ManifestPath is where the manifest goes (Layout.SnapshotManifest of the claim).
	ManifestPath string
	// Files are the UUIDs of the snapshot's file documents, from the dump's own database snapshot.
	Files []string
	// Sources lists the environment's container (in pages) and returns the blobs of the wanted UUIDs;
	// a UUID without a blob is left out.
	Sources func(ctx context.Context, wanted map[string]bool) (map[string]SourceFile, error)
	// Source reads one blob's properties again, after its copy found it changed; found is false when
	// it no longer exists.
	Source func(ctx context.Context, uuid string) (f SourceFile, found bool, err error)
	// Copy copies the source blob f into the store as object, server-side, unless the object exists
	// (then it is checked and kept). It returns ErrSourceMissing or ErrSourceChanged (wrapped) when the
	// blob vanished or was rewritten since it was listed. With readBack it reads the copy back and
	// checks it (size, Content-MD5) itself; without, StoreFiles checks all such copies from one listing
	// of the store afterwards.
	Copy func(ctx context.Context, f SourceFile, object string, readBack bool) (CopyOutcome, error)
	// Workers is how many copies run at once (default 16).
	Workers int
	// Now is the clock the collector's leases are read with; Poll how often ConfirmReferences reads
	// the collector state while a claim is active (default 2 s).
	Now  func() time.Time
	Poll time.Duration
	// Progress, if set, is called after each file is decided (referenced, copied or missing).
	Progress func(done int)
}

// CopyOutcome is what one Copy did.
type CopyOutcome struct {
	Existed bool // the object was there already: nothing was copied
}

// Errors a Copy returns for the source blob (wrapped).
var (
	ErrSourceMissing = errors.New("the file's blob does not exist")
	ErrSourceChanged = errors.New("the file's blob changed after it was listed")
)

// StoreFilesResult is the snapshot's share of the store.
type StoreFilesResult struct {
	Entries    []ManifestEntry // in UUID order, as written to the manifest
	FilesBytes int64
	// NewFiles and NewBytes are the objects this call copied (the others it references).
	NewFiles int
	NewBytes int64
	// Missing are the UUIDs whose blob did not exist (warnings, spec: never silently dropped).
	Missing []string
	// StoreObjects and StoreBytes are the store's contents after the copies, as far as this call saw.
	StoreObjects int
	StoreBytes   int64
}

// maxConfirmRounds bounds how often StoreFiles copies files again because a collector run deleted
// objects it was referencing; each round needs a collector claim that overlapped the previous one.
const maxConfirmRounds = 5

// sourceTries is how often one file is copied when its blob keeps changing between listing and copy.
const sourceTries = 3

// StoreFiles puts a snapshot's files into the environment's store and writes its manifest: files whose
// object is already in the store are referenced, the others copied (Copy, server-side). It follows
// the collector protocol (BeginReferences before listing the store, ConfirmReferences after the
// manifest is written, copying again whatever a concurrent collector run deleted), so that every object
// the returned manifest names exists and stays while the manifest is live.
func StoreFiles(ctx context.Context, fs FileStore, mf Manifests, req StoreFilesRequest) (StoreFilesResult, error) {
	now := req.Now
	if now == nil {
		now = time.Now
	}
	poll := req.Poll
	if poll <= 0 {
		poll = 2 * time.Second
	}
	w := &filesWriter{fs: fs, mf: mf, req: req}
	stamp, err := BeginReferences(ctx, fs, req.Namespace, req.EnvironmentID, now())
	if err != nil {
		return StoreFilesResult{}, err
	}
	if err := w.listStore(ctx); err != nil {
		return StoreFilesResult{}, err
	}
	wanted := map[string]bool{}
	for _, u := range req.Files {
		wanted[u] = true
	}
	sources, err := req.Sources(ctx, wanted)
	if err != nil {
		return StoreFilesResult{}, err
	}
	uuids := make([]string, 0, len(wanted))
	for u := range wanted {
		uuids = append(uuids, u)
	}
	slices.Sort(uuids)
	if err := w.place(ctx, uuids, sources); err != nil {
		return StoreFilesResult{}, err
	}
	if err := w.checkCopies(ctx); err != nil {
		return StoreFilesResult{}, err
	}
	if err := w.writeManifest(ctx); err != nil {
		return StoreFilesResult{}, err
	}
	for round := 1; ; round++ {
		ok, next, err := ConfirmReferences(ctx, fs, req.Namespace, req.EnvironmentID, stamp, now, poll)
		if err != nil {
			return StoreFilesResult{}, err
		}
		if ok {
			break
		}
		if round == maxConfirmRounds {
			return StoreFilesResult{}, Errorf(CodeTransient, "the file store's cleanup kept deleting files this backup uses; the backup is tried again")
		}
		stamp = next
		changed, err := w.replaceLost(ctx)
		if err == nil {
			err = w.checkCopies(ctx)
		}
		if err != nil {
			return StoreFilesResult{}, err
		}
		if changed {
			if err := w.writeManifest(ctx); err != nil {
				return StoreFilesResult{}, err
			}
		}
	}
	return w.result(), nil
}

// filesWriter is the state of one StoreFiles call.
type filesWriter struct {
	fs  FileStore
	mf  Manifests
	req StoreFilesRequest

	// readBack: copies check themselves (few copies) rather than being checked from a listing.
	readBack bool

	mu       sync.Mutex
	store    map[string]StoreObject   // objects in the store as last listed (or copied since), by name
	copies   map[string]ManifestEntry // objects this call copied and has not checked yet, by name
	entries  map[string]ManifestEntry
	missing  map[string]bool
	newFiles int
	newBytes int64
	done     int
}

func (w *filesWriter) listStore(ctx context.Context) error {
	store := map[string]StoreObject{}
	err := w.fs.WalkObjects(ctx, w.req.Namespace, w.req.EnvironmentID, func(o StoreObject) error {
		store[o.Name] = o
		return nil
	})
	if err != nil {
		return fmt.Errorf("list the file store: %w", err)
	}
	w.mu.Lock()
	w.store = store
	w.mu.Unlock()
	return nil
}

// listingCheckFrom is how many copies make one listing of the store a cheaper check than reading each
// copy back: a listing page holds 5,000 objects, but lists the whole store.
const listingCheckFrom = 1000

// place decides each file: referenced when its object is in the store, else copied.
func (w *filesWriter) place(ctx context.Context, uuids []string, sources map[string]SourceFile) error {
	w.entries = make(map[string]ManifestEntry, len(uuids))
	w.missing = map[string]bool{}
	var toCopy []SourceFile
	for _, u := range uuids {
		src, found := sources[u]
		if !found {
			w.settle(u, nil)
			continue
		}
		if name := ObjectName(src); w.has(name) {
			w.settle(u, &ManifestEntry{UUID: u, Size: src.Size, MD5: src.MD5, Object: name})
			continue
		}
		toCopy = append(toCopy, src)
	}
	w.readBack = len(toCopy) < listingCheckFrom
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.workers())
	for _, src := range toCopy {
		g.Go(func() error { return w.copyFile(gctx, src) })
	}
	return g.Wait()
}

func (w *filesWriter) workers() int {
	if w.req.Workers > 0 {
		return w.req.Workers
	}
	return 16
}

func (w *filesWriter) has(name string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.store[name]
	return ok
}

// copyFile copies one file into the store, reading its blob's properties again when it changed since
// it was listed; a blob that no longer exists is missing.
func (w *filesWriter) copyFile(ctx context.Context, src SourceFile) error {
	for try := 1; ; try++ {
		name := ObjectName(src)
		if w.has(name) {
			w.settle(src.UUID, &ManifestEntry{UUID: src.UUID, Size: src.Size, MD5: src.MD5, Object: name})
			return nil
		}
		out, err := w.req.Copy(ctx, src, name, w.readBack)
		switch {
		case err == nil:
			w.copied(src, name, !out.Existed)
			return nil
		case errors.Is(err, ErrSourceMissing):
			w.settle(src.UUID, nil)
			return nil
		case errors.Is(err, ErrSourceChanged) && try < sourceTries:
			next, found, err := w.req.Source(ctx, src.UUID)
			if err != nil {
				return fmt.Errorf("file document %s: %w", src.UUID, err)
			}
			if !found {
				w.settle(src.UUID, nil)
				return nil
			}
			src = next
		default:
			return fmt.Errorf("copy file document %s into the store: %w", src.UUID, err)
		}
	}
}

func (w *filesWriter) copied(src SourceFile, name string, isNew bool) {
	e := ManifestEntry{UUID: src.UUID, Size: src.Size, MD5: src.MD5, Object: name}
	w.mu.Lock()
	w.store[name] = StoreObject{Name: name, Size: src.Size, MD5: src.MD5}
	if isNew {
		w.newFiles++
		w.newBytes += src.Size
	}
	if isNew && !w.readBack {
		if w.copies == nil {
			w.copies = map[string]ManifestEntry{}
		}
		w.copies[name] = e
	}
	w.mu.Unlock()
	w.settle(src.UUID, &e)
}

// checkCopies lists the store once and checks every object this call copied against its entry: the
// size, and the Content-MD5 when the source had one. The copies were not read back one by one (that
// would double a backup's requests); what Storage copied is the listed version of each source, as the
// copies are conditional on its ETag, and this checks that Storage kept it so. A copy that does not
// match is deleted and fails the call as transient: the next attempt copies it again.
func (w *filesWriter) checkCopies(ctx context.Context) error {
	w.mu.Lock()
	pending := len(w.copies)
	w.mu.Unlock()
	if pending == 0 {
		return nil
	}
	if err := w.listStore(ctx); err != nil {
		return err
	}
	w.mu.Lock()
	copies := w.copies
	w.copies = nil
	w.mu.Unlock()
	for name, e := range copies {
		o, ok := w.store[name]
		switch {
		case !ok:
			return Errorf(CodeTransient, "file document %s, just copied into the store, is not there; the backup is tried again", e.UUID)
		case o.Size == e.Size && (e.MD5 == nil || bytes.Equal(o.MD5, e.MD5)):
			continue
		}
		if err := w.fs.DeleteObject(ctx, w.req.Namespace, w.req.EnvironmentID, name); err != nil {
			return fmt.Errorf("delete the copy of file document %s, which does not match its source: %w", e.UUID, err)
		}
		return Errorf(CodeTransient, "the copy of file document %s in the store does not match its source (%d bytes, %d listed); it was deleted and the backup is tried again", e.UUID, o.Size, e.Size)
	}
	return nil
}

// settle records a file's entry (nil: its blob is missing) and reports progress: the files decided
// so far (a file decided again after a collector run counts once).
func (w *filesWriter) settle(uuid string, e *ManifestEntry) {
	w.mu.Lock()
	_, had := w.entries[uuid]
	if !had && !w.missing[uuid] {
		w.done++
	}
	if e == nil {
		delete(w.entries, uuid)
		w.missing[uuid] = true
	} else {
		w.entries[uuid] = *e
		delete(w.missing, uuid)
	}
	done := w.done
	w.mu.Unlock()
	if w.req.Progress != nil {
		w.req.Progress(done)
	}
}

func (w *filesWriter) sortedEntries() []ManifestEntry {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]ManifestEntry, 0, len(w.entries))
	for _, e := range w.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b ManifestEntry) int { return strings.Compare(a.UUID, b.UUID) })
	return out
}

func (w *filesWriter) writeManifest(ctx context.Context) error {
	entries := w.sortedEntries()
	h := ManifestHeader{Format: ManifestFormat, Version: ManifestVersion, Namespace: w.req.Namespace,
		EnvironmentID: w.req.EnvironmentID, SnapshotID: w.req.SnapshotID, CreatedAt: time.Now().UTC(), Files: len(entries)}
	for _, e := range entries {
		h.FilesBytes += e.Size
	}
	if err := w.mf.WriteManifest(ctx, w.req.ManifestPath, h, entries); err != nil {
		return fmt.Errorf("write the manifest: %w", err)
	}
	return nil
}

// replaceLost lists the store again and copies the files whose object a collector run deleted. It
// reports whether any entry changed (a file's blob had changed or vanished meanwhile).
func (w *filesWriter) replaceLost(ctx context.Context) (bool, error) {
	if err := w.listStore(ctx); err != nil {
		return false, err
	}
	var lost []ManifestEntry
	for _, e := range w.sortedEntries() {
		if !w.has(e.Object) {
			lost = append(lost, e)
		}
	}
	if len(lost) == 0 {
		return false, nil
	}
	w.readBack = true // a few files, after a collector run
	before := map[string]string{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.workers())
	for _, e := range lost {
		before[e.UUID] = e.Object
		g.Go(func() error {
			src, found, err := w.req.Source(gctx, e.UUID)
			if err != nil {
				return fmt.Errorf("file document %s: %w", e.UUID, err)
			}
			if !found {
				w.settle(e.UUID, nil)
				return nil
			}
			return w.copyFile(gctx, src)
		})
	}
	if err := g.Wait(); err != nil {
		return false, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for u, obj := range before {
		if e, ok := w.entries[u]; !ok || e.Object != obj {
			return true, nil
		}
	}
	return false, nil
}

func (w *filesWriter) result() StoreFilesResult {
	entries := w.sortedEntries()
	w.mu.Lock()
	defer w.mu.Unlock()
	res := StoreFilesResult{Entries: entries, NewFiles: w.newFiles, NewBytes: w.newBytes, StoreObjects: len(w.store)}
	for _, e := range entries {
		res.FilesBytes += e.Size
	}
	for _, o := range w.store {
		res.StoreBytes += o.Size
	}
	for u := range w.missing {
		res.Missing = append(res.Missing, u)
	}
	slices.Sort(res.Missing)
	return res
}
