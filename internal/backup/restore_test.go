package backup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

// modelWorker is a model of RestoreWorker over an environment's databases and files, with the same
// contract as internal/restorer: every method finds where an earlier call stopped from the state
// itself. Failures are injected at named points.
type modelWorker struct {
	mu    sync.Mutex
	dbs   map[string]string // database name → content
	files map[string]string // blob name → bytes
	plan  map[string]*string
	// fail maps an injection point to the errors returned there on successive passes (nil: pass).
	fail  map[string][]error
	calls []string
}

// The snapshot's content, and the target's before the restore.
const (
	snapDB   = "rows at snapshot time"
	beforeDB = "rows before the restore"
)

var snapFiles = map[string]string{"f1": "one", "f2": "two (snapshot)", "f3": "three"}

func newModelWorker() *modelWorker {
	return &modelWorker{dbs: map[string]string{"acc_db": beforeDB, "other_db": "unrelated"},
		files: map[string]string{"f2": "two (before)", "f3": "three", "f9": "unrelated"}, fail: map[string][]error{}}
}

func (m *modelWorker) inject(point string, errs ...error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[point] = append(m.fail[point], errs...)
}

func (m *modelWorker) failAt(point string) error {
	m.calls = append(m.calls, point)
	if len(m.fail[point]) == 0 {
		return nil
	}
	err := m.fail[point][0]
	m.fail[point] = m.fail[point][1:]
	return err
}

func names(w backup.RestoreWork) (cur, staging, prev string) {
	id := w.Restore.ShortID()
	return w.Restore.Database, w.Restore.Database + "_restore_" + id, w.Restore.Database + "_pre_restore_" + id
}

func (m *modelWorker) Restore(_ context.Context, w backup.RestoreWork) (backup.RestoreOutcome, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, staging, _ := names(w)
	m.dbs[staging] = "empty"
	if err := m.failAt("restore-start"); err != nil {
		return backup.RestoreOutcome{}, err
	}
	m.dbs[staging] = "half of the dump"
	if m.plan == nil { // the plan is written once, before any file changes
		m.plan = map[string]*string{}
		for name := range snapFiles {
			if old, ok := m.files[name]; ok {
				m.plan[name] = &old
			} else {
				m.plan[name] = nil
			}
		}
	}
	m.files["f1"] = snapFiles["f1"]
	if err := m.failAt("restore-half"); err != nil {
		return backup.RestoreOutcome{}, err
	}
	maps.Copy(m.files, snapFiles)
	m.dbs[staging] = snapDB
	w.Progress(backup.Progress{Phase: "restoring", BytesDone: 100, FilesDone: 3, FilesTotal: 3})
	if err := m.failAt("verify"); err != nil {
		return backup.RestoreOutcome{}, err
	}
	return backup.RestoreOutcome{DatabaseBytes: 100, Tables: 2, Rows: 7, FilesAdded: 1, FilesReplaced: 1, FilesUnchanged: 1}, nil
}

func (m *modelWorker) Commit(_ context.Context, w backup.RestoreWork) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, staging, prev := names(w)
	if err := m.failAt("commit-before"); err != nil {
		return err
	}
	_, hasStaging := m.dbs[staging]
	_, hasPrev := m.dbs[prev]
	switch {
	case hasPrev && !hasStaging: // done already
	case hasStaging && !hasPrev:
		m.dbs[prev], m.dbs[cur] = m.dbs[cur], m.dbs[staging]
		delete(m.dbs, staging)
	default:
		return backup.Errorf(backup.CodeInvalidState, "databases in a state the swap does not know")
	}
	return m.failAt("commit-after") // a crash right after the swap's transaction committed
}

