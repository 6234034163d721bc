package backup

import (
	"slices"
	"time"
)

// Permission is a namespace permission the portal grants; this service is told about grants through
// namespace.permissions events.
type Permission string

const (
	PermManageAppsBackups Permission = "ManageAppsBackups"
	PermStopApps          Permission = "StopApps"
)

// Grant is the set of permissions one principal holds in one namespace. An empty set is kept as a
// tombstone so that an older event cannot bring a removed grant back.
type Grant struct {
	Namespace   string
	PrincipalID string
	Permissions []Permission
	EventTime   time.Time
	EventID     string
}

// Has reports whether the grant includes every permission in need.
func (g Grant) Has(need ...Permission) bool {
	for _, p := range need {
		if !slices.Contains(g.Permissions, p) {
			return false
		}
	}
	return true
}

// Settings are a namespace's backup settings. BackupsEnabled is the portal's "Try new Backup and
// Restore" switch: while false, snapshot, restore, upload and archive calls are refused and no automatic
// backups run. A namespace never configured has it false.
type Settings struct {
	Namespace      string    `json:"-"`
	BackupsEnabled bool      `json:"backups_enabled"`
	UpdatedAt      time.Time `json:"updated_at,omitzero"`
	UpdatedBy      string    `json:"updated_by,omitempty"`
}

// ActivityAction is what an activity log entry is about.
type ActivityAction string

const (
	ActionBackup   ActivityAction = "backup"
	ActionRestore  ActivityAction = "restore"
	ActionUndo     ActivityAction = "undo"
	ActionDelete   ActivityAction = "delete"
	ActionUpload   ActivityAction = "upload"
	ActionDownload ActivityAction = "download"
	ActionExpire   ActivityAction = "expire"
)

// ActivityStatus is the outcome an entry records.
type ActivityStatus string

const (
	ActivityStarted  ActivityStatus = "STARTED"
	ActivityFinished ActivityStatus = "FINISHED"
	ActivityFailed   ActivityStatus = "FAILED"
)

// ActivityEntry is one line of an environment's activity log.
type ActivityEntry struct {
	// ID makes an entry idempotent (the operation and step that wrote it); "" for one-off entries.
	ID            string         `json:"-"`
	Namespace     string         `json:"-"`
	EnvironmentID string         `json:"-"`
	Time          time.Time      `json:"time"`
	Action        ActivityAction `json:"action"`
	Status        ActivityStatus `json:"status"`
	Actor         string         `json:"actor"` // principal id, or "system" for scheduled work
	SnapshotID    string         `json:"snapshot_id,omitempty"`
	RestoreID     string         `json:"restore_id,omitempty"`
	Message       string         `json:"message,omitempty"`
}

// ActorSystem is the actor of work the service does by itself (schedules, expiry, recovery).
const ActorSystem = "system"
