// Package restorer implements backup.RestoreWorker by composing internal/pg (the database half:
// staging database, pg_restore, the swap), internal/blobstore and internal/backup (the files half,
// Files): a restore that fails or is undone leaves the target environment as it was.
package restorer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
)

// FileBlobs is the blob storage the files half works with (*blobstore.Store); tests wrap it to inject
// failures. Errors are *backup.Error, CodeTransient when a retry may help.
type FileBlobs interface {
	ReadManifest(ctx context.Context, path string, fn func(backup.ManifestEntry) error) (backup.ManifestHeader, error)
	ListFiles(ctx context.Context, container, prefix string, fn func(blobstore.FileInfo) error) error
	CopyBlob(ctx context.Context, src, dst blobstore.BlobRef, want blobstore.CopyBlobCheck) (blobstore.CopyResult, error)
	DeleteBlobIfMatch(ctx context.Context, ref blobstore.BlobRef, etag azcore.ETag) error
	WriteRestorePlan(ctx context.Context, namespace, envID string, h blobstore.RestorePlanHeader, entries []blobstore.RestorePlanEntry) (bool, error)
	ReadRestorePlan(ctx context.Context, namespace, envID, restoreID string, fn func(blobstore.RestorePlanEntry) error) (blobstore.RestorePlanHeader, error)
	DeleteRestoreArea(ctx context.Context, namespace, envID, restoreID string) error
	SnapshotsContainer() string
	FileStoreContainer() string
}

var _ FileBlobs = (*blobstore.Store)(nil)

// defaultFileWorkers: file documents are small, so latency, not bandwidth, bounds sequential copies.
const defaultFileWorkers = 16

// maxFileProblems is how many problems Check names; the rest are counted.
const maxFileProblems = 20

// Files restores a snapshot's file documents into the target's container, server-side (no byte
// passes through the worker), all or nothing: Place writes the restore's plan before it changes any
// blob and saves every blob it overwrites to the restore's undo area first, so that Revert can put
// the container back exactly as the plan saw it. Every method can be called again after a crash or a
// failure at any point, and finishes the job from the plan and the blobs themselves.
type Files struct {
	Blobs FileBlobs
	// Workers is how many copies run at once (default 16).
	Workers int
	Log     zerolog.Logger
}

// FilesOutcome is what Place did, by the plan: files added, replaced (their old bytes saved) and
// left unchanged, and Bytes, the bytes copied into the container (added and replaced files).
type FilesOutcome struct {
	Added, Replaced, Unchanged int
	Bytes                      int64
}

// plannedFile is one file of the plan, with the ETag of its store object once listed.
type plannedFile struct {
	blobstore.RestorePlanEntry
	src azcore.ETag // "" for unchanged files, which are not copied
}