func (m *modelWorker) Revert(_ context.Context, w backup.RestoreWork) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, staging, prev := names(w)
	if err := m.failAt("revert"); err != nil {
		return err
	}
	if _, ok := m.dbs[prev]; ok {
		m.dbs[staging], m.dbs[cur] = m.dbs[cur], m.dbs[prev]
		delete(m.dbs, prev)
	}
	delete(m.dbs, staging)
	for name, old := range m.plan {
		if old == nil {
			delete(m.files, name)
		} else {
			m.files[name] = *old
		}
	}
	return nil
}

func (m *modelWorker) Discard(_ context.Context, w backup.RestoreWork) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, _, prev := names(w)
	delete(m.dbs, prev)
	m.plan = nil
	return m.failAt("discard")
}

// asBefore fails unless the target is exactly as it was before the restore.
func (m *modelWorker) asBefore(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	want := newModelWorker()
	if !maps.Equal(m.dbs, want.dbs) || !maps.Equal(m.files, want.files) {
		t.Errorf("target not as before:\n databases %v\n files %v\nwant %v and %v", m.dbs, m.files, want.dbs, want.files)
	}
	if m.plan != nil {
		t.Errorf("the plan and undo area of the reverted restore were left: %v", m.plan)
	}
}

// restored fails unless the target holds the snapshot, the previous database kept for an undo.
func (m *modelWorker) restored(t *testing.T, r backup.Restore) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	_, staging, prev := names(backup.RestoreWork{Restore: r})
	want := map[string]string{"f1": "one", "f2": "two (snapshot)", "f3": "three", "f9": "unrelated"}
	if m.dbs["acc_db"] != snapDB || m.dbs[prev] != beforeDB || m.dbs[staging] != "" || !maps.Equal(m.files, want) {
		t.Errorf("target not restored: databases %v, files %v", m.dbs, m.files)
	}
}

type restoreFixture struct {
	*jobFixture
	worker *modelWorker
}

const (
	otherEnvID = "a4c3b2e1-0000-4000-8000-000000000002"
	stopApps   = "StopApps"
)

func environmentEvent(id, env string, at time.Time, state backup.EnvironmentState, model, db string) string {
	return fmt.Sprintf(`{"type":"environment.updated","event_id":%q,"occurred_at":%q,"namespace":"ns-a",
	 "environment_id":%q,"app_id":"app-1","name":"env-%s","state":%q,"deployed":true,
	 "deployment_package":"v-%s.mda","model_version":%q,
	 "database":{"host":"pg.local","port":5432,"name":%q,"role":"acc_role"},
	 "files":{"container":"files-%s","prefix":""}}`, id, at.Format(time.RFC3339Nano), env, env[:4], state, model, model, db, env[:4])
}

// newRestoreFixture has a Finished snapshot of envID (stopped) and a second stopped environment.
func newRestoreFixture(t *testing.T) (*restoreFixture, backup.Snapshot) {
	t.Helper()
	f := &restoreFixture{jobFixture: newJobFixture(t), worker: newModelWorker()}
	f.svc = backup.NewService(backup.Deps{Stores: f.st.Stores(), Publisher: f.pub, Snapshotter: f.snap, Archives: f.blobs,
		Layout: layout{}, Restorer: f.worker, Now: func() time.Time { return f.now }, Log: zerolog.Nop()})
	apply(t, f.svc, perms("p2", t0.Add(time.Second), "user-1", "ManageAppsBackups", stopApps))
	snap := f.create(t)
	for _, err := range f.deliver(t) {
		if err != nil {
			t.Fatal(err)
		}
	}
	apply(t, f.svc, environmentEvent("e2", envID, t0.Add(time.Second), backup.StateStopped, "1.0.0.40", "acc_db"))
	apply(t, f.svc, environmentEvent("e3", otherEnvID, t0.Add(time.Second), backup.StateStopped, "1.0.0.40", "acc_db"))
	f.pub.take(backup.TopicBackupEvents)
	return f, f.snapshot(t, snap.ID)
}

func (f *restoreFixture) start(t *testing.T, snap backup.Snapshot) backup.Restore {
	t.Helper()
	r, err := f.svc.CreateRestore(context.Background(), f.user, "ns-a", envID, backup.RestoreRequest{SnapshotID: snap.ID})
	if err != nil {
		t.Fatalf("CreateRestore: %v", err)
	}
	return r
}

