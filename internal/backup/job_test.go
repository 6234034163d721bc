package backup_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/memstore"
)

// fakeSnapshotter records calls and returns scripted results.
type fakeSnapshotter struct {
	// readStatus lets a test look at the snapshot record while the dump runs.
	readStatus         func(backup.SnapshotRequest) string
	statusWhileDumping string
	onCreate           func() // runs while the archive is being made

	mu    sync.Mutex
	calls []backup.SnapshotRequest
	errs  []error // returned by successive calls; nil = success
	blobs *fakeBlobs
}

func (f *fakeSnapshotter) Create(ctx context.Context, req backup.SnapshotRequest) (backup.SnapshotResult, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	onCreate := f.onCreate
	f.onCreate = nil // once: it may run another job, which calls Create again
	f.mu.Unlock()
	if err != nil {
		return backup.SnapshotResult{}, err
	}
	if onCreate != nil {
		onCreate()
	}
	req.Progress(backup.Progress{Phase: "dumping", BytesDone: 10})
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusWhileDumping = f.readStatus(req)
	f.blobs.put(req.DumpPath)
	f.blobs.put(req.ManifestPath)
	return backup.SnapshotResult{SizeBytes: 1234, SHA256: "sha-of-" + req.DumpPath, FilesCount: 3, Warnings: []string{"w1"}}, nil
}

type fakeBlobs struct {
	mu    sync.Mutex
	paths map[string]time.Time // path → last modified
	now   func() time.Time
	// undeletable blobs refuse deletion, like an immutability policy or a legal hold (403).
	undeletable map[string]bool
}

func (b *fakeBlobs) put(p string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.paths[p] = b.now()
}

func (b *fakeBlobs) has(p string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.paths[p]
	return ok
}