// Place restores w.Snapshot's files into w.Target's container. The first call reads the snapshot's
// manifest and lists the container once, and decides each file: added where no blob is, unchanged
// where the blob has the snapshot's size and Content-MD5 (both known), replaced otherwise; it checks
// that the snapshot's file store (under the snapshot's environment, which may not be the target)
// holds every object to copy, and writes the plan before any blob changes. A later call follows the
// plan it finds, whatever the container holds now. The copies run with Workers at once: an added file
// is copied only where no blob is (one there is an earlier attempt's copy, checked); a replaced one
// is first copied, while it is the planned version, to the undo area (one there is saved already),
// and only then overwritten, if it is still the planned version (another version is an earlier
// attempt's copy, checked). Copies into the container are checked by size and Content-MD5 from one
// listing, by Check, not read back one by one. progress, if set, is called (never concurrently) with
// the files done and their total.
func (f *Files) Place(ctx context.Context, w backup.RestoreWork, progress func(done, total int)) (FilesOutcome, error) {
	if w.Snapshot.ManifestPath == "" {
		return FilesOutcome{}, backup.Errorf(backup.CodeInvalidState, "snapshot %s is in the older one-archive layout, whose files cannot be restored", w.Snapshot.ID)
	}
	r := w.Restore
	h, files, err := f.readPlan(ctx, r)
	found := err == nil
	switch {
	case found:
		f.Log.Info().Str("restore", r.ID).Int("files", len(files)).Msg("following the file plan of an earlier attempt")
	case !backup.IsNotFound(err):
		return FilesOutcome{}, err
	default:
		if h, files, err = f.makePlan(ctx, w); err != nil || len(files) == 0 {
			return FilesOutcome{}, err // no file: nothing to plan, nothing to touch
		}
	}
	if err := checkPlanFor(h, w); err != nil {
		return FilesOutcome{}, err
	}
	if err := f.resolveObjects(ctx, w.Snapshot, files); err != nil {
		return FilesOutcome{}, err
	}
	if !found {
		entries := make([]blobstore.RestorePlanEntry, len(files))
		for i, p := range files {
			entries[i] = p.RestorePlanEntry
		}
		created, err := f.Blobs.WriteRestorePlan(ctx, r.Namespace, r.EnvironmentID, h, entries)
		if err != nil {
			return FilesOutcome{}, filesErr(err, "could not write the restore's file plan")
		}
		if !created { // an earlier attempt's, or this very write retried: what is stored is followed
			return f.Place(ctx, w, progress)
		}
	}
	out := outcomeOf(files)
	f.Log.Info().Str("restore", r.ID).Int("added", out.Added).Int("replaced", out.Replaced).Int("unchanged", out.Unchanged).Msg("restoring files")
	return out, f.execute(ctx, r, h, files, out.Unchanged, progress)
}

func outcomeOf(files []plannedFile) FilesOutcome {
	var out FilesOutcome
	for _, p := range files {
		switch p.Action {
		case blobstore.PlanAdd:
			out.Added++
			out.Bytes += p.Size
		case blobstore.PlanReplace:
			out.Replaced++
			out.Bytes += p.Size
		default:
			out.Unchanged++
		}
	}
	return out
}

// readPlan reads the restore's plan; CodeNotFound when it has none.
func (f *Files) readPlan(ctx context.Context, r backup.Restore) (blobstore.RestorePlanHeader, []plannedFile, error) {
	var files []plannedFile
	h, err := f.Blobs.ReadRestorePlan(ctx, r.Namespace, r.EnvironmentID, r.ID, func(e blobstore.RestorePlanEntry) error {
		files = append(files, plannedFile{RestorePlanEntry: e})
		return nil
	})
	if err != nil && !backup.IsNotFound(err) {
		return h, nil, filesErr(err, "could not read the restore's file plan")
	}
	return h, files, err
}

// makePlan decides each file of the snapshot from one listing of the target's container.
func (f *Files) makePlan(ctx context.Context, w backup.RestoreWork) (blobstore.RestorePlanHeader, []plannedFile, error) {
	var files []plannedFile
	mh, err := f.Blobs.ReadManifest(ctx, w.Snapshot.ManifestPath, func(e backup.ManifestEntry) error {
		files = append(files, plannedFile{RestorePlanEntry: blobstore.RestorePlanEntry{UUID: e.UUID, Action: blobstore.PlanAdd, Size: e.Size, MD5: e.MD5, Object: e.Object}})
		return nil
	})
	if err != nil {
		return blobstore.RestorePlanHeader{}, nil, filesErr(err, "could not read the list of the snapshot's files")
	}
	loc := w.Target.Files
	h := blobstore.RestorePlanHeader{RestoreID: w.Restore.ID, Container: loc.Container, Prefix: loc.Prefix,
		SourceEnvironmentID: w.Snapshot.EnvironmentID, SnapshotID: w.Snapshot.ID, Files: len(files), FilesBytes: mh.FilesBytes}
	if len(files) == 0 {
		return h, nil, nil
	}
	err = f.joinListing(ctx, loc.Container, loc.Prefix, len(files), func(i int) string { return files[i].UUID }, func(i int, b blobstore.FileInfo) {
		e := &files[i].RestorePlanEntry
		e.ETag, e.OldSize, e.OldMD5 = string(b.ETag), b.Size, b.ContentMD5
		e.Action = blobstore.PlanReplace
		if b.Size == e.Size && len(e.MD5) > 0 && bytes.Equal(b.ContentMD5, e.MD5) {
			e.Action = blobstore.PlanUnchanged
		}
	})
	if err != nil {
		return h, nil, filesErr(err, "could not list the files of the environment's container %s", loc.Container)
	}
	return h, files, nil
}

