package blobstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/mxazure/backups/internal/backup"
)

// Defaults of the Options that tune CopyFile.
const (
	// DefaultSyncCopyLimit is Azure's limit for the source of a synchronous Copy Blob From URL.
	DefaultSyncCopyLimit = 256 << 20
	// DefaultCopyPollMin and DefaultCopyPollMax: the status of an asynchronous copy is read after
	// 0.5 s, then at doubling pauses up to 15 s.
	DefaultCopyPollMin = 500 * time.Millisecond
	DefaultCopyPollMax = 15 * time.Second
	// DefaultAsyncCopyTimeout bounds one asynchronous copy: 6 hours is above 1 TB at 50 MB/s. It is
	// also how long the copy's source SAS holds (a delegation key may last at most 7 days).
	DefaultAsyncCopyTimeout = 6 * time.Hour
)

// cleanupTimeout bounds the abort and the deletion of a copy after its ctx ended.
const cleanupTimeout = time.Minute

// CopyCheck is what CopyFile requires of the source and of its copy; FileInfo.Check gives it.
type CopyCheck struct {
	// ETag is the source's ETag as listed (required): Storage copies that version only.
	ETag azcore.ETag
	// Size is the source's size as listed (required): the copy must have it; it also chooses the method.
	Size int64
	// MD5, when not nil, is the source's Content-MD5 as listed: the copy must carry the same.
	MD5 []byte
	// VerifyByListing: the caller checks the copy's size and Content-MD5 from a listing of the
	// destinations afterwards (backup.StoreFiles lists the store once for all its copies), so a
	// synchronous copy is not read back with a request of its own, which would double the requests of
	// a backup. What Storage copied is still the listed version: the copy is conditional on the ETag.
	VerifyByListing bool
}

// CopyMethod names the Blob Storage operation that made a copy.
type CopyMethod string

const (
	CopySync  CopyMethod = "Copy Blob From URL" // synchronous, sources up to Options.SyncCopyLimit
	CopyAsync CopyMethod = "Copy Blob"          // asynchronous, polled until it ends
)

// CopyResult is the destination of a CopyFile or CopyBlob as Storage reports it after the copy.
type CopyResult struct {
	// Existed: the destination was not what the copy's condition asks for (there already, or no longer
	// the version to overwrite) and was left as it is; nothing was copied, and the destination was
	// checked like a copy. (A copy made by this very call whose response was lost and retried is
	// reported so too.)
	Existed    bool
	Method     CopyMethod // "" when Existed
	Size       int64
	ContentMD5 []byte // nil when the destination has none (the source had none)
	ETag       azcore.ETag
}

// Errors of CopyFile and CopyBlob, for errors.Is; each comes wrapped in a *backup.Error with a message
// for users.
var (
	// ErrSourceMissing: the source blob does not exist (it was deleted after it was listed).
	// CodeNotFound; the domain reports such a file as a warning.
	ErrSourceMissing = errors.New("the source blob does not exist")
	// ErrSourceChanged: the source blob's ETag is no longer the listed one. CodeConflict: listing
	// again gives the new version.
	ErrSourceChanged = errors.New("the source blob changed after it was listed")
	// ErrMismatch: the destination's size or Content-MD5 is not the CopyCheck's. A copy made by the
	// call to an absent destination is deleted; any other destination is left as it is. CodeInternal.
	ErrMismatch = errors.New("the destination does not match the source as listed")
	// ErrDestinationChanged: the destination to overwrite (CopyBlobCheck.Overwrite) no longer exists.
	// CodeConflict.
	ErrDestinationChanged = errors.New("the destination blob was deleted after it was listed")
)

// BlobRef names a blob: its container and its name in it.
type BlobRef struct{ Container, Name string }

// CopyBlobCheck is what CopyBlob requires of the source (CopyCheck, as for CopyFile), of the
// destination before the copy, and of the copy.
type CopyBlobCheck struct {
	CopyCheck
	// Overwrite, when not "", is the destination's ETag as listed: the copy replaces exactly that
	// version (If-Match). "" means the destination must not exist (If-None-Match: *).
	Overwrite azcore.ETag
}

