package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// The job pipeline: every long action is an operation record plus a job message; the pipeline claims,
// leases, retries, fences, ends, settles and recovers operations the same way whatever their kind.
// A kind only knows its subject record and its work (JobKind). docs/operations.md has the state
// machine and what a crash at each point leaves.

// JobKind is the contract of one kind of operation.
//
// Fencing: every method that writes the subject must make the write conditional on the claim
// (op.ID and op.Fence) and on the subject's expected state, and return an error wrapping ErrFenced
// when that condition fails, so that a worker that lost its operation cannot change anything.
type JobKind interface {
	// Adopt makes the subject owned by this claim (op.Fence) and reports where it stands: active
	// (the work is to be done), or already ended by an earlier claim that died before ending the
	// operation, or gone.
	Adopt(ctx context.Context, op Operation) (Subject, error)
	// Run does the work. It calls progress whenever the work advances (bytes, files): the lease is
	// renewed only then, and a run that stops advancing is abandoned as stalled. Errors are *Error,
	// CodeTransient when a retry may help. Run must leave nothing another attempt could mistake for
	// its own (each claim writes under its own fence).
	Run(ctx context.Context, op Operation, progress func(Progress)) (any, error)
	// Status records an informative message and/or progress on the active subject.
	Status(ctx context.Context, op Operation, message string, p *Progress) error
	// Succeed records Run's result on the subject; Fail records a final failure with a reason for users.
	Succeed(ctx context.Context, op Operation, result any) error
	Fail(ctx context.Context, op Operation, reason string) error
	// Settle runs after the operation ended (op.Phase is final): best-effort cleanup (a blob that cannot
	// be deleted is left to the sweeper, never keeps the operation open) and the notice that tells
	// about the outcome. It runs again after a crash, so it must be idempotent.
	Settle(ctx context.Context, op Operation) (Notice, error)
}

// SubjectState is where an operation's subject stands when a claim adopts it.
type SubjectState int

const (
	SubjectActive    SubjectState = iota // the work is to be done
	SubjectSucceeded                     // an earlier claim recorded success
	SubjectFailed                        // an earlier claim recorded a failure (Reason)
	SubjectGone                          // the record no longer exists (deleted)
)

// Subject is what Adopt found.
type Subject struct {
	State  SubjectState
	Reason string // why it failed, for SubjectFailed
}

// Notice tells about an operation's outcome: an activity entry and an outbound event. The pipeline
// gives both a deterministic identity (the operation and its end), so writing them again after a
// crash neither duplicates the entry nor the event.
type Notice struct {
	Activity ActivityEntry
	Event    *OutboundEvent
}

// ErrFenced says that a write was refused because the writer's claim is no longer the current one.
var ErrFenced = errors.New("the operation was taken over by another claim")

// jobMessage is the body of a job message.
type jobMessage struct {
	OperationID   string `json:"operation_id"`
	Namespace     string `json:"namespace"`
	EnvironmentID string `json:"environment_id"`
}

// HandleJob runs the job named by a job message. It is idempotent: a message for an ended operation
// only finishes settling it. It returns a retryable error only when a redelivery can help; any other
// failure is recorded on the subject and acknowledged.
func (s *Service) HandleJob(ctx context.Context, body []byte, invocation string, log zerolog.Logger) error {
	var msg jobMessage
	if err := json.Unmarshal(body, &msg); err != nil || msg.OperationID == "" || ValidateNamespace(msg.Namespace) != nil {
		log.Error().Bytes("body", body).Msg("job message without a valid operation; dropped")
		return nil
	}
	log = log.With().Str("operation", msg.OperationID).Str("environment", msg.EnvironmentID).Logger()
	c, err := s.claim(ctx, msg.Namespace, msg.EnvironmentID, msg.OperationID, invocation, true, log)
	switch {
	case err != nil:
		return s.ignoreFenced(err, log)
	case c == nil:
		log.Warn().Msg("job message for an operation that does not exist; dropped")
		return nil
	case c.ended:
		if c.op.Settled {
			log.Info().Msg("operation already ended; duplicate delivery ignored")
			return nil
		}
		return s.settle(ctx, c.op, log)
	}
	op, kind := c.op, c.kind
	log = log.With().Str("kind", string(op.Kind)).Str("subject", op.SubjectID).Int64("fence", op.Fence).Int("attempt", op.Attempt).Logger()
	if c.subject.State != SubjectActive {
		return s.endAdopted(ctx, kind, op, c.subject, log)
	}
	if op.Attempt > maxAttempts {
		return s.fail(ctx, kind, op, fmt.Sprintf("it failed %d times; giving up", maxAttempts), log)
	}
	log.Info().Msg("job started")
	result, err := s.run(ctx, kind, op, log)
	if err != nil {
		return s.attemptFailed(ctx, kind, op, err, log)
	}
	cctx := context.WithoutCancel(ctx)
	if err := kind.Succeed(cctx, op, result); err != nil {
		return s.ignoreFenced(err, log)
	}
	return s.end(cctx, kind, op, OpSucceeded, "", log)
}

