package blobstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// newStoreWith is newStore with options, and a file container "app-files".
func newStoreWith(t *testing.T, o Options) *Store {
	t.Helper()
	az := azurite.ForTest(t)
	s, err := NewFromConnectionString(az.ConnectionString(), "snapshots", o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureContainers(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().CreateContainer(t.Context(), "app-files", nil); err != nil {
		t.Fatal(err)
	}
	return s
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// TestOpenFileReadsInRanges: a blob is read as ranges of RangeSize bytes, whatever its size, and the
// bytes are the blob's (empty, smaller than a range, a multiple of it, and not).
func TestOpenFileReadsInRanges(t *testing.T) {
	s := newStoreWith(t, Options{RangeSize: 1000})
	ctx := t.Context()
	for _, n := range []int{0, 1, 999, 1000, 3000, 4321} {
		data := pattern(n)
		if _, err := s.Client().UploadBuffer(ctx, "app-files", "docs/f", data, nil); err != nil {
			t.Fatal(err)
		}
		r, size, found, err := s.OpenFile(ctx, "app-files", "docs/f")
		if err != nil || !found || size != int64(n) {
			t.Fatalf("%d bytes: got size %d, found %v, err %v", n, size, found, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%d bytes: read %d bytes, equal %v, err %v", n, len(got), bytes.Equal(got, data), err)
		}
	}
}

// TestOpenArchiveReadsInRanges: the verification read of an archive goes through the same ranges.
func TestOpenArchiveReadsInRanges(t *testing.T) {
	s := newStoreWith(t, Options{RangeSize: 512})
	data := pattern(5000)
	if _, err := s.Client().UploadBuffer(t.Context(), "snapshots", "ns/e/s/attempt-01.tar.gz", data, nil); err != nil {
		t.Fatal(err)
	}
	r, size, err := s.OpenArchive(t.Context(), "ns/e/s/attempt-01.tar.gz")
	if err != nil || size != 5000 {
		t.Fatalf("got size %d, err %v", size, err)
	}
	defer r.Close()
	if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, data) {
		t.Errorf("read %d bytes, err %v", len(got), err)
	}
}

// TestBlobReplacedDuringTheReadFailsTheRead: the later ranges are pinned to the first one's ETag, so
// a blob overwritten half-way is a transient error, never a mix of two versions.
func TestBlobReplacedDuringTheReadFailsTheRead(t *testing.T) {
	s := newStoreWith(t, Options{RangeSize: 1000})
	ctx := t.Context()
	if _, err := s.Client().UploadBuffer(ctx, "app-files", "docs/f", pattern(3000), nil); err != nil {
		t.Fatal(err)
	}
	r, _, _, err := s.OpenFile(ctx, "app-files", "docs/f")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadFull(r, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().UploadBuffer(ctx, "app-files", "docs/f", bytes.Repeat([]byte("x"), 3000), nil); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(r)
	if backup.CodeOf(err) != backup.CodeTransient || !strings.Contains(err.Error(), "changed") {
		t.Errorf("got %v, want a transient error saying the blob changed", err)
	}
}

func TestCheckFileContainer(t *testing.T) {
	s := newStoreWith(t, Options{})
	if err := s.CheckFileContainer(t.Context(), "app-files"); err != nil {
		t.Errorf("existing container: %v", err)
	}
	err := s.CheckFileContainer(t.Context(), "no-such-container")
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeInvalidState || !strings.Contains(be.Message, "no-such-container") || backup.IsRetryable(err) {
		t.Errorf("missing container: got %v, want a permanent error naming the container", err)
	}
}

// TestCancelAbortsAReadInFlight: cancelling the context ends a read from Azurite at once.
func TestCancelAbortsAReadInFlight(t *testing.T) {
	s := newStoreWith(t, Options{RangeSize: 1000})
	if _, err := s.Client().UploadBuffer(t.Context(), "app-files", "docs/f", pattern(5000), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r, _, _, err := s.OpenFile(ctx, "app-files", "docs/f")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadFull(r, make([]byte, 1500)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

// getCounter sends requests with the default HTTP client and counts the GETs of blobs.
type getCounter struct{ gets atomic.Int64 }

func (c *getCounter) Do(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.Query().Get("comp") == "" {
		c.gets.Add(1)
	}
	return http.DefaultClient.Do(r)
}

// TestOpenRangeReadsTheRangeInRanges: any range within the blob reads its bytes, as GETs of at most
// RangeSize bytes; BlobSize gives the size.
func TestOpenRangeReadsTheRangeInRanges(t *testing.T) {
	counter := &getCounter{}
	s := newStoreWith(t, Options{RangeSize: 1000, Transport: counter})
	path := Layout{}.SnapshotDump(testNS, testEnv, testSnap, 1)
	data := pattern(4321)
	if _, err := s.Client().UploadBuffer(t.Context(), "snapshots", path, data, nil); err != nil {
		t.Fatal(err)
	}
	if size, err := s.BlobSize(t.Context(), path); err != nil || size != 4321 {
		t.Errorf("BlobSize: %d, %v", size, err)
	}
	for _, c := range []struct {
		off, n int64
		gets   int64
	}{{0, 4321, 5}, {1, 999, 1}, {1000, 1000, 1}, {500, 3000, 3}, {4320, 1, 1}, {4321, 0, 0}, {0, 0, 0}} {
		counter.gets.Store(0)
		r, err := s.OpenRange(t.Context(), path, c.off, c.n)
		if err != nil {
			t.Fatalf("%d bytes from %d: %v", c.n, c.off, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data[c.off:c.off+c.n]) {
			t.Errorf("%d bytes from %d: read %d bytes, equal %v, err %v", c.n, c.off, len(got), bytes.Equal(got, data[c.off:c.off+c.n]), err)
		}
		if n := counter.gets.Load(); n != c.gets {
			t.Errorf("%d bytes from %d: %d GETs, want %d of at most 1000 bytes", c.n, c.off, n, c.gets)
		}
	}
}

// TestOpenRangeRefusesRangesPastTheEnd: a range that does not lie within the blob is an error, never
// a short read; a missing blob is NOT_FOUND, for OpenRange and BlobSize.
func TestOpenRangeRefusesRangesPastTheEnd(t *testing.T) {
	s := newStoreWith(t, Options{RangeSize: 1000})
	path := Layout{}.SnapshotDump(testNS, testEnv, testSnap, 1)
	if _, err := s.Client().UploadBuffer(t.Context(), "snapshots", path, pattern(4321), nil); err != nil {
		t.Fatal(err)
	}
	empty := Layout{}.SnapshotDump(testNS, testEnv, testSnap, 2)
	if _, err := s.Client().UploadBuffer(t.Context(), "snapshots", empty, nil, nil); err != nil {
		t.Fatal(err)
	}
	if r, err := s.OpenRange(t.Context(), empty, 0, 0); err != nil {
		t.Errorf("nothing of an empty blob: %v", err)
	} else if got, err := io.ReadAll(r); len(got) != 0 || err != nil {
		t.Errorf("nothing of an empty blob: %d bytes, %v", len(got), err)
	}
	for _, c := range []struct {
		path   string
		off, n int64
	}{{path, 4000, 400}, {path, 4321, 1}, {path, 5000, 0}, {path, 9000, 10}, {path, -1, 10}, {path, 0, -1}, {empty, 0, 1}} {
		r, err := s.OpenRange(t.Context(), c.path, c.off, c.n)
		if err == nil {
			r.Close()
		}
		if backup.CodeOf(err) != backup.CodeInternal || !strings.Contains(err.Error(), "database dump") {
			t.Errorf("%d bytes from %d: got %v, want a refusal naming the dump", c.n, c.off, err)
		}
	}
	missing := Layout{}.SnapshotDump(testNS, testEnv, testSnap, 9)
	if _, err := s.OpenRange(t.Context(), missing, 0, 10); !backup.IsNotFound(err) {
		t.Errorf("OpenRange of a missing blob: %v, want NOT_FOUND", err)
	}
	if _, err := s.OpenRange(t.Context(), missing, 0, 0); !backup.IsNotFound(err) {
		t.Errorf("OpenRange of nothing of a missing blob: %v, want NOT_FOUND", err)
	}
	if _, err := s.BlobSize(t.Context(), missing); !backup.IsNotFound(err) {
		t.Errorf("BlobSize of a missing blob: %v, want NOT_FOUND", err)
	}
}
