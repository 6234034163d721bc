package backup

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/mxazure/backups/internal/schedule"
)

// SnapshotStatus is what users see of a snapshot's life.
type SnapshotStatus string

const (
	SnapshotProcessing SnapshotStatus = "Processing" // being made (or an upload being checked)
	SnapshotFailed     SnapshotStatus = "Failed"     // could not be made; StatusMessage says why; no archive
	SnapshotFinished   SnapshotStatus = "Finished"   // archive committed and verified
)

// SnapshotKind says why a snapshot exists; it decides retention.
type SnapshotKind string

const (
	KindManual   SnapshotKind = "manual"
	KindNightly  SnapshotKind = "nightly"
	KindWeekly   SnapshotKind = "weekly"
	KindMonthly  SnapshotKind = "monthly"
	KindUploaded SnapshotKind = "uploaded"
)

// ExpiresAt is the end of retention of a snapshot of kind k created at t, in the UTC calendar (the
// service uses its SCHEDULE_TIME_ZONE calendar; schedule.Calendar.ExpiresAt has the rule).
func (k SnapshotKind) ExpiresAt(t time.Time) time.Time {
	return schedule.UTC.ExpiresAt(schedule.Kind(k), t)
}

// Automatic reports whether snapshots of kind k are made by the schedule.
func (k SnapshotKind) Automatic() bool { return schedule.Kind(k).Automatic() }

// Progress of a running snapshot, throttled to a write every few seconds.
type Progress struct {
	Phase      string `json:"phase"` // queued, dumping, verifying, finishing
	BytesDone  int64  `json:"bytes_done"`
	FilesDone  int    `json:"files_done"`
	FilesTotal int    `json:"files_total"`
}

// Snapshot is one backup of an environment: its database and file documents in one archive.
type Snapshot struct {
	ID                string
	Namespace         string
	EnvironmentID     string
	Status            SnapshotStatus
	Kind              SnapshotKind
	Comment           string
	CreatedAt         time.Time
	UpdatedAt         time.Time
	FinishedAt        time.Time
	ExpiresAt         time.Time
	CreatedBy         string
	DeploymentPackage string
	ModelVersion      string
	SizeBytes         int64 // logical size: the dump plus the files (the archive blob of a one-archive snapshot)
	DatabaseSizeBytes int64 // live database (pg_database_size)
	DumpSizeBytes     int64 // db/db.backup
	FilesBytes        int64
	FilesCount        int
	SHA256            string
	StatusMessage     string
	Warnings          []string
	Progress          *Progress
	// OperationID and Fence name the claim of the operation that may write this record while it is
	// Processing: a worker whose claim is older (a takeover or a redelivery claimed the operation since)
	// can no longer change it.
	OperationID string
	Fence       int64
	// BlobPath is the committed archive of a snapshot in the one-archive layout (made before
	// incremental snapshots), set when Finished; internal, never shown.
	BlobPath string
	// DumpPath and ManifestPath are the database dump and the manifest of an incremental snapshot, set
	// when Finished; internal, never shown.
	DumpPath     string
	ManifestPath string
	// NewFilesCount and NewFilesBytes are the files this snapshot copied into the environment's file
	// store (the others it shares with earlier snapshots); StoredBytes is what it added to storage in
	// all: its dump blob, its manifest and those new files.
	NewFilesCount int
	NewFilesBytes int64
	StoredBytes   int64
	// UploadID is the upload an uploaded snapshot was made from; UploadSHA256 the SHA-256 of that
	// archive as it was read.
	UploadID     string
	UploadSHA256 string
	// AutomaticDay and AutomaticAttempt name the schedule's try that made an automatic snapshot: the
	// calendar day (2006-01-02, SCHEDULE_TIME_ZONE) and the try of that day (0 to
	// schedule.MaxAttempts-1). Its id is derived from them (automaticIDs), so a try is made once.
	AutomaticDay     string
	AutomaticAttempt int
	// Readers are the operations reading the snapshot (restores, and downloads being prepared), as
	// "<environment id>/<operation id>" of the operation's record: while one of them has not ended the
	// snapshot is neither deleted nor expired. An ended reader's entry is stale and removed when seen.
	Readers []string
	// DeletedAt marks a snapshot being deleted: hidden from users at once, its blobs removed after, and
	// the record last (a crash in between leaves a marked record that the sweeper finishes).
	DeletedAt time.Time
	// Expired says that the expiry marked the snapshot (DeletedAt), not a user: a run that finds it
	// marked tells about it (activity, event) before finishing the deletion.
	Expired bool
}

// Incremental reports whether the snapshot is stored as a dump, a manifest and file-store objects (every
// snapshot made since incremental snapshots), rather than as one archive blob.
func (s Snapshot) Incremental() bool { return s.ManifestPath != "" }

