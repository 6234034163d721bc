package memstore

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.RestoreStore = (*Store)(nil)

func (s *Store) GetRestore(ctx context.Context, namespace, envID, id string) (backup.Restore, error) {
	if err := ctx.Err(); err != nil {
		return backup.Restore{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.restores[key(namespace+"|"+envID, id)]
	if !ok {
		return backup.Restore{}, backup.Errorf(backup.CodeNotFound, "restore %s not found", id)
	}
	return cloneRestore(r), nil
}

func (s *Store) ListRestores(ctx context.Context, namespace, envID string, offset, limit int) ([]backup.Restore, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []backup.Restore
	for _, r := range s.restores {
		if r.Namespace == namespace && r.EnvironmentID == envID {
			all = append(all, cloneRestore(r))
		}
	}
	page, total := backup.PageRestoresNewestFirst(all, offset, limit)
	return page, total, nil
}

func (s *Store) CreateRestore(ctx context.Context, r backup.Restore) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(r.Namespace+"|"+r.EnvironmentID, r.ID)
	if cur, ok := s.restores[k]; ok {
		if sameRecord(cur, r) {
			return nil // the same insert again
		}
		return backup.Errorf(backup.CodeConflict, "restore %s exists", r.ID)
	}
	s.restores[k] = cloneRestore(r)
	return nil
}

func (s *Store) UpdateRestore(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Restore]) (backup.Restore, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.Restore{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(namespace+"|"+envID, id)
	cur, ok := s.restores[k]
	next, write, err := fn(cloneRestore(cur), ok)
	if err != nil || !write {
		return cloneRestore(cur), false, err
	}
	next.Namespace, next.EnvironmentID, next.ID = namespace, envID, id
	s.restores[k] = cloneRestore(next)
	return next, true, nil
}

// ListUndoDue returns the committed restores whose UndoUntil is before before, oldest first (tablestore
// returns them in key order; callers rely on neither), at most limit.
func (s *Store) ListUndoDue(ctx context.Context, before time.Time, limit int) ([]backup.Restore, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []backup.Restore
	for _, r := range s.restores {
		if r.UndoDataDiscardable() && r.UndoUntil.Before(before) {
			out = append(out, cloneRestore(r))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].UndoUntil.Equal(out[j].UndoUntil) {
			return out[i].UndoUntil.Before(out[j].UndoUntil)
		}
		return out[i].ID < out[j].ID
	})
	return out[:min(max(limit, 0), len(out))], nil
}

func cloneRestore(r backup.Restore) backup.Restore {
	r.Warnings = slices.Clone(r.Warnings)
	if r.Progress != nil {
		p := *r.Progress
		r.Progress = &p
	}
	return r
}
