package storetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
)

// RunSnapshots runs the snapshot, operation and lock part of the suite.
//
// Sizes, counts and fences go past 2^31 and 2^53 (Table Storage needs Edm.Int64 for them, and a number
// sent as a double would lose the last unit), and times carry nanoseconds: a store must give back exactly
// what it was given.
func RunSnapshots(t *testing.T, newStores func(t *testing.T) backup.Stores) {
	t.Run("snapshot round trip", func(t *testing.T) { testSnapshotRoundTrip(t, newStores(t)) })
	t.Run("snapshots newest first with paging", func(t *testing.T) { testSnapshotPaging(t, newStores(t)) })
	t.Run("snapshot marked deleted", func(t *testing.T) { testSnapshotMarkedDeleted(t, newStores(t)) })
	t.Run("operation round trip", func(t *testing.T) { testOperationRoundTrip(t, newStores(t)) })
	t.Run("unsettled operations are active", func(t *testing.T) { testActiveOperations(t, newStores(t)) })
	t.Run("prune settled operations", func(t *testing.T) { testPruneOperations(t, newStores(t)) })
	t.Run("lock", func(t *testing.T) { testLock(t, newStores(t)) })
}

func sampleSnapshot(env string, created time.Time) backup.Snapshot {
	return backup.Snapshot{ID: uuid.NewString(), Namespace: "ns-a", EnvironmentID: env, Status: backup.SnapshotFinished,
		Kind: backup.KindWeekly, Comment: "it's \"quoted\" | and long", CreatedAt: created, UpdatedAt: created.Add(time.Second),
		FinishedAt: created.Add(time.Minute), ExpiresAt: created.AddDate(0, 3, 0), CreatedBy: "u", DeploymentPackage: "p.mda",
		ModelVersion: "1.0", SizeBytes: 5_000_000_000, DatabaseSizeBytes: 1<<53 + 1, DumpSizeBytes: 1<<62 + 3,
		FilesBytes: 1<<31 + 7, FilesCount: 1<<31 + 1, SHA256: "ab", StatusMessage: "ok", Warnings: []string{"w1", "w2"},
		Progress:    &backup.Progress{Phase: "dumping", BytesDone: 1<<53 + 1, FilesDone: 1, FilesTotal: 2},
		OperationID: "op", Fence: 1<<53 + 1, BlobPath: "ns-a/e/s/attempt-01.tar.gz", DumpPath: "ns-a/e/s/attempt-02.db.backup.gz",
		ManifestPath: "ns-a/e/s/attempt-02.manifest.gz", NewFilesCount: 1<<31 + 5, NewFilesBytes: 1<<53 + 9, StoredBytes: 1<<40 + 1,
		Readers:  []string{env + "/" + uuid.NewString(), uuid.NewString() + "/" + uuid.NewString()},
		UploadID: uuid.NewString(), UploadSHA256: "cd"}
}

