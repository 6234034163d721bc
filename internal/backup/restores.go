package backup

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultRestoreUndo is how long a completed restore can be undone (RESTORE_UNDO_HOURS): the previous
// database and the overwritten files are kept that long.
const DefaultRestoreUndo = 24 * time.Hour

// Operation kinds of restores.
const (
	OpRestore OperationKind = "restore"
	OpUndo    OperationKind = "undo"
)

// WarningModelVersionMismatch starts the warning of a restore whose snapshot was made with another
// model version than the target runs.
const WarningModelVersionMismatch = "MODEL_VERSION_MISMATCH"

// maxReaders bounds the operations recorded as reading one snapshot at once.
const maxReaders = 20

// RestoreRequest is what a user asks for: a snapshot of the namespace into the target environment.
type RestoreRequest struct {
	SnapshotID string
	// SourceEnvironmentID is the snapshot's environment; "" means the target itself.
	SourceEnvironmentID string
	// SourceNamespace, when set, must be the target's namespace (restores across namespaces are not
	// supported); "" means the target's.
	SourceNamespace string
}

// CreateRestore starts a restore of a Finished snapshot of the namespace into a stopped environment:
// it takes the target's lock, records the restore as a reader of the snapshot (which then cannot be
// deleted or expired), writes the operation and the restore record, and queues the job.
func (s *Service) CreateRestore(ctx context.Context, p Principal, namespace, targetID string, req RestoreRequest) (Restore, error) {
	target, err := s.Environment(ctx, p, namespace, targetID, PermStopApps)
	if err != nil {
		return Restore{}, err
	}
	if req.SourceNamespace != "" && req.SourceNamespace != namespace {
		return Restore{}, Errorf(CodeCrossNamespace, "the snapshot is in namespace %q and the environment in %q: a snapshot can only be restored into an environment of its own namespace", req.SourceNamespace, namespace)
	}
	if err := s.requireBackupsEnabled(ctx, namespace); err != nil {
		return Restore{}, err
	}
	snapID, err := ValidateUUID("source_snapshot_id", req.SnapshotID)
	if err != nil {
		return Restore{}, err
	}
	sourceID := target.ID
	if req.SourceEnvironmentID != "" {
		if sourceID, err = ValidateUUID("source_environment_id", req.SourceEnvironmentID); err != nil {
			return Restore{}, err
		}
	}
	if sourceID != target.ID {
		if _, err := s.stores.Environments.GetEnvironment(ctx, namespace, sourceID); IsNotFound(err) {
			return Restore{}, Errorf(CodeEnvironmentNotFound, "environment %s not found in namespace %s; a snapshot can only be restored into an environment of its own namespace", sourceID, namespace)
		} else if err != nil {
			return Restore{}, err
		}
	}
	if target.State != StateStopped {
		return Restore{}, Errorf(CodeInvalidState, "environment %s is %s: stop the app first, a restore replaces its database and files and needs it stopped", target.Name, strings.ToLower(string(target.State)))
	}
	snap, err := s.stores.Snapshots.GetSnapshot(ctx, namespace, sourceID, snapID)
	switch {
	case IsNotFound(err) || (err == nil && snap.Deleted()):
		return Restore{}, Errorf(CodeNotFound, "snapshot %s not found in environment %s", snapID, sourceID)
	case err != nil:
		return Restore{}, err
	case snap.Status != SnapshotFinished:
		return Restore{}, Errorf(CodeSnapshotNotReady, "snapshot %s is %s; only a Finished snapshot can be restored", snapID, snap.Status)
	case !snap.Incremental():
		return Restore{}, Errorf(CodeInvalidState, "snapshot %s is stored in the single-archive layout of an earlier version of this service, which restores cannot read; make a new snapshot", snapID)
	}
	var warnings []string
	if snap.ModelVersion != "" && target.ModelVersion != "" && snap.ModelVersion != target.ModelVersion {
		warnings = append(warnings, fmt.Sprintf("%s: the snapshot was made with model version %s and the environment runs %s; deploy the matching model (%s) after the restore",
			WarningModelVersionMismatch, snap.ModelVersion, target.ModelVersion, packageOf(snap.DeploymentPackage)))
	}
	now := s.now()
	opID, restoreID := newID(), newID()
	if err := s.acquireLock(ctx, namespace, target.ID, opID, OpRestore); err != nil {
		return Restore{}, err
	}
	reader := target.ID + "/" + opID
	op := Operation{ID: opID, Namespace: namespace, EnvironmentID: target.ID, Kind: OpRestore, SubjectID: restoreID,
		Phase: OpQueued, Actor: p.ID, Enqueues: 1, EnqueuedAt: now, CreatedAt: now, UpdatedAt: now}
	rec := Restore{ID: restoreID, Namespace: namespace, EnvironmentID: target.ID, SourceEnvironmentID: sourceID,
		SourceSnapshotID: snapID, State: RestoreQueued, Warnings: warnings, Progress: &Progress{Phase: "queued"},
		CreatedAt: now, UpdatedAt: now, CreatedBy: p.ID, ModelVersion: snap.ModelVersion,
		DeploymentPackage: snap.DeploymentPackage, Database: target.Database.Name, FilesCount: snap.FilesCount,
		FilesBytes: snap.FilesBytes, OperationID: opID}
	undo := func(cause error) error {
		c := context.WithoutCancel(ctx)
		_, _, _ = s.stores.Restores.UpdateRestore(c, namespace, target.ID, restoreID, func(r Restore, ok bool) (Restore, bool, error) {
			if !ok {
				return r, false, nil
			}
			r.State, r.StatusMessage, r.Progress, r.FinishedAt, r.UpdatedAt = RestoreFailed, "the restore could not be queued", nil, s.now(), s.now()
			return r, true, nil
		})
		s.abandonQueued(c, op, cause)
		s.removeReader(c, namespace, sourceID, snapID, reader)
		return cause
	}
	if err := s.stores.Operations.CreateOperation(ctx, op); err != nil {
		return Restore{}, undo(err)
	}
	if err := s.addReader(ctx, namespace, sourceID, snapID, reader); err != nil {
		return Restore{}, undo(err)
	}
	if err := s.stores.Restores.CreateRestore(ctx, rec); err != nil {
		return Restore{}, undo(err)
	}
	if err := s.enqueue(ctx, op, op.ID); err != nil {
		return Restore{}, undo(Wrap(CodeTransient, err, "the restore could not be queued; try again"))
	}
	msg := fmt.Sprintf("restore of snapshot %s started", snapID)
	if sourceID != target.ID {
		msg += " (from environment " + sourceID + ")"
	}
	s.activity(ctx, ActivityEntry{ID: opID + ":" + string(ActivityStarted), Namespace: namespace, EnvironmentID: target.ID, Time: now,
		Action: ActionRestore, Status: ActivityStarted, Actor: p.ID, SnapshotID: snapID, RestoreID: restoreID, Message: msg})
	return rec, nil
}

