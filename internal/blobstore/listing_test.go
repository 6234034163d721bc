package blobstore

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"

	"github.com/mxazure/backups/internal/backup"
)

// listCounter sends requests with the default HTTP client and counts List Blobs requests.
type listCounter struct{ lists atomic.Int64 }

func (c *listCounter) Do(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("comp") == "list" {
		c.lists.Add(1)
	}
	return http.DefaultClient.Do(r)
}

// putBlockList writes a blob the way large uploads do, with Put Block List and no Content-MD5.
func putBlockList(t *testing.T, s *Store, containerName, name string, data []byte) {
	t.Helper()
	bb := s.Client().ServiceClient().NewContainerClient(containerName).NewBlockBlobClient(name)
	if _, err := bb.StageBlock(t.Context(), blockID(1), streaming.NopCloser(bytes.NewReader(data)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bb.CommitBlockList(t.Context(), []string{blockID(1)}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestListFilesInPages: 35 blobs under the prefix come in name order from 4 List Blobs requests of 10,
// with their size, ETag (as GetProperties gives it) and MD5 (absent for a Put Block List blob).
func TestListFilesInPages(t *testing.T) {
	counter := &listCounter{}
	s := newStoreWith(t, Options{ListPageSize: 10, Transport: counter})
	ctx := t.Context()
	var want []string
	for i := range 35 {
		name := fmt.Sprintf("docs/f-%02d", i)
		want = append(want, name)
		if i%5 == 0 {
			putBlockList(t, s, "app-files", name, pattern(i+1))
		} else if _, err := s.Client().UploadBuffer(ctx, "app-files", name, pattern(i+1), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Client().UploadBuffer(ctx, "app-files", "other/x", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	counter.lists.Store(0)
	var got []FileInfo
	if err := s.ListFiles(ctx, "app-files", "docs/", func(f FileInfo) error { got = append(got, f); return nil }); err != nil {
		t.Fatal(err)
	}
	if n := counter.lists.Load(); n != 4 {
		t.Errorf("%d List Blobs requests for 35 blobs in pages of 10, want 4", n)
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d blobs, want %d", len(got), len(want))
	}
	for i, f := range got {
		if f.Name != want[i] || f.Size != int64(i+1) || time.Since(f.LastModified) > time.Hour {
			t.Errorf("blob %d: %+v", i, f)
		}
		sum := md5.Sum(pattern(i + 1))
		switch {
		case i%5 == 0 && f.ContentMD5 != nil:
			t.Errorf("%s: Content-MD5 %x for a blob written with Put Block List, want none", f.Name, f.ContentMD5)
		case i%5 != 0 && !bytes.Equal(f.ContentMD5, sum[:]):
			t.Errorf("%s: Content-MD5 %x, want %x", f.Name, f.ContentMD5, sum)
		}
	}
	props, err := s.Client().ServiceClient().NewContainerClient("app-files").NewBlobClient(got[7].Name).GetProperties(ctx, nil)
	if err != nil || *props.ETag != got[7].ETag {
		t.Errorf("listed ETag %s, GetProperties says %v (%v)", got[7].ETag, props.ETag, err)
	}
	if c := got[7].Check(); c.ETag != got[7].ETag || c.Size != 8 || !bytes.Equal(c.MD5, got[7].ContentMD5) {
		t.Errorf("Check() = %+v", c)
	}
}

// TestListFilesStopsAtTheCallbacksError: fn's error ends the listing and comes back as is.
func TestListFilesStopsAtTheCallbacksError(t *testing.T) {
	s := newStoreWith(t, Options{ListPageSize: 2})
	for i := range 5 {
		if _, err := s.Client().UploadBuffer(t.Context(), "app-files", fmt.Sprintf("f%d", i), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	stop := errors.New("enough")
	calls := 0
	err := s.ListFiles(t.Context(), "app-files", "", func(FileInfo) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("got %v after %d calls, want fn's own error after 1", err, calls)
	}
}

// TestListFilesOfAMissingContainer: a permanent error whose message names the container.
func TestListFilesOfAMissingContainer(t *testing.T) {
	s := newStoreWith(t, Options{})
	err := s.ListFiles(t.Context(), "no-such-container", "", func(FileInfo) error { return nil })
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeInvalidState || backup.IsRetryable(err) ||
		!strings.Contains(be.Message, "no-such-container") || strings.Contains(be.Message, "http") {
		t.Errorf("got %v, want a permanent error naming the container", err)
	}
}