func (f *restoreFixture) restore(t *testing.T, id string) backup.Restore {
	t.Helper()
	r, err := f.st.GetRestore(context.Background(), "ns-a", envID, id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *restoreFixture) events(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range f.pub.take(backup.TopicBackupEvents) {
		var ev backup.OutboundEvent
		if err := json.Unmarshal(m.Body, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.Type)
	}
	return out
}

func (f *restoreFixture) lockFree(t *testing.T) {
	t.Helper()
	if l, _ := f.st.GetLock(context.Background(), "ns-a", envID); l.OperationID != "" {
		if op, _ := f.st.GetOperation(context.Background(), "ns-a", envID, l.OperationID); !op.Phase.Done() {
			t.Errorf("the environment is still locked by %s (%s)", l.OperationID, op.Phase)
		}
	}
}

func (f *restoreFixture) activity(t *testing.T) []string {
	t.Helper()
	entries, _, err := f.st.ListActivity(context.Background(), "ns-a", envID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(entries) - 1; i >= 0; i-- {
		if e := entries[i]; e.Action == backup.ActionRestore || e.Action == backup.ActionUndo {
			out = append(out, string(e.Action)+" "+string(e.Status))
		}
	}
	return out
}

func TestRestoreCompletesAndCanBeUndone(t *testing.T) {
	f, snap := newRestoreFixture(t)
	r := f.start(t, snap)
	if r.State != backup.RestoreQueued || r.ModelVersion != snap.ModelVersion || r.DeploymentPackage != snap.DeploymentPackage {
		t.Fatalf("created: %+v", r)
	}
	if sn := f.snapshot(t, snap.ID); len(sn.Readers) != 1 {
		t.Errorf("the snapshot does not name the restore as a reader: %v", sn.Readers)
	}
	if err := f.svc.DeleteSnapshot(context.Background(), f.user, "ns-a", envID, snap.ID); backup.CodeOf(err) != backup.CodeSnapshotInUse {
		t.Errorf("deleting a snapshot a restore reads: %v, want SNAPSHOT_IN_USE", err)
	}
	if _, err := f.svc.CreateSnapshot(context.Background(), f.user, "ns-a", envID, ""); backup.CodeOf(err) != backup.CodeEnvironmentBusy {
		t.Errorf("a backup during the restore: %v, want ENVIRONMENT_BUSY", err)
	}
	envs, _ := f.svc.ListEnvironments(context.Background(), f.user, "ns-a")
	for _, e := range envs {
		if e.ID == envID && e.Reason != "a restore is running" {
			t.Errorf("environment list while restoring: reason %q", e.Reason)
		}
	}
	for _, err := range f.deliver(t) {
		if err != nil {
			t.Fatalf("job: %v", err)
		}
	}
	got := f.restore(t, r.ID)
	if got.State != backup.RestoreCompleted || got.Step != backup.StepCommitted || got.Tables != 2 || got.FilesAdded != 1 ||
		!got.UndoUntil.Equal(f.now.Add(backup.DefaultRestoreUndo)) || got.Progress != nil {
		t.Fatalf("completed: %+v", got)
	}
	f.worker.restored(t, got)
	f.lockFree(t)
	if sn := f.snapshot(t, snap.ID); len(sn.Readers) != 0 {
		t.Errorf("the snapshot still names readers after the restore: %v", sn.Readers)
	}
	if ev := f.events(t); len(ev) != 1 || ev[0] != backup.EventRestoreFinished {
		t.Errorf("events: %v", ev)
	}

	if _, err := f.svc.UndoRestore(context.Background(), f.user, "ns-a", envID, r.ID); err != nil {
		t.Fatalf("undo: %v", err)
	}
	for _, err := range f.deliver(t) {
		if err != nil {
			t.Fatalf("undo job: %v", err)
		}
	}
	f.worker.asBefore(t)
	undone := f.restore(t, r.ID)
	if undone.Step != backup.StepUndone || undone.UndoState != backup.RestoreCompleted || undone.UndoneAt.IsZero() || undone.UndoneBy != "user-1" {
		t.Errorf("undone: %+v", undone)
	}
	if _, err := f.svc.UndoRestore(context.Background(), f.user, "ns-a", envID, r.ID); backup.CodeOf(err) != backup.CodeInvalidState {
		t.Errorf("a second undo: %v, want INVALID_STATE", err)
	}
	want := []string{"restore STARTED", "restore FINISHED", "undo STARTED", "undo FINISHED"}
	if got := f.activity(t); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("activity %v, want %v", got, want)
	}
	f.lockFree(t)
}

// Every failure before the record says committed ends with the target exactly as before: a
// permanent one at once, transient ones when the attempts are used up; and a crash right after the
// swap's transaction resumes to completion.
func TestRestoreFailuresLeaveTheTargetAsBefore(t *testing.T) {
	permanent := backup.Errorf(backup.CodeInvalidState, "the dump is damaged")
	transient := backup.Errorf(backup.CodeTransient, "storage is unavailable")
	for _, tc := range []struct {
		name     string
		point    string
		errs     []error
		complete bool
	}{
		{"permanent at the start", "restore-start", []error{permanent}, false},
		{"permanent half-way", "restore-half", []error{permanent}, false},
		{"verification fails", "verify", []error{permanent}, false},
		{"transient every attempt", "restore-half", []error{transient, transient, transient}, false},
		{"transient once", "restore-half", []error{transient}, true},
		{"swap refused", "commit-before", []error{permanent}, false},
		{"crash after the swap", "commit-after", []error{transient}, true},
		{"crash after the swap on every attempt", "commit-after", []error{transient, transient, transient}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, snap := newRestoreFixture(t)
			f.worker.inject(tc.point, tc.errs...)
			r := f.start(t, snap)
			f.deliver(t)
			got := f.restore(t, r.ID)
			if tc.complete {
				if got.State != backup.RestoreCompleted {
					t.Fatalf("restore: %+v", got)
				}
				f.worker.restored(t, got)
				return
			}
			if got.State != backup.RestoreFailed || got.StatusMessage == "" {
				t.Fatalf("restore: %+v", got)
			}
			f.worker.asBefore(t)
			f.lockFree(t)
			if ev := f.events(t); len(ev) != 1 || ev[0] != backup.EventRestoreFailed {
				t.Errorf("events: %v", ev)
			}
			if act := f.activity(t); len(act) != 2 || act[1] != "restore FAILED" {
				t.Errorf("activity: %v", act)
			}
			if sn := f.snapshot(t, snap.ID); len(sn.Readers) != 0 {
				t.Errorf("readers left: %v", sn.Readers)
			}
		})
	}
}

