package blobstore

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/backup"
)

// A restore's area in the snapshots container (Layout.RestorePrefix) holds its file plan, written
// once before any blob of the target changes, and the target blobs it saved before overwriting them
// (Layout.RestoreUndo). The plan is what makes the restore's file half all-or-nothing: a later
// attempt follows it rather than a new listing of a container the first attempt already changed, and
// the rollback reads from it what was there before.
//
// The plan is one gzip stream of JSON lines, like a manifest (manifest.go, whose line reader and
// entry checks it shares): the RestorePlanHeader, then one RestorePlanEntry per file of the snapshot
// in strictly increasing UUID order.

// RestorePlanFormat names the plan format; RestorePlanVersion is its version.
const (
	RestorePlanFormat  = "mxbackup-restore-plan"
	RestorePlanVersion = 1
)

// PlanAction is what the restore does to one file of the target.
type PlanAction string

const (
	// PlanAdd: no blob was there; the snapshot's is copied in, and removed by a rollback.
	PlanAdd PlanAction = "add"
	// PlanReplace: a blob with other (or unknown) bytes was there; it is saved to the undo area, then
	// overwritten, and put back by a rollback.
	PlanReplace PlanAction = "replace"
	// PlanUnchanged: the blob there has the snapshot's size and Content-MD5; it is left alone.
	PlanUnchanged PlanAction = "unchanged"
)

// RestorePlanHeader opens a plan.
type RestorePlanHeader struct {
	Format    string `json:"format"`
	Version   int    `json:"version"`
	RestoreID string `json:"restore_id"`
	// Container and Prefix are the target's file location the plan was made for: a rollback puts
	// back that container, whatever the environment says later.
	Container string `json:"container"`
	Prefix    string `json:"prefix"`
	// The snapshot restored; its files come from its environment's file store.
	SourceEnvironmentID string `json:"source_environment_id"`
	SnapshotID          string `json:"snapshot_id"`
	Files               int    `json:"files"`       // entries that follow
	FilesBytes          int64  `json:"files_bytes"` // the sum of their (the snapshot's) sizes
}

// RestorePlanEntry is one file: the snapshot's (size, MD5, store object, as its manifest has them)
// and, unless added, the target's blob as listed when the plan was made.
type RestorePlanEntry struct {
	UUID   string     `json:"uuid"`
	Action PlanAction `json:"action"`
	Size   int64      `json:"size"`
	MD5    []byte     `json:"md5,omitempty"`
	Object string     `json:"object"`
	// ETag, OldSize and OldMD5 are the target's blob as listed (replace, unchanged): the version a
	// replace saves and overwrites, and what a rollback puts back.
	ETag    string `json:"etag,omitempty"`
	OldSize int64  `json:"old_size,omitempty"`
	OldMD5  []byte `json:"old_md5,omitempty"`
}

// ErrRestorePlanDamaged is the cause, for errors.Is, of every error about a plan that is not one.
var ErrRestorePlanDamaged = errors.New("the restore plan is damaged")

// planDamage is a damage found by the manifest's line reader and checks, about a plan.
type planDamage struct{ d *manifestDamage }

func (p *planDamage) Error() string {
	return "the restore plan is damaged" + strings.TrimPrefix(p.d.Error(), "the manifest is damaged")
}

func (p *planDamage) Unwrap() []error {
	if p.d.err == nil {
		return []error{ErrRestorePlanDamaged}
	}
	return []error{ErrRestorePlanDamaged, p.d.err}
}

