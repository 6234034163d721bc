package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/mxazure/backups/internal/backup"
)

// OpenArchive streams an archive blob of the snapshots container.
func (s *Store) OpenArchive(ctx context.Context, path string) (io.ReadCloser, int64, error) {
	r, err := s.open(ctx, s.snapshots, path, "read the archive")
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return nil, 0, backup.Wrap(backup.CodeNotFound, err, "the snapshot's archive does not exist")
		}
		return nil, 0, transient(err, "read the archive")
	}
	return r, r.size, nil
}

// OpenRange streams length bytes from offset of a blob of the snapshots container (a snapshot's
// database dump, an archive), in ranges pinned to the first one's ETag like OpenArchive. The range must
// lie within the blob (BlobSize gives its size); length 0 reads nothing but still needs the blob. A
// missing blob is CodeNotFound, a range past its end CodeInternal; the rest is classified like every
// storage call, the reader's errors too.
func (s *Store) OpenRange(ctx context.Context, path string, offset, length int64) (io.ReadCloser, error) {
	what := "read " + describe(path)
	if offset < 0 || length < 0 {
		return nil, backup.Errorf(backup.CodeInternal, "could not %s: a range needs an offset and a length of at least 0, not %d and %d", what, offset, length)
	}
	r, err := s.openAt(ctx, s.snapshots, path, what, offset, length)
	switch {
	case err == nil:
		return r, nil
	case blobMissing(err):
		return nil, backup.Wrap(backup.CodeNotFound, err, "%s does not exist", describe(path))
	case errors.Is(err, errBeyondEnd) || bloberror.HasCode(err, bloberror.InvalidRange):
		return nil, backup.Wrap(backup.CodeInternal, err, "could not %s: %d bytes from offset %d lie beyond its end", what, length, offset)
	}
	return nil, transient(err, "%s", what)
}

// BlobSize is the size in bytes of a blob of the snapshots container; a missing blob is CodeNotFound.
func (s *Store) BlobSize(ctx context.Context, path string) (int64, error) {
	props, err := s.client.ServiceClient().NewContainerClient(s.snapshots).NewBlobClient(path).GetProperties(ctx, nil)
	switch {
	case blobMissing(err):
		return 0, backup.Wrap(backup.CodeNotFound, err, "%s does not exist", describe(path))
	case err != nil:
		return 0, transient(err, "read the size of %s", describe(path))
	case props.ContentLength == nil:
		return 0, backup.Errorf(backup.CodeTransient, "could not read the size of %s: Blob Storage did not give it", describe(path))
	}
	return *props.ContentLength, nil
}

// OpenFile streams the blob of a file document from an environment's container. found is false when
// the blob does not exist; a missing container is a permanent error. The size comes from the response,
// before any byte is read. Errors of the reader are classified like those of the call.
func (s *Store) OpenFile(ctx context.Context, containerName, name string) (r io.ReadCloser, size int64, found bool, err error) {
	what := fmt.Sprintf("read blob %s in container %s", name, containerName)
	br, err := s.open(ctx, containerName, name, what)
	switch {
	case err == nil:
		return br, br.size, true, nil
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return nil, 0, false, nil
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return nil, 0, false, containerMissing(containerName, err)
	}
	return nil, 0, false, transient(err, "%s", what)
}

// CheckFileContainer fails, permanently and naming the container, when an environment's file container
// does not exist or the service may not read it.
func (s *Store) CheckFileContainer(ctx context.Context, containerName string) error {
	_, err := s.client.ServiceClient().NewContainerClient(containerName).GetProperties(ctx, nil)
	switch {
	case err == nil:
		return nil
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return containerMissing(containerName, err)
	}
	return transient(err, "read file container %s", containerName)
}

func containerMissing(name string, err error) error {
	return backup.Wrap(backup.CodeInvalidState, err,
		"the environment's file container %s does not exist in the storage account, so its file documents cannot be backed up", name)
}

// blobReader streams a blob, or a range of it, as consecutive range GETs of at most rangeSize bytes.
// The SDK retries each GET and TryTimeout bounds it, body included: ranges keep a slow read of a large
// blob inside that bound, while a hung one still fails. Ranges after the first are pinned to the first
// one's ETag, so a blob replaced or deleted during the read fails it (transient, unless changed says
// otherwise) instead of mixing two versions; a reader opened with an ETag (openMatching) pins the first
// range too. ctx aborts any request or read in flight.
type blobReader struct {
	ctx       context.Context
	client    *azblob.Client
	container string
	name      string
	what      string // for messages: "read the archive"
	rangeSize int64
	// changed, unless nil, is the error of a range refused because the blob changed or was deleted
	// since the read began (the SDK's error given).
	changed func(error) error

	size int64        // bytes of the blob, from the first response
	stop int64        // where the read ends: size, or the end of the range asked for
	etag *azcore.ETag // of the first response, or the one asked for
	off  int64        // offset of the next byte to hand out
	end  int64        // end of the range being read
	body io.ReadCloser
	err  error // sticky
}

// blobMissing reports an answer that the blob does not exist (its container does): a HEAD's 404 has no
// body, so often no error code.
func blobMissing(err error) bool {
	return bloberror.HasCode(err, bloberror.BlobNotFound) || (statusOf(err) == 404 && !bloberror.HasCode(err, bloberror.ContainerNotFound))
}

// errBeyondEnd: a range asked of openAt does not lie within the blob.
var errBeyondEnd = errors.New("the range lies beyond the end of the blob")

// open sends the first GET of a read of the whole blob; its error is the SDK's, for the caller to map.
func (s *Store) open(ctx context.Context, containerName, name, what string) (*blobReader, error) {
	return s.openAt(ctx, containerName, name, what, 0, -1)
}

