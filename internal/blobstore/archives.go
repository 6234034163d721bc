package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"

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
func (l Layout) SnapshotArchive(namespace, envID, snapshotID string, fence int) string {
	return fmt.Sprintf("%sattempt-%02d.tar.gz", l.SnapshotPrefix(namespace, envID, snapshotID), fence)
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
			return transient(err, "list the archives of snapshot %s", snapshotID)
		}
		for _, item := range page.Segment.BlobItems {
			_, err := cc.NewBlobClient(*item.Name).Delete(ctx, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
			if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
				return transient(err, "delete an archive of snapshot %s", snapshotID)
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
// The SDK retries transient failures under the Store's retry policy; ctx aborts a hung upload.
func (b *BlockSink) StageBlock(ctx context.Context, id string, data []byte, contentMD5 [md5.Size]byte) error {
	opts := &blockblob.StageBlockOptions{TransactionalValidation: blob.TransferValidationTypeMD5(contentMD5[:])}
	if _, err := b.client.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(data)), opts); err != nil {
		return transient(err, "upload a block of the archive")
	}
	return nil
}

// Commit makes the blob the given blocks in order.
func (b *BlockSink) Commit(ctx context.Context, ids []string) error {
	_, err := b.client.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/gzip")},
	})
	if err != nil {
		return transient(err, "commit the archive")
	}
	return nil
}

// DeleteBlob deletes one archive blob of the snapshots container; a missing blob is fine.
func (s *Store) DeleteBlob(ctx context.Context, path string) error {
	_, err := s.client.DeleteBlob(ctx, s.snapshots, path, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return transient(err, "delete the archive")
	}
	return nil
}
