package backup

import (
	"context"
)

// Store contracts. The tablestore package implements them on Azure Table Storage; memstore implements
// them in memory for unit tests; one conformance suite (internal/storetest) runs against both.
//
// Common contract: "not found" is an *Error with CodeNotFound (or CodeEnvironmentNotFound); transient
// storage failures are *Error with CodeTransient; every call honours ctx.

// UpdateFunc decides an optimistic update: given the current record (and whether it exists), it returns
// the record to write and write=true, or write=false to leave the store unchanged. It may be called more
// than once when a concurrent writer wins (the store retries with the fresh record), so it must not have
// side effects.
type UpdateFunc[T any] func(current T, exists bool) (next T, write bool, err error)

// EnvironmentStore keeps environments by (namespace, id).
type EnvironmentStore interface {
	// GetEnvironment returns CodeEnvironmentNotFound if there is no such environment.
	GetEnvironment(ctx context.Context, namespace, id string) (Environment, error)
	// ListEnvironments returns a namespace's environments (Deleted ones included), ordered by name.
	ListEnvironments(ctx context.Context, namespace string) ([]Environment, error)
	// UpdateEnvironment applies fn atomically (ETag-guarded read-modify-write) and reports whether it
	// wrote.
	UpdateEnvironment(ctx context.Context, namespace, id string, fn UpdateFunc[Environment]) (Environment, bool, error)
	// WalkEnvironments calls fn with every environment of every namespace (Deleted ones included) in
	// (namespace, id) order, starting after the environment after names ("<namespace>|<id>"; "" for the
	// start), reading page by page; fn returns false to stop. For the schedule's fan-out over thousands
	// of environments: memory stays bounded by a page.
	WalkEnvironments(ctx context.Context, after string, fn func(Environment) (bool, error)) error
}

// EnvironmentKey is the position of an environment in WalkEnvironments' order.
func EnvironmentKey(namespace, id string) string { return namespace + "|" + id }

// GrantStore keeps permission grants by (namespace, principal).
type GrantStore interface {
	// GetGrant returns a grant with no permissions (not an error) when the principal has none.
	GetGrant(ctx context.Context, namespace, principalID string) (Grant, error)
	UpdateGrant(ctx context.Context, namespace, principalID string, fn UpdateFunc[Grant]) (Grant, bool, error)
}

// SettingsStore keeps namespace settings.
type SettingsStore interface {
	// GetSettings returns the zero settings (backups disabled) for a namespace never configured.
	GetSettings(ctx context.Context, namespace string) (Settings, error)
	PutSettings(ctx context.Context, s Settings) error
	// ListEnabledNamespaces returns the namespaces whose backups are enabled, sorted.
	ListEnabledNamespaces(ctx context.Context) ([]string, error)
}

// ActivityStore keeps environments' activity logs.
type ActivityStore interface {
	// AddActivity records e. It is idempotent for entries with an ID: adding an entry with the same
	// (Time, ID) again changes nothing, so a retried step cannot log twice.
	AddActivity(ctx context.Context, e ActivityEntry) error
	// ListActivity returns a page of the newest entries first ([offset, offset+limit)) and the total.
	ListActivity(ctx context.Context, namespace, environmentID string, offset, limit int) ([]ActivityEntry, int, error)
}

// ScheduleStore keeps the schedule's runs, one per calendar day.
type ScheduleStore interface {
	// GetScheduleRun returns CodeNotFound when the day has no run.
	GetScheduleRun(ctx context.Context, day string) (ScheduleRun, error)
	UpdateScheduleRun(ctx context.Context, day string, fn UpdateFunc[ScheduleRun]) (ScheduleRun, bool, error)
	// ListScheduleRuns returns the runs of fromDay and later, by day.
	ListScheduleRuns(ctx context.Context, fromDay string) ([]ScheduleRun, error)
}