// claimed is the outcome of a claim: the operation under the new fence, its kind, and where its
// subject stands; or ended when the operation had already ended.
type claimed struct {
	op      Operation
	kind    JobKind
	subject Subject
	ended   bool
}

// FenceBehind is what Adopt returns when the subject already carries a fence at least as new as the
// claim's: a concurrent claim got there first. The claim tries again above Current.
type FenceBehind struct{ Current int64 }

func (e *FenceBehind) Error() string {
	return fmt.Sprintf("the subject is already claimed under fence %d", e.Current)
}

// claim takes the operation for worker under a new fence. The subject's fence is the point where
// claims are decided: the subject is adopted first (its fence raised, conditionally), the operation
// recorded Running after, so a worker whose claim is older cannot write the subject from the moment
// a newer claim exists, even if that claim died before it recorded itself on the operation. A Running
// operation is claimed too: with sessions, a redelivery means the previous invocation ended (crash,
// timeout, lost lock). countAttempt is false for recovery's takeover, which does no work. It returns
// nil when the operation does not exist, ended=true when it has already ended.
func (s *Service) claim(ctx context.Context, namespace, envID, opID, worker string, countAttempt bool, log zerolog.Logger) (*claimed, error) {
	op, err := s.stores.Operations.GetOperation(ctx, namespace, envID, opID)
	if IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if op.Phase.Done() {
		return &claimed{op: op, ended: true}, nil
	}
	kind, ok := s.kinds[op.Kind]
	if !ok {
		log.Error().Str("kind", string(op.Kind)).Msg("operation of an unknown kind; failing it")
		return &claimed{op: op, ended: true}, s.abandonUnknownKind(ctx, op)
	}
	fence := op.Fence + 1
	var subject Subject
	for try := 0; ; try++ {
		cand := op
		cand.Fence = fence
		subject, err = kind.Adopt(ctx, cand)
		var behind *FenceBehind
		if errors.As(err, &behind) && try < 3 {
			fence = behind.Current + 1
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	now := s.now()
	var overtaken bool
	rec, wrote, err := s.stores.Operations.UpdateOperation(ctx, namespace, envID, opID, func(o Operation, ok bool) (Operation, bool, error) {
		overtaken = ok && !o.Phase.Done() && o.Fence >= fence
		if !ok || o.Phase.Done() || overtaken {
			return o, false, nil // ended, or a newer claim recorded itself first
		}
		o.Phase, o.Fence, o.Worker, o.LeaseUntil, o.UpdatedAt = OpRunning, fence, worker, now.Add(s.lease()), now
		if countAttempt {
			o.Attempt++
		}
		if o.StartedAt.IsZero() {
			o.StartedAt = now
		}
		return o, true, nil
	})
	if err != nil {
		return nil, err
	}
	if overtaken {
		return nil, fmt.Errorf("claim under fence %d: %w", fence, ErrFenced)
	}
	if !wrote { // ended meanwhile by another claim
		return &claimed{op: rec, ended: true}, nil
	}
	return &claimed{op: rec, kind: kind, subject: subject}, nil
}

// endAdopted ends an operation whose subject an earlier claim already ended (it died before ending the
// operation), or whose subject is gone.
func (s *Service) endAdopted(ctx context.Context, kind JobKind, op Operation, subject Subject, log zerolog.Logger) error {
	switch subject.State {
	case SubjectSucceeded:
		log.Warn().Msg("an earlier claim recorded success and stopped before ending the operation; ending it")
		return s.end(ctx, kind, op, OpSucceeded, "", log)
	case SubjectFailed:
		log.Warn().Msg("an earlier claim recorded a failure and stopped before ending the operation; ending it")
		return s.end(ctx, kind, op, OpFailed, subject.Reason, log)
	default:
		log.Warn().Msg("the operation's record is gone; ending the operation")
		return s.end(ctx, kind, op, OpFailed, "the record was deleted while the operation ran", log)
	}
}

// attemptFailed decides between a retry (transient error or shutdown, attempts left) and a final
// failure. An attempt interrupted by a shutdown gives its try back.
func (s *Service) attemptFailed(ctx context.Context, kind JobKind, op Operation, cause error, log zerolog.Logger) error {
	c := context.WithoutCancel(ctx)
	if errors.Is(cause, ErrFenced) {
		log.Warn().Err(cause).Msg("the operation was claimed by another worker during this attempt; leaving it to that worker")
		return nil
	}
	if ctx.Err() != nil { // the invocation ended: SIGTERM, scale-in, host restart
		if err := s.refundAttempt(c, op); err != nil {
			return s.ignoreFenced(err, log)
		}
		log.Warn().Err(cause).Msg("attempt interrupted; it will resume on redelivery")
		_ = kind.Status(c, op, fmt.Sprintf("attempt %d was interrupted (the worker is shutting down); it will resume", op.Attempt), &Progress{Phase: "retrying"})
		return Wrap(CodeTransient, cause, "attempt %d was interrupted", op.Attempt)
	}
	msg, ref := s.userMessage(cause)
	if IsRetryable(cause) && op.Attempt < maxAttempts {
		log.Warn().Err(cause).Str("ref", ref).Msg("attempt failed; asking for a redelivery")
		_ = kind.Status(c, op, fmt.Sprintf("attempt %d of %d failed: %s; retrying", op.Attempt, maxAttempts, msg), &Progress{Phase: "retrying"})
		return Wrap(CodeTransient, cause, "attempt %d", op.Attempt)
	}
	log.Error().Err(cause).Str("ref", ref).Msg("attempt failed for good")
	return s.fail(c, kind, op, msg, log)
}

// refundAttempt gives an interrupted attempt its try back, if the claim is still this one.
func (s *Service) refundAttempt(ctx context.Context, op Operation) error {
	_, wrote, err := s.stores.Operations.UpdateOperation(ctx, op.Namespace, op.EnvironmentID, op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok || o.Phase.Done() || o.Fence != op.Fence {
			return o, false, nil
		}
		o.Attempt, o.UpdatedAt = max(0, o.Attempt-1), s.now()
		return o, true, nil
	})
	if err == nil && !wrote {
		return ErrFenced
	}
	return err
}

// fail records a final failure on the subject, then ends and settles the operation.
func (s *Service) fail(ctx context.Context, kind JobKind, op Operation, reason string, log zerolog.Logger) error {
	c := context.WithoutCancel(ctx)
	if err := kind.Fail(c, op, Truncate(reason, maxStatusMessage)); err != nil {
		return s.ignoreFenced(err, log)
	}
	return s.end(c, kind, op, OpFailed, reason, log)
}

// end marks the operation ended (conditional on the claim) and settles it. The subject is always
// recorded before this, so an ended operation never leaves its subject active.
func (s *Service) end(ctx context.Context, kind JobKind, op Operation, phase OperationPhase, reason string, log zerolog.Logger) error {
	c := context.WithoutCancel(ctx)
	ended, wrote, err := s.stores.Operations.UpdateOperation(c, op.Namespace, op.EnvironmentID, op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok || o.Phase.Done() || o.Fence != op.Fence {
			return o, false, nil
		}
		now := s.now()
		o.Phase, o.StatusMessage, o.FinishedAt, o.UpdatedAt, o.LeaseUntil = phase, Truncate(reason, maxStatusMessage), now, now, time.Time{}
		return o, true, nil
	})
	if err != nil {
		return err
	}
	if !wrote {
		log.Warn().Msg("the operation was claimed by another worker before this one could end it; leaving it to that worker")
		return nil
	}
	if phase == OpFailed {
		log.Error().Str("reason", reason).Msg("operation failed")
	} else {
		log.Info().Msg("operation succeeded")
	}
	return s.settleWith(c, kind, ended, log)
}

