package backup

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"
)

// RestoreState is what users see of a restore's life (docs/api.md).
type RestoreState string

const (
	RestoreQueued    RestoreState = "queued"
	RestoreRunning   RestoreState = "running"
	RestoreCompleted RestoreState = "completed"
	RestoreFailed    RestoreState = "failed"
)

// RestoreStep is where a restore's work on the target stands. It is recorded before each step that
// changes the target, so that a worker that died resumes or rolls back from the record, never by
// guessing; the databases and the file plan tell how far inside a step it got (docs/restore.md).
type RestoreStep string

const (
	// StepNone: nothing of the target was touched.
	StepNone RestoreStep = ""
	// StepRestoring: the staging database and the target's files are being written. Rollback drops
	// the staging database and puts the files back as the plan says.
	StepRestoring RestoreStep = "restoring"
	// StepCommitting: everything was verified; the swap of the databases may have happened. Resuming
	// swaps (a no-op if it happened); rolling back swaps back if it happened.
	StepCommitting RestoreStep = "committing"
	// StepCommitted: the restored database is the environment's; the previous one and the undo area
	// are kept until UndoUntil.
	StepCommitted RestoreStep = "committed"
	// StepRollingBack: the restore failed (StatusMessage says why) and is being rolled back; a claim
	// that finds it so finishes the rollback instead of restoring again.
	StepRollingBack RestoreStep = "rolling-back"
	// StepRolledBack: the restore failed and the target is as it was before it.
	StepRolledBack RestoreStep = "rolled-back"
	// StepUndone: an undo put the target back as it was before the restore.
	StepUndone RestoreStep = "undone"
	// StepDiscarded: the grace period passed; the previous database and the undo area were dropped.
	StepDiscarded RestoreStep = "discarded"
)

// Restore is one restore of a snapshot into an environment of the same namespace (the target, whose
// partition the record lives in).
type Restore struct {
	ID                  string
	Namespace           string
	EnvironmentID       string // the target
	SourceEnvironmentID string
	SourceSnapshotID    string
	State               RestoreState
	Step                RestoreStep
	StatusMessage       string
	Warnings            []string
	Progress            *Progress
	CreatedAt           time.Time
	UpdatedAt           time.Time
	StartedAt           time.Time
	FinishedAt          time.Time
	CreatedBy           string
	// ModelVersion and DeploymentPackage are the snapshot's: the target's own are not changed (the
	// user deploys the matching model).
	ModelVersion      string
	DeploymentPackage string
	// Database is the target's database name when the restore was created; the staging and previous
	// databases are named after it and the restore's short id.
	Database string
	// What the restore did, once completed.
	DatabaseBytes  int64 // of the dump, uncompressed
	Tables         int
	Rows           int64
	FilesCount     int
	FilesBytes     int64
	FilesAdded     int // written where no blob was
	FilesReplaced  int // written over a blob with other bytes, saved first to the undo area
	FilesUnchanged int // already there with the same bytes
	// OperationID and Fence name the claim of the restore operation that may write this record while
	// it runs (as for snapshots).
	OperationID string
	Fence       int64
	// UndoUntil is when the previous database and the undo area are dropped; until then the restore
	// can be undone.
	UndoUntil time.Time
	// The undo, if one was asked for: its operation and claim, its state and message, when it ended.
	UndoOperationID string
	UndoFence       int64
	UndoState       RestoreState
	UndoMessage     string
	UndoneAt        time.Time
	UndoneBy        string
	// DiscardedAt is when the undo data was dropped.
	DiscardedAt time.Time
}

// ShortID is the part of the restore's id that names its databases (<db>_restore_<short id>): the
// last 12 hexadecimal digits of the UUID, its random part (ids are UUIDv7, whose first digits are a
// timestamp shared by restores made in the same millisecond).
func (r Restore) ShortID() string {
	hex := strings.ReplaceAll(r.ID, "-", "")
	if len(hex) < 12 {
		return hex
	}
	return hex[len(hex)-12:]
}

// Ended reports whether the restore has ended (completed or failed).
func (r Restore) Ended() bool { return r.State == RestoreCompleted || r.State == RestoreFailed }

// Undoable says why the restore cannot be undone at now, or "" when it can.
func (r Restore) Undoable(now time.Time) string {
	switch {
	case r.State != RestoreCompleted:
		return "only a completed restore can be undone"
	case r.Step == StepUndone:
		return "the restore was undone already"
	case r.UndoState == RestoreQueued || r.UndoState == RestoreRunning:
		return "an undo of this restore is already running"
	case r.Step == StepCommitted && r.UndoState == RestoreFailed:
		return "" // an undo that failed kept the data it needs, whatever the time: it can be finished
	case r.Step == StepDiscarded || !now.Before(r.UndoUntil):
		return "the grace period for undoing this restore ended at " + r.UndoUntil.Format(time.RFC3339) + "; its undo data was dropped"
	}
	return ""
}

