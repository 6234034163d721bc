package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
)

// restoreJob is the restore kind of operation: its subject is the restore record (in the target's
// partition), its work RestoreWorker's. The record's Step says how far the work got; docs/restore.md
// has the state machine and what a crash at each point leaves.
type restoreJob struct{ s *Service }

var _ JobKind = restoreJob{}

func (j restoreJob) Adopt(ctx context.Context, op Operation) (Subject, error) {
	var subject Subject
	_, _, err := j.s.stores.Restores.UpdateRestore(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(r Restore, ok bool) (Restore, bool, error) {
		switch {
		case !ok:
			subject = Subject{State: SubjectGone}
		case r.State == RestoreCompleted:
			subject = Subject{State: SubjectSucceeded}
		case r.State == RestoreFailed:
			subject = Subject{State: SubjectFailed, Reason: r.StatusMessage}
		case r.OperationID != op.ID:
			return r, false, fmt.Errorf("restore %s belongs to operation %s: %w", r.ID, r.OperationID, ErrFenced)
		case r.Fence >= op.Fence:
			return r, false, &FenceBehind{Current: r.Fence}
		default:
			subject = Subject{State: SubjectActive}
			now := j.s.now()
			r.Fence, r.State, r.UpdatedAt = op.Fence, RestoreRunning, now
			if r.StartedAt.IsZero() {
				r.StartedAt = now
			}
			return r, true, nil
		}
		return r, false, nil
	})
	return subject, err
}

// restoreWork loads what a step of the restore works on: the record, the target and the snapshot. A
// snapshot record that is gone leaves Snapshot zero: rolling back, undoing and discarding need only the
// restore and the target (the plan and the databases are named after the restore).
func (s *Service) restoreWork(ctx context.Context, namespace, envID, restoreID string) (RestoreWork, error) {
	rec, err := s.stores.Restores.GetRestore(ctx, namespace, envID, restoreID)
	if err != nil {
		return RestoreWork{}, err
	}
	target, err := s.stores.Environments.GetEnvironment(ctx, namespace, envID)
	if IsNotFound(err) {
		return RestoreWork{}, Errorf(CodeInvalidState, "the environment no longer exists")
	} else if err != nil {
		return RestoreWork{}, err
	}
	w := RestoreWork{Restore: rec, Target: target}
	snap, err := s.stores.Snapshots.GetSnapshot(ctx, namespace, rec.SourceEnvironmentID, rec.SourceSnapshotID)
	if err == nil {
		w.Snapshot = snap
	} else if !IsNotFound(err) {
		return RestoreWork{}, err
	}
	return w, nil
}

