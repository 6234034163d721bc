package backup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// DownloadLinkTTL is how long a download link stays valid (docs/api.md: 8 hours).
const DownloadLinkTTL = 8 * time.Hour

// OpDownload is the operation kind that prepares a download.
const OpDownload OperationKind = "download"

// ArchiveState is what users see of a download's life.
type ArchiveState string

const (
	ArchiveQueued    ArchiveState = "queued"
	ArchiveRunning   ArchiveState = "running"
	ArchiveCompleted ArchiveState = "completed"
	ArchiveFailed    ArchiveState = "failed"
)

// Archive is one request to download a snapshot (docs/api.md "Download archives"). The blob a link
// points to is made once per snapshot and data type: the first request (the owner) runs the job that
// makes it; a request made while that job runs joins it; one made while a link to the blob is still
// valid reuses the blob at once and extends how long it is kept. The blob is removed after its last
// link expired (RemoveExpiredTransfers).
type Archive struct {
	ID            string
	Namespace     string
	EnvironmentID string // the snapshot's
	SnapshotID    string
	DataType      ArchiveDataType
	State         ArchiveState
	StatusMessage string
	Progress      *Progress
	CreatedAt     time.Time
	UpdatedAt     time.Time
	FinishedAt    time.Time
	CreatedBy     string
	// OwnerID is the archive whose job makes the blob: this one's own id when it started the job.
	OwnerID  string
	FileName string
	// Once completed: the blob, its size and SHA-256, and when this request's link expires.
	BlobPath     string
	SizeBytes    int64
	SHA256       string
	URLExpiresAt time.Time
	// The owner's only: the claim of its job, how long the blob is kept (the latest link to it), and
	// when the blob was removed (set before the removal, so a request that reuses the blob sees it).
	OperationID string
	Fence       int64
	KeepUntil   time.Time
	RemovedAt   time.Time
	// URL is minted when the archive is read (never stored): a read-only link to BlobPath until
	// URLExpiresAt.
	URL string
}

// Owner reports whether the archive made (or is making) its blob itself.
func (a Archive) Owner() bool { return a.OwnerID == a.ID }

// Ended reports whether the archive is completed or failed.
func (a Archive) Ended() bool { return a.State == ArchiveCompleted || a.State == ArchiveFailed }

// RemovalDue reports whether the archive owns a blob that is to be removed once RemoveAfter passed.
func (a Archive) RemovalDue() bool { return a.Owner() && a.BlobPath != "" }

// RemoveAfter is when the archive's blob may be removed: when its last link expired, or at once when
// a removal already began.
func (a Archive) RemoveAfter() time.Time {
	if !a.RemovedAt.IsZero() {
		return a.RemovedAt
	}
	return a.KeepUntil
}

// reusable reports whether a new request can link to the owner's blob now: completed, not being
// removed, with a link still valid (so the blob is kept at least that long).
func (a Archive) reusable(now time.Time) bool {
	return a.Owner() && a.State == ArchiveCompleted && a.BlobPath != "" && a.RemovedAt.IsZero() && now.Before(a.KeepUntil)
}

// ArchiveStore keeps archives by (namespace, snapshot's environment, id).
type ArchiveStore interface {
	// GetArchive returns CodeNotFound when there is no such archive.
	GetArchive(ctx context.Context, namespace, envID, id string) (Archive, error)
	// ListArchives returns every archive of one snapshot, in any order.
	ListArchives(ctx context.Context, namespace, envID, snapshotID string) ([]Archive, error)
	// CreateArchive inserts a; CodeConflict if another record with its id exists. Inserting the same
	// record again is not an error.
	CreateArchive(ctx context.Context, a Archive) error
	UpdateArchive(ctx context.Context, namespace, envID, id string, fn UpdateFunc[Archive]) (Archive, bool, error)
	// ListArchivesDue returns at most limit archives across every environment whose blob is due for
	// removal (RemovalDue, RemoveAfter before before). Stores must not read every archive to answer.
	ListArchivesDue(ctx context.Context, before time.Time, limit int) ([]Archive, error)
}

// SortArchivesNewestFirst orders archives newest first (ties by id), as every list shows them.
func SortArchivesNewestFirst(all []Archive) {
	sort.Slice(all, func(i, j int) bool {
		if !all[i].CreatedAt.Equal(all[j].CreatedAt) {
			return all[i].CreatedAt.After(all[j].CreatedAt)
		}
		return all[i].ID > all[j].ID
	})
}

