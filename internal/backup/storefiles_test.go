package backup_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// countingCopies wraps the model world's copy (called without an actor, so nothing yields).
type countingCopies struct {
	w      *world
	copied []string
	// before, if set, runs before each copy (to change the source under the copy).
	before func(f backup.SourceFile)
}

func (c *countingCopies) copy(ctx context.Context, f backup.SourceFile, object string, readBack bool) (backup.CopyOutcome, error) {
	if c.before != nil {
		c.before(f)
	}
	out, err := c.w.copyFile(ctx, f, object, readBack)
	if err == nil && !out.Existed {
		c.copied = append(c.copied, f.UUID)
	}
	return out, err
}

func storeOnce(t *testing.T, m *model, c *countingCopies, files []string, manifest string) backup.StoreFilesResult {
	t.Helper()
	res, err := backup.StoreFiles(context.Background(), m.w, m.w, backup.StoreFilesRequest{Namespace: modelNS, EnvironmentID: modelEnv,
		SnapshotID: "s", ManifestPath: manifest, Files: files, Sources: m.w.listSources, Source: m.w.source, Copy: c.copy,
		Workers: 1, Now: m.s.clock, Poll: time.Millisecond}) // one at a time: the counters are not locked
	if err != nil {
		t.Fatalf("StoreFiles: %v", err)
	}
	return res
}

func TestStoreFilesCopiesOnlyWhatTheStoreLacks(t *testing.T) {
	m := newModel(t, 1)
	c := &countingCopies{w: m.w}
	first := storeOnce(t, m, c, m.uuids, "m/1")
	if len(c.copied) != len(m.uuids) || first.NewFiles != len(m.uuids) || len(first.Entries) != len(m.uuids) {
		t.Fatalf("first backup copied %d, reported %d new of %d entries; want all %d", len(c.copied), first.NewFiles, len(first.Entries), len(m.uuids))
	}
	c.copied = nil
	second := storeOnce(t, m, c, m.uuids, "m/2")
	if len(c.copied) != 0 || second.NewFiles != 0 || second.NewBytes != 0 {
		t.Errorf("a backup with no change copied %v (new %d, %d bytes)", c.copied, second.NewFiles, second.NewBytes)
	}
	if !slices.Equal(objectsOf(first), objectsOf(second)) {
		t.Errorf("unchanged files got other objects")
	}

	// New bytes under the same UUID, with and without a Content-MD5; one rewritten with the same bytes
	// (a new ETag): an MD5 blob stays shared, one without MD5 is stored again, never wrongly shared.
	withMD5, noMD5 := m.uuids[1], m.uuids[0] // newModel: every third file has no MD5
	m.w.etags++
	m.w.sources[withMD5] = sourceBlob{content: "changed", etag: m.w.etags}
	m.w.etags++
	m.w.sources[noMD5] = sourceBlob{content: "changed too", etag: m.w.etags, noMD5: true}
	same := m.uuids[2]
	b := m.w.sources[same]
	m.w.etags++
	b.etag = m.w.etags
	m.w.sources[same] = b
	c.copied = nil
	third := storeOnce(t, m, c, m.uuids, "m/3")
	slices.Sort(c.copied)
	if want := []string{noMD5, withMD5}; !slices.Equal(c.copied, want) || third.NewFiles != 2 {
		t.Errorf("after two files changed, copied %v (new %d), want exactly %v", c.copied, third.NewFiles, want)
	}
	for _, e := range third.Entries {
		if o := m.w.objects[e.Object]; o.content != m.w.sources[e.UUID].content {
			t.Errorf("file %s names an object holding %q, the blob holds %q", e.UUID, o.content, m.w.sources[e.UUID].content)
		}
	}
}

