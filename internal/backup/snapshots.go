package backup

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/schedule"
)

// Snapshotter makes one snapshot of an environment (pg_dump to the dump blob, the file documents into
// the environment's file store, the manifest) and reads the dump back to verify it. Implemented by
// internal/snapshotter; a fake in unit tests.
type Snapshotter interface {
	// Create writes the snapshot's dump to req.DumpPath and its manifest to req.ManifestPath, and
	// returns what it wrote. It commits the dump only when everything succeeded. Errors are *Error:
	// CodeTransient when a retry may succeed.
	Create(ctx context.Context, req SnapshotRequest) (SnapshotResult, error)
}

// SnapshotRequest is the input of one snapshot.
type SnapshotRequest struct {
	Environment  Environment
	SnapshotID   string
	DumpPath     string
	ManifestPath string
	Progress     func(Progress) // called often; the caller throttles
}

// SnapshotResult describes a committed and verified snapshot.
type SnapshotResult struct {
	// SizeBytes is the snapshot's logical size: DumpSizeBytes + FilesBytes.
	SizeBytes         int64
	SHA256            string // of the dump blob as stored
	DatabaseSizeBytes int64
	DumpSizeBytes     int64 // db/db.backup, uncompressed
	DumpBlobBytes     int64 // the dump blob, compressed
	FilesBytes        int64
	FilesCount        int
	// NewFilesCount and NewFilesBytes are the files copied into the store; StoredBytes is everything
	// the snapshot added to storage (dump blob, manifest, new files).
	NewFilesCount int
	NewFilesBytes int64
	StoredBytes   int64
	// StoreObjects and StoreBytes are the environment's file store after the snapshot.
	StoreObjects int
	StoreBytes   int64
	Warnings     []string
}

// ArchiveBlobs manages archive blobs (implemented by blobstore).
type ArchiveBlobs interface {
	// DeleteBlob removes one archive blob; a missing blob is fine.
	DeleteBlob(ctx context.Context, path string) error
	// ListSnapshotBlobs returns the paths of every blob of one snapshot.
	ListSnapshotBlobs(ctx context.Context, namespace, envID, snapshotID string) ([]string, error)
	// WalkArchives calls fn for every blob of the snapshots container that the layout knows, in name
	// order; blobs it cannot parse are skipped (never touched).
	WalkArchives(ctx context.Context, fn func(ArchiveBlob) error) error
}

// ArchiveBlob is one blob of the snapshots container.
type ArchiveBlob struct {
	Path          string
	Namespace     string
	EnvironmentID string
	SnapshotID    string
	LastModified  time.Time
}

// Layout decides blob paths; only it knows them (implemented by blobstore.Layout). fence numbers the
// claim that writes the blob.
type Layout interface {
	// SnapshotArchive is a one-archive snapshot's blob (the layout before incremental snapshots, still
	// read; see Snapshot.Incremental).
	SnapshotArchive(namespace, envID, snapshotID string, fence int) string
	// SnapshotDump and SnapshotManifest are the database dump and the manifest of an incremental
	// snapshot, written by the claim with that fence.
	SnapshotDump(namespace, envID, snapshotID string, fence int) string
	SnapshotManifest(namespace, envID, snapshotID string, fence int) string
	// IsManifest reports whether a blob path of a snapshot is one of its manifests.
	IsManifest(path string) bool
	// Download is the blob one claim (fence) of a download of a snapshot writes (snapshots container);
	// Upload the blob of one upload (uploads container).
	Download(namespace, envID, snapshotID, archiveID string, fence int, dataType ArchiveDataType) string
	Upload(namespace, envID, uploadID string) string
}

// maxCommentLength is the longest comment a snapshot may carry (docs/api.md).
const maxCommentLength = 1000

func validateComment(c string) error {
	if !utf8.ValidString(c) {
		return Errorf(CodeInvalidParameters, "comment is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(c); n > maxCommentLength {
		return Errorf(CodeInvalidParameters, "comment has %d characters; at most %d are allowed", n, maxCommentLength)
	}
	return nil
}

// CreateSnapshot starts a manual snapshot of an environment: it takes the environment lock, writes the
// operation and the Processing snapshot, and queues the job. It answers before the work starts.
func (s *Service) CreateSnapshot(ctx context.Context, p Principal, namespace, envID, comment string) (Snapshot, error) {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return Snapshot{}, err
	}
	if err := validateComment(comment); err != nil {
		return Snapshot{}, err
	}
	if err := s.requireBackupsEnabled(ctx, namespace); err != nil {
		return Snapshot{}, err
	}
	if reason := env.BackupBlocker(); reason != "" {
		return Snapshot{}, Errorf(CodeInvalidState, "a snapshot cannot be created now: %s", reason)
	}
	return s.startBackup(ctx, env, backupStart{kind: KindManual, actor: p.ID, comment: comment})
}

