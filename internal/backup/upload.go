package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mxazure/backups/internal/schedule"
)

// OpUpload is the operation kind that validates an uploaded archive and stores it as a snapshot.
const OpUpload OperationKind = "upload"

// DefaultUploadLinkTTL is how long an upload link stays valid (UPLOAD_LINK_HOURS).
const DefaultUploadLinkTTL = 24 * time.Hour

// uploadBlobGrace is how long a completed upload's blob is kept at most when its job could not remove
// it (the job removes it when it settles; this is the backstop of RemoveExpiredTransfers).
const uploadBlobGrace = 7 * 24 * time.Hour

// maxUploadFileName bounds the file name a user gives an upload.
const maxUploadFileName = 255

// Upload is one upload of a Mendix archive into an environment: a write-only link to one blob, then,
// once completed, a snapshot of kind uploaded that a job validates and stores.
type Upload struct {
	ID            string
	Namespace     string
	EnvironmentID string
	FileName      string // as the user named it, for the activity log; the blob has its own name
	BlobPath      string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	ExpiresAt     time.Time // of the link
	CreatedBy     string
	// Set by complete: the snapshot, and the blob as it was then (the job reads exactly that version).
	SnapshotID  string
	CompletedAt time.Time
	SizeBytes   int64
	ETag        string
	// RemovedAt is when the blob was removed (after its job settled, or its link expired unused).
	RemovedAt time.Time
}

// RemovalDue reports whether the upload's blob is still to be removed (after RemoveAfter).
func (u Upload) RemovalDue() bool { return u.RemovedAt.IsZero() }

// RemoveAfter is when the blob may be removed: when the link expired if never completed; otherwise
// its job removes it when it settles, and this is the backstop.
func (u Upload) RemoveAfter() time.Time {
	if u.SnapshotID == "" {
		return u.ExpiresAt
	}
	return u.CompletedAt.Add(uploadBlobGrace)
}

// UploadStore keeps uploads by (namespace, environment, id).
type UploadStore interface {
	// GetUpload returns CodeNotFound when there is no such upload.
	GetUpload(ctx context.Context, namespace, envID, id string) (Upload, error)
	// CreateUpload inserts u; CodeConflict if another record with its id exists.
	CreateUpload(ctx context.Context, u Upload) error
	UpdateUpload(ctx context.Context, namespace, envID, id string, fn UpdateFunc[Upload]) (Upload, bool, error)
	// ListUploadsDue returns at most limit uploads across every environment whose blob is due for
	// removal (RemovalDue, RemoveAfter before before). Stores must not read every upload to answer.
	ListUploadsDue(ctx context.Context, before time.Time, limit int) ([]Upload, error)
}

// UploadLink is what a user gets to upload an archive with.
type UploadLink struct {
	Upload   Upload
	URL      string
	MaxBytes int64 // the largest archive accepted
}

// validateFileName accepts a short, printable file name (only shown back to users).
func validateFileName(name string) error {
	switch {
	case !utf8.ValidString(name):
		return Errorf(CodeInvalidParameters, "file_name is not valid UTF-8")
	case utf8.RuneCountInString(name) > maxUploadFileName:
		return Errorf(CodeInvalidParameters, "file_name has more than %d characters", maxUploadFileName)
	case strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return Errorf(CodeInvalidParameters, "file_name contains characters that cannot be printed")
	}
	return nil
}

// CreateUpload gives a write-only link to one new blob, valid for the configured time, that the user
// uploads an archive to with ordinary Blob Storage calls; CompleteUpload then turns it into a snapshot.
func (s *Service) CreateUpload(ctx context.Context, p Principal, namespace, envID, fileName string) (UploadLink, error) {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return UploadLink{}, err
	}
	if err := validateFileName(fileName); err != nil {
		return UploadLink{}, err
	}
	if err := s.requireBackupsEnabled(ctx, namespace); err != nil {
		return UploadLink{}, err
	}
	now := s.now()
	id := newID()
	u := Upload{ID: id, Namespace: namespace, EnvironmentID: env.ID, FileName: fileName, BlobPath: s.layout.Upload(namespace, env.ID, id),
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(s.uploadLinkTTL), CreatedBy: p.ID}
	url, err := s.links.UploadLink(ctx, u.BlobPath, u.ExpiresAt)
	if err != nil {
		return UploadLink{}, Wrap(CodeTransient, err, "the upload link could not be made; try again")
	}
	if err := s.stores.Uploads.CreateUpload(ctx, u); err != nil {
		return UploadLink{}, err
	}
	return UploadLink{Upload: u, URL: url, MaxBytes: s.uploadMaxBytes}, nil
}