// A rollback that fails keeps the operation open (and the environment locked) until it succeeds: a
// failed restore is recorded only once the target is back as it was.
func TestRollbackIsRetriedUntilItSucceeds(t *testing.T) {
	f, snap := newRestoreFixture(t)
	f.worker.inject("restore-half", backup.Errorf(backup.CodeInvalidState, "pg_restore failed on the last object"))
	f.worker.inject("revert", backup.Errorf(backup.CodeTransient, "the database server is restarting"))
	r := f.start(t, snap)
	f.deliver(t)
	got := f.restore(t, r.ID)
	if got.State != backup.RestoreFailed || got.Step != backup.StepRolledBack {
		t.Fatalf("restore: %+v", got)
	}
	f.worker.asBefore(t)
	if n := strings.Count(strings.Join(f.worker.calls, ","), "revert"); n != 2 {
		t.Errorf("revert ran %d times, want 2 (one failed)", n)
	}
}

// A worker that died after its claim (the lease passes) on the last attempt is failed by recovery,
// which rolls the restore back.
func TestRecoveryRollsBackARestoreWhoseWorkerDied(t *testing.T) {
	f, snap := newRestoreFixture(t)
	f.worker.inject("commit-after", backup.Errorf(backup.CodeTransient, "killed"), backup.Errorf(backup.CodeTransient, "killed"))
	r := f.start(t, snap)
	msgs := f.pub.take(backup.QueueJobs)
	// Two deliveries die after the swap; the third claim dies before it does anything.
	for i := 0; i < 2; i++ {
		_ = f.svc.HandleJob(context.Background(), msgs[0].Body, fmt.Sprintf("d%d", i), zerolog.Nop())
	}
	if err := f.svc.ClaimOnly(context.Background(), "ns-a", envID, r.OperationID, "dies"); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(time.Hour)
	if err := f.svc.RecoverOperations(context.Background(), zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	got := f.restore(t, r.ID)
	if got.State != backup.RestoreFailed || got.Step != backup.StepRolledBack {
		t.Fatalf("restore after recovery: %+v", got)
	}
	f.worker.asBefore(t)
	f.lockFree(t)
}

func TestSecondDeliveryOfACompletedRestoreDoesNothing(t *testing.T) {
	f, snap := newRestoreFixture(t)
	r := f.start(t, snap)
	msgs := f.pub.msgs[backup.QueueJobs]
	body := msgs[len(msgs)-1].Body
	f.deliver(t)
	before := f.restore(t, r.ID)
	calls := len(f.worker.calls)
	if err := f.svc.HandleJob(context.Background(), body, "again", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if after := f.restore(t, r.ID); !after.UpdatedAt.Equal(before.UpdatedAt) || len(f.worker.calls) != calls {
		t.Errorf("a second delivery changed something: %+v, calls %v", after, f.worker.calls[calls:])
	}
	f.worker.restored(t, before)
}

func TestRestoreRefusals(t *testing.T) {
	f, snap := newRestoreFixture(t)
	ctx := context.Background()
	try := func(name string, want backup.Code, p backup.Principal, target string, req backup.RestoreRequest, detail string) {
		t.Helper()
		_, err := f.svc.CreateRestore(ctx, p, "ns-a", target, req)
		if backup.CodeOf(err) != want || !strings.Contains(fmt.Sprint(err), detail) {
			t.Errorf("%s: %v, want %s mentioning %q", name, err, want, detail)
		}
	}
	apply(t, f.svc, perms("p3", t0.Add(2*time.Second), "user-2", "ManageAppsBackups"))
	try("without StopApps", backup.CodeNoAccess, backup.Principal{ID: "user-2"}, envID, backup.RestoreRequest{SnapshotID: snap.ID}, "StopApps")
	try("across namespaces", backup.CodeCrossNamespace, f.user, envID, backup.RestoreRequest{SnapshotID: snap.ID, SourceNamespace: "ns-b"}, "namespace")
	try("unknown snapshot", backup.CodeNotFound, f.user, envID, backup.RestoreRequest{SnapshotID: "0d3e301f-5551-46f8-ad44-8de2be084c00"}, "not found")
	try("bad id", backup.CodeInvalidParameters, f.user, envID, backup.RestoreRequest{SnapshotID: "x"}, "source_snapshot_id")

	apply(t, f.svc, environmentEvent("e4", otherEnvID, t0.Add(2*time.Second), backup.StateRunning, "1.0.0.40", "acc_db"))
	try("target running", backup.CodeInvalidState, f.user, otherEnvID, backup.RestoreRequest{SnapshotID: snap.ID, SourceEnvironmentID: envID}, "stop the app first")

	// Into the other environment, of another model version: allowed, with the warning.
	apply(t, f.svc, environmentEvent("e5", otherEnvID, t0.Add(3*time.Second), backup.StateStopped, "2.0.0.1", "other_db"))
	r, err := f.svc.CreateRestore(ctx, f.user, "ns-a", otherEnvID, backup.RestoreRequest{SnapshotID: snap.ID, SourceEnvironmentID: envID})
	if err != nil || len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], backup.WarningModelVersionMismatch) ||
		!strings.Contains(r.Warnings[0], "deploy the matching model") {
		t.Fatalf("restore into another environment of another model: %+v, %v", r, err)
	}
	try("target busy", backup.CodeEnvironmentBusy, f.user, otherEnvID, backup.RestoreRequest{SnapshotID: snap.ID, SourceEnvironmentID: envID}, "running")

	// A Processing snapshot.
	apply(t, f.svc, environmentEvent("e6", envID, t0.Add(3*time.Second), backup.StateRunning, "1.0.0.40", "acc_db"))
	processing := f.create(t)
	apply(t, f.svc, environmentEvent("e7", envID, t0.Add(4*time.Second), backup.StateStopped, "1.0.0.40", "acc_db"))
	try("processing snapshot", backup.CodeSnapshotNotReady, f.user, envID, backup.RestoreRequest{SnapshotID: processing.ID}, "Processing")
}

