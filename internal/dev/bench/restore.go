package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// RestoreResult is one restore made by the service: a snapshot into another, stopped environment.
type RestoreResult struct {
	RestoreID, SnapshotID string
	Wall                  time.Duration // from the POST to the first GET that shows the restore completed
	PeakRSS               int64         // the handler's VmHWM during the restore, bytes (pg_restore is another process)
	StartRSS              int64         // the handler's VmRSS when the restore was asked for
	// SnapshotFiles is the restored snapshot's files_count: what FilesAdded must be in an empty container.
	SnapshotFiles int
	// From the completed restore record.
	Tables                               int
	Rows, DatabaseBytes                  int64
	FilesCount                           int
	FilesAdded, FilesReplaced, FilesKept int
	Queued                               time.Duration  // started_at - created_at, when both are recorded
	Worker                               time.Duration  // finished_at - started_at, when both are recorded
	Phases                               *RestorePhases // from the handler's log, when found
}

// Checked reports whether the restore restored rows and added every file of the snapshot into the
// target's empty container.
func (r RestoreResult) Checked() bool { return r.Rows > 0 && r.FilesAdded == r.SnapshotFiles }

// RestorePhases are where the restore worker spent its time, from its "restore verified" log line:
// the moments, from the worker's start (after the staging database was made), at which the database
// (the dump streamed into pg_restore) and the files (the server-side copies, at the same time) were
// done, and at which both were verified.
type RestorePhases struct {
	DatabaseDone, FilesDone, Verified time.Duration
}

type restoreView struct {
	RestoreID      string     `json:"restore_id"`
	State          string     `json:"state"`
	StatusMessage  string     `json:"status_message"`
	CreatedAt      time.Time  `json:"created_at"`
	StartedAt      *time.Time `json:"started_at"`
	FinishedAt     *time.Time `json:"finished_at"`
	Tables         int        `json:"tables"`
	Rows           int64      `json:"rows"`
	DatabaseBytes  int64      `json:"database_bytes"`
	FilesCount     int        `json:"files_count"`
	FilesAdded     int        `json:"files_added"`
	FilesReplaced  int        `json:"files_replaced"`
	FilesUnchanged int        `json:"files_unchanged"`
}

func restoresPath(envID string) string {
	return "/api/v1/namespaces/" + Namespace + "/environments/" + envID + "/restores"
}

// Restore restores snapshot snapshotID of sourceID into the stopped environment targetID through the
// API and measures it as Backup does a backup: the handler's peak RSS is reset just before the POST
// and read once the restore has ended. snapshotFiles is the snapshot's files_count. A failed restore,
// or a handler that restarted meanwhile, is an error; what it restored is for the caller to judge
// (Checked).
func (l *Lab) Restore(ctx context.Context, targetID, sourceID, snapshotID string, snapshotFiles int) (RestoreResult, error) {
	res := RestoreResult{SnapshotID: snapshotID, SnapshotFiles: snapshotFiles}
	st := l.Stack
	watch, startRSS, err := l.watchHandler()
	if err != nil {
		return res, err
	}
	res.StartRSS = startRSS
	body, _ := json.Marshal(map[string]string{"source_snapshot_id": snapshotID, "source_environment_id": sourceID})
	start := time.Now()
	status, resp, err := st.Call(ctx, l.Token, "POST", restoresPath(targetID), string(body))
	if err != nil || status != http.StatusAccepted {
		return res, fmt.Errorf("create restore: %d %s %v", status, tail(resp, 300), err)
	}
	var rec restoreView
	if err := json.Unmarshal([]byte(resp), &rec); err != nil {
		return res, fmt.Errorf("create restore: %w", err)
	}
	id := rec.RestoreID
	res.RestoreID = id
	if err := l.poll(ctx, restoresPath(targetID)+"/"+id, "restore "+id, &rec, func() bool { return rec.State == "queued" || rec.State == "running" }); err != nil {
		return res, err
	}
	res.Wall = time.Since(start)
	if res.PeakRSS, err = watch.peak("restore"); err != nil {
		return res, err
	}
	if rec.State != "completed" {
		return res, fmt.Errorf("restore %s ended %s: %s", id, rec.State, rec.StatusMessage)
	}
	res.Tables, res.Rows, res.DatabaseBytes, res.FilesCount = rec.Tables, rec.Rows, rec.DatabaseBytes, rec.FilesCount
	res.FilesAdded, res.FilesReplaced, res.FilesKept = rec.FilesAdded, rec.FilesReplaced, rec.FilesUnchanged
	res.Queued, res.Worker = recordSpans(rec)
	return res, nil
}

// recordSpans are how long the restore waited for its worker and how long the worker took, from the
// record's times (0 for what is not recorded).
func recordSpans(rec restoreView) (queued, worker time.Duration) {
	if rec.StartedAt == nil {
		return 0, 0
	}
	if !rec.CreatedAt.IsZero() && !rec.StartedAt.Before(rec.CreatedAt) {
		queued = rec.StartedAt.Sub(rec.CreatedAt)
	}
	if rec.FinishedAt != nil && !rec.FinishedAt.Before(*rec.StartedAt) {
		worker = rec.FinishedAt.Sub(*rec.StartedAt)
	}
	return queued, worker
}

// RestorePhasesFromLog finds the "restore verified" line of restoreID in a log written by the local
// host (one JSON object per line, the handler's own JSON line in "message", durations in float
// milliseconds) and returns its phases; the last such line when a retried restore logged several.
func RestorePhasesFromLog(r io.Reader, restoreID string) (RestorePhases, bool) {
	var found RestorePhases
	ok := false
	handlerLines(r, func(msg []byte) {
		// A map, not a struct: a key the logger's context also set (a string "database", say) then
		// counts once, the event's own value (written last) winning.
		var line map[string]json.RawMessage
		if json.Unmarshal(msg, &line) != nil || text(line["message"]) != "restore verified" ||
			text(line["restore"]) != restoreID {
			return
		}
		db, ok1 := number(line["database"])
		files, ok2 := number(line["files"])
		total, ok3 := number(line["total"])
		if !ok1 || !ok2 || !ok3 {
			return
		}
		found, ok = RestorePhases{DatabaseDone: millis(db), FilesDone: millis(files), Verified: millis(total)}, true
	})
	return found, ok
}

func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

func number(raw json.RawMessage) (float64, bool) {
	var v float64
	if raw == nil || json.Unmarshal(raw, &v) != nil {
		return 0, false
	}
	return v, true
}
