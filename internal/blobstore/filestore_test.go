package blobstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/mxazure/backups/internal/backup"
)

const testEnv2 = "0d3e301f-5551-46f8-ad44-8de2be084c96"

// putObject writes a blob of the file-store container at the layout's path of an object.
func putObject(t *testing.T, s *Store, ns, env, name string, data []byte) {
	t.Helper()
	if _, err := s.Client().UploadBuffer(t.Context(), s.FileStoreContainer(), Layout{}.StoreObject(ns, env, name), data, nil); err != nil {
		t.Fatal(err)
	}
}

// objectName is the store object of file i with size bytes and a Content-MD5.
func objectName(i int, size int64) string {
	sum := make([]byte, 16)
	sum[0] = byte(i)
	return backup.ObjectName(backup.SourceFile{UUID: fileUUID(i), Size: size, MD5: sum})
}

// TestFileStoreContainer: EnsureContainers creates it apart from the snapshots container, under the
// name Options.FileStoreContainer gives, and Ping checks it; a file-store container that is the
// snapshots container is refused.
func TestFileStoreContainer(t *testing.T) {
	s := newStoreWith(t, Options{FileStoreContainer: "other-files"})
	if s.FileStoreContainer() != "other-files" || s.SnapshotsContainer() != "snapshots" {
		t.Errorf("containers %s and %s", s.FileStoreContainer(), s.SnapshotsContainer())
	}
	for _, name := range []string{"snapshots", "other-files"} {
		if _, err := s.Client().ServiceClient().NewContainerClient(name).GetProperties(t.Context(), nil); err != nil {
			t.Errorf("container %s: %v", name, err)
		}
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("ping: %v", err)
	}
	if _, err := s.Client().DeleteContainer(t.Context(), "other-files", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), "other-files") {
		t.Errorf("ping without the file-store container: %v, want an error naming it", err)
	}
	// A start after the container was lost makes it again, and one with every container there only
	// reads them (in Azure the identity may read but not create them).
	if err := s.EnsureContainers(t.Context()); err != nil {
		t.Fatalf("EnsureContainers with one container missing: %v", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("ping after EnsureContainers made the container again: %v", err)
	}
	if err := s.EnsureContainers(t.Context()); err != nil {
		t.Errorf("EnsureContainers with every container there: %v", err)
	}
	if _, err := s.Client().DeleteContainer(t.Context(), "other-files", nil); err != nil {
		t.Fatal(err)
	}
	err := s.WalkObjects(t.Context(), testNS, testEnv, func(backup.StoreObject) error { return nil })
	if backup.CodeOf(err) != backup.CodeInvalidState || !strings.Contains(err.Error(), "other-files") || strings.Contains(err.Error(), "file documents") {
		t.Errorf("walk without the file-store container: %v, want a permanent error naming the service's container", err)
	}
	if def := newStoreWith(t, Options{}); def.FileStoreContainer() != DefaultFileStoreContainer {
		t.Errorf("default file-store container %s", def.FileStoreContainer())
	}
	for _, name := range []string{"snapshots", DefaultFileStoreContainer} {
		if _, err := NewFromConnectionString("UseDevelopmentStorage=true", name, Options{FileStoreContainer: name}); err == nil {
			t.Errorf("a file-store container %s that is the snapshots container was accepted", name)
		}
	}
	if _, err := NewFromConnectionString("UseDevelopmentStorage=true", DefaultFileStoreContainer); err == nil {
		t.Errorf("a snapshots container named like the default file-store container was accepted")
	}
}

// folderLister counts List Blobs requests and records whether each was hierarchical.
type folderLister struct {
	mu    sync.Mutex
	lists []string // the delimiter of each
}

func (c *folderLister) Do(r *http.Request) (*http.Response, error) {
	if r.URL.Query().Get("comp") == "list" {
		c.mu.Lock()
		c.lists = append(c.lists, r.URL.Query().Get("delimiter"))
		c.mu.Unlock()
	}
	return http.DefaultClient.Do(r)
}

