package memstore

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// What the schedule reads and writes: the walk over every environment, the enabled namespaces, the
// snapshots due for expiry and the schedule's runs.

var _ backup.ScheduleStore = (*Store)(nil)

// defaultWalkPage is how many environments WalkEnvironments takes per look at the map (Store.walkPage).
// fn runs without the lock (it may call the store), and each page starts after the last key seen, as
// tablestore's pages do, so environments written during a walk show up when their key is still ahead.
const defaultWalkPage = 100

// compareEnvKey orders environments by (namespace, id), as Table Storage orders (PartitionKey, RowKey):
// not as the text "<namespace>|<id>", which would put "a-b|x" before "a|x".
func compareEnvKey(ns1, id1, ns2, id2 string) int {
	if c := strings.Compare(ns1, ns2); c != 0 {
		return c
	}
	return strings.Compare(id1, id2)
}

// WalkEnvironments calls fn with every environment after the key after, in (namespace, id) order. A
// key without "|" is a namespace: the walk starts at that namespace's first environment.
func (s *Store) WalkEnvironments(ctx context.Context, after string, fn func(backup.Environment) (bool, error)) error {
	ns, id, _ := strings.Cut(after, "|")
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		page := s.environmentsAfter(ns, id, s.walkPage)
		for _, e := range page {
			more, err := fn(e)
			if err != nil || !more {
				return err
			}
		}
		if len(page) < s.walkPage {
			return nil
		}
		last := page[len(page)-1]
		ns, id = last.Namespace, last.ID
	}
}

// environmentsAfter returns the first n environments after (ns, id).
func (s *Store) environmentsAfter(ns, id string, n int) []backup.Environment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []backup.Environment
	for _, e := range s.environments {
		if compareEnvKey(e.Namespace, e.ID, ns, id) > 0 {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b backup.Environment) int { return compareEnvKey(a.Namespace, a.ID, b.Namespace, b.ID) })
	return out[:min(n, len(out))]
}

func (s *Store) ListEnabledNamespaces(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []string{}
	for ns, set := range s.settings {
		if set.BackupsEnabled {
			out = append(out, ns)
		}
	}
	sort.Strings(out)
	return out, nil
}

// WalkSnapshotsDue calls fn with the snapshots whose ExpiresAt is set and before before, earliest first,
// as they were when the walk started (fn runs without the lock, so it may change the store). Ties are
// ordered as tablestore's index orders them: by the text "<namespace>|<environment>|<id>".
func (s *Store) WalkSnapshotsDue(ctx context.Context, before time.Time, fn func(backup.Snapshot) (bool, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	var due []backup.Snapshot
	for _, sn := range s.snapshots {
		if !sn.ExpiresAt.IsZero() && sn.ExpiresAt.Before(before) {
			due = append(due, cloneSnapshot(sn))
		}
	}
	s.mu.Unlock()
	slices.SortFunc(due, func(a, b backup.Snapshot) int {
		if c := a.ExpiresAt.Compare(b.ExpiresAt); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace+"|"+a.EnvironmentID+"|"+a.ID, b.Namespace+"|"+b.EnvironmentID+"|"+b.ID)
	})
	for _, sn := range due {
		if err := ctx.Err(); err != nil {
			return err
		}
		if more, err := fn(sn); err != nil || !more {
			return err
		}
	}
	return nil
}

func (s *Store) GetScheduleRun(ctx context.Context, day string) (backup.ScheduleRun, error) {
	if err := ctx.Err(); err != nil {
		return backup.ScheduleRun{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.scheduleRuns[day]
	if !ok {
		return backup.ScheduleRun{}, backup.Errorf(backup.CodeNotFound, "the schedule has no run on %s", day)
	}
	return r, nil
}

func (s *Store) UpdateScheduleRun(ctx context.Context, day string, fn backup.UpdateFunc[backup.ScheduleRun]) (backup.ScheduleRun, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.ScheduleRun{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.scheduleRuns[day]
	next, write, err := fn(cur, exists)
	if err != nil || !write {
		return cur, false, err
	}
	next.Day = day
	s.scheduleRuns[day] = next
	return next, true, nil
}

func (s *Store) ListScheduleRuns(ctx context.Context, fromDay string) ([]backup.ScheduleRun, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []backup.ScheduleRun{}
	for day, r := range s.scheduleRuns {
		if day >= fromDay {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b backup.ScheduleRun) int { return strings.Compare(a.Day, b.Day) })
	return out, nil
}
