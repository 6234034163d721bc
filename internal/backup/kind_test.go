package backup_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

// probeKind is a kind of operation the service does not know: its subject lives in memory. It shows
// that claiming, leasing, retrying, recovery and settling need nothing from a kind but the contract.
type probeKind struct {
	mu      sync.Mutex
	fence   int64
	state   string // active, done, failed
	reason  string
	runs    int
	fails   []error // returned by successive runs
	settled int
}

func (p *probeKind) owned(op backup.Operation) error {
	if p.fence != op.Fence || p.state != "active" {
		return backup.ErrFenced
	}
	return nil
}

func (p *probeKind) Adopt(_ context.Context, op backup.Operation) (backup.Subject, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.state == "done":
		return backup.Subject{State: backup.SubjectSucceeded}, nil
	case p.state == "failed":
		return backup.Subject{State: backup.SubjectFailed, Reason: p.reason}, nil
	case p.fence >= op.Fence:
		return backup.Subject{}, &backup.FenceBehind{Current: p.fence}
	}
	p.fence = op.Fence
	return backup.Subject{State: backup.SubjectActive}, nil
}

func (p *probeKind) Run(_ context.Context, _ backup.Operation, progress func(backup.Progress)) (any, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runs++
	progress(backup.Progress{Phase: "probing", BytesDone: 1})
	if len(p.fails) > 0 {
		err := p.fails[0]
		p.fails = p.fails[1:]
		return nil, err
	}
	return "result", nil
}

func (p *probeKind) Status(_ context.Context, op backup.Operation, _ string, _ *backup.Progress) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.owned(op)
}

func (p *probeKind) Succeed(_ context.Context, op backup.Operation, result any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.owned(op); err != nil {
		return err
	}
	p.state = "done"
	return nil
}

func (p *probeKind) Fail(_ context.Context, op backup.Operation, reason string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.owned(op); err != nil {
		return err
	}
	p.state, p.reason = "failed", reason
	return nil
}

func (p *probeKind) Settle(_ context.Context, op backup.Operation) (backup.Notice, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.settled++
	status := backup.ActivityFinished
	if op.Phase == backup.OpFailed {
		status = backup.ActivityFailed
	}
	return backup.Notice{Activity: backup.ActivityEntry{Action: "probe", Status: status, Actor: op.Actor, Message: "probe " + string(status)}}, nil
}

func startProbe(t *testing.T, f *jobFixture, p *probeKind) backup.Operation {
	t.Helper()
	ctx := context.Background()
	f.svc.RegisterKind("probe", p)
	op := backup.Operation{ID: "01a00000-0000-7000-8000-0000000000aa", Namespace: "ns-a", EnvironmentID: envID, Kind: "probe",
		SubjectID: "p1", Phase: backup.OpQueued, Actor: "user-1", Enqueues: 1, EnqueuedAt: f.now, CreatedAt: f.now, UpdatedAt: f.now}
	if err := f.st.CreateOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Enqueue(ctx, op); err != nil {
		t.Fatal(err)
	}
	return op
}

func TestANewKindRunsOnThePipelineUnchanged(t *testing.T) {
	f := newJobFixture(t)
	p := &probeKind{state: "active", fails: []error{backup.Errorf(backup.CodeTransient, "probe busy")}}
	op := startProbe(t, f, p)
	errs := f.deliver(t) // a transient failure, retried by redelivery, then success
	if len(errs) != 2 || !backup.IsRetryable(errs[0]) || errs[1] != nil {
		t.Fatalf("deliveries %v, want a retryable error then success", errs)
	}
	got, _ := f.st.GetOperation(context.Background(), "ns-a", envID, op.ID)
	if got.Phase != backup.OpSucceeded || !got.Settled || got.Attempt != 2 || p.state != "done" || p.runs != 2 || p.settled != 1 {
		t.Errorf("operation %+v, probe %+v", got, p)
	}
	acts, _, _ := f.st.ListActivity(context.Background(), "ns-a", envID, 0, 10)
	if len(acts) == 0 || acts[0].Action != "probe" || acts[0].Status != backup.ActivityFinished {
		t.Errorf("activity %+v", acts)
	}
}

func TestANewKindIsRecovered(t *testing.T) {
	f := newJobFixture(t)
	ctx := context.Background()
	p := &probeKind{state: "active"}
	op := startProbe(t, f, p)
	f.pub.take(backup.QueueJobs) // the message is lost
	f.now = f.now.Add(10 * time.Minute)
	if err := f.svc.RecoverOperations(ctx, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	f.deliver(t)
	if got, _ := f.st.GetOperation(ctx, "ns-a", envID, op.ID); got.Phase != backup.OpSucceeded || !got.Settled || p.state != "done" {
		t.Errorf("after recovery: operation %s settled=%v, probe %s", got.Phase, got.Settled, p.state)
	}
}