// WriteRestorePlan stores the plan of h and entries for the target (namespace, envID) if the
// restore has none yet (If-None-Match: *), with one Put Blob whose Content-MD5 Storage checks. created
// is false, and the error nil, when a plan is there already (an earlier attempt's, or this very write
// whose answer was lost): the caller then reads it and follows it. A zero h.Format and h.Version are
// the current ones; anything ReadRestorePlan would refuse is refused before a byte is sent.
func (s *Store) WriteRestorePlan(ctx context.Context, namespace, envID string, h RestorePlanHeader, entries []RestorePlanEntry) (created bool, err error) {
	if err := checkRestore(namespace, envID, h.RestoreID); err != nil {
		return false, err
	}
	const what = "write the restore's file plan"
	var buf bytes.Buffer
	if err := encodePlan(&buf, h, entries); err != nil {
		if d, ok := errors.AsType[*manifestDamage](err); ok {
			return false, backup.Wrap(backup.CodeInternal, &planDamage{d}, "could not %s: %s", what, d.refusal())
		}
		return false, backup.Wrap(backup.CodeInternal, err, "could not %s", what)
	}
	sum := md5.Sum(buf.Bytes())
	bb := s.client.ServiceClient().NewContainerClient(s.snapshots).NewBlockBlobClient(Layout{}.RestorePlan(namespace, envID, h.RestoreID))
	_, err = bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(buf.Bytes())), &blockblob.UploadOptions{
		HTTPHeaders:             &blob.HTTPHeaders{BlobContentType: to.Ptr("application/gzip")},
		TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
		AccessConditions:        &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	})
	switch {
	case bloberror.HasCode(err, bloberror.BlobAlreadyExists): // Azure and Azurite alike
		return false, nil
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return false, s.containerMissing(s.snapshots, err)
	case err != nil:
		return false, transient(err, "%s", what)
	}
	return true, nil
}

// ReadRestorePlan streams the restore's plan (in ranges; one line in memory at a time), calls fn for
// each entry in order and returns the header. A missing plan is CodeNotFound (the restore changed
// nothing). One that is not what WriteRestorePlan writes, or is another restore's, is CodeInternal
// with ErrRestorePlanDamaged as cause, never fewer entries: the caller keeps nothing of a read that
// fails. fn's error stops the read and is returned as is.
func (s *Store) ReadRestorePlan(ctx context.Context, namespace, envID, restoreID string, fn func(RestorePlanEntry) error) (RestorePlanHeader, error) {
	if err := checkRestore(namespace, envID, restoreID); err != nil {
		return RestorePlanHeader{}, err
	}
	const what = "read the restore's file plan"
	r, err := s.open(ctx, s.snapshots, Layout{}.RestorePlan(namespace, envID, restoreID), what)
	switch {
	case blobMissing(err):
		return RestorePlanHeader{}, backup.Wrap(backup.CodeNotFound, err, "the restore has no file plan")
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return RestorePlanHeader{}, s.containerMissing(s.snapshots, err)
	case err != nil:
		return RestorePlanHeader{}, transient(err, "%s", what)
	}
	defer r.Close()
	h, err := decodePlan(r, restoreID, fn)
	if errors.Is(err, ErrRestorePlanDamaged) {
		return RestorePlanHeader{}, backup.Wrap(backup.CodeInternal, err, "could not %s: %s", what, err)
	}
	return h, err
}

