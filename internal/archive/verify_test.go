package archive

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
	"strings"
	"testing"
	"testing/iotest"
)

// verifyFixture is a blob of three blocks and their descriptions, as Finish returns them.
func verifyFixture() ([]byte, []Block) {
	var blob []byte
	var blocks []Block
	for i, size := range []int{1000, 300 << 10, 7} { // one block larger than VerifyBlob's buffer
		data := bytes.Repeat([]byte{byte('a' + i)}, size)
		id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "d-%010d", i+1))
		blocks = append(blocks, Block{ID: id, Size: int64(size), MD5: md5.Sum(data)})
		blob = append(blob, data...)
	}
	return blob, blocks
}

func TestVerifyBlobAcceptsTheCommittedBlocks(t *testing.T) {
	blob, blocks := verifyFixture()
	for name, r := range map[string]io.Reader{
		"whole reads":  bytes.NewReader(blob),
		"one byte":     iotest.OneByteReader(bytes.NewReader(blob)),
		"choppy reads": iotestHalfReader(blob),
	} {
		t.Run(name, func(t *testing.T) {
			v, err := VerifyBlob(context.Background(), r, blocks)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(blob)
			if v.Size != int64(len(blob)) || v.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("got %+v, want %d bytes and SHA-256 %x", v, len(blob), sum)
			}
		})
	}
}

func TestVerifyBlobRejectsAnythingElse(t *testing.T) {
	blob, blocks := verifyFixture()
	flipped := bytes.Clone(blob)
	flipped[1000+5] ^= 1
	swapped := append(append(bytes.Clone(blob[1000:1000+300<<10]), blob[:1000]...), blob[1000+300<<10:]...)
	tests := []struct {
		name   string
		blob   []byte
		blocks []Block
		want   string
	}{
		{"a flipped bit", flipped, blocks, "block 2 of 3 (d-0000000002, bytes 1000 to 308200) has MD5"},
		{"blocks committed in the wrong order", swapped, blocks, "block 1 of 3 (d-0000000001, bytes 0 to 1000) has MD5"},
		{"truncated inside a block", blob[:2000], blocks, "it ends after 2000 bytes, inside block 2 of 3 (d-0000000002)"},
		{"truncated at a block boundary", blob[:1000], blocks, "it ends after 1000 bytes, inside block 2 of 3"},
		{"empty", nil, blocks, "it ends after 0 bytes, inside block 1 of 3"},
		{"trailing bytes", append(bytes.Clone(blob), 'x'), blocks, "it has more than the 308207 bytes of its 3 blocks"},
		{"a block missing from the list", blob, blocks[:2], "it has more than the 308200 bytes of its 2 blocks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyBlob(context.Background(), bytes.NewReader(tt.blob), tt.blocks)
			var mismatch *BlobMismatchError
			if !errors.As(err, &mismatch) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want a *BlobMismatchError saying %q", err, tt.want)
			}
		})
	}
}

func TestVerifyBlobReportsReadErrorsAsSuch(t *testing.T) {
	blob, blocks := verifyFixture()
	errReset := errors.New("connection reset by peer")
	for name, r := range map[string]io.Reader{
		"inside a block": io.MultiReader(bytes.NewReader(blob[:5000]), iotest.ErrReader(errReset)),
		"after the last": io.MultiReader(bytes.NewReader(blob), iotest.ErrReader(errReset)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := VerifyBlob(context.Background(), r, blocks)
			var mismatch *BlobMismatchError
			if !errors.Is(err, errReset) || errors.As(err, &mismatch) {
				t.Errorf("got %v, want the read error, not a mismatch", err)
			}
		})
	}
}

func TestVerifyBlobStopsWhenCancelled(t *testing.T) {
	blob, blocks := verifyFixture()
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("shutting down")
	cancel(stop)
	if _, err := VerifyBlob(ctx, bytes.NewReader(blob), blocks); !errors.Is(err, stop) {
		t.Errorf("got %v, want the context's cause", err)
	}
}
