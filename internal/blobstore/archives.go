package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
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

	"github.com/mxazure/backups/internal/backup"
)

// Layout is the one place that knows blob paths in the snapshots container:
//
//	<namespace>/<environment>/<snapshot>/attempt-<n>.tar.gz   the archive written by attempt n
//
// Each attempt writes its own blob, so a stray worker of an earlier attempt can never interleave
// blocks with the current one; the snapshot record names the blob that finished.
type Layout struct{}

var _ backup.Layout = Layout{}

// SnapshotPrefix is the folder of every blob of one snapshot.
func (Layout) SnapshotPrefix(namespace, envID, snapshotID string) string {
	return namespace + "/" + envID + "/" + snapshotID + "/"
}

// SnapshotArchive is the archive blob of one attempt.
func (l Layout) SnapshotArchive(namespace, envID, snapshotID string, attempt int) string {
	return fmt.Sprintf("%sattempt-%02d.tar.gz", l.SnapshotPrefix(namespace, envID, snapshotID), attempt)
}

var _ backup.ArchiveBlobs = (*Store)(nil)

// DeleteSnapshotBlobs deletes every blob under the snapshot's prefix. Missing blobs are fine.
func (s *Store) DeleteSnapshotBlobs(ctx context.Context, namespace, envID, snapshotID string) error {
	prefix := Layout{}.SnapshotPrefix(namespace, envID, snapshotID)
	cc := s.client.ServiceClient().NewContainerClient(s.snapshots)
	pager := cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: &prefix})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return transient(err, "list blobs under %s", prefix)
		}
		for _, item := range page.Segment.BlobItems {
			_, err := cc.NewBlobClient(*item.Name).Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
			if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
				return transient(err, "delete %s", *item.Name)
			}
		}
	}
	return nil
}

// BlockSink stages blocks of one archive blob and commits them in order (archive.BlockSink).
type BlockSink struct {
	client *blockblob.Client
	path   string
}

// NewBlockSink returns a sink writing the snapshots-container blob at path.
func (s *Store) NewBlockSink(path string) *BlockSink {
	return &BlockSink{client: s.client.ServiceClient().NewContainerClient(s.snapshots).NewBlockBlobClient(path), path: path}
}

// StageBlock uploads one block with its Content-MD5, which Storage checks before it keeps the block.
// The SDK retries transient failures under its retry policy.
func (b *BlockSink) StageBlock(ctx context.Context, id string, data []byte, contentMD5 [md5.Size]byte) error {
	opts := &blockblob.StageBlockOptions{TransactionalValidation: blob.TransferValidationTypeMD5(contentMD5[:])}
	if _, err := b.client.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(data)), opts); err != nil {
		return transient(err, "stage block of %s", b.path)
	}
	return nil
}

// Commit makes the blob the given blocks in order.
func (b *BlockSink) Commit(ctx context.Context, ids []string) error {
	_, err := b.client.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/gzip")},
	})
	if err != nil {
		return transient(err, "commit %s", b.path)
	}
	return nil
}

// OpenArchive streams an archive blob.
func (s *Store) OpenArchive(ctx context.Context, path string) (io.ReadCloser, int64, error) {
	resp, err := s.client.DownloadStream(ctx, s.snapshots, path, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return nil, 0, backup.Errorf(backup.CodeNotFound, "archive %s not found", path)
		}
		return nil, 0, transient(err, "read %s", path)
	}
	var size int64
	if resp.ContentLength != nil {
		size = *resp.ContentLength
	}
	return resp.Body, size, nil
}

// OpenFile streams the blob of a file document from an environment's container. found is false when
// the blob does not exist. The size comes from the response, before any byte is read.
func (s *Store) OpenFile(ctx context.Context, containerName, name string) (r io.ReadCloser, size int64, found bool, err error) {
	resp, err := s.client.DownloadStream(ctx, containerName, name, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
			return nil, 0, false, nil
		}
		return nil, 0, false, transient(err, "read %s/%s", containerName, name)
	}
	if resp.ContentLength == nil {
		resp.Body.Close()
		return nil, 0, false, fmt.Errorf("read %s/%s: no content length", containerName, name)
	}
	return resp.Body, *resp.ContentLength, true, nil
}

// transient classifies a storage failure: network errors, throttling, 5xx and a block refused for its
// checksum (corrupted on the way; the next attempt sends it again) are worth a retry.
func transient(err error, format string, args ...any) error {
	if code := statusOf(err); code == 0 || code == 408 || code == 429 || code >= 500 || checksumRefused(err) {
		return backup.Wrap(backup.CodeTransient, err, "blob storage: "+format, args...)
	}
	return fmt.Errorf("blob storage: "+format+": %w", append(args, err)...)
}

// checksumRefused reports Storage's refusal of a block whose bytes do not match its Content-MD5: code
// Md5Mismatch in Azure; Azurite answers InvalidOperation "Provided contentMD5 doesn't match."
func checksumRefused(err error) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 400 {
		return false
	}
	return re.ErrorCode == string(bloberror.MD5Mismatch) ||
		(re.ErrorCode == string(bloberror.InvalidOperation) && strings.Contains(strings.ToLower(err.Error()), "contentmd5"))
}

// DeleteBlob deletes one archive blob of the snapshots container; a missing blob is fine.
func (s *Store) DeleteBlob(ctx context.Context, path string) error {
	_, err := s.client.DeleteBlob(ctx, s.snapshots, path, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return transient(err, "delete %s", path)
	}
	return nil
}