func (j restoreJob) Run(ctx context.Context, op Operation, progress func(Progress)) (any, error) {
	w, err := j.s.restoreWork(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if err != nil {
		return nil, err
	}
	w.Progress = progress
	if w.Target.Database.Name != w.Restore.Database {
		return nil, Errorf(CodeInvalidState, "the environment's database is now %q where the restore began with %q", w.Target.Database.Name, w.Restore.Database)
	}
	if w.Restore.Step == StepRollingBack {
		// An earlier claim decided the restore failed and could not finish the rollback: finish it.
		return nil, Errorf(CodeInvalidState, "%s", w.Restore.StatusMessage)
	}
	if w.Restore.Step == StepCommitting {
		// An earlier claim verified everything and may have swapped the databases: finish the swap.
		return nil, j.commit(ctx, op, w)
	}
	if err := stopped(w.Target, "restore"); err != nil {
		return nil, err
	}
	if w.Snapshot.ID == "" || w.Snapshot.Deleted() {
		return nil, Errorf(CodeInvalidState, "snapshot %s no longer exists", w.Restore.SourceSnapshotID)
	}
	if err := j.update(ctx, op, func(r *Restore) {
		r.Step, r.StatusMessage, r.Progress = StepRestoring, "restoring the database into a new database and the files into the environment's container", &Progress{Phase: "restoring", FilesTotal: r.FilesCount}
	}); err != nil {
		return nil, err
	}
	out, err := j.s.restorer.Restore(ctx, w)
	if err != nil {
		return nil, err
	}
	// The target may have been started while the restore ran: the swap would end its sessions.
	if w.Target, err = j.s.stores.Environments.GetEnvironment(ctx, op.Namespace, op.EnvironmentID); err != nil {
		return nil, err
	}
	if err := stopped(w.Target, "restore"); err != nil {
		return nil, err
	}
	if err := j.update(ctx, op, func(r *Restore) {
		r.Step, r.StatusMessage, r.Progress = StepCommitting, "verified; putting the restored database in place", &Progress{Phase: "committing",
			BytesDone: out.DatabaseBytes, FilesDone: r.FilesCount, FilesTotal: r.FilesCount}
		r.DatabaseBytes, r.Tables, r.Rows = out.DatabaseBytes, out.Tables, out.Rows
		r.FilesAdded, r.FilesReplaced, r.FilesUnchanged = out.FilesAdded, out.FilesReplaced, out.FilesUnchanged
		r.Warnings = boundWarnings(append(r.Warnings, out.Warnings...))
	}); err != nil {
		return nil, err
	}
	return nil, j.commit(ctx, op, w)
}

// commit swaps the databases; the record says committing already, so a crash from here resumes here.
func (j restoreJob) commit(ctx context.Context, op Operation, w RestoreWork) error {
	return j.s.restorer.Commit(ctx, w)
}

// stopped refuses work on an environment that is not stopped: a swap ends every session on its database.
func stopped(env Environment, what string) error {
	if env.State != StateStopped {
		return Errorf(CodeInvalidState, "the environment was %s during the %s: stop the app first, and ask again", strings.ToLower(string(env.State)), what)
	}
	return nil
}

func (j restoreJob) Status(ctx context.Context, op Operation, message string, p *Progress) error {
	return j.update(ctx, op, func(r *Restore) {
		if message != "" {
			r.StatusMessage = message
		}
		if p != nil {
			cp := *p
			r.Progress = &cp
		}
	})
}

func (j restoreJob) Succeed(ctx context.Context, op Operation, _ any) error {
	now := j.s.now()
	return j.update(ctx, op, func(r *Restore) {
		r.State, r.Step, r.StatusMessage, r.Progress, r.FinishedAt = RestoreCompleted, StepCommitted, "", nil, now
		r.UndoUntil = now.Add(j.s.restoreUndo)
	})
}

// Fail puts the target back as it was, from whatever step the record names, and only then records the
// failure: a restore that failed never leaves the target half-restored. A rollback that fails returns
// its error, so the operation stays open and the rollback is tried again (redelivery or recovery).
func (j restoreJob) Fail(ctx context.Context, op Operation, reason string) error {
	rec, err := j.s.stores.Restores.GetRestore(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if err != nil {
		return err
	}
	if rec.State != RestoreRunning && rec.State != RestoreQueued || rec.OperationID != op.ID || rec.Fence != op.Fence {
		return ErrFenced
	}
	touched := rec.Step != StepNone
	if touched {
		if rec.Step == StepRollingBack {
			reason = rec.StatusMessage // the failure an earlier claim decided on
		} else if err := j.update(ctx, op, func(r *Restore) {
			r.Step, r.StatusMessage, r.Progress = StepRollingBack, reason, &Progress{Phase: "rolling back"}
		}); err != nil {
			return err
		}
		w, err := j.s.restoreWork(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
		if err != nil {
			return fmt.Errorf("load the restore to roll it back: %w", err)
		}
		if err := j.s.restorer.Revert(ctx, w); err != nil {
			return fmt.Errorf("roll the restore back: %w", err)
		}
	}
	now := j.s.now()
	return j.update(ctx, op, func(r *Restore) {
		r.State, r.Progress, r.FinishedAt = RestoreFailed, nil, now
		r.StatusMessage = reason
		if touched {
			r.Step = StepRolledBack
			r.StatusMessage = reason + "; the environment's database and files are as they were before the restore"
		}
	})
}

// Settle lets go of the snapshot and tells the outcome.
func (j restoreJob) Settle(ctx context.Context, op Operation) (Notice, error) {
	rec, err := j.s.stores.Restores.GetRestore(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if err != nil && !IsNotFound(err) {
		return Notice{}, err
	}
	found := err == nil
	if found {
		j.s.removeReader(ctx, op.Namespace, rec.SourceEnvironmentID, rec.SourceSnapshotID, op.EnvironmentID+"/"+op.ID)
		if rec.Step == StepRolledBack {
			j.s.discardAfterRevert(ctx, rec)
		}
	}
	act := ActivityEntry{Action: ActionRestore, Actor: op.Actor, SnapshotID: rec.SourceSnapshotID, RestoreID: op.SubjectID}
	ev := &OutboundEvent{SnapshotID: rec.SourceSnapshotID, RestoreID: op.SubjectID}
	if op.Phase == OpSucceeded {
		act.Status, ev.Type = ActivityFinished, EventRestoreFinished
		act.Message = "restore finished"
		if found {
			act.Message = fmt.Sprintf("restore finished: %s rows in %s, %s (%s added, %s replaced, %s unchanged)%s; it can be undone until %s",
				thousands(rec.Rows), Count(rec.Tables, "table"), Count(rec.FilesCount, "file"), thousands(int64(rec.FilesAdded)),
				thousands(int64(rec.FilesReplaced)), thousands(int64(rec.FilesUnchanged)), warningsNote(len(rec.Warnings)),
				rec.UndoUntil.Format("2006-01-02 15:04 MST"))
		}
	} else {
		act.Status, ev.Type = ActivityFailed, EventRestoreFailed
		act.Message, ev.StatusMessage = op.StatusMessage, op.StatusMessage
		if found && rec.Step == StepRolledBack {
			act.Message = rec.StatusMessage
		}
	}
	return Notice{Activity: act, Event: ev}, nil
}

// update changes the restore if this claim still owns it and it runs; ErrFenced otherwise.
func (j restoreJob) update(ctx context.Context, op Operation, change func(*Restore)) error {
	_, wrote, err := j.s.stores.Restores.UpdateRestore(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(r Restore, ok bool) (Restore, bool, error) {
		if !ok || r.State != RestoreRunning || r.OperationID != op.ID || r.Fence != op.Fence {
			return r, false, nil
		}
		change(&r)
		r.UpdatedAt = j.s.now()
		return r, true, nil
	})
	if err == nil && !wrote {
		return ErrFenced
	}
	return err
}

// undoJob is the undo kind of operation: its subject is the restore record too, claimed through the
// record's undo fields (UndoOperationID, UndoFence), so that it never competes with the restore's own.
type undoJob struct{ s *Service }

var _ JobKind = undoJob{}

func (u undoJob) Adopt(ctx context.Context, op Operation) (Subject, error) {
	var subject Subject
	_, _, err := u.s.stores.Restores.UpdateRestore(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(r Restore, ok bool) (Restore, bool, error) {
		switch {
		case !ok:
			subject = Subject{State: SubjectGone}
		case r.UndoOperationID != op.ID:
			return r, false, fmt.Errorf("restore %s is being undone by operation %s: %w", r.ID, r.UndoOperationID, ErrFenced)
		case r.Step == StepUndone:
			subject = Subject{State: SubjectSucceeded}
		case r.UndoState == RestoreFailed:
			subject = Subject{State: SubjectFailed, Reason: r.UndoMessage}
		case r.UndoFence >= op.Fence:
			return r, false, &FenceBehind{Current: r.UndoFence}
		default:
			subject = Subject{State: SubjectActive}
			r.UndoFence, r.UndoState, r.UpdatedAt = op.Fence, RestoreRunning, u.s.now()
			return r, true, nil
		}
		return r, false, nil
	})
	return subject, err
}

func (u undoJob) Run(ctx context.Context, op Operation, progress func(Progress)) (any, error) {
	w, err := u.s.restoreWork(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if err != nil {
		return nil, err
	}
	w.Progress = progress
	if w.Restore.Step != StepCommitted {
		return nil, Errorf(CodeInvalidState, "the restore's undo data is no longer kept (it is %s)", w.Restore.Step)
	}
	if err := stopped(w.Target, "undo"); err != nil {
		return nil, err
	}
	if err := u.Status(ctx, op, "putting the environment back as it was before the restore", &Progress{Phase: "undoing"}); err != nil {
		return nil, err
	}
	return nil, u.s.restorer.Revert(ctx, w)
}

func (u undoJob) Status(ctx context.Context, op Operation, message string, p *Progress) error {
	return u.update(ctx, op, func(r *Restore) {
		if message != "" {
			r.UndoMessage = message
		}
		if p != nil {
			cp := *p
			r.Progress = &cp
		}
	})
}

func (u undoJob) Succeed(ctx context.Context, op Operation, _ any) error {
	now := u.s.now()
	return u.update(ctx, op, func(r *Restore) {
		r.Step, r.UndoState, r.UndoMessage, r.Progress, r.UndoneAt, r.UndoneBy = StepUndone, RestoreCompleted, "", nil, now, op.Actor
	})
}

// Fail records the failure; the undo data is kept (Revert is idempotent), so the user can undo again.
func (u undoJob) Fail(ctx context.Context, op Operation, reason string) error {
	return u.update(ctx, op, func(r *Restore) {
		r.UndoState, r.Progress = RestoreFailed, nil
		r.UndoMessage = reason + "; the undo data is kept: undo again to finish putting the environment back"
	})
}

func (u undoJob) Settle(ctx context.Context, op Operation) (Notice, error) {
	rec, err := u.s.stores.Restores.GetRestore(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if err != nil && !IsNotFound(err) {
		return Notice{}, err
	}
	if err == nil && rec.Step == StepUndone {
		u.s.discardAfterRevert(ctx, rec)
	}
	act := ActivityEntry{Action: ActionUndo, Actor: op.Actor, SnapshotID: rec.SourceSnapshotID, RestoreID: op.SubjectID}
	if op.Phase == OpSucceeded {
		act.Status, act.Message = ActivityFinished, "restore undone: the environment's database and files are as they were before it"
	} else {
		act.Status, act.Message = ActivityFailed, op.StatusMessage
	}
	return Notice{Activity: act}, nil
}

// update changes the restore if this claim still owns its undo and the undo runs; ErrFenced otherwise.
func (u undoJob) update(ctx context.Context, op Operation, change func(*Restore)) error {
	_, wrote, err := u.s.stores.Restores.UpdateRestore(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(r Restore, ok bool) (Restore, bool, error) {
		if !ok || r.UndoState != RestoreRunning || r.UndoOperationID != op.ID || r.UndoFence != op.Fence {
			return r, false, nil
		}
		change(&r)
		r.UpdatedAt = u.s.now()
		return r, true, nil
	})
	if err == nil && !wrote {
		return ErrFenced
	}
	return err
}

// discardAfterRevert drops the plan and the undo area of a restore that was rolled back or undone:
// the target is as before, so nothing needs them. Best effort: what is left is only storage.
func (s *Service) discardAfterRevert(ctx context.Context, rec Restore) {
	w, err := s.restoreWork(ctx, rec.Namespace, rec.EnvironmentID, rec.ID)
	if err == nil {
		err = s.restorer.Discard(ctx, w)
	}
	if err != nil {
		s.log.Warn().Err(err).Str("restore", rec.ID).Msg("could not drop the plan and undo area of a reverted restore")
	}
}

// maxDiscardsPerRun bounds the restores one run of DiscardRestoreUndo handles; the rest wait an hour.
const maxDiscardsPerRun = 200

// DiscardRestoreUndo drops the undo data (previous database, saved files, plan) of completed restores
// whose grace period passed. A restore whose undo is running or failed is left: its data is what the
// undo needs. Run by an hourly timer; a run that dies half-way is finished by the next (Discard is
// idempotent and the record changes last).
func (s *Service) DiscardRestoreUndo(ctx context.Context, log zerolog.Logger) (int, error) {
	due, err := s.stores.Restores.ListUndoDue(ctx, s.now(), maxDiscardsPerRun)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, rec := range due {
		l := log.With().Str("restore", rec.ID).Str("environment", rec.EnvironmentID).Logger()
		if rec.UndoState == RestoreQueued || rec.UndoState == RestoreRunning || rec.UndoState == RestoreFailed {
			l.Info().Str("undo", string(rec.UndoState)).Msg("grace period passed, but an undo needs the data; kept")
			continue
		}
		w, err := s.restoreWork(ctx, rec.Namespace, rec.EnvironmentID, rec.ID)
		if err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", rec.ID, err))
			continue
		}
		if err := s.restorer.Discard(ctx, w); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", rec.ID, err))
			continue
		}
		_, _, err = s.stores.Restores.UpdateRestore(ctx, rec.Namespace, rec.EnvironmentID, rec.ID, func(r Restore, ok bool) (Restore, bool, error) {
			if !ok || r.Step != StepCommitted || r.UndoState == RestoreQueued || r.UndoState == RestoreRunning {
				return r, false, nil
			}
			r.Step, r.DiscardedAt, r.UpdatedAt = StepDiscarded, s.now(), s.now()
			return r, true, nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
		l.Info().Msg("restore undo data dropped after the grace period")
	}
	return n, errors.Join(errs...)
}
