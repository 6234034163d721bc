package storetest

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
)

// RunRestores runs the restore part of the suite. As for snapshots, integers go past 2^31 and 2^53 and
// times carry nanoseconds.
func RunRestores(t *testing.T, newStores func(t *testing.T) backup.Stores) {
	t.Run("restore round trip", func(t *testing.T) { testRestoreRoundTrip(t, newStores(t)) })
	t.Run("restore update decisions", func(t *testing.T) { testRestoreUpdateDecisions(t, newStores(t)) })
	t.Run("concurrent restore updates lose nothing", func(t *testing.T) { testRestoreConcurrentUpdates(t, newStores(t)) })
	t.Run("restores newest first with paging", func(t *testing.T) { testRestorePaging(t, newStores(t)) })
	t.Run("restores due for discarding their undo data", func(t *testing.T) { testUndoDue(t, newStores(t)) })
}

// sampleRestore is a committed restore with every field set, so that a field a store drops shows.
func sampleRestore(ns, env string, created time.Time) backup.Restore {
	return backup.Restore{ID: uuid.NewString(), Namespace: ns, EnvironmentID: env, SourceEnvironmentID: uuid.NewString(),
		SourceSnapshotID: uuid.NewString(), State: backup.RestoreCompleted, Step: backup.StepCommitted,
		StatusMessage: "it's \"quoted\" | é 𝄞 <b>&", Warnings: []string{"MODEL_VERSION_MISMATCH", "w2 \x01"},
		Progress:  &backup.Progress{Phase: "restoring", BytesDone: 1<<53 + 1, FilesDone: 1<<31 + 2, FilesTotal: 1<<31 + 3},
		CreatedAt: created, UpdatedAt: created.Add(1500 * time.Millisecond), StartedAt: created.Add(time.Second + 7),
		FinishedAt: created.Add(time.Minute + 9), CreatedBy: "u", ModelVersion: "10.6.1", DeploymentPackage: "p.mda",
		Database: "app_db", DatabaseBytes: 1<<53 + 1, Tables: 1<<31 + 1, Rows: 1<<62 + 3, FilesCount: 1<<31 + 5,
		FilesBytes: 1<<40 + 1, FilesAdded: 1<<31 + 7, FilesReplaced: 1<<31 + 9, FilesUnchanged: 1<<31 + 11,
		OperationID: uuid.NewString(), Fence: 1<<53 + 3, UndoUntil: created.AddDate(0, 0, 7).Add(500 * time.Millisecond),
		UndoOperationID: uuid.NewString(), UndoFence: 1<<53 + 5, UndoState: backup.RestoreFailed, UndoMessage: "undo: no",
		UndoneAt: created.Add(time.Hour + 1), UndoneBy: "v", DiscardedAt: created.Add(2*time.Hour + 3)}
}

// requireEveryField fails when a field of v is zero: a field added to the record must be added to the
// sample, and so to every store.
func requireEveryField(t *testing.T, v any) {
	t.Helper()
	rv := reflect.ValueOf(v)
	for i := 0; i < rv.NumField(); i++ {
		if rv.Field(i).IsZero() {
			t.Fatalf("the sample %s leaves %s zero: set it, so that its round trip is tested", rv.Type().Name(), rv.Type().Field(i).Name)
		}
	}
}

func testRestoreRoundTrip(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	want := sampleRestore("ns-a", env, time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC))
	requireEveryField(t, want)
	if _, err := s.Restores.GetRestore(ctx, "ns-a", env, want.ID); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("missing restore: got %v, want NOT_FOUND", err)
	}
	if err := s.Restores.CreateRestore(ctx, want); err != nil {
		t.Fatal(err)
	}
	// The same insert again is not a conflict; another record with the same id is.
	if err := s.Restores.CreateRestore(ctx, want); err != nil {
		t.Errorf("the same create again: got %v, want no error", err)
	}
	other := want
	other.StatusMessage = "another record"
	if err := s.Restores.CreateRestore(ctx, other); backup.CodeOf(err) != backup.CodeConflict {
		t.Errorf("another record with the same id: got %v, want CONFLICT", err)
	}
	got, err := s.Restores.GetRestore(ctx, "ns-a", env, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	for _, miss := range [][2]string{{"ns-b", env}, {"ns-a", uuid.NewString()}} {
		if _, err := s.Restores.GetRestore(ctx, miss[0], miss[1], want.ID); backup.CodeOf(err) != backup.CodeNotFound {
			t.Errorf("the restore read from namespace %s, environment %s: got %v, want NOT_FOUND", miss[0], miss[1], err)
		}
	}
	// An update sees the stored record and cannot move it; emptied lists and progress read back empty.
	next, wrote, err := s.Restores.UpdateRestore(ctx, "ns-a", env, want.ID, func(cur backup.Restore, ok bool) (backup.Restore, bool, error) {
		if !ok || !reflect.DeepEqual(cur, want) {
			t.Errorf("update sees %+v (exists %v), want the stored restore", cur, ok)
		}
		cur.ID, cur.Namespace, cur.EnvironmentID = "elsewhere", "ns-b", "e"
		cur.StatusMessage, cur.Warnings, cur.Progress = "new", nil, nil
		return cur, true, nil
	})
	if err != nil || !wrote || next.ID != want.ID || next.Namespace != "ns-a" || next.EnvironmentID != env {
		t.Fatalf("update: wrote %v, err %v, got %+v", wrote, err, next)
	}
	want.StatusMessage, want.Warnings, want.Progress = "new", nil, nil
	if got, err := s.Restores.GetRestore(ctx, "ns-a", env, want.ID); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("after update:\n got %+v, %v\nwant %+v", got, err, want)
	}
}

