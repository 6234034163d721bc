package blobstore

import (
	"context"
	"crypto/md5"
	"slices"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

func TestParseSnapshotArchiveInvertsTheLayout(t *testing.T) {
	const ns, env, snap = "ns-a", "0d3e301f-5551-46f8-ad44-8de2be084c95", "01a233b3-a5e1-7e4b-9f2c-07b45975067f"
	gotNS, gotEnv, gotSnap, ok := Layout{}.ParseSnapshotArchive(Layout{}.SnapshotArchive(ns, env, snap, 12))
	if !ok || gotNS != ns || gotEnv != env || gotSnap != snap {
		t.Errorf("round trip: %q %q %q %v", gotNS, gotEnv, gotSnap, ok)
	}
	for _, p := range []string{
		"", "ns-a/" + env + "/" + snap, "ns-a/" + env + "/" + snap + "/notes.txt", "ns-a/x/" + snap + "/attempt-01.tar.gz",
		"NS/" + env + "/" + snap + "/attempt-01.tar.gz", "ns-a/" + env + "/" + snap + "/deeper/attempt-01.tar.gz",
	} {
		if _, _, _, ok := (Layout{}).ParseSnapshotArchive(p); ok {
			t.Errorf("%q parsed as an archive; the sweeper must never touch blobs the layout does not make", p)
		}
	}
}

func TestWalkArchivesAndListSnapshotBlobs(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	const env = "0d3e301f-5551-46f8-ad44-8de2be084c95"
	snapA, snapB := "01a233b3-a5e1-7e4b-9f2c-07b45975067f", "01a233b3-a5e1-7e4b-9f2c-07b45975068a"
	put := func(path string) {
		t.Helper()
		sink := s.NewBlockSink(path)
		data := []byte("x")
		id := blockID(1)
		if err := sink.StageBlock(ctx, id, data, md5.Sum(data)); err != nil {
			t.Fatal(err)
		}
		if err := sink.Commit(ctx, []string{id}); err != nil {
			t.Fatal(err)
		}
	}
	l := Layout{}
	want := []string{l.SnapshotArchive("ns-a", env, snapA, 1), l.SnapshotArchive("ns-a", env, snapA, 2), l.SnapshotArchive("ns-a", env, snapB, 1)}
	for _, p := range want {
		put(p)
	}
	put("ns-a/" + env + "/" + snapA + "/readme.txt") // not the layout's: skipped by the walk
	var walked []string
	err := s.WalkArchives(ctx, func(b backup.ArchiveBlob) error {
		if b.Namespace != "ns-a" || b.EnvironmentID != env || time.Since(b.LastModified) > time.Hour {
			t.Errorf("blob %+v", b)
		}
		walked = append(walked, b.Path)
		return nil
	})
	if err != nil || !slices.Equal(walked, want) {
		t.Errorf("walk: %v (%v), want %v in name order", walked, err, want)
	}
	got, err := s.ListSnapshotBlobs(ctx, "ns-a", env, snapA)
	if err != nil || len(got) != 3 {
		t.Errorf("snapshot A's blobs: %v (%v), want its two archives and the readme", got, err)
	}
}
