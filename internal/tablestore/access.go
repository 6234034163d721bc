package tablestore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

var (
	_ backup.EnvironmentStore   = (*Store)(nil)
	_ backup.GrantStore         = (*Store)(nil)
	_ backup.SettingsStore      = (*Store)(nil)
	_ backup.ActivityStore      = (*Store)(nil)
	_ backup.RejectedEventStore = (*Store)(nil)
)

// Stores returns the store as every domain store.
func (s *Store) Stores() backup.Stores {
	return backup.Stores{Environments: s, Grants: s, Settings: s, Activity: s, Rejected: s, Snapshots: s,
		Operations: s, Restores: s, Archives: s, Uploads: s, Schedule: s}
}

// environmentEntity: PartitionKey = namespace, RowKey = environment id.
type environmentEntity struct {
	PartitionKey      string
	RowKey            string
	AppID             string
	Name              string
	State             string
	Deployed          bool
	DeploymentPackage string
	ModelVersion      string
	DBHost            string
	DBPort            int32
	DBName            string
	DBRole            string
	FilesContainer    string
	FilesPrefix       string
	EventTime         time.Time
	EventID           string
	UpdatedAt         time.Time
	StoreObjects      int64
	StoreBytes        int64
	StoreMeasuredAt   time.Time
}

