package blobstore

import (
	"bytes"
	"crypto/md5"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	"github.com/mxazure/backups/internal/backup"
)

const testRestore = "01a233b3-a5e1-7e4b-9f2c-0a0b0c0d0e0f"

func appFile(name string) BlobRef { return BlobRef{"app-files", name} }

// TestCopyBlobOverwritesOnlyTheVersionSeen: with Overwrite, the copy replaces the destination only
// while it has that ETag; a destination changed since is reported as existing (checked like a copy,
// ErrMismatch when it is not the source's bytes) and left as it is; one deleted since is
// ErrDestinationChanged.
func TestCopyBlobOverwritesOnlyTheVersionSeen(t *testing.T) {
	bothMethods(t, Options{}, func(t *testing.T, s *Store) {
		data := pattern(3000)
		src := upload(t, s, "src", data)
		old := upload(t, s, "dst", bytes.Repeat([]byte("o"), 10))
		res, err := s.CopyBlob(t.Context(), appFile("src"), appFile("dst"), CopyBlobCheck{CopyCheck: src.Check(), Overwrite: old.ETag})
		if err != nil || res.Existed || res.Size != 3000 || res.ETag == old.ETag {
			t.Fatalf("overwrite: %+v, %v", res, err)
		}
		if got, _ := storedIn(t, s, "app-files", "dst"); !bytes.Equal(got, data) {
			t.Errorf("the destination holds %d bytes, not the source's", len(got))
		}
		again, err := s.CopyBlob(t.Context(), appFile("src"), appFile("dst"), CopyBlobCheck{CopyCheck: src.Check(), Overwrite: old.ETag})
		if err != nil || !again.Existed || again.ETag != res.ETag {
			t.Errorf("overwrite of a version gone: %+v, %v; want the destination reported as existing", again, err)
		}
		other := upload(t, s, "other", bytes.Repeat([]byte("x"), 3000))
		mismatch, err := s.CopyBlob(t.Context(), appFile("other"), appFile("dst"), CopyBlobCheck{CopyCheck: other.Check(), Overwrite: old.ETag})
		if !errors.Is(err, ErrMismatch) || !mismatch.Existed {
			t.Errorf("other bytes over a version gone: %+v, %v; want ErrMismatch", mismatch, err)
		}
		if got, _ := storedIn(t, s, "app-files", "dst"); !bytes.Equal(got, data) {
			t.Errorf("a destination changed since was overwritten")
		}
		cur := listed(t, s, "dst")
		if _, err := s.Client().DeleteBlob(t.Context(), "app-files", "dst", nil); err != nil {
			t.Fatal(err)
		}
		_, err = s.CopyBlob(t.Context(), appFile("src"), appFile("dst"), CopyBlobCheck{CopyCheck: src.Check(), Overwrite: cur.ETag})
		if !errors.Is(err, ErrDestinationChanged) || backup.CodeOf(err) != backup.CodeConflict {
			t.Errorf("overwrite of a deleted destination: %v, want ErrDestinationChanged", err)
		}
		if _, ok := storedIn(t, s, "app-files", "dst"); ok {
			t.Errorf("the copy made the destination anew")
		}
	})
}

// TestCopyBlobRefusesASourceChangedBeforeOverwriting: the source rewritten after its listing is
// ErrSourceChanged and the destination keeps its bytes.
func TestCopyBlobRefusesASourceChangedBeforeOverwriting(t *testing.T) {
	bothMethods(t, Options{}, func(t *testing.T, s *Store) {
		seen := upload(t, s, "src", pattern(3000))
		upload(t, s, "src", bytes.Repeat([]byte("n"), 3000))
		old := upload(t, s, "dst", []byte("old bytes"))
		_, err := s.CopyBlob(t.Context(), appFile("src"), appFile("dst"), CopyBlobCheck{CopyCheck: seen.Check(), Overwrite: old.ETag})
		if !errors.Is(err, ErrSourceChanged) {
			t.Errorf("got %v, want ErrSourceChanged", err)
		}
		if got, _ := storedIn(t, s, "app-files", "dst"); string(got) != "old bytes" {
			t.Errorf("the destination was changed: %q", got)
		}
	})
}

