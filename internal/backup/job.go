package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Job timing. A worker renews its lease with every progress write; recovery treats a Running operation
// whose lease passed as abandoned.
const (
	leaseDuration    = 3 * time.Minute
	progressInterval = 3 * time.Second
	// maxAttempts bounds how often one backup is tried (claims by workers) before it fails for good.
	maxAttempts = 3
	// queuedGrace is how long a Queued operation may wait for its message before recovery re-sends it.
	queuedGrace = 5 * time.Minute
)

// dumpingMessage tells users why starting the app during a backup can be slow: pg_dump's locks.
const dumpingMessage = "dumping: pg_dump holds shared (ACCESS SHARE) locks on the app's tables until it ends, so an app " +
	"starting now may wait for them; the dump's own lock waits are bounded and a timed-out attempt is retried"

// HandleBackupJob runs the job named by a backup-jobs message. It is idempotent: a message for a
// finished operation does nothing. It returns a retryable error only when a redelivery can help; any
// other failure is recorded on the snapshot and acknowledged.
func (s *Service) HandleBackupJob(ctx context.Context, body []byte, invocation string, log zerolog.Logger) error {
	var msg jobMessage
	if err := json.Unmarshal(body, &msg); err != nil || msg.OperationID == "" {
		log.Error().Bytes("body", body).Msg("backup job message without an operation id; dropped")
		return nil
	}
	log = log.With().Str("operation", msg.OperationID).Str("environment", msg.EnvironmentID).Logger()
	op, err := s.claim(ctx, msg, invocation)
	if err != nil {
		return err
	}
	if op == nil {
		log.Info().Msg("operation already finished; duplicate delivery ignored")
		return nil
	}
	log = log.With().Str("snapshot", op.SubjectID).Int("attempt", op.Attempt).Logger()
	if closed, err := s.reconcile(ctx, *op, log); closed || err != nil {
		return err
	}
	if op.Attempt > maxAttempts {
		return s.finishFailed(ctx, *op, fmt.Sprintf("the backup failed %d times; giving up", maxAttempts), log)
	}
	env, err := s.stores.Environments.GetEnvironment(ctx, op.Namespace, op.EnvironmentID)
	if err != nil {
		if IsNotFound(err) {
			return s.finishFailed(ctx, *op, "the environment no longer exists", log)
		}
		return err
	}
	// A previous attempt may have committed a blob and died before recording it: start clean.
	if err := s.archives.DeleteSnapshotBlobs(ctx, op.Namespace, op.EnvironmentID, op.SubjectID); err != nil {
		return err
	}
	log.Info().Msg("backup started")
	s.updateSnapshot(ctx, *op, func(sn *Snapshot) { sn.StatusMessage = dumpingMessage })
	progress := s.newProgressWriter(*op, invocation, log)
	blobPath := s.layout.SnapshotArchive(op.Namespace, op.EnvironmentID, op.SubjectID, op.Attempt)
	res, err := s.snapshotter.Create(ctx, SnapshotRequest{Environment: env, BlobPath: blobPath, Progress: progress.report})
	progress.stop()
	if err != nil {
		return s.attemptFailed(ctx, *op, err, log)
	}
	return s.finishSucceeded(ctx, *op, blobPath, res, log)
}

// claim moves the operation to Running under this invocation. It returns nil when the operation is
// already done. A Running operation is taken over: with sessions, a redelivery means the previous
// invocation ended (crash, timeout); each attempt writes its own blob, so a stray old worker cannot mix
// with the new one, and it can no longer finish the record (stillOwned).
func (s *Service) claim(ctx context.Context, msg jobMessage, invocation string) (*Operation, error) {
	if err := ValidateNamespace(msg.Namespace); err != nil {
		return nil, nil
	}
	op, wrote, err := s.stores.Operations.UpdateOperation(ctx, msg.Namespace, msg.EnvironmentID, msg.OperationID,
		func(o Operation, ok bool) (Operation, bool, error) {
			if !ok || o.Phase.Done() {
				return o, false, nil
			}
			now := s.now()
			o.Phase, o.Attempt, o.Worker, o.LeaseUntil, o.UpdatedAt = OpRunning, o.Attempt+1, invocation, now.Add(leaseDuration), now
			if o.StartedAt.IsZero() {
				o.StartedAt = now
			}
			return o, true, nil
		})
	if err != nil || !wrote {
		return nil, err
	}
	return &op, nil
}

