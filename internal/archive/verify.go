package archive

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Verified is what VerifyBlob learnt of a blob that matched its blocks.
type Verified struct {
	Size   int64  // bytes
	SHA256 string // lowercase hex of the whole blob
}

// BlobMismatchError says that a blob read back is not the blocks that were committed.
type BlobMismatchError struct{ Reason string }

func (e *BlobMismatchError) Error() string {
	return "archive blob does not match its blocks: " + e.Reason
}

// VerifyBlob reads a committed archive blob from r and checks that it is exactly blocks, in order: each
// block's length and MD5, and nothing after the last. It returns the blob's size and SHA-256, which
// cannot be computed while writing because blocks are produced out of order.
//
// Comparing with the digests taken when each block was compressed proves the blob holds, byte for
// byte, what the builder produced (the block list was committed in the right order and storage kept
// every byte), for about a quarter of the CPU of decompressing and parsing it again. A difference is a
// *BlobMismatchError; a failure to read r is returned wrapped.
func VerifyBlob(ctx context.Context, r io.Reader, blocks []Block) (Verified, error) {
	var v Verified
	sum := sha256.New()
	digest := md5.New()
	buf := make([]byte, 256<<10)
	for i, blk := range blocks {
		if err := ctx.Err(); err != nil {
			return v, context.Cause(ctx)
		}
		digest.Reset()
		n, err := copyHashed(r, blk.Size, buf, sum, digest)
		v.Size += n
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return v, &BlobMismatchError{fmt.Sprintf("it ends after %d bytes, inside block %d of %d (%s)", v.Size, i+1, len(blocks), blockName(blk.ID))}
		case err != nil:
			return v, fmt.Errorf("read the archive blob back: %w", err)
		}
		if got := digest.Sum(nil); [md5.Size]byte(got) != blk.MD5 {
			return v, &BlobMismatchError{fmt.Sprintf("block %d of %d (%s, bytes %d to %d) has MD5 %x, %x was staged",
				i+1, len(blocks), blockName(blk.ID), v.Size-blk.Size, v.Size, got, blk.MD5)}
		}
	}
	var one [1]byte
	switch k, err := io.ReadFull(r, one[:]); {
	case k > 0:
		return v, &BlobMismatchError{fmt.Sprintf("it has more than the %d bytes of its %d blocks", v.Size, len(blocks))}
	case !errors.Is(err, io.EOF):
		return v, fmt.Errorf("read the archive blob back: %w", err)
	}
	v.SHA256 = hex.EncodeToString(sum.Sum(nil))
	return v, nil
}

// copyHashed reads exactly n bytes of r into both hashes.
func copyHashed(r io.Reader, n int64, buf []byte, a, b hash.Hash) (int64, error) {
	var done int64
	for done < n {
		want := min(int64(len(buf)), n-done)
		k, err := io.ReadFull(r, buf[:want])
		a.Write(buf[:k])
		b.Write(buf[:k])
		done += int64(k)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// blockName decodes a block ID for messages ("d-0000000042"); an ID that is not base64 is shown as is.
func blockName(id string) string {
	if raw, err := base64.StdEncoding.DecodeString(id); err == nil {
		return string(raw)
	}
	return id
}
