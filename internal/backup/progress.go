package backup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Job timing.
const (
	// DefaultProgressInterval is how often progress is written (only on change) and the lease renewed
	// (only when the work advanced).
	DefaultProgressInterval = 3 * time.Second
	// DefaultStallTimeout is how long a run may go without advancing before its attempt is abandoned
	// as stalled: a hung storage or database call must not hold an environment for the 12-hour
	// function timeout. pg_dump's own lock wait (PG_LOCK_WAIT_TIMEOUT, 2 minutes) fits inside it.
	DefaultStallTimeout = 5 * time.Minute
	// maxAttempts bounds how often one job is tried before it fails for good.
	maxAttempts = 3
)

// lease is how long a claim holds without renewal: longer than the stall timeout, so that a live
// worker's watchdog always fires before recovery would consider the worker lost.
func (s *Service) lease() time.Duration { return s.stallTimeout + 4*s.progressInterval }

// errStalled is the cause of a run cancelled by the watchdog.
var errStalled = errors.New("the work stopped advancing")

// run runs the kind's work under a watchdog: progress writes renew the lease while the work advances,
// a run that does not advance for the stall timeout is cancelled and fails its attempt as transient,
// and a run whose claim was taken over is cancelled at the next write (ErrFenced).
func (s *Service) run(ctx context.Context, kind JobKind, op Operation, log zerolog.Logger) (any, error) {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Nothing is written or renewed until the work reports progress: the claim's own lease covers
	// the start, and the watchdog counts from now.
	w := &progressWriter{s: s, kind: kind, op: op, log: log, cancel: cancel, done: make(chan struct{}), advancedAt: s.now()}
	w.wg.Add(1)
	go w.loop()
	result, err := kind.Run(runCtx, op, w.report)
	w.stop()
	switch cause := context.Cause(runCtx); {
	case err == nil:
		return result, nil
	case ctx.Err() != nil:
		return nil, err // interrupted: the caller sees ctx ended
	case errors.Is(cause, ErrFenced):
		return nil, fmt.Errorf("%w: %w", ErrFenced, err)
	case errors.Is(cause, errStalled):
		return nil, Wrap(CodeTransient, err, "the work made no progress for %s, so the attempt was abandoned", s.stallTimeout)
	}
	return nil, err
}

// progressWriter persists progress at most every progress interval and only on change, renews the
// lease when the work advanced, and cancels the run when it stalls or loses its claim.
type progressWriter struct {
	s      *Service
	kind   JobKind
	op     Operation
	log    zerolog.Logger
	cancel context.CancelCauseFunc

	mu         sync.Mutex
	latest     Progress
	advancedAt time.Time // when latest last changed
	written    Progress
	renewed    Progress // progress at the last lease renewal
	done       chan struct{}
	wg         sync.WaitGroup
}

func (w *progressWriter) report(p Progress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p != w.latest {
		w.latest, w.advancedAt = p, w.s.now()
	}
}

func (w *progressWriter) loop() {
	defer w.wg.Done()
	t := time.NewTicker(w.s.progressInterval)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
			w.tick()
		}
	}
}

func (w *progressWriter) tick() {
	w.mu.Lock()
	p, advancedAt := w.latest, w.advancedAt
	advanced, changed := p != w.renewed, p != w.written
	w.mu.Unlock()
	if w.s.now().Sub(advancedAt) > w.s.stallTimeout {
		w.log.Error().Dur("stall_timeout", w.s.stallTimeout).Interface("progress", p).Msg("the work stopped advancing; abandoning the attempt")
		w.cancel(errStalled)
		return
	}
	// Bounded by the storage SDK's own timeouts; the run's ctx may be ending.
	ctx := context.WithoutCancel(context.Background())
	if advanced {
		if err := w.s.renewLease(ctx, w.op); errors.Is(err, ErrFenced) {
			w.log.Warn().Msg("the operation was claimed by another worker; stopping this attempt")
			w.cancel(ErrFenced)
			return
		} else if err != nil {
			w.log.Warn().Err(err).Msg("could not renew the operation lease")
		} else {
			w.mu.Lock()
			w.renewed = p
			w.mu.Unlock()
		}
	}
	if changed {
		if err := w.kind.Status(ctx, w.op, "", &p); errors.Is(err, ErrFenced) {
			w.cancel(ErrFenced)
			return
		} else if err == nil {
			w.mu.Lock()
			w.written = p
			w.mu.Unlock()
		}
	}
}

func (w *progressWriter) stop() {
	close(w.done)
	w.wg.Wait()
}

// renewLease extends the claim's lease; ErrFenced when the claim is no longer op's.
func (s *Service) renewLease(ctx context.Context, op Operation) error {
	_, wrote, err := s.stores.Operations.UpdateOperation(ctx, op.Namespace, op.EnvironmentID, op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok || o.Phase.Done() || o.Fence != op.Fence {
			return o, false, nil
		}
		o.LeaseUntil = s.now().Add(s.lease())
		return o, true, nil
	})
	if err == nil && !wrote {
		return ErrFenced
	}
	return err
}
