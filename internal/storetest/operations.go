package storetest

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
)

func sampleOperation(env string, created time.Time) backup.Operation {
	return backup.Operation{ID: uuid.NewString(), Namespace: "ns-a", EnvironmentID: env, Kind: backup.OpBackup,
		SubjectID: uuid.NewString(), Phase: backup.OpQueued, Actor: "u", CreatedAt: created, UpdatedAt: created}
}

func testOperationRoundTrip(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	now := time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC)
	want := sampleOperation(env, now)
	want.Fence, want.Attempt, want.Enqueues = 1<<53+1, 1<<31+2, 1<<31+3
	want.EnqueuedAt, want.StartedAt, want.LeaseUntil = now.Add(time.Second), now.Add(1500*time.Millisecond), now.Add(3*time.Minute)
	want.Phase, want.Worker, want.StatusMessage = backup.OpRunning, "w", "dumping"
	if err := s.Operations.CreateOperation(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := s.Operations.CreateOperation(ctx, want); err != nil {
		t.Errorf("the same create again: got %v, want no error", err)
	}
	other := want
	other.Actor = "someone else"
	if err := s.Operations.CreateOperation(ctx, other); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("another record with the same id: got %v, want CONFLICT", err)
	}
	if _, err := s.Operations.GetOperation(ctx, "ns-a", env, uuid.NewString()); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("missing operation: got %v, want NOT_FOUND", err)
	}
	got, err := s.Operations.GetOperation(ctx, "ns-a", env, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	want.Phase, want.FinishedAt, want.Settled, want.Fence = backup.OpSucceeded, now.Add(time.Hour), true, want.Fence+1
	next, wrote, err := s.Operations.UpdateOperation(ctx, "ns-a", env, want.ID, func(cur backup.Operation, ok bool) (backup.Operation, bool, error) {
		if !ok || !reflect.DeepEqual(cur, got) {
			t.Errorf("update sees %+v (exists %v), want the stored operation", cur, ok)
		}
		return want, true, nil
	})
	if err != nil || !wrote || !reflect.DeepEqual(next, want) {
		t.Fatalf("update: wrote %v, err %v, got %+v", wrote, err, next)
	}
	if got, _ := s.Operations.GetOperation(ctx, "ns-a", env, want.ID); !reflect.DeepEqual(got, want) {
		t.Errorf("after update:\n got %+v\nwant %+v", got, want)
	}
}