// attemptFailed decides between a retry (transient error, attempts left) and a final failure.
func (s *Service) attemptFailed(ctx context.Context, op Operation, cause error, log zerolog.Logger) error {
	c := context.WithoutCancel(ctx)
	if owned, err := s.stillOwned(c, op); err != nil {
		return err
	} else if !owned {
		log.Warn().Err(cause).Msg("attempt failed after another worker took the backup over; leaving it to that worker")
		return nil
	}
	if err := s.archives.DeleteSnapshotBlobs(c, op.Namespace, op.EnvironmentID, op.SubjectID); err != nil {
		log.Warn().Err(err).Msg("could not delete the failed attempt's blob")
	}
	interrupted := errors.Is(cause, context.Canceled) || ctx.Err() != nil
	if (IsRetryable(cause) || interrupted) && op.Attempt < maxAttempts {
		msg := fmt.Sprintf("attempt %d of %d failed: %s; retrying", op.Attempt, maxAttempts, userMessage(cause))
		if interrupted {
			msg = fmt.Sprintf("attempt %d was interrupted (the worker is shutting down); it will resume", op.Attempt)
		}
		log.Warn().Err(cause).Msg("backup attempt failed; asking for a redelivery")
		s.updateSnapshot(c, op, func(sn *Snapshot) { sn.StatusMessage = msg; sn.Progress = &Progress{Phase: "retrying"} })
		return Wrap(CodeTransient, cause, "backup attempt %d", op.Attempt)
	}
	return s.finishFailed(c, op, userMessage(cause), log)
}

// finishFailed records a final failure: snapshot Failed, operation Failed, blobs gone, lock released,
// activity and event written. It returns nil (the message is acknowledged) unless a store failed, in
// which case the redelivery finishes the job. The snapshot is written before the operation ends, so an
// ended operation never leaves its snapshot Processing.
func (s *Service) finishFailed(ctx context.Context, op Operation, reason string, log zerolog.Logger) error {
	c := context.WithoutCancel(ctx)
	// A snapshot that already ended keeps its end (and a Finished one its archive).
	if closed, err := s.reconcile(c, op, log); closed || err != nil {
		return err
	}
	if err := s.archives.DeleteSnapshotBlobs(c, op.Namespace, op.EnvironmentID, op.SubjectID); err != nil {
		return err // retry: a Failed record must not leave a blob behind
	}
	now := s.now()
	err := s.updateSnapshot(c, op, func(sn *Snapshot) {
		sn.Status, sn.StatusMessage, sn.Progress, sn.FinishedAt = SnapshotFailed, truncate(reason, 2000), nil, now
		sn.ExpiresAt = sn.CreatedAt.AddDate(0, 0, 14) // failed snapshots expire after 14 days whatever their kind
		sn.BlobPath = ""
	})
	if err != nil {
		return Wrap(CodeTransient, err, "record the failed snapshot")
	}
	return s.closeFailed(c, op, reason, log)
}

// closeFailed ends a failed operation whose snapshot is already recorded Failed.
func (s *Service) closeFailed(ctx context.Context, op Operation, reason string, log zerolog.Logger) error {
	if err := s.endOperation(ctx, op, OpFailed, reason); err != nil {
		return err
	}
	s.releaseLock(ctx, op.Namespace, op.EnvironmentID, op.ID)
	log.Error().Str("reason", reason).Msg("backup failed")
	s.activity(ctx, ActivityEntry{Namespace: op.Namespace, EnvironmentID: op.EnvironmentID, Time: s.now(), Action: ActionBackup,
		Status: ActivityFailed, Actor: op.Actor, SnapshotID: op.SubjectID, Message: truncate(reason, 1000)})
	s.event(ctx, EventSnapshotFailed, op, reason, log)
	return nil
}

