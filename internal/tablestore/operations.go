package tablestore

import (
	"context"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.OperationStore = (*Store)(nil)

// operationEntity: PartitionKey = namespace "|" environment, RowKey = operation id. The environment's
// lock lives in the same partition under RowKey lockRowKey. The OperationIndex table (opindex.go) finds
// the unsettled and the prunable ones without reading this table whole.
type operationEntity struct {
	PartitionKey  string
	RowKey        string
	Kind          string
	SubjectID     string
	Phase         string
	Actor         string
	Fence         int64
	Attempt       int64
	LeaseUntil    time.Time
	Worker        string
	StatusMessage string
	Enqueues      int64
	EnqueuedAt    time.Time
	Settled       bool
	CreatedAt     time.Time
	UpdatedAt     time.Time
	StartedAt     time.Time
	FinishedAt    time.Time
}

func (e *operationEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (e *operationEntity) toDomain() backup.Operation {
	ns, env := splitPartition(e.PartitionKey)
	return backup.Operation{ID: e.RowKey, Namespace: ns, EnvironmentID: env, Kind: backup.OperationKind(e.Kind),
		SubjectID: e.SubjectID, Phase: backup.OperationPhase(e.Phase), Actor: e.Actor, Fence: e.Fence,
		Attempt: int(e.Attempt), LeaseUntil: e.LeaseUntil, Worker: e.Worker, StatusMessage: e.StatusMessage,
		Enqueues: int(e.Enqueues), EnqueuedAt: e.EnqueuedAt, Settled: e.Settled, CreatedAt: e.CreatedAt,
		UpdatedAt: e.UpdatedAt, StartedAt: e.StartedAt, FinishedAt: e.FinishedAt}
}

func operationFromDomain(o backup.Operation) *operationEntity {
	return &operationEntity{PartitionKey: envPartition(o.Namespace, o.EnvironmentID), RowKey: o.ID, Kind: string(o.Kind),
		SubjectID: o.SubjectID, Phase: string(o.Phase), Actor: o.Actor, Fence: o.Fence, Attempt: int64(o.Attempt),
		LeaseUntil: o.LeaseUntil, Worker: o.Worker, StatusMessage: o.StatusMessage, Enqueues: int64(o.Enqueues),
		EnqueuedAt: o.EnqueuedAt, Settled: o.Settled, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
		StartedAt: o.StartedAt, FinishedAt: o.FinishedAt}
}

const lockRowKey = "~lock"

type lockEntity struct {
	PartitionKey string
	RowKey       string
	OperationID  string
	Kind         string
	Since        time.Time
}

func (e *lockEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (s *Store) GetOperation(ctx context.Context, namespace, envID, id string) (backup.Operation, error) {
	op, _, found, err := s.readOperation(ctx, namespace, envID, id)
	if err != nil {
		return backup.Operation{}, err
	}
	if !found {
		return backup.Operation{}, backup.Errorf(backup.CodeNotFound, "operation %s not found", id)
	}
	return op, nil
}

// CreateOperation writes the operation's index entry first, so that the index always holds every
// unsettled operation (an entry without its operation, left by a crash in between, is dropped by
// ListActiveOperations).
func (s *Store) CreateOperation(ctx context.Context, op backup.Operation) error {
	if err := s.indexActive(ctx, op.Namespace, op.EnvironmentID, op.ID); err != nil {
		return err
	}
	if err := insert(ctx, s.table(tableOperations), operationFromDomain(op)); err != nil {
		return err
	}
	if op.Settled {
		s.indexSettled(ctx, op, "")
	}
	return nil
}

// UpdateOperation keeps the index in step with the write: an operation that becomes unsettled (or is
// created here) gets its active entry before the write, and one written settled moves to its ended
// day's partition after the write. Settled is final in the domain, so the first case is only the
// creation.
func (s *Store) UpdateOperation(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Operation]) (backup.Operation, bool, error) {
	indexFirst := func(cur backup.Operation, exists bool) (backup.Operation, bool, error) {
		next, write, err := fn(cur, exists)
		if err == nil && write && !next.Settled && (!exists || cur.Settled) {
			if err := s.indexActive(ctx, namespace, envID, id); err != nil {
				return cur, false, err
			}
		}
		return next, write, err
	}
	op, wrote, err := updateEnvRecord(ctx, s.table(tableOperations), namespace, envID, id, indexFirst, operationFromDomain,
		func(n *backup.Operation) { n.Namespace, n.EnvironmentID, n.ID = namespace, envID, id })
	if err == nil && wrote && op.Settled {
		s.indexSettled(ctx, op, "")
	}
	return op, wrote, err
}

// readOperation reads an operation with its ETag; the lock row is not an operation.
func (s *Store) readOperation(ctx context.Context, namespace, envID, id string) (backup.Operation, azcore.ETag, bool, error) {
	if id == lockRowKey {
		return backup.Operation{}, "", false, nil
	}
	var e operationEntity
	etag, found, err := get(ctx, s.table(tableOperations), envPartition(namespace, envID), id, &e)
	if err != nil || !found {
		return backup.Operation{}, "", false, err
	}
	return e.toDomain(), etag, true, nil
}

func (s *Store) GetLock(ctx context.Context, namespace, envID string) (backup.Lock, error) {
	var e lockEntity
	_, _, err := get(ctx, s.table(tableOperations), envPartition(namespace, envID), lockRowKey, &e)
	if err != nil {
		return backup.Lock{}, err
	}
	return backup.Lock{OperationID: e.OperationID, Kind: backup.OperationKind(e.Kind), Since: e.Since}, nil
}

func (s *Store) UpdateLock(ctx context.Context, namespace, envID string, fn backup.UpdateFunc[backup.Lock]) (backup.Lock, bool, error) {
	pk := envPartition(namespace, envID)
	next, wrote, err := update(ctx, s.table(tableOperations), pk, lockRowKey,
		func(cur *lockEntity, exists bool) (*lockEntity, bool, error) {
			d := backup.Lock{OperationID: cur.OperationID, Kind: backup.OperationKind(cur.Kind), Since: cur.Since}
			n, write, err := fn(d, exists)
			if err != nil || !write {
				return cur, false, err
			}
			return &lockEntity{PartitionKey: pk, RowKey: lockRowKey, OperationID: n.OperationID, Kind: string(n.Kind), Since: n.Since}, true, nil
		})
	if err != nil {
		return backup.Lock{}, false, err
	}
	return backup.Lock{OperationID: next.OperationID, Kind: backup.OperationKind(next.Kind), Since: next.Since}, wrote, nil
}
