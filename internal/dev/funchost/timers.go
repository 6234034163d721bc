package funchost

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// pastDueTolerance is how late an occurrence may fire and still not be reported as past due.
const pastDueTolerance = time.Second

// timerRunner fires one timer function at its NCRONTAB occurrences. A timer never runs twice at once:
// an occurrence that comes due while the previous run is still going fires right after it, past due.
type timerRunner struct {
	fn      *Function
	inv     *invoker
	clock   Clock
	log     zerolog.Logger
	monitor bool

	run    sync.Mutex // held for the duration of an invocation
	mu     sync.Mutex
	status scheduleStatus
}

func newTimerRunner(fn *Function, inv *invoker, clock Clock, log zerolog.Logger) *timerRunner {
	monitor := fn.Schedule.MinPeriod(clock.Now()) >= time.Minute
	if fn.TriggerBinding.UseMonitor != nil {
		monitor = *fn.TriggerBinding.UseMonitor
	}
	return &timerRunner{fn: fn, inv: inv, clock: clock, monitor: monitor,
		log: log.With().Str("function", fn.Name).Logger()}
}

// loop fires the timer until stop closes.
func (t *timerRunner) loop(ctx context.Context, stop <-chan struct{}) {
	last := t.clock.Now()
	t.mu.Lock()
	t.status = scheduleStatus{Next: t.fn.Schedule.Next(last), LastUpdated: last}
	t.mu.Unlock()
	if t.fn.TriggerBinding.RunOnStartup {
		t.fire(ctx, time.Time{}, false)
	}
	for {
		due := t.fn.Schedule.Next(last)
		if due.IsZero() {
			t.log.Error().Msg("schedule has no further occurrence; timer stopped")
			return
		}
		if d := due.Sub(t.clock.Now()); d > 0 {
			tm := t.clock.NewTimer(d)
			select {
			case <-tm.C():
			case <-stop:
				tm.Stop()
				return
			}
		}
		select {
		case <-stop:
			return
		default:
		}
		now := t.clock.Now()
		pastDue := now.Sub(due) > pastDueTolerance
		t.fire(ctx, due, pastDue)
		last = due
		if pastDue {
			last = now // skip the occurrences missed meanwhile, as the real host does
		}
	}
}

// fire runs the function once; due is the occurrence (zero for on-demand and start-up runs).
// Failures are logged by the invoker and not retried.
func (t *timerRunner) fire(ctx context.Context, due time.Time, pastDue bool) {
	t.run.Lock()
	defer t.run.Unlock()
	now := t.clock.Now()
	var status *scheduleStatus
	t.mu.Lock()
	if t.monitor {
		s := t.status
		status = &s
	}
	t.mu.Unlock()
	if pastDue {
		t.log.Warn().Time("due", due).Msg("timer occurrence is past due")
	}
	call := envelopeCall{fn: t.fn, id: newInvocationID(), trigger: "timerTrigger",
		payload: timerEnvelope(t.fn, status, pastDue, now)}
	_ = t.inv.invokeEnvelope(ctx, call)
	if !due.IsZero() {
		after := t.clock.Now()
		t.mu.Lock()
		t.status = scheduleStatus{Last: due, Next: t.fn.Schedule.Next(maxTime(due, after)), LastUpdated: after}
		t.mu.Unlock()
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