// ParseDataType reads a download's data type; "" is files_and_database.
func ParseDataType(s string) (ArchiveDataType, error) {
	switch ArchiveDataType(s) {
	case "", DataFilesAndDatabase:
		return DataFilesAndDatabase, nil
	case DataDatabaseOnly:
		return DataDatabaseOnly, nil
	}
	return "", Errorf(CodeInvalidParameters, "data_type %q is not one of %q and %q", s, DataFilesAndDatabase, DataDatabaseOnly)
}

// DownloadFileName is the Mendix-style name a download is served under:
// files_and_database-<8 hex>-<YYYYMMDDhhmm>.tar.gz or database-<8 hex>-<YYYYMMDDhhmm>.backup, from the
// snapshot's id (the last 8 hex digits, its random part) and its creation time in UTC.
func DownloadFileName(sn Snapshot, t ArchiveDataType) string {
	hex := strings.ReplaceAll(sn.ID, "-", "")
	if len(hex) > 8 {
		hex = hex[len(hex)-8:]
	}
	stamp := sn.CreatedAt.UTC().Format("200601021504")
	if t == DataDatabaseOnly {
		return "database-" + hex + "-" + stamp + ".backup"
	}
	return "files_and_database-" + hex + "-" + stamp + ".tar.gz"
}

// ownerRetries bounds how often CreateArchive looks again when another request changed the
// snapshot's downloads at the same moment.
const ownerRetries = 5

// CreateArchive asks for a download of a Finished snapshot: it links to a blob made earlier when one
// is kept, joins the job making one, or starts that job.
func (s *Service) CreateArchive(ctx context.Context, p Principal, namespace, envID, snapID string, dataType ArchiveDataType) (Archive, error) {
	sn, err := s.Snapshot(ctx, p, namespace, envID, snapID)
	if err != nil {
		return Archive{}, err
	}
	if err := s.requireBackupsEnabled(ctx, namespace); err != nil {
		return Archive{}, err
	}
	switch {
	case sn.Status != SnapshotFinished:
		return Archive{}, Errorf(CodeSnapshotNotReady, "snapshot %s is %s; only a Finished snapshot can be downloaded", sn.ID, sn.Status)
	case !sn.Incremental():
		return Archive{}, Errorf(CodeInvalidState, "snapshot %s is stored in the single-archive layout of an earlier version of this service, which downloads cannot read; make a new snapshot", sn.ID)
	}
	for try := 0; try < ownerRetries; try++ {
		all, err := s.stores.Archives.ListArchives(ctx, namespace, sn.EnvironmentID, sn.ID)
		if err != nil {
			return Archive{}, err
		}
		owner, found := latestOwner(all, dataType)
		now := s.now()
		switch {
		case found && owner.reusable(now):
			a, ok, err := s.reuseArchive(ctx, p, sn, owner)
			if err != nil || ok {
				return a, err
			}
		case found && !owner.Ended():
			kind, err := s.ownerActive(ctx, owner)
			if err != nil {
				return Archive{}, err
			}
			if kind {
				return s.joinArchive(ctx, p, sn, owner)
			}
			// The owner's operation ended and its record was not told: resolve it, then look again.
			if _, err := s.resolveArchive(ctx, owner, nil); err != nil {
				return Archive{}, err
			}
		default:
			return s.startDownload(ctx, p, sn, dataType)
		}
	}
	return Archive{}, Errorf(CodeConflict, "the downloads of snapshot %s changed while this request was made; try again", sn.ID)
}

// latestOwner is the newest owner of the data type's blob that is running, or completed and not
// removed.
func latestOwner(all []Archive, t ArchiveDataType) (Archive, bool) {
	SortArchivesNewestFirst(all)
	for _, a := range all {
		if a.Owner() && a.DataType == t && a.State != ArchiveFailed && a.RemovedAt.IsZero() {
			return a, true
		}
	}
	return Archive{}, false
}

// ownerActive reports whether the owner's operation has not ended.
func (s *Service) ownerActive(ctx context.Context, owner Archive) (bool, error) {
	op, err := s.stores.Operations.GetOperation(ctx, owner.Namespace, owner.EnvironmentID, owner.OperationID)
	if IsNotFound(err) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return !op.Phase.Done(), nil
}