// CopyFile copies blob srcName of the environment's container srcContainer server-side (its bytes do
// not pass through the service) to dstPath in the file-store container (Options.FileStoreContainer;
// dstPath is Layout.StoreObject's), if nothing is there yet: store objects are immutable and shared by
// snapshots, so an existing destination is never overwritten (CopyResult.Existed); it is
// checked against want like a copy is. It is CopyBlob to an absent destination.
func (s *Store) CopyFile(ctx context.Context, srcContainer, srcName, dstPath string, want CopyCheck) (CopyResult, error) {
	return s.CopyBlob(ctx, BlobRef{srcContainer, srcName}, BlobRef{s.files, dstPath}, CopyBlobCheck{CopyCheck: want})
}

// CopyBlob copies blob src to dst server-side (the bytes do not pass through the service), if dst is
// absent, or, with want.Overwrite, over the version of dst with that ETag. A destination that is not
// what the condition asks for (there already; or another version than the one to overwrite) is left
// as it is and reported as CopyResult.Existed, checked against want like a copy; an Overwrite whose
// destination is gone is ErrDestinationChanged. The source is copied only while its ETag is
// want.ETag; sources up to Options.SyncCopyLimit bytes are copied with the synchronous Copy Blob From
// URL, larger ones with the asynchronous Copy Blob, polled until it ends and aborted when ctx ends or
// after Options.AsyncCopyTimeout. The copy's size and Content-MD5 are then checked against want; a
// copy to an absent destination that does not match (or did not end) is deleted, while one over a
// destination is left, its old bytes being gone either way (the caller saved what it needs). Errors
// are *backup.Error: ErrSourceMissing, ErrSourceChanged, ErrDestinationChanged and ErrMismatch are
// recognisable with errors.Is, a missing source container is a permanent error naming it, the rest
// is classified like every storage call.
func (s *Store) CopyBlob(ctx context.Context, src, dst BlobRef, want CopyBlobCheck) (CopyResult, error) {
	svc := s.client.ServiceClient()
	c := &fileCopy{
		s: s, want: want.CopyCheck, overwrite: quoted(want.Overwrite), srcRef: src, dstRef: dst,
		src:  svc.NewContainerClient(src.Container).NewBlobClient(src.Name),
		dst:  svc.NewContainerClient(dst.Container).NewBlobClient(dst.Name),
		what: fmt.Sprintf("copy blob %s of container %s to %s of container %s", src.Name, src.Container, dst.Name, dst.Container),
	}
	if src.Container == "" || src.Name == "" || dst.Container == "" || dst.Name == "" || src == dst || want.ETag == "" || want.Size < 0 {
		return CopyResult{}, backup.Errorf(backup.CodeInternal, "could not %s: a copy needs a source, another destination, and the source's ETag and size", c.what)
	}
	c.want.ETag = quoted(want.ETag)
	method := CopySync
	if want.Size > s.opts.SyncCopyLimit {
		method = CopyAsync
	}
	for attempt := 1; ; attempt++ {
		props, refused, err := c.run(ctx, method)
		if err != nil {
			return CopyResult{}, err
		}
		if refused == nil {
			return c.result(ctx, props, method)
		}
		// Storage refused to start the copy: the destination exists or is another version (409, 412),
		// or the source does not exist or changed (404, 412; the codes differ between Azure and
		// Azurite, so the blobs tell).
		if code := statusOf(refused); code != 404 && code != 409 && code != 412 {
			return CopyResult{}, c.refusedError(refused)
		}
		props, found, err := c.properties(ctx, c.dst, "read the destination")
		if err != nil {
			return CopyResult{}, err
		}
		if !c.destinationRefused(props, found) {
			if err := c.sourceChanged(ctx, refused); err != nil {
				return CopyResult{}, err
			}
			if !found && c.overwrite != "" {
				return CopyResult{}, backup.Wrap(backup.CodeConflict, fmt.Errorf("%w: %w", ErrDestinationChanged, refused), "could not %s: the destination was deleted after it was listed", c.what)
			}
			return CopyResult{}, c.refusedError(refused)
		}
		if status(props) == blob.CopyStatusTypePending {
			// Another copy to the same destination, or ours whose response was lost: wait for it,
			// but never abort it.
			if props, err = c.poll(ctx, time.Now(), to.Ptr(props), false); err != nil {
				return CopyResult{}, err
			}
		}
		if st := status(props); st == blob.CopyStatusTypeFailed || st == blob.CopyStatusTypeAborted {
			if attempt > 1 {
				return CopyResult{}, backup.Errorf(backup.CodeTransient, "could not %s: the destination holds a copy that did not succeed", c.what)
			}
			// What a failed copy left (a crash before its cleanup): remove it and copy again, or, over
			// a destination, copy again over what it left (its old bytes went with the failed copy).
			if c.overwrite != "" {
				c.overwrite = quoted(deref(props.ETag))
			} else if err := c.deleteDestination(ctx, props.ETag); err != nil {
				return CopyResult{}, err
			}
			continue
		}
		return c.result(ctx, props, "")
	}
}