// UndoDataDiscardable reports whether the restore's undo data is kept only for an undo that has not
// been asked for: committed, with no undo queued, running or failed (a failed undo needs the data to be
// finished). Past UndoUntil such a restore's data is dropped.
func (r Restore) UndoDataDiscardable() bool {
	return r.Step == StepCommitted && r.UndoState != RestoreQueued && r.UndoState != RestoreRunning && r.UndoState != RestoreFailed
}

// RestoreStore keeps restores by (namespace, target environment, id).
type RestoreStore interface {
	// GetRestore returns CodeNotFound when there is no such restore.
	GetRestore(ctx context.Context, namespace, envID, id string) (Restore, error)
	// ListRestores returns a page of an environment's restores, newest first, and the total count.
	ListRestores(ctx context.Context, namespace, envID string, offset, limit int) ([]Restore, int, error)
	// CreateRestore inserts r; CodeConflict if another record with its id exists. Inserting the same
	// record again is not an error.
	CreateRestore(ctx context.Context, r Restore) error
	UpdateRestore(ctx context.Context, namespace, envID, id string, fn UpdateFunc[Restore]) (Restore, bool, error)
	// ListUndoDue returns at most limit restores whose undo data can be dropped
	// (UndoDataDiscardable) and whose UndoUntil is before t, across every environment, for the timer
	// that drops it. Stores must not read every restore ever made to answer (an index or a filtered query).
	ListUndoDue(ctx context.Context, before time.Time, limit int) ([]Restore, error)
}

// PageRestoresNewestFirst orders restores newest first (ties by id) and returns the page [offset,
// offset+limit) and the total, so that every store pages alike.
func PageRestoresNewestFirst(all []Restore, offset, limit int) ([]Restore, int) {
	all = slices.Clone(all)
	sort.Slice(all, func(i, j int) bool {
		if !all[i].CreatedAt.Equal(all[j].CreatedAt) {
			return all[i].CreatedAt.After(all[j].CreatedAt)
		}
		return all[i].ID > all[j].ID
	})
	total := len(all)
	if offset >= total {
		return []Restore{}, total
	}
	return all[offset:min(total, offset+limit)], total
}

// RestoreWork is what one step of a restore works on.
type RestoreWork struct {
	Restore  Restore
	Target   Environment
	Snapshot Snapshot
	// Progress is called often while the work advances; the caller throttles.
	Progress func(Progress)
}

// RestoreOutcome is what RestoreWorker.Restore verified.
type RestoreOutcome struct {
	DatabaseBytes  int64 // the dump, uncompressed, as pg_restore read it
	Tables         int   // tables whose row count was checked against the dump
	Rows           int64
	FilesAdded     int
	FilesReplaced  int
	FilesUnchanged int
	Warnings       []string
}

// RestoreWorker does a restore's work on the database server and in blob storage (internal/restorer).
// Every method can be called again after a crash or a failure of an earlier call, and finds where
// that one stopped from the databases and blobs themselves (names derive from the restore's id). Errors
// are *Error, CodeTransient when a retry may help.
type RestoreWorker interface {
	// Restore restores the snapshot's dump into the staging database (<db>_restore_<short id>, made
	// anew: a leftover of an earlier attempt is dropped first) and, concurrently, its files into the
	// target's container, then verifies both. Before it changes any blob of the target it writes the
	// file plan (what each file will be: added, replaced after saving the old bytes to the undo area,
	// or unchanged), once: a later call follows the first call's plan. The live database is not touched.
	Restore(ctx context.Context, w RestoreWork) (RestoreOutcome, error)
	// Commit swaps the databases in one transaction (<db> to <db>_pre_restore_<short id>, the staging
	// database to <db>); done already is success.
	Commit(ctx context.Context, w RestoreWork) error
	// Revert puts the target back as it was before the restore, from whatever point the restore
	// reached: the previous database swapped back if the swap happened, the staging or restored
	// database dropped, the files the restore added removed and the saved ones put back. Used to roll
	// back a failed restore and to undo a completed one.
	Revert(ctx context.Context, w RestoreWork) error
	// Discard drops what an undo needs, once the grace period passed: the previous database, the undo
	// area and the plan.
	Discard(ctx context.Context, w RestoreWork) error
}