func (e *environmentEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (e *environmentEntity) toDomain() backup.Environment {
	return backup.Environment{
		ID: e.RowKey, Namespace: e.PartitionKey, AppID: e.AppID, Name: e.Name, State: backup.EnvironmentState(e.State),
		Deployed: e.Deployed, DeploymentPackage: e.DeploymentPackage, ModelVersion: e.ModelVersion,
		Database:  backup.DatabaseLocation{Host: e.DBHost, Port: int(e.DBPort), Name: e.DBName, Role: e.DBRole},
		Files:     backup.FileLocation{Container: e.FilesContainer, Prefix: e.FilesPrefix},
		EventTime: e.EventTime, EventID: e.EventID, UpdatedAt: e.UpdatedAt,
		FileStore: backup.FileStoreUsage{Objects: int(e.StoreObjects), Bytes: e.StoreBytes, MeasuredAt: e.StoreMeasuredAt},
	}
}

func environmentFromDomain(e backup.Environment) *environmentEntity {
	return &environmentEntity{
		PartitionKey: e.Namespace, RowKey: e.ID, AppID: e.AppID, Name: e.Name, State: string(e.State),
		Deployed: e.Deployed, DeploymentPackage: e.DeploymentPackage, ModelVersion: e.ModelVersion,
		DBHost: e.Database.Host, DBPort: int32(e.Database.Port), DBName: e.Database.Name, DBRole: e.Database.Role,
		FilesContainer: e.Files.Container, FilesPrefix: e.Files.Prefix,
		EventTime: e.EventTime, EventID: e.EventID, UpdatedAt: e.UpdatedAt,
		StoreObjects: int64(e.FileStore.Objects), StoreBytes: e.FileStore.Bytes, StoreMeasuredAt: e.FileStore.MeasuredAt,
	}
}

func (s *Store) GetEnvironment(ctx context.Context, namespace, id string) (backup.Environment, error) {
	var e environmentEntity
	_, found, err := get(ctx, s.table(tableEnvironments), namespace, id, &e)
	if err != nil {
		return backup.Environment{}, err
	}
	if !found {
		return backup.Environment{}, backup.Errorf(backup.CodeEnvironmentNotFound, "environment %s not found in namespace %s", id, namespace)
	}
	return e.toDomain(), nil
}

func (s *Store) ListEnvironments(ctx context.Context, namespace string) ([]backup.Environment, error) {
	entities, err := query[environmentEntity](ctx, s.table(tableEnvironments), "PartitionKey eq "+odataString(namespace), 0, "environments of "+namespace)
	if err != nil {
		return nil, err
	}
	out := make([]backup.Environment, len(entities))
	for i := range entities {
		out[i] = entities[i].toDomain()
	}
	sortEnvironments(out)
	return out, nil
}

func sortEnvironments(envs []backup.Environment) {
	for i := 1; i < len(envs); i++ { // insertion sort: namespaces hold tens of environments
		for j := i; j > 0 && less(envs[j], envs[j-1]); j-- {
			envs[j], envs[j-1] = envs[j-1], envs[j]
		}
	}
}

func less(a, b backup.Environment) bool {
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.ID < b.ID
}

func (s *Store) UpdateEnvironment(ctx context.Context, namespace, id string, fn backup.UpdateFunc[backup.Environment]) (backup.Environment, bool, error) {
	next, wrote, err := update(ctx, s.table(tableEnvironments), namespace, id,
		func(cur *environmentEntity, exists bool) (*environmentEntity, bool, error) {
			d := backup.Environment{}
			if exists {
				d = cur.toDomain()
			}
			n, write, err := fn(d, exists)
			if err != nil || !write {
				return cur, false, err
			}
			n.Namespace, n.ID = namespace, id
			return environmentFromDomain(n), true, nil
		})
	if err != nil {
		return backup.Environment{}, false, err
	}
	return next.toDomain(), wrote, nil
}

// WalkEnvironments reads the Environments table in key order, (namespace, id), one page in memory at a
// time. From a key it runs two range queries: the rest of the key's namespace, then the namespaces after
// it. One filter with "or" would select the same, but Azure's design guide counts "or" filters as scans,
// not range queries: each page could read the table from its start. A key without "|" is a namespace: the walk starts at that
// namespace's first environment.
func (s *Store) WalkEnvironments(ctx context.Context, after string, fn func(backup.Environment) (bool, error)) error {
	t := s.table(tableEnvironments)
	stopped := false
	walk := func(filter, what string) error {
		return list(ctx, t, listQuery{filter: filter, top: s.pageSize}, what, func(raw []byte) (bool, error) {
			var e environmentEntity
			if err := decodeEntity(raw, &e); err != nil {
				return false, fmt.Errorf("table storage: decode an environment of the walk: %w", err)
			}
			more, err := fn(e.toDomain())
			stopped = !more
			return more, err
		})
	}
	if after == "" {
		return walk("", "environments")
	}
	ns, id, _ := strings.Cut(after, "|")
	err := walk("PartitionKey eq "+odataString(ns)+" and RowKey gt "+odataString(id), "environments of "+ns+" after "+id)
	if err != nil || stopped {
		return err
	}
	return walk("PartitionKey gt "+odataString(ns), "environments after namespace "+ns)
}

// grantEntity: PartitionKey = namespace, RowKey = principal id; Permissions comma-separated.
type grantEntity struct {
	PartitionKey string
	RowKey       string
	Permissions  string
	EventTime    time.Time
	EventID      string
}

func (g *grantEntity) keys() (string, string) { return g.PartitionKey, g.RowKey }

func (g *grantEntity) toDomain() backup.Grant {
	out := backup.Grant{Namespace: g.PartitionKey, PrincipalID: g.RowKey, EventTime: g.EventTime, EventID: g.EventID}
	for _, p := range strings.Split(g.Permissions, ",") {
		if p != "" {
			out.Permissions = append(out.Permissions, backup.Permission(p))
		}
	}
	return out
}

func (s *Store) GetGrant(ctx context.Context, namespace, principalID string) (backup.Grant, error) {
	var g grantEntity
	_, found, err := get(ctx, s.table(tablePermissions), namespace, principalID, &g)
	if err != nil {
		return backup.Grant{}, err
	}
	if !found {
		return backup.Grant{Namespace: namespace, PrincipalID: principalID}, nil
	}
	return g.toDomain(), nil
}

func (s *Store) UpdateGrant(ctx context.Context, namespace, principalID string, fn backup.UpdateFunc[backup.Grant]) (backup.Grant, bool, error) {
	next, wrote, err := update(ctx, s.table(tablePermissions), namespace, principalID,
		func(cur *grantEntity, exists bool) (*grantEntity, bool, error) {
			d := backup.Grant{Namespace: namespace, PrincipalID: principalID}
			if exists {
				d = cur.toDomain()
			}
			n, write, err := fn(d, exists)
			if err != nil || !write {
				return cur, false, err
			}
			perms := make([]string, len(n.Permissions))
			for i, p := range n.Permissions {
				perms[i] = string(p)
			}
			return &grantEntity{PartitionKey: namespace, RowKey: principalID, Permissions: strings.Join(perms, ","),
				EventTime: n.EventTime, EventID: n.EventID}, true, nil
		})
	if err != nil {
		return backup.Grant{}, false, err
	}
	return next.toDomain(), wrote, nil
}

// settingsEntity: PartitionKey = namespace, RowKey = "settings".
type settingsEntity struct {
	PartitionKey   string
	RowKey         string
	BackupsEnabled bool
	UpdatedAt      time.Time
	UpdatedBy      string
}

func (e *settingsEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (s *Store) GetSettings(ctx context.Context, namespace string) (backup.Settings, error) {
	var e settingsEntity
	_, found, err := get(ctx, s.table(tableSettings), namespace, "settings", &e)
	if err != nil || !found {
		return backup.Settings{Namespace: namespace}, err
	}
	return backup.Settings{Namespace: namespace, BackupsEnabled: e.BackupsEnabled, UpdatedAt: e.UpdatedAt, UpdatedBy: e.UpdatedBy}, nil
}

func (s *Store) PutSettings(ctx context.Context, set backup.Settings) error {
	return upsert(ctx, s.table(tableSettings), &settingsEntity{PartitionKey: set.Namespace, RowKey: "settings",
		BackupsEnabled: set.BackupsEnabled, UpdatedAt: set.UpdatedAt, UpdatedBy: set.UpdatedBy})
}

// ListEnabledNamespaces reads the settings table whole (one row per namespace ever configured: a few
// pages at most), asking for the keys of the enabled ones only.
func (s *Store) ListEnabledNamespaces(ctx context.Context) ([]string, error) {
	out := []string{}
	q := listQuery{filter: "RowKey eq 'settings' and BackupsEnabled eq true", sel: "PartitionKey", top: s.pageSize}
	err := list(ctx, s.table(tableSettings), q, "enabled namespaces", func(raw []byte) (bool, error) {
		var e settingsEntity
		if err := decodeEntity(raw, &e); err != nil {
			return false, fmt.Errorf("table storage: decode namespace settings: %w", err)
		}
		out = append(out, e.PartitionKey)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(out) // in key order already; sorted here so that the contract does not rest on it
	return out, nil
}

// activityEntity: PartitionKey = namespace "|" environment, RowKey = inverted time "-" suffix, so a
// partition query returns the newest first. The suffix of an entry with an ID is a hash of the ID, so the
// same (Time, ID) always has the same key and is stored once; other entries get a random suffix. Entries
// of the same time come in the order of their suffixes.
type activityEntity struct {
	PartitionKey string
	RowKey       string
	ID           string
	Time         time.Time
	Action       string
	Status       string
	Actor        string
	SnapshotID   string
	RestoreID    string
	Message      string
}

func (e *activityEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func activityRowKey(a backup.ActivityEntry) string {
	if a.ID == "" {
		return invertedTime(a.Time) + "-" + randomSuffix()
	}
	h := sha256.Sum256([]byte(a.ID))
	return invertedTime(a.Time) + "-" + hex.EncodeToString(h[:8]) // 16 digits: never a random suffix (12)
}

// AddActivity inserts the entry; for an entry with an ID an existing entity of the same key is the same
// entry added before (by a retried step, or by an SDK retry of an insert that had succeeded), so the
// conflict is success and the first entry stays as it was.
func (s *Store) AddActivity(ctx context.Context, a backup.ActivityEntry) error {
	err := insert(ctx, s.table(tableActivity), &activityEntity{
		PartitionKey: a.Namespace + "|" + a.EnvironmentID, RowKey: activityRowKey(a), ID: a.ID,
		Time: a.Time, Action: string(a.Action), Status: string(a.Status), Actor: a.Actor,
		SnapshotID: a.SnapshotID, RestoreID: a.RestoreID, Message: a.Message,
	})
	if err == errConflict && a.ID != "" {
		return nil
	}
	return err
}

// ListActivity reads the environment's whole partition and pages in memory, which the total needs
// anyway (Table Storage does not count). An environment's log grows by a few entries per operation and
// is not pruned today, so a partition holds thousands of entries after years: a few pages of 1,000, read
// only when a user opens the log. When it grows past that, keep a count and read pages by key instead.
func (s *Store) ListActivity(ctx context.Context, namespace, environmentID string, offset, limit int) ([]backup.ActivityEntry, int, error) {
	entities, err := query[activityEntity](ctx, s.table(tableActivity), "PartitionKey eq "+odataString(namespace+"|"+environmentID), 0, "activity of "+environmentID)
	if err != nil {
		return nil, 0, err
	}
	total := len(entities)
	start := min(max(offset, 0), total)
	entities = entities[start : start+min(max(limit, 0), total-start)]
	out := make([]backup.ActivityEntry, len(entities))
	for i, e := range entities {
		out[i] = backup.ActivityEntry{ID: e.ID, Namespace: namespace, EnvironmentID: environmentID,
			Time: e.Time, Action: backup.ActivityAction(e.Action), Status: backup.ActivityStatus(e.Status),
			Actor: e.Actor, SnapshotID: e.SnapshotID, RestoreID: e.RestoreID, Message: e.Message}
	}
	return out, total, nil
}

// rejectedEntity: PartitionKey = UTC day, RowKey = inverted time + random suffix.
type rejectedEntity struct {
	PartitionKey string
	RowKey       string
	Time         time.Time
	MessageID    string
	Reason       string
	Body         string
}

func (e *rejectedEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (s *Store) AddRejectedEvent(ctx context.Context, r backup.RejectedEvent) error {
	return insert(ctx, s.table(tableRejected), &rejectedEntity{
		PartitionKey: r.Time.UTC().Format("2006-01-02"), RowKey: invertedTime(r.Time) + "-" + randomSuffix(),
		Time: r.Time, MessageID: r.MessageID, Reason: r.Reason, Body: r.Body,
	})
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
