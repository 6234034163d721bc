package backup_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

// withService rebuilds the fixture's service with changed dependencies.
func (f *jobFixture) withService(change func(*backup.Deps)) {
	d := backup.Deps{Stores: f.st.Stores(), Publisher: f.pub, Snapshotter: f.snap, Archives: f.blobs,
		Layout: layout{}, Now: func() time.Time { return f.now }, Log: zerolog.Nop()}
	change(&d)
	f.svc = backup.NewService(d)
}

// funcSnapshotter runs a function as the build.
type funcSnapshotter func(ctx context.Context, req backup.SnapshotRequest) (backup.SnapshotResult, error)

func (fn funcSnapshotter) Create(ctx context.Context, req backup.SnapshotRequest) (backup.SnapshotResult, error) {
	return fn(ctx, req)
}

func TestStalledBuildFailsItsAttemptAsTransient(t *testing.T) {
	f := newJobFixture(t)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	// The build reports progress once, then hangs (a storage call that never returns) until cancelled,
	// while time passes.
	var renewedAfterStall atomic.Bool
	f.withService(func(d *backup.Deps) {
		d.Now, d.StallTimeout, d.ProgressInterval = now, time.Minute, 5*time.Millisecond
		d.Snapshotter = funcSnapshotter(func(ctx context.Context, req backup.SnapshotRequest) (backup.SnapshotResult, error) {
			req.Progress(backup.Progress{Phase: "dumping", BytesDone: 100})
			time.Sleep(50 * time.Millisecond) // a few ticks renew the lease for the progress made
			op := f.operation(t)
			for ctx.Err() == nil {
				clock.Add(int64(10 * time.Second))
				time.Sleep(5 * time.Millisecond)
			}
			if f.operation(t).LeaseUntil.After(op.LeaseUntil) {
				renewedAfterStall.Store(true)
			}
			return backup.SnapshotResult{}, ctx.Err()
		})
	})
	snap := f.create(t)
	msg := f.pub.take(backup.QueueJobs)[0]
	err := f.svc.HandleJob(context.Background(), msg.Body, "worker-1", zerolog.Nop())
	if !backup.IsRetryable(err) {
		t.Fatalf("got %v, want a retryable error (the attempt stalled)", err)
	}
	if renewedAfterStall.Load() {
		t.Error("the lease was renewed while the build made no progress")
	}
	got := f.snapshot(t, snap.ID)
	if got.Status != backup.SnapshotProcessing || !strings.Contains(got.StatusMessage, "made no progress for 1m0s") {
		t.Errorf("snapshot after the stall: %s %q", got.Status, got.StatusMessage)
	}
	if op := f.operation(t); op.Attempt != 1 {
		t.Errorf("attempt %d, want 1 (a stall uses up its attempt)", op.Attempt)
	}
}

// operation returns the fixture's one operation.
func (f *jobFixture) operation(t *testing.T) backup.Operation {
	t.Helper()
	ops := f.st.Operations()
	if len(ops) != 1 {
		t.Fatalf("%d operations, want 1", len(ops))
	}
	return ops[0]
}

