package tablestore

import (
	"context"
	"encoding/json"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.SnapshotStore = (*Store)(nil)

// snapshotEntity: PartitionKey = namespace "|" environment, RowKey = snapshot id. An environment holds
// tens of snapshots (retention bounds them), so listing reads the partition and pages in memory; marked
// ones (DeletedAt) are left out by backup.PageNewestFirst. The SnapshotExpiry table (expiry.go) finds the
// snapshots due for expiry without reading this table whole.
type snapshotEntity struct {
	PartitionKey      string
	RowKey            string
	Status            string
	Kind              string
	Comment           string
	CreatedAt         time.Time
	UpdatedAt         time.Time
	FinishedAt        time.Time
	ExpiresAt         time.Time
	CreatedBy         string
	DeploymentPackage string
	ModelVersion      string
	SizeBytes         int64
	DatabaseSizeBytes int64
	DumpSizeBytes     int64
	FilesBytes        int64
	FilesCount        int64
	SHA256            string
	StatusMessage     string
	Warnings          string // JSON array
	Progress          string // JSON object or ""
	OperationID       string
	Fence             int64
	BlobPath          string
	DumpPath          string
	ManifestPath      string
	NewFilesCount     int64
	NewFilesBytes     int64
	StoredBytes       int64
	Readers           string // JSON array or ""
	UploadID          string
	UploadSHA256      string
	AutomaticDay      string
	AutomaticAttempt  int64
	DeletedAt         time.Time
	Expired           bool
}

func (e *snapshotEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func envPartition(namespace, envID string) string { return namespace + "|" + envID }

func (e *snapshotEntity) toDomain() backup.Snapshot {
	ns, env := splitPartition(e.PartitionKey)
	out := backup.Snapshot{ID: e.RowKey, Namespace: ns, EnvironmentID: env, Status: backup.SnapshotStatus(e.Status),
		Kind: backup.SnapshotKind(e.Kind), Comment: e.Comment, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt,
		FinishedAt: e.FinishedAt, ExpiresAt: e.ExpiresAt, CreatedBy: e.CreatedBy,
		DeploymentPackage: e.DeploymentPackage, ModelVersion: e.ModelVersion, SizeBytes: e.SizeBytes,
		DatabaseSizeBytes: e.DatabaseSizeBytes, DumpSizeBytes: e.DumpSizeBytes, FilesBytes: e.FilesBytes,
		FilesCount: int(e.FilesCount), SHA256: e.SHA256, StatusMessage: e.StatusMessage, OperationID: e.OperationID,
		Fence: e.Fence, BlobPath: e.BlobPath, DumpPath: e.DumpPath, ManifestPath: e.ManifestPath,
		NewFilesCount: int(e.NewFilesCount), NewFilesBytes: e.NewFilesBytes, StoredBytes: e.StoredBytes, DeletedAt: e.DeletedAt,
		UploadID: e.UploadID, UploadSHA256: e.UploadSHA256, AutomaticDay: e.AutomaticDay,
		AutomaticAttempt: int(e.AutomaticAttempt), Expired: e.Expired}
	if e.Warnings != "" {
		_ = json.Unmarshal([]byte(e.Warnings), &out.Warnings) // written by snapshotFromDomain
	}
	if e.Progress != "" {
		var p backup.Progress
		if json.Unmarshal([]byte(e.Progress), &p) == nil {
			out.Progress = &p
		}
	}
	if e.Readers != "" {
		_ = json.Unmarshal([]byte(e.Readers), &out.Readers)
	}
	return out
}

func snapshotFromDomain(s backup.Snapshot) *snapshotEntity {
	e := &snapshotEntity{PartitionKey: envPartition(s.Namespace, s.EnvironmentID), RowKey: s.ID, Status: string(s.Status),
		Kind: string(s.Kind), Comment: s.Comment, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt,
		FinishedAt: s.FinishedAt, ExpiresAt: s.ExpiresAt, CreatedBy: s.CreatedBy,
		DeploymentPackage: s.DeploymentPackage, ModelVersion: s.ModelVersion, SizeBytes: s.SizeBytes,
		DatabaseSizeBytes: s.DatabaseSizeBytes, DumpSizeBytes: s.DumpSizeBytes, FilesBytes: s.FilesBytes,
		FilesCount: int64(s.FilesCount), SHA256: s.SHA256, StatusMessage: s.StatusMessage, OperationID: s.OperationID,
		Fence: s.Fence, BlobPath: s.BlobPath, DumpPath: s.DumpPath, ManifestPath: s.ManifestPath,
		NewFilesCount: int64(s.NewFilesCount), NewFilesBytes: s.NewFilesBytes, StoredBytes: s.StoredBytes, DeletedAt: s.DeletedAt,
		UploadID: s.UploadID, UploadSHA256: s.UploadSHA256, AutomaticDay: s.AutomaticDay,
		AutomaticAttempt: int64(s.AutomaticAttempt), Expired: s.Expired}
	if len(s.Warnings) > 0 {
		b, _ := json.Marshal(s.Warnings)
		e.Warnings = string(b)
	}
	if s.Progress != nil {
		b, _ := json.Marshal(s.Progress)
		e.Progress = string(b)
	}
	if len(s.Readers) > 0 {
		b, _ := json.Marshal(s.Readers)
		e.Readers = string(b)
	}
	return e
}

func splitPartition(pk string) (string, string) {
	for i := 0; i < len(pk); i++ {
		if pk[i] == '|' {
			return pk[:i], pk[i+1:]
		}
	}
	return pk, ""
}

func (s *Store) GetSnapshot(ctx context.Context, namespace, envID, id string) (backup.Snapshot, error) {
	var e snapshotEntity
	_, found, err := get(ctx, s.table(tableSnapshots), envPartition(namespace, envID), id, &e)
	if err != nil {
		return backup.Snapshot{}, err
	}
	if !found {
		return backup.Snapshot{}, backup.Errorf(backup.CodeNotFound, "snapshot %s not found", id)
	}
	return e.toDomain(), nil
}

func (s *Store) ListSnapshots(ctx context.Context, namespace, envID string, offset, limit int) ([]backup.Snapshot, int, error) {
	entities, err := query[snapshotEntity](ctx, s.table(tableSnapshots), "PartitionKey eq "+odataString(envPartition(namespace, envID)), 0, "snapshots of "+envID)
	if err != nil {
		return nil, 0, err
	}
	all := make([]backup.Snapshot, len(entities))
	for i := range entities {
		all[i] = entities[i].toDomain()
	}
	page, total := backup.PageNewestFirst(all, offset, limit)
	return page, total, nil
}

// CreateSnapshot writes the snapshot's expiry entry first, so that the index never misses a snapshot (an
// entry without its snapshot, left by a crash in between, is dropped by WalkSnapshotsDue).
func (s *Store) CreateSnapshot(ctx context.Context, sn backup.Snapshot) error {
	if err := s.indexExpiry(ctx, sn.Namespace, sn.EnvironmentID, sn.ID, sn.ExpiresAt); err != nil {
		return err
	}
	return insert(ctx, s.table(tableSnapshots), snapshotFromDomain(sn))
}

// UpdateSnapshot writes the expiry entry of a new ExpiresAt before the write that sets it. The entry of
// the old ExpiresAt is left: WalkSnapshotsDue drops it when it reaches it. Removing it here would race
// with an update that sets the old time again (its entry written, then removed by this one).
func (s *Store) UpdateSnapshot(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Snapshot]) (backup.Snapshot, bool, error) {
	indexFirst := func(cur backup.Snapshot, exists bool) (backup.Snapshot, bool, error) {
		next, write, err := fn(cur, exists)
		if err == nil && write && !next.ExpiresAt.Equal(cur.ExpiresAt) {
			if err := s.indexExpiry(ctx, namespace, envID, id, next.ExpiresAt); err != nil {
				return cur, false, err
			}
		}
		return next, write, err
	}
	return updateEnvRecord(ctx, s.table(tableSnapshots), namespace, envID, id, indexFirst, snapshotFromDomain,
		func(n *backup.Snapshot) { n.Namespace, n.EnvironmentID, n.ID = namespace, envID, id })
}

// DeleteSnapshot deletes the record, then its expiry entry (best effort: a failure leaves a stale entry,
// which WalkSnapshotsDue drops). The record is read first for its ExpiresAt, and deleted only while
// unchanged, so the entry removed is the deleted record's; the entry is read before the record is
// deleted and removed only while unchanged, so that a snapshot created again with the same id in
// between keeps the entry it wrote.
func (s *Store) DeleteSnapshot(ctx context.Context, namespace, envID, id string) error {
	t, idx, pk := s.table(tableSnapshots), s.table(tableSnapshotExpiry), envPartition(namespace, envID)
	for attempt := 0; attempt < maxUpdateAttempts; attempt++ {
		var e snapshotEntity
		etag, found, err := get(ctx, t, pk, id, &e)
		if err != nil || !found {
			return err
		}
		rk := expiryKey(namespace, envID, id, e.ExpiresAt)
		var entry indexEntity
		var entryETag azcore.ETag
		entryFound := false
		if rk != "" {
			if entryETag, entryFound, err = get(ctx, idx, expiryPartition, rk, &entry); err != nil {
				return err
			}
		}
		if err := remove(ctx, t, pk, id, etag); err == errConflict {
			continue // changed since it was read: read it again
		} else if err != nil {
			return err
		}
		if entryFound {
			_ = remove(ctx, idx, expiryPartition, rk, entryETag)
		}
		return nil
	}
	return backup.Errorf(backup.CodeConflict, "snapshot %s changed too often while being deleted; try again", id)
}
