package blobstore

import (
	"context"
	"crypto/md5"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

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
	want := []string{ // in name order
		l.SnapshotDump("ns-a", env, snapA, 1), l.SnapshotManifest("ns-a", env, snapA, 1), l.SnapshotArchive("ns-a", env, snapA, 1),
		l.SnapshotArchive("ns-a", env, snapA, 2), l.SnapshotDump("ns-a", env, snapB, 3), l.SnapshotManifest("ns-a", env, snapB, 3),
	}
	for _, p := range want {
		put(p)
	}
	put("ns-a/" + env + "/" + snapA + "/readme.txt")                         // not the layout's: skipped by the walk
	put("ns-a/" + env + "/" + snapA + "/attempt-01.manifest")                // nor this
	put("ns-a/" + strings.ToUpper(env) + "/" + snapA + "/attempt-01.tar.gz") // nor this
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
	if err != nil || len(got) != 6 {
		t.Errorf("snapshot A's blobs: %v (%v), want its two archives, its dump and manifest, and the two others", got, err)
	}
}