func TestStoreFilesWarnsOfVanishedBlobsAndFollowsChangedOnes(t *testing.T) {
	m := newModel(t, 2)
	gone, moving := m.uuids[3], m.uuids[4]
	delete(m.w.sources, gone)
	c := &countingCopies{w: m.w}
	c.before = func(f backup.SourceFile) {
		if f.UUID == moving && m.w.sources[moving].content != "rewritten" {
			m.w.etags++
			m.w.sources[moving] = sourceBlob{content: "rewritten", etag: m.w.etags}
		}
	}
	res := storeOnce(t, m, c, append(slices.Clone(m.uuids), "00000000-0000-4000-8000-0000000000ff"), "m/1")
	if want := []string{"00000000-0000-4000-8000-0000000000ff", gone}; !slices.Equal(res.Missing, want) {
		t.Errorf("missing %v, want %v", res.Missing, want)
	}
	for _, e := range res.Entries {
		if e.UUID == moving && m.w.objects[e.Object].content != "rewritten" {
			t.Errorf("a blob rewritten between listing and copy was stored as %q", m.w.objects[e.Object].content)
		}
	}
	mf := m.w.manifests["m/1"]
	if mf.h.Files != len(res.Entries) || len(mf.entries) != len(m.uuids)-1 {
		t.Errorf("manifest has %d entries (header %d), want %d", len(mf.entries), mf.h.Files, len(m.uuids)-1)
	}
}

// A copy that fails for good fails the whole call: no manifest claims a file the store lacks.
func TestStoreFilesFailsOnACopyError(t *testing.T) {
	m := newModel(t, 3)
	boom := backup.Errorf(backup.CodeInternal, "storage refused the copy")
	_, err := backup.StoreFiles(context.Background(), m.w, m.w, backup.StoreFilesRequest{Namespace: modelNS, EnvironmentID: modelEnv,
		SnapshotID: "s", ManifestPath: "m/1", Files: m.uuids, Sources: m.w.listSources, Source: m.w.source,
		Copy: func(context.Context, backup.SourceFile, string, bool) (backup.CopyOutcome, error) {
			return backup.CopyOutcome{}, fmt.Errorf("copy: %w", boom)
		}, Now: m.s.clock})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the copy's error", err)
	}
	if _, ok := m.w.manifests["m/1"]; ok {
		t.Errorf("a manifest was written although copies failed")
	}
}

func TestObjectNames(t *testing.T) {
	u := "0d3e301f-5551-46f8-ad44-8de2be084c95"
	md5 := []byte{0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89}
	a := backup.ObjectName(backup.SourceFile{UUID: u, Size: 20, MD5: md5, ETag: `"0x1"`})
	if a != u+"/20-md5-abcdef0123456789abcdef0123456789" {
		t.Errorf("with MD5: %s", a)
	}
	if b := backup.ObjectName(backup.SourceFile{UUID: u, Size: 20, MD5: md5, ETag: `"0x2"`}); b != a {
		t.Errorf("the same bytes under another ETag got another object: %s", b)
	}
	e1 := backup.ObjectName(backup.SourceFile{UUID: u, Size: 20, ETag: `"0x1"`})
	e2 := backup.ObjectName(backup.SourceFile{UUID: u, Size: 20, ETag: `"0x2"`})
	if e1 == e2 || e1 == a {
		t.Errorf("without MD5, ETags must decide: %s %s", e1, e2)
	}
	for _, name := range []string{a, e1} {
		if gu, size, ok := backup.ParseObjectName(name); !ok || gu != u || size != 20 {
			t.Errorf("ParseObjectName(%s) = %s %d %v", name, gu, size, ok)
		}
	}
	for _, bad := range []string{"", u, u + "/20", u + "/x-md5-abcdef0123456789abcdef0123456789", u + "/020-md5-abcdef0123456789abcdef0123456789",
		u + "/20-sha-abcdef0123456789abcdef0123456789", u + "/20-md5-ABCDEF0123456789ABCDEF0123456789", u + "/20-md5-abc",
		"0D3E301F-5551-46F8-AD44-8DE2BE084C95/20-md5-abcdef0123456789abcdef0123456789", ".collector.json", u + "/-1-md5-abcdef0123456789abcdef0123456789"} {
		if _, _, ok := backup.ParseObjectName(bad); ok {
			t.Errorf("ParseObjectName(%q) accepted", bad)
		}
	}
}