func TestShutdownDoesNotUseUpAnAttempt(t *testing.T) {
	f := newJobFixture(t)
	var cancel context.CancelFunc
	f.withService(func(d *backup.Deps) {
		d.Snapshotter = funcSnapshotter(func(bctx context.Context, req backup.SnapshotRequest) (backup.SnapshotResult, error) {
			cancel() // SIGTERM: the invocation's context ends
			return backup.SnapshotResult{}, bctx.Err()
		})
	})
	snap := f.create(t)
	msg := f.pub.take(backup.QueueJobs)[0]
	for i := 0; i < 5; i++ { // more interruptions than there are attempts
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		err := f.svc.HandleJob(ctx, msg.Body, fmt.Sprintf("worker-%d", i), zerolog.Nop())
		cancel()
		if !backup.IsRetryable(err) {
			t.Fatalf("interrupted attempt %d: got %v, want retryable", i, err)
		}
	}
	if op := f.operation(t); op.Attempt != 0 || op.Fence != 5 {
		t.Errorf("after 5 interruptions: attempt %d fence %d, want attempt 0 fence 5", op.Attempt, op.Fence)
	}
	f.withService(func(*backup.Deps) {})
	if err := f.svc.HandleJob(context.Background(), msg.Body, "worker-ok", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if got := f.snapshot(t, snap.ID); got.Status != backup.SnapshotFinished {
		t.Errorf("status %s, want Finished", got.Status)
	}
}

func TestUndeletableBlobNeverKeepsTheEnvironmentLocked(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	// Attempt 1 commits a blob that a legal hold then protects, and fails transiently; attempt 2
	// fails for good.
	f.withService(func(d *backup.Deps) {
		n := 0
		d.Snapshotter = funcSnapshotter(func(_ context.Context, req backup.SnapshotRequest) (backup.SnapshotResult, error) {
			n++
			if n == 1 {
				f.blobs.put(req.DumpPath)
				f.blobs.undeletable[req.DumpPath] = true
				return backup.SnapshotResult{}, backup.Errorf(backup.CodeTransient, "the archive did not verify")
			}
			return backup.SnapshotResult{}, backup.Errorf(backup.CodeInvalidState, "pg_dump was refused access")
		})
	})
	snap := f.create(t)
	for _, err := range f.deliver(t) {
		if err != nil && !backup.IsRetryable(err) {
			t.Fatalf("job: %v", err)
		}
	}
	if got := f.snapshot(t, snap.ID); got.Status != backup.SnapshotFailed || got.DumpPath != "" {
		t.Errorf("snapshot %s at %q, want Failed without a blob", got.Status, got.DumpPath)
	}
	if op := f.operation(t); op.Phase != backup.OpFailed || !op.Settled {
		t.Errorf("operation %s settled=%v, want Failed and settled", op.Phase, op.Settled)
	}
	if lock, _ := f.st.GetLock(ctx, "ns-a", envID); lock.OperationID != "" {
		t.Errorf("lock held by %s", lock.OperationID)
	}
	if f.blobs.count() != 1 {
		t.Fatalf("%d blobs, want the protected one", f.blobs.count())
	}
	// The sweeper tries again every run; once the hold is lifted, the blob goes.
	if rep := f.sweepAfterGrace(t); rep.Failed != 1 || f.blobs.count() != 1 {
		t.Errorf("sweep under the hold: %+v, %d blobs", rep, f.blobs.count())
	}
	clear(f.blobs.undeletable)
	if rep := f.sweepAfterGrace(t); rep.Deleted != 1 || f.blobs.count() != 0 {
		t.Errorf("sweep after the hold: %+v, %d blobs", rep, f.blobs.count())
	}
	f.create(t) // the environment is free
}

func TestDeleteMarksTheRecordFirst(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	f.deliver(t)
	blob := f.snapshot(t, snap.ID).DumpPath
	f.blobs.undeletable[blob] = true
	if err := f.svc.DeleteSnapshot(ctx, f.user, "ns-a", envID, snap.ID); err != nil {
		t.Fatalf("delete with a protected blob: %v", err)
	}
	// Hidden at once, although its blob is still there.
	if _, err := f.svc.Snapshot(ctx, f.user, "ns-a", envID, snap.ID); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("get after delete: %v, want NOT_FOUND", err)
	}
	if list, total, _ := f.svc.ListSnapshots(ctx, f.user, "ns-a", envID, 0, 10); total != 0 || len(list) != 0 {
		t.Errorf("listed after delete: %d", total)
	}
	if rec, err := f.st.GetSnapshot(ctx, "ns-a", envID, snap.ID); err != nil || !rec.Deleted() {
		t.Fatalf("record %+v (%v), want it marked until its blob is gone", rec, err)
	}
	// A young blob is left (grace); then the sweeper fails under the policy and finishes after it.
	clear(f.blobs.undeletable)
	if rep := f.sweepAfterGrace(t); rep.Deleted != 1 || rep.Finished != 1 {
		t.Errorf("sweep: %+v, want the blob deleted and the deletion finished", rep)
	}
	if _, err := f.st.GetSnapshot(ctx, "ns-a", envID, snap.ID); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("record after the sweep: %v, want gone", err)
	}
	acts, _, _ := f.st.ListActivity(ctx, "ns-a", envID, 0, 10)
	if acts[0].Action != backup.ActionDelete {
		t.Errorf("newest activity %+v, want the deletion", acts[0])
	}
}