func testSnapshotRoundTrip(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	want := sampleSnapshot(env, time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC))
	want.Kind, want.AutomaticDay, want.AutomaticAttempt, want.Expired = backup.KindNightly, "2026-11-01", 1<<31+2, true
	if err := s.Snapshots.CreateSnapshot(ctx, want); err != nil {
		t.Fatal(err)
	}
	// The same insert again (the SDK retries one whose answer was lost) is not a conflict; another
	// record with the same id is.
	if err := s.Snapshots.CreateSnapshot(ctx, want); err != nil {
		t.Errorf("the same create again: got %v, want no error", err)
	}
	other := want
	other.Comment = "another record"
	if err := s.Snapshots.CreateSnapshot(ctx, other); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("another record with the same id: got %v, want CONFLICT", err)
	}
	got, err := s.Snapshots.GetSnapshot(ctx, "ns-a", env, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	_, _, err = s.Snapshots.UpdateSnapshot(ctx, "ns-a", env, want.ID, func(cur backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
		cur.Comment, cur.Progress, cur.Warnings, cur.Readers = "new", nil, nil, nil
		return cur, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = s.Snapshots.GetSnapshot(ctx, "ns-a", env, want.ID)
	if got.Comment != "new" || got.Progress != nil || len(got.Warnings) != 0 || len(got.Readers) != 0 || got.SizeBytes != want.SizeBytes {
		t.Errorf("after update: %+v", got)
	}
	if err := s.Snapshots.DeleteSnapshot(ctx, "ns-a", env, want.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshots.DeleteSnapshot(ctx, "ns-a", env, want.ID); err != nil {
		t.Errorf("deleting a missing snapshot: %v", err)
	}
	if _, err := s.Snapshots.GetSnapshot(ctx, "ns-a", env, want.ID); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("after delete: got %v, want NOT_FOUND", err)
	}
}

func testSnapshotMarkedDeleted(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	kept, marked := sampleSnapshot(env, base), sampleSnapshot(env, base.Add(time.Hour))
	for _, sn := range []backup.Snapshot{kept, marked} {
		if err := s.Snapshots.CreateSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
	}
	deletedAt := base.Add(2*time.Hour + 500*time.Millisecond)
	_, _, err := s.Snapshots.UpdateSnapshot(ctx, "ns-a", env, marked.ID, func(cur backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
		cur.DeletedAt = deletedAt
		return cur, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Snapshots.GetSnapshot(ctx, "ns-a", env, marked.ID)
	if err != nil || !got.DeletedAt.Equal(deletedAt) || !got.Deleted() {
		t.Errorf("marked snapshot: got DeletedAt %v, err %v; want %v", got.DeletedAt, err, deletedAt)
	}
	page, total, err := s.Snapshots.ListSnapshots(ctx, "ns-a", env, 0, 10)
	if err != nil || total != 1 || len(page) != 1 || page[0].ID != kept.ID {
		t.Errorf("list: got %d items, total %d, err %v; want only the unmarked snapshot", len(page), total, err)
	}
}

func testSnapshotPaging(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := 0; i < 7; i++ {
		sn := sampleSnapshot(env, base.Add(time.Duration(i)*time.Hour))
		ids = append(ids, sn.ID)
		if err := s.Snapshots.CreateSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Snapshots.CreateSnapshot(ctx, sampleSnapshot(uuid.NewString(), base)) // another environment
	page, total, err := s.Snapshots.ListSnapshots(ctx, "ns-a", env, 2, 3)
	if err != nil || total != 7 || len(page) != 3 {
		t.Fatalf("page: %d items, total %d, err %v", len(page), total, err)
	}
	for i, sn := range page {
		if want := ids[6-2-i]; sn.ID != want {
			t.Errorf("item %d: got %s, want %s (newest first)", i, sn.ID, want)
		}
	}
	if page, total, _ := s.Snapshots.ListSnapshots(ctx, "ns-a", env, 10, 3); len(page) != 0 || total != 7 {
		t.Errorf("past the end: %d items, total %d", len(page), total)
	}
}

func testLock(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	l, err := s.Operations.GetLock(ctx, "ns-a", env)
	if err != nil || l.OperationID != "" {
		t.Fatalf("new lock: %+v %v", l, err)
	}
	since := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	take := func(op string) bool {
		_, wrote, err := s.Operations.UpdateLock(ctx, "ns-a", env, func(cur backup.Lock, _ bool) (backup.Lock, bool, error) {
			if cur.OperationID != "" {
				return cur, false, nil
			}
			return backup.Lock{OperationID: op, Kind: backup.OpBackup, Since: since}, true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return wrote
	}
	if !take("a") || take("b") {
		t.Fatal("lock: first take must win, second must lose")
	}
	if l, _ := s.Operations.GetLock(ctx, "ns-a", env); l.OperationID != "a" || !l.Since.Equal(since) {
		t.Errorf("held lock: %+v", l)
	}
	// The lock does not show up as an operation.
	if _, err := s.Operations.GetOperation(ctx, "ns-a", env, "~lock"); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("lock visible as an operation: %v", err)
	}
}
