package blobstore

import (
	"context"
	"io"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.UploadBlobs = (*Store)(nil)

// UploadProperties reads the size and ETag of an upload blob of the uploads container. Found is false
// when there is none, which is also the case of a block blob whose blocks were staged but never
// committed (Put Block without Put Block List): Storage keeps such blocks apart and answers 404.
func (s *Store) UploadProperties(ctx context.Context, path string) (backup.UploadBlob, error) {
	props, err := s.client.ServiceClient().NewContainerClient(s.uploads).NewBlobClient(path).GetProperties(ctx, nil)
	switch {
	case blobMissing(err):
		return backup.UploadBlob{}, nil
	case err != nil:
		return backup.UploadBlob{}, transient(err, "read the properties of the uploaded archive")
	case props.ContentLength == nil || props.ETag == nil:
		return backup.UploadBlob{}, backup.Errorf(backup.CodeTransient,
			"could not read the properties of the uploaded archive: Blob Storage did not give its size and ETag")
	}
	return backup.UploadBlob{Found: true, Size: *props.ContentLength, ETag: string(*props.ETag)}, nil
}

// DeleteUpload deletes an upload blob of the uploads container; a missing blob is fine. Blocks staged
// and never committed are not a blob to delete: Storage discards them after a week.
func (s *Store) DeleteUpload(ctx context.Context, path string) error {
	// With its blob snapshots, if any: a blob that has them cannot be deleted alone.
	_, err := s.client.DeleteBlob(ctx, s.uploads, path, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return transient(err, "delete the uploaded archive")
	}
	return nil
}

// uploadChanged is the error of an upload blob that is not, or no longer, the one completed: the
// user overwrote it through the link (which stays valid after completion) or it is gone.
func uploadChanged(err error) error {
	return backup.Wrap(backup.CodeInvalidParameters, err,
		"the uploaded archive was changed after the upload was completed; upload it again")
}

// OpenUpload streams the upload blob at path of the uploads container, and gives its size, as
// consecutive ranges (Options.RangeSize) each conditional on If-Match etag, the ETag the upload was
// completed with (UploadProperties). A blob that is missing or no longer etag, from the start or from
// any range on, is a CodeInvalidParameters error that tells the user to upload again (Read returns it
// too); every other failure is classified like the rest of the package.
func (s *Store) OpenUpload(ctx context.Context, path, etag string) (io.ReadCloser, int64, error) {
	const what = "read the uploaded archive"
	if etag == "" {
		return nil, 0, backup.Errorf(backup.CodeInternal, "could not %s: the ETag it was completed with is missing", what)
	}
	r, err := s.openMatching(ctx, s.uploads, path, what, azcore.ETag(etag), uploadChanged)
	switch {
	case err == nil:
		return r, r.size, nil
	// Azure answers 412 ConditionNotMet for another ETag and 404 for a missing blob; Azurite answers
	// 412 for a missing blob too.
	case bloberror.HasCode(err, bloberror.ConditionNotMet) || blobMissing(err):
		return nil, 0, uploadChanged(err)
	}
	return nil, 0, transient(err, "%s", what)
}