// checkPlanFor refuses a plan made for another container or snapshot than w's.
func checkPlanFor(h blobstore.RestorePlanHeader, w backup.RestoreWork) error {
	loc := w.Target.Files
	if h.Container != loc.Container || h.Prefix != loc.Prefix {
		return backup.Errorf(backup.CodeInvalidState, "the restore planned its files for container %s (prefix %q), but the environment's files are now in container %s (prefix %q)",
			h.Container, h.Prefix, loc.Container, loc.Prefix)
	}
	if h.SnapshotID != w.Snapshot.ID || h.SourceEnvironmentID != w.Snapshot.EnvironmentID {
		return backup.Errorf(backup.CodeInternal, "the restore's file plan is of snapshot %s, not of %s", h.SnapshotID, w.Snapshot.ID)
	}
	return nil
}

// resolveObjects lists the snapshot's file store once and gives each file to copy its object's ETag
// (copies are conditional on it); an object missing or not of its entry's size fails the restore
// before anything changes.
func (f *Files) resolveObjects(ctx context.Context, snap backup.Snapshot, files []plannedFile) error {
	var wrong []string
	prefix := blobstore.Layout{}.StorePrefix(snap.Namespace, snap.EnvironmentID)
	err := f.joinListing(ctx, f.Blobs.FileStoreContainer(), prefix, len(files), func(i int) string { return files[i].Object }, func(i int, b blobstore.FileInfo) {
		p := &files[i]
		if p.Action != blobstore.PlanUnchanged {
			p.src = b.ETag
			if b.Size != p.Size {
				wrong = append(wrong, p.UUID)
			}
		}
	})
	if err != nil {
		return filesErr(err, "could not list the snapshot's file store")
	}
	var missing []string
	for _, p := range files {
		if p.Action != blobstore.PlanUnchanged && p.src == "" {
			missing = append(missing, p.UUID)
		}
	}
	if bad := append(missing, wrong...); len(bad) > 0 {
		return backup.Errorf(backup.CodeInternal, "the snapshot's file store lacks %d of its files and holds %d of another size (file %s, for one); the snapshot cannot be restored",
			len(missing), len(wrong), bad[0])
	}
	return nil
}

// joinListing lists container under prefix once, in pages, and calls match(i, blob) for each blob
// named prefix+key(i). The n keys are in strictly increasing order (they come from a manifest or a
// plan) and a listing is in name order, so one pass merges them; memory stays the caller's slice.
func (f *Files) joinListing(ctx context.Context, container, prefix string, n int, key func(int) string, match func(int, blobstore.FileInfo)) error {
	return f.joinListingAll(ctx, container, prefix, n, key, match, nil)
}

// joinListingAll is joinListing that also gives every listed blob to each, when set.
func (f *Files) joinListingAll(ctx context.Context, container, prefix string, n int, key func(int) string, match func(int, blobstore.FileInfo), each func(blobstore.FileInfo)) error {
	i, prev := 0, ""
	return f.Blobs.ListFiles(ctx, container, prefix, func(b blobstore.FileInfo) error {
		if b.Name < prev {
			return backup.Errorf(backup.CodeTransient, "Blob Storage listed container %s out of name order (%s after %s)", container, b.Name, prev)
		}
		prev = b.Name
		if each != nil {
			each(b)
		}
		k := strings.TrimPrefix(b.Name, prefix)
		for i < n && key(i) < k {
			i++
		}
		if i < n && key(i) == k {
			match(i, b)
			i++
		}
		return nil
	})
}