func TestUndoAfterTheGracePeriodIsRefusedAndTheDataDiscarded(t *testing.T) {
	f, snap := newRestoreFixture(t)
	r := f.start(t, snap)
	f.deliver(t)
	f.now = f.now.Add(backup.DefaultRestoreUndo - time.Minute)
	if n, err := f.svc.DiscardRestoreUndo(context.Background(), zerolog.Nop()); err != nil || n != 0 {
		t.Fatalf("discard inside the grace period: %d, %v", n, err)
	}
	f.now = f.now.Add(2 * time.Minute)
	_, err := f.svc.UndoRestore(context.Background(), f.user, "ns-a", envID, r.ID)
	if backup.CodeOf(err) != backup.CodeInvalidState || !strings.Contains(err.Error(), "grace period") {
		t.Errorf("undo after the grace period: %v", err)
	}
	if n, err := f.svc.DiscardRestoreUndo(context.Background(), zerolog.Nop()); err != nil || n != 1 {
		t.Fatalf("discard: %d, %v", n, err)
	}
	got := f.restore(t, r.ID)
	if got.Step != backup.StepDiscarded || got.DiscardedAt.IsZero() {
		t.Errorf("after discard: %+v", got)
	}
	_, _, prev := names(backup.RestoreWork{Restore: got})
	if _, ok := f.worker.dbs[prev]; ok || f.worker.plan != nil {
		t.Errorf("undo data left: %v", f.worker.dbs)
	}
	if n, _ := f.svc.DiscardRestoreUndo(context.Background(), zerolog.Nop()); n != 0 {
		t.Errorf("a second run discarded %d", n)
	}
}

func TestOnlyTheLatestRestoreCanBeUndone(t *testing.T) {
	f, snap := newRestoreFixture(t)
	first := f.start(t, snap)
	f.deliver(t)
	f.worker.plan = nil // the second restore plans afresh
	f.now = f.now.Add(time.Minute)
	f.start(t, snap)
	f.deliver(t)
	_, err := f.svc.UndoRestore(context.Background(), f.user, "ns-a", envID, first.ID)
	if backup.CodeOf(err) != backup.CodeInvalidState || !strings.Contains(err.Error(), "only the latest restore") {
		t.Errorf("undo of an older restore: %v", err)
	}
	// Once the newer one is undone, the environment is as the first left it: that one can be undone.
	all, _, _ := f.st.ListRestores(context.Background(), "ns-a", envID, 0, 10)
	if _, err := f.svc.UndoRestore(context.Background(), f.user, "ns-a", envID, all[0].ID); err != nil {
		t.Fatal(err)
	}
	f.deliver(t)
	if _, err := f.svc.UndoRestore(context.Background(), f.user, "ns-a", envID, first.ID); err != nil {
		t.Errorf("undo of the first restore after the second was undone: %v", err)
	}
}