// reconcile closes an operation whose snapshot already reached its end: a worker records the snapshot
// first and ends the operation after, so one that died in between leaves a Finished or Failed snapshot
// behind a running operation, which recovery sends again. It does what that worker had left to do and
// reports closed. A snapshot record that is gone (deleted once Finished) ends the operation too.
func (s *Service) reconcile(ctx context.Context, op Operation, log zerolog.Logger) (closed bool, err error) {
	c := context.WithoutCancel(ctx)
	sn, err := s.stores.Snapshots.GetSnapshot(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	switch {
	case IsNotFound(err):
		log.Warn().Msg("the snapshot record is gone; closing its operation")
		return true, s.closeDeleted(c, op)
	case err != nil:
		return true, err
	case sn.Status == SnapshotFinished:
		log.Warn().Msg("the snapshot was recorded Finished by a worker that stopped before closing the operation; closing it")
		return true, s.closeSucceeded(c, op, sn, log)
	case sn.Status == SnapshotFailed:
		log.Warn().Msg("the snapshot was recorded Failed by a worker that stopped before closing the operation; closing it")
		return true, s.closeFailed(c, op, sn.StatusMessage, log)
	}
	return false, nil
}

// takeOver makes worker the owner of op if it is still as seen (same worker and attempt, lease over),
// so that the worker presumed dead can no longer finish it (stillOwned). It returns nil when op changed.
func (s *Service) takeOver(ctx context.Context, op Operation, worker string) (*Operation, error) {
	next, wrote, err := s.stores.Operations.UpdateOperation(ctx, op.Namespace, op.EnvironmentID, op.ID,
		func(o Operation, ok bool) (Operation, bool, error) {
			if !ok || o.Phase.Done() || o.Worker != op.Worker || o.Attempt != op.Attempt || !s.now().After(o.LeaseUntil) {
				return o, false, nil
			}
			o.Worker, o.UpdatedAt = worker, s.now()
			return o, true, nil
		})
	if err != nil || !wrote {
		return nil, err
	}
	return &next, nil
}

// stillOwned reports whether this worker's claim on op is still the current one: another worker may
// have taken the operation over (a redelivery after this one was presumed dead).
func (s *Service) stillOwned(ctx context.Context, op Operation) (bool, error) {
	cur, err := s.stores.Operations.GetOperation(ctx, op.Namespace, op.EnvironmentID, op.ID)
	if err != nil {
		return false, err
	}
	return cur.Worker == op.Worker && cur.Attempt == op.Attempt && !cur.Phase.Done(), nil
}

func (s *Service) finishSucceeded(ctx context.Context, op Operation, blobPath string, res SnapshotResult, log zerolog.Logger) error {
	c := context.WithoutCancel(ctx)
	if owned, err := s.stillOwned(c, op); err != nil {
		return err
	} else if !owned {
		log.Warn().Msg("another worker took this backup over; discarding this attempt's archive")
		return s.archives.DeleteBlob(c, blobPath)
	}
	now := s.now()
	var stillOurs bool
	finished, _, err := s.stores.Snapshots.UpdateSnapshot(c, op.Namespace, op.EnvironmentID, op.SubjectID, func(sn Snapshot, ok bool) (Snapshot, bool, error) {
		if !ok {
			return sn, false, nil
		}
		stillOurs = true
		sn.Status, sn.StatusMessage, sn.Progress, sn.FinishedAt, sn.UpdatedAt = SnapshotFinished, "", nil, now, now
		sn.SizeBytes, sn.SHA256, sn.DatabaseSizeBytes, sn.DumpSizeBytes = res.SizeBytes, res.SHA256, res.DatabaseSizeBytes, res.DumpSizeBytes
		sn.FilesBytes, sn.FilesCount, sn.Warnings, sn.BlobPath = res.FilesBytes, res.FilesCount, res.Warnings, blobPath
		return sn, true, nil
	})
	if err != nil {
		return err
	}
	if !stillOurs {
		log.Warn().Msg("snapshot record vanished while the backup ran; removing the archive")
		return s.closeDeleted(c, op)
	}
	return s.closeSucceeded(c, op, finished, log)
}

// closeDeleted ends an operation whose snapshot record is gone, with the blobs it may have left.
func (s *Service) closeDeleted(ctx context.Context, op Operation) error {
	if err := s.archives.DeleteSnapshotBlobs(ctx, op.Namespace, op.EnvironmentID, op.SubjectID); err != nil {
		return err
	}
	if err := s.endOperation(ctx, op, OpFailed, "the snapshot was deleted"); err != nil {
		return err
	}
	s.releaseLock(ctx, op.Namespace, op.EnvironmentID, op.ID)
	return nil
}

// closeSucceeded ends an operation whose snapshot is already recorded Finished.
func (s *Service) closeSucceeded(ctx context.Context, op Operation, sn Snapshot, log zerolog.Logger) error {
	if err := s.endOperation(ctx, op, OpSucceeded, ""); err != nil {
		return err
	}
	s.releaseLock(ctx, op.Namespace, op.EnvironmentID, op.ID)
	log.Info().Int64("size", sn.SizeBytes).Int("files", sn.FilesCount).Msg("backup finished")
	msg := fmt.Sprintf("snapshot finished: %d files, %d bytes", sn.FilesCount, sn.SizeBytes)
	if len(sn.Warnings) > 0 {
		msg += fmt.Sprintf(", %d warnings", len(sn.Warnings))
	}
	s.activity(ctx, ActivityEntry{Namespace: op.Namespace, EnvironmentID: op.EnvironmentID, Time: s.now(), Action: ActionBackup,
		Status: ActivityFinished, Actor: op.Actor, SnapshotID: op.SubjectID, Message: msg})
	s.event(ctx, EventSnapshotFinished, op, "", log)
	return nil
}

// endOperation marks the operation done, unless another worker took it over meanwhile.
func (s *Service) endOperation(ctx context.Context, op Operation, phase OperationPhase, reason string) error {
	_, _, err := s.stores.Operations.UpdateOperation(ctx, op.Namespace, op.EnvironmentID, op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok || o.Phase.Done() {
			return o, false, nil
		}
		now := s.now()
		o.Phase, o.StatusMessage, o.FinishedAt, o.UpdatedAt, o.LeaseUntil = phase, truncate(reason, 2000), now, now, time.Time{}
		return o, true, nil
	})
	return err
}

