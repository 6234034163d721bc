package memstore

import (
	"context"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

var (
	_ backup.SnapshotStore  = (*Store)(nil)
	_ backup.OperationStore = (*Store)(nil)
)

func (s *Store) GetSnapshot(ctx context.Context, namespace, envID, id string) (backup.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return backup.Snapshot{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, ok := s.snapshots[key(namespace+"|"+envID, id)]
	if !ok {
		return backup.Snapshot{}, backup.Errorf(backup.CodeNotFound, "snapshot %s not found", id)
	}
	return cloneSnapshot(sn), nil
}

func (s *Store) ListSnapshots(ctx context.Context, namespace, envID string, offset, limit int) ([]backup.Snapshot, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []backup.Snapshot
	for _, sn := range s.snapshots {
		if sn.Namespace == namespace && sn.EnvironmentID == envID {
			all = append(all, cloneSnapshot(sn))
		}
	}
	page, total := backup.PageNewestFirst(all, offset, limit)
	return page, total, nil
}

func (s *Store) CreateSnapshot(ctx context.Context, sn backup.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(sn.Namespace+"|"+sn.EnvironmentID, sn.ID)
	if cur, ok := s.snapshots[k]; ok {
		if sameRecord(cur, sn) {
			return nil // the same insert again
		}
		return backup.Errorf(backup.CodeConflict, "snapshot %s exists", sn.ID)
	}
	s.snapshots[k] = cloneSnapshot(sn)
	return nil
}

func (s *Store) UpdateSnapshot(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Snapshot]) (backup.Snapshot, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.Snapshot{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(namespace+"|"+envID, id)
	cur, ok := s.snapshots[k]
	next, write, err := fn(cloneSnapshot(cur), ok)
	if err != nil || !write {
		return cloneSnapshot(cur), false, err
	}
	next.Namespace, next.EnvironmentID, next.ID = namespace, envID, id
	s.snapshots[k] = cloneSnapshot(next)
	return next, true, nil
}

func (s *Store) DeleteSnapshot(ctx context.Context, namespace, envID, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.snapshots, key(namespace+"|"+envID, id))
	return nil
}

func cloneSnapshot(sn backup.Snapshot) backup.Snapshot {
	sn.Warnings, sn.Readers = slices.Clone(sn.Warnings), slices.Clone(sn.Readers)
	if sn.Progress != nil {
		p := *sn.Progress
		sn.Progress = &p
	}
	return sn
}

func (s *Store) GetOperation(ctx context.Context, namespace, envID, id string) (backup.Operation, error) {
	if err := ctx.Err(); err != nil {
		return backup.Operation{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	op, ok := s.operations[key(namespace+"|"+envID, id)]
	if !ok {
		return backup.Operation{}, backup.Errorf(backup.CodeNotFound, "operation %s not found", id)
	}
	return op, nil
}

func (s *Store) CreateOperation(ctx context.Context, op backup.Operation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(op.Namespace+"|"+op.EnvironmentID, op.ID)
	if cur, ok := s.operations[k]; ok {
		if sameRecord(cur, op) {
			return nil // the same insert again
		}
		return backup.Errorf(backup.CodeConflict, "operation %s exists", op.ID)
	}
	s.operations[k] = op
	return nil
}

func (s *Store) UpdateOperation(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Operation]) (backup.Operation, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.Operation{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(namespace+"|"+envID, id)
	cur, ok := s.operations[k]
	next, write, err := fn(cur, ok)
	if err != nil || !write {
		return cur, false, err
	}
	next.Namespace, next.EnvironmentID, next.ID = namespace, envID, id
	s.operations[k] = next
	return next, true, nil
}

func (s *Store) ListActiveOperations(ctx context.Context) ([]backup.Operation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []backup.Operation
	for _, op := range s.operations {
		if !op.Settled {
			out = append(out, op)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	s.activeLists++
	return out, nil
}

// PruneOperations deletes the settled operations that finished before endedBefore, oldest first, at most
// limit, like tablestore (whose index keys ended operations by their finish time).
func (s *Store) PruneOperations(ctx context.Context, endedBefore time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ended []string
	for k, op := range s.operations {
		if op.Settled && op.FinishedAt.Before(endedBefore) {
			ended = append(ended, k)
		}
	}
	sort.Slice(ended, func(i, j int) bool {
		a, b := s.operations[ended[i]], s.operations[ended[j]]
		if !a.FinishedAt.Equal(b.FinishedAt) {
			return a.FinishedAt.Before(b.FinishedAt)
		}
		return ended[i] < ended[j]
	})
	n := min(max(limit, 0), len(ended))
	for _, k := range ended[:n] {
		delete(s.operations, k)
	}
	return n, nil
}

// ActiveLists counts the calls of ListActiveOperations, for tests.
func (s *Store) ActiveLists() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.activeLists
}

// Operations returns every operation, for tests.
func (s *Store) Operations() []backup.Operation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]backup.Operation, 0, len(s.operations))
	for _, op := range s.operations {
		out = append(out, op)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Store) GetLock(ctx context.Context, namespace, envID string) (backup.Lock, error) {
	if err := ctx.Err(); err != nil {
		return backup.Lock{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.locks[key(namespace, envID)], nil
}

func (s *Store) UpdateLock(ctx context.Context, namespace, envID string, fn backup.UpdateFunc[backup.Lock]) (backup.Lock, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.Lock{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.locks[key(namespace, envID)]
	next, write, err := fn(cur, ok)
	if err != nil || !write {
		return cur, false, err
	}
	s.locks[key(namespace, envID)] = next
	return next, true, nil
}

// sameRecord reports whether two records are equal as a store keeps them (times compared as instants,
// as Table Storage returns them in UTC).
func sameRecord[T any](a, b T) bool {
	return reflect.DeepEqual(normalized(a), normalized(b))
}

// normalized returns v with every time.Time field in UTC (records are flat structs, with pointers and
// slices of plain values).
func normalized[T any](v T) T {
	rv := reflect.ValueOf(&v).Elem()
	for i := 0; i < rv.NumField(); i++ {
		if t, ok := rv.Field(i).Interface().(time.Time); ok {
			rv.Field(i).Set(reflect.ValueOf(t.UTC()))
		}
	}
	return v
}