// execute copies the planned files, Workers at a time; the first failure stops the others.
func (f *Files) execute(ctx context.Context, r backup.Restore, h blobstore.RestorePlanHeader, files []plannedFile, unchanged int, progress func(done, total int)) error {
	var mu sync.Mutex
	done := 0
	report := func(n int) {
		mu.Lock()
		defer mu.Unlock()
		done += n
		if progress != nil {
			progress(done, len(files))
		}
	}
	report(unchanged)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.workers())
	for i := range files {
		if files[i].Action == blobstore.PlanUnchanged {
			continue
		}
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := f.placeFile(gctx, r, h, &files[i]); err != nil {
				return err
			}
			report(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return backup.Wrap(backup.CodeTransient, err, "restoring the files was interrupted")
	}
	return nil
}

func (f *Files) workers() int {
	if f.Workers > 0 {
		return f.Workers
	}
	return defaultFileWorkers
}

// placeFile copies one added or replaced file; a replaced one is saved first.
func (f *Files) placeFile(ctx context.Context, r backup.Restore, h blobstore.RestorePlanHeader, p *plannedFile) error {
	target := blobstore.BlobRef{Container: h.Container, Name: h.Prefix + p.UUID}
	object := blobstore.BlobRef{Container: f.Blobs.FileStoreContainer(), Name: blobstore.Layout{}.StoreObject(r.Namespace, h.SourceEnvironmentID, p.Object)}
	want := blobstore.CopyBlobCheck{CopyCheck: blobstore.CopyCheck{ETag: p.src, Size: p.Size, MD5: p.MD5, VerifyByListing: true}}
	if p.Action == blobstore.PlanReplace {
		if err := f.save(ctx, r, target, p); err != nil {
			return err
		}
		want.Overwrite = azcore.ETag(p.ETag)
	}
	res, err := f.Blobs.CopyBlob(ctx, object, target, want)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, blobstore.ErrMismatch) && res.Existed:
		return backup.Wrap(backup.CodeInvalidState, err, "file %s in container %s changed during the restore (the app must stay stopped during a restore); it was left as it is", p.UUID, h.Container)
	case errors.Is(err, blobstore.ErrDestinationChanged):
		return backup.Wrap(backup.CodeInvalidState, err, "file %s was deleted from container %s during the restore (the app must stay stopped during a restore)", p.UUID, h.Container)
	}
	return filesErr(err, "could not restore file %s into container %s", p.UUID, h.Container)
}

// save copies the target's blob, while it is the planned version, to the undo area; a copy there
// already was saved by an earlier attempt (and is checked against the plan).
func (f *Files) save(ctx context.Context, r backup.Restore, target blobstore.BlobRef, p *plannedFile) error {
	_, err := f.Blobs.CopyBlob(ctx, target, f.undoRef(r, target.Name),
		blobstore.CopyBlobCheck{CopyCheck: blobstore.CopyCheck{ETag: azcore.ETag(p.ETag), Size: p.OldSize, MD5: p.OldMD5}})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, blobstore.ErrSourceChanged) || errors.Is(err, blobstore.ErrSourceMissing):
		return backup.Wrap(backup.CodeInvalidState, err, "file %s in container %s changed after the restore planned its files (the app must stay stopped during a restore); it was not overwritten", p.UUID, target.Container)
	}
	return filesErr(err, "could not save file %s of container %s before overwriting it", p.UUID, target.Container)
}

func (f *Files) undoRef(r backup.Restore, name string) blobstore.BlobRef {
	return blobstore.BlobRef{Container: f.Blobs.SnapshotsContainer(), Name: blobstore.Layout{}.RestoreUndo(r.Namespace, r.EnvironmentID, r.ID, name)}
}