// packageOf names a snapshot's deployment package for the model-version warning.
func packageOf(s string) string {
	if s == "" {
		return "its deployment package is not recorded"
	}
	return s
}

// abandonQueued ends an operation that could not be queued, settled (there is nothing to tell: the
// caller gets the error), and frees its lock.
func (s *Service) abandonQueued(ctx context.Context, op Operation, cause error) {
	_, _, _ = s.stores.Operations.UpdateOperation(ctx, op.Namespace, op.EnvironmentID, op.ID, func(o Operation, ok bool) (Operation, bool, error) {
		if !ok {
			return o, false, nil
		}
		o.Phase, o.StatusMessage, o.FinishedAt, o.UpdatedAt, o.Settled = OpFailed, Truncate("could not be queued: "+cause.Error(), maxStatusMessage), s.now(), s.now(), true
		return o, true, nil
	})
	s.releaseLock(ctx, op.Namespace, op.EnvironmentID, op.ID)
}

// addReader records reader on a Finished snapshot that is not being deleted, so that it is neither
// deleted nor expired while the reader runs.
func (s *Service) addReader(ctx context.Context, namespace, envID, snapID, reader string) error {
	_, _, err := s.stores.Snapshots.UpdateSnapshot(ctx, namespace, envID, snapID, func(sn Snapshot, ok bool) (Snapshot, bool, error) {
		switch {
		case !ok || sn.Deleted():
			return sn, false, Errorf(CodeNotFound, "snapshot %s not found", snapID)
		case sn.Status != SnapshotFinished:
			return sn, false, Errorf(CodeSnapshotNotReady, "snapshot %s is %s; only a Finished snapshot can be read", snapID, sn.Status)
		case slices.Contains(sn.Readers, reader):
			return sn, false, nil
		case len(sn.Readers) >= maxReaders:
			return sn, false, Errorf(CodeEnvironmentBusy, "snapshot %s is being read by %d operations already; try again when one has ended", snapID, len(sn.Readers))
		}
		sn.Readers = append(slices.Clone(sn.Readers), reader)
		return sn, true, nil
	})
	return err
}

