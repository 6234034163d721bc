package tablestore

import (
	"context"
	"encoding/json"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

var (
	_ backup.SnapshotStore  = (*Store)(nil)
	_ backup.OperationStore = (*Store)(nil)
)

// snapshotEntity: PartitionKey = namespace "|" environment, RowKey = snapshot id. An environment holds
// tens of snapshots (retention bounds them), so listing reads the partition and pages in memory.
type snapshotEntity struct {
	PartitionKey      string
	RowKey            string
	Status            string
	Kind              string
	Comment           string
	CreatedAt         string
	UpdatedAt         string
	FinishedAt        string
	ExpiresAt         string
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
	BlobPath          string
}

func (e *snapshotEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func envPartition(namespace, envID string) string { return namespace + "|" + envID }

func (e *snapshotEntity) toDomain() backup.Snapshot {
	ns, env := splitPartition(e.PartitionKey)
	out := backup.Snapshot{ID: e.RowKey, Namespace: ns, EnvironmentID: env, Status: backup.SnapshotStatus(e.Status),
		Kind: backup.SnapshotKind(e.Kind), Comment: e.Comment, CreatedAt: parseTime(e.CreatedAt), UpdatedAt: parseTime(e.UpdatedAt),
		FinishedAt: parseTime(e.FinishedAt), ExpiresAt: parseTime(e.ExpiresAt), CreatedBy: e.CreatedBy,
		DeploymentPackage: e.DeploymentPackage, ModelVersion: e.ModelVersion, SizeBytes: e.SizeBytes,
		DatabaseSizeBytes: e.DatabaseSizeBytes, DumpSizeBytes: e.DumpSizeBytes, FilesBytes: e.FilesBytes,
		FilesCount: int(e.FilesCount), SHA256: e.SHA256, StatusMessage: e.StatusMessage, OperationID: e.OperationID, BlobPath: e.BlobPath}
	if e.Warnings != "" {
		_ = json.Unmarshal([]byte(e.Warnings), &out.Warnings) // written by snapshotFromDomain
	}
	if e.Progress != "" {
		var p backup.Progress
		if json.Unmarshal([]byte(e.Progress), &p) == nil {
			out.Progress = &p
		}
	}
	return out
}

func snapshotFromDomain(s backup.Snapshot) *snapshotEntity {
	e := &snapshotEntity{PartitionKey: envPartition(s.Namespace, s.EnvironmentID), RowKey: s.ID, Status: string(s.Status),
		Kind: string(s.Kind), Comment: s.Comment, CreatedAt: formatTime(s.CreatedAt), UpdatedAt: formatTime(s.UpdatedAt),
		FinishedAt: formatTime(s.FinishedAt), ExpiresAt: formatTime(s.ExpiresAt), CreatedBy: s.CreatedBy,
		DeploymentPackage: s.DeploymentPackage, ModelVersion: s.ModelVersion, SizeBytes: s.SizeBytes,
		DatabaseSizeBytes: s.DatabaseSizeBytes, DumpSizeBytes: s.DumpSizeBytes, FilesBytes: s.FilesBytes,
		FilesCount: int64(s.FilesCount), SHA256: s.SHA256, StatusMessage: s.StatusMessage, OperationID: s.OperationID, BlobPath: s.BlobPath}
	if len(s.Warnings) > 0 {
		b, _ := json.Marshal(s.Warnings)
		e.Warnings = string(b)
	}
	if s.Progress != nil {
		b, _ := json.Marshal(s.Progress)
		e.Progress = string(b)
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

func (s *Store) CreateSnapshot(ctx context.Context, sn backup.Snapshot) error {
	return insert(ctx, s.table(tableSnapshots), snapshotFromDomain(sn))
}

func (s *Store) UpdateSnapshot(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Snapshot]) (backup.Snapshot, bool, error) {
	return updateEnvRecord(ctx, s.table(tableSnapshots), namespace, envID, id, fn, snapshotFromDomain,
		func(n *backup.Snapshot) { n.Namespace, n.EnvironmentID, n.ID = namespace, envID, id })
}

func (s *Store) DeleteSnapshot(ctx context.Context, namespace, envID, id string) error {
	_, err := s.table(tableSnapshots).DeleteEntity(ctx, envPartition(namespace, envID), id, nil)
	if err != nil && !isNotFound(err) {
		return transient(err, "delete snapshot %s", id)
	}
	return nil
}

// operationEntity: PartitionKey = namespace "|" environment, RowKey = operation id. The environment's
// lock lives in the same partition under RowKey lockRowKey.
type operationEntity struct {
	PartitionKey  string
	RowKey        string
	Kind          string
	SnapshotID    string
	Phase         string
	Actor         string
	Attempt       int64
	LeaseUntil    string
	Worker        string
	StatusMessage string
	CreatedAt     string
	UpdatedAt     string
	StartedAt     string
	FinishedAt    string
}

func (e *operationEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (e *operationEntity) toDomain() backup.Operation {
	ns, env := splitPartition(e.PartitionKey)
	return backup.Operation{ID: e.RowKey, Namespace: ns, EnvironmentID: env, Kind: backup.OperationKind(e.Kind),
		SubjectID: e.SnapshotID, Phase: backup.OperationPhase(e.Phase), Actor: e.Actor, Attempt: int(e.Attempt),
		LeaseUntil: parseTime(e.LeaseUntil), Worker: e.Worker, StatusMessage: e.StatusMessage, CreatedAt: parseTime(e.CreatedAt),
		UpdatedAt: parseTime(e.UpdatedAt), StartedAt: parseTime(e.StartedAt), FinishedAt: parseTime(e.FinishedAt)}
}

func operationFromDomain(o backup.Operation) *operationEntity {
	return &operationEntity{PartitionKey: envPartition(o.Namespace, o.EnvironmentID), RowKey: o.ID, Kind: string(o.Kind),
		SnapshotID: o.SubjectID, Phase: string(o.Phase), Actor: o.Actor, Attempt: int64(o.Attempt),
		LeaseUntil: formatTime(o.LeaseUntil), Worker: o.Worker, StatusMessage: o.StatusMessage, CreatedAt: formatTime(o.CreatedAt),
		UpdatedAt: formatTime(o.UpdatedAt), StartedAt: formatTime(o.StartedAt), FinishedAt: formatTime(o.FinishedAt)}
}

const lockRowKey = "~lock"

type lockEntity struct {
	PartitionKey string
	RowKey       string
	OperationID  string
	Kind         string
	Since        string
}

func (e *lockEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (s *Store) GetOperation(ctx context.Context, namespace, envID, id string) (backup.Operation, error) {
	var e operationEntity
	_, found, err := get(ctx, s.table(tableOperations), envPartition(namespace, envID), id, &e)
	if err != nil {
		return backup.Operation{}, err
	}
	if !found || id == lockRowKey {
		return backup.Operation{}, backup.Errorf(backup.CodeNotFound, "operation %s not found", id)
	}
	return e.toDomain(), nil
}

func (s *Store) CreateOperation(ctx context.Context, op backup.Operation) error {
	return insert(ctx, s.table(tableOperations), operationFromDomain(op))
}

func (s *Store) UpdateOperation(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Operation]) (backup.Operation, bool, error) {
	return updateEnvRecord(ctx, s.table(tableOperations), namespace, envID, id, fn, operationFromDomain,
		func(n *backup.Operation) { n.Namespace, n.EnvironmentID, n.ID = namespace, envID, id })
}

func (s *Store) ListActiveOperations(ctx context.Context) ([]backup.Operation, error) {
	entities, err := query[operationEntity](ctx, s.table(tableOperations), "Phase eq 'Queued' or Phase eq 'Running'", 0, "active operations")
	if err != nil {
		return nil, err
	}
	out := make([]backup.Operation, len(entities))
	for i := range entities {
		out[i] = entities[i].toDomain()
	}
	return out, nil
}

// PruneOperations is not yet indexed: it deletes nothing until the operations index lands.
func (s *Store) PruneOperations(ctx context.Context, endedBefore time.Time, limit int) (int, error) {
	return 0, ctx.Err()
}

func (s *Store) GetLock(ctx context.Context, namespace, envID string) (backup.Lock, error) {
	var e lockEntity
	_, _, err := get(ctx, s.table(tableOperations), envPartition(namespace, envID), lockRowKey, &e)
	if err != nil {
		return backup.Lock{}, err
	}
	return backup.Lock{OperationID: e.OperationID, Kind: backup.OperationKind(e.Kind), Since: parseTime(e.Since)}, nil
}

func (s *Store) UpdateLock(ctx context.Context, namespace, envID string, fn backup.UpdateFunc[backup.Lock]) (backup.Lock, bool, error) {
	pk := envPartition(namespace, envID)
	next, wrote, err := update(ctx, s.table(tableOperations), pk, lockRowKey,
		func(cur *lockEntity, exists bool) (*lockEntity, bool, error) {
			d := backup.Lock{OperationID: cur.OperationID, Kind: backup.OperationKind(cur.Kind), Since: parseTime(cur.Since)}
			n, write, err := fn(d, exists)
			if err != nil || !write {
				return cur, false, err
			}
			return &lockEntity{PartitionKey: pk, RowKey: lockRowKey, OperationID: n.OperationID, Kind: string(n.Kind), Since: formatTime(n.Since)}, true, nil
		})
	if err != nil {
		return backup.Lock{}, false, err
	}
	return backup.Lock{OperationID: next.OperationID, Kind: backup.OperationKind(next.Kind), Since: parseTime(next.Since)}, wrote, nil
}