// destinationRefused reports whether the destination as read explains a refused copy: it exists,
// for a copy to an absent destination; it exists as another version, for an overwrite.
func (c *fileCopy) destinationRefused(props blob.GetPropertiesResponse, found bool) bool {
	if c.overwrite == "" {
		return found
	}
	return found && quoted(deref(props.ETag)) != c.overwrite
}

// Where Azurite 3.36 differs (tests say which Azure behaviour they stand for): Copy Blob ends at once
// (never pending, and Abort Copy Blob then answers 409 NoPendingCopyOperation); Copy Blob From URL
// ignores x-ms-source-content-md5; a failed source condition is 412 ConditionNotMet and a missing
// source 404 BlobNotFound (sync) or CannotVerifyCopySource (async), where Azure answers
// SourceConditionNotMet or CannotVerifyCopySource, hence reading the blobs rather than the codes; an
// If-Match on a destination that does not exist is 412 ConditionNotMet too (Azure: 404 BlobNotFound);
// it accepts a copy source without any authorisation. Put Blob From URL is not implemented (501), so
// it is not used. Like Azure (which documents it for Copy Blob), both copies give the destination the
// source's Content-MD5, and none when the source has none, even over a destination that had one.

// fileCopy is one CopyBlob call.
type fileCopy struct {
	s              *Store
	src, dst       *blob.Client
	srcRef, dstRef BlobRef
	want           CopyCheck
	overwrite      azcore.ETag // the destination's ETag to copy over; "": the destination must be absent
	what           string      // for messages: "copy blob a of container b to c of container d"
}

// dstCondition is the copy's condition on the destination.
func (c *fileCopy) dstCondition() *blob.AccessConditions {
	m := &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}
	if c.overwrite != "" {
		m = &blob.ModifiedAccessConditions{IfMatch: &c.overwrite}
	}
	return &blob.AccessConditions{ModifiedAccessConditions: m}
}