// Check lists w.Target's container once and reports, in UUID order, each file of the snapshot whose
// blob is missing, not of the snapshot's size, or without the snapshot's Content-MD5 (when known):
// at most 20 named, then "and N more". No problem is nil.
func (f *Files) Check(ctx context.Context, w backup.RestoreWork) ([]string, error) {
	return f.CheckListed(ctx, w, nil)
}

// CheckListed is Check, and also gives each blob of the listing (under the prefix, of any name) to
// each, when set: the caller's own checks need no listing of their own.
func (f *Files) CheckListed(ctx context.Context, w backup.RestoreWork, each func(blobstore.FileInfo)) ([]string, error) {
	type wanted struct {
		uuid string
		size int64
		md5  []byte
		got  *blobstore.FileInfo
	}
	var files []wanted
	if _, err := f.Blobs.ReadManifest(ctx, w.Snapshot.ManifestPath, func(e backup.ManifestEntry) error {
		files = append(files, wanted{uuid: e.UUID, size: e.Size, md5: e.MD5})
		return nil
	}); err != nil {
		return nil, filesErr(err, "could not read the list of the snapshot's files")
	}
	if len(files) == 0 && each == nil {
		return nil, nil
	}
	loc := w.Target.Files
	err := f.joinListingAll(ctx, loc.Container, loc.Prefix, len(files), func(i int) string { return files[i].uuid }, func(i int, b blobstore.FileInfo) {
		files[i].got = &blobstore.FileInfo{Size: b.Size, ContentMD5: b.ContentMD5}
	}, each)
	if err != nil {
		return nil, filesErr(err, "could not list the files of the environment's container %s", loc.Container)
	}
	var problems []string
	n := 0
	for _, e := range files {
		var p string
		switch b := e.got; {
		case b == nil:
			p = fmt.Sprintf("file %s is missing", e.uuid)
		case b.Size != e.size:
			p = fmt.Sprintf("file %s has %d bytes where the snapshot's has %d", e.uuid, b.Size, e.size)
		case len(e.md5) > 0 && len(b.ContentMD5) == 0:
			p = fmt.Sprintf("file %s has no Content-MD5 where the snapshot's has one", e.uuid)
		case len(e.md5) > 0 && !bytes.Equal(b.ContentMD5, e.md5):
			p = fmt.Sprintf("file %s has other bytes than the snapshot's (its Content-MD5 differs)", e.uuid)
		default:
			continue
		}
		if n++; n <= maxFileProblems {
			problems = append(problems, p)
		}
	}
	if n > maxFileProblems {
		problems = append(problems, fmt.Sprintf("and %d more", n-maxFileProblems))
	}
	return problems, nil
}