// TestWalkStoresListsFoldersOnly: every environment with a store folder (objects, or only a collector
// state), in name order, in pages, from folder listings that never page through the objects; folders
// the layout does not make are skipped.
func TestWalkStoresListsFoldersOnly(t *testing.T) {
	lister := &folderLister{}
	s := newStoreWith(t, Options{ListPageSize: 2, Transport: lister})
	const env3 = "0d3e301f-5551-46f8-ad44-8de2be084c97"
	for i := range 30 {
		putObject(t, s, "ns-a", testEnv, objectName(i, 1), []byte("x"))
	}
	if _, err := s.WriteCollectorState(t.Context(), "ns-a", testEnv2, backup.CollectorState{Generation: 1}, ""); err != nil {
		t.Fatal(err)
	}
	putObject(t, s, "ns-b", env3, objectName(1, 1), []byte("x"))
	for _, p := range []string{"NS/" + testEnv + "/x", "ns-a/not-a-uuid/x", "ns-a/" + strings.ToUpper(env3) + "/x", "readme.txt", "ns-c/file"} {
		if _, err := s.Client().UploadBuffer(t.Context(), s.FileStoreContainer(), p, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	lister.lists = nil
	var got []string
	err := s.WalkStores(t.Context(), func(ns, env string) error { got = append(got, ns+"/"+env); return nil })
	if want := []string{"ns-a/" + testEnv, "ns-a/" + testEnv2, "ns-b/" + env3}; err != nil || !slices.Equal(got, want) {
		t.Errorf("walked %v (%v), want %v", got, err, want)
	}
	// Folders at the top: NS/, ns-a/, ns-b/ (and readme.txt, ns-c/); below ns-a/: 4 folders; below
	// ns-b/: 1; below ns-c/: none. Pages of 2: a handful of requests, where listing the 30 objects
	// alone would take 15.
	if len(lister.lists) < 5 || len(lister.lists) > 9 || slices.ContainsFunc(lister.lists, func(d string) bool { return d != "/" }) {
		t.Errorf("list requests with delimiters %q, want a few, all with the delimiter /", lister.lists)
	}
	stop := errors.New("enough")
	calls := 0
	if err := s.WalkStores(t.Context(), func(string, string) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("got %v after %d calls, want fn's own error after 1", err, calls)
	}
}

// TestWalkObjects: the objects of one environment's store only, with names relative to its folder,
// sizes and times, in name order, in pages; the collector state is not listed, a blob of the folder
// that is no object's is (the domain skips it).
func TestWalkObjects(t *testing.T) {
	s := newStoreWith(t, Options{ListPageSize: 3})
	var want []string
	for i := range 10 {
		name := objectName(i, int64(i))
		want = append(want, name)
		putObject(t, s, testNS, testEnv, name, pattern(i))
	}
	putObject(t, s, testNS, testEnv, "notes.txt", []byte("n"))
	want = append(want, "notes.txt")
	putObject(t, s, testNS, testEnv2, objectName(20, 1), []byte("x")) // another environment
	if _, err := s.WriteCollectorState(t.Context(), testNS, testEnv, backup.CollectorState{Generation: 1}, ""); err != nil {
		t.Fatal(err)
	}
	var got []backup.StoreObject
	if err := s.WalkObjects(t.Context(), testNS, testEnv, func(o backup.StoreObject) error { got = append(got, o); return nil }); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range got {
		names = append(names, o.Name)
		if time.Since(o.LastModified) > time.Hour {
			t.Errorf("%s: last modified %s", o.Name, o.LastModified)
		}
		if _, size, ok := backup.ParseObjectName(o.Name); ok && o.Size != size {
			t.Errorf("%s: size %d", o.Name, o.Size)
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("walked %v, want %v", names, want)
	}
	if err := s.WalkObjects(t.Context(), testNS, strings.ToUpper(testEnv), func(backup.StoreObject) error { return nil }); backup.CodeOf(err) != backup.CodeInvalidParameters {
		t.Errorf("an environment id the layout does not make: %v", err)
	}
}

// TestDeleteObject: the object goes, with its blob snapshots; a missing one is fine; a name that is no
// object's is refused before any request, so the collector state cannot be deleted this way.
func TestDeleteObject(t *testing.T) {
	s := newStoreWith(t, Options{})
	name := objectName(1, 5)
	putObject(t, s, testNS, testEnv, name, pattern(5))
	path := Layout{}.StoreObject(testNS, testEnv, name)
	if _, err := s.Client().ServiceClient().NewContainerClient(s.FileStoreContainer()).NewBlobClient(path).CreateSnapshot(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteObject(t.Context(), testNS, testEnv, name); err != nil {
		t.Fatalf("delete: %v", err)
	}
	pager := s.Client().ServiceClient().NewContainerClient(s.FileStoreContainer()).NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix: to.Ptr(path), Include: container.ListBlobsInclude{Snapshots: true}})
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			t.Errorf("left after the deletion: %s (snapshot %q)", *b.Name, deref(b.Snapshot))
		}
	}
	if err := s.DeleteObject(t.Context(), testNS, testEnv, name); err != nil {
		t.Errorf("deleting a missing object: %v", err)
	}
	if _, err := s.WriteCollectorState(t.Context(), testNS, testEnv, backup.CollectorState{Generation: 1}, ""); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{collectorStateName, "", "notes.txt", name + "/x", "../" + name} {
		if err := s.DeleteObject(t.Context(), testNS, testEnv, bad); backup.CodeOf(err) != backup.CodeInternal {
			t.Errorf("deleting %q: %v, want a refusal", bad, err)
		}
	}
	if st, etag, err := s.ReadCollectorState(t.Context(), testNS, testEnv); err != nil || etag == "" || st.Generation != 1 {
		t.Errorf("the collector state after the refusals: %+v, %q, %v", st, etag, err)
	}
}

