package backup

import (
	"context"
	"fmt"
	"slices"

	"github.com/rs/zerolog"
)

// dumpingMessage tells users why starting the app during a backup can be slow: pg_dump's locks.
const dumpingMessage = "dumping: pg_dump holds shared (ACCESS SHARE) locks on the app's tables until it ends, so an app " +
	"starting now may wait for them; the dump's own lock waits are bounded and a timed-out attempt is retried"

// backupJob is the backup kind of operation: its subject is the snapshot record, its work the archive.
type backupJob struct{ s *Service }

var _ JobKind = backupJob{}

// builtSnapshot is what a backup run made: a committed, verified dump and a manifest, not yet recorded.
type builtSnapshot struct {
	dump, manifest string
	res            SnapshotResult
}

func (b backupJob) Adopt(ctx context.Context, op Operation) (Subject, error) {
	var subject Subject
	_, _, err := b.s.stores.Snapshots.UpdateSnapshot(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(sn Snapshot, ok bool) (Snapshot, bool, error) {
		switch {
		case !ok || sn.Deleted():
			subject = Subject{State: SubjectGone}
		case sn.Status == SnapshotFinished:
			subject = Subject{State: SubjectSucceeded}
		case sn.Status == SnapshotFailed:
			subject = Subject{State: SubjectFailed, Reason: sn.StatusMessage}
		case sn.OperationID != op.ID:
			return sn, false, fmt.Errorf("snapshot %s belongs to operation %s: %w", sn.ID, sn.OperationID, ErrFenced)
		case sn.Fence >= op.Fence:
			return sn, false, &FenceBehind{Current: sn.Fence}
		default:
			subject = Subject{State: SubjectActive}
			sn.Fence, sn.UpdatedAt = op.Fence, b.s.now()
			return sn, true, nil
		}
		return sn, false, nil
	})
	return subject, err
}

func (b backupJob) Run(ctx context.Context, op Operation, progress func(Progress)) (any, error) {
	env, err := b.s.stores.Environments.GetEnvironment(ctx, op.Namespace, op.EnvironmentID)
	if IsNotFound(err) {
		return nil, Errorf(CodeInvalidState, "the environment no longer exists")
	} else if err != nil {
		return nil, err
	}
	if err := b.Status(ctx, op, dumpingMessage, &Progress{Phase: "dumping"}); err != nil {
		return nil, err
	}
	// Each claim writes its own blobs: a worker that lost its claim cannot mix blocks with the new one.
	fence := int(op.Fence)
	built := builtSnapshot{
		dump:     b.s.layout.SnapshotDump(op.Namespace, op.EnvironmentID, op.SubjectID, fence),
		manifest: b.s.layout.SnapshotManifest(op.Namespace, op.EnvironmentID, op.SubjectID, fence),
	}
	built.res, err = b.s.snapshotter.Create(ctx, SnapshotRequest{Environment: env, SnapshotID: op.SubjectID,
		DumpPath: built.dump, ManifestPath: built.manifest, Progress: progress})
	if err != nil {
		return nil, err
	}
	return built, nil
}

func (b backupJob) Status(ctx context.Context, op Operation, message string, p *Progress) error {
	return b.update(ctx, op, func(sn *Snapshot) {
		if message != "" {
			sn.StatusMessage = message
		}
		if p != nil {
			cp := *p
			sn.Progress = &cp
		}
	})
}

func (b backupJob) Succeed(ctx context.Context, op Operation, result any) error {
	built, ok := result.(builtSnapshot)
	if !ok {
		return fmt.Errorf("backup result of type %T", result)
	}
	now, res := b.s.now(), built.res
	err := b.update(ctx, op, func(sn *Snapshot) {
		sn.Status, sn.StatusMessage, sn.Progress, sn.FinishedAt = SnapshotFinished, "", nil, now
		sn.SizeBytes, sn.SHA256, sn.DatabaseSizeBytes, sn.DumpSizeBytes = res.SizeBytes, res.SHA256, res.DatabaseSizeBytes, res.DumpSizeBytes
		sn.FilesBytes, sn.FilesCount, sn.Warnings = res.FilesBytes, res.FilesCount, boundWarnings(res.Warnings)
		sn.NewFilesCount, sn.NewFilesBytes, sn.StoredBytes = res.NewFilesCount, res.NewFilesBytes, res.StoredBytes
		sn.BlobPath, sn.DumpPath, sn.ManifestPath = "", built.dump, built.manifest
	})
	if err != nil {
		return err
	}
	b.s.recordStoreSize(ctx, op.Namespace, op.EnvironmentID, res.StoreObjects, res.StoreBytes, now)
	return nil
}

