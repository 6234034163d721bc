package blobstore

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"

	"github.com/mxazure/backups/internal/backup"
)

// TestUploadsContainerIsItsOwn: the uploads container defaults to DefaultUploadsContainer, and may be
// neither the snapshots container nor the file-store container (users write there, expired uploads
// are deleted there).
func TestUploadsContainerIsItsOwn(t *testing.T) {
	const conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"
	if s := newStoreFor(t, conn); s.UploadsContainer() != DefaultUploadsContainer {
		t.Errorf("uploads container %q", s.UploadsContainer())
	}
	for _, name := range []string{"snapshots", DefaultFileStoreContainer} {
		if _, err := NewFromConnectionString(conn, "snapshots", Options{UploadsContainer: name}); err == nil {
			t.Errorf("uploads container %q accepted", name)
		}
		if _, err := New("https://a.blob.core.windows.net", fakeCredential{}, "snapshots", Options{UploadsContainer: name}); err == nil {
			t.Errorf("uploads container %q accepted with a credential", name)
		}
	}
}

// TestUploadPropertiesFindsOnlyCommittedBlobs: an upload is found with its size and ETag once it is
// a blob; nothing uploaded, or blocks staged without Put Block List, is not found (Azure answers 404
// for a blob with uncommitted blocks only; so does Azurite). EnsureContainers made the container, and
// Ping reads it.
func TestUploadPropertiesFindsOnlyCommittedBlobs(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.UploadProperties(ctx, uploadPath); err != nil || got.Found {
		t.Errorf("nothing uploaded: %+v, %v", got, err)
	}
	bb := s.Client().ServiceClient().NewContainerClient(s.UploadsContainer()).NewBlockBlobClient(uploadPath)
	if _, err := bb.StageBlock(ctx, blockID(1), streaming.NopCloser(bytes.NewReader(pattern(100))), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.UploadProperties(ctx, uploadPath); err != nil || got.Found {
		t.Errorf("blocks staged, not committed: %+v, %v", got, err)
	}
	resp, err := bb.CommitBlockList(ctx, []string{blockID(1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.UploadProperties(ctx, uploadPath); err != nil || !got.Found || got.Size != 100 || got.ETag != string(*resp.ETag) {
		t.Errorf("committed: %+v, %v; want 100 bytes, ETag %s", got, err, *resp.ETag)
	}
	if err := s.DeleteUpload(ctx, uploadPath); err != nil {
		t.Fatal(err)
	}
	if got, err := s.UploadProperties(ctx, uploadPath); err != nil || got.Found {
		t.Errorf("deleted: %+v, %v", got, err)
	}
	if err := s.DeleteUpload(ctx, uploadPath); err != nil {
		t.Errorf("deleting a missing upload: %v", err)
	}
}

// ifMatchRecorder sends requests with the default client and records the If-Match of every GET.
type ifMatchRecorder struct {
	mu   sync.Mutex
	gets []string
}

func (c *ifMatchRecorder) Do(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet {
		c.mu.Lock()
		c.gets = append(c.gets, r.Header.Get("If-Match"))
		c.mu.Unlock()
	}
	return http.DefaultClient.Do(r)
}

func putUpload(t *testing.T, s *Store, data []byte) string {
	t.Helper()
	resp, err := s.Client().UploadBuffer(t.Context(), s.UploadsContainer(), uploadPath, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(*resp.ETag)
}

func wantUploadChanged(t *testing.T, what string, err error) {
	t.Helper()
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeInvalidParameters || !strings.Contains(be.Message, "changed after the upload was completed; upload it again") {
		t.Errorf("%s: got %v, want the upload refused as changed", what, err)
	}
}

// TestOpenUploadReadsInRangesOfItsETag: an upload is read whole as ranges of RangeSize, every GET
// conditional on the ETag it was completed with (Azure evaluates If-Match on each request; so does
// Azurite); an empty one reads as nothing.
func TestOpenUploadReadsInRangesOfItsETag(t *testing.T) {
	rec := &ifMatchRecorder{}
	s := newStoreWith(t, Options{RangeSize: 1000, Transport: rec})
	for _, n := range []int{0, 4321} {
		data := pattern(n)
		etag := putUpload(t, s, data)
		rec.gets = nil
		r, size, err := s.OpenUpload(t.Context(), uploadPath, etag)
		if err != nil || size != int64(n) {
			t.Fatalf("%d bytes: size %d, %v", n, size, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%d bytes: read %d, %v", n, len(got), err)
		}
		if want := (n + 999) / 1000; n > 0 && len(rec.gets) != want {
			t.Errorf("%d bytes: %d GETs, want %d", n, len(rec.gets), want)
		}
		for _, h := range rec.gets {
			if h != etag {
				t.Errorf("%d bytes: a GET with If-Match %q, want %q", n, h, etag)
			}
		}
	}
}

// TestOpenUploadRefusesAChangedBlob: an upload overwritten (the link still writes after completion)
// or gone is refused for the user to upload again, when it is opened and between two ranges. (Azure
// answers 412 ConditionNotMet to the If-Match; Azurite too.)
func TestOpenUploadRefusesAChangedBlob(t *testing.T) {
	s := newStoreWith(t, Options{RangeSize: 1000})
	ctx := t.Context()
	etag := putUpload(t, s, pattern(3000))

	r, size, err := s.OpenUpload(ctx, uploadPath, etag)
	if err != nil || size != 3000 {
		t.Fatalf("size %d, %v", size, err)
	}
	first := make([]byte, 1000)
	if _, err := io.ReadFull(r, first); err != nil {
		t.Fatal(err)
	}
	newETag := putUpload(t, s, pattern(3500))
	_, err = io.ReadAll(r)
	r.Close()
	wantUploadChanged(t, "overwritten between ranges", err)

	_, _, err = s.OpenUpload(ctx, uploadPath, etag)
	wantUploadChanged(t, "overwritten before it was opened", err)

	if err := s.DeleteUpload(ctx, uploadPath); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.OpenUpload(ctx, uploadPath, newETag)
	wantUploadChanged(t, "deleted", err)

	if _, _, err := s.OpenUpload(ctx, uploadPath, ""); backup.CodeOf(err) != backup.CodeInternal {
		t.Errorf("without an ETag: %v", err)
	}
}