// settle finishes what an ended operation has left to do.
func (s *Service) settle(ctx context.Context, op Operation, log zerolog.Logger) error {
	kind, ok := s.kinds[op.Kind]
	if !ok {
		return s.markSettled(ctx, op)
	}
	return s.settleWith(ctx, kind, op, log)
}

// settleWith releases the lock, lets the kind clean up and tell its notice, writes the activity entry
// and the event (both idempotent), and marks the operation settled. A failure returns a retryable
// error: the redelivery, or recovery, settles again.
func (s *Service) settleWith(ctx context.Context, kind JobKind, op Operation, log zerolog.Logger) error {
	c := context.WithoutCancel(ctx)
	s.releaseLock(c, op.Namespace, op.EnvironmentID, op.ID)
	notice, err := kind.Settle(c, op)
	if err != nil {
		return Wrap(CodeTransient, err, "settle the operation")
	}
	a := notice.Activity
	a.ID, a.Time, a.Namespace, a.EnvironmentID = op.ID+":"+string(a.Status), op.FinishedAt, op.Namespace, op.EnvironmentID
	a.Message = Truncate(a.Message, maxActivityMessage)
	if err := s.stores.Activity.AddActivity(c, a); err != nil {
		return Wrap(CodeTransient, err, "record the activity entry")
	}
	if ev := notice.Event; ev != nil {
		ev.EventID, ev.OccurredAt, ev.Namespace, ev.EnvironmentID = op.ID+":"+ev.Type, op.FinishedAt, op.Namespace, op.EnvironmentID
		ev.StatusMessage = Truncate(ev.StatusMessage, maxActivityMessage)
		if err := s.publishEvent(c, *ev); err != nil {
			return Wrap(CodeTransient, err, "publish the %s event", ev.Type)
		}
	}
	return s.markSettled(c, op)
}