// backupStart says what kind of backup startBackup starts. An automatic one names its schedule try
// (day, attempt), from which its snapshot id is derived, and is made only if ready, run while the
// environment lock is held, allows it: no other try of the day can then be made at the same time.
type backupStart struct {
	kind    SnapshotKind
	actor   string
	comment string
	// snapshotID is the new snapshot's id; newID() when empty.
	snapshotID       string
	automaticDay     string
	automaticAttempt int
	ready            func(ctx context.Context) error
}

// startBackup is the common start of manual and automatic backups.
func (s *Service) startBackup(ctx context.Context, env Environment, b backupStart) (Snapshot, error) {
	now := s.now()
	opID, snapID := newID(), cmp.Or(b.snapshotID, newID())
	if err := s.acquireLock(ctx, env.Namespace, env.ID, opID, OpBackup); err != nil {
		return Snapshot{}, err
	}
	op := Operation{ID: opID, Namespace: env.Namespace, EnvironmentID: env.ID, Kind: OpBackup, SubjectID: snapID,
		Phase: OpQueued, Actor: b.actor, Enqueues: 1, EnqueuedAt: now, CreatedAt: now, UpdatedAt: now}
	snap := Snapshot{ID: snapID, Namespace: env.Namespace, EnvironmentID: env.ID, Status: SnapshotProcessing, Kind: b.kind,
		Comment: b.comment, CreatedAt: now, UpdatedAt: now, ExpiresAt: s.calendar.ExpiresAt(schedule.Kind(b.kind), now), CreatedBy: b.actor,
		DeploymentPackage: env.DeploymentPackage, ModelVersion: env.ModelVersion, OperationID: opID,
		AutomaticDay: b.automaticDay, AutomaticAttempt: b.automaticAttempt, Progress: &Progress{Phase: "queued"}}
	undo := func(cause error) error {
		// Leave nothing half-made: no lock held, no Processing record without a job.
		c := context.WithoutCancel(ctx)
		_ = s.stores.Snapshots.DeleteSnapshot(c, env.Namespace, env.ID, snapID)
		_, _, _ = s.stores.Operations.UpdateOperation(c, env.Namespace, env.ID, opID, func(o Operation, ok bool) (Operation, bool, error) {
			if !ok {
				return o, false, nil
			}
			// Settled: the lock is released below, and there is nothing to tell (the caller gets the error).
			o.Phase, o.StatusMessage, o.FinishedAt, o.UpdatedAt, o.Settled = OpFailed, Truncate("could not be queued: "+cause.Error(), maxStatusMessage), s.now(), s.now(), true
			return o, true, nil
		})
		s.releaseLock(c, env.Namespace, env.ID, opID)
		return cause
	}
	if b.ready != nil {
		if err := b.ready(ctx); err != nil {
			s.releaseLock(context.WithoutCancel(ctx), env.Namespace, env.ID, opID)
			return Snapshot{}, err
		}
	}
	if err := s.stores.Operations.CreateOperation(ctx, op); err != nil {
		return Snapshot{}, undo(err)
	}
	if err := s.stores.Snapshots.CreateSnapshot(ctx, snap); err != nil {
		return Snapshot{}, undo(err)
	}
	if err := s.enqueue(ctx, op, op.ID); err != nil {
		return Snapshot{}, undo(Wrap(CodeTransient, err, "the backup could not be queued; try again"))
	}
	s.activity(ctx, ActivityEntry{Namespace: env.Namespace, EnvironmentID: env.ID, Time: now, Action: ActionBackup,
		Status: ActivityStarted, Actor: b.actor, SnapshotID: snapID, Message: string(b.kind) + " snapshot started"})
	return snap, nil
}

// enqueue sends the job message. messageID is the operation id for the first send (duplicate detection
// drops a repeat); recovery sends with a distinct id so its message is not dropped as a duplicate.
func (s *Service) enqueue(ctx context.Context, op Operation, messageID string) error {
	body, _ := json.Marshal(jobMessage{OperationID: op.ID, Namespace: op.Namespace, EnvironmentID: op.EnvironmentID})
	return s.publisher.Publish(ctx, QueueJobs, Message{ID: messageID, SessionID: jobSession(op), Body: body, ContentType: "application/json"})
}

