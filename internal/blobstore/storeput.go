package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/mxazure/backups/internal/backup"
)

// Store objects whose bytes pass through the service, as the files of an uploaded archive do (backups
// copy theirs server-side, CopyFile). Objects are immutable and shared: a write never replaces an
// object (If-None-Match: *), and an object found there already is checked to be the one meant.

// PutObject stores data as object name of the environment's file store with one Put Blob, carrying
// contentMD5, data's MD5: Storage checks the bytes against it and keeps it as the object's Content-MD5.
// An object already there is left as it is (existed), once its size and Content-MD5 are checked to be
// data's; one that differs is CodeInternal. A Put Blob whose answer was lost and that the SDK sent
// again finds its own object there and reports existed too. Only names ParseObjectName accepts are
// written.
func (s *Store) PutObject(ctx context.Context, namespace, envID, name string, data, contentMD5 []byte) (existed bool, err error) {
	bb, what, err := s.objectClient(namespace, envID, name)
	if err != nil {
		return false, err
	}
	_, err = bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), &blockblob.UploadOptions{
		HTTPHeaders:             objectHeaders(contentMD5),
		TransactionalValidation: blob.TransferValidationTypeMD5(contentMD5),
		AccessConditions:        noOverwrite(),
	})
	return s.created(ctx, bb, what, err, int64(len(data)), contentMD5)
}

// ObjectBlocks writes one store object too large for a single Put Blob: its blocks are staged, each
// with its own MD5, and committed in order with the whole object's Content-MD5.
type ObjectBlocks struct {
	s    *Store
	bb   *blockblob.Client
	what string
}

// NewObjectBlocks returns a writer of object name of the environment's file store. Only names
// ParseObjectName accepts are written.
func (s *Store) NewObjectBlocks(namespace, envID, name string) (*ObjectBlocks, error) {
	bb, what, err := s.objectClient(namespace, envID, name)
	if err != nil {
		return nil, err
	}
	return &ObjectBlocks{s: s, bb: bb, what: what}, nil
}

// StageBlock uploads one block with its Content-MD5, which Storage checks before it keeps the block.
// Staged blocks are not an object until Commit; Storage discards uncommitted blocks after a week.
func (o *ObjectBlocks) StageBlock(ctx context.Context, id string, data []byte, contentMD5 [md5.Size]byte) error {
	opts := &blockblob.StageBlockOptions{TransactionalValidation: blob.TransferValidationTypeMD5(contentMD5[:])}
	if _, err := o.bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(data)), opts); err != nil {
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return o.s.containerMissing(o.s.files, err)
		}
		return transient(err, "%s: upload a block", o.what)
	}
	return nil
}

// Commit makes the object the staged blocks ids, in that order, of size bytes in all, with
// contentMD5 (the MD5 of all of them) as its Content-MD5 property, unless an object is there already:
// then, as for PutObject, it is left as it is and checked (existed).
func (o *ObjectBlocks) Commit(ctx context.Context, ids []string, size int64, contentMD5 []byte) (existed bool, err error) {
	_, err = o.bb.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		HTTPHeaders:      objectHeaders(contentMD5),
		AccessConditions: noOverwrite(),
	})
	return o.s.created(ctx, o.bb, o.what, err, size, contentMD5)
}

func (s *Store) objectClient(namespace, envID, name string) (*blockblob.Client, string, error) {
	if err := checkStore(namespace, envID); err != nil {
		return nil, "", err
	}
	what := fmt.Sprintf("store object %s in the file store of environment %s", name, envID)
	if _, _, ok := backup.ParseObjectName(name); !ok {
		return nil, "", backup.Errorf(backup.CodeInternal, "could not %s: it is not the name of a store object", what)
	}
	path := Layout{}.StoreObject(namespace, envID, name)
	return s.client.ServiceClient().NewContainerClient(s.files).NewBlockBlobClient(path), what, nil
}

func objectHeaders(contentMD5 []byte) *blob.HTTPHeaders {
	return &blob.HTTPHeaders{BlobContentType: to.Ptr("application/octet-stream"), BlobContentMD5: contentMD5}
}

func noOverwrite() *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
}

// created classifies the answer to a write of an object that must not replace one: an object there
// already is existed when it has the size and Content-MD5 written.
func (s *Store) created(ctx context.Context, bb *blockblob.Client, what string, err error, size int64, contentMD5 []byte) (bool, error) {
	switch {
	case err == nil:
		return false, nil
	// Azure answers 409 BlobAlreadyExists to If-None-Match: * on an existing blob; 412 in some cases.
	case bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet):
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return false, s.containerMissing(s.files, err)
	default:
		return false, transient(err, "%s", what)
	}
	props, perr := bb.GetProperties(ctx, nil)
	switch {
	case perr != nil:
		return false, transient(perr, "%s: read the properties of the object already there", what)
	case props.ContentLength == nil || *props.ContentLength != size || !bytes.Equal(props.ContentMD5, contentMD5):
		return false, backup.Wrap(backup.CodeInternal, err, "could not %s: an object of that name is there already with other content (%d bytes, Content-MD5 %x; want %d bytes, %x)",
			what, deref(props.ContentLength), props.ContentMD5, size, contentMD5)
	}
	return true, nil
}
