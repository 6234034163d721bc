package restorer

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// The files half against a real Azurite: each test has one, and each case a target container and a
// restore of its own.

const testNS = "demo"

var layout = blobstore.Layout{}

// doc is one file document of a snapshot; md5 says whether its store object (and its entry) has a
// Content-MD5, as an upload with Put Blob gives, or none, as Put Block List without one gives.
type doc struct {
	uuid string
	data []byte
	md5  bool
}

func docUUID(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }

func data(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

type world struct {
	t     *testing.T
	store *blobstore.Store
}

func newWorld(t *testing.T) *world {
	t.Helper()
	az := azurite.ForTest(t)
	// A small synchronous limit, so that both copy methods run (Azurite ends Copy Blob at once).
	s, err := blobstore.NewFromConnectionString(az.ConnectionString(), "snapshots", blobstore.Options{SyncCopyLimit: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureContainers(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &world{t: t, store: s}
}

func (w *world) files(blobs FileBlobs, workers int) *Files {
	return &Files{Blobs: blobs, Workers: workers, Log: zerolog.New(zerolog.NewTestWriter(w.t)).Level(zerolog.WarnLevel)}
}

// put writes a blob, with a Content-MD5 (Put Blob) or without (Put Block List).
func (w *world) put(container, name string, b []byte, withMD5 bool) {
	w.t.Helper()
	ctx := w.t.Context()
	if withMD5 {
		if _, err := w.store.Client().UploadBuffer(ctx, container, name, b, nil); err != nil {
			w.t.Fatal(err)
		}
		return
	}
	bb := w.store.Client().ServiceClient().NewContainerClient(container).NewBlockBlobClient(name)
	id := base64.StdEncoding.EncodeToString([]byte("block-0001"))
	if _, err := bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(b)), nil); err != nil {
		w.t.Fatal(err)
	}
	if _, err := bb.CommitBlockList(ctx, []string{id}, nil); err != nil {
		w.t.Fatal(err)
	}
}

// snapshot stores docs (in UUID order) in envID's file store and writes their manifest.
func (w *world) snapshot(envID string, docs []doc) backup.Snapshot {
	w.t.Helper()
	snap := backup.Snapshot{ID: uuid.NewString(), Namespace: testNS, EnvironmentID: envID}
	snap.ManifestPath = layout.SnapshotManifest(testNS, envID, snap.ID, 1)
	h := backup.ManifestHeader{Namespace: testNS, EnvironmentID: envID, SnapshotID: snap.ID, Files: len(docs)}
	var entries []backup.ManifestEntry
	for _, d := range docs {
		f := backup.SourceFile{UUID: d.uuid, Size: int64(len(d.data)), ETag: `"0x8D` + d.uuid[:8] + `"`}
		if d.md5 {
			sum := md5.Sum(d.data)
			f.MD5 = sum[:]
		}
		e := backup.ManifestEntry{UUID: d.uuid, Size: f.Size, MD5: f.MD5, Object: backup.ObjectName(f)}
		w.put(w.store.FileStoreContainer(), layout.StoreObject(testNS, envID, e.Object), d.data, d.md5)
		entries = append(entries, e)
		h.FilesBytes += f.Size
	}
	if err := w.store.WriteManifest(w.t.Context(), snap.ManifestPath, h, entries); err != nil {
		w.t.Fatal(err)
	}
	return snap
}

// target is an environment with a container of its own (file blobs "files/<uuid>") and a restore of
// snap into it.
func (w *world) target(envID string, snap backup.Snapshot) backup.RestoreWork {
	w.t.Helper()
	c := "t-" + uuid.NewString()
	if _, err := w.store.Client().CreateContainer(w.t.Context(), c, nil); err != nil {
		w.t.Fatal(err)
	}
	env := backup.Environment{ID: envID, Namespace: testNS, Files: backup.FileLocation{Container: c, Prefix: "files/"}}
	r := backup.Restore{ID: uuid.NewString(), Namespace: testNS, EnvironmentID: envID, SourceEnvironmentID: snap.EnvironmentID, SourceSnapshotID: snap.ID}
	return backup.RestoreWork{Restore: r, Target: env, Snapshot: snap}
}

// blobState is what a blob is: its size, Content-MD5 (hex, "" for none) and bytes.
type blobState struct {
	Size  int64
	MD5   string
	Bytes string
}

func (w *world) contents(container, prefix string) map[string]blobState {
	w.t.Helper()
	out := map[string]blobState{}
	err := w.store.ListFiles(w.t.Context(), container, prefix, func(f blobstore.FileInfo) error {
		resp, err := w.store.Client().DownloadStream(w.t.Context(), container, f.Name, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out[f.Name] = blobState{Size: f.Size, MD5: hex.EncodeToString(f.ContentMD5), Bytes: string(b)}
		return err
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

func (w *world) wantContents(what, container string, want map[string]blobState) {
	w.t.Helper()
	got := w.contents(container, "")
	if maps.Equal(got, want) {
		return
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[name]; !ok {
			w.t.Errorf("%s: %s is missing", what, name)
		} else if g != want[name] {
			w.t.Errorf("%s: %s is %d bytes with MD5 %q, want %d bytes with MD5 %q (bytes equal: %v)", what, name, g.Size, g.MD5, want[name].Size, want[name].MD5, g.Bytes == want[name].Bytes)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			w.t.Errorf("%s: %s should not be there", what, name)
		}
	}
}

// restored is the container as a complete restore of docs leaves it: their blobs with the snapshot's
// bytes (and its Content-MD5, none where the snapshot has none), every other blob as it was.
func restored(before map[string]blobState, docs []doc, unchanged ...string) map[string]blobState {
	out := map[string]blobState{}
	maps.Copy(out, before)
	for _, d := range docs {
		if slices.Contains(unchanged, d.uuid) {
			continue
		}
		st := blobState{Size: int64(len(d.data)), Bytes: string(d.data)}
		if d.md5 {
			sum := md5.Sum(d.data)
			st.MD5 = hex.EncodeToString(sum[:])
		}
		out["files/"+d.uuid] = st
	}
	return out
}

func (w *world) etag(container, name string) string {
	w.t.Helper()
	var etag string
	_ = w.store.ListFiles(w.t.Context(), container, name, func(f blobstore.FileInfo) error {
		if f.Name == name {
			etag = string(f.ETag)
		}
		return nil
	})
	return etag
}

// mixed is a snapshot of 7 files and a target holding some of them: u1, u2 absent (added); u3 other
// bytes, u4 the same bytes without a Content-MD5, u5 the same bytes where the snapshot's has none, u7
// another size (all replaced); u6 the same bytes, both with a Content-MD5 (unchanged); and blobs the
// snapshot does not name, in and out of the prefix (left alone).
func mixed() []doc {
	return []doc{
		{docUUID(1), data(3000, 1), true}, {docUUID(2), data(500, 2), false}, {docUUID(3), data(2000, 3), true},
		{docUUID(4), data(700, 4), true}, {docUUID(5), data(1500, 5), false}, {docUUID(6), data(900, 6), true},
		{docUUID(7), data(1200, 7), true},
	}
}

func (w *world) fillMixed(container string, docs []doc) map[string]blobState {
	w.put(container, "files/"+docs[2].uuid, data(2000, 99), true)
	w.put(container, "files/"+docs[3].uuid, docs[3].data, false)
	w.put(container, "files/"+docs[4].uuid, docs[4].data, true)
	w.put(container, "files/"+docs[5].uuid, docs[5].data, true)
	w.put(container, "files/"+docs[6].uuid, data(40, 7), true)
	w.put(container, "files/"+docUUID(100), []byte("not in the snapshot"), true)
	w.put(container, "files/"+docs[0].uuid+".thumb", []byte("a neighbour's name"), true)
	w.put(container, "elsewhere/"+docs[0].uuid, []byte("outside the prefix"), false)
	return w.contents(container, "")
}

const (
	envA = "0d3e301f-5551-46f8-ad44-8de2be084c95"
	envB = "1fbdf930-67f9-47ee-b30e-e84c4c983e85"
)

func wantOutcome(t *testing.T, got FilesOutcome, err error, want FilesOutcome) {
	t.Helper()
	if err != nil || got != want {
		t.Fatalf("place: %+v, %v; want %+v", got, err, want)
	}
}

var mixedOutcome = FilesOutcome{Added: 2, Replaced: 4, Unchanged: 1, Bytes: 3000 + 500 + 2000 + 700 + 1500 + 1200}

// TestPlaceIntoAFreshTarget: every file is added, copied from the store, and checks; a snapshot with
// no file touches nothing (not even a container that does not exist); a one-archive snapshot is
// refused.
func TestPlaceIntoAFreshTarget(t *testing.T) {
	w := newWorld(t)
	docs := mixed()
	work := w.target(envA, w.snapshot(envA, docs))
	var mu sync.Mutex
	var seen [][2]int
	out, err := w.files(w.store, 0).Place(t.Context(), work, func(done, total int) {
		mu.Lock()
		seen = append(seen, [2]int{done, total})
		mu.Unlock()
	})
	wantOutcome(t, out, err, FilesOutcome{Added: 7, Bytes: 3000 + 500 + 2000 + 700 + 1500 + 900 + 1200})
	w.wantContents("restored", work.Target.Files.Container, restored(nil, docs))
	if len(seen) == 0 || seen[len(seen)-1] != [2]int{7, 7} {
		t.Errorf("progress %v, want it to end at 7 of 7", seen)
	}
	if problems, err := w.files(w.store, 0).Check(t.Context(), work); err != nil || problems != nil {
		t.Errorf("check: %v, %v", problems, err)
	}
	if undo := w.contents(w.store.SnapshotsContainer(), layout.RestoreUndoPrefix(testNS, envA, work.Restore.ID)); len(undo) != 0 {
		t.Errorf("nothing was replaced, yet the undo area holds %v", slices.Collect(maps.Keys(undo)))
	}

	empty := w.target(envA, w.snapshot(envA, nil))
	empty.Target.Files.Container = "no-such-container"
	if out, err := w.files(w.store, 0).Place(t.Context(), empty, nil); err != nil || out != (FilesOutcome{}) {
		t.Errorf("no files: %+v, %v", out, err)
	}
	if err := w.files(w.store, 0).Revert(t.Context(), empty); err != nil {
		t.Errorf("revert of a restore without a plan: %v", err)
	}
	old := work
	old.Snapshot.ManifestPath, old.Snapshot.BlobPath = "", "x/attempt-01.tar.gz"
	if _, err := w.files(w.store, 0).Place(t.Context(), old, nil); backup.CodeOf(err) != backup.CodeInvalidState {
		t.Errorf("one-archive snapshot: %v, want INVALID_STATE", err)
	}
}

// TestPlaceDecidesEachFileAndRevertGivesTheContainerBack: same bytes are left (not even rewritten),
// others saved and replaced, absent ones added, unrelated blobs untouched; Revert after the complete
// Place gives back exactly the container as it was, and again changes nothing.
func TestPlaceDecidesEachFileAndRevertGivesTheContainerBack(t *testing.T) {
	w := newWorld(t)
	docs := mixed()
	work := w.target(envA, w.snapshot(envA, docs))
	c := work.Target.Files.Container
	before := w.fillMixed(c, docs)
	unchangedETag := w.etag(c, "files/"+docs[5].uuid)
	f := w.files(w.store, 0)
	out, err := f.Place(t.Context(), work, nil)
	wantOutcome(t, out, err, mixedOutcome)
	w.wantContents("restored", c, restored(before, docs, docs[5].uuid))
	if got := w.etag(c, "files/"+docs[5].uuid); got != unchangedETag {
		t.Errorf("the unchanged file was rewritten (ETag %s, was %s)", got, unchangedETag)
	}
	undo := w.contents(w.store.SnapshotsContainer(), layout.RestoreUndoPrefix(testNS, envA, work.Restore.ID))
	for _, i := range []int{2, 3, 4, 6} {
		name := "files/" + docs[i].uuid
		if got := undo[layout.RestoreUndo(testNS, envA, work.Restore.ID, name)]; got != before[name] {
			t.Errorf("the saved %s is %d bytes, MD5 %q; want the blob it replaced", name, got.Size, got.MD5)
		}
	}
	if len(undo) != 4 {
		t.Errorf("the undo area holds %d blobs, want the 4 replaced", len(undo))
	}
	if problems, err := f.Check(t.Context(), work); err != nil || problems != nil {
		t.Errorf("check: %v, %v", problems, err)
	}
	for i := range 2 {
		if err := f.Revert(t.Context(), work); err != nil {
			t.Fatalf("revert %d: %v", i+1, err)
		}
		w.wantContents(fmt.Sprintf("after revert %d", i+1), c, before)
	}
}

// faulty fails the failAt-th copy (counting from 1): before it is made, or, with after, once it is
// made (a crash before its answer came, or an answer lost). With losePlan the plan is written and
// the write then fails. afterCopy, if set, runs after each copy that succeeded.
type faulty struct {
	*blobstore.Store
	failAt    int
	after     bool
	losePlan  bool
	afterCopy func(dst blobstore.BlobRef)

	mu     sync.Mutex
	copies int
}

var errInjected = backup.Errorf(backup.CodeTransient, "injected failure")

func (f *faulty) CopyBlob(ctx context.Context, src, dst blobstore.BlobRef, want blobstore.CopyBlobCheck) (blobstore.CopyResult, error) {
	f.mu.Lock()
	f.copies++
	n := f.copies
	f.mu.Unlock()
	if n == f.failAt && !f.after {
		return blobstore.CopyResult{}, errInjected
	}
	res, err := f.Store.CopyBlob(ctx, src, dst, want)
	if n == f.failAt && f.after {
		return blobstore.CopyResult{}, errInjected
	}
	if err == nil && f.afterCopy != nil {
		f.afterCopy(dst)
	}
	return res, err
}

func (f *faulty) WriteRestorePlan(ctx context.Context, namespace, envID string, h blobstore.RestorePlanHeader, entries []blobstore.RestorePlanEntry) (bool, error) {
	created, err := f.Store.WriteRestorePlan(ctx, namespace, envID, h, entries)
	if err == nil && f.losePlan {
		return false, errInjected
	}
	return created, err
}

// TestPlaceResumesAfterAFailureAtAnyPoint: whatever copy fails (before or after it is made; the mixed
// restore makes 10, 2 for each replaced file), or the plan's write, a second Place finishes the
// restore exactly, and Revert then gives back exactly the container as it was; Revert right after the
// failure does too.
func TestPlaceResumesAfterAFailureAtAnyPoint(t *testing.T) {
	w := newWorld(t)
	docs := mixed()
	snap := w.snapshot(envA, docs)
	type fault struct {
		at       int
		after    bool
		losePlan bool
	}
	var faults []fault
	for k := 1; k <= 10; k++ {
		faults = append(faults, fault{at: k}, fault{at: k, after: true})
	}
	faults = append(faults, fault{losePlan: true})
	for _, fl := range faults {
		name := fmt.Sprintf("copy %d fails", fl.at)
		if fl.after {
			name = fmt.Sprintf("copy %d is made, then fails", fl.at)
		} else if fl.losePlan {
			name = "the plan is written, then its write fails"
		}
		t.Run(name, func(t *testing.T) {
			w := &world{t: t, store: w.store}
			for _, revertAtOnce := range []bool{false, true} {
				work := w.target(envA, snap)
				c := work.Target.Files.Container
				before := w.fillMixed(c, docs)
				// One worker: the k-th copy is the same one in every run.
				_, err := w.files(&faulty{Store: w.store, failAt: fl.at, after: fl.after, losePlan: fl.losePlan}, 1).Place(t.Context(), work, nil)
				if !errors.Is(err, errInjected) {
					t.Fatalf("the injected failure was not returned: %v", err)
				}
				f := w.files(w.store, 0)
				if !revertAtOnce {
					out, err := f.Place(t.Context(), work, nil)
					wantOutcome(t, out, err, mixedOutcome)
					w.wantContents("after the second place", c, restored(before, docs, docs[5].uuid))
					if problems, err := f.Check(t.Context(), work); err != nil || problems != nil {
						t.Errorf("check: %v, %v", problems, err)
					}
				}
				for range 2 {
					if err := f.Revert(t.Context(), work); err != nil {
						t.Fatalf("revert: %v", err)
					}
					w.wantContents(fmt.Sprintf("after revert (at once: %v)", revertAtOnce), c, before)
				}
			}
		})
	}
}

// TestCheckReportsMissingAndAlteredFiles: a blob deleted, one rewritten with other bytes of the same
// size, one of another size; and at most 20 problems named.
func TestCheckReportsMissingAndAlteredFiles(t *testing.T) {
	w := newWorld(t)
	docs := mixed()
	work := w.target(envA, w.snapshot(envA, docs))
	c := work.Target.Files.Container
	f := w.files(w.store, 0)
	if _, err := f.Place(t.Context(), work, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.Client().DeleteBlob(t.Context(), c, "files/"+docs[0].uuid, nil); err != nil {
		t.Fatal(err)
	}
	w.put(c, "files/"+docs[2].uuid, data(2000, 50), true)
	w.put(c, "files/"+docs[4].uuid, data(10, 50), true)
	w.put(c, "files/"+docs[5].uuid, docs[5].data, false) // same bytes, its Content-MD5 gone
	problems, err := f.Check(t.Context(), work)
	want := []string{
		"file " + docs[0].uuid + " is missing",
		"file " + docs[2].uuid + " has other bytes than the snapshot's (its Content-MD5 differs)",
		"file " + docs[4].uuid + " has 10 bytes where the snapshot's has 1500",
		"file " + docs[5].uuid + " has no Content-MD5 where the snapshot's has one",
	}
	if err != nil || !slices.Equal(problems, want) {
		t.Errorf("check: %q, %v; want %q", problems, err, want)
	}

	var many []doc
	for i := range 25 {
		many = append(many, doc{docUUID(200 + i), data(10, byte(i)), true})
	}
	none := w.target(envA, w.snapshot(envA, many))
	problems, err = f.Check(t.Context(), none)
	if err != nil || len(problems) != 21 || problems[0] != "file "+many[0].uuid+" is missing" || problems[20] != "and 5 more" {
		t.Errorf("check of 25 missing files: %q, %v", problems, err)
	}
}

// TestPlaceFromAnotherEnvironmentsSnapshot: the files come from the snapshot's environment's store;
// the plan and the undo area are the target's.
func TestPlaceFromAnotherEnvironmentsSnapshot(t *testing.T) {
	w := newWorld(t)
	docs := mixed()
	work := w.target(envB, w.snapshot(envA, docs))
	c := work.Target.Files.Container
	before := w.fillMixed(c, docs)
	f := w.files(w.store, 0)
	out, err := f.Place(t.Context(), work, nil)
	wantOutcome(t, out, err, mixedOutcome)
	w.wantContents("restored", c, restored(before, docs, docs[5].uuid))
	if n := len(w.contents(w.store.FileStoreContainer(), layout.StorePrefix(testNS, envB))); n != 0 {
		t.Errorf("the target's file store has %d objects; the restore must not make any", n)
	}
	if n := len(w.contents(w.store.SnapshotsContainer(), layout.RestorePrefix(testNS, envB, work.Restore.ID))); n != 5 {
		t.Errorf("the target's restore area holds %d blobs, want the plan and 4 saved files", n)
	}
	if err := f.Revert(t.Context(), work); err != nil {
		t.Fatal(err)
	}
	w.wantContents("reverted", c, before)
}

// TestSecondPlaceFollowsThePlan: after a first Place that wrote its plan and failed, a second one
// follows that plan whatever the container holds now: a file planned unchanged and deleted since is
// not added, a file planned added that appeared with the snapshot's bytes counts as added; and a blob
// planned replaced that someone rewrote is never overwritten (it was not saved), nor touched by the
// rollback.
func TestSecondPlaceFollowsThePlan(t *testing.T) {
	w := newWorld(t)
	docs := mixed()
	snap := w.snapshot(envA, docs)
	failFirst := &faulty{Store: w.store, failAt: 1}

	work := w.target(envA, snap)
	c := work.Target.Files.Container
	w.fillMixed(c, docs)
	if _, err := w.files(failFirst, 1).Place(t.Context(), work, nil); !errors.Is(err, errInjected) {
		t.Fatal(err)
	}
	if _, err := w.store.Client().DeleteBlob(t.Context(), c, "files/"+docs[5].uuid, nil); err != nil {
		t.Fatal(err)
	}
	w.put(c, "files/"+docs[1].uuid, docs[1].data, false)
	f := w.files(w.store, 0)
	out, err := f.Place(t.Context(), work, nil)
	wantOutcome(t, out, err, mixedOutcome)
	problems, err := f.Check(t.Context(), work)
	if err != nil || !slices.Equal(problems, []string{"file " + docs[5].uuid + " is missing"}) {
		t.Errorf("check: %q, %v; want only the deleted unchanged file missing", problems, err)
	}

	work = w.target(envA, snap)
	c = work.Target.Files.Container
	before := w.fillMixed(c, docs)
	failFirst.copies = 0
	if _, err := w.files(failFirst, 1).Place(t.Context(), work, nil); !errors.Is(err, errInjected) {
		t.Fatal(err)
	}
	foreign := data(2000, 77)
	w.put(c, "files/"+docs[2].uuid, foreign, true)
	_, err = w.files(w.store, 1).Place(t.Context(), work, nil)
	if backup.CodeOf(err) != backup.CodeInvalidState || !strings.Contains(err.Error(), docs[2].uuid) || !strings.Contains(err.Error(), "not overwritten") {
		t.Errorf("a blob rewritten after planning: %v, want INVALID_STATE naming it", err)
	}
	if err := f.Revert(t.Context(), work); err != nil {
		t.Fatal(err)
	}
	foreignBefore := maps.Clone(before)
	sum := md5.Sum(foreign)
	foreignBefore["files/"+docs[2].uuid] = blobState{Size: 2000, MD5: hex.EncodeToString(sum[:]), Bytes: string(foreign)}
	w.wantContents("reverted", c, foreignBefore)

	// Rewritten between its save and its overwrite: the overwrite (If-Match the planned version) does
	// not happen; the rollback puts back what the plan saw.
	work = w.target(envA, snap)
	c = work.Target.Files.Container
	before = w.fillMixed(c, docs)
	racing := &faulty{Store: w.store, afterCopy: func(dst blobstore.BlobRef) {
		if dst.Container == w.store.SnapshotsContainer() && strings.HasSuffix(dst.Name, docs[2].uuid) {
			w.put(c, "files/"+docs[2].uuid, foreign[:100], true)
		}
	}}
	_, err = w.files(racing, 1).Place(t.Context(), work, nil)
	if backup.CodeOf(err) != backup.CodeInvalidState || !strings.Contains(err.Error(), docs[2].uuid) || !strings.Contains(err.Error(), "changed during the restore") {
		t.Errorf("a blob rewritten after it was saved: %v, want INVALID_STATE naming it", err)
	}
	if got := w.contents(c, "files/"+docs[2].uuid)["files/"+docs[2].uuid]; got.Bytes != string(foreign[:100]) {
		t.Errorf("the blob rewritten after it was saved was overwritten")
	}
	if err := f.Revert(t.Context(), work); err != nil {
		t.Fatal(err)
	}
	w.wantContents("reverted after the race", c, before)
}

// TestDiscardDeletesTheRestoreArea: the plan and the saved files go, nothing else; after it there is
// nothing to revert.
func TestDiscardDeletesTheRestoreArea(t *testing.T) {
	w := newWorld(t)
	docs := mixed()
	snap := w.snapshot(envA, docs)
	work, other := w.target(envA, snap), w.target(envA, snap)
	f := w.files(w.store, 0)
	for _, x := range []backup.RestoreWork{work, other} {
		w.fillMixed(x.Target.Files.Container, docs)
		if _, err := f.Place(t.Context(), x, nil); err != nil {
			t.Fatal(err)
		}
	}
	restoredState := w.contents(work.Target.Files.Container, "")
	for range 2 {
		if err := f.Discard(t.Context(), work); err != nil {
			t.Fatal(err)
		}
	}
	if left := w.contents(w.store.SnapshotsContainer(), layout.RestorePrefix(testNS, envA, work.Restore.ID)); len(left) != 0 {
		t.Errorf("left in the restore area: %v", slices.Collect(maps.Keys(left)))
	}
	if n := len(w.contents(w.store.SnapshotsContainer(), layout.RestorePrefix(testNS, envA, other.Restore.ID))); n != 5 {
		t.Errorf("another restore's area holds %d blobs, want its 5", n)
	}
	if err := f.Revert(t.Context(), work); err != nil {
		t.Fatal(err)
	}
	w.wantContents("revert after discard", work.Target.Files.Container, restoredState)
}
