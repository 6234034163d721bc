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

	"github.com/mxazure/backups/internal/backup"
)

// Layout is the one place that knows blob paths in the snapshots container:
//
//	<namespace>/<environment>/<snapshot>/attempt-<n>.tar.gz   the archive written by the claim with fence n
//
// Each claim of the backup job writes its own blob, so a worker that lost its claim can never
// interleave blocks with the current one; the snapshot record names the blob that finished, and
// settling (or the sweeper) removes the others.
type Layout struct{}

var _ backup.Layout = Layout{}

// SnapshotPrefix is the folder of every blob of one snapshot.
func (Layout) SnapshotPrefix(namespace, envID, snapshotID string) string {
	return namespace + "/" + envID + "/" + snapshotID + "/"
}

// SnapshotArchive is the archive blob written under one claim (fence) of the backup job.
func (l Layout) SnapshotArchive(namespace, envID, snapshotID string, fence int) string {
	return fmt.Sprintf("%sattempt-%02d.tar.gz", l.SnapshotPrefix(namespace, envID, snapshotID), fence)
}

var _ backup.ArchiveBlobs = (*Store)(nil)

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
	// With its blob snapshots, if any (taken by an operator or a backup tool): a blob that has them
	// cannot be deleted alone.
	_, err := s.client.DeleteBlob(ctx, s.snapshots, path, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return transient(err, "delete the archive")
	}
	return nil
}
