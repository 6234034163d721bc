package backup

import (
	"context"
	"fmt"
)

// downloadJob is the download kind of operation: its subject is the owner archive (in the snapshot's
// partition), its work the blob a DownloadMaker writes.
type downloadJob struct{ s *Service }

var _ JobKind = downloadJob{}

func (j downloadJob) Adopt(ctx context.Context, op Operation) (Subject, error) {
	var subject Subject
	_, _, err := j.s.stores.Archives.UpdateArchive(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(a Archive, ok bool) (Archive, bool, error) {
		switch {
		case !ok:
			subject = Subject{State: SubjectGone}
		case a.State == ArchiveCompleted:
			subject = Subject{State: SubjectSucceeded}
		case a.State == ArchiveFailed:
			subject = Subject{State: SubjectFailed, Reason: a.StatusMessage}
		case a.OperationID != op.ID:
			return a, false, fmt.Errorf("archive %s belongs to operation %s: %w", a.ID, a.OperationID, ErrFenced)
		case a.Fence >= op.Fence:
			return a, false, &FenceBehind{Current: a.Fence}
		default:
			subject = Subject{State: SubjectActive}
			a.Fence, a.State, a.UpdatedAt = op.Fence, ArchiveRunning, j.s.now()
			return a, true, nil
		}
		return a, false, nil
	})
	return subject, err
}

// madeDownload is what a run wrote: the blob, not yet recorded.
type madeDownload struct {
	path string
	res  DownloadResult
}

func (j downloadJob) Run(ctx context.Context, op Operation, progress func(Progress)) (any, error) {
	a, err := j.s.stores.Archives.GetArchive(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if err != nil {
		return nil, err
	}
	sn, err := j.s.stores.Snapshots.GetSnapshot(ctx, op.Namespace, op.EnvironmentID, a.SnapshotID)
	switch {
	case IsNotFound(err) || (err == nil && sn.Deleted()):
		return nil, Errorf(CodeInvalidState, "snapshot %s no longer exists", a.SnapshotID)
	case err != nil:
		return nil, err
	case sn.Status != SnapshotFinished:
		return nil, Errorf(CodeInvalidState, "snapshot %s is %s", sn.ID, sn.Status)
	}
	phase := "assembling the archive from the snapshot's dump and files"
	if a.DataType == DataDatabaseOnly {
		phase = "writing the database dump"
	}
	if err := j.Status(ctx, op, phase, &Progress{Phase: "preparing", FilesTotal: filesTotal(sn, a.DataType)}); err != nil {
		return nil, err
	}
	path := j.s.layout.Download(op.Namespace, op.EnvironmentID, sn.ID, a.ID, int(op.Fence), a.DataType)
	res, err := j.s.downloads.MakeDownload(ctx, DownloadRequest{Snapshot: sn, DataType: a.DataType, Path: path, FileName: a.FileName, Progress: progress})
	if err != nil {
		return nil, err
	}
	return madeDownload{path: path, res: res}, nil
}

func (j downloadJob) Status(ctx context.Context, op Operation, message string, p *Progress) error {
	return j.update(ctx, op, func(a *Archive) {
		if message != "" {
			a.StatusMessage = message
		}
		if p != nil {
			cp := *p
			a.Progress = &cp
		}
	})
}

func (j downloadJob) Succeed(ctx context.Context, op Operation, result any) error {
	made, ok := result.(madeDownload)
	if !ok {
		return fmt.Errorf("download result of type %T", result)
	}
	now := j.s.now()
	return j.update(ctx, op, func(a *Archive) {
		a.State, a.StatusMessage, a.Progress, a.FinishedAt = ArchiveCompleted, "", nil, now
		a.BlobPath, a.SizeBytes, a.SHA256 = made.path, made.res.SizeBytes, made.res.SHA256
		a.URLExpiresAt, a.KeepUntil = now.Add(DownloadLinkTTL), now.Add(DownloadLinkTTL)
	})
}

func (j downloadJob) Fail(ctx context.Context, op Operation, reason string) error {
	now := j.s.now()
	return j.update(ctx, op, func(a *Archive) {
		a.State, a.StatusMessage, a.Progress, a.FinishedAt = ArchiveFailed, reason, nil, now
	})
}

// Settle removes the blobs of the claims the archive does not keep, drops the reader from the
// snapshot (which can be deleted again), and tells the outcome in the activity log.
func (j downloadJob) Settle(ctx context.Context, op Operation) (Notice, error) {
	a, err := j.s.stores.Archives.GetArchive(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if err != nil && !IsNotFound(err) {
		return Notice{}, err
	}
	found := err == nil
	if found {
		for _, p := range j.s.downloadPaths(a, op.Fence) {
			if a.State == ArchiveCompleted && p == a.BlobPath {
				continue
			}
			if err := j.s.archives.DeleteBlob(ctx, p); err != nil {
				j.s.log.Warn().Err(err).Str("blob", p).Msg("could not delete a download blob of an earlier attempt; it stays until the lifecycle rule removes it")
			}
		}
		j.s.removeReader(ctx, op.Namespace, op.EnvironmentID, a.SnapshotID, op.EnvironmentID+"/"+op.ID)
	}
	act := ActivityEntry{Action: ActionDownload, Actor: op.Actor, SnapshotID: a.SnapshotID}
	if op.Phase == OpSucceeded && found {
		act.Status = ActivityFinished
		act.Message = fmt.Sprintf("%s download ready: %s, %s bytes", a.DataType, a.FileName, thousands(a.SizeBytes))
	} else {
		act.Status, act.Message = ActivityFailed, op.StatusMessage
	}
	return Notice{Activity: act}, nil
}

// update changes the archive if this claim still owns it and it has not ended; ErrFenced otherwise.
func (j downloadJob) update(ctx context.Context, op Operation, change func(*Archive)) error {
	_, wrote, err := j.s.stores.Archives.UpdateArchive(ctx, op.Namespace, op.EnvironmentID, op.SubjectID, func(a Archive, ok bool) (Archive, bool, error) {
		if !ok || a.Ended() || a.OperationID != op.ID || a.Fence != op.Fence {
			return a, false, nil
		}
		change(&a)
		a.UpdatedAt = j.s.now()
		return a, true, nil
	})
	if err == nil && !wrote {
		return ErrFenced
	}
	return err
}
