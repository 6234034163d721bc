package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/backup"
)

// How WriteStream cuts a stream into blocks. A block blob has at most maxBlocks committed blocks, so a
// stream can be at most streamBlockSize*maxBlocks bytes (about 390 GiB), far more than a database
// dump; memory is streamBlockSize per block in flight, plus the one being filled (40 MiB). A block
// of 8 MiB is staged well within TryTimeout on a slow link. Variables, so that tests use small ones.
var (
	streamBlockSize = 8 << 20
	maxBlocks       = 50_000
)

// streamInFlight is the most blocks WriteStream stages at once.
const streamInFlight = 4

// StreamHeaders are the HTTP headers a blob written by WriteStream is served with.
type StreamHeaders struct {
	ContentType, ContentDisposition string
}

// StreamResult describes a blob WriteStream committed.
type StreamResult struct {
	Size   int64
	SHA256 string // hex, of the bytes written
}

// WriteStream writes everything r gives, a stream of unknown length, to a new block blob at path of
// the snapshots container: blocks of streamBlockSize, at most streamInFlight of them staged at once,
// each with its Content-MD5 (which Storage checks before it keeps the block), committed with h only
// when r ended without error and every block was staged. On any error nothing is committed (staged
// blocks are not a blob; Storage discards them after a week). A blob that already exists at path is
// never overwritten: that is a CodeConflict error, before anything is staged if it existed then.
func (s *Store) WriteStream(ctx context.Context, path string, r io.Reader, h StreamHeaders) (StreamResult, error) {
	what := "write " + describe(path)
	bb := s.client.ServiceClient().NewContainerClient(s.snapshots).NewBlockBlobClient(path)
	// Staging many GB only to find the commit refused would waste the whole transfer.
	switch _, err := bb.GetProperties(ctx, nil); {
	case err == nil:
		return StreamResult{}, alreadyWritten(what, nil)
	case !blobMissing(err):
		return StreamResult{}, transient(err, "%s", what)
	}

	stage, abort := context.WithCancel(ctx)
	defer abort()
	g, gctx := errgroup.WithContext(stage)
	g.SetLimit(streamInFlight)
	// At most streamInFlight buffers are being staged and one is being filled: the pool never holds
	// more, so putting one back never blocks.
	pool := make(chan []byte, streamInFlight+1)
	buffer := func() []byte {
		select {
		case b := <-pool:
			return b
		default:
			return make([]byte, streamBlockSize)
		}
	}
	sum := sha256.New()
	var ids []string
	var size int64
	var ended bool    // r said io.EOF: everything was read
	var readErr error // of r, or a stream too long
	for !ended && readErr == nil && gctx.Err() == nil {
		buf := buffer()
		n, err := fill(r, buf)
		ended = err == io.EOF
		switch {
		case err != nil && !ended:
			readErr = fmt.Errorf("%s: read the stream: %w", what, err)
		case n > 0 && len(ids) == maxBlocks:
			readErr = backup.Errorf(backup.CodeInternal, "could not %s: it is larger than %d blocks of %d MiB, the most one blob written as a stream holds",
				what, maxBlocks, streamBlockSize>>20)
		}
		if n == 0 || readErr != nil {
			pool <- buf
			continue
		}
		block := buf[:n]
		sum.Write(block)
		size += int64(n)
		// Block ids of one blob must all be as long; the index keeps them in order.
		id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "s-%010d", len(ids)))
		ids = append(ids, id)
		g.Go(func() error {
			defer func() { pool <- buf }()
			md := md5.Sum(block)
			_, err := bb.StageBlock(gctx, id, streaming.NopCloser(bytes.NewReader(block)),
				&blockblob.StageBlockOptions{TransactionalValidation: blob.TransferValidationTypeMD5(md[:])})
			if err != nil {
				return transient(err, "upload a block of %s", describe(path))
			}
			return nil
		})
	}
	if readErr != nil {
		abort() // the blocks in flight are for nothing: nothing will be committed
		_ = g.Wait()
		return StreamResult{}, readErr
	}
	if err := g.Wait(); err != nil {
		return StreamResult{}, err
	}
	if !ended { // the loop stopped for ctx alone
		return StreamResult{}, transient(ctx.Err(), "%s", what)
	}

	headers := &blob.HTTPHeaders{}
	if h.ContentType != "" {
		headers.BlobContentType = to.Ptr(h.ContentType)
	}
	if h.ContentDisposition != "" {
		headers.BlobContentDisposition = to.Ptr(h.ContentDisposition)
	}
	_, err := bb.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		HTTPHeaders:      headers,
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	})
	switch {
	// Azure answers 409 BlobAlreadyExists to If-None-Match: * on an existing blob; 412 in some cases.
	case bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet):
		return StreamResult{}, alreadyWritten(what, err)
	case err != nil:
		return StreamResult{}, transient(err, "commit %s", describe(path))
	}
	return StreamResult{Size: size, SHA256: hex.EncodeToString(sum.Sum(nil))}, nil
}

// alreadyWritten is the error of WriteStream on a path where a blob exists; cause may be nil.
func alreadyWritten(what string, cause error) error {
	if cause == nil {
		cause = errors.New("the blob exists")
	}
	return backup.Wrap(backup.CodeConflict, cause, "could not %s: a blob exists there already, and it is not overwritten", what)
}

// fill reads r into buf until buf is full or r ends. err is r's: io.EOF when it ended, without error,
// and any other error as it is, io.ErrUnexpectedEOF included (a truncated gzip stream says that),
// which io.ReadFull would not tell from a short last block.
func fill(r io.Reader, buf []byte) (n int, err error) {
	for n < len(buf) && err == nil {
		var m int
		m, err = r.Read(buf[n:])
		n += m
	}
	return n, err
}
