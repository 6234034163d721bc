package tablestore

import (
	"context"
	"encoding/json"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

var (
	_ backup.ArchiveStore = (*Store)(nil)
	_ backup.UploadStore  = (*Store)(nil)
)

// archiveEntity: PartitionKey = namespace "|" the snapshot's environment, RowKey = archive id. A
// snapshot's archives are one filtered query of the partition.
//
// RemoveDue is RemoveAfter in the fixed-width form while the archive owns a blob (RemovalDue) and ""
// otherwise, as Restores' UndoDue: ListArchivesDue filters on it across partitions.
type archiveEntity struct {
	PartitionKey  string
	RowKey        string
	SnapshotID    string
	DataType      string
	State         string
	StatusMessage string
	Progress      string // JSON object or ""
	CreatedAt     time.Time
	UpdatedAt     time.Time
	FinishedAt    time.Time
	CreatedBy     string
	OwnerID       string
	FileName      string
	BlobPath      string
	SizeBytes     int64
	SHA256        string
	URLExpiresAt  time.Time
	OperationID   string
	Fence         int64
	KeepUntil     time.Time
	RemovedAt     time.Time
	RemoveDue     string
}

func (e *archiveEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (e *archiveEntity) toDomain() backup.Archive {
	ns, env := splitPartition(e.PartitionKey)
	out := backup.Archive{ID: e.RowKey, Namespace: ns, EnvironmentID: env, SnapshotID: e.SnapshotID,
		DataType: backup.ArchiveDataType(e.DataType), State: backup.ArchiveState(e.State), StatusMessage: e.StatusMessage,
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, FinishedAt: e.FinishedAt, CreatedBy: e.CreatedBy, OwnerID: e.OwnerID,
		FileName: e.FileName, BlobPath: e.BlobPath, SizeBytes: e.SizeBytes, SHA256: e.SHA256, URLExpiresAt: e.URLExpiresAt,
		OperationID: e.OperationID, Fence: e.Fence, KeepUntil: e.KeepUntil, RemovedAt: e.RemovedAt}
	if e.Progress != "" {
		var p backup.Progress
		if json.Unmarshal([]byte(e.Progress), &p) == nil {
			out.Progress = &p
		}
	}
	return out
}

func archiveFromDomain(a backup.Archive) *archiveEntity {
	e := &archiveEntity{PartitionKey: envPartition(a.Namespace, a.EnvironmentID), RowKey: a.ID, SnapshotID: a.SnapshotID,
		DataType: string(a.DataType), State: string(a.State), StatusMessage: a.StatusMessage, CreatedAt: a.CreatedAt,
		UpdatedAt: a.UpdatedAt, FinishedAt: a.FinishedAt, CreatedBy: a.CreatedBy, OwnerID: a.OwnerID, FileName: a.FileName,
		BlobPath: a.BlobPath, SizeBytes: a.SizeBytes, SHA256: a.SHA256, URLExpiresAt: a.URLExpiresAt, OperationID: a.OperationID,
		Fence: a.Fence, KeepUntil: a.KeepUntil, RemovedAt: a.RemovedAt}
	if a.Progress != nil {
		b, _ := json.Marshal(a.Progress)
		e.Progress = string(b)
	}
	if a.RemovalDue() {
		e.RemoveDue = a.RemoveAfter().UTC().Format(timeLayout)
	}
	return e
}

func (s *Store) GetArchive(ctx context.Context, namespace, envID, id string) (backup.Archive, error) {
	var e archiveEntity
	_, found, err := get(ctx, s.table(tableArchives), envPartition(namespace, envID), id, &e)
	if err != nil {
		return backup.Archive{}, err
	}
	if !found {
		return backup.Archive{}, backup.Errorf(backup.CodeNotFound, "archive %s not found", id)
	}
	return e.toDomain(), nil
}

func (s *Store) ListArchives(ctx context.Context, namespace, envID, snapshotID string) ([]backup.Archive, error) {
	filter := "PartitionKey eq " + odataString(envPartition(namespace, envID)) + " and SnapshotID eq " + odataString(snapshotID)
	entities, err := query[archiveEntity](ctx, s.table(tableArchives), filter, 0, "archives of snapshot "+snapshotID)
	if err != nil {
		return nil, err
	}
	out := make([]backup.Archive, len(entities))
	for i := range entities {
		out[i] = entities[i].toDomain()
	}
	return out, nil
}

func (s *Store) CreateArchive(ctx context.Context, a backup.Archive) error {
	return insert(ctx, s.table(tableArchives), archiveFromDomain(a))
}

func (s *Store) UpdateArchive(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Archive]) (backup.Archive, bool, error) {
	return updateEnvRecord(ctx, s.table(tableArchives), namespace, envID, id, fn, archiveFromDomain,
		func(n *backup.Archive) { n.Namespace, n.EnvironmentID, n.ID = namespace, envID, id })
}

// ListArchivesDue is one filtered query across partitions, like ListUndoDue.
func (s *Store) ListArchivesDue(ctx context.Context, before time.Time, limit int) ([]backup.Archive, error) {
	if limit <= 0 {
		return nil, ctx.Err()
	}
	entities, err := query[archiveEntity](ctx, s.table(tableArchives), dueFilter("RemoveDue", before), limit, "downloads due for removal")
	if err != nil {
		return nil, err
	}
	out := make([]backup.Archive, len(entities))
	for i := range entities {
		out[i] = entities[i].toDomain()
	}
	return out, nil
}

// dueFilter selects the entities whose fixed-width time property is set and before before; "" sorts
// before every time, so it is left out explicitly.
func dueFilter(property string, before time.Time) string {
	return property + " gt '' and " + property + " lt " + odataString(before.UTC().Format(timeLayout))
}

// uploadEntity: PartitionKey = namespace "|" environment, RowKey = upload id. RemoveDue as for
// archives.
type uploadEntity struct {
	PartitionKey string
	RowKey       string
	FileName     string
	BlobPath     string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	ExpiresAt    time.Time
	CreatedBy    string
	SnapshotID   string
	CompletedAt  time.Time
	SizeBytes    int64
	ETag         string
	RemovedAt    time.Time
	RemoveDue    string
}

func (e *uploadEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (e *uploadEntity) toDomain() backup.Upload {
	ns, env := splitPartition(e.PartitionKey)
	return backup.Upload{ID: e.RowKey, Namespace: ns, EnvironmentID: env, FileName: e.FileName, BlobPath: e.BlobPath,
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt, ExpiresAt: e.ExpiresAt, CreatedBy: e.CreatedBy, SnapshotID: e.SnapshotID,
		CompletedAt: e.CompletedAt, SizeBytes: e.SizeBytes, ETag: e.ETag, RemovedAt: e.RemovedAt}
}

func uploadFromDomain(u backup.Upload) *uploadEntity {
	e := &uploadEntity{PartitionKey: envPartition(u.Namespace, u.EnvironmentID), RowKey: u.ID, FileName: u.FileName,
		BlobPath: u.BlobPath, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, ExpiresAt: u.ExpiresAt, CreatedBy: u.CreatedBy,
		SnapshotID: u.SnapshotID, CompletedAt: u.CompletedAt, SizeBytes: u.SizeBytes, ETag: u.ETag, RemovedAt: u.RemovedAt}
	if u.RemovalDue() {
		e.RemoveDue = u.RemoveAfter().UTC().Format(timeLayout)
	}
	return e
}

func (s *Store) GetUpload(ctx context.Context, namespace, envID, id string) (backup.Upload, error) {
	var e uploadEntity
	_, found, err := get(ctx, s.table(tableUploads), envPartition(namespace, envID), id, &e)
	if err != nil {
		return backup.Upload{}, err
	}
	if !found {
		return backup.Upload{}, backup.Errorf(backup.CodeNotFound, "upload %s not found", id)
	}
	return e.toDomain(), nil
}

func (s *Store) CreateUpload(ctx context.Context, u backup.Upload) error {
	return insert(ctx, s.table(tableUploads), uploadFromDomain(u))
}

func (s *Store) UpdateUpload(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Upload]) (backup.Upload, bool, error) {
	return updateEnvRecord(ctx, s.table(tableUploads), namespace, envID, id, fn, uploadFromDomain,
		func(n *backup.Upload) { n.Namespace, n.EnvironmentID, n.ID = namespace, envID, id })
}

func (s *Store) ListUploadsDue(ctx context.Context, before time.Time, limit int) ([]backup.Upload, error) {
	if limit <= 0 {
		return nil, ctx.Err()
	}
	entities, err := query[uploadEntity](ctx, s.table(tableUploads), dueFilter("RemoveDue", before), limit, "uploads due for removal")
	if err != nil {
		return nil, err
	}
	out := make([]backup.Upload, len(entities))
	for i := range entities {
		out[i] = entities[i].toDomain()
	}
	return out, nil
}