// removeReader drops reader from the snapshot, best effort: a reader left behind is stale once its
// operation ended, and readersActive ignores it.
func (s *Service) removeReader(ctx context.Context, namespace, envID, snapID, reader string) {
	_, _, err := s.stores.Snapshots.UpdateSnapshot(ctx, namespace, envID, snapID, func(sn Snapshot, ok bool) (Snapshot, bool, error) {
		if !ok || !slices.Contains(sn.Readers, reader) {
			return sn, false, nil
		}
		sn.Readers = slices.DeleteFunc(slices.Clone(sn.Readers), func(r string) bool { return r == reader })
		return sn, true, nil
	})
	if err != nil {
		s.log.Warn().Err(err).Str("snapshot", snapID).Str("reader", reader).Msg("could not remove a reader from the snapshot; it is ignored once its operation ended")
	}
}

// activeReader names an operation reading the snapshot that has not ended, or "" when none has.
func (s *Service) activeReader(ctx context.Context, sn Snapshot) (OperationKind, error) {
	for _, r := range sn.Readers {
		envID, opID, ok := strings.Cut(r, "/")
		if !ok {
			continue
		}
		op, err := s.stores.Operations.GetOperation(ctx, sn.Namespace, envID, opID)
		if IsNotFound(err) {
			continue
		} else if err != nil {
			return "", err
		}
		if !op.Phase.Done() {
			return op.Kind, nil
		}
	}
	return "", nil
}

// ListRestores returns a page of an environment's restores, newest first.
func (s *Service) ListRestores(ctx context.Context, p Principal, namespace, envID string, offset, limit int) ([]Restore, int, error) {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return nil, 0, err
	}
	return s.stores.Restores.ListRestores(ctx, namespace, env.ID, offset, limit)
}

// Restore returns one restore of an environment.
func (s *Service) Restore(ctx context.Context, p Principal, namespace, envID, id string) (Restore, error) {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return Restore{}, err
	}
	if id, err = ValidateUUID("restore id", id); err != nil {
		return Restore{}, err
	}
	return s.stores.Restores.GetRestore(ctx, namespace, env.ID, id)
}

