package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	az := azurite.ForTest(t)
	s, err := NewFromConnectionString(az.ConnectionString(), "snapshots")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureContainers(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func blockID(i int) string { return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "d-%010d", i)) }

func TestBlockSinkCommitsBlocksInTheGivenOrder(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	sink := s.NewBlockSink("ns/env/snap/attempt-01.tar.gz")
	parts := [][]byte{[]byte("first "), []byte("second "), []byte("third")}
	for i, p := range parts { // staged in order 1, 2, 3; committed 3, 1, 2
		if err := sink.StageBlock(ctx, blockID(i+1), p, md5.Sum(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Commit(ctx, []string{blockID(3), blockID(1), blockID(2)}); err != nil {
		t.Fatal(err)
	}
	rc, size, err := s.OpenArchive(ctx, "ns/env/snap/attempt-01.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if want := "thirdfirst second "; string(got) != want || size != int64(len(want)) {
		t.Errorf("got %q (%d bytes), want %q", got, size, want)
	}
}

func TestBlockSinkSendsContentMD5ThatStorageChecks(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	sink := s.NewBlockSink("ns/env/snap/attempt-01.tar.gz")
	data := []byte("block bytes as compressed")
	wrong := md5.Sum([]byte("block bytes as compressed, then changed on the way"))
	err := sink.StageBlock(ctx, blockID(1), data, wrong)
	if !checksumRefused(err) {
		t.Fatalf("got %v, want Storage to refuse the block for its Content-MD5", err)
	}
	if backup.CodeOf(err) != backup.CodeTransient {
		t.Errorf("a block refused for its checksum is not transient (the next attempt would send it again): %v", err)
	}
	if err := sink.StageBlock(ctx, blockID(1), data, md5.Sum(data)); err != nil {
		t.Fatalf("the right Content-MD5 was refused: %v", err)
	}
}

func TestOpenArchiveOfAMissingBlobIsNotFound(t *testing.T) {
	s := newStore(t)
	_, _, err := s.OpenArchive(context.Background(), "ns/env/none/attempt-01.tar.gz")
	if backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("got %v, want NOT_FOUND", err)
	}
}

func TestOpenFile(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Client().CreateContainer(ctx, "app-files", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().UploadBuffer(ctx, "app-files", "docs/a", []byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	r, size, found, err := s.OpenFile(ctx, "app-files", "docs/a")
	if err != nil || !found || size != 5 {
		t.Fatalf("got size %d, found %v, err %v", size, found, err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, []byte("hello")) {
		t.Errorf("got %q", got)
	}
	if _, _, found, err := s.OpenFile(ctx, "app-files", "docs/missing"); found || err != nil {
		t.Errorf("missing blob: got found %v, err %v; want not found and no error", found, err)
	}
	_, _, found, err = s.OpenFile(ctx, "no-such-container", "docs/a")
	var be *backup.Error
	if found || !errors.As(err, &be) || be.Code != backup.CodeInvalidState || !strings.Contains(be.Message, "no-such-container") {
		t.Errorf("missing container: got found %v, err %v; want a permanent error naming the container", found, err)
	}
}

func TestChecksumRefused(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"Azure's Md5Mismatch", &azcore.ResponseError{StatusCode: 400, ErrorCode: "Md5Mismatch"}, true},
		{"another 400", &azcore.ResponseError{StatusCode: 400, ErrorCode: "InvalidOperation"}, false},
		{"Md5Mismatch code on another status", &azcore.ResponseError{StatusCode: 409, ErrorCode: "Md5Mismatch"}, false},
		{"not a response", errors.New("connection reset"), false},
	}
	for _, tt := range tests {
		if got := checksumRefused(fmt.Errorf("stage: %w", tt.err)); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