// openAt sends the first GET of a read of n bytes from off (n < 0: to the end of the blob). Its error
// is the SDK's, or errBeyondEnd when off+n is past the end of the blob (off past the end is Storage's
// InvalidRange), for the caller to map.
func (s *Store) openAt(ctx context.Context, containerName, name, what string, off, n int64) (*blobReader, error) {
	return s.newBlobReader(ctx, containerName, name, what, off).open(n)
}

// openMatching sends the first GET of a read of the whole blob, every range of it conditional on
// If-Match etag; changed maps the refusal of a later range (nil: transient). Its error is the SDK's,
// for the caller to map: ConditionNotMet (or BlobNotFound) when the blob is no longer etag.
func (s *Store) openMatching(ctx context.Context, containerName, name, what string, etag azcore.ETag, changed func(error) error) (*blobReader, error) {
	r := s.newBlobReader(ctx, containerName, name, what, 0)
	r.etag, r.changed = &etag, changed
	return r.open(-1)
}

func (s *Store) newBlobReader(ctx context.Context, containerName, name, what string, off int64) *blobReader {
	return &blobReader{ctx: ctx, client: s.client, container: containerName, name: name, what: what, rangeSize: s.opts.RangeSize, off: off}
}

// open sends the first GET of a read of n bytes from r.off, as openAt says.
func (r *blobReader) open(n int64) (*blobReader, error) {
	off := r.off
	if n == 0 {
		return r.openEmpty()
	}
	count := r.rangeSize
	if n > 0 {
		count = min(count, n)
	}
	resp, err := r.get(off, count)
	if off == 0 && bloberror.HasCode(err, bloberror.InvalidRange) {
		// Storage refuses every range of an empty blob: the whole of it, under the same condition.
		resp, err = r.get(0, 0)
	}
	if err != nil {
		return nil, err
	}
	if resp.ContentLength == nil {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: the response has no Content-Length", r.what)
	}
	r.size, r.end, r.etag, r.body = *resp.ContentLength, off+*resp.ContentLength, resp.ETag, resp.Body
	if resp.ContentRange != nil { // a range: the total is after the slash, "bytes 0-99/1234"
		total, err := strconv.ParseInt((*resp.ContentRange)[strings.LastIndexByte(*resp.ContentRange, '/')+1:], 10, 64)
		if err != nil || total < r.end {
			resp.Body.Close()
			return nil, fmt.Errorf("%s: unexpected Content-Range %q", r.what, *resp.ContentRange)
		}
		r.size = total
	}
	r.stop = r.size
	if n > 0 {
		if off+n > r.size {
			resp.Body.Close()
			return nil, fmt.Errorf("%s: %d bytes from offset %d of a blob of %d: %w", r.what, n, off, r.size, errBeyondEnd)
		}
		r.stop = off + n
	}
	return r, nil
}

// openEmpty is a read of no bytes at r.off: the blob's properties say whether it exists and is long
// enough.
func (r *blobReader) openEmpty() (*blobReader, error) {
	props, err := r.client.ServiceClient().NewContainerClient(r.container).NewBlobClient(r.name).GetProperties(r.ctx, nil)
	if err != nil {
		return nil, err
	}
	if props.ContentLength == nil {
		return nil, fmt.Errorf("%s: the response has no Content-Length", r.what)
	}
	if r.size = *props.ContentLength; r.off > r.size {
		return nil, fmt.Errorf("%s: offset %d of a blob of %d: %w", r.what, r.off, r.size, errBeyondEnd)
	}
	r.stop, r.end, r.etag = r.off, r.off, props.ETag
	return r, nil
}

func (r *blobReader) get(off, n int64) (azblob.DownloadStreamResponse, error) {
	opts := &azblob.DownloadStreamOptions{Range: azblob.HTTPRange{Offset: off, Count: n}}
	if r.etag != nil {
		opts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: r.etag}}
	}
	return r.client.DownloadStream(r.ctx, r.container, r.name, opts)
}

// next opens the range that starts at off.
func (r *blobReader) next() error {
	want := min(r.rangeSize, r.stop-r.off)
	resp, err := r.get(r.off, want)
	switch {
	case bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobNotFound) && r.changed != nil:
		return r.changed(err)
	case bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobNotFound):
		return backup.Wrap(backup.CodeTransient, err, "could not %s: the blob changed or was deleted while it was read", r.what)
	case err != nil:
		return transient(err, "%s", r.what)
	case resp.ContentLength == nil || *resp.ContentLength != want:
		resp.Body.Close()
		return backup.Errorf(backup.CodeTransient, "could not %s: Blob Storage sent a range of another length than asked", r.what)
	}
	r.body, r.end = resp.Body, r.off+want
	return nil
}

func (r *blobReader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		if r.body == nil {
			if r.off >= r.stop {
				return 0, io.EOF
			}
			if r.err = r.next(); r.err != nil {
				return 0, r.err
			}
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if err == io.EOF {
			r.closeBody()
			err = nil
			if r.off < r.end {
				err = io.ErrUnexpectedEOF
			}
		}
		if err == nil && r.off > r.end {
			err = fmt.Errorf("got more bytes than the %d asked for", r.end)
		}
		if err != nil {
			r.closeBody()
			if r.ctx.Err() != nil {
				err = fmt.Errorf("%w: %w", r.ctx.Err(), err)
			}
			r.err = transient(err, "%s", r.what)
			return n, r.err
		}
		if n > 0 || len(p) == 0 {
			return n, nil
		}
	}
}

func (r *blobReader) closeBody() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
}

// Close releases the range being read.
func (r *blobReader) Close() error {
	r.closeBody()
	if r.err == nil {
		r.err = fmt.Errorf("%s: reader closed", r.what)
	}
	return nil
}
