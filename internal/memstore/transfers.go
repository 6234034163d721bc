package memstore

import (
	"context"
	"sort"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

var (
	_ backup.ArchiveStore = (*Store)(nil)
	_ backup.UploadStore  = (*Store)(nil)
)

func (s *Store) GetArchive(ctx context.Context, namespace, envID, id string) (backup.Archive, error) {
	if err := ctx.Err(); err != nil {
		return backup.Archive{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.archives[key(namespace+"|"+envID, id)]
	if !ok {
		return backup.Archive{}, backup.Errorf(backup.CodeNotFound, "archive %s not found", id)
	}
	return cloneArchive(a), nil
}

func (s *Store) ListArchives(ctx context.Context, namespace, envID, snapshotID string) ([]backup.Archive, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []backup.Archive{}
	for _, a := range s.archives {
		if a.Namespace == namespace && a.EnvironmentID == envID && a.SnapshotID == snapshotID {
			out = append(out, cloneArchive(a))
		}
	}
	return out, nil
}

func (s *Store) CreateArchive(ctx context.Context, a backup.Archive) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(a.Namespace+"|"+a.EnvironmentID, a.ID)
	if cur, ok := s.archives[k]; ok {
		if sameRecord(cur, a) {
			return nil
		}
		return backup.Errorf(backup.CodeConflict, "archive %s exists", a.ID)
	}
	s.archives[k] = cloneArchive(a)
	return nil
}

func (s *Store) UpdateArchive(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Archive]) (backup.Archive, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.Archive{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(namespace+"|"+envID, id)
	cur, ok := s.archives[k]
	next, write, err := fn(cloneArchive(cur), ok)
	if err != nil || !write {
		return cloneArchive(cur), false, err
	}
	next.Namespace, next.EnvironmentID, next.ID = namespace, envID, id
	s.archives[k] = cloneArchive(next)
	return next, true, nil
}

func (s *Store) ListArchivesDue(ctx context.Context, before time.Time, limit int) ([]backup.Archive, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []backup.Archive
	for _, a := range s.archives {
		if a.RemovalDue() && a.RemoveAfter().Before(before) {
			out = append(out, cloneArchive(a))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out[:min(max(limit, 0), len(out))], nil
}

func cloneArchive(a backup.Archive) backup.Archive {
	if a.Progress != nil {
		p := *a.Progress
		a.Progress = &p
	}
	return a
}

func (s *Store) GetUpload(ctx context.Context, namespace, envID, id string) (backup.Upload, error) {
	if err := ctx.Err(); err != nil {
		return backup.Upload{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.uploads[key(namespace+"|"+envID, id)]
	if !ok {
		return backup.Upload{}, backup.Errorf(backup.CodeNotFound, "upload %s not found", id)
	}
	return u, nil
}

func (s *Store) CreateUpload(ctx context.Context, u backup.Upload) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(u.Namespace+"|"+u.EnvironmentID, u.ID)
	if cur, ok := s.uploads[k]; ok {
		if sameRecord(cur, u) {
			return nil
		}
		return backup.Errorf(backup.CodeConflict, "upload %s exists", u.ID)
	}
	s.uploads[k] = u
	return nil
}

func (s *Store) UpdateUpload(ctx context.Context, namespace, envID, id string, fn backup.UpdateFunc[backup.Upload]) (backup.Upload, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.Upload{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(namespace+"|"+envID, id)
	cur, ok := s.uploads[k]
	next, write, err := fn(cur, ok)
	if err != nil || !write {
		return cur, false, err
	}
	next.Namespace, next.EnvironmentID, next.ID = namespace, envID, id
	s.uploads[k] = next
	return next, true, nil
}

func (s *Store) ListUploadsDue(ctx context.Context, before time.Time, limit int) ([]backup.Upload, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []backup.Upload
	for _, u := range s.uploads {
		if u.RemovalDue() && u.RemoveAfter().Before(before) {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out[:min(max(limit, 0), len(out))], nil
}