// Revert puts the container the plan was made for back as the plan's listing saw it, from whatever
// point Place reached: files it added are deleted (only a blob of the added file's size and
// Content-MD5: another is not the restore's, and is left), files it replaced are put back from the
// undo area (skipped while the blob is still the planned version, or has the saved size and MD5
// already), unchanged files are left alone. No plan means nothing was touched. A replaced file with
// no saved copy was never overwritten (Place saves first), so it is left too. Revert may be called
// again at any point.
func (f *Files) Revert(ctx context.Context, w backup.RestoreWork) error {
	r := w.Restore
	h, files, err := f.readPlan(ctx, r)
	if backup.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	cur := make([]*blobstore.FileInfo, len(files))
	undo := make([]*blobstore.FileInfo, len(files))
	uuid := func(i int) string { return files[i].UUID }
	if err := f.joinListing(ctx, h.Container, h.Prefix, len(files), uuid, func(i int, b blobstore.FileInfo) { cur[i] = &b }); err != nil {
		return filesErr(err, "could not list the files of container %s to put them back", h.Container)
	}
	if outcomeOf(files).Replaced > 0 {
		prefix := blobstore.Layout{}.RestoreUndoPrefix(r.Namespace, r.EnvironmentID, r.ID) + h.Prefix
		if err := f.joinListing(ctx, f.Blobs.SnapshotsContainer(), prefix, len(files), uuid, func(i int, b blobstore.FileInfo) { undo[i] = &b }); err != nil {
			return filesErr(err, "could not list the files the restore saved")
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.workers())
	for i := range files {
		if files[i].Action == blobstore.PlanUnchanged {
			continue
		}
		g.Go(func() error { return f.revertFile(gctx, r, h, files[i].RestorePlanEntry, cur[i], undo[i]) })
	}
	return g.Wait()
}

func (f *Files) revertFile(ctx context.Context, r backup.Restore, h blobstore.RestorePlanHeader, e blobstore.RestorePlanEntry, cur, saved *blobstore.FileInfo) error {
	target := blobstore.BlobRef{Container: h.Container, Name: h.Prefix + e.UUID}
	log := f.Log.With().Str("restore", r.ID).Str("file", e.UUID).Logger()
	if e.Action == blobstore.PlanAdd {
		switch {
		case cur == nil:
			return nil
		case cur.Size != e.Size || (len(e.MD5) > 0 && len(cur.ContentMD5) > 0 && !bytes.Equal(cur.ContentMD5, e.MD5)):
			log.Warn().Int64("size", cur.Size).Msg("the blob where the restore added a file is not the restore's; left as it is")
			return nil
		}
		if err := f.Blobs.DeleteBlobIfMatch(ctx, target, cur.ETag); err != nil {
			return filesErr(err, "could not remove file %s, which the restore added, from container %s", e.UUID, h.Container)
		}
		return nil
	}
	switch {
	case cur != nil && string(cur.ETag) == e.ETag:
		return nil // never overwritten
	case cur != nil && cur.Size == e.OldSize && len(e.OldMD5) > 0 && bytes.Equal(cur.ContentMD5, e.OldMD5):
		return nil // put back already
	case saved == nil:
		log.Warn().Msg("the file differs from the plan's listing but was never saved, so the restore did not overwrite it; left as it is")
		return nil
	case saved.Size != e.OldSize || (len(e.OldMD5) > 0 && !bytes.Equal(saved.ContentMD5, e.OldMD5)):
		return backup.Errorf(backup.CodeInternal, "the saved copy of file %s is not the blob the restore saved (%d bytes where it had %d); it cannot be put back", e.UUID, saved.Size, e.OldSize)
	}
	want := blobstore.CopyBlobCheck{CopyCheck: saved.Check()}
	if cur != nil {
		want.Overwrite = cur.ETag
	}
	res, err := f.Blobs.CopyBlob(ctx, f.undoRef(r, target.Name), target, want)
	switch {
	case err == nil && (!res.Existed || len(e.OldMD5) > 0):
		return nil // put back, or found put back (its MD5 checked)
	case err == nil || errors.Is(err, blobstore.ErrDestinationChanged) || (errors.Is(err, blobstore.ErrMismatch) && res.Existed):
		return backup.Wrap(backup.CodeTransient, err, "file %s of container %s changed while it was being put back; putting it back is tried again", e.UUID, h.Container)
	}
	return filesErr(err, "could not put back file %s of container %s", e.UUID, h.Container)
}

// Discard deletes the restore's area: the saved files, then the plan. After it the restore cannot be
// reverted.
func (f *Files) Discard(ctx context.Context, w backup.RestoreWork) error {
	r := w.Restore
	if err := f.Blobs.DeleteRestoreArea(ctx, r.Namespace, r.EnvironmentID, r.ID); err != nil {
		return filesErr(err, "could not delete the files the restore saved for its undo")
	}
	return nil
}

// filesErr gives err a sentence of the restore's, keeping its code and, for users, its own message.
func filesErr(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if be, ok := errors.AsType[*backup.Error](err); ok {
		return backup.Wrap(be.Code, err, "%s: %s", msg, be.Message)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return backup.Wrap(backup.CodeTransient, err, "%s: interrupted", msg)
	}
	return backup.Wrap(backup.CodeInternal, err, "%s", msg)
}
