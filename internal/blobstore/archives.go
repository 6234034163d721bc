package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.ArchiveBlobs = (*Store)(nil)

// BlockSink stages blocks of one blob of the snapshots container (an archive, or a snapshot's database
// dump) and commits them in order (archive.BlockSink).
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
		return transient(err, "upload a block of %s", describe(b.path))
	}
	return nil
}

// Commit makes the blob the given blocks in order.
func (b *BlockSink) Commit(ctx context.Context, ids []string) error {
	_, err := b.client.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/gzip")},
	})
	if err != nil {
		return transient(err, "commit %s", describe(b.path))
	}
	return nil
}

// DeleteBlob deletes one blob of the snapshots container (an archive, a dump or a manifest); a missing
// blob is fine.
func (s *Store) DeleteBlob(ctx context.Context, path string) error {
	// With its blob snapshots, if any (taken by an operator or a backup tool): a blob that has them
	// cannot be deleted alone.
	_, err := s.client.DeleteBlob(ctx, s.snapshots, path, &blob.DeleteOptions{DeleteSnapshots: to.Ptr(blob.DeleteSnapshotsOptionTypeInclude)})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return transient(err, "delete %s", describe(path))
	}
	return nil
}