// CompleteUpload creates the snapshot of kind uploaded (Processing) for an upload whose archive is in
// its blob, and queues the job that validates and stores it. Completing the same upload again returns
// the same snapshot and starts nothing.
func (s *Service) CompleteUpload(ctx context.Context, p Principal, namespace, envID, uploadID, comment string) (Snapshot, error) {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return Snapshot{}, err
	}
	if uploadID, err = ValidateUUID("upload id", uploadID); err != nil {
		return Snapshot{}, err
	}
	if err := validateComment(comment); err != nil {
		return Snapshot{}, err
	}
	if err := s.requireBackupsEnabled(ctx, namespace); err != nil {
		return Snapshot{}, err
	}
	u, err := s.stores.Uploads.GetUpload(ctx, namespace, env.ID, uploadID)
	if err != nil {
		return Snapshot{}, err
	}
	if u.SnapshotID != "" {
		return s.stores.Snapshots.GetSnapshot(ctx, namespace, env.ID, u.SnapshotID)
	}
	now := s.now()
	if !now.Before(u.ExpiresAt) {
		return Snapshot{}, Errorf(CodeInvalidState, "upload %s expired at %s without being completed; start a new upload", u.ID, u.ExpiresAt.Format(time.RFC3339))
	}
	blob, err := s.uploads.UploadProperties(ctx, u.BlobPath)
	switch {
	case err != nil:
		return Snapshot{}, Wrap(CodeTransient, err, "the uploaded archive could not be read; try again")
	case !blob.Found:
		return Snapshot{}, Errorf(CodeInvalidState, "nothing was uploaded to upload %s yet: upload the archive to its upload_url (committing the block list, if uploading in blocks), then complete it", u.ID)
	case blob.Size == 0:
		return Snapshot{}, Errorf(CodeInvalidParameters, "the uploaded archive is empty; upload it again")
	case s.uploadMaxBytes > 0 && blob.Size > s.uploadMaxBytes:
		return Snapshot{}, Errorf(CodePayloadTooLarge, "the uploaded archive has %s bytes; at most %s are accepted", thousands(blob.Size), thousands(s.uploadMaxBytes))
	}
	opID, snapID := newID(), newID()
	op := Operation{ID: opID, Namespace: namespace, EnvironmentID: env.ID, Kind: OpUpload, SubjectID: snapID,
		Phase: OpQueued, Actor: p.ID, Enqueues: 1, EnqueuedAt: now, CreatedAt: now, UpdatedAt: now}
	snap := Snapshot{ID: snapID, Namespace: namespace, EnvironmentID: env.ID, Status: SnapshotProcessing, Kind: KindUploaded,
		Comment: comment, CreatedAt: now, UpdatedAt: now, ExpiresAt: s.calendar.ExpiresAt(schedule.Uploaded, now), CreatedBy: p.ID,
		OperationID: opID, UploadID: u.ID, SizeBytes: blob.Size, StatusMessage: "queued for validation",
		Progress: &Progress{Phase: "queued"}}
	discard := func(cause error) error {
		c := context.WithoutCancel(ctx)
		_ = s.stores.Snapshots.DeleteSnapshot(c, namespace, env.ID, snapID)
		s.abandonQueued(c, op, cause)
		return cause
	}
	if err := s.stores.Operations.CreateOperation(ctx, op); err != nil {
		return Snapshot{}, discard(err)
	}
	if err := s.stores.Snapshots.CreateSnapshot(ctx, snap); err != nil {
		return Snapshot{}, discard(err)
	}
	// The upload names its snapshot once: of two completes at the same moment, one wins and the other
	// takes back what it wrote and answers with the winner's snapshot.
	won, _, err := s.stores.Uploads.UpdateUpload(ctx, namespace, env.ID, u.ID, func(cur Upload, ok bool) (Upload, bool, error) {
		if !ok {
			return cur, false, Errorf(CodeNotFound, "upload %s not found", u.ID)
		}
		if cur.SnapshotID != "" {
			return cur, false, nil
		}
		cur.SnapshotID, cur.CompletedAt, cur.SizeBytes, cur.ETag, cur.UpdatedAt = snapID, now, blob.Size, blob.ETag, s.now()
		return cur, true, nil
	})
	if err != nil {
		return Snapshot{}, discard(err)
	}
	if won.SnapshotID != snapID {
		_ = discard(errors.New("another complete of the same upload came first"))
		return s.stores.Snapshots.GetSnapshot(ctx, namespace, env.ID, won.SnapshotID)
	}
	// From here the snapshot is the upload's: a message that cannot be sent now is sent by recovery.
	if err := s.enqueue(ctx, op, op.ID); err != nil {
		s.log.Warn().Err(err).Str("operation", opID).Msg("could not queue the upload's validation; recovery sends it")
	}
	name := u.FileName
	if name == "" {
		name = "an archive"
	}
	s.activity(ctx, ActivityEntry{ID: opID + ":" + string(ActivityStarted), Namespace: namespace, EnvironmentID: env.ID, Time: now,
		Action: ActionUpload, Status: ActivityStarted, Actor: p.ID, SnapshotID: snapID,
		Message: fmt.Sprintf("upload of %s (%s bytes) completed; validating it", name, thousands(blob.Size))})
	return snap, nil
}