// run copies with method. refused is Storage's refusal of the request that starts the copy, for
// CopyBlob to explain; err is any other failure, already classified. On success props are the
// destination's properties once the copy ended.
func (c *fileCopy) run(ctx context.Context, method CopyMethod) (props blob.GetPropertiesResponse, refused, err error) {
	dstCond := c.dstCondition()
	srcUnchanged := &blob.SourceModifiedAccessConditions{SourceIfMatch: &c.want.ETag}
	started := time.Now()
	if method == CopySync {
		url, auth, err := c.s.source.copySource(ctx, c.src, true, started.Add(c.s.syncCopyWindow()))
		if err != nil {
			return props, nil, c.authError(err)
		}
		opts := &blob.CopyFromURLOptions{SourceModifiedAccessConditions: srcUnchanged, BlobAccessConditions: dstCond, SourceContentMD5: c.want.MD5}
		if auth != "" {
			opts.CopySourceAuthorization = &auth
		}
		resp, err := c.dst.CopyFromURL(ctx, url, opts)
		if err != nil {
			return props, err, nil
		}
		if c.want.VerifyByListing {
			// What result checks, from the response and the listing the copy was conditional on.
			st := blob.CopyStatusTypeSuccess
			return blob.GetPropertiesResponse{ETag: resp.ETag, LastModified: resp.LastModified, ContentLength: &c.want.Size,
				ContentMD5: c.want.MD5, CopyStatus: &st}, nil, nil
		}
		props, found, err := c.properties(ctx, c.dst, "read the copy")
		if err == nil && !found {
			err = backup.Errorf(backup.CodeTransient, "could not %s: the copy vanished as soon as it was made", c.what)
		}
		return props, nil, err
	}
	url, _, err := c.s.source.copySource(ctx, c.src, false, started.Add(c.s.opts.AsyncCopyTimeout+sasSkew))
	if err != nil {
		return props, nil, c.authError(err)
	}
	resp, err := c.dst.StartCopyFromURL(ctx, url, &blob.StartCopyFromURLOptions{SourceModifiedAccessConditions: srcUnchanged, AccessConditions: dstCond})
	if err != nil {
		return props, err, nil
	}
	if resp.CopyID == nil {
		return props, nil, backup.Errorf(backup.CodeInternal, "could not %s: Blob Storage started the copy without giving its id", c.what)
	}
	props, err = c.poll(ctx, started, &blob.GetPropertiesResponse{CopyID: resp.CopyID, CopyStatus: resp.CopyStatus}, true)
	if err != nil {
		return props, nil, err
	}
	if st := status(props); st != blob.CopyStatusTypeSuccess {
		return props, nil, c.asyncFailed(ctx, props)
	}
	return props, nil, nil
}

// authError is a failure to authorise the source: the authorizer's own *backup.Error, if it made one.
func (c *fileCopy) authError(err error) error {
	if _, ok := errors.AsType[*backup.Error](err); ok {
		return err
	}
	return backup.Wrap(backup.CodeInternal, err, "could not %s: its source could not be authorised", c.what)
}

// syncCopyWindow is how long the source of a synchronous copy must stay readable: every try of the
// request and the pauses between them.
func (s *Store) syncCopyWindow() time.Duration {
	r := s.opts.Retry
	return time.Duration(r.MaxRetries+1)*r.TryTimeout + time.Duration(r.MaxRetries)*r.MaxRetryDelay + sasSkew
}

// poll reads the destination's properties until its copy (last, as last seen) is no longer pending,
// at pauses from Options.CopyPollMin doubling to CopyPollMax, and returns them. A copy still pending
// Options.AsyncCopyTimeout after started, or when ctx ends, is a transient error; when own, the copy
// is then aborted and its destination deleted.
func (c *fileCopy) poll(ctx context.Context, started time.Time, last *blob.GetPropertiesResponse, own bool) (blob.GetPropertiesResponse, error) {
	id := deref(last.CopyID)
	deadline := started.Add(c.s.opts.AsyncCopyTimeout)
	pause := c.s.opts.CopyPollMin
	for read := false; ; read = true { // read: last is from a status read, not from the copy's start
		if status(*last) != blob.CopyStatusTypePending && read {
			return *last, nil
		}
		if status(*last) == blob.CopyStatusTypePending {
			wait := min(pause, time.Until(deadline))
			if wait <= 0 {
				return *last, c.stop(ctx, id, own, nil, fmt.Sprintf("the copy did not end within %s", c.s.opts.AsyncCopyTimeout))
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return *last, c.stop(ctx, id, own, ctx.Err(), "interrupted")
			case <-t.C:
			}
			pause = min(2*pause, c.s.opts.CopyPollMax)
		}
		props, found, err := c.properties(ctx, c.dst, "read the status of the copy")
		switch {
		case err != nil && ctx.Err() != nil:
			return props, c.stop(ctx, id, own, ctx.Err(), "interrupted")
		case err != nil:
			return props, err
		case !found:
			return props, backup.Errorf(backup.CodeTransient, "could not %s: the destination was deleted while the copy was pending", c.what)
		case id != "" && deref(props.CopyID) != id:
			return props, backup.Errorf(backup.CodeTransient, "could not %s: another copy replaced the pending one", c.what)
		}
		last = &props
	}
}