// reuseArchive extends how long the owner's blob is kept and records a completed archive linking to
// it. ok is false when the owner's blob began to be removed meanwhile.
func (s *Service) reuseArchive(ctx context.Context, p Principal, sn Snapshot, owner Archive) (Archive, bool, error) {
	now := s.now()
	until := now.Add(DownloadLinkTTL)
	_, wrote, err := s.stores.Archives.UpdateArchive(ctx, owner.Namespace, owner.EnvironmentID, owner.ID, func(o Archive, ok bool) (Archive, bool, error) {
		if !ok || !o.reusable(s.now()) {
			return o, false, nil
		}
		if until.After(o.KeepUntil) {
			o.KeepUntil = until
		}
		o.UpdatedAt = s.now()
		return o, true, nil
	})
	if err != nil || !wrote {
		return Archive{}, false, err
	}
	a := Archive{ID: newID(), Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, SnapshotID: sn.ID, DataType: owner.DataType,
		State: ArchiveCompleted, StatusMessage: "the archive made for an earlier request is still kept; this link is new",
		CreatedAt: now, UpdatedAt: now, FinishedAt: now, CreatedBy: p.ID, OwnerID: owner.ID, FileName: owner.FileName,
		BlobPath: owner.BlobPath, SizeBytes: owner.SizeBytes, SHA256: owner.SHA256, URLExpiresAt: until}
	if err := s.stores.Archives.CreateArchive(ctx, a); err != nil {
		return Archive{}, false, err
	}
	s.activity(ctx, ActivityEntry{ID: "download:" + a.ID, Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, Time: now,
		Action: ActionDownload, Status: ActivityFinished, Actor: p.ID, SnapshotID: sn.ID,
		Message: fmt.Sprintf("%s download ready (%s bytes, made for an earlier request)", a.DataType, thousands(a.SizeBytes))})
	a, err = s.withURL(ctx, a)
	return a, true, err
}

// joinArchive records an archive waiting for the owner's job.
func (s *Service) joinArchive(ctx context.Context, p Principal, sn Snapshot, owner Archive) (Archive, error) {
	now := s.now()
	a := Archive{ID: newID(), Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, SnapshotID: sn.ID, DataType: owner.DataType,
		State: owner.State, StatusMessage: "waiting for the archive that an earlier request is preparing", Progress: owner.Progress,
		CreatedAt: now, UpdatedAt: now, CreatedBy: p.ID, OwnerID: owner.ID, FileName: owner.FileName}
	if err := s.stores.Archives.CreateArchive(ctx, a); err != nil {
		return Archive{}, err
	}
	return a, nil
}

// startDownload records the owner archive and the reader on the snapshot, and queues the job. Downloads
// take no environment lock: they only read the snapshot, so backups and restores go on meanwhile.
func (s *Service) startDownload(ctx context.Context, p Principal, sn Snapshot, dataType ArchiveDataType) (Archive, error) {
	now := s.now()
	opID, id := newID(), newID()
	op := Operation{ID: opID, Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, Kind: OpDownload, SubjectID: id,
		Phase: OpQueued, Actor: p.ID, Enqueues: 1, EnqueuedAt: now, CreatedAt: now, UpdatedAt: now}
	a := Archive{ID: id, Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, SnapshotID: sn.ID, DataType: dataType,
		State: ArchiveQueued, Progress: &Progress{Phase: "queued", FilesTotal: filesTotal(sn, dataType)}, CreatedAt: now, UpdatedAt: now,
		CreatedBy: p.ID, OwnerID: id, FileName: DownloadFileName(sn, dataType), OperationID: opID}
	reader := sn.EnvironmentID + "/" + opID
	undo := func(cause error) error {
		c := context.WithoutCancel(ctx)
		_, _, _ = s.stores.Archives.UpdateArchive(c, sn.Namespace, sn.EnvironmentID, id, func(a Archive, ok bool) (Archive, bool, error) {
			if !ok {
				return a, false, nil
			}
			a.State, a.StatusMessage, a.Progress, a.FinishedAt, a.UpdatedAt = ArchiveFailed, "the download could not be queued", nil, s.now(), s.now()
			return a, true, nil
		})
		s.abandonQueued(c, op, cause)
		s.removeReader(c, sn.Namespace, sn.EnvironmentID, sn.ID, reader)
		return cause
	}
	if err := s.stores.Operations.CreateOperation(ctx, op); err != nil {
		return Archive{}, undo(err)
	}
	if err := s.addReader(ctx, sn.Namespace, sn.EnvironmentID, sn.ID, reader); err != nil {
		return Archive{}, undo(err)
	}
	if err := s.stores.Archives.CreateArchive(ctx, a); err != nil {
		return Archive{}, undo(err)
	}
	if err := s.enqueue(ctx, op, op.ID); err != nil {
		return Archive{}, undo(Wrap(CodeTransient, err, "the download could not be queued; try again"))
	}
	s.activity(ctx, ActivityEntry{ID: opID + ":" + string(ActivityStarted), Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, Time: now,
		Action: ActionDownload, Status: ActivityStarted, Actor: p.ID, SnapshotID: sn.ID, Message: fmt.Sprintf("%s download requested", dataType)})
	return a, nil
}

