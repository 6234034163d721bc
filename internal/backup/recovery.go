package backup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/rs/zerolog"
)

// Recovery timing.
const (
	// resendAfter is how long an operation may wait for its message (Queued) or go without a lease
	// (Running) before recovery sends its job again; each further resend waits twice as long, up to
	// maxResendInterval, so a long backlog is not sent again every run.
	resendAfter       = 5 * time.Minute
	maxResendInterval = 2 * time.Hour
	// maxResendsPerRun bounds the messages one recovery run sends (oldest first); the rest wait for the
	// next run.
	maxResendsPerRun = 500
	// operationRetention is how long a settled operation is kept (for operators) before it is pruned.
	operationRetention = 30 * 24 * time.Hour
	// pruneBatch bounds the operations one recovery run deletes.
	pruneBatch = 1000
)

// RecoverOperations finds operations whose message was lost, whose worker died or whose settling was
// interrupted, and sends their job again, takes them over and fails them when their attempts are used
// up, or settles them, so that nothing stays Processing forever and no environment stays locked. It
// also prunes old settled operations. Run by a timer.
func (s *Service) RecoverOperations(ctx context.Context, log zerolog.Logger) error {
	ops, err := s.stores.Operations.ListActiveOperations(ctx)
	if err != nil {
		return err
	}
	// Oldest first: with a per-run cap on resends, every operation gets its turn.
	sort.Slice(ops, func(i, j int) bool { return lastSent(ops[i]).Before(lastSent(ops[j])) })
	now := s.now()
	var errs []error
	resends := 0
	for _, op := range ops {
		l := log.With().Str("operation", op.ID).Str("environment", op.EnvironmentID).Str("kind", string(op.Kind)).Logger()
		switch {
		case op.Phase.Done():
			l.Warn().Msg("ended operation was not settled; settling it")
			errs = append(errs, s.settle(ctx, op, l))
		case op.Phase == OpRunning && now.After(op.LeaseUntil) && op.Attempt >= maxAttempts:
			l.Warn().Msg("worker lost on the last attempt; failing the operation")
			errs = append(errs, s.failLost(ctx, op, l))
		case !resendDue(op, now):
		case resends >= maxResendsPerRun:
			l.Debug().Msg("resend due; left for the next run (this run's resends are used up)")
		case op.Phase == OpQueued:
			l.Warn().Int("enqueues", op.Enqueues).Msg("queued operation has not started; sending its job again")
			resends++
			errs = append(errs, s.resend(ctx, op))
		case op.Phase == OpRunning && now.After(op.LeaseUntil):
			l.Warn().Time("lease_until", op.LeaseUntil).Msg("worker lost; sending the job again")
			resends++
			errs = append(errs, s.resend(ctx, op))
		}
	}
	if n, err := s.stores.Operations.PruneOperations(ctx, now.Add(-operationRetention), pruneBatch); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		log.Info().Int("pruned", n).Msg("old settled operations deleted")
	}
	return errors.Join(errs...)
}

// lastSent is when op's job was last sent (its creation for records from before the count).
func lastSent(op Operation) time.Time {
	if op.EnqueuedAt.IsZero() {
		return op.CreatedAt
	}
	return op.EnqueuedAt
}

// resendDue reports whether op waited long enough since its last message (and, when Running, since its
// lease passed): resendAfter after the first, twice as long after each further one.
func resendDue(op Operation, now time.Time) bool {
	since := lastSent(op)
	if op.Phase == OpRunning && op.LeaseUntil.After(since) {
		since = op.LeaseUntil
	}
	interval := resendAfter
	for i := 1; i < op.Enqueues && interval < maxResendInterval; i++ {
		interval *= 2
	}
	return now.Sub(since) > min(interval, maxResendInterval)
}

// resend sends op's job again. Its MessageId is the operation id and the send's number: distinct from
// earlier sends (which may be inside the duplicate-detection window), the same if this send is retried.
func (s *Service) resend(ctx context.Context, op Operation) error {
	n := op.Enqueues + 1
	if err := s.enqueue(ctx, op, fmt.Sprintf("%s-r%d", op.ID, n)); err != nil {
		return err
	}
	_, _, err := s.stores.Operations.UpdateOperation(ctx, op.Namespace, op.EnvironmentID, op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok || o.Phase.Done() || o.Enqueues >= n {
			return o, false, nil
		}
		o.Enqueues, o.EnqueuedAt = n, s.now()
		return o, true, nil
	})
	return err
}

// failLost takes over an operation whose worker was lost on its last attempt and fails it. The
// takeover is a claim (a new fence), so the worker, if it was only slow, can no longer write.
func (s *Service) failLost(ctx context.Context, op Operation, log zerolog.Logger) error {
	c, err := s.claim(ctx, op.Namespace, op.EnvironmentID, op.ID, "recovery", false, log)
	switch {
	case err != nil:
		return s.ignoreFenced(err, log)
	case c == nil:
		return nil
	case c.ended:
		if c.op.Settled {
			return nil
		}
		return s.settle(ctx, c.op, log)
	case c.subject.State != SubjectActive:
		return s.endAdopted(ctx, c.kind, c.op, c.subject, log)
	}
	return s.fail(ctx, c.kind, c.op, fmt.Sprintf("the worker stopped responding during attempt %d of %d", op.Attempt, maxAttempts), log)
}