func (s *Service) markSettled(ctx context.Context, op Operation) error {
	_, _, err := s.stores.Operations.UpdateOperation(ctx, op.Namespace, op.EnvironmentID, op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok || !o.Phase.Done() || o.Settled {
			return o, false, nil
		}
		o.Settled, o.UpdatedAt = true, s.now()
		return o, true, nil
	})
	return err
}

// abandonUnknownKind ends an operation no kind is registered for (a newer version wrote it, or a
// forged message): it cannot run here, and must not keep its environment locked.
func (s *Service) abandonUnknownKind(ctx context.Context, op Operation) error {
	_, _, err := s.stores.Operations.UpdateOperation(ctx, op.Namespace, op.EnvironmentID, op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok || o.Phase.Done() {
			return o, false, nil
		}
		now := s.now()
		o.Phase, o.StatusMessage, o.FinishedAt, o.UpdatedAt, o.Settled = OpFailed, "this service does not know operations of kind "+string(o.Kind), now, now, true
		return o, true, nil
	})
	if err != nil {
		return err
	}
	s.releaseLock(ctx, op.Namespace, op.EnvironmentID, op.ID)
	return nil
}

// ignoreFenced turns a fenced write into an acknowledgement: the new owner of the operation does the
// rest. Any other error is a record that could not be written, which a redelivery writes: retryable.
func (s *Service) ignoreFenced(err error, log zerolog.Logger) error {
	if errors.Is(err, ErrFenced) {
		log.Warn().Msg("the operation was claimed by another worker; this one stops without writing")
		return nil
	}
	if IsRetryable(err) {
		return err
	}
	return Wrap(CodeTransient, err, "a record could not be written")
}