// updateSnapshot changes the operation's snapshot while it is Processing. Callers for which the change
// is only informative (status messages) ignore the error, which is logged here.
func (s *Service) updateSnapshot(ctx context.Context, op Operation, change func(*Snapshot)) error {
	_, _, err := s.stores.Snapshots.UpdateSnapshot(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(sn Snapshot, ok bool) (Snapshot, bool, error) {
		if !ok || sn.Status != SnapshotProcessing {
			return sn, false, nil
		}
		change(&sn)
		sn.UpdatedAt = s.now()
		return sn, true, nil
	})
	if err != nil {
		s.log.Warn().Err(err).Str("snapshot", op.SubjectID).Msg("could not update the snapshot record")
	}
	return err
}

func (s *Service) event(ctx context.Context, typ string, op Operation, message string, log zerolog.Logger) {
	ev := OutboundEvent{Type: typ, EventID: op.ID + ":" + typ, OccurredAt: s.now(), Namespace: op.Namespace,
		EnvironmentID: op.EnvironmentID, SnapshotID: op.SubjectID, StatusMessage: truncate(message, 1000)}
	if err := s.publishEvent(ctx, ev); err != nil {
		log.Warn().Err(err).Str("type", typ).Msg("could not publish the outbound event")
	}
}

// userMessage is the part of an error a user can act on.
func userMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Error()
	}
	return err.Error()
}

