package backup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

// injector wraps the stores and the publisher, counts every write a job makes (record updates,
// deletions, activity entries, events) and runs inject once, just before write number at. It also
// checks that no write ever changes a snapshot that has ended.
type injector struct {
	mu        sync.Mutex
	writes    int
	at        int
	inject    func()
	injecting bool
	violation []string
	// owner is the worker whose claim is the newest: the last to raise the snapshot's fence.
	owner string
}

// workerKey carries the name of the worker making a call, so the stores can tell who writes.
type workerKey struct{}

func as(ctx context.Context, worker string) context.Context {
	return context.WithValue(ctx, workerKey{}, worker)
}

func workerOf(ctx context.Context) string { w, _ := ctx.Value(workerKey{}).(string); return w }

// write notes a new claim, or checks that a write comes from the newest claim.
func (in *injector) write(ctx context.Context, what string, raisesFence bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	w := workerOf(ctx)
	if raisesFence {
		in.owner = w
		return
	}
	if in.owner != "" && w != in.owner {
		in.violation = append(in.violation, fmt.Sprintf("%s by %s after %s claimed the operation", what, w, in.owner))
	}
}

// before counts a write and runs the injection when its turn comes. The injection's own writes are
// not counted.
func (in *injector) before() {
	in.mu.Lock()
	if in.injecting {
		in.mu.Unlock()
		return
	}
	in.writes++
	run := in.writes == in.at && in.inject != nil
	if run {
		in.injecting = true
	}
	in.mu.Unlock()
	if run {
		in.inject()
		in.mu.Lock()
		in.injecting = false
		in.mu.Unlock()
	}
}

func (in *injector) violated(format string, args ...any) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.violation = append(in.violation, fmt.Sprintf(format, args...))
}

type injSnapshots struct {
	backup.SnapshotStore
	in *injector
}

func (s injSnapshots) UpdateSnapshot(ctx context.Context, ns, env, id string, fn backup.UpdateFunc[backup.Snapshot]) (backup.Snapshot, bool, error) {
	s.in.before()
	return s.SnapshotStore.UpdateSnapshot(ctx, ns, env, id, func(cur backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
		next, write, err := fn(cur, ok)
		if write && ok {
			s.in.write(ctx, "snapshot write", next.Fence > cur.Fence)
		}
		if write && ok && cur.Status != backup.SnapshotProcessing && next.Status != cur.Status {
			s.in.violated("snapshot %s changed from %s to %s after it ended", id, cur.Status, next.Status)
		}
		if write && ok && cur.Status == backup.SnapshotFinished && next.DumpPath != cur.DumpPath {
			s.in.violated("Finished snapshot %s moved from blob %s to %s", id, cur.DumpPath, next.DumpPath)
		}
		return next, write, err
	})
}

func (s injSnapshots) DeleteSnapshot(ctx context.Context, ns, env, id string) error {
	s.in.before()
	return s.SnapshotStore.DeleteSnapshot(ctx, ns, env, id)
}

type injOperations struct {
	backup.OperationStore
	in *injector
}

func (s injOperations) UpdateOperation(ctx context.Context, ns, env, id string, fn backup.UpdateFunc[backup.Operation]) (backup.Operation, bool, error) {
	s.in.before()
	return s.OperationStore.UpdateOperation(ctx, ns, env, id, func(cur backup.Operation, ok bool) (backup.Operation, bool, error) {
		next, write, err := fn(cur, ok)
		// Bookkeeping that any worker may do: recovery's resend count, settling an ended operation.
		bookkeeping := next.Enqueues != cur.Enqueues || (next.Settled && !cur.Settled)
		if write && ok && !bookkeeping {
			// A write that raises the operation's fence is a claim; any other must come from the newest.
			s.in.write(ctx, "operation write ("+string(cur.Phase)+" to "+string(next.Phase)+")", next.Fence > cur.Fence)
		}
		if write && ok && cur.Phase.Done() && next.Phase != cur.Phase {
			s.in.violated("operation %s changed from %s to %s after it ended", id, cur.Phase, next.Phase)
		}
		return next, write, err
	})
}

func (s injOperations) UpdateLock(ctx context.Context, ns, env string, fn backup.UpdateFunc[backup.Lock]) (backup.Lock, bool, error) {
	s.in.before()
	return s.OperationStore.UpdateLock(ctx, ns, env, fn)
}

type injActivity struct {
	backup.ActivityStore
	in *injector
}

func (s injActivity) AddActivity(ctx context.Context, e backup.ActivityEntry) error {
	s.in.before()
	return s.ActivityStore.AddActivity(ctx, e)
}

type injPublisher struct {
	*fakePublisher
	in *injector
}

func (p injPublisher) Publish(ctx context.Context, entity string, msgs ...backup.Message) error {
	p.in.before()
	return p.fakePublisher.Publish(ctx, entity, msgs...)
}

type injBlobs struct {
	*fakeBlobs
	in *injector
}

func (b injBlobs) DeleteBlob(ctx context.Context, p string) error {
	b.in.before()
	return b.fakeBlobs.DeleteBlob(ctx, p)
}