// TestCopyBlobCarriesContentMD5: what Azurite does with the Content-MD5 property, which the restore's
// checks and its rollback rely on. Both copies, between containers too, give the destination the
// source's Content-MD5; a source without one leaves the destination without one, also over a blob
// that had one (as Azure documents for Copy Blob).
func TestCopyBlobCarriesContentMD5(t *testing.T) {
	bothMethods(t, Options{}, func(t *testing.T, s *Store) {
		data := pattern(3000)
		sum := md5.Sum(data)
		src := upload(t, s, "with-md5", data)
		undo := BlobRef{s.SnapshotsContainer(), Layout{}.RestoreUndo(testNS, testEnv, testRestore, "files/a")}
		if _, err := s.CopyBlob(t.Context(), appFile("with-md5"), undo, CopyBlobCheck{CopyCheck: src.Check()}); err != nil {
			t.Fatal(err)
		}
		var got []FileInfo
		if err := s.ListFiles(t.Context(), s.SnapshotsContainer(), undo.Name, func(f FileInfo) error { got = append(got, f); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !bytes.Equal(got[0].ContentMD5, sum[:]) {
			t.Errorf("the copy in the snapshots container lists %+v, want the source's Content-MD5 %x", got, sum)
		}
		putBlockList(t, s, "app-files", "without-md5", bytes.Repeat([]byte("b"), 2000))
		bare := listed(t, s, "without-md5")
		dst := upload(t, s, "dst", data)
		if _, err := s.CopyBlob(t.Context(), appFile("without-md5"), appFile("dst"), CopyBlobCheck{CopyCheck: bare.Check(), Overwrite: dst.ETag}); err != nil {
			t.Fatal(err)
		}
		if after := listed(t, s, "dst"); after.ContentMD5 != nil || after.Size != 2000 {
			t.Errorf("over a blob with an MD5, a copy of one without lists %d bytes and MD5 %x, want none", after.Size, after.ContentMD5)
		}
	})
}

// TestCopyBlobCopiesAgainOverWhatAFailedCopyLeft: an overwrite whose destination holds a failed copy
// (an earlier attempt's, over the version it was to overwrite) copies again over it, If-Match its
// ETag, rather than taking it for a destination changed by someone else.
func TestCopyBlobCopiesAgainOverWhatAFailedCopyLeft(t *testing.T) {
	script := &copyScript{dst: "store/a", head: func(n int) blob.CopyStatusType {
		if n == 1 {
			return blob.CopyStatusTypeFailed
		}
		return ""
	}}
	s := newStoreWith(t, Options{Transport: script})
	dst := BlobRef{s.FileStoreContainer(), "store/a"}
	seen := putStore(t, s, "store/a", []byte("planned version"))
	putStore(t, s, "store/a", []byte("what the failed copy left"))
	data := pattern(3000)
	res, err := s.CopyBlob(t.Context(), appFile("src"), dst, CopyBlobCheck{CopyCheck: upload(t, s, "src", data).Check(), Overwrite: seen})
	if err != nil || res.Existed {
		t.Fatalf("got %+v, %v; want a copy over what the failed copy left", res, err)
	}
	if got, _ := stored(t, s, "store/a"); !bytes.Equal(got, data) {
		t.Errorf("the destination holds %q", got)
	}
}

// TestCopyBlobOverwriteKeepsWhatAnAbortedCopyLeft: an overwrite that is aborted (here pending past
// AsyncCopyTimeout) leaves its destination for a later copy over it, where a copy to an absent
// destination deletes it: the old bytes went with the copy either way.
func TestCopyBlobOverwriteKeepsWhatAnAbortedCopyLeft(t *testing.T) {
	script := &copyScript{dst: "store/big", start: blob.CopyStatusTypePending, head: pendingFor(-1)}
	s := newStoreWith(t, fastPolls(Options{SyncCopyLimit: 1 << 10, Transport: script, AsyncCopyTimeout: 200 * time.Millisecond}))
	dst := BlobRef{s.FileStoreContainer(), "store/big"}
	seen := putStore(t, s, "store/big", []byte("old"))
	_, err := s.CopyBlob(t.Context(), appFile("big"), dst, CopyBlobCheck{CopyCheck: upload(t, s, "big", pattern(4<<10)).Check(), Overwrite: seen})
	if backup.CodeOf(err) != backup.CodeTransient || !strings.Contains(err.Error(), "did not end within") {
		t.Errorf("got %v, want a transient timeout", err)
	}
	if _, aborts := script.stats(); len(aborts) != 1 {
		t.Errorf("aborts %v, want one", aborts)
	}
	if _, ok := stored(t, s, "store/big"); !ok {
		t.Errorf("the destination of the aborted overwrite was deleted")
	}
}

// putStore uploads a blob of the file-store container without a copy (which a script would see).
func putStore(t *testing.T, s *Store, name string, data []byte) azcore.ETag {
	t.Helper()
	resp, err := s.Client().UploadBuffer(t.Context(), s.FileStoreContainer(), name, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	return *resp.ETag
}

// TestRestoreAreaPaths: the paths, and that nothing parses them as a snapshot's blobs.
func TestRestoreAreaPaths(t *testing.T) {
	l := Layout{}
	area := ".restores/" + testNS + "/" + testEnv + "/" + testRestore + "/"
	for got, want := range map[string]string{
		l.RestorePrefix(testNS, testEnv, testRestore):            area,
		l.RestorePlan(testNS, testEnv, testRestore):              area + "plan.json.gz",
		l.RestoreUndo(testNS, testEnv, testRestore, "files/abc"): area + "undo/files/abc",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	// Even an undo blob whose name looks like a snapshot's blob.
	for _, p := range []string{l.RestorePlan(testNS, testEnv, testRestore), l.RestoreUndo(testNS, testEnv, testRestore, "attempt-01.tar.gz")} {
		if _, _, _, ok := l.ParseSnapshotBlob(p); ok || l.IsManifest(p) {
			t.Errorf("%s is parsed as a snapshot's blob", p)
		}
	}
}

// TestWalkArchivesSkipsRestoreAreas: the sweeper's walk never sees a restore's plan or saved files.
func TestWalkArchivesSkipsRestoreAreas(t *testing.T) {
	s := newStoreWith(t, Options{})
	ctx := t.Context()
	l := Layout{}
	snapshot := l.SnapshotManifest(testNS, testEnv, testSnap, 1)
	if err := s.WriteManifest(ctx, snapshot, headerFor(nil), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteRestorePlan(ctx, testNS, testEnv, planHeader(nil), nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"files/a", testNS + "/" + testEnv + "/" + testSnap + "/attempt-02.db.backup.gz"} {
		if _, err := s.Client().UploadBuffer(ctx, s.SnapshotsContainer(), l.RestoreUndo(testNS, testEnv, testRestore, name), []byte("saved"), nil); err != nil {
			t.Fatal(err)
		}
	}
	var walked []string
	if err := s.WalkArchives(ctx, func(b backup.ArchiveBlob) error { walked = append(walked, b.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(walked, []string{snapshot}) {
		t.Errorf("walked %v, want only the snapshot's manifest", walked)
	}
}

// planEntries are n entries of fileUUID(1..n): added, replaced and unchanged in turn.
func planEntries(n int) []RestorePlanEntry {
	out := make([]RestorePlanEntry, n)
	for i, m := range testEntries(n) {
		e := RestorePlanEntry{UUID: m.UUID, Action: PlanAdd, Size: m.Size, MD5: m.MD5, Object: m.Object}
		switch {
		case i%3 == 1:
			e.Action, e.ETag, e.OldSize, e.OldMD5 = PlanReplace, `"0x8D1"`, 7, nil
		case i%3 == 2:
			e.Action, e.ETag, e.OldSize, e.OldMD5 = PlanUnchanged, `"0x8D2"`, m.Size, m.MD5
		}
		out[i] = e
	}
	return out
}

func planHeader(entries []RestorePlanEntry) RestorePlanHeader {
	h := RestorePlanHeader{RestoreID: testRestore, Container: "app-files", Prefix: "files/", SourceEnvironmentID: testEnv, SnapshotID: testSnap, Files: len(entries)}
	for _, e := range entries {
		h.FilesBytes += e.Size
	}
	return h
}

func readPlan(t *testing.T, s *Store, restoreID string) (RestorePlanHeader, []RestorePlanEntry, error) {
	t.Helper()
	var got []RestorePlanEntry
	h, err := s.ReadRestorePlan(t.Context(), testNS, testEnv, restoreID, func(e RestorePlanEntry) error { got = append(got, e); return nil })
	return h, got, err
}

// TestRestorePlanIsWrittenOnce: a plan reads back as written; a second write leaves the first, and
// says so without an error; a restore without a plan is NOT_FOUND.
func TestRestorePlanIsWrittenOnce(t *testing.T) {
	s := newStoreWith(t, Options{})
	if _, _, err := readPlan(t, s, testRestore); !backup.IsNotFound(err) {
		t.Errorf("no plan: got %v, want NOT_FOUND", err)
	}
	entries := planEntries(7)
	created, err := s.WriteRestorePlan(t.Context(), testNS, testEnv, planHeader(entries), entries)
	if err != nil || !created {
		t.Fatalf("write: %v, %v", created, err)
	}
	created, err = s.WriteRestorePlan(t.Context(), testNS, testEnv, planHeader(entries[:2]), entries[:2])
	if err != nil || created {
		t.Errorf("second write: created %v, %v; want the first plan kept", created, err)
	}
	h, got, err := readPlan(t, s, testRestore)
	want := planHeader(entries)
	want.Format, want.Version = RestorePlanFormat, RestorePlanVersion
	if err != nil || h != want || len(got) != len(entries) {
		t.Fatalf("read: %+v, %d entries, %v", h, len(got), err)
	}
	for i := range got {
		if g, w := got[i], entries[i]; g.UUID != w.UUID || g.Action != w.Action || g.Size != w.Size || !bytes.Equal(g.MD5, w.MD5) ||
			g.Object != w.Object || g.ETag != w.ETag || g.OldSize != w.OldSize || !bytes.Equal(g.OldMD5, w.OldMD5) {
			t.Errorf("entry %d: %+v, want %+v", i, g, w)
		}
	}
	if _, _, err := readPlan(t, s, "01a233b3-a5e1-7e4b-9f2c-0a0b0c0d0e10"); !backup.IsNotFound(err) {
		t.Errorf("another restore's plan: %v, want NOT_FOUND", err)
	}
}

// TestRestorePlanWriterRefusesWhatTheReaderWould: nothing is stored.
func TestRestorePlanWriterRefusesWhatTheReaderWould(t *testing.T) {
	s := newStoreWith(t, Options{})
	entries := planEntries(3)
	entries[0].ETag = `"0x1"` // an added file naming a blob it replaces
	_, err := s.WriteRestorePlan(t.Context(), testNS, testEnv, planHeader(entries), entries)
	if !errors.Is(err, ErrRestorePlanDamaged) || backup.CodeOf(err) != backup.CodeInternal || !strings.Contains(err.Error(), "entry 1") {
		t.Errorf("got %v", err)
	}
	if _, _, err := readPlan(t, s, testRestore); !backup.IsNotFound(err) {
		t.Errorf("a refused plan was stored: %v", err)
	}
}

// TestRestorePlanReaderIsStrict: every way a plan can be damaged is ErrRestorePlanDamaged, never fewer
// entries, and says what is wrong.
func TestRestorePlanReaderIsStrict(t *testing.T) {
	entries := planEntries(4)
	var good bytes.Buffer
	if err := encodePlan(&good, planHeader(entries), entries); err != nil {
		t.Fatal(err)
	}
	// text is a plan's text written here, not by the encoder, so that it can be what the encoder refuses.
	text := func(h RestorePlanHeader, es []RestorePlanEntry) string {
		h.Format, h.Version = RestorePlanFormat, RestorePlanVersion
		vs := make([]any, len(es))
		for i, e := range es {
			vs[i] = e
		}
		return lines(t, h, vs...)
	}
	plain := text(planHeader(entries), entries)
	ls := strings.SplitAfter(plain, "\n")
	swapped := slices.Clone(ls)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	unchanged := slices.Clone(entries)
	unchanged[2].OldMD5 = bytes.Repeat([]byte{9}, md5.Size)
	for name, c := range map[string]struct {
		data []byte
		why  string
	}{
		"not gzip":        {[]byte("plan"), "not gzip-compressed"},
		"cut short":       {good.Bytes()[:good.Len()-12], "cut short"},
		"trailing data":   {append(slices.Clone(good.Bytes()), 0), "follows the end"},
		"another version": {gzipped(strings.Replace(plain, `"version":1`, `"version":2`, 1)), "version 2"},
		"unknown field":   {gzipped(strings.Replace(plain, `{`, `{"extra":1,`, 1)), "not a plan header"},
		"another restore": {gzipped(strings.Replace(plain, testRestore, "01a233b3-a5e1-7e4b-9f2c-0a0b0c0d0e10", 1)), "plan of restore"},
		"out of order":    {gzipped(strings.Join(swapped, "")), "UUID order"},
		"entry missing":   {gzipped(strings.Join(ls[:len(ls)-2], "")), "entries where its header announces"},
		"bad action":      {gzipped(strings.Replace(plain, `"action":"add"`, `"action":"keep"`, 1)), "action"},
		"unchanged other": {gzipped(text(planHeader(unchanged), unchanged)), "unchanged but"},
	} {
		n := 0
		_, err := decodePlan(bytes.NewReader(c.data), testRestore, func(RestorePlanEntry) error { n++; return nil })
		if !errors.Is(err, ErrRestorePlanDamaged) || !strings.Contains(err.Error(), c.why) || !strings.HasPrefix(err.Error(), "the restore plan is damaged") {
			t.Errorf("%s: got %v, want a damaged plan saying %q", name, err, c.why)
		}
	}
	if _, err := decodePlan(bytes.NewReader(gzipped(plain)), testRestore, func(RestorePlanEntry) error { return nil }); err != nil {
		t.Errorf("the plan written here is refused: %v", err)
	}
	// Through Storage: a damaged plan is an INTERNAL error with the damage as its cause.
	s := newStoreWith(t, Options{})
	if _, err := s.Client().UploadBuffer(t.Context(), s.SnapshotsContainer(), Layout{}.RestorePlan(testNS, testEnv, testRestore), good.Bytes()[:good.Len()-12], nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readPlan(t, s, testRestore); !errors.Is(err, ErrRestorePlanDamaged) || backup.CodeOf(err) != backup.CodeInternal {
		t.Errorf("got %v", err)
	}
}

// TestDeleteRestoreArea: the plan and every undo blob go, another restore's area stays; again is fine.
func TestDeleteRestoreArea(t *testing.T) {
	s := newStoreWith(t, Options{})
	ctx := t.Context()
	l := Layout{}
	const other = "01a233b3-a5e1-7e4b-9f2c-0a0b0c0d0e10"
	for _, id := range []string{testRestore, other} {
		h := planHeader(nil)
		h.RestoreID = id
		if _, err := s.WriteRestorePlan(ctx, testNS, testEnv, h, nil); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"files/a", "files/b/c", "x"} {
			if _, err := s.Client().UploadBuffer(ctx, s.SnapshotsContainer(), l.RestoreUndo(testNS, testEnv, id, name), []byte(name), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 2 {
		if err := s.DeleteRestoreArea(ctx, testNS, testEnv, testRestore); err != nil {
			t.Fatal(err)
		}
	}
	var left []string
	if err := s.ListFiles(ctx, s.SnapshotsContainer(), ".restores/", func(f FileInfo) error { left = append(left, f.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(left) != 4 || slices.ContainsFunc(left, func(n string) bool { return !strings.HasPrefix(n, l.RestorePrefix(testNS, testEnv, other)) }) {
		t.Errorf("left %v, want only the other restore's four blobs", left)
	}
}

// TestDeleteBlobIfMatch: deleted under its ETag; kept, as a conflict, under another; a blob gone is
// fine (Azurite answers 412 for it, Azure 404).
func TestDeleteBlobIfMatch(t *testing.T) {
	s := newStoreWith(t, Options{})
	seen := upload(t, s, "a", []byte("one"))
	upload(t, s, "a", []byte("two"))
	if err := s.DeleteBlobIfMatch(t.Context(), appFile("a"), seen.ETag); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("stale ETag: %v, want CONFLICT", err)
	}
	if got, _ := storedIn(t, s, "app-files", "a"); string(got) != "two" {
		t.Errorf("the blob changed since was deleted")
	}
	if err := s.DeleteBlobIfMatch(t.Context(), appFile("a"), listed(t, s, "a").ETag); err != nil {
		t.Fatal(err)
	}
	if _, ok := storedIn(t, s, "app-files", "a"); ok {
		t.Errorf("not deleted")
	}
	if err := s.DeleteBlobIfMatch(t.Context(), appFile("a"), seen.ETag); err != nil {
		t.Errorf("a blob gone: %v", err)
	}
}
