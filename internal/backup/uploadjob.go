package backup

import (
	"context"
	"fmt"
)

// uploadJob is the upload kind of operation: its subject is the uploaded snapshot (as for a backup,
// whose claiming, status and failure it shares), its work the Ingester's. Like downloads it takes no
// environment lock: it writes only the snapshot's own blobs and store objects, which backups and the
// collector already share safely.
type uploadJob struct{ backupJob }

var _ JobKind = uploadJob{}

// WarningModelVersionUnknown starts the warning of an uploaded snapshot whose model version is unknown.
const WarningModelVersionUnknown = "MODEL_VERSION_UNKNOWN"

// ingestedSnapshot is what an upload run stored: a committed, verified dump and a manifest.
type ingestedSnapshot struct {
	dump, manifest string
	res            IngestResult
}

func (j uploadJob) Run(ctx context.Context, op Operation, progress func(Progress)) (any, error) {
	s := j.s
	sn, err := s.stores.Snapshots.GetSnapshot(ctx, op.Namespace, op.EnvironmentID, op.SubjectID)
	if err != nil {
		return nil, err
	}
	u, err := s.stores.Uploads.GetUpload(ctx, op.Namespace, op.EnvironmentID, sn.UploadID)
	if IsNotFound(err) {
		return nil, Errorf(CodeInvalidState, "the upload of this snapshot no longer exists")
	} else if err != nil {
		return nil, err
	}
	if !u.RemovedAt.IsZero() {
		return nil, Errorf(CodeInvalidState, "the uploaded archive was removed before it could be validated; upload it again")
	}
	if err := j.Status(ctx, op, "validating the uploaded archive and storing it as a snapshot", &Progress{Phase: "validating"}); err != nil {
		return nil, err
	}
	fence := int(op.Fence)
	built := ingestedSnapshot{
		dump:     s.layout.SnapshotDump(op.Namespace, op.EnvironmentID, op.SubjectID, fence),
		manifest: s.layout.SnapshotManifest(op.Namespace, op.EnvironmentID, op.SubjectID, fence),
	}
	built.res, err = s.ingester.Ingest(ctx, IngestRequest{Namespace: op.Namespace, EnvironmentID: op.EnvironmentID, SnapshotID: op.SubjectID,
		UploadPath: u.BlobPath, UploadETag: u.ETag, DumpPath: built.dump, ManifestPath: built.manifest, Progress: progress})
	if err != nil {
		return nil, err
	}
	return built, nil
}

func (j uploadJob) Succeed(ctx context.Context, op Operation, result any) error {
	built, ok := result.(ingestedSnapshot)
	if !ok {
		return fmt.Errorf("upload result of type %T", result)
	}
	now, res := j.s.now(), built.res
	if res.ModelVersion == "" {
		res.Warnings = append(res.Warnings, WarningModelVersionUnknown+": the archive's .metadata names no modelVersion (or it has no .metadata), so a restore cannot tell whether the snapshot matches the environment's model")
	}
	err := j.update(ctx, op, func(sn *Snapshot) {
		sn.Status, sn.StatusMessage, sn.Progress, sn.FinishedAt = SnapshotFinished, "", nil, now
		sn.SizeBytes, sn.SHA256, sn.DatabaseSizeBytes, sn.DumpSizeBytes = res.SizeBytes, res.SHA256, res.DatabaseSizeBytes, res.DumpSizeBytes
		sn.FilesBytes, sn.FilesCount, sn.Warnings = res.FilesBytes, res.FilesCount, boundWarnings(res.Warnings)
		sn.NewFilesCount, sn.NewFilesBytes, sn.StoredBytes = res.NewFilesCount, res.NewFilesBytes, res.StoredBytes
		sn.ModelVersion, sn.UploadSHA256 = res.ModelVersion, res.ArchiveSHA256
		sn.BlobPath, sn.DumpPath, sn.ManifestPath = "", built.dump, built.manifest
	})
	if err != nil {
		return err
	}
	j.s.recordStoreSize(ctx, op.Namespace, op.EnvironmentID, res.StoreObjects, res.StoreBytes, now)
	return nil
}

// Settle removes the blobs the snapshot does not keep and the uploaded archive (validated or refused,
// it is not needed any more), and tells the outcome.
func (j uploadJob) Settle(ctx context.Context, op Operation) (Notice, error) {
	s := j.s
	sn, found, err := j.settleBlobs(ctx, op)
	if err != nil {
		return Notice{}, err
	}
	log := s.log.With().Str("operation", op.ID).Logger()
	if sn.UploadID != "" {
		if u, err := s.stores.Uploads.GetUpload(ctx, op.Namespace, op.EnvironmentID, sn.UploadID); err == nil && u.RemovedAt.IsZero() {
			if err := s.removeUploadBlob(ctx, u); err != nil {
				log.Warn().Err(err).Str("upload", u.ID).Msg("could not remove the uploaded archive; the hourly removal tries again")
			}
		}
	}
	act := ActivityEntry{Action: ActionUpload, Actor: op.Actor, SnapshotID: op.SubjectID}
	ev := &OutboundEvent{SnapshotID: op.SubjectID}
	if op.Phase == OpSucceeded {
		act.Status, ev.Type = ActivityFinished, EventSnapshotFinished
		act.Message = "uploaded snapshot accepted"
		if found {
			act.Message = fmt.Sprintf("uploaded snapshot accepted: %s, %s bytes%s", Count(sn.FilesCount, "file"), thousands(sn.SizeBytes), warningsNote(len(sn.Warnings)))
		}
	} else {
		act.Status, ev.Type = ActivityFailed, EventSnapshotFailed
		act.Message, ev.StatusMessage = "uploaded archive refused: "+op.StatusMessage, op.StatusMessage
	}
	return Notice{Activity: act, Event: ev}, nil
}