func testRestoreUpdateDecisions(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	r := sampleRestore("ns-a", env, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	// Declined where none exists: nothing is stored.
	_, wrote, err := s.Restores.UpdateRestore(ctx, "ns-a", env, r.ID, func(cur backup.Restore, ok bool) (backup.Restore, bool, error) {
		if ok {
			t.Error("a missing restore reported as existing")
		}
		return r, false, nil
	})
	if err != nil || wrote {
		t.Fatalf("declined write: wrote %v, err %v", wrote, err)
	}
	if _, err := s.Restores.GetRestore(ctx, "ns-a", env, r.ID); backup.CodeOf(err) != backup.CodeNotFound {
		t.Fatalf("a declined write stored something: %v", err)
	}
	if err := s.Restores.CreateRestore(ctx, r); err != nil {
		t.Fatal(err)
	}
	// Declined, and refused with an error: the record stays as it was.
	wantErr := backup.Errorf(backup.CodeInvalidState, "no")
	for _, c := range []struct {
		write bool
		err   error
	}{{false, nil}, {true, wantErr}} {
		cur, wrote, err := s.Restores.UpdateRestore(ctx, "ns-a", env, r.ID, func(cur backup.Restore, ok bool) (backup.Restore, bool, error) {
			cur.Step, cur.StatusMessage = backup.StepUndone, "changed"
			return cur, c.write, c.err
		})
		if wrote || backup.CodeOf(err) != backup.CodeOf(c.err) || (c.err == nil && !reflect.DeepEqual(cur, r)) {
			t.Errorf("write %v, error %v: wrote %v, err %v, returned %+v", c.write, c.err, wrote, err, cur)
		}
		if got, err := s.Restores.GetRestore(ctx, "ns-a", env, r.ID); err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("write %v, error %v: the record changed: %+v, %v", c.write, c.err, got, err)
		}
	}
}

func testRestoreConcurrentUpdates(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	r := sampleRestore("ns-a", env, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	r.StatusMessage = ""
	if err := s.Restores.CreateRestore(ctx, r); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.Restores.UpdateRestore(ctx, "ns-a", env, r.ID, func(cur backup.Restore, ok bool) (backup.Restore, bool, error) {
				cur.StatusMessage += "x" // a counter: a lost update shows as fewer x
				return cur, true, nil
			})
			if err != nil {
				t.Errorf("concurrent update: %v", err)
			}
		}()
	}
	wg.Wait()
	got, err := s.Restores.GetRestore(ctx, "ns-a", env, r.ID)
	if err != nil || len(got.StatusMessage) != writers {
		t.Errorf("got %d updates applied (%v), want %d", len(got.StatusMessage), err, writers)
	}
}