// DeleteRestoreArea deletes the restore's area: its undo blobs, then its plan, so that an area with
// blobs left always has its plan (a deletion that stopped half-way is finished by the next). Nothing
// there is fine.
func (s *Store) DeleteRestoreArea(ctx context.Context, namespace, envID, restoreID string) error {
	if err := checkRestore(namespace, envID, restoreID); err != nil {
		return err
	}
	plan := Layout{}.RestorePlan(namespace, envID, restoreID)
	var names []string
	err := s.walk(ctx, s.snapshots, Layout{}.RestorePrefix(namespace, envID, restoreID), func(item *container.BlobItem) error {
		if *item.Name != plan {
			names = append(names, *item.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16) // each a small request: latency bounds a sequential deletion
	for _, name := range names {
		g.Go(func() error { return s.deleteAreaBlob(gctx, name, "a saved file of the restore") })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return s.deleteAreaBlob(ctx, plan, "the restore's file plan")
}

func (s *Store) deleteAreaBlob(ctx context.Context, name, what string) error {
	_, err := s.client.DeleteBlob(ctx, s.snapshots, name, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
	if err != nil && !blobMissing(err) {
		return transient(err, "delete %s", what)
	}
	return nil
}

// DeleteBlobIfMatch deletes blob ref if its ETag is still etag; a blob that does not exist is fine, one
// with another ETag (changed since it was listed) is CodeConflict and left as it is.
func (s *Store) DeleteBlobIfMatch(ctx context.Context, ref BlobRef, etag azcore.ETag) error {
	what := fmt.Sprintf("delete blob %s of container %s", ref.Name, ref.Container)
	if ref.Container == "" || ref.Name == "" || etag == "" {
		return backup.Errorf(backup.CodeInternal, "could not %s: a conditional deletion needs the blob and its ETag", what)
	}
	b := s.client.ServiceClient().NewContainerClient(ref.Container).NewBlobClient(ref.Name)
	_, err := b.Delete(ctx, &blob.DeleteOptions{AccessConditions: &blob.AccessConditions{
		ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: to.Ptr(quoted(etag))}}})
	switch {
	case err == nil || blobMissing(err):
		return nil
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return s.containerMissing(ref.Container, err)
	case !bloberror.HasCode(err, bloberror.ConditionNotMet):
		return transient(err, "%s", what)
	}
	// Azurite answers 412 for a blob that does not exist too (Azure: 404): the blob tells.
	if _, perr := b.GetProperties(ctx, nil); blobMissing(perr) {
		return nil
	}
	return backup.Wrap(backup.CodeConflict, err, "could not %s: it changed after it was listed", what)
}

// checkRestore refuses names the layout would not make a restore area of.
func checkRestore(namespace, envID, restoreID string) error {
	if err := checkStore(namespace, envID); err != nil {
		return err
	}
	if !canonicalUUID(restoreID) {
		return backup.Errorf(backup.CodeInvalidParameters, "restore id %q is not a UUID in lowercase canonical form", restoreID)
	}
	return nil
}

// encodePlan writes the plan of h and entries to w; anything decodePlan would refuse is a
// *manifestDamage and nothing is written.
func encodePlan(w io.Writer, h RestorePlanHeader, entries []RestorePlanEntry) error {
	if h.Format == "" && h.Version == 0 {
		h.Format, h.Version = RestorePlanFormat, RestorePlanVersion
	}
	if err := checkPlanHeader(h, h.RestoreID); err != nil {
		return err
	}
	var c entryCheck
	mh := h.counts()
	for i, e := range entries {
		if err := checkPlanEntry(&c, i+2, mh, e); err != nil {
			return err
		}
	}
	if err := c.end(mh); err != nil {
		return err
	}
	return writeGzipLines(w, "the restore plan", h, entries)
}

// decodePlan reads the plan of restoreID from r, calls fn for each entry in order, and returns the
// header. Errors: fn's and r's own, as is; every other is an ErrRestorePlanDamaged.
func decodePlan(r io.Reader, restoreID string, fn func(RestorePlanEntry) error) (RestorePlanHeader, error) {
	src := &recordingReader{r: r}
	h, err := decodePlanFrom(src, restoreID, fn)
	if d, ok := errors.AsType[*manifestDamage](err); ok {
		if src.err != nil {
			return RestorePlanHeader{}, src.err // what looks damaged was not read
		}
		return RestorePlanHeader{}, &planDamage{d}
	}
	return h, err
}

func decodePlanFrom(src io.Reader, restoreID string, fn func(RestorePlanEntry) error) (RestorePlanHeader, error) {
	in := bufio.NewReader(src) // a flate.Reader: the gzip reader reads no byte past its stream
	zr, err := gzip.NewReader(in)
	switch {
	case err == io.EOF:
		return RestorePlanHeader{}, damaged(0, nil, "it is empty")
	case err != nil:
		return RestorePlanHeader{}, damaged(0, err, "it is not gzip-compressed")
	}
	zr.Multistream(false)
	lines := &lineReader{r: bufio.NewReaderSize(zr, maxManifestLine)}
	h, err := readPlanHeader(lines, restoreID)
	if err != nil {
		return RestorePlanHeader{}, err
	}
	var c entryCheck
	mh := h.counts()
	for {
		line, err := lines.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return RestorePlanHeader{}, err
		}
		var e RestorePlanEntry
		if err := decodeLine(line, &e); err != nil {
			return RestorePlanHeader{}, damaged(lines.n, err, "the line is not a plan entry")
		}
		if err := checkPlanEntry(&c, lines.n, mh, e); err != nil {
			return RestorePlanHeader{}, err
		}
		if err := fn(e); err != nil {
			return RestorePlanHeader{}, err
		}
	}
	if err := c.end(mh); err != nil {
		return RestorePlanHeader{}, err
	}
	switch _, err := in.ReadByte(); {
	case err == nil:
		return RestorePlanHeader{}, damaged(0, nil, "data follows the end of its compressed stream")
	case err != io.EOF:
		return RestorePlanHeader{}, damaged(0, err, "what follows its compressed stream cannot be read")
	}
	return h, nil
}

func readPlanHeader(lines *lineReader, restoreID string) (RestorePlanHeader, error) {
	line, err := lines.next()
	if err == io.EOF {
		return RestorePlanHeader{}, damaged(0, nil, "it has no header")
	}
	if err != nil {
		return RestorePlanHeader{}, err
	}
	// Format and version first, so that a plan of another version says so rather than that it has
	// fields this version does not know.
	var kind struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(line, &kind); err != nil {
		return RestorePlanHeader{}, damaged(1, err, "the header is not a JSON object")
	}
	if kind.Format != RestorePlanFormat || kind.Version != RestorePlanVersion {
		return RestorePlanHeader{}, damaged(1, nil, "it is format %q version %d, not %q version %d", kind.Format, kind.Version, RestorePlanFormat, RestorePlanVersion)
	}
	var h RestorePlanHeader
	if err := decodeLine(line, &h); err != nil {
		return RestorePlanHeader{}, damaged(1, err, "the line is not a plan header")
	}
	return h, checkPlanHeader(h, restoreID)
}

// counts is the header as the manifest's entry checks (order, count, sum of sizes) take it.
func (h RestorePlanHeader) counts() backup.ManifestHeader {
	return backup.ManifestHeader{Files: h.Files, FilesBytes: h.FilesBytes}
}

func checkPlanHeader(h RestorePlanHeader, restoreID string) error {
	switch {
	case h.Format != RestorePlanFormat || h.Version != RestorePlanVersion:
		return damaged(1, nil, "it is format %q version %d, not %q version %d", h.Format, h.Version, RestorePlanFormat, RestorePlanVersion)
	case h.RestoreID != restoreID || !canonicalUUID(h.RestoreID):
		return damaged(1, nil, "it is the plan of restore %q, not of %q", h.RestoreID, restoreID)
	case h.Container == "":
		return damaged(1, nil, "the header names no container")
	case !canonicalUUID(h.SourceEnvironmentID) || !canonicalUUID(h.SnapshotID):
		return damaged(1, nil, "the header's snapshot %q of environment %q is not named by lowercase canonical UUIDs", h.SnapshotID, h.SourceEnvironmentID)
	case h.Files < 0 || h.FilesBytes < 0:
		return damaged(1, nil, "the header announces %d files of %d bytes", h.Files, h.FilesBytes)
	}
	return nil
}

// checkPlanEntry checks e, on the given line, as a manifest entry (c: order, object, count) and then
// what the plan adds: an action, and the target's blob exactly when there was one.
func checkPlanEntry(c *entryCheck, line int, mh backup.ManifestHeader, e RestorePlanEntry) error {
	if err := c.next(line, mh, backup.ManifestEntry{UUID: e.UUID, Size: e.Size, MD5: e.MD5, Object: e.Object}); err != nil {
		return err
	}
	switch {
	case e.Action != PlanAdd && e.Action != PlanReplace && e.Action != PlanUnchanged:
		return damaged(line, nil, "file %s has the action %q, not add, replace or unchanged", e.UUID, e.Action)
	case e.Action == PlanAdd && (e.ETag != "" || e.OldSize != 0 || len(e.OldMD5) != 0):
		return damaged(line, nil, "file %s is to be added but names a blob it replaces", e.UUID)
	case e.Action != PlanAdd && e.ETag == "":
		return damaged(line, nil, "file %s is %s but does not name the blob's ETag", e.UUID, e.Action)
	case e.OldSize < 0 || (len(e.OldMD5) != 0 && len(e.OldMD5) != md5.Size):
		return damaged(line, nil, "file %s names a blob of %d bytes with an MD5 of %d bytes", e.UUID, e.OldSize, len(e.OldMD5))
	case e.Action == PlanUnchanged && (e.OldSize != e.Size || len(e.MD5) == 0 || !bytes.Equal(e.MD5, e.OldMD5)):
		return damaged(line, nil, "file %s is unchanged but its blob's size or MD5 is not the snapshot's", e.UUID)
	}
	return nil
}
