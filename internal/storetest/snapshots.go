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
func RunSnapshots(t *testing.T, newStores func(t *testing.T) backup.Stores) {
	t.Run("snapshot round trip", func(t *testing.T) { testSnapshotRoundTrip(t, newStores(t)) })
	t.Run("snapshots newest first with paging", func(t *testing.T) { testSnapshotPaging(t, newStores(t)) })
	t.Run("operations and active list", func(t *testing.T) { testOperations(t, newStores(t)) })
	t.Run("lock", func(t *testing.T) { testLock(t, newStores(t)) })
}

func sampleSnapshot(env string, created time.Time) backup.Snapshot {
	return backup.Snapshot{ID: uuid.NewString(), Namespace: "ns-a", EnvironmentID: env, Status: backup.SnapshotFinished,
		Kind: backup.KindWeekly, Comment: "it's \"quoted\" | and long", CreatedAt: created, UpdatedAt: created.Add(time.Second),
		FinishedAt: created.Add(time.Minute), ExpiresAt: created.AddDate(0, 3, 0), CreatedBy: "u", DeploymentPackage: "p.mda",
		ModelVersion: "1.0", SizeBytes: 1 << 40, DatabaseSizeBytes: 7, DumpSizeBytes: 6, FilesBytes: 5, FilesCount: 4,
		SHA256: "ab", StatusMessage: "ok", Warnings: []string{"w1", "w2"}, Progress: &backup.Progress{Phase: "dumping", BytesDone: 9, FilesDone: 1, FilesTotal: 2},
		OperationID: "op", BlobPath: "ns-a/e/s/attempt-01.tar.gz"}
}

func testSnapshotRoundTrip(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	want := sampleSnapshot(env, time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC))
	if err := s.Snapshots.CreateSnapshot(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := s.Snapshots.CreateSnapshot(ctx, want); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("second create: got %v, want CONFLICT", err)
	}
	got, err := s.Snapshots.GetSnapshot(ctx, "ns-a", env, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	_, _, err = s.Snapshots.UpdateSnapshot(ctx, "ns-a", env, want.ID, func(cur backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
		cur.Comment, cur.Progress, cur.Warnings = "new", nil, nil
		return cur, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = s.Snapshots.GetSnapshot(ctx, "ns-a", env, want.ID)
	if got.Comment != "new" || got.Progress != nil || len(got.Warnings) != 0 || got.SizeBytes != want.SizeBytes {
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

func testOperations(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	op := backup.Operation{ID: uuid.NewString(), Namespace: "ns-a", EnvironmentID: env, Kind: backup.OpBackup, SubjectID: "s",
		Phase: backup.OpQueued, Actor: "u", CreatedAt: now, UpdatedAt: now}
	if err := s.Operations.CreateOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Operations.GetOperation(ctx, "ns-a", env, uuid.NewString()); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("missing operation: %v", err)
	}
	active, err := s.Operations.ListActiveOperations(ctx)
	if err != nil || !containsOp(active, op.ID) {
		t.Fatalf("active: %v %v", active, err)
	}
	_, _, err = s.Operations.UpdateOperation(ctx, "ns-a", env, op.ID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
		o.Phase, o.Attempt, o.LeaseUntil, o.Worker = backup.OpRunning, 1, now.Add(time.Minute), "w"
		return o, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Operations.GetOperation(ctx, "ns-a", env, op.ID)
	if got.Phase != backup.OpRunning || got.Attempt != 1 || !got.LeaseUntil.Equal(now.Add(time.Minute)) || got.Worker != "w" || got.SubjectID != "s" {
		t.Errorf("after claim: %+v", got)
	}
	_, _, _ = s.Operations.UpdateOperation(ctx, "ns-a", env, op.ID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
		o.Phase = backup.OpSucceeded
		return o, true, nil
	})
	if active, _ := s.Operations.ListActiveOperations(ctx); containsOp(active, op.ID) {
		t.Error("a finished operation is listed as active")
	}
}

func containsOp(ops []backup.Operation, id string) bool {
	for _, o := range ops {
		if o.ID == id {
			return true
		}
	}
	return false
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