// fencingCase is one path through a job and one kind of interference.
type fencingCase struct {
	name string
	// snapErr is what worker A's build returns (nil: success).
	snapErr error
	// lastAttempt makes worker A's claim the last attempt, so that recovery takes the operation over
	// (and fails it) instead of sending the job again.
	lastAttempt bool
	// interfere runs between two of worker A's writes.
	interfere func(f *jobFixture, msg backup.Message)
}

// secondClaim is a redelivery of the job message (A's lock on it was lost), run to its end by worker B.
func secondClaim(f *jobFixture, msg backup.Message) {
	_ = f.svc.HandleJob(as(context.Background(), "worker-B"), msg.Body, "worker-B", zerolog.Nop())
}

// interruptedClaim is a redelivery claimed by worker B, whose invocation then ends (a shutdown) before
// it gets anywhere: B holds the newest claim but does nothing more.
func interruptedClaim(f *jobFixture, msg backup.Message) {
	ctx, cancel := context.WithCancel(as(context.Background(), "worker-B"))
	b := backup.NewService(backup.Deps{Stores: f.svc2Stores, Publisher: f.pub, Snapshotter: cancellingSnapshotter{cancel},
		Archives: f.blobs, Layout: layout{}, Now: func() time.Time { return f.now }, Log: zerolog.Nop(), ProgressInterval: time.Hour})
	_ = b.HandleJob(ctx, msg.Body, "worker-B", zerolog.Nop())
}

// cancellingSnapshotter ends its invocation as soon as the build starts.
type cancellingSnapshotter struct{ cancel context.CancelFunc }

func (c cancellingSnapshotter) Create(ctx context.Context, _ backup.SnapshotRequest) (backup.SnapshotResult, error) {
	c.cancel()
	return backup.SnapshotResult{}, ctx.Err()
}

// claimOnly is a redelivery whose worker B dies right after its claim.
func claimOnly(f *jobFixture, msg backup.Message) {
	var m struct {
		OperationID string `json:"operation_id"`
	}
	_ = json.Unmarshal(msg.Body, &m)
	_ = f.svc.ClaimOnly(as(context.Background(), "worker-B"), "ns-a", envID, m.OperationID, "worker-B")
}

// takeover is recovery finding A's lease over on the last attempt: it takes the operation over and
// fails it.
func takeover(f *jobFixture, _ backup.Message) {
	f.now = f.now.Add(time.Hour)
	_ = f.svc.RecoverOperations(as(context.Background(), "recovery"), zerolog.Nop())
}

// TestNoWriteAfterLosingTheClaim injects a second claim, or recovery's takeover, between every pair of
// writes of the success and the failure paths, and checks that whatever happens, everything ends
// consistent: the snapshot Finished with the blob it names (and nothing else) or Failed with no blob,
// the operation ended and settled, the lock free, exactly one FINISHED or FAILED activity entry and
// one matching event, and no ended record ever changed.
func TestNoWriteAfterLosingTheClaim(t *testing.T) {
	cases := []fencingCase{
		{name: "success, second claim", interfere: secondClaim},
		{name: "success, takeover", lastAttempt: true, interfere: takeover},
		{name: "permanent failure, second claim", snapErr: backup.Errorf(backup.CodeInvalidState, "pg_dump was refused access"), interfere: secondClaim},
		{name: "permanent failure, takeover", snapErr: backup.Errorf(backup.CodeInvalidState, "pg_dump was refused access"), lastAttempt: true, interfere: takeover},
		{name: "transient failure, second claim", snapErr: backup.Errorf(backup.CodeTransient, "storage busy"), interfere: secondClaim},
		{name: "success, interrupted second claim", interfere: interruptedClaim},
		{name: "success, second claim that dies", interfere: claimOnly},
		{name: "permanent failure, second claim that dies", snapErr: backup.Errorf(backup.CodeInvalidState, "pg_dump was refused access"), interfere: claimOnly},
		{name: "permanent failure, interrupted second claim", snapErr: backup.Errorf(backup.CodeInvalidState, "pg_dump was refused access"), interfere: interruptedClaim},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A dry run counts worker A's writes on this path.
			total := runFencingCase(t, tc, 0).writes
			t.Logf("%d writes on this path", total)
			if total < 4 {
				t.Fatalf("only %d writes counted on the path; the wrapper misses some", total)
			}
			for at := 1; at <= total+1; at++ {
				t.Run(fmt.Sprintf("before write %d of %d", at, total), func(t *testing.T) {
					runFencingCase(t, tc, at)
				})
			}
		})
	}
}