// Blobs are the blobs of the snapshots container that a Finished snapshot keeps.
func (s Snapshot) Blobs() []string {
	var out []string
	for _, p := range []string{s.BlobPath, s.DumpPath, s.ManifestPath} {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Deleted reports whether the snapshot is marked for deletion (or being deleted).
func (s Snapshot) Deleted() bool { return !s.DeletedAt.IsZero() }

// Operation phases. Every long action is an operation record plus a Service Bus message carrying its id.
type OperationPhase string

const (
	OpQueued    OperationPhase = "Queued"    // record written, message sent (or about to be)
	OpRunning   OperationPhase = "Running"   // claimed by a worker holding a lease
	OpSucceeded OperationPhase = "Succeeded" // done; the snapshot is Finished
	OpFailed    OperationPhase = "Failed"    // done; StatusMessage says why
)

// Done reports whether the phase is final.
func (p OperationPhase) Done() bool { return p == OpSucceeded || p == OpFailed }

// OperationKind is the work an operation does.
type OperationKind string

const OpBackup OperationKind = "backup"

// Operation is the durable state of one job (the state machine is in docs/operations.md).
type Operation struct {
	ID            string
	Namespace     string
	EnvironmentID string
	Kind          OperationKind
	// SubjectID is the record the operation works on: the snapshot of a backup.
	SubjectID string
	Phase     OperationPhase
	Actor     string
	// Fence grows with every claim (a worker's, or recovery's takeover). Every write a worker makes to
	// the operation or its subject is conditional on the fence it claimed, so a worker that lost the
	// operation can no longer write anything. Each claim's blobs have their own path (by fence).
	Fence int64
	// Attempt counts the attempts that used up a try (claims, less the attempts interrupted by a
	// shutdown); the job gives up after maxAttempts.
	Attempt       int
	LeaseUntil    time.Time // a Running operation whose lease passed has lost its worker
	Worker        string    // invocation that holds the claim
	StatusMessage string
	// Enqueues counts the job messages sent; EnqueuedAt is when the last one was. Recovery re-sends with
	// a growing interval, so a long backlog is not sent again every run.
	Enqueues   int
	EnqueuedAt time.Time
	// Settled is set once everything after the end is done: lock released, activity written, event
	// published, blobs of other attempts removed (best effort). An ended operation that is not settled
	// is finished by the next delivery or by recovery. Settled is final: once true it is never set back.
	Settled    bool
	CreatedAt  time.Time
	UpdatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
}

// Lock is an environment's lock: at most one operation (backup or restore) works on an environment.
type Lock struct {
	OperationID string // "" when free
	Kind        OperationKind
	Since       time.Time
}

// SnapshotStore keeps snapshots by (namespace, environment, id).
type SnapshotStore interface {
	// GetSnapshot returns CodeNotFound when there is no such snapshot.
	GetSnapshot(ctx context.Context, namespace, envID, id string) (Snapshot, error)
	// ListSnapshots returns a page of an environment's snapshots, newest first, and the total count.
	ListSnapshots(ctx context.Context, namespace, envID string, offset, limit int) ([]Snapshot, int, error)
	// CreateSnapshot inserts s; CodeConflict if another record with its id exists. Inserting the same
	// record again is not an error (a retried insert whose first answer was lost).
	CreateSnapshot(ctx context.Context, s Snapshot) error
	UpdateSnapshot(ctx context.Context, namespace, envID, id string, fn UpdateFunc[Snapshot]) (Snapshot, bool, error)
	// DeleteSnapshot removes the record; deleting a missing record is not an error.
	DeleteSnapshot(ctx context.Context, namespace, envID, id string) error
	// WalkSnapshotsDue calls fn with every snapshot (of any environment, marked ones included) whose
	// ExpiresAt is set and before before, the earliest expiry first, reading page by page; fn returns
	// false to stop, and may delete what it was given. It must not scan every snapshot: stores keep an
	// index by ExpiresAt, which may hold stale entries but never misses a snapshot. A walk, not a list
	// with a limit: snapshots kept past their expiry (the last good one) stay due and come first, and
	// must not hold back the others.
	WalkSnapshotsDue(ctx context.Context, before time.Time, fn func(Snapshot) (bool, error)) error
}

// OperationStore keeps operations and environment locks.
type OperationStore interface {
	// GetOperation returns CodeNotFound when there is no such operation.
	GetOperation(ctx context.Context, namespace, envID, id string) (Operation, error)
	// CreateOperation inserts op; CodeConflict if another record with its id exists. Inserting the same
	// record again is not an error.
	CreateOperation(ctx context.Context, op Operation) error
	UpdateOperation(ctx context.Context, namespace, envID, id string, fn UpdateFunc[Operation]) (Operation, bool, error)
	// ListActiveOperations returns every operation that is not settled (Queued, Running, or ended and
	// not yet settled), for recovery. It must not scan every operation ever written: stores keep an
	// index of unsettled operations (written before the operation, removed after it is settled).
	ListActiveOperations(ctx context.Context) ([]Operation, error)
	// PruneOperations deletes at most limit settled operations that finished before endedBefore, and
	// reports how many it deleted. It must not scan every operation either.
	PruneOperations(ctx context.Context, endedBefore time.Time, limit int) (int, error)
	// GetLock returns the environment's lock (free when never taken).
	GetLock(ctx context.Context, namespace, envID string) (Lock, error)
	UpdateLock(ctx context.Context, namespace, envID string, fn UpdateFunc[Lock]) (Lock, bool, error)
}

// PageNewestFirst orders snapshots newest first (ties by id, so the order is stable) and returns the
// page [offset, offset+limit) and the total count. Stores use it so that every store pages alike.
// Snapshots marked for deletion are left out.
func PageNewestFirst(all []Snapshot, offset, limit int) ([]Snapshot, int) {
	all = slices.DeleteFunc(all, Snapshot.Deleted)
	sort.Slice(all, func(i, j int) bool {
		if !all[i].CreatedAt.Equal(all[j].CreatedAt) {
			return all[i].CreatedAt.After(all[j].CreatedAt)
		}
		return all[i].ID > all[j].ID
	})
	total := len(all)
	if offset >= total {
		return []Snapshot{}, total
	}
	return all[offset:min(total, offset+limit)], total
}
