// Package memstore implements the domain's stores in memory, for fast unit tests of the domain. The
// conformance suite in internal/storetest runs against it and against tablestore, so the fake behaves
// like the real thing.
package memstore

import (
	"context"
	"slices"
	"sort"
	"sync"

	"github.com/mxazure/backups/internal/backup"
)

// Store is an in-memory implementation of every store interface. Safe for concurrent use.
type Store struct {
	mu           sync.Mutex
	environments map[string]backup.Environment
	grants       map[string]backup.Grant
	settings     map[string]backup.Settings
	activity     map[string][]backup.ActivityEntry
	rejected     []backup.RejectedEvent
	snapshots    map[string]backup.Snapshot
	operations   map[string]backup.Operation
	locks        map[string]backup.Lock
	restores     map[string]backup.Restore
	archives     map[string]backup.Archive
	uploads      map[string]backup.Upload
	scheduleRuns map[string]backup.ScheduleRun // by day
	activeLists  int                           // calls of ListActiveOperations, for tests (ActiveLists)
	walkPage     int                           // environments per page of WalkEnvironments; tests lower it
}

var (
	_ backup.EnvironmentStore   = (*Store)(nil)
	_ backup.GrantStore         = (*Store)(nil)
	_ backup.SettingsStore      = (*Store)(nil)
	_ backup.ActivityStore      = (*Store)(nil)
	_ backup.RejectedEventStore = (*Store)(nil)
)

// New returns an empty store.
func New() *Store {
	return &Store{
		environments: map[string]backup.Environment{},
		grants:       map[string]backup.Grant{},
		settings:     map[string]backup.Settings{},
		activity:     map[string][]backup.ActivityEntry{},
		snapshots:    map[string]backup.Snapshot{},
		operations:   map[string]backup.Operation{},
		locks:        map[string]backup.Lock{},
		restores:     map[string]backup.Restore{},
		archives:     map[string]backup.Archive{},
		uploads:      map[string]backup.Upload{},
		scheduleRuns: map[string]backup.ScheduleRun{},
		walkPage:     defaultWalkPage,
	}
}

// Stores returns the store as every domain store.
func (s *Store) Stores() backup.Stores {
	return backup.Stores{Environments: s, Grants: s, Settings: s, Activity: s, Rejected: s, Snapshots: s,
		Operations: s, Restores: s, Archives: s, Uploads: s, Schedule: s}
}

func key(a, b string) string { return a + "\x00" + b }

func (s *Store) GetEnvironment(ctx context.Context, namespace, id string) (backup.Environment, error) {
	if err := ctx.Err(); err != nil {
		return backup.Environment{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.environments[key(namespace, id)]
	if !ok {
		return backup.Environment{}, backup.Errorf(backup.CodeEnvironmentNotFound, "environment %s not found in namespace %s", id, namespace)
	}
	return e, nil
}

func (s *Store) ListEnvironments(ctx context.Context, namespace string) ([]backup.Environment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []backup.Environment
	for _, e := range s.environments {
		if e.Namespace == namespace {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

func (s *Store) UpdateEnvironment(ctx context.Context, namespace, id string, fn backup.UpdateFunc[backup.Environment]) (backup.Environment, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.Environment{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.environments[key(namespace, id)]
	next, write, err := fn(cur, exists)
	if err != nil || !write {
		return cur, false, err
	}
	next.Namespace, next.ID = namespace, id
	s.environments[key(namespace, id)] = next
	return next, true, nil
}

func (s *Store) GetGrant(ctx context.Context, namespace, principalID string) (backup.Grant, error) {
	if err := ctx.Err(); err != nil {
		return backup.Grant{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.grants[key(namespace, principalID)]
	if !ok {
		return backup.Grant{Namespace: namespace, PrincipalID: principalID}, nil
	}
	g.Permissions = slices.Clone(g.Permissions)
	return g, nil
}

func (s *Store) UpdateGrant(ctx context.Context, namespace, principalID string, fn backup.UpdateFunc[backup.Grant]) (backup.Grant, bool, error) {
	if err := ctx.Err(); err != nil {
		return backup.Grant{}, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.grants[key(namespace, principalID)]
	if !exists {
		cur = backup.Grant{Namespace: namespace, PrincipalID: principalID}
	}
	next, write, err := fn(cur, exists)
	if err != nil || !write {
		return cur, false, err
	}
	next.Namespace, next.PrincipalID = namespace, principalID
	next.Permissions = slices.Clone(next.Permissions)
	s.grants[key(namespace, principalID)] = next
	return next, true, nil
}

func (s *Store) GetSettings(ctx context.Context, namespace string) (backup.Settings, error) {
	if err := ctx.Err(); err != nil {
		return backup.Settings{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set, ok := s.settings[namespace]
	if !ok {
		return backup.Settings{Namespace: namespace}, nil
	}
	return set, nil
}

func (s *Store) PutSettings(ctx context.Context, set backup.Settings) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settings[set.Namespace] = set
	return nil
}

func (s *Store) AddActivity(ctx context.Context, e backup.ActivityEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(e.Namespace, e.EnvironmentID)
	if e.ID != "" && slices.ContainsFunc(s.activity[k], func(o backup.ActivityEntry) bool { return o.ID == e.ID && o.Time.Equal(e.Time) }) {
		return nil // idempotent: the same step logged again
	}
	s.activity[k] = append(s.activity[k], e)
	return nil
}

func (s *Store) ListActivity(ctx context.Context, namespace, environmentID string, offset, limit int) ([]backup.ActivityEntry, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	all := slices.Clone(s.activity[key(namespace, environmentID)])
	// Newest first. Entries of the same time come here in reverse insertion order; tablestore orders them
	// by the suffix of their keys (a hash or a random value), so callers must not rely on either order.
	slices.Reverse(all)
	slices.SortStableFunc(all, func(a, b backup.ActivityEntry) int { return b.Time.Compare(a.Time) })
	total := len(all)
	start := min(max(offset, 0), total)
	return all[start : start+min(max(limit, 0), total-start)], total, nil
}

func (s *Store) AddRejectedEvent(ctx context.Context, r backup.RejectedEvent) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected = append(s.rejected, r)
	return nil
}

// RejectedEvents returns what was rejected, for tests.
func (s *Store) RejectedEvents() []backup.RejectedEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rejected)
}