func runFencingCase(t *testing.T, tc fencingCase, at int) *injector {
	t.Helper()
	ctx := context.Background()
	f := newJobFixture(t)
	in := &injector{at: at}
	stores := f.st.Stores()
	stores.Snapshots = injSnapshots{SnapshotStore: stores.Snapshots, in: in}
	stores.Operations = injOperations{OperationStore: stores.Operations, in: in}
	stores.Activity = injActivity{ActivityStore: stores.Activity, in: in}
	f.svc = backup.NewService(backup.Deps{Stores: stores, Publisher: injPublisher{f.pub, in}, Snapshotter: f.snap,
		Archives: injBlobs{f.blobs, in}, Layout: layout{}, Now: func() time.Time { return f.now }, Log: zerolog.Nop(),
		ProgressInterval: time.Hour})
	f.svc2Stores = stores
	snap := f.create(t)
	msg := f.pub.take(backup.QueueJobs)[0]
	if tc.lastAttempt {
		_, _, _ = f.st.UpdateOperation(ctx, "ns-a", envID, snap.OperationID, func(o backup.Operation, ok bool) (backup.Operation, bool, error) {
			o.Attempt = 2
			return o, true, nil
		})
	}
	if tc.snapErr != nil {
		f.snap.errs = []error{tc.snapErr}
	}
	in.inject = func() { tc.interfere(f, msg) }
	in.mu.Lock()
	in.writes = 0
	in.mu.Unlock()

	_ = f.svc.HandleJob(as(ctx, "worker-A"), msg.Body, "worker-A", zerolog.Nop())
	if at == 0 {
		return in
	}
	in.inject = nil
	// Let the system come to rest: redeliveries, recovery runs, then the sweeper past its grace.
	for round := 0; round < 6; round++ {
		for _, m := range f.pub.take(backup.QueueJobs) {
			for d := 0; d < 5; d++ {
				w := fmt.Sprintf("worker-r%d-%d", round, d)
				if err := f.svc.HandleJob(as(ctx, w), m.Body, w, zerolog.Nop()); err == nil || !backup.IsRetryable(err) {
					break
				}
			}
		}
		f.now = f.now.Add(3 * time.Hour)
		if err := f.svc.RecoverOperations(as(ctx, "recovery"), zerolog.Nop()); err != nil {
			t.Fatalf("recovery: %v", err)
		}
	}
	f.sweepAfterGrace(t)
	checkAtRest(t, f, in, snap)
	return in
}

func checkAtRest(t *testing.T, f *jobFixture, in *injector, snap backup.Snapshot) {
	t.Helper()
	ctx := context.Background()
	for _, v := range in.violation {
		t.Error(v)
	}
	op, err := f.st.GetOperation(ctx, "ns-a", envID, snap.OperationID)
	if err != nil || !op.Phase.Done() || !op.Settled {
		t.Errorf("operation not ended and settled: %+v (%v)", op, err)
	}
	if lock, _ := f.st.GetLock(ctx, "ns-a", envID); lock.OperationID != "" {
		t.Errorf("lock still held by %s", lock.OperationID)
	}
	sn := f.snapshot(t, snap.ID)
	blobs, _ := f.blobs.ListSnapshotBlobs(ctx, "ns-a", envID, snap.ID)
	var wantActivity backup.ActivityStatus
	var wantEvent string
	switch sn.Status {
	case backup.SnapshotFinished:
		wantActivity, wantEvent = backup.ActivityFinished, backup.EventSnapshotFinished
		if !f.blobs.has(sn.DumpPath) {
			t.Errorf("Finished snapshot points at a missing blob %s", sn.DumpPath)
		}
		if sn.SHA256 != "sha-of-"+sn.DumpPath {
			t.Errorf("Finished snapshot's SHA-256 %q was not computed from its blob %s", sn.SHA256, sn.DumpPath)
		}
		if !slices.Equal(blobs, sn.Blobs()) {
			t.Errorf("blobs of the Finished snapshot after the sweep: %v, want only %v", blobs, sn.Blobs())
		}
		if op.Phase != backup.OpSucceeded {
			t.Errorf("snapshot Finished but operation %s", op.Phase)
		}
	case backup.SnapshotFailed:
		wantActivity, wantEvent = backup.ActivityFailed, backup.EventSnapshotFailed
		if sn.DumpPath != "" || len(blobs) != 0 {
			t.Errorf("Failed snapshot with blob %q and blobs %v", sn.DumpPath, blobs)
		}
		if op.Phase != backup.OpFailed {
			t.Errorf("snapshot Failed but operation %s", op.Phase)
		}
	default:
		t.Fatalf("snapshot still %s", sn.Status)
	}
	acts, _, _ := f.st.ListActivity(ctx, "ns-a", envID, 0, 100)
	var ends []backup.ActivityStatus
	for _, a := range acts {
		if a.SnapshotID == snap.ID && a.Status != backup.ActivityStarted {
			ends = append(ends, a.Status)
		}
	}
	if len(ends) != 1 || ends[0] != wantActivity {
		t.Errorf("activity ends %v, want exactly one %s", ends, wantActivity)
	}
	seen := map[string]string{}
	for _, m := range f.pub.msgs[backup.TopicBackupEvents] {
		seen[m.ID] = string(m.Body) // duplicate detection drops a repeated MessageId
	}
	var types []string
	for _, body := range seen {
		for _, typ := range []string{backup.EventSnapshotFinished, backup.EventSnapshotFailed} {
			if strings.Contains(body, `"`+typ+`"`) {
				types = append(types, typ)
			}
		}
	}
	if len(types) != 1 || types[0] != wantEvent {
		t.Errorf("events %v, want exactly one %s", types, wantEvent)
	}
}
