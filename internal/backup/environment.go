package backup

import (
	"time"
)

// EnvironmentState is the lifecycle state other services report for an environment.
type EnvironmentState string

const (
	StateCreating       EnvironmentState = "Creating"
	StateCreationFailed EnvironmentState = "CreationFailed"
	StateDeploying      EnvironmentState = "Deploying"
	StateTransitioning  EnvironmentState = "Transitioning" // starting or stopping
	StateRunning        EnvironmentState = "Running"
	StateStopped        EnvironmentState = "Stopped"
	StateDeleted        EnvironmentState = "Deleted"
)

// Valid reports whether s is one of the documented states.
func (s EnvironmentState) Valid() bool {
	switch s {
	case StateCreating, StateCreationFailed, StateDeploying, StateTransitioning, StateRunning, StateStopped, StateDeleted:
		return true
	}
	return false
}

// DatabaseLocation says where an environment's PostgreSQL database is. No secret: in Azure the service
// authenticates with its managed identity, locally with configured credentials.
type DatabaseLocation struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	Name string `json:"name"`
	Role string `json:"role"` // the role that owns the app's objects; restored databases are owned by it
}

// FileLocation says where an environment's file documents are: blob <Prefix><uuid> in Container.
type FileLocation struct {
	Container string `json:"container"`
	Prefix    string `json:"prefix"`
}

// Environment is what the service knows about one app environment, from environment events.
type Environment struct {
	ID                string
	Namespace         string
	AppID             string
	Name              string
	State             EnvironmentState
	Deployed          bool
	DeploymentPackage string
	ModelVersion      string
	Database          DatabaseLocation
	Files             FileLocation
	// EventTime is the occurred_at of the event that last changed this record; an event older than it
	// changes nothing (events arrive twice and out of order).
	EventTime time.Time
	EventID   string
	UpdatedAt time.Time
	// FileStore is the size of the environment's file store, as the last backup or collector run
	// measured it; kept across environment events.
	FileStore FileStoreUsage
}

// FileStoreUsage is what an environment's file store holds: every file document its snapshots share,
// stored once.
type FileStoreUsage struct {
	Objects    int
	Bytes      int64
	MeasuredAt time.Time
}

// Reasons an environment cannot be backed up, shown in the environment list and in refusals.
const (
	reasonCreating       = "the environment is being created"
	reasonCreationFailed = "the environment's creation failed"
	reasonDeploying      = "the environment is being deployed"
	reasonTransitioning  = "the environment is starting or stopping"
	reasonDeleted        = "the environment is deleted"
	reasonNotDeployed    = "the environment has no deployed app"
)

// BackupBlocker says why a snapshot of e cannot be created now, or "" when it can. Busy (another
// operation running) is not decided here but by the environment lock.
func (e Environment) BackupBlocker() string {
	switch e.State {
	case StateCreating:
		return reasonCreating
	case StateCreationFailed:
		return reasonCreationFailed
	case StateDeploying:
		return reasonDeploying
	case StateTransitioning:
		return reasonTransitioning
	case StateDeleted:
		return reasonDeleted
	}
	if !e.Deployed {
		return reasonNotDeployed
	}
	return ""
}