// TestOpenObject: an object's bytes and size, read in ranges; a missing one is NOT_FOUND naming it.
func TestOpenObject(t *testing.T) {
	s := newStoreWith(t, Options{RangeSize: 1000})
	name := objectName(1, 3500)
	data := pattern(3500)
	putObject(t, s, testNS, testEnv, name, data)
	r, size, err := s.OpenObject(t.Context(), testNS, testEnv, name)
	if err != nil || size != 3500 {
		t.Fatalf("got size %d, %v", size, err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("read %d bytes, %v", len(got), err)
	}
	missing := objectName(2, 10)
	_, _, err = s.OpenObject(t.Context(), testNS, testEnv, missing)
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeNotFound || !strings.Contains(be.Message, missing) {
		t.Errorf("missing object: %v, want NOT_FOUND naming it", err)
	}
}

// TestCollectorStateConditions: the state is created only if there is none, replaced only under its
// current ETag; a lost race is CONFLICT. (Azure: If-None-Match: * on an existing blob is 409
// BlobAlreadyExists, an If-Match not met 412 ConditionNotMet; Azurite answers the same, and 412 too for
// an If-Match on a blob deleted since, where Azure may answer 404 BlobNotFound: both are a conflict.)
func TestCollectorStateConditions(t *testing.T) {
	s := newStoreWith(t, Options{})
	ctx := t.Context()
	st, etag, err := s.ReadCollectorState(ctx, testNS, testEnv)
	if err != nil || etag != "" || st.Generation != 0 || st.Owner != "" {
		t.Fatalf("no state yet: %+v, %q, %v; want the zero state and no ETag", st, etag, err)
	}
	first := backup.CollectorState{Generation: 1, Owner: "run-1", LeaseUntil: time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC),
		Deleting: []string{objectName(1, 1)}, Objects: 3, StoreBytes: 300}
	e1, err := s.WriteCollectorState(ctx, testNS, testEnv, first, "")
	if err != nil || e1 == "" {
		t.Fatalf("create: %q, %v", e1, err)
	}
	got, etag, err := s.ReadCollectorState(ctx, testNS, testEnv)
	if err != nil || etag != e1 || got.Owner != "run-1" || !got.LeaseUntil.Equal(first.LeaseUntil) || !slices.Equal(got.Deleting, first.Deleting) || got.StoreBytes != 300 {
		t.Errorf("read back %+v, %q, %v; want %+v, %q", got, etag, err, first, e1)
	}
	if _, err := s.WriteCollectorState(ctx, testNS, testEnv, backup.CollectorState{Generation: 1, Owner: "run-2"}, ""); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("create over an existing state: %v, want CONFLICT", err)
	}
	e2, err := s.WriteCollectorState(ctx, testNS, testEnv, backup.CollectorState{Generation: 2, Owner: "run-1"}, e1)
	if err != nil || e2 == "" || e2 == e1 {
		t.Fatalf("replace under the current ETag: %q, %v", e2, err)
	}
	if _, err := s.WriteCollectorState(ctx, testNS, testEnv, backup.CollectorState{Generation: 2, Owner: "run-3"}, e1); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("replace under a stale ETag: %v, want CONFLICT", err)
	}
	if got, etag, _ := s.ReadCollectorState(ctx, testNS, testEnv); etag != e2 || got.Generation != 2 || got.Owner != "run-1" {
		t.Errorf("after the refusals: %+v, %q; want generation 2 of run-1 under %q", got, etag, e2)
	}
	if _, err := s.Client().DeleteBlob(ctx, s.FileStoreContainer(), Layout{}.CollectorState(testNS, testEnv), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteCollectorState(ctx, testNS, testEnv, backup.CollectorState{Generation: 3}, e2); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("replace a state deleted since: %v, want CONFLICT", err)
	}
	if _, err := s.Client().UploadBuffer(ctx, s.FileStoreContainer(), Layout{}.CollectorState(testNS, testEnv), []byte("{"), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReadCollectorState(ctx, testNS, testEnv); backup.CodeOf(err) != backup.CodeInternal {
		t.Errorf("a state that is not JSON: %v, want INTERNAL", err)
	}
}