func (b *fakeBlobs) ListSnapshotBlobs(_ context.Context, ns, env, id string) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for p := range b.paths {
		if strings.HasPrefix(p, ns+"/"+env+"/"+id+"/") {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (b *fakeBlobs) WalkArchives(ctx context.Context, fn func(backup.ArchiveBlob) error) error {
	b.mu.Lock()
	var all []backup.ArchiveBlob
	for p, mod := range b.paths {
		parts := strings.Split(p, "/")
		all = append(all, backup.ArchiveBlob{Path: p, Namespace: parts[0], EnvironmentID: parts[1], SnapshotID: parts[2], LastModified: mod})
	}
	b.mu.Unlock()
	slices.SortFunc(all, func(x, y backup.ArchiveBlob) int { return strings.Compare(x.Path, y.Path) })
	for _, a := range all {
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

func (b *fakeBlobs) DeleteBlob(_ context.Context, p string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.undeletable[p] {
		return backup.Errorf(backup.CodeInternal, "blob storage: 403 this blob is under an immutability policy")
	}
	delete(b.paths, p)
	return nil
}

func (b *fakeBlobs) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.paths)
}

type layout struct{}

func (layout) SnapshotArchive(ns, env, id string, fence int) string {
	return fmt.Sprintf("%s/%s/%s/attempt-%d", ns, env, id, fence)
}

func (layout) SnapshotDump(ns, env, id string, fence int) string {
	return fmt.Sprintf("%s/%s/%s/attempt-%d.dump", ns, env, id, fence)
}

func (layout) SnapshotManifest(ns, env, id string, fence int) string {
	return fmt.Sprintf("%s/%s/%s/attempt-%d.manifest", ns, env, id, fence)
}

func (layout) IsManifest(p string) bool { return strings.HasSuffix(p, ".manifest") }

func (layout) Download(ns, env, snap, id string, fence int, t backup.ArchiveDataType) string {
	return fmt.Sprintf(".downloads/%s/%s/%s/%s/%02d.%s", ns, env, snap, id, fence, t)
}

func (layout) Upload(ns, env, id string) string { return ns + "/" + env + "/" + id + ".tar.gz" }

// fakePublisher keeps what was published.
type fakePublisher struct {
	mu   sync.Mutex
	msgs map[string][]backup.Message
	fail error
}

func (p *fakePublisher) Publish(_ context.Context, entity string, msgs ...backup.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.msgs[entity] = append(p.msgs[entity], msgs...)
	return nil
}
func (p *fakePublisher) Ping(context.Context) error  { return nil }
func (p *fakePublisher) Close(context.Context) error { return nil }

func (p *fakePublisher) take(entity string) []backup.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.msgs[entity]
	p.msgs[entity] = nil
	return out
}

type jobFixture struct {
	svc   *backup.Service
	st    *memstore.Store
	snap  *fakeSnapshotter
	blobs *fakeBlobs
	pub   *fakePublisher
	now   time.Time
	user  backup.Principal
	// svc2Stores are the stores a second service instance uses (fencing tests).
	svc2Stores backup.Stores
}

func newJobFixture(t *testing.T) *jobFixture {
	t.Helper()
	f := &jobFixture{st: memstore.New(), pub: &fakePublisher{msgs: map[string][]backup.Message{}},
		now: t0, user: backup.Principal{ID: "user-1"}}
	f.blobs = &fakeBlobs{paths: map[string]time.Time{}, now: func() time.Time { return f.now }, undeletable: map[string]bool{}}
	f.snap = &fakeSnapshotter{blobs: f.blobs, readStatus: func(req backup.SnapshotRequest) string {
		all, _, _ := f.st.ListSnapshots(context.Background(), "ns-a", envID, 0, 100)
		for _, sn := range all {
			if strings.Contains(req.DumpPath, sn.ID) {
				return sn.StatusMessage
			}
		}
		return ""
	}}
	f.svc = backup.NewService(backup.Deps{Stores: f.st.Stores(), Publisher: f.pub, Snapshotter: f.snap, Archives: f.blobs,
		Layout: layout{}, Now: func() time.Time { return f.now }, Log: zerolog.Nop()})
	apply(t, f.svc, perms("p1", t0, "user-1", "ManageAppsBackups"))
	apply(t, f.svc, updated("e1", t0, backup.StateRunning, "v1.mda"))
	if _, err := f.svc.UpdateSettings(context.Background(), f.user, "ns-a", true); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *jobFixture) create(t *testing.T) backup.Snapshot {
	t.Helper()
	snap, err := f.svc.CreateSnapshot(context.Background(), f.user, "ns-a", envID, "before upgrade")
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	return snap
}

// deliver runs the queued job messages like the Functions host: DeliveryCount grows on non-nil results
// that are retryable.
func (f *jobFixture) deliver(t *testing.T) []error {
	t.Helper()
	var errs []error
	for _, m := range f.pub.take(backup.QueueJobs) {
		for delivery := 1; delivery <= 10; delivery++ {
			err := f.svc.HandleJob(context.Background(), m.Body, m.ID+"/"+string(rune('0'+delivery)), zerolog.Nop())
			errs = append(errs, err)
			if err == nil || !backup.IsRetryable(err) {
				break
			}
		}
	}
	return errs
}

func (f *jobFixture) snapshot(t *testing.T, id string) backup.Snapshot {
	t.Helper()
	s, err := f.st.GetSnapshot(context.Background(), "ns-a", envID, id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestManualSnapshotLifecycle(t *testing.T) {
	f := newJobFixture(t)
	snap := f.create(t)
	if snap.Status != backup.SnapshotProcessing || snap.Kind != backup.KindManual || snap.Comment != "before upgrade" {
		t.Fatalf("created: %+v", snap)
	}
	if want := t0.AddDate(0, 0, 14); !snap.ExpiresAt.Equal(want) {
		t.Errorf("expires_at = %v, want %v", snap.ExpiresAt, want)
	}
	msgs := f.pub.msgs[backup.QueueJobs]
	if len(msgs) != 1 || msgs[0].ID != snap.OperationID || msgs[0].SessionID != envID {
		t.Fatalf("job message: %+v, want MessageId = operation id and SessionId = environment", msgs)
	}
	for _, err := range f.deliver(t) {
		if err != nil {
			t.Fatalf("job: %v", err)
		}
	}
	if !strings.Contains(f.snap.statusWhileDumping, "ACCESS SHARE") {
		t.Errorf("status while dumping = %q, want it to explain pg_dump's locks", f.snap.statusWhileDumping)
	}
	got := f.snapshot(t, snap.ID)
	if got.Status != backup.SnapshotFinished || got.StatusMessage != "" || got.SizeBytes != 1234 || got.SHA256 != "sha-of-"+got.DumpPath || got.FilesCount != 3 || got.DumpPath == "" || got.FinishedAt.IsZero() {
		t.Fatalf("finished snapshot: %+v", got)
	}
	if lock, _ := f.st.GetLock(context.Background(), "ns-a", envID); lock.OperationID != "" {
		t.Errorf("lock still held by %s", lock.OperationID)
	}
	events := f.pub.take(backup.TopicBackupEvents)
	if len(events) != 1 || !strings.Contains(string(events[0].Body), `"snapshot.finished"`) {
		t.Errorf("events: %+v", events)
	}
	acts, _, _ := f.st.ListActivity(context.Background(), "ns-a", envID, 0, 10)
	if len(acts) != 2 || acts[0].Status != backup.ActivityFinished || acts[1].Status != backup.ActivityStarted {
		t.Errorf("activity: %+v", acts)
	} else if want := "snapshot finished: 3 files (0 new), 1,234 bytes, 1 warning"; acts[0].Message != want {
		t.Errorf("activity message %q, want %q", acts[0].Message, want)
	}
}

func TestDuplicateDeliveryDoesNothing(t *testing.T) {
	f := newJobFixture(t)
	snap := f.create(t)
	msgs := f.pub.msgs[backup.QueueJobs]
	f.deliver(t)
	// The same message again, after the job finished.
	if err := f.svc.HandleJob(context.Background(), msgs[0].Body, "again", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if len(f.snap.calls) != 1 {
		t.Errorf("snapshotter called %d times, want 1", len(f.snap.calls))
	}
	if got := f.snapshot(t, snap.ID); got.Status != backup.SnapshotFinished {
		t.Errorf("status %s", got.Status)
	}
}

func TestRefusals(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	f.create(t)
	if _, err := f.svc.CreateSnapshot(ctx, f.user, "ns-a", envID, ""); backup.CodeOf(err) != backup.CodeEnvironmentBusy {
		t.Errorf("second snapshot while one runs: got %v, want ENVIRONMENT_BUSY", err)
	}
	f.deliver(t)
	for i, st := range []backup.EnvironmentState{backup.StateCreating, backup.StateCreationFailed, backup.StateDeploying, backup.StateTransitioning} {
		apply(t, f.svc, updated("s"+string(rune('a'+i)), t0.Add(time.Duration(i+1)*time.Minute), st, "v1.mda"))
		if _, err := f.svc.CreateSnapshot(ctx, f.user, "ns-a", envID, ""); backup.CodeOf(err) != backup.CodeInvalidState {
			t.Errorf("%s: got %v, want INVALID_STATE", st, err)
		}
	}
	apply(t, f.svc, updated("z", t0.Add(time.Hour), backup.StateStopped, "v1.mda"))
	if _, err := f.svc.UpdateSettings(ctx, f.user, "ns-a", false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateSnapshot(ctx, f.user, "ns-a", envID, ""); backup.CodeOf(err) != backup.CodeBackupsNotEnabled {
		t.Errorf("backups disabled: got %v, want BACKUPS_NOT_ENABLED", err)
	}
	if _, err := f.svc.UpdateSettings(ctx, f.user, "ns-a", true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateSnapshot(ctx, f.user, "ns-a", envID, strings.Repeat("é", 1001)); backup.CodeOf(err) != backup.CodeInvalidParameters {
		t.Errorf("long comment: got %v, want INVALID_PARAMETERS", err)
	}
	if _, err := f.svc.CreateSnapshot(ctx, backup.Principal{ID: "stranger"}, "ns-a", envID, ""); backup.CodeOf(err) != backup.CodeNoAccess {
		t.Errorf("stranger: got %v, want NO_ACCESS", err)
	}
	// Nothing was left behind by the refusals.
	snaps, total, _ := f.st.ListSnapshots(ctx, "ns-a", envID, 0, 100)
	if total != 1 || len(snaps) != 1 {
		t.Errorf("refusals created snapshots: %d", total)
	}
}

func TestTransientFailureIsRetriedThenSucceeds(t *testing.T) {
	f := newJobFixture(t)
	f.snap.errs = []error{backup.Errorf(backup.CodeTransient, "pg_dump could not lock table x")}
	snap := f.create(t)
	errs := f.deliver(t)
	if len(errs) != 2 || !backup.IsRetryable(errs[0]) || errs[1] != nil {
		t.Fatalf("deliveries: %v, want a retryable error then success", errs)
	}
	got := f.snapshot(t, snap.ID)
	if got.Status != backup.SnapshotFinished || !strings.HasSuffix(got.DumpPath, "attempt-2.dump") {
		t.Errorf("got %s at %s, want Finished by attempt 2", got.Status, got.DumpPath)
	}
}

func TestPermanentFailureLeavesNothing(t *testing.T) {
	f := newJobFixture(t)
	f.snap.errs = []error{backup.Errorf(backup.CodeInvalidState, "pg_dump: the database of app@pg:5432/x does not exist")}
	snap := f.create(t)
	errs := f.deliver(t)
	if len(errs) != 1 || errs[0] != nil {
		t.Fatalf("a permanent failure must be acknowledged: %v", errs)
	}
	got := f.snapshot(t, snap.ID)
	if got.Status != backup.SnapshotFailed || !strings.Contains(got.StatusMessage, "does not exist") || got.DumpPath != "" {
		t.Errorf("failed snapshot: %+v", got)
	}
	if f.blobs.count() != 0 {
		t.Errorf("%d blobs left behind", f.blobs.count())
	}
	if lock, _ := f.st.GetLock(context.Background(), "ns-a", envID); lock.OperationID != "" {
		t.Error("lock not released")
	}
	if ev := f.pub.take(backup.TopicBackupEvents); len(ev) != 1 || !strings.Contains(string(ev[0].Body), "snapshot.failed") {
		t.Errorf("events: %+v", ev)
	}
	// A failed snapshot can be deleted; the environment can be backed up again.
	if err := f.svc.DeleteSnapshot(context.Background(), f.user, "ns-a", envID, snap.ID); err != nil {
		t.Fatal(err)
	}
	f.create(t)
}

func TestTransientFailuresExhaustAttempts(t *testing.T) {
	f := newJobFixture(t)
	tr := backup.Errorf(backup.CodeTransient, "storage unavailable")
	f.snap.errs = []error{tr, tr, tr}
	snap := f.create(t)
	f.deliver(t)
	if got := f.snapshot(t, snap.ID); got.Status != backup.SnapshotFailed || len(f.snap.calls) != 3 {
		t.Errorf("got %s after %d attempts, want Failed after 3", got.Status, len(f.snap.calls))
	}
}

func TestRecoveryOfLostMessageAndDeadWorker(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	f.pub.take(backup.QueueJobs) // the message is lost
	if err := f.svc.RecoverOperations(ctx, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.pub.msgs[backup.QueueJobs]); n != 0 {
		t.Fatalf("a young queued operation was re-sent (%d messages)", n)
	}
	f.now = f.now.Add(10 * time.Minute)
	if err := f.svc.RecoverOperations(ctx, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	msgs := f.pub.take(backup.QueueJobs)
	if len(msgs) != 1 || msgs[0].ID == snap.OperationID {
		t.Fatalf("recovery messages: %+v, want one with a fresh MessageId", msgs)
	}
	// A worker claims it and dies: the operation stays Running with a lease that runs out.
	var body jobMessage
	_ = json.Unmarshal(msgs[0].Body, &body)
	_, _, _ = f.st.UpdateOperation(ctx, "ns-a", envID, body.OperationID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
		o.Phase, o.Attempt, o.LeaseUntil = backup.OpRunning, 3, f.now.Add(time.Minute)
		return o, true, nil
	})
	f.now = f.now.Add(5 * time.Minute)
	if err := f.svc.RecoverOperations(ctx, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	got := f.snapshot(t, snap.ID)
	if got.Status != backup.SnapshotFailed || !strings.Contains(got.StatusMessage, "stopped responding") {
		t.Errorf("after the last attempt's worker died: %+v", got)
	}
	if lock, _ := f.st.GetLock(ctx, "ns-a", envID); lock.OperationID != "" {
		t.Error("lock not released")
	}
}

type jobMessage struct {
	OperationID string `json:"operation_id"`
}

func TestStaleLockIsTakenOver(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	// A crash right after taking the lock: the lock names an operation that was never written.
	_, _, _ = f.st.UpdateLock(ctx, "ns-a", envID, func(backup.Lock, bool) (backup.Lock, bool, error) {
		return backup.Lock{OperationID: "ghost", Kind: backup.OpBackup, Since: f.now}, true, nil
	})
	if _, err := f.svc.CreateSnapshot(ctx, f.user, "ns-a", envID, ""); backup.CodeOf(err) != backup.CodeEnvironmentBusy {
		t.Fatalf("young orphan lock: got %v, want ENVIRONMENT_BUSY", err)
	}
	f.now = f.now.Add(2 * time.Minute)
	f.create(t)
}

func TestQueueFailureLeavesNothing(t *testing.T) {
	f := newJobFixture(t)
	f.pub.fail = errors.New("service bus down")
	_, err := f.svc.CreateSnapshot(context.Background(), f.user, "ns-a", envID, "")
	if backup.CodeOf(err) != backup.CodeTransient {
		t.Fatalf("got %v, want TEMPORARILY_UNAVAILABLE", err)
	}
	if _, total, _ := f.st.ListSnapshots(context.Background(), "ns-a", envID, 0, 10); total != 0 {
		t.Errorf("a snapshot record was left behind")
	}
	if lock, _ := f.st.GetLock(context.Background(), "ns-a", envID); lock.OperationID != "" {
		t.Error("lock left held")
	}
	f.pub.fail = nil
	f.create(t)
}

func TestExpiryByKind(t *testing.T) {
	at := time.Date(2026, 12, 3, 3, 18, 0, 0, time.UTC)
	tests := []struct {
		kind backup.SnapshotKind
		want time.Time
	}{
		{backup.KindManual, time.Date(2026, 12, 17, 3, 18, 0, 0, time.UTC)},
		{backup.KindNightly, time.Date(2026, 12, 17, 3, 18, 0, 0, time.UTC)},
		{backup.KindWeekly, time.Date(2027, 3, 3, 3, 18, 0, 0, time.UTC)},
		{backup.KindMonthly, time.Date(2027, 12, 3, 3, 18, 0, 0, time.UTC)},
		{backup.KindUploaded, time.Date(2026, 12, 17, 3, 18, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		if got := tt.kind.ExpiresAt(at); !got.Equal(tt.want) {
			t.Errorf("%s: got %v, want %v", tt.kind, got, tt.want)
		}
	}
}

func TestStaleWorkerCannotFinishAfterTakeover(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	msg := f.pub.take(backup.QueueJobs)[0]
	// Worker A's snapshotter runs; while it works, the message is redelivered (A's lock on it was
	// lost) and worker B claims the operation and runs it to the end.
	f.snap.onCreate = func() {
		if err := f.svc.HandleJob(ctx, msg.Body, "worker-B", zerolog.Nop()); err != nil {
			t.Errorf("worker B: %v", err)
		}
	}
	if err := f.svc.HandleJob(ctx, msg.Body, "worker-A", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	got := f.snapshot(t, snap.ID)
	bBlob := layout{}.SnapshotDump("ns-a", envID, snap.ID, 2)
	if got.Status != backup.SnapshotFinished || got.DumpPath != bBlob || got.Fence != 2 {
		t.Errorf("snapshot: %+v, want Finished by worker B (fence 2) at %s", got, bBlob)
	}
	if op, _ := f.st.GetOperation(ctx, "ns-a", envID, snap.OperationID); op.Phase != backup.OpSucceeded || op.Worker != "worker-B" || !op.Settled {
		t.Errorf("operation: %+v", op)
	}
	// A's blob, committed after B settled, is nobody's: the sweeper removes it after the grace period
	// and keeps B's.
	aBlob := layout{}.SnapshotDump("ns-a", envID, snap.ID, 1)
	if !f.blobs.has(aBlob) {
		t.Fatalf("test setup: worker A's blob %s was not written", aBlob)
	}
	f.sweepAfterGrace(t)
	if f.blobs.has(aBlob) || !f.blobs.has(bBlob) {
		t.Errorf("after the sweep: A's blob present=%v (want false), B's present=%v (want true)", f.blobs.has(aBlob), f.blobs.has(bBlob))
	}
}

// sweepAfterGrace runs the archive sweeper once the grace period has passed.
func (f *jobFixture) sweepAfterGrace(t *testing.T) backup.SweepReport {
	t.Helper()
	f.now = f.now.Add(backup.SweepGrace + time.Minute)
	rep, err := f.svc.SweepArchives(context.Background(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// runningOp makes the snapshot's operation look claimed by a worker that died: Running, lease over.
func (f *jobFixture) runningOp(t *testing.T, snap backup.Snapshot) {
	t.Helper()
	_, _, err := f.st.UpdateOperation(context.Background(), "ns-a", envID, snap.OperationID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
		o.Phase, o.Attempt, o.Worker, o.LeaseUntil = backup.OpRunning, 1, "dead-worker", f.now.Add(time.Minute)
		return o, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// recordSnapshot sets the snapshot record as a worker does before it ends the operation.
func (f *jobFixture) recordSnapshot(t *testing.T, snap backup.Snapshot, change func(*backup.Snapshot)) {
	t.Helper()
	_, _, err := f.st.UpdateSnapshot(context.Background(), "ns-a", envID, snap.ID, func(sn backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
		change(&sn)
		return sn, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// recoverAndDeliver lets the lease run out, runs recovery and delivers what it sent.
func (f *jobFixture) recoverAndDeliver(t *testing.T) {
	t.Helper()
	f.now = f.now.Add(10 * time.Minute)
	if err := f.svc.RecoverOperations(context.Background(), zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.pub.msgs[backup.QueueJobs]); n != 1 {
		t.Fatalf("recovery sent %d job messages, want 1", n)
	}
	for _, err := range f.deliver(t) {
		if err != nil {
			t.Fatalf("job: %v", err)
		}
	}
}

func (f *jobFixture) assertClosed(t *testing.T, snap backup.Snapshot, phase backup.OperationPhase, activity backup.ActivityStatus, event string) {
	t.Helper()
	ctx := context.Background()
	if op, _ := f.st.GetOperation(ctx, "ns-a", envID, snap.OperationID); op.Phase != phase {
		t.Errorf("operation %s, want %s", op.Phase, phase)
	}
	if lock, _ := f.st.GetLock(ctx, "ns-a", envID); lock.OperationID != "" {
		t.Errorf("lock still held by %s", lock.OperationID)
	}
	if len(f.snap.calls) != 0 {
		t.Errorf("the backup ran again (%d calls)", len(f.snap.calls))
	}
	if acts, _, _ := f.st.ListActivity(ctx, "ns-a", envID, 0, 10); activity != "" && (len(acts) != 2 || acts[0].Status != activity) {
		t.Errorf("activity: %+v, want STARTED then %s", acts, activity)
	}
	events := f.pub.take(backup.TopicBackupEvents)
	if event != "" && (len(events) != 1 || !strings.Contains(string(events[0].Body), `"`+event+`"`)) {
		t.Errorf("events: %+v, want one %s", events, event)
	}
}

func TestWorkerDeadAfterRecordingFinishedIsClosedWithoutRedoingTheBackup(t *testing.T) {
	f := newJobFixture(t)
	snap := f.create(t)
	f.pub.take(backup.QueueJobs)
	// The worker committed and recorded the snapshot Finished, then died before ending the operation.
	f.runningOp(t, snap)
	blob := layout{}.SnapshotDump("ns-a", envID, snap.ID, 1)
	f.blobs.put(blob)
	f.recordSnapshot(t, snap, func(sn *backup.Snapshot) {
		sn.Status, sn.DumpPath, sn.SizeBytes, sn.FilesCount, sn.FinishedAt = backup.SnapshotFinished, blob, 99, 2, f.now
	})
	f.recoverAndDeliver(t)
	f.assertClosed(t, snap, backup.OpSucceeded, backup.ActivityFinished, backup.EventSnapshotFinished)
	if got := f.snapshot(t, snap.ID); got.Status != backup.SnapshotFinished || got.DumpPath != blob || got.SizeBytes != 99 {
		t.Errorf("snapshot changed: %+v", got)
	}
	if f.blobs.count() != 1 {
		t.Errorf("the Finished snapshot's archive was deleted (%d blobs)", f.blobs.count())
	}
}

func TestWorkerDeadAfterRecordingFailedIsClosed(t *testing.T) {
	f := newJobFixture(t)
	snap := f.create(t)
	f.pub.take(backup.QueueJobs)
	f.runningOp(t, snap)
	f.recordSnapshot(t, snap, func(sn *backup.Snapshot) {
		sn.Status, sn.StatusMessage, sn.FinishedAt = backup.SnapshotFailed, "permission denied for table x", f.now
	})
	f.recoverAndDeliver(t)
	f.assertClosed(t, snap, backup.OpFailed, backup.ActivityFailed, backup.EventSnapshotFailed)
	if op, _ := f.st.GetOperation(context.Background(), "ns-a", envID, snap.OperationID); op.StatusMessage != "permission denied for table x" {
		t.Errorf("operation message %q", op.StatusMessage)
	}
}

func TestOperationOfADeletedSnapshotIsClosed(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	f.pub.take(backup.QueueJobs)
	f.runningOp(t, snap)
	f.blobs.put(layout{}.SnapshotDump("ns-a", envID, snap.ID, 1))
	if err := f.st.DeleteSnapshot(ctx, "ns-a", envID, snap.ID); err != nil {
		t.Fatal(err)
	}
	f.recoverAndDeliver(t)
	f.assertClosed(t, snap, backup.OpFailed, "", "")
	if f.blobs.count() != 0 {
		t.Errorf("%d blobs left for a snapshot that no longer exists", f.blobs.count())
	}
}

// failingSnapshots fails UpdateSnapshot while fail is set.
type failingSnapshots struct {
	backup.SnapshotStore
	fail bool
}

func (s *failingSnapshots) UpdateSnapshot(ctx context.Context, ns, env, id string, fn backup.UpdateFunc[backup.Snapshot]) (backup.Snapshot, bool, error) {
	if s.fail {
		return backup.Snapshot{}, false, errors.New("table storage: 503 server busy")
	}
	return s.SnapshotStore.UpdateSnapshot(ctx, ns, env, id, fn)
}

func TestFailureThatCannotBeRecordedKeepsTheOperationOpen(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snaps := &failingSnapshots{SnapshotStore: f.st.Stores().Snapshots}
	stores := f.st.Stores()
	stores.Snapshots = snaps
	f.svc = backup.NewService(backup.Deps{Stores: stores, Publisher: f.pub, Snapshotter: f.snap, Archives: f.blobs,
		Layout: layout{}, Now: func() time.Time { return f.now }, Log: zerolog.Nop()})
	snap := f.create(t)
	msg := f.pub.take(backup.QueueJobs)[0]
	f.snap.errs = []error{backup.Errorf(backup.CodeInvalidParameters, "pg_dump: permission denied for table x")}
	snaps.fail = true
	err := f.svc.HandleJob(ctx, msg.Body, "worker-1", zerolog.Nop())
	if !backup.IsRetryable(err) {
		t.Fatalf("got %v, want a retryable error so that the failure is recorded on redelivery", err)
	}
	if op, _ := f.st.GetOperation(ctx, "ns-a", envID, snap.OperationID); op.Phase.Done() {
		t.Errorf("the operation ended (%s) while its snapshot is still Processing", op.Phase)
	}
	// Storage is back: the redelivery records the failure, and everything ends consistently.
	snaps.fail = false
	f.snap.errs = []error{backup.Errorf(backup.CodeInvalidParameters, "pg_dump: permission denied for table x")}
	if err := f.svc.HandleJob(ctx, msg.Body, "worker-2", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got := f.snapshot(t, snap.ID); got.Status != backup.SnapshotFailed || !strings.Contains(got.StatusMessage, "permission denied") {
		t.Errorf("snapshot: %+v", got)
	}
	if op, _ := f.st.GetOperation(ctx, "ns-a", envID, snap.OperationID); op.Phase != backup.OpFailed {
		t.Errorf("operation %s, want Failed", op.Phase)
	}
}

func TestLastAttemptLostAfterRecordingFinishedKeepsTheArchive(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	f.pub.take(backup.QueueJobs)
	f.runningOp(t, snap)
	_, _, _ = f.st.UpdateOperation(ctx, "ns-a", envID, snap.OperationID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
		o.Attempt = 3 // the last one: recovery fails the operation instead of sending the job again
		return o, true, nil
	})
	blob := layout{}.SnapshotDump("ns-a", envID, snap.ID, 3)
	f.blobs.put(blob)
	f.recordSnapshot(t, snap, func(sn *backup.Snapshot) {
		sn.Status, sn.DumpPath, sn.SizeBytes, sn.FinishedAt = backup.SnapshotFinished, blob, 99, f.now
	})
	f.now = f.now.Add(10 * time.Minute)
	if err := f.svc.RecoverOperations(ctx, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	f.assertClosed(t, snap, backup.OpSucceeded, backup.ActivityFinished, backup.EventSnapshotFinished)
	if got := f.snapshot(t, snap.ID); got.Status != backup.SnapshotFinished || got.DumpPath != blob {
		t.Errorf("snapshot: %+v", got)
	}
	if f.blobs.count() != 1 {
		t.Errorf("recovery deleted the Finished snapshot's archive (%d blobs)", f.blobs.count())
	}
}

func TestWorkerPresumedDeadCannotFinishAfterRecoveryFailedIt(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	msg := f.pub.take(backup.QueueJobs)[0]
	_, _, _ = f.st.UpdateOperation(ctx, "ns-a", envID, snap.OperationID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
		o.Attempt = 2 // this delivery is the last attempt
		return o, true, nil
	})
	// While the worker is slow, its lease runs out and recovery fails the operation.
	f.snap.onCreate = func() {
		f.now = f.now.Add(10 * time.Minute)
		if err := f.svc.RecoverOperations(ctx, zerolog.Nop()); err != nil {
			t.Errorf("recovery: %v", err)
		}
	}
	if err := f.svc.HandleJob(ctx, msg.Body, "slow-worker", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	got := f.snapshot(t, snap.ID)
	if got.Status != backup.SnapshotFailed || !strings.Contains(got.StatusMessage, "stopped responding") || got.DumpPath != "" {
		t.Errorf("snapshot: %+v, want Failed by recovery", got)
	}
	f.sweepAfterGrace(t)
	if f.blobs.count() != 0 {
		t.Errorf("the slow worker's archive survived the sweep (%d blobs)", f.blobs.count())
	}
	if op, _ := f.st.GetOperation(ctx, "ns-a", envID, snap.OperationID); op.Phase != backup.OpFailed || op.Worker != "recovery" {
		t.Errorf("operation: %+v", op)
	}
}
