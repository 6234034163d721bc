package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/mxazure/backups/internal/backup"
)

// copyScript stands for Azure's copy engine in front of Azurite, which ends every Copy Blob at once:
// it can report the destination's copy status as Azure would for a long copy (pending, then failed),
// and it answers Abort Copy Blob itself, as Azure does for a pending copy (Azurite refuses to abort a
// copy that is over). It counts the status reads (HEAD) of the destination.
type copyScript struct {
	dst string // destination path in the file-store container
	// start is the status to report for the answer to Copy Blob ("": Azurite's).
	start blob.CopyStatusType
	// head gives the status to report for the n-th HEAD of the destination, from 1 ("": Azurite's).
	head func(n int) blob.CopyStatusType

	mu     sync.Mutex
	heads  int
	aborts []string // copy ids
	polled chan int // each HEAD's n, if not nil
}

func (c *copyScript) Do(r *http.Request) (*http.Response, error) {
	mine := strings.HasSuffix(r.URL.Path, "/"+DefaultFileStoreContainer+"/"+c.dst)
	if mine && r.Method == http.MethodPut && r.URL.Query().Get("comp") == "copy" {
		c.mu.Lock()
		c.aborts = append(c.aborts, r.URL.Query().Get("copyid"))
		c.mu.Unlock()
		return &http.Response{StatusCode: http.StatusNoContent, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil || !mine {
		return resp, err
	}
	switch {
	case r.Method == http.MethodPut && r.Header.Get("x-ms-copy-source") != "" && r.Header.Get("x-ms-requires-sync") == "" && c.start != "":
		resp.Header.Set("x-ms-copy-status", string(c.start))
	case r.Method == http.MethodHead && resp.StatusCode == http.StatusOK:
		c.mu.Lock()
		c.heads++
		n := c.heads
		c.mu.Unlock()
		if st := c.head(n); st != "" {
			resp.Header.Set("x-ms-copy-status", string(st))
			resp.Header.Set("x-ms-copy-status-description", "500 InternalError (scripted)")
		}
		if c.polled != nil {
			c.polled <- n
		}
	}
	return resp, nil
}

func (c *copyScript) stats() (heads int, aborts []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heads, append([]string(nil), c.aborts...)
}

func pendingFor(n int) func(int) blob.CopyStatusType {
	return func(i int) blob.CopyStatusType {
		if n < 0 || i <= n {
			return blob.CopyStatusTypePending
		}
		return ""
	}
}

// fastPolls keep the tests of asynchronous copies short.
func fastPolls(o Options) Options {
	o.CopyPollMin, o.CopyPollMax = 5*time.Millisecond, 20*time.Millisecond
	return o
}

// listed is the listing's entry for one blob of app-files, as the domain will have it.
func listed(t *testing.T, s *Store, name string) FileInfo {
	t.Helper()
	var found []FileInfo
	if err := s.ListFiles(t.Context(), "app-files", name, func(f FileInfo) error {
		if f.Name == name {
			found = append(found, f)
		}
		return nil
	}); err != nil || len(found) != 1 {
		t.Fatalf("listing %s: %v, %v", name, found, err)
	}
	return found[0]
}

func upload(t *testing.T, s *Store, name string, data []byte) FileInfo {
	t.Helper()
	if _, err := s.Client().UploadBuffer(t.Context(), "app-files", name, data, nil); err != nil {
		t.Fatal(err)
	}
	return listed(t, s, name)
}

// stored returns the bytes of a blob of the file-store container, and false when it does not exist.
func stored(t *testing.T, s *Store, path string) ([]byte, bool) {
	t.Helper()
	return storedIn(t, s, s.FileStoreContainer(), path)
}

func storedIn(t *testing.T, s *Store, containerName, path string) ([]byte, bool) {
	t.Helper()
	resp, err := s.Client().DownloadStream(t.Context(), containerName, path, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

func wantCopied(t *testing.T, s *Store, res CopyResult, err error, method CopyMethod, data []byte, withMD5 bool) {
	t.Helper()
	sum := md5.Sum(data)
	switch {
	case err != nil:
		t.Fatalf("copy: %v", err)
	case res.Existed || res.Method != method || res.Size != int64(len(data)) || res.ETag == "":
		t.Errorf("result %+v, want a new copy of %d bytes by %s", res, len(data), method)
	case withMD5 && !bytes.Equal(res.ContentMD5, sum[:]):
		t.Errorf("result's MD5 %x, want %x", res.ContentMD5, sum)
	case !withMD5 && res.ContentMD5 != nil:
		t.Errorf("result's MD5 %x for a source without one", res.ContentMD5)
	}
}

func wantNoDestination(t *testing.T, s *Store, path string) {
	t.Helper()
	if _, ok := stored(t, s, path); ok {
		t.Errorf("destination %s exists", path)
	}
}

// TestCopyFileCopiesSmallFilesSynchronously: with and without a Content-MD5, and an empty file.
func TestCopyFileCopiesSmallFilesSynchronously(t *testing.T) {
	s := newStoreWith(t, Options{})
	data := pattern(3000)
	res, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", upload(t, s, "docs/a", data).Check())
	wantCopied(t, s, res, err, CopySync, data, true)
	if got, _ := stored(t, s, "store/a"); !bytes.Equal(got, data) {
		t.Errorf("copied %d bytes unlike the source's", len(got))
	}
	if _, ok := storedIn(t, s, s.SnapshotsContainer(), "store/a"); ok {
		t.Errorf("the copy is in the snapshots container; store objects belong in the file-store container")
	}

	putBlockList(t, s, "app-files", "docs/b", data)
	res, err = s.CopyFile(t.Context(), "app-files", "docs/b", "store/b", listed(t, s, "docs/b").Check())
	wantCopied(t, s, res, err, CopySync, data, false)

	res, err = s.CopyFile(t.Context(), "app-files", "docs/empty", "store/empty", upload(t, s, "docs/empty", nil).Check())
	wantCopied(t, s, res, err, CopySync, nil, true)
}

// TestCopyFileCopiesLargeFilesAsynchronously: above SyncCopyLimit, Copy Blob, polled while pending
// (Azure's answer for a long copy; Azurite's copies are over at once) until it succeeds.
func TestCopyFileCopiesLargeFilesAsynchronously(t *testing.T) {
	script := &copyScript{dst: "store/big", start: blob.CopyStatusTypePending, head: pendingFor(3)}
	s := newStoreWith(t, fastPolls(Options{SyncCopyLimit: 1 << 10, Transport: script}))
	data := pattern(64 << 10)
	res, err := s.CopyFile(t.Context(), "app-files", "docs/big", "store/big", upload(t, s, "docs/big", data).Check())
	wantCopied(t, s, res, err, CopyAsync, data, true)
	if heads, aborts := script.stats(); heads != 4 || len(aborts) != 0 {
		t.Errorf("%d status reads and aborts %v, want 4 (3 pending, then success) and none", heads, aborts)
	}
	if got, _ := stored(t, s, "store/big"); !bytes.Equal(got, data) {
		t.Errorf("copied %d bytes unlike the source's", len(got))
	}
	putBlockList(t, s, "app-files", "docs/big2", data)
	res, err = s.CopyFile(t.Context(), "app-files", "docs/big2", "store/big2", listed(t, s, "docs/big2").Check())
	wantCopied(t, s, res, err, CopyAsync, data, false)
}

// bothMethods runs a test with a Store that copies a 3000-byte file synchronously, and one that
// copies it asynchronously.
func bothMethods(t *testing.T, o Options, f func(t *testing.T, s *Store)) {
	for name, limit := range map[string]int64{"sync": 0, "async": 1 << 10} {
		t.Run(name, func(t *testing.T) {
			o.SyncCopyLimit = limit
			f(t, newStoreWith(t, fastPolls(o)))
		})
	}
}

// TestCopyFileRefusesASourceChangedAfterListing: the source rewritten (same size, other bytes) after
// the listing is not copied under the old ETag.
func TestCopyFileRefusesASourceChangedAfterListing(t *testing.T) {
	bothMethods(t, Options{}, func(t *testing.T, s *Store) {
		seen := upload(t, s, "docs/a", pattern(3000))
		upload(t, s, "docs/a", bytes.Repeat([]byte("x"), 3000))
		_, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", seen.Check())
		if !errors.Is(err, ErrSourceChanged) || backup.CodeOf(err) != backup.CodeConflict || !strings.Contains(err.Error(), "rewritten") {
			t.Errorf("got %v, want ErrSourceChanged", err)
		}
		wantNoDestination(t, s, "store/a")
	})
}

// TestCopyFileRecognisesAVanishedSource: a source deleted after the listing is ErrSourceMissing
// (NOT_FOUND); a missing source container is the permanent error that names it.
func TestCopyFileRecognisesAVanishedSource(t *testing.T) {
	bothMethods(t, Options{}, func(t *testing.T, s *Store) {
		seen := upload(t, s, "docs/a", pattern(3000))
		if _, err := s.Client().DeleteBlob(t.Context(), "app-files", "docs/a", nil); err != nil {
			t.Fatal(err)
		}
		_, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", seen.Check())
		if !errors.Is(err, ErrSourceMissing) || !backup.IsNotFound(err) {
			t.Errorf("got %v, want ErrSourceMissing", err)
		}
		wantNoDestination(t, s, "store/a")

		_, err = s.CopyFile(t.Context(), "no-such-container", "docs/a", "store/a", seen.Check())
		var be *backup.Error
		if errors.Is(err, ErrSourceMissing) || !errors.As(err, &be) || be.Code != backup.CodeInvalidState || !strings.Contains(be.Message, "no-such-container") {
			t.Errorf("missing container: got %v, want the permanent error naming it", err)
		}
	})
}

// TestCopyFileNeverOverwritesAnExistingDestination: a second copy to the same path reports the
// destination as existing and leaves it; one whose check it fails is an ErrMismatch, still leaving it.
func TestCopyFileNeverOverwritesAnExistingDestination(t *testing.T) {
	bothMethods(t, Options{}, func(t *testing.T, s *Store) {
		data := pattern(3000)
		a := upload(t, s, "docs/a", data)
		first, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/x", a.Check())
		if err != nil {
			t.Fatal(err)
		}
		again, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/x", a.Check())
		if err != nil || !again.Existed || again.Method != "" || again.ETag != first.ETag || again.Size != 3000 || !bytes.Equal(again.ContentMD5, first.ContentMD5) {
			t.Errorf("second copy: %+v (%v), want the first copy reported as existing", again, err)
		}
		other := upload(t, s, "docs/b", bytes.Repeat([]byte("b"), 3000))
		res, err := s.CopyFile(t.Context(), "app-files", "docs/b", "store/x", other.Check())
		if !errors.Is(err, ErrMismatch) || !res.Existed || res.ETag != first.ETag {
			t.Errorf("other bytes to the same path: %+v (%v), want ErrMismatch and the existing destination", res, err)
		}
		if got, _ := stored(t, s, "store/x"); !bytes.Equal(got, data) {
			t.Errorf("the destination was overwritten")
		}
	})
}

// TestCopyFileDeletesACopyThatDoesNotMatch: a listed size or MD5 the copy does not have is an
// ErrMismatch and the copy is deleted. (Azure refuses the synchronous copy of bytes whose MD5 is not
// x-ms-source-content-md5; Azurite ignores that header and copies, so the check afterwards fails.)
func TestCopyFileDeletesACopyThatDoesNotMatch(t *testing.T) {
	bothMethods(t, Options{}, func(t *testing.T, s *Store) {
		a := upload(t, s, "docs/a", pattern(3000))
		for name, check := range map[string]CopyCheck{
			"size": {ETag: a.ETag, Size: 2999, MD5: a.ContentMD5},
			"md5":  {ETag: a.ETag, Size: 3000, MD5: bytes.Repeat([]byte{1}, md5.Size)},
		} {
			res, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", check)
			if !errors.Is(err, ErrMismatch) || backup.CodeOf(err) != backup.CodeInternal || res.ETag != "" || !strings.Contains(err.Error(), "deleted") {
				t.Errorf("%s: %+v (%v), want ErrMismatch", name, res, err)
			}
			wantNoDestination(t, s, "store/a")
		}
	})
}

// TestCopyFileCancelAbortsAPendingCopy: cancelling ctx while the copy is pending aborts it (with its
// copy id) and deletes the destination, at once.
func TestCopyFileCancelAbortsAPendingCopy(t *testing.T) {
	script := &copyScript{dst: "store/big", start: blob.CopyStatusTypePending, head: pendingFor(-1), polled: make(chan int, 100)}
	s := newStoreWith(t, Options{SyncCopyLimit: 1 << 10, Transport: script, CopyPollMin: 20 * time.Millisecond, CopyPollMax: time.Hour})
	seen := upload(t, s, "docs/big", pattern(4<<10))
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		for n := range script.polled {
			if n == 2 {
				cancel()
				return
			}
		}
	}()
	start := time.Now()
	_, err := s.CopyFile(ctx, "app-files", "docs/big", "store/big", seen.Check())
	if !errors.Is(err, context.Canceled) || !backup.IsRetryable(err) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %s, want an interruption at once", err, time.Since(start))
	}
	props, _ := s.Client().ServiceClient().NewContainerClient(DefaultFileStoreContainer).NewBlobClient("store/big").GetProperties(t.Context(), nil)
	if _, aborts := script.stats(); len(aborts) != 1 || aborts[0] == "" {
		t.Errorf("aborts %v, want one with the copy id", aborts)
	}
	if props.ETag != nil {
		t.Errorf("the destination of the aborted copy exists")
	}
}

// TestCopyFileAbortsACopyPendingTooLong: a copy still pending after AsyncCopyTimeout is aborted and
// its destination deleted.
func TestCopyFileAbortsACopyPendingTooLong(t *testing.T) {
	script := &copyScript{dst: "store/big", start: blob.CopyStatusTypePending, head: pendingFor(-1)}
	s := newStoreWith(t, fastPolls(Options{SyncCopyLimit: 1 << 10, Transport: script, AsyncCopyTimeout: 200 * time.Millisecond}))
	_, err := s.CopyFile(t.Context(), "app-files", "docs/big", "store/big", upload(t, s, "docs/big", pattern(4<<10)).Check())
	if backup.CodeOf(err) != backup.CodeTransient || !strings.Contains(err.Error(), "did not end within") {
		t.Errorf("got %v, want a transient timeout", err)
	}
	if _, aborts := script.stats(); len(aborts) != 1 {
		t.Errorf("aborts %v, want one", aborts)
	}
	wantNoDestination(t, s, "store/big")
}

// TestCopyFileReportsAFailedCopy: Copy Blob that ends failed (Azure: the source could not be read) is
// a transient error and what it left is deleted.
func TestCopyFileReportsAFailedCopy(t *testing.T) {
	script := &copyScript{dst: "store/big", start: blob.CopyStatusTypePending, head: func(int) blob.CopyStatusType { return blob.CopyStatusTypeFailed }}
	s := newStoreWith(t, fastPolls(Options{SyncCopyLimit: 1 << 10, Transport: script}))
	_, err := s.CopyFile(t.Context(), "app-files", "docs/big", "store/big", upload(t, s, "docs/big", pattern(4<<10)).Check())
	if backup.CodeOf(err) != backup.CodeTransient || !strings.Contains(err.Error(), "reports the copy failed") {
		t.Errorf("got %v, want a transient error saying the copy failed", err)
	}
	wantNoDestination(t, s, "store/big")
}

// TestCopyFileReplacesWhatAFailedCopyLeft: a destination left by a failed copy (a crash before its
// cleanup) is deleted and the file copied again, not reported as existing.
func TestCopyFileReplacesWhatAFailedCopyLeft(t *testing.T) {
	script := &copyScript{dst: "store/a", head: func(n int) blob.CopyStatusType {
		if n == 1 {
			return blob.CopyStatusTypeFailed
		}
		return ""
	}}
	s := newStoreWith(t, Options{Transport: script})
	upload(t, s, "docs/left", pattern(10)) // what the failed copy left: other bytes
	if _, err := s.Client().ServiceClient().NewContainerClient(DefaultFileStoreContainer).NewBlobClient("store/a").CopyFromURL(t.Context(), mustSAS(t, s, "docs/left"), nil); err != nil {
		t.Fatal(err)
	}
	data := pattern(3000)
	res, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", upload(t, s, "docs/a", data).Check())
	wantCopied(t, s, res, err, CopySync, data, true)
	if got, _ := stored(t, s, "store/a"); !bytes.Equal(got, data) {
		t.Errorf("the destination holds %d bytes, not the copy's", len(got))
	}
}

// TestCopyFileWaitsForAPendingCopyToTheSameDestination: a destination whose copy is still pending
// (another worker's, or this call's own whose answer was lost) is waited for, never aborted, and then
// reported as existing.
func TestCopyFileWaitsForAPendingCopyToTheSameDestination(t *testing.T) {
	script := &copyScript{dst: "store/a", head: func(n int) blob.CopyStatusType {
		if n <= 2 {
			return blob.CopyStatusTypePending
		}
		return ""
	}}
	s := newStoreWith(t, fastPolls(Options{Transport: script}))
	a := upload(t, s, "docs/a", pattern(3000))
	if _, err := s.Client().ServiceClient().NewContainerClient(DefaultFileStoreContainer).NewBlobClient("store/a").CopyFromURL(t.Context(), mustSAS(t, s, "docs/a"), nil); err != nil {
		t.Fatal(err)
	}
	res, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", a.Check())
	if err != nil || !res.Existed || res.Size != 3000 {
		t.Errorf("got %+v, %v; want the destination reported as existing once its copy ended", res, err)
	}
	if heads, aborts := script.stats(); heads != 3 || len(aborts) != 0 {
		t.Errorf("%d status reads, aborts %v; want 3 (2 pending) and none", heads, aborts)
	}
}

func mustSAS(t *testing.T, s *Store, name string) string {
	t.Helper()
	u, _, err := sharedKeySAS{}.copySource(t.Context(), s.Client().ServiceClient().NewContainerClient("app-files").NewBlobClient(name), true, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestCopyFileNeedsTheListedETagAndSize: without them nothing is sent.
func TestCopyFileNeedsTheListedETagAndSize(t *testing.T) {
	srv := newFakeStorage(t, false, answer503)
	s, err := NewFromConnectionString(srv.connectionString(), "snapshots", Options{Retry: fastRetries})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []CopyCheck{{Size: 1}, {ETag: `"1"`, Size: -1}} {
		if _, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", c); backup.CodeOf(err) != backup.CodeInternal {
			t.Errorf("%+v: got %v", c, err)
		}
	}
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

// countingTransport sends requests with the default client and counts them.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) Do(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultClient.Do(r)
}

// TestCopyFileVerifiedByListingIsOneRequest: a caller that checks its copies from one listing
// (backup.StoreFiles) gets a synchronous copy for one request, and a result that is the listing's, as
// the copy was conditional on the listed ETag; the copy is still the source's bytes.
func TestCopyFileVerifiedByListingIsOneRequest(t *testing.T) {
	count := &countingTransport{}
	s := newStoreWith(t, Options{Transport: count})
	data := pattern(5000)
	want := upload(t, s, "docs/one", data).Check()
	want.VerifyByListing = true
	before := count.n.Load()
	res, err := s.CopyFile(t.Context(), "app-files", "docs/one", "store/one", want)
	if n := count.n.Load() - before; n != 1 {
		t.Errorf("%d requests for a copy checked by a listing, want 1", n)
	}
	wantCopied(t, s, res, err, CopySync, data, true)
	if got, _ := stored(t, s, "store/one"); !bytes.Equal(got, data) {
		t.Errorf("copied %d bytes unlike the source's", len(got))
	}
	// Without the flag the copy is read back: two requests.
	want.VerifyByListing = false
	upload(t, s, "docs/two", data)
	want = listed(t, s, "docs/two").Check()
	before = count.n.Load()
	if _, err := s.CopyFile(t.Context(), "app-files", "docs/two", "store/two", want); err != nil {
		t.Fatal(err)
	}
	if n := count.n.Load() - before; n != 2 {
		t.Errorf("%d requests for a copy read back, want 2", n)
	}
}