// stop ends the wait for a pending copy: for a copy of this call, it aborts it and deletes its
// destination (deleteDestination; with a ctx of its own, as ctx may be over).
func (c *fileCopy) stop(ctx context.Context, id string, own bool, cause error, why string) error {
	if cause == nil {
		cause = errors.New(why)
	}
	if !own {
		return backup.Wrap(backup.CodeTransient, cause, "could not %s: %s, waiting for another copy to the same destination", c.what, why)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if _, err := c.dst.AbortCopyFromURL(cctx, id, nil); err != nil && !bloberror.HasCode(err, bloberror.NoPendingCopyOperation) {
		return backup.Wrap(backup.CodeTransient, errors.Join(cause, err), "could not %s: %s, and the pending copy could not be aborted (%s)", c.what, why, answer(err))
	}
	if err := c.deleteDestination(cctx, nil); err != nil {
		return backup.Wrap(backup.CodeTransient, errors.Join(cause, err), "could not %s: %s; the copy was aborted but its destination could not be deleted", c.what, why)
	}
	return backup.Wrap(backup.CodeTransient, cause, "could not %s: %s; the pending copy was aborted", c.what, why)
}

// asyncFailed explains a copy of this call that Storage reports failed or aborted, and deletes what
// it left.
func (c *fileCopy) asyncFailed(ctx context.Context, props blob.GetPropertiesResponse) error {
	cause := fmt.Errorf("copy %s: %s", status(props), deref(props.CopyStatusDescription))
	if err := c.deleteDestination(ctx, props.ETag); err != nil {
		return backup.Wrap(backup.CodeTransient, errors.Join(cause, err), "could not %s: the copy did not succeed and what it left could not be deleted", c.what)
	}
	if err := c.sourceChanged(ctx, cause); err != nil {
		return err
	}
	return backup.Wrap(backup.CodeTransient, cause, "could not %s: Blob Storage reports the copy %s", c.what, status(props))
}

// sourceChanged reads the source's properties: an error for a source that is missing (or its
// container) or no longer has the listed ETag, nil if it is as listed. cause is the failure being
// explained, kept for the logs.
func (c *fileCopy) sourceChanged(ctx context.Context, cause error) error {
	props, found, err := c.properties(ctx, c.src, "read the source")
	switch {
	case err != nil:
		return err
	case !found:
		return backup.Wrap(backup.CodeNotFound, fmt.Errorf("%w: %w", ErrSourceMissing, cause), "could not %s: the blob was deleted after it was listed", c.what)
	case quoted(deref(props.ETag)) != c.want.ETag:
		return backup.Wrap(backup.CodeConflict, fmt.Errorf("%w: %w", ErrSourceChanged, cause), "could not %s: the blob was rewritten after it was listed", c.what)
	}
	return nil
}

// refusedError classifies a refusal to start the copy that the blobs do not explain.
func (c *fileCopy) refusedError(err error) error {
	if bloberror.HasCode(err, bloberror.ContainerNotFound) { // the source's was found: the destination's
		return c.s.containerMissing(c.dstRef.Container, err)
	}
	if checksumRefused(err) { // Azure: the source's bytes do not have the listed (x-ms-source-content-md5) MD5
		return backup.Wrap(backup.CodeInternal, errors.Join(ErrMismatch, err), "could not %s: the blob's bytes do not have the Content-MD5 it was listed with", c.what)
	}
	return transient(err, "%s", c.what)
}

// properties reads a blob's properties; found is false when the blob does not exist. A missing
// source container is a permanent error naming it.
func (c *fileCopy) properties(ctx context.Context, b *blob.Client, what string) (props blob.GetPropertiesResponse, found bool, err error) {
	props, err = b.GetProperties(ctx, nil)
	switch {
	case err == nil:
		return props, true, nil
	case bloberror.HasCode(err, bloberror.ContainerNotFound) && b == c.src:
		return props, false, c.s.containerMissing(c.srcRef.Container, err)
	case bloberror.HasCode(err, bloberror.BlobNotFound) || (statusOf(err) == 404 && !bloberror.HasCode(err, bloberror.ContainerNotFound)):
		return props, false, nil // a HEAD's 404 has no body, so often no error code
	}
	return props, false, transient(err, "%s: %s", c.what, what)
}

// result checks the destination against want. A copy made by this call (method not "") to an absent
// destination that does not match is deleted.
func (c *fileCopy) result(ctx context.Context, props blob.GetPropertiesResponse, method CopyMethod) (CopyResult, error) {
	res := CopyResult{Existed: method == "", Method: method, ETag: deref(props.ETag)}
	if props.ContentLength != nil {
		res.Size = *props.ContentLength
	}
	if len(props.ContentMD5) > 0 {
		res.ContentMD5 = props.ContentMD5
	}
	var problem string
	switch st := status(props); {
	case props.ContentLength == nil:
		problem = "Blob Storage did not give its size"
	case res.Size != c.want.Size:
		problem = fmt.Sprintf("it has %d bytes where the source was listed with %d", res.Size, c.want.Size)
	case c.want.MD5 != nil && res.ContentMD5 == nil:
		problem = "it has no Content-MD5 where the source was listed with one"
	case c.want.MD5 != nil && !bytes.Equal(res.ContentMD5, c.want.MD5):
		problem = "its Content-MD5 is not the one the source was listed with"
	case st != "" && st != blob.CopyStatusTypeSuccess:
		problem = fmt.Sprintf("its copy is %s", st)
	}
	switch {
	case problem == "":
		return res, nil
	case res.Existed && c.overwrite != "":
		return res, backup.Wrap(backup.CodeInternal, ErrMismatch, "could not %s: the destination is no longer the version to overwrite, and %s; it was left as it is", c.what, problem)
	case res.Existed:
		return res, backup.Wrap(backup.CodeInternal, ErrMismatch, "could not %s: the destination exists already but %s; it was left as it is", c.what, problem)
	case c.overwrite != "":
		return res, backup.Wrap(backup.CodeInternal, ErrMismatch, "could not %s: the copy over the destination does not match (%s); it was left in place", c.what, problem)
	}
	if err := c.deleteDestination(ctx, props.ETag); err != nil {
		return CopyResult{}, backup.Wrap(backup.CodeInternal, errors.Join(ErrMismatch, err), "could not %s: the copy does not match (%s) and could not be deleted", c.what, problem)
	}
	return CopyResult{}, backup.Wrap(backup.CodeInternal, ErrMismatch, "could not %s: the copy was deleted because %s", c.what, problem)
}

// deleteDestination deletes the destination, if its ETag is still etag (any, for nil). A destination
// already gone, or changed since, is left alone; so is one that a copy overwrote (Overwrite): its old
// bytes went with the copy, and deleting what the copy left would only make a later copy over it
// impossible (CopyBlob copies again over what a failed copy left).
func (c *fileCopy) deleteDestination(ctx context.Context, etag *azcore.ETag) error {
	if c.overwrite != "" {
		return nil
	}
	var opts *blob.DeleteOptions
	if etag != nil {
		opts = &blob.DeleteOptions{AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: etag}}}
	}
	_, err := c.dst.Delete(ctx, opts)
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ConditionNotMet) && statusOf(err) != 404 {
		return transient(err, "delete %s of container %s after a copy that did not succeed", c.dstRef.Name, c.dstRef.Container)
	}
	return nil
}

func status(p blob.GetPropertiesResponse) blob.CopyStatusType { return deref(p.CopyStatus) }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