func TestDeleteAgainFinishesAnInterruptedDeletion(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	f.deliver(t)
	// A crash right after marking: the record is marked, the blob and the record remain.
	_, _, _ = f.st.UpdateSnapshot(ctx, "ns-a", envID, snap.ID, func(sn backup.Snapshot, _ bool) (backup.Snapshot, bool, error) {
		sn.DeletedAt = f.now
		return sn, true, nil
	})
	if err := f.svc.DeleteSnapshot(ctx, f.user, "ns-a", envID, snap.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.GetSnapshot(ctx, "ns-a", envID, snap.ID); backup.CodeOf(err) != backup.CodeNotFound || f.blobs.count() != 0 {
		t.Errorf("record %v, %d blobs: want both gone", err, f.blobs.count())
	}
	if acts, _, _ := f.st.ListActivity(ctx, "ns-a", envID, 0, 10); acts[0].Action == backup.ActionDelete {
		t.Error("finishing a deletion logged it again")
	}
}

func TestSweeperKeepsWhatRecordsUse(t *testing.T) {
	f := newJobFixture(t)
	snap := f.create(t)
	f.deliver(t)
	kept := f.snapshot(t, snap.ID).DumpPath
	processing := f.create(t) // Processing: its job owns every blob of it
	f.blobs.put(layout{}.SnapshotDump("ns-a", envID, processing.ID, 1))
	orphan := layout{}.SnapshotDump("ns-a", envID, snap.ID, 7)
	f.blobs.put(orphan)
	ghost := layout{}.SnapshotDump("ns-a", envID, "01a00000-0000-7000-8000-000000000000", 1) // no record at all
	f.blobs.put(ghost)
	if rep, _ := f.svc.SweepArchives(context.Background(), zerolog.Nop()); rep.Deleted != 0 || rep.KeptYoung != 2 {
		t.Errorf("young orphans: %+v, want both kept for the grace period", rep)
	}
	rep := f.sweepAfterGrace(t)
	if rep.Deleted != 2 || f.blobs.has(orphan) || f.blobs.has(ghost) {
		t.Errorf("sweep: %+v; orphan left=%v ghost left=%v", rep, f.blobs.has(orphan), f.blobs.has(ghost))
	}
	if !f.blobs.has(kept) || f.blobs.count() != 3 { // the Finished snapshot's dump and manifest, the Processing one's blob
		t.Errorf("the sweeper removed a blob in use (%d left)", f.blobs.count())
	}
}

func TestTenThousandWarningsMakeABoundedRecord(t *testing.T) {
	f := newJobFixture(t)
	f.withService(func(d *backup.Deps) {
		d.Snapshotter = funcSnapshotter(func(_ context.Context, req backup.SnapshotRequest) (backup.SnapshotResult, error) {
			ws := make([]string, 10_000)
			for i := range ws {
				ws[i] = fmt.Sprintf("file document %08d-5551-46f8-ad44-8de2be084c95 has no blob in container files; it is not in the snapshot", i)
			}
			f.blobs.put(req.DumpPath)
			return backup.SnapshotResult{SizeBytes: 10, SHA256: "sha-of-" + req.DumpPath, Warnings: ws}, nil
		})
	})
	snap := f.create(t)
	f.deliver(t)
	got := f.snapshot(t, snap.ID)
	size := 0
	for _, w := range got.Warnings {
		size += len(w)
	}
	if got.Status != backup.SnapshotFinished || len(got.Warnings) > 51 || size > 20<<10 {
		t.Fatalf("status %s, %d warnings, %d bytes: want Finished with a bounded list", got.Status, len(got.Warnings), size)
	}
	if last := got.Warnings[len(got.Warnings)-1]; last != "and 9,950 more warnings" {
		t.Errorf("summary %q", last)
	}
	acts, _, _ := f.st.ListActivity(context.Background(), "ns-a", envID, 0, 1)
	if !strings.HasSuffix(acts[0].Message, ", 51 warnings") {
		t.Errorf("activity %q", acts[0].Message)
	}
}

func TestNoticesSurviveACrashAfterTheEnd(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	msg := f.pub.take(backup.QueueJobs)[0]
	// The worker ends the operation, then cannot publish (it dies, or Service Bus is down).
	f.pub.fail = errors.New("service bus unavailable")
	if err := f.svc.HandleJob(ctx, msg.Body, "worker-1", zerolog.Nop()); !backup.IsRetryable(err) {
		t.Fatalf("got %v, want retryable: settling is not done", err)
	}
	if op := f.operation(t); op.Phase != backup.OpSucceeded || op.Settled {
		t.Fatalf("operation %s settled=%v, want Succeeded, not settled", op.Phase, op.Settled)
	}
	if lock, _ := f.st.GetLock(ctx, "ns-a", envID); lock.OperationID != "" {
		t.Error("the lock waits for the event; it must not")
	}
	f.pub.fail = nil
	// Recovery settles it (the redelivery would too): one FINISHED entry, one event, whatever ran twice.
	if err := f.svc.RecoverOperations(ctx, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.HandleJob(ctx, msg.Body, "worker-2", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if op := f.operation(t); !op.Settled {
		t.Error("not settled")
	}
	acts, _, _ := f.st.ListActivity(ctx, "ns-a", envID, 0, 10)
	if len(acts) != 2 || acts[0].Status != backup.ActivityFinished {
		t.Errorf("activity %+v, want STARTED and one FINISHED", acts)
	}
	events := f.pub.take(backup.TopicBackupEvents)
	if len(events) != 1 || events[0].ID != snap.OperationID+":"+backup.EventSnapshotFinished {
		t.Errorf("events %+v, want one with the deterministic id", events)
	}
}

func TestInternalErrorsReachUsersAsAReference(t *testing.T) {
	f := newJobFixture(t)
	f.snap.errs = []error{fmt.Errorf("stage block: PUT https://acct.blob.core.windows.net/snapshots/x?comp=block: 403 AuthorizationFailure <?xml version=\"1.0\"?>")}
	snap := f.create(t)
	f.deliver(t)
	got := f.snapshot(t, snap.ID)
	if got.Status != backup.SnapshotFailed || strings.Contains(got.StatusMessage, "https://") || strings.Contains(got.StatusMessage, "xml") ||
		!strings.Contains(got.StatusMessage, "reference ") {
		t.Errorf("status message %q: want a sentence with a reference, no URL or response body", got.StatusMessage)
	}
}

func TestUnknownKindDoesNotKeepTheEnvironmentLocked(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	snap := f.create(t)
	msg := f.pub.take(backup.QueueJobs)[0]
	_, _, _ = f.st.UpdateOperation(ctx, "ns-a", envID, snap.OperationID, func(o backup.Operation, _ bool) (backup.Operation, bool, error) {
		o.Kind = "teleport"
		return o, true, nil
	})
	if err := f.svc.HandleJob(ctx, msg.Body, "worker-1", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if op := f.operation(t); op.Phase != backup.OpFailed || !op.Settled {
		t.Errorf("operation %s settled=%v", op.Phase, op.Settled)
	}
	if lock, _ := f.st.GetLock(ctx, "ns-a", envID); lock.OperationID != "" {
		t.Error("lock held")
	}
}

// TestRecoveryOfABacklog: 10,000 queued operations whose messages wait in a long queue. Recovery runs
// every 5 minutes for 4 hours; without backoff it would send all 10,000 again at every run after the
// first 5 minutes (470,000 messages). It sends at most maxResendsPerRun a run, each operation at
// growing intervals.
func TestRecoveryOfABacklog(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	const n = 10_000
	for i := range n {
		op := backup.Operation{ID: fmt.Sprintf("op-%05d", i), Namespace: "ns-a", EnvironmentID: fmt.Sprintf("env-%05d", i),
			Kind: backup.OpBackup, SubjectID: "s", Phase: backup.OpQueued, Enqueues: 1, EnqueuedAt: f.now, CreatedAt: f.now, UpdatedAt: f.now}
		if err := f.st.CreateOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	perRun, total, runs := 0, 0, 0
	sentTo := map[string]int{}
	for elapsed := 5 * time.Minute; elapsed <= 4*time.Hour; elapsed += 5 * time.Minute {
		f.now = t0.Add(elapsed)
		if err := f.svc.RecoverOperations(ctx, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
		sent := f.pub.take(backup.QueueJobs)
		for _, m := range sent {
			sentTo[strings.SplitN(m.ID, "-r", 2)[0]]++
		}
		perRun, total, runs = max(perRun, len(sent)), total+len(sent), runs+1
	}
	t.Logf("%d queued operations, %d recovery runs in 4 h: %d messages sent (at most %d in one run); without backoff: %d",
		n, runs, total, perRun, n*(runs-1))
	if perRun > 500 {
		t.Errorf("one run sent %d messages, want at most 500", perRun)
	}
	if total > n*(runs-1)/10 {
		t.Errorf("sent %d messages, want far fewer than %d", total, n*(runs-1))
	}
	if len(sentTo) != n {
		t.Errorf("%d of %d operations got a resend in 4 hours; every one should have its turn", len(sentTo), n)
	}
}

func TestACauseHiddenFromUsersIsQuotedByReference(t *testing.T) {
	f := newJobFixture(t)
	stderr := errors.New(`pg_dump: error: connection to server at "10.1.2.3", port 5432 failed: FATAL: password authentication failed`)
	f.snap.errs = []error{backup.Wrap(backup.CodeInvalidState, stderr, "pg_dump could not log in to the database")}
	snap := f.create(t)
	f.deliver(t)
	got := f.snapshot(t, snap.ID).StatusMessage
	if !strings.HasPrefix(got, "pg_dump could not log in to the database (reference ") || strings.Contains(got, "10.1.2.3") || strings.Contains(got, "FATAL") {
		t.Errorf("status message %q: want the sentence and a reference, not the cause", got)
	}
}