// UndoRestore starts putting the target back as it was before a completed restore: the previous
// database swapped back, the files the restore added removed and those it overwrote put back. Only
// the environment's latest restore can be undone, within the grace period, with the app stopped.
func (s *Service) UndoRestore(ctx context.Context, p Principal, namespace, envID, id string) (Restore, error) {
	env, err := s.Environment(ctx, p, namespace, envID, PermStopApps)
	if err != nil {
		return Restore{}, err
	}
	if id, err = ValidateUUID("restore id", id); err != nil {
		return Restore{}, err
	}
	if err := s.requireBackupsEnabled(ctx, namespace); err != nil {
		return Restore{}, err
	}
	rec, err := s.stores.Restores.GetRestore(ctx, namespace, env.ID, id)
	if err != nil {
		return Restore{}, err
	}
	if why := rec.Undoable(s.now()); why != "" {
		return Restore{}, Errorf(CodeInvalidState, "restore %s cannot be undone: %s", id, why)
	}
	if newer, err := s.newerRestore(ctx, rec); err != nil {
		return Restore{}, err
	} else if newer != "" {
		return Restore{}, Errorf(CodeInvalidState, "restore %s cannot be undone: restore %s replaced the environment's database after it; only the latest restore can be undone", id, newer)
	}
	if env.State != StateStopped {
		return Restore{}, Errorf(CodeInvalidState, "environment %s is %s: stop the app first, an undo replaces its database and files and needs it stopped", env.Name, strings.ToLower(string(env.State)))
	}
	now := s.now()
	opID := newID()
	if err := s.acquireLock(ctx, namespace, env.ID, opID, OpUndo); err != nil {
		return Restore{}, err
	}
	op := Operation{ID: opID, Namespace: namespace, EnvironmentID: env.ID, Kind: OpUndo, SubjectID: id,
		Phase: OpQueued, Actor: p.ID, Enqueues: 1, EnqueuedAt: now, CreatedAt: now, UpdatedAt: now}
	if err := s.stores.Operations.CreateOperation(ctx, op); err != nil {
		s.abandonQueued(context.WithoutCancel(ctx), op, err)
		return Restore{}, err
	}
	out, _, err := s.stores.Restores.UpdateRestore(ctx, namespace, env.ID, id, func(r Restore, ok bool) (Restore, bool, error) {
		if !ok {
			return r, false, Errorf(CodeNotFound, "restore %s not found", id)
		}
		if why := r.Undoable(s.now()); why != "" {
			return r, false, Errorf(CodeInvalidState, "restore %s cannot be undone: %s", id, why)
		}
		r.UndoOperationID, r.UndoFence, r.UndoState, r.UndoMessage, r.UpdatedAt = opID, 0, RestoreQueued, "", s.now()
		r.Progress = &Progress{Phase: "undo queued"}
		return r, true, nil
	})
	if err != nil {
		s.abandonQueued(context.WithoutCancel(ctx), op, err)
		return Restore{}, err
	}
	if err := s.enqueue(ctx, op, op.ID); err != nil {
		c := context.WithoutCancel(ctx)
		_, _, _ = s.stores.Restores.UpdateRestore(c, namespace, env.ID, id, func(r Restore, ok bool) (Restore, bool, error) {
			if !ok || r.UndoOperationID != opID || r.UndoState != RestoreQueued {
				return r, false, nil
			}
			r.UndoState, r.UndoMessage, r.Progress, r.UpdatedAt = RestoreFailed, "the undo could not be queued; undo again", nil, s.now()
			return r, true, nil
		})
		cause := Wrap(CodeTransient, err, "the undo could not be queued; try again")
		s.abandonQueued(c, op, cause)
		return Restore{}, cause
	}
	s.activity(ctx, ActivityEntry{ID: opID + ":" + string(ActivityStarted), Namespace: namespace, EnvironmentID: env.ID, Time: now,
		Action: ActionUndo, Status: ActivityStarted, Actor: p.ID, SnapshotID: rec.SourceSnapshotID, RestoreID: id,
		Message: fmt.Sprintf("undo of restore %s started", id)})
	return out, nil
}

// newerRestore names a restore of the same environment created after rec whose change is in place
// (committed, or running and possibly committing), or "" when there is none.
func (s *Service) newerRestore(ctx context.Context, rec Restore) (string, error) {
	for offset := 0; ; offset += 100 {
		page, _, err := s.stores.Restores.ListRestores(ctx, rec.Namespace, rec.EnvironmentID, offset, 100)
		if err != nil {
			return "", err
		}
		for _, r := range page {
			if r.ID == rec.ID {
				return "", nil
			}
			// Rolled back or undone, a newer restore left the environment as rec left it.
			if r.Step != StepNone && r.Step != StepRolledBack && r.Step != StepUndone {
				return r.ID, nil
			}
		}
		if len(page) < 100 {
			return "", nil
		}
	}
}