func (b backupJob) Fail(ctx context.Context, op Operation, reason string) error {
	now := b.s.now()
	return b.update(ctx, op, func(sn *Snapshot) {
		sn.Status, sn.StatusMessage, sn.Progress, sn.FinishedAt = SnapshotFailed, reason, nil, now
		sn.BlobPath, sn.DumpPath, sn.ManifestPath = "", "", ""
		sn.ExpiresAt = b.s.calendar.FailedExpiresAt(sn.CreatedAt) // whatever their kind
	})
}

// Settle removes the blobs the snapshot does not keep (other attempts', or all of a failed one) and
// tells the outcome. A blob that cannot be deleted is left to the sweeper.
func (b backupJob) Settle(ctx context.Context, op Operation) (Notice, error) {
	sn, found, err := b.settleBlobs(ctx, op)
	if err != nil {
		return Notice{}, err
	}

	act := ActivityEntry{Action: ActionBackup, Actor: op.Actor, SnapshotID: op.SubjectID}
	ev := &OutboundEvent{SnapshotID: op.SubjectID}
	if op.Phase == OpSucceeded {
		act.Status, ev.Type = ActivityFinished, EventSnapshotFinished
		act.Message = "snapshot finished"
		if found {
			act.Message = fmt.Sprintf("snapshot finished: %s", Count(sn.FilesCount, "file"))
			if sn.Incremental() {
				act.Message += fmt.Sprintf(" (%s new)", thousands(int64(sn.NewFilesCount)))
			}
			act.Message += fmt.Sprintf(", %s bytes%s", thousands(sn.SizeBytes), warningsNote(len(sn.Warnings)))
		}
	} else {
		act.Status, ev.Type = ActivityFailed, EventSnapshotFailed
		act.Message, ev.StatusMessage = op.StatusMessage, op.StatusMessage
		if found && sn.Status == SnapshotFailed {
			if err := b.s.retryFailedAutomatic(ctx, sn); err != nil {
				return Notice{}, err
			}
		}
	}
	return Notice{Activity: act, Event: ev}, nil
}

// settleBlobs removes the blobs of the operation's snapshot that it does not keep (other attempts', or
// all of a failed one) and returns the snapshot; found is false when it is gone or being deleted.
func (b backupJob) settleBlobs(ctx context.Context, op Operation) (Snapshot, bool, error) {
	sn, err := b.s.stores.Snapshots.GetSnapshot(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if IsNotFound(err) {
		sn, err = Snapshot{}, nil
	} else if err != nil {
		return Snapshot{}, false, err
	}
	found := sn.ID != "" && !sn.Deleted()
	var keep []string
	if found && sn.Status == SnapshotFinished {
		keep = sn.Blobs()
	}
	b.s.removeSnapshotBlobs(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, keep, b.s.log.With().Str("operation", op.ID).Logger())
	return sn, found, nil
}

// update changes the snapshot if this claim still owns it and it is Processing; ErrFenced otherwise.
func (b backupJob) update(ctx context.Context, op Operation, change func(*Snapshot)) error {
	_, wrote, err := b.s.stores.Snapshots.UpdateSnapshot(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(sn Snapshot, ok bool) (Snapshot, bool, error) {
		if !ok || sn.Deleted() || sn.Status != SnapshotProcessing || sn.OperationID != op.ID || sn.Fence != op.Fence {
			return sn, false, nil
		}
		change(&sn)
		sn.UpdatedAt = b.s.now()
		return sn, true, nil
	})
	if err == nil && !wrote {
		return ErrFenced
	}
	return err
}

// removeSnapshotBlobs deletes every blob of a snapshot but those in keep, best effort: what fails (an
// immutability policy, a legal hold, a 403) is logged and left to the sweeper.
func (s *Service) removeSnapshotBlobs(ctx context.Context, namespace, envID, snapshotID string, keep []string, log zerolog.Logger) bool {
	paths, err := s.archives.ListSnapshotBlobs(ctx, namespace, envID, snapshotID)
	if err != nil {
		log.Warn().Err(err).Str("snapshot", snapshotID).Msg("could not list the snapshot's blobs; the sweeper will remove them")
		return false
	}
	all := true
	for _, p := range paths {
		if slices.Contains(keep, p) {
			continue
		}
		if err := s.archives.DeleteBlob(ctx, p); err != nil {
			log.Warn().Err(err).Str("blob", p).Msg("could not delete a blob; the sweeper will try again")
			all = false
		}
	}
	return all
}