func objectsOf(r backup.StoreFilesResult) []string {
	var out []string
	for _, e := range r.Entries {
		out = append(out, e.Object)
	}
	return out
}

// Many copies are not read back one by one: one listing after them must catch a copy that Storage did
// not keep as the source was listed, delete it and fail the call, before any manifest names it. A few
// copies are read back each (one listing would cost more).
func TestStoreFilesChecksItsCopiesFromOneListing(t *testing.T) {
	m := newModel(t, 4)
	bad := m.uuids[1] // has a Content-MD5
	for i := range 1200 {
		u := fmt.Sprintf("00000004-0000-4000-8000-1%011x", i)
		m.uuids = append(m.uuids, u)
		m.w.etags++
		m.w.sources[u] = sourceBlob{content: u, etag: m.w.etags}
	}
	listings, readBacks := 0, 0
	walk := countingWalks{world: m.w, n: &listings}
	_, err := backup.StoreFiles(context.Background(), walk, m.w, backup.StoreFilesRequest{Namespace: modelNS, EnvironmentID: modelEnv,
		SnapshotID: "s", ManifestPath: "m/1", Files: m.uuids, Sources: m.w.listSources, Source: m.w.source, Workers: 1, Now: m.s.clock,
		Copy: func(ctx context.Context, f backup.SourceFile, object string, readBack bool) (backup.CopyOutcome, error) {
			if readBack {
				readBacks++
			}
			out, err := m.w.copyFile(ctx, f, object, readBack)
			if f.UUID == bad {
				o := m.w.objects[object]
				o.content += " and more"
				o.md5 = []byte("not the md5 ....")
				m.w.objects[object] = o
			}
			return out, err
		}})
	if backup.CodeOf(err) != backup.CodeTransient {
		t.Fatalf("err = %v, want a transient error for the damaged copy", err)
	}
	if _, ok := m.w.manifests["m/1"]; ok {
		t.Errorf("a manifest names a damaged copy")
	}
	for name := range m.w.objects {
		if u, _, _ := backup.ParseObjectName(name); u == bad {
			t.Errorf("the damaged copy %s was kept", name)
		}
	}
	if listings != 2 || readBacks != 0 {
		t.Errorf("%d listings of the store and %d copies read back, want 2 (one to decide, one to check all the copies) and 0", listings, readBacks)
	}

	// A few copies (a nightly's) are read back each, and no listing checks them.
	m = newModel(t, 5)
	listings, readBacks = 0, 0
	walk = countingWalks{world: m.w, n: &listings}
	_, err = backup.StoreFiles(context.Background(), walk, m.w, backup.StoreFilesRequest{Namespace: modelNS, EnvironmentID: modelEnv,
		SnapshotID: "s", ManifestPath: "m/1", Files: m.uuids, Sources: m.w.listSources, Source: m.w.source, Workers: 1, Now: m.s.clock,
		Copy: func(ctx context.Context, f backup.SourceFile, object string, readBack bool) (backup.CopyOutcome, error) {
			if readBack {
				readBacks++
			}
			return m.w.copyFile(ctx, f, object, readBack)
		}})
	if err != nil || listings != 1 || readBacks != len(m.uuids) {
		t.Errorf("few copies: err %v, %d listings, %d of %d copies read back; want 1 listing and every copy read back", err, listings, readBacks, len(m.uuids))
	}
}

// countingWalks counts the store listings of a world.
type countingWalks struct {
	*world
	n *int
}

func (c countingWalks) WalkObjects(ctx context.Context, ns, env string, fn func(backup.StoreObject) error) error {
	*c.n++
	return c.world.WalkObjects(ctx, ns, env, fn)
}