// testActiveOperations: recovery must see every operation that is not settled, whatever its phase, and
// none that is.
func testActiveOperations(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	queued, running, doneUnsettled, settled := sampleOperation(env, now), sampleOperation(env, now), sampleOperation(env, now), sampleOperation(env, now)
	for _, op := range []backup.Operation{queued, running, doneUnsettled, settled} {
		if err := s.Operations.CreateOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	if active := activeIDs(t, s); !slices.Equal(active, sortedIDs(queued, running, doneUnsettled, settled)) {
		t.Fatalf("after creating 4 queued operations: active %v", active)
	}
	setPhase := func(op backup.Operation, phase backup.OperationPhase, settle bool) {
		t.Helper()
		_, _, err := s.Operations.UpdateOperation(ctx, "ns-a", env, op.ID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
			o.Phase, o.Settled, o.UpdatedAt = phase, settle, now.Add(time.Minute)
			if phase.Done() {
				o.FinishedAt = now.Add(time.Minute)
			}
			return o, true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setPhase(running, backup.OpRunning, false)
	setPhase(doneUnsettled, backup.OpSucceeded, false)
	setPhase(settled, backup.OpFailed, false)
	setPhase(settled, backup.OpFailed, true)
	// An operation written by UpdateOperation where none existed is active too.
	created := sampleOperation(env, now)
	_, _, err := s.Operations.UpdateOperation(ctx, "ns-a", env, created.ID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
		return created, !ok, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	active, err := s.Operations.ListActiveOperations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, op := range active {
		ids = append(ids, op.ID)
		if op.ID == doneUnsettled.ID && (op.Phase != backup.OpSucceeded || op.Settled) {
			t.Errorf("listed operation is not the stored one: %+v", op)
		}
	}
	if want := sortedIDs(queued, running, doneUnsettled, created); !slices.Equal(ids, want) {
		t.Errorf("active: got %v, want %v (queued, running, done but unsettled, created by update; ordered by id)", ids, want)
	}
	// Settling the rest empties the list.
	for _, op := range []backup.Operation{queued, running, doneUnsettled, created} {
		setPhase(op, backup.OpSucceeded, true)
	}
	if active := activeIDs(t, s); len(active) != 0 {
		t.Errorf("every operation settled: active %v", active)
	}
}

func activeIDs(t *testing.T, s backup.Stores) []string {
	t.Helper()
	ops, err := s.Operations.ListActiveOperations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, op := range ops {
		ids = append(ids, op.ID)
	}
	return ids
}

func sortedIDs(ops ...backup.Operation) []string {
	var ids []string
	for _, op := range ops {
		ids = append(ids, op.ID)
	}
	slices.Sort(ids)
	return ids
}

// testPruneOperations: pruning deletes settled operations that ended before the cutoff (the cutoff's own
// day included), no more than the limit, and nothing else: not an unsettled or running operation, not
// one that ended at or after the cutoff, not the environment's lock.
func testPruneOperations(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env, otherEnv := uuid.NewString(), uuid.NewString()
	cutoff := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	created := cutoff.AddDate(0, 0, -30)
	type ended struct {
		env      string
		finished time.Time
		settled  bool
	}
	cases := []ended{
		{env, cutoff.AddDate(0, 0, -9), true},                      // pruned
		{otherEnv, cutoff.AddDate(0, 0, -7), true},                 // pruned
		{env, cutoff.Add(-500 * time.Millisecond), true},           // pruned: the cutoff's day, before it
		{env, cutoff, true},                                        // kept: not before the cutoff
		{env, cutoff.AddDate(0, 0, 2), true},                       // kept
		{env, cutoff.AddDate(0, 0, -9), false},                     // kept: not settled
		{otherEnv, cutoff.AddDate(0, 0, -20).Add(time.Hour), true}, // pruned
	}
	var prunable, kept, unsettled []backup.Operation
	for _, c := range cases {
		op := sampleOperation(c.env, created)
		if err := s.Operations.CreateOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
		op, _, err := s.Operations.UpdateOperation(ctx, "ns-a", c.env, op.ID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
			o.Phase, o.FinishedAt, o.UpdatedAt, o.Settled = backup.OpSucceeded, c.finished, c.finished, c.settled
			return o, true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case c.settled && c.finished.Before(cutoff):
			prunable = append(prunable, op)
		case !c.settled:
			unsettled = append(unsettled, op)
			fallthrough
		default:
			kept = append(kept, op)
		}
	}
	running := sampleOperation(env, created)
	running.Phase = backup.OpRunning
	if err := s.Operations.CreateOperation(ctx, running); err != nil {
		t.Fatal(err)
	}
	kept = append(kept, running)
	lock := backup.Lock{OperationID: running.ID, Kind: backup.OpBackup, Since: created}
	if _, _, err := s.Operations.UpdateLock(ctx, "ns-a", env, func(backup.Lock, bool) (backup.Lock, bool, error) { return lock, true, nil }); err != nil {
		t.Fatal(err)
	}

	if n, err := s.Operations.PruneOperations(ctx, cutoff, 0); err != nil || n != 0 {
		t.Errorf("limit 0: pruned %d, err %v; want 0", n, err)
	}
	if n, err := s.Operations.PruneOperations(ctx, cutoff, 3); err != nil || n != 3 {
		t.Errorf("limit 3: pruned %d, err %v; want 3", n, err)
	}
	if n, err := s.Operations.PruneOperations(ctx, cutoff, 10); err != nil || n != len(prunable)-3 {
		t.Errorf("limit 10: pruned %d, err %v; want the %d left", n, err, len(prunable)-3)
	}
	if n, err := s.Operations.PruneOperations(ctx, cutoff, 10); err != nil || n != 0 {
		t.Errorf("again: pruned %d, err %v; want 0", n, err)
	}
	for _, op := range prunable {
		if _, err := s.Operations.GetOperation(ctx, "ns-a", op.EnvironmentID, op.ID); backup.CodeOf(err) != backup.CodeNotFound {
			t.Errorf("operation finished %v, settled, is still there: %v", op.FinishedAt, err)
		}
	}
	for _, op := range kept {
		got, err := s.Operations.GetOperation(ctx, "ns-a", op.EnvironmentID, op.ID)
		if err != nil || !reflect.DeepEqual(got, op) {
			t.Errorf("operation (finished %v, settled %v) was changed by pruning: got %+v, %v", op.FinishedAt, op.Settled, got, err)
		}
	}
	if got, err := s.Operations.GetLock(ctx, "ns-a", env); err != nil || !reflect.DeepEqual(got, lock) {
		t.Errorf("lock after pruning: got %+v, %v; want %+v", got, err, lock)
	}
	if active := activeIDs(t, s); !slices.Equal(active, sortedIDs(unsettled[0], running)) {
		t.Errorf("active after pruning: got %v, want the unsettled and the running operation", active)
	}
}