// jobSession is the Service Bus session of an operation's job messages. Sessions run one at a time,
// so the operations that take the environment lock share the environment's session; downloads and
// uploads, which take no lock, get one of their own and do not wait behind a backup or a restore.
func jobSession(op Operation) string {
	if op.Kind == OpDownload || op.Kind == OpUpload {
		return op.ID
	}
	return op.EnvironmentID
}

// acquireLock takes the environment lock for opID. A lock held by an operation that is finished or does
// not exist (a crash between taking the lock and writing the operation) is stale and taken over.
func (s *Service) acquireLock(ctx context.Context, namespace, envID, opID string, kind OperationKind) error {
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := s.stores.Operations.GetLock(ctx, namespace, envID)
		if err != nil {
			return err
		}
		if cur.OperationID != "" && cur.OperationID != opID {
			kind, blocks, err := s.lockHolder(ctx, namespace, envID, cur)
			if err != nil {
				return err
			}
			if blocks {
				return Errorf(CodeEnvironmentBusy, "another %s is running on this environment (since %s)", kind, cur.Since.Format(time.RFC3339))
			}
		}
		seen := cur.OperationID
		_, wrote, err := s.stores.Operations.UpdateLock(ctx, namespace, envID, func(l Lock, _ bool) (Lock, bool, error) {
			if l.OperationID != seen {
				return l, false, nil // changed since we looked: look again
			}
			return Lock{OperationID: opID, Kind: kind, Since: s.now()}, true, nil
		})
		if err != nil {
			return err
		}
		if wrote {
			return nil
		}
	}
	return Errorf(CodeEnvironmentBusy, "the environment is busy")
}

// lockHolder says whether lock blocks others and the holder's kind. A lock whose operation ended is
// stale; so is one naming an operation that does not exist a minute after it was taken (a crash between
// taking the lock and writing the operation), while a younger one is respected: its holder's record may
// be about to be written.
func (s *Service) lockHolder(ctx context.Context, namespace, envID string, lock Lock) (OperationKind, bool, error) {
	if lock.OperationID == "" {
		return "", false, nil
	}
	holder, err := s.stores.Operations.GetOperation(ctx, namespace, envID, lock.OperationID)
	switch {
	case err == nil:
		return holder.Kind, !holder.Phase.Done(), nil
	case !IsNotFound(err):
		return "", false, err
	}
	return lock.Kind, s.now().Sub(lock.Since) < time.Minute, nil
}

// releaseLock frees the lock if opID holds it. Failures are left to the stale-lock rule.
func (s *Service) releaseLock(ctx context.Context, namespace, envID, opID string) {
	_, _, err := s.stores.Operations.UpdateLock(ctx, namespace, envID, func(l Lock, _ bool) (Lock, bool, error) {
		if l.OperationID != opID {
			return l, false, nil
		}
		return Lock{}, true, nil
	})
	if err != nil {
		s.log.Warn().Err(err).Str("operation", opID).Msg("could not release the environment lock; it will be taken over as stale")
	}
}

// activity records an activity entry; a failure to record is logged, never fails the action.
func (s *Service) activity(ctx context.Context, e ActivityEntry) {
	if err := s.stores.Activity.AddActivity(context.WithoutCancel(ctx), e); err != nil {
		s.log.Warn().Err(err).Str("environment", e.EnvironmentID).Msg("could not record activity")
	}
}

// ListSnapshots returns a page of an environment's snapshots, newest first.
func (s *Service) ListSnapshots(ctx context.Context, p Principal, namespace, envID string, offset, limit int) ([]Snapshot, int, error) {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return nil, 0, err
	}
	return s.stores.Snapshots.ListSnapshots(ctx, namespace, env.ID, offset, limit)
}

// Snapshot returns one snapshot.
func (s *Service) Snapshot(ctx context.Context, p Principal, namespace, envID, id string) (Snapshot, error) {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return Snapshot{}, err
	}
	if id, err = ValidateUUID("snapshot id", id); err != nil {
		return Snapshot{}, err
	}
	sn, err := s.stores.Snapshots.GetSnapshot(ctx, namespace, env.ID, id)
	if err == nil && sn.Deleted() {
		return Snapshot{}, Errorf(CodeNotFound, "snapshot %s not found", id)
	}
	return sn, err
}