func filesTotal(sn Snapshot, t ArchiveDataType) int {
	if t == DataDatabaseOnly {
		return 0
	}
	return sn.FilesCount
}

// ListArchives returns a snapshot's downloads, newest first.
func (s *Service) ListArchives(ctx context.Context, p Principal, namespace, envID, snapID string) ([]Archive, error) {
	sn, err := s.Snapshot(ctx, p, namespace, envID, snapID)
	if err != nil {
		return nil, err
	}
	all, err := s.stores.Archives.ListArchives(ctx, namespace, sn.EnvironmentID, sn.ID)
	if err != nil {
		return nil, err
	}
	byID := map[string]Archive{}
	for _, a := range all {
		byID[a.ID] = a
	}
	out := make([]Archive, 0, len(all))
	for _, a := range all {
		var owner *Archive
		if o, ok := byID[a.OwnerID]; ok {
			owner = &o
		}
		if a, err = s.resolveArchive(ctx, a, owner); err != nil {
			return nil, err
		}
		if a, err = s.withURL(ctx, a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	SortArchivesNewestFirst(out)
	return out, nil
}

// Archive returns one download of a snapshot, with its link once completed.
func (s *Service) Archive(ctx context.Context, p Principal, namespace, envID, snapID, id string) (Archive, error) {
	sn, err := s.Snapshot(ctx, p, namespace, envID, snapID)
	if err != nil {
		return Archive{}, err
	}
	if id, err = ValidateUUID("archive id", id); err != nil {
		return Archive{}, err
	}
	a, err := s.stores.Archives.GetArchive(ctx, namespace, sn.EnvironmentID, id)
	if err != nil {
		return Archive{}, err
	}
	if a.SnapshotID != sn.ID {
		return Archive{}, Errorf(CodeNotFound, "archive %s not found for snapshot %s", id, sn.ID)
	}
	if a, err = s.resolveArchive(ctx, a, nil); err != nil {
		return Archive{}, err
	}
	return s.withURL(ctx, a)
}

// resolveArchive brings an archive that has not ended up to date: one that joined another's job takes
// that job's outcome (and progress); an owner whose operation ended without its record being told
// (a crash between the two) takes the operation's. An outcome found is written back, best effort.
// owner, if not nil, is the joined owner as already read.
func (s *Service) resolveArchive(ctx context.Context, a Archive, owner *Archive) (Archive, error) {
	if a.Ended() {
		return a, nil
	}
	if a.Owner() {
		op, err := s.stores.Operations.GetOperation(ctx, a.Namespace, a.EnvironmentID, a.OperationID)
		switch {
		case IsNotFound(err):
			op = Operation{Phase: OpFailed, StatusMessage: "the download's operation was lost"}
		case err != nil:
			return Archive{}, err
		}
		if !op.Phase.Done() || op.Phase == OpSucceeded {
			return a, nil // a succeeded operation recorded its archive first: not ended means running
		}
		return s.settleArchive(ctx, a, func(x *Archive) {
			x.State, x.StatusMessage, x.Progress, x.FinishedAt = ArchiveFailed, op.StatusMessage, nil, s.now()
		})
	}
	if owner == nil {
		o, err := s.stores.Archives.GetArchive(ctx, a.Namespace, a.EnvironmentID, a.OwnerID)
		if IsNotFound(err) {
			o = Archive{ID: a.OwnerID, OwnerID: a.OwnerID, State: ArchiveFailed, StatusMessage: "the archive this request waited for is gone"}
		} else if err != nil {
			return Archive{}, err
		}
		owner = &o
	}
	if owner.State == ArchiveQueued || owner.State == ArchiveRunning {
		if owner, err := s.resolveArchive(ctx, *owner, nil); err != nil || !owner.Ended() {
			a.State, a.Progress = owner.State, owner.Progress
			return a, err
		}
	}
	return s.settleArchive(ctx, a, func(x *Archive) {
		x.State, x.StatusMessage, x.Progress, x.FinishedAt = owner.State, owner.StatusMessage, nil, owner.FinishedAt
		if owner.State == ArchiveCompleted {
			x.BlobPath, x.SizeBytes, x.SHA256, x.FileName = owner.BlobPath, owner.SizeBytes, owner.SHA256, owner.FileName
			x.URLExpiresAt = owner.FinishedAt.Add(DownloadLinkTTL) // the owner keeps its blob that long at least
		}
	})
}

// settleArchive writes an outcome onto an archive that has not ended, and returns it whether or not
// the write succeeded (the next read writes it again).
func (s *Service) settleArchive(ctx context.Context, a Archive, change func(*Archive)) (Archive, error) {
	change(&a)
	a.UpdatedAt = s.now()
	out, wrote, err := s.stores.Archives.UpdateArchive(ctx, a.Namespace, a.EnvironmentID, a.ID, func(cur Archive, ok bool) (Archive, bool, error) {
		if !ok || cur.Ended() {
			return cur, false, nil
		}
		change(&cur)
		cur.UpdatedAt = s.now()
		return cur, true, nil
	})
	switch {
	case err != nil:
		s.log.Warn().Err(err).Str("archive", a.ID).Msg("could not record a download's outcome on its record; the next read does")
		return a, nil
	case !wrote:
		return out, nil // ended meanwhile: the record wins
	}
	return out, nil
}

// withURL mints the link of a completed archive whose link is still valid.
func (s *Service) withURL(ctx context.Context, a Archive) (Archive, error) {
	if a.State != ArchiveCompleted || a.BlobPath == "" || !s.now().Before(a.URLExpiresAt) {
		return a, nil
	}
	url, err := s.links.DownloadLink(ctx, a.BlobPath, a.FileName, a.URLExpiresAt)
	if err != nil {
		return Archive{}, Wrap(CodeTransient, err, "the download link could not be made; try again")
	}
	a.URL = url
	return a, nil
}

// maxRemovalsPerRun bounds the download and upload blobs one run of RemoveExpiredTransfers removes.
const maxRemovalsPerRun = 500

// removeExpiredDownloads removes the blobs of downloads whose last link expired: the owner is marked
// first (so no new request reuses the blob), the blob removed, then the mark completed. A crash in
// between leaves the mark, and the next run removes the blob again.
func (s *Service) removeExpiredDownloads(ctx context.Context, now time.Time) (int, error) {
	due, err := s.stores.Archives.ListArchivesDue(ctx, now, maxRemovalsPerRun)
	if err != nil {
		return 0, err
	}
	removed := 0
	var errs []error
	for _, a := range due {
		marked, wrote, err := s.stores.Archives.UpdateArchive(ctx, a.Namespace, a.EnvironmentID, a.ID, func(cur Archive, ok bool) (Archive, bool, error) {
			if !ok || !cur.RemovalDue() || !cur.RemoveAfter().Before(s.now()) {
				return cur, false, nil // extended by a new request since the listing
			}
			if cur.RemovedAt.IsZero() {
				cur.RemovedAt, cur.UpdatedAt = s.now(), s.now()
				return cur, true, nil
			}
			return cur, false, nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !wrote && (!marked.RemovalDue() || marked.RemovedAt.IsZero()) {
			continue
		}
		if err := s.archives.DeleteBlob(ctx, marked.BlobPath); err != nil {
			errs = append(errs, fmt.Errorf("remove download %s: %w", a.ID, err))
			continue
		}
		_, _, err = s.stores.Archives.UpdateArchive(ctx, a.Namespace, a.EnvironmentID, a.ID, func(cur Archive, ok bool) (Archive, bool, error) {
			if !ok || cur.RemovedAt.IsZero() || cur.BlobPath == "" {
				return cur, false, nil
			}
			cur.BlobPath, cur.UpdatedAt = "", s.now()
			return cur, true, nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// downloadPaths are every blob path the claims of an owner archive may have written.
func (s *Service) downloadPaths(a Archive, upToFence int64) []string {
	var out []string
	for f := int64(1); f <= upToFence; f++ {
		out = append(out, s.layout.Download(a.Namespace, a.EnvironmentID, a.SnapshotID, a.ID, int(f), a.DataType))
	}
	return slices.Compact(out)
}