// TestCollectorStateRaceHasOneWinner: writers that read the same ETag (or none) write at once;
// exactly one succeeds, the others get CONFLICT, and the state is the winner's under the ETag it got.
// (Azure evaluates the condition and writes atomically; so does Azurite, which this checks.)
func TestCollectorStateRaceHasOneWinner(t *testing.T) {
	s := newStoreWith(t, Options{})
	ctx := t.Context()
	etag := ""
	for round := range 10 {
		const writers = 4
		var wg sync.WaitGroup
		var wins atomic.Int64
		results := make([]struct {
			etag string
			err  error
		}, writers)
		for w := range writers {
			wg.Go(func() {
				st := backup.CollectorState{Generation: int64(round + 1), Owner: fmt.Sprintf("run-%d-%d", round, w)}
				results[w].etag, results[w].err = s.WriteCollectorState(ctx, testNS, testEnv, st, etag)
				if results[w].err == nil {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d (ETag %q): %d writers won, want exactly 1: %+v", round, etag, wins.Load(), results)
		}
		cur, curETag, err := s.ReadCollectorState(ctx, testNS, testEnv)
		if err != nil {
			t.Fatal(err)
		}
		for w, r := range results {
			switch {
			case r.err == nil && (r.etag != curETag || cur.Owner != fmt.Sprintf("run-%d-%d", round, w)):
				t.Errorf("round %d: the winner %d got ETag %q, but the state is %+v under %q", round, w, r.etag, cur, curETag)
			case r.err != nil && backup.CodeOf(r.err) != backup.CodeConflict:
				t.Errorf("round %d: loser %d got %v, want CONFLICT", round, w, r.err)
			}
		}
		etag = curETag
	}
}

// lostAnswer performs the first conditional Put Blob of the collector state, then answers 503 as if
// the answer had been lost on the way, so that the SDK sends it again. before, if set, runs before the
// retry; puts counts the conditional Put Blobs.
type lostAnswer struct {
	mu     sync.Mutex
	puts   int
	before func()
}

func (l *lostAnswer) Do(r *http.Request) (*http.Response, error) {
	conditional := r.Header.Get("If-Match") != "" || r.Header.Get("If-None-Match") != ""
	if r.Method != http.MethodPut || !strings.HasSuffix(r.URL.Path, "/"+collectorStateName) || !conditional {
		return http.DefaultClient.Do(r)
	}
	l.mu.Lock()
	l.puts++
	n := l.puts
	l.mu.Unlock()
	resp, err := http.DefaultClient.Do(r)
	if err != nil || n > 1 {
		return resp, err
	}
	resp.Body.Close()
	if l.before != nil {
		l.before()
	}
	return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"X-Ms-Error-Code": {"ServerBusy"}}, Body: http.NoBody, Request: r}, nil
}

// TestCollectorStateWriteWhoseAnswerWasLost: the SDK's retry of a write that succeeded fails its own
// condition; the write is still reported as the success it was, with the state's ETag. Had another
// writer come in between, it is a conflict.
func TestCollectorStateWriteWhoseAnswerWasLost(t *testing.T) {
	for _, create := range []bool{true, false} {
		lost := &lostAnswer{}
		s := newStoreWith(t, Options{Retry: fastRetries, Transport: lost})
		ctx := t.Context()
		etag := ""
		if !create {
			lost.puts = 1 // the first write goes through
			var err error
			if etag, err = s.WriteCollectorState(ctx, testNS, testEnv, backup.CollectorState{Generation: 1}, ""); err != nil {
				t.Fatal(err)
			}
			lost.puts = 0
		}
		mine := backup.CollectorState{Generation: 2, Owner: "run-1"}
		got, err := s.WriteCollectorState(ctx, testNS, testEnv, mine, etag)
		cur, curETag, _ := s.ReadCollectorState(ctx, testNS, testEnv)
		if err != nil || got != curETag || cur.Owner != "run-1" || lost.puts != 2 {
			t.Errorf("create %v: got %q, %v after %d tries; the state is %+v under %q", create, got, err, lost.puts, cur, curETag)
		}

		lost.puts = 0
		lost.before = func() {
			// Another writer, between the write whose answer was lost and its retry.
			if _, err := s.Client().UploadBuffer(ctx, s.FileStoreContainer(), Layout{}.CollectorState(testNS, testEnv), []byte(`{"generation":9,"owner":"run-9"}`), nil); err != nil {
				t.Error(err)
			}
		}
		_, err = s.WriteCollectorState(ctx, testNS, testEnv, backup.CollectorState{Generation: 3, Owner: "run-1"}, curETag)
		if backup.CodeOf(err) != backup.CodeConflict {
			t.Errorf("create %v: another writer between the try and its retry: %v, want CONFLICT", create, err)
		}
	}
}

// TestCollectorStateDeletedSinceIsAConflictOnAzure: Azure may answer an If-Match write of a blob that
// was deleted since with 404 BlobNotFound (Azurite answers 412); that too is a conflict, not a
// missing container nor a transient failure. (A fake server stands for Azure.)
func TestCollectorStateDeletedSinceIsAConflictOnAzure(t *testing.T) {
	srv := newFakeStorage(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-ms-error-code", "BlobNotFound")
		w.WriteHeader(http.StatusNotFound)
	})
	s, err := NewFromConnectionString(srv.connectionString(), "snapshots", Options{Retry: fastRetries})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteCollectorState(t.Context(), testNS, testEnv, backup.CollectorState{Generation: 2}, `"0x1"`); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("got %v, want CONFLICT", err)
	}
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("%d requests, want the write and one read of the state", n)
	}
}