func testRestorePaging(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var made []backup.Restore
	for i := 0; i < 7; i++ {
		// Whole seconds and fractions mixed: the order must follow time, not text.
		made = append(made, sampleRestore("ns-a", env, base.Add(time.Duration(i)*500*time.Millisecond)))
	}
	made[6].CreatedAt = made[5].CreatedAt // a tie: ordered by id, highest first
	for _, r := range made {
		if err := s.Restores.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []backup.Restore{sampleRestore("ns-a", uuid.NewString(), base), sampleRestore("ns-b", env, base)} {
		if err := s.Restores.CreateRestore(ctx, r); err != nil { // another environment, another namespace
			t.Fatal(err)
		}
	}
	want, total := backup.PageRestoresNewestFirst(made, 0, len(made))
	if total != 7 || !want[0].CreatedAt.Equal(made[5].CreatedAt) || want[len(want)-1].ID != made[0].ID {
		t.Fatalf("the expected order is not newest first: %+v", want)
	}
	for _, c := range []struct{ offset, limit, from, to int }{{0, 3, 0, 3}, {2, 3, 2, 5}, {6, 3, 6, 7}, {7, 3, 7, 7}, {20, 3, 7, 7}, {0, 100, 0, 7}} {
		page, total, err := s.Restores.ListRestores(ctx, "ns-a", env, c.offset, c.limit)
		if err != nil || total != 7 || len(page) != c.to-c.from {
			t.Errorf("offset %d limit %d: %d items, total %d, err %v; want %d items, total 7", c.offset, c.limit, len(page), total, err, c.to-c.from)
			continue
		}
		for i, r := range page {
			if !reflect.DeepEqual(r, want[c.from+i]) {
				t.Errorf("offset %d limit %d, item %d:\n got %+v\nwant %+v", c.offset, c.limit, i, r, want[c.from+i])
			}
		}
	}
	if page, total, err := s.Restores.ListRestores(ctx, "ns-c", env, 0, 10); err != nil || total != 0 || len(page) != 0 {
		t.Errorf("an environment without restores: %d items, total %d, err %v", len(page), total, err)
	}
}

// testUndoDue: the timer that drops undo data gets the committed restores whose grace period ended
// before its time, of every environment and namespace, at most the limit, and a restore no more once it
// was undone or discarded.
func testUndoDue(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	cutoff := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	created := cutoff.AddDate(0, 0, -30)
	envA, envB := uuid.NewString(), uuid.NewString()
	restore := func(ns, env string, step backup.RestoreStep, undoUntil time.Time) backup.Restore {
		t.Helper()
		r := sampleRestore(ns, env, created)
		r.Step, r.UndoUntil, r.UndoState, r.UndoOperationID, r.UndoFence = step, undoUntil, "", "", 0
		r.UndoneAt, r.UndoneBy, r.DiscardedAt = time.Time{}, "", time.Time{}
		if err := s.Restores.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	due := []backup.Restore{
		restore("ns-a", envA, backup.StepCommitted, cutoff.AddDate(0, 0, -2)),
		restore("ns-a", envB, backup.StepCommitted, cutoff.Add(-time.Nanosecond)),
		restore("ns-b", envA, backup.StepCommitted, cutoff.Add(-500*time.Millisecond)),
		restore("ns-b", uuid.NewString(), backup.StepCommitted, cutoff.AddDate(-1, 0, 0)),
	}
	// One whose undo is queued, running or failed keeps its data: not listed, so they cannot crowd out the rest.
	for _, st := range []backup.RestoreState{backup.RestoreQueued, backup.RestoreRunning, backup.RestoreFailed} {
		r := sampleRestore("ns-a", envA, created)
		r.Step, r.UndoUntil, r.UndoState, r.DiscardedAt, r.UndoneAt = backup.StepCommitted, cutoff.Add(-time.Hour), st, time.Time{}, time.Time{}
		if err := s.Restores.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	restore("ns-a", envA, backup.StepCommitted, cutoff) // not before the cutoff
	restore("ns-a", envB, backup.StepCommitted, cutoff.Add(time.Nanosecond))
	restore("ns-b", envA, backup.StepCommitted, cutoff.AddDate(0, 0, 3))
	for _, step := range []backup.RestoreStep{backup.StepNone, backup.StepRestoring, backup.StepCommitting, backup.StepRolledBack,
		backup.StepUndone, backup.StepDiscarded} {
		restore("ns-a", envA, step, cutoff.AddDate(0, 0, -1)) // past the grace period, but not committed
	}
	committing := restore("ns-b", envB, backup.StepCommitting, cutoff.Add(-time.Minute))

	listed := func(limit int) []backup.Restore {
		t.Helper()
		got, err := s.Restores.ListUndoDue(ctx, cutoff, limit)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	check := func(what string, want []backup.Restore) {
		t.Helper()
		got := listed(100)
		slices.SortFunc(got, func(a, b backup.Restore) int { return strings.Compare(a.ID, b.ID) })
		want = slices.SortedFunc(slices.Values(want), func(a, b backup.Restore) int { return strings.Compare(a.ID, b.ID) })
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, want %v", what, restoreIDs(got), restoreIDs(want))
			for i := range min(len(got), len(want)) {
				if got[i].ID == want[i].ID && !reflect.DeepEqual(got[i], want[i]) {
					t.Errorf("listed:\n %+v\nstored: %+v", got[i], want[i])
				}
			}
		}
	}
	check("due", due)
	if got := listed(2); len(got) != 2 || !containsAll(due, got) {
		t.Errorf("limit 2: got %v, want 2 of %v", restoreIDs(got), restoreIDs(due))
	}
	if got := listed(0); len(got) != 0 {
		t.Errorf("limit 0: got %v", restoreIDs(got))
	}

	// Undone, discarded: no longer listed. Committed by an update: listed from then on.
	for i, step := range []backup.RestoreStep{backup.StepUndone, backup.StepDiscarded} {
		r := due[i]
		_, _, err := s.Restores.UpdateRestore(ctx, r.Namespace, r.EnvironmentID, r.ID, func(cur backup.Restore, ok bool) (backup.Restore, bool, error) {
			cur.Step, cur.UpdatedAt = step, cutoff
			return cur, true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	due = due[2:]
	committed, _, err := s.Restores.UpdateRestore(ctx, committing.Namespace, committing.EnvironmentID, committing.ID,
		func(cur backup.Restore, ok bool) (backup.Restore, bool, error) {
			cur.Step = backup.StepCommitted
			return cur, true, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	check("after undoing one, discarding one and committing one", append(due, committed))
}

func restoreIDs(rs []backup.Restore) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}

// containsAll reports whether every restore of sub is in all, as stored.
func containsAll(all, sub []backup.Restore) bool {
	for _, r := range sub {
		if !slices.ContainsFunc(all, func(o backup.Restore) bool { return reflect.DeepEqual(o, r) }) {
			return false
		}
	}
	return true
}