// progressWriter persists progress at most every progressInterval and only on change, renewing the
// operation's lease each time.
type progressWriter struct {
	s          *Service
	op         Operation
	invocation string
	log        zerolog.Logger

	mu      sync.Mutex
	latest  Progress
	written Progress
	done    chan struct{}
	wg      sync.WaitGroup
}

func (s *Service) newProgressWriter(op Operation, invocation string, log zerolog.Logger) *progressWriter {
	w := &progressWriter{s: s, op: op, invocation: invocation, log: log, done: make(chan struct{}), latest: Progress{Phase: "dumping"}}
	w.wg.Add(1)
	go w.loop()
	return w
}

func (w *progressWriter) report(p Progress) {
	w.mu.Lock()
	w.latest = p
	w.mu.Unlock()
}

func (w *progressWriter) loop() {
	defer w.wg.Done()
	t := time.NewTicker(progressInterval)
	defer t.Stop()
	w.flush()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
			w.flush()
		}
	}
}

func (w *progressWriter) flush() {
	w.mu.Lock()
	p, changed := w.latest, w.latest != w.written
	w.written = w.latest
	w.mu.Unlock()
	ctx := context.Background() // bounded by the storage SDK's own timeouts; the job's ctx may be ending
	_, _, err := w.s.stores.Operations.UpdateOperation(ctx, w.op.Namespace, w.op.EnvironmentID, w.op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok || o.Phase.Done() || o.Worker != w.invocation {
			return o, false, nil
		}
		o.LeaseUntil = w.s.now().Add(leaseDuration)
		return o, true, nil
	})
	if err != nil {
		w.log.Warn().Err(err).Msg("could not renew the operation lease")
	}
	if changed {
		w.s.updateSnapshot(ctx, w.op, func(sn *Snapshot) { sn.Progress = &p })
	}
}

func (w *progressWriter) stop() {
	close(w.done)
	w.wg.Wait()
}

// RecoverOperations finds operations whose message was lost or whose worker died and re-enqueues them,
// or fails them when their attempts are used up, so that nothing stays Processing forever and no
// environment stays locked. Run by a timer.
func (s *Service) RecoverOperations(ctx context.Context, log zerolog.Logger) error {
	ops, err := s.stores.Operations.ListActiveOperations(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	var errs []error
	for _, op := range ops {
		l := log.With().Str("operation", op.ID).Str("environment", op.EnvironmentID).Logger()
		switch {
		case op.Phase == OpQueued && now.Sub(op.CreatedAt) > queuedGrace:
			l.Warn().Msg("queued operation never started; sending its message again")
			errs = append(errs, s.enqueue(ctx, op, fmt.Sprintf("%s-recover-%d", op.ID, now.Unix())))
		case op.Phase == OpRunning && now.After(op.LeaseUntil):
			if op.Attempt >= maxAttempts {
				l.Warn().Msg("worker lost on the last attempt; failing the operation")
				taken, err := s.takeOver(ctx, op, "recovery")
				if err == nil && taken != nil {
					err = s.finishFailed(ctx, *taken, fmt.Sprintf("the worker stopped responding during attempt %d of %d", op.Attempt, maxAttempts), l)
				}
				errs = append(errs, err)
				continue
			}
			l.Warn().Time("lease_until", op.LeaseUntil).Msg("worker lost; sending the job again")
			errs = append(errs, s.enqueue(ctx, op, fmt.Sprintf("%s-recover-%d", op.ID, now.Unix())))
		}
	}
	return errors.Join(errs...)
}
