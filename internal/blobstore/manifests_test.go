package blobstore

import (
	"bytes"
	"crypto/md5"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

// requestLog sends requests with the default HTTP client and records their method and query.
type requestLog struct {
	mu   sync.Mutex
	reqs []string // "PUT comp=block"
	// corrupt, if set, changes one byte of the body of a Put Blob, after the SDK computed its MD5.
	corrupt bool
}

func (l *requestLog) Do(r *http.Request) (*http.Response, error) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r.Method+" "+r.URL.Query().Get("comp"))
	corrupt := l.corrupt
	l.mu.Unlock()
	if corrupt && r.Method == http.MethodPut && r.Body != nil {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		body[len(body)/2] ^= 0xff
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	return http.DefaultClient.Do(r)
}

func (l *requestLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.reqs
	l.reqs = nil
	return out
}

func readAll(t *testing.T, s *Store, path string) (backup.ManifestHeader, []backup.ManifestEntry, error) {
	t.Helper()
	var got []backup.ManifestEntry
	h, err := s.ReadManifest(t.Context(), path, func(e backup.ManifestEntry) error { got = append(got, e); return nil })
	return h, got, err
}

// TestManifestRoundTripThroughStorage: a manifest of 3,000 entries is one Put Blob (application/gzip,
// with the Content-MD5 it keeps) in the snapshots container, read back in ranges; a second write
// replaces it.
func TestManifestRoundTripThroughStorage(t *testing.T) {
	log := &requestLog{}
	s := newStoreWith(t, Options{RangeSize: 4096, Transport: log})
	path := Layout{}.SnapshotManifest(testNS, testEnv, testSnap, 1)
	entries := testEntries(3000)
	log.take()
	if err := s.WriteManifest(t.Context(), path, headerFor(entries), entries); err != nil {
		t.Fatal(err)
	}
	if reqs := log.take(); len(reqs) != 1 || reqs[0] != "PUT " {
		t.Errorf("requests %q, want one Put Blob", reqs)
	}
	props, err := s.Client().ServiceClient().NewContainerClient("snapshots").NewBlobClient(path).GetProperties(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := storedIn(t, s, "snapshots", path)
	sum := md5.Sum(raw)
	if deref(props.ContentType) != "application/gzip" || !bytes.Equal(props.ContentMD5, sum[:]) || *props.ContentLength <= 3*4096 {
		t.Errorf("content type %q, MD5 %x (the bytes' is %x), %d bytes (want more than 3 ranges)", deref(props.ContentType), props.ContentMD5, sum, *props.ContentLength)
	}
	log.take()
	h, got, err := readAll(t, s, path)
	if err != nil || h.Files != 3000 || len(got) != 3000 || got[2999].Object != entries[2999].Object || !bytes.Equal(got[1].MD5, entries[1].MD5) {
		t.Fatalf("read back %d entries, header %+v, %v", len(got), h, err)
	}
	if gets := strings.Count(strings.Join(log.take(), ","), "GET "); gets < 4 {
		t.Errorf("%d GETs, want the manifest read in ranges of 4096 bytes", gets)
	}
	fewer := testEntries(2)
	if err := s.WriteManifest(t.Context(), path, headerFor(fewer), fewer); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	if _, got, err := readAll(t, s, path); err != nil || len(got) != 2 {
		t.Errorf("after the overwrite: %d entries, %v", len(got), err)
	}
	if _, ok := storedIn(t, s, s.FileStoreContainer(), path); ok {
		t.Errorf("the manifest is in the file-store container")
	}
}

// TestWriteManifestRefusesDisagreeingEntries: nothing is sent for entries that disagree with the
// header; an existing manifest stays as it is.
func TestWriteManifestRefusesDisagreeingEntries(t *testing.T) {
	log := &requestLog{}
	s := newStoreWith(t, Options{Transport: log})
	path := Layout{}.SnapshotManifest(testNS, testEnv, testSnap, 1)
	entries := testEntries(3)
	if err := s.WriteManifest(t.Context(), path, headerFor(entries), entries); err != nil {
		t.Fatal(err)
	}
	log.take()
	err := s.WriteManifest(t.Context(), path, headerFor(entries[:2]), entries)
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeInternal || !strings.Contains(be.Message, "more entries than the 2") || !strings.HasPrefix(be.Message, "could not write the snapshot's manifest: ") {
		t.Errorf("got %v, want INTERNAL saying what disagrees", err)
	}
	if reqs := log.take(); len(reqs) != 0 {
		t.Errorf("requests %q for a refused manifest", reqs)
	}
	if _, got, err := readAll(t, s, path); err != nil || len(got) != 3 {
		t.Errorf("the manifest before: %d entries, %v", len(got), err)
	}
}

// TestWriteManifestSendsAContentMD5StorageChecks: a body damaged on the way is refused by Storage
// (Azure: 400 Md5Mismatch; Azurite: 400 InvalidOperation), a transient error, and nothing is stored.
func TestWriteManifestSendsAContentMD5StorageChecks(t *testing.T) {
	log := &requestLog{corrupt: true}
	s := newStoreWith(t, Options{Transport: log})
	path := Layout{}.SnapshotManifest(testNS, testEnv, testSnap, 1)
	entries := testEntries(10)
	err := s.WriteManifest(t.Context(), path, headerFor(entries), entries)
	if !checksumRefused(err) || backup.CodeOf(err) != backup.CodeTransient {
		t.Errorf("got %v, want Storage's refusal of the damaged body, transient", err)
	}
	if _, ok := storedIn(t, s, "snapshots", path); ok {
		t.Errorf("a damaged manifest was stored")
	}
}

// TestReadManifestErrors: a missing manifest is NOT_FOUND; a damaged one INTERNAL with
// ErrManifestDamaged, never NOT_FOUND nor fewer entries.
func TestReadManifestErrors(t *testing.T) {
	s := newStoreWith(t, Options{})
	path := Layout{}.SnapshotManifest(testNS, testEnv, testSnap, 1)
	if _, _, err := readAll(t, s, path); !backup.IsNotFound(err) || !strings.Contains(err.Error(), "manifest does not exist") {
		t.Errorf("missing: %v, want NOT_FOUND", err)
	}
	entries := testEntries(200)
	good := encoded(t, headerFor(entries), entries)
	for name, data := range map[string][]byte{
		"cut short":   good[:len(good)/2],
		"not gzip":    []byte("{}\n"),
		"empty":       nil,
		"trailing":    append(bytes.Clone(good), 0),
		"fewer lines": gzipped(lines(t, headerFor(entries), entries[0], entries[1])),
	} {
		if _, err := s.Client().UploadBuffer(t.Context(), "snapshots", path, data, nil); err != nil {
			t.Fatal(err)
		}
		_, _, err := readAll(t, s, path)
		var be *backup.Error
		if !errors.As(err, &be) || be.Code != backup.CodeInternal || !errors.Is(err, ErrManifestDamaged) ||
			!strings.HasPrefix(be.Message, "could not read the snapshot's manifest: the manifest is damaged") {
			t.Errorf("%s: got %v, want INTERNAL with ErrManifestDamaged", name, err)
		}
	}
}

// TestReadManifestOfAManifestReplacedDuringTheRead: the ranges are pinned to the first one's ETag, so
// a manifest rewritten half-way is a transient read error, not damage.
func TestReadManifestOfAManifestReplacedDuringTheRead(t *testing.T) {
	s := newStoreWith(t, Options{RangeSize: 1024})
	path := Layout{}.SnapshotManifest(testNS, testEnv, testSnap, 1)
	entries := testEntries(5000)
	if err := s.WriteManifest(t.Context(), path, headerFor(entries), entries); err != nil {
		t.Fatal(err)
	}
	calls := 0
	_, err := s.ReadManifest(t.Context(), path, func(backup.ManifestEntry) error {
		if calls++; calls == 1 {
			if err := s.WriteManifest(t.Context(), path, headerFor(entries[:1]), entries[:1]); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	if backup.CodeOf(err) != backup.CodeTransient || errors.Is(err, ErrManifestDamaged) || !strings.Contains(err.Error(), "changed") {
		t.Errorf("got %v after %d entries, want a transient error saying the blob changed", err, calls)
	}
}