// removeExpiredUploads removes the blobs of uploads whose link expired without a complete, and of
// completed uploads whose job could not remove theirs. A blob a job may still read (its snapshot is
// Processing) is left.
func (s *Service) removeExpiredUploads(ctx context.Context, now time.Time) (int, error) {
	due, err := s.stores.Uploads.ListUploadsDue(ctx, now, maxRemovalsPerRun)
	if err != nil {
		return 0, err
	}
	removed := 0
	var errs []error
	for _, u := range due {
		if u.SnapshotID != "" {
			sn, err := s.stores.Snapshots.GetSnapshot(ctx, u.Namespace, u.EnvironmentID, u.SnapshotID)
			if err == nil && sn.Status == SnapshotProcessing {
				continue
			} else if err != nil && !IsNotFound(err) {
				errs = append(errs, err)
				continue
			}
		}
		if err := s.removeUploadBlob(ctx, u); err != nil {
			errs = append(errs, err)
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// removeUploadBlob deletes an upload's blob and records it. Deleting first and recording after means
// a crash in between only deletes a missing blob again.
func (s *Service) removeUploadBlob(ctx context.Context, u Upload) error {
	if err := s.uploads.DeleteUpload(ctx, u.BlobPath); err != nil {
		return fmt.Errorf("remove upload %s: %w", u.ID, err)
	}
	_, _, err := s.stores.Uploads.UpdateUpload(ctx, u.Namespace, u.EnvironmentID, u.ID, func(cur Upload, ok bool) (Upload, bool, error) {
		if !ok || !cur.RemovedAt.IsZero() {
			return cur, false, nil
		}
		cur.RemovedAt, cur.UpdatedAt = s.now(), s.now()
		return cur, true, nil
	})
	return err
}

// RemoveExpiredTransfers removes download blobs whose last link expired and upload blobs no longer
// needed. Run by an hourly timer.
func (s *Service) RemoveExpiredTransfers(ctx context.Context) error {
	now := s.now()
	downloads, derr := s.removeExpiredDownloads(ctx, now)
	uploads, uerr := s.removeExpiredUploads(ctx, now)
	s.log.Info().Int("downloads", downloads).Int("uploads", uploads).Msg("expired download and upload blobs removed")
	return errors.Join(derr, uerr)
}