// UpdateComment changes only a snapshot's comment.
func (s *Service) UpdateComment(ctx context.Context, p Principal, namespace, envID, id, comment string) (Snapshot, error) {
	snap, err := s.Snapshot(ctx, p, namespace, envID, id)
	if err != nil {
		return Snapshot{}, err
	}
	if err := validateComment(comment); err != nil {
		return Snapshot{}, err
	}
	out, _, err := s.stores.Snapshots.UpdateSnapshot(ctx, namespace, snap.EnvironmentID, snap.ID, func(cur Snapshot, ok bool) (Snapshot, bool, error) {
		if !ok || cur.Deleted() {
			return cur, false, Errorf(CodeNotFound, "snapshot %s not found", id)
		}
		cur.Comment, cur.UpdatedAt = comment, s.now()
		return cur, true, nil
	})
	return out, err
}

// DeleteSnapshot deletes a snapshot: the record is marked first (hidden from users at once, and no
// longer restorable), then its blobs are removed, then the record. A blob that cannot be deleted (an
// immutability policy, a legal hold, a 403) leaves the marked record for the sweeper, which tries
// again; a crash half-way is finished by deleting again (a marked snapshot can still be deleted) or
// by the sweeper. A snapshot being made cannot be deleted (its job owns it).
func (s *Service) DeleteSnapshot(ctx context.Context, p Principal, namespace, envID, id string) error {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return err
	}
	if id, err = ValidateUUID("snapshot id", id); err != nil {
		return err
	}
	_, marked, err := s.markDeleted(ctx, namespace, env.ID, id, false)
	if err != nil {
		return err
	}
	if marked {
		s.activity(ctx, ActivityEntry{ID: "delete:" + id, Namespace: namespace, EnvironmentID: env.ID, Time: s.now(), Action: ActionDelete,
			Status: ActivityFinished, Actor: p.ID, SnapshotID: id, Message: "snapshot deleted"})
	}
	return s.finishDeletion(ctx, namespace, env.ID, id, s.log.With().Str("snapshot", id).Logger())
}

// markDeleted marks a snapshot for deletion (by the expiry when expired) unless it is being made or
// read, and returns the marked record. Readers are decided on the record itself: the mark is written
// only if the readers seen (all of them ended) are still the record's, so a restore that starts reading
// at the same moment either is seen or sees the mark.
func (s *Service) markDeleted(ctx context.Context, namespace, envID, id string, expired bool) (Snapshot, bool, error) {
	var readers []string // the readers seen, all ended: the mark is written only if they are still the record's
	for try := 0; ; try++ {
		var marked bool
		out, _, err := s.stores.Snapshots.UpdateSnapshot(ctx, namespace, envID, id, func(sn Snapshot, ok bool) (Snapshot, bool, error) {
			marked = false
			switch {
			case !ok:
				return sn, false, Errorf(CodeNotFound, "snapshot %s not found", id)
			case sn.Status == SnapshotProcessing:
				return sn, false, Errorf(CodeSnapshotNotReady, "snapshot %s is still being made; delete it when it has finished or failed", id)
			case sn.Deleted():
				return sn, false, nil // a deletion that stopped half-way: finish it
			case !slices.Equal(sn.Readers, readers):
				readers = slices.Clone(sn.Readers)
				return sn, false, nil // readers to look at first
			}
			marked = true
			sn.DeletedAt, sn.UpdatedAt, sn.Readers, sn.Expired = s.now(), s.now(), nil, expired
			return sn, true, nil
		})
		if err != nil || marked || len(readers) == 0 || try >= 3 {
			if err == nil && !marked && len(readers) > 0 {
				return Snapshot{}, false, Errorf(CodeConflict, "snapshot %s is busy; try again", id)
			}
			return out, marked, err
		}
		kind, err := s.activeReader(ctx, Snapshot{Namespace: namespace, Readers: readers})
		if err != nil {
			return Snapshot{}, false, err
		}
		if kind != "" {
			return Snapshot{}, false, Errorf(CodeSnapshotInUse, "snapshot %s is being read by a %s; delete it when that has ended", id, kind)
		}
	}
}

// finishDeletion removes a marked snapshot's blobs and then its record. It leaves the record when a
// blob could not be deleted, so the sweeper knows to try again.
func (s *Service) finishDeletion(ctx context.Context, namespace, envID, id string, log zerolog.Logger) error {
	_, err := s.finishDeletionDone(ctx, namespace, envID, id, log)
	return err
}

// finishDeletionDone is finishDeletion reporting whether the record is gone (false: a blob was left).
func (s *Service) finishDeletionDone(ctx context.Context, namespace, envID, id string, log zerolog.Logger) (bool, error) {
	c := context.WithoutCancel(ctx)
	if !s.removeSnapshotBlobs(c, namespace, envID, id, nil, log) {
		return false, nil
	}
	return true, s.stores.Snapshots.DeleteSnapshot(c, namespace, envID, id)
}

// newID returns a time-ordered UUID (v7), so ids sort by creation.
func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}
