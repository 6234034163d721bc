package api

import (
	"net/http"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// restoreJSON is a Restore as the API shows it (docs/api.md). Every field is always present: times
// are null until they happen, undo_state is null while no undo was asked for, progress is null unless
// the restore or its undo is queued or running, warnings is [] when there are none. The record's
// bookkeeping (operation, fence, step, database name, undo claim) is not shown.
type restoreJSON struct {
	RestoreID           string           `json:"restore_id"`
	SourceSnapshotID    string           `json:"source_snapshot_id"`
	SourceEnvironmentID string           `json:"source_environment_id"`
	TargetEnvironmentID string           `json:"target_environment_id"`
	State               string           `json:"state"`
	StatusMessage       string           `json:"status_message"`
	Warnings            []string         `json:"warnings"`
	CreatedAt           time.Time        `json:"created_at"`
	UpdatedAt           time.Time        `json:"updated_at"`
	StartedAt           *time.Time       `json:"started_at"`
	FinishedAt          *time.Time       `json:"finished_at"`
	Progress            *backup.Progress `json:"progress"`
	CreatedBy           string           `json:"created_by"`
	ModelVersion        string           `json:"model_version"`
	DeploymentPackage   string           `json:"deployment_package"`
	UndoUntil           *time.Time       `json:"undo_until"`
	UndoAvailable       bool             `json:"undo_available"`
	UndoneAt            *time.Time       `json:"undone_at"`
	UndoState           *string          `json:"undo_state"`
	UndoStatusMessage   string           `json:"undo_status_message"`
	Tables              int              `json:"tables"`
	Rows                int64            `json:"rows"`
	DatabaseBytes       int64            `json:"database_bytes"`
	FilesCount          int              `json:"files_count"`
	FilesBytes          int64            `json:"files_bytes"`
	FilesAdded          int              `json:"files_added"`
	FilesReplaced       int              `json:"files_replaced"`
	FilesUnchanged      int              `json:"files_unchanged"`
}

func toRestoreJSON(r backup.Restore, now time.Time) restoreJSON {
	out := restoreJSON{
		RestoreID: r.ID, SourceSnapshotID: r.SourceSnapshotID, SourceEnvironmentID: r.SourceEnvironmentID,
		TargetEnvironmentID: r.EnvironmentID, State: string(r.State), StatusMessage: r.StatusMessage, Warnings: r.Warnings,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, StartedAt: timeOrNull(r.StartedAt), FinishedAt: timeOrNull(r.FinishedAt),
		CreatedBy: r.CreatedBy, ModelVersion: r.ModelVersion, DeploymentPackage: r.DeploymentPackage,
		UndoUntil: timeOrNull(r.UndoUntil), UndoAvailable: r.Undoable(now) == "", UndoneAt: timeOrNull(r.UndoneAt),
		UndoState: stringOrNull(string(r.UndoState)), UndoStatusMessage: r.UndoMessage,
		Tables: r.Tables, Rows: r.Rows, DatabaseBytes: r.DatabaseBytes, FilesCount: r.FilesCount, FilesBytes: r.FilesBytes,
		FilesAdded: r.FilesAdded, FilesReplaced: r.FilesReplaced, FilesUnchanged: r.FilesUnchanged,
	}
	if out.Warnings == nil {
		out.Warnings = []string{}
	}
	active := func(st backup.RestoreState) bool { return st == backup.RestoreQueued || st == backup.RestoreRunning }
	switch {
	case active(r.State):
		out.Progress = r.Progress
		if out.Progress == nil {
			out.Progress = &backup.Progress{Phase: "queued"}
		}
	case active(r.UndoState):
		out.Progress = r.Progress
		if out.Progress == nil {
			out.Progress = &backup.Progress{Phase: "undo queued"}
		}
	}
	return out
}

func restoreLocation(r backup.Restore) string {
	return "/api/v1/namespaces/" + r.Namespace + "/environments/" + r.EnvironmentID + "/restores/" + r.ID
}

func (s *Server) listRestores(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	offset, limit, err := paging(r, 100)
	if err != nil {
		return err
	}
	recs, total, err := s.svc.ListRestores(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), offset, limit)
	if err != nil {
		return err
	}
	now := s.now()
	out := make([]restoreJSON, len(recs))
	for i, rec := range recs {
		out[i] = toRestoreJSON(rec, now)
	}
	writeJSON(w, http.StatusOK, map[string]any{"restores": out, "total": total, "offset": offset, "limit": limit})
	return nil
}

func (s *Server) createRestore(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	var body struct {
		SourceSnapshotID    *string `json:"source_snapshot_id"`
		SourceEnvironmentID string  `json:"source_environment_id"`
		SourceNamespace     string  `json:"source_namespace"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if body.SourceSnapshotID == nil {
		return backup.Errorf(backup.CodeInvalidParameters, "field source_snapshot_id is required")
	}
	rec, err := s.svc.CreateRestore(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), backup.RestoreRequest{
		SnapshotID: *body.SourceSnapshotID, SourceEnvironmentID: body.SourceEnvironmentID, SourceNamespace: body.SourceNamespace})
	if err != nil {
		return err
	}
	w.Header().Set("Location", restoreLocation(rec))
	writeJSON(w, http.StatusAccepted, toRestoreJSON(rec, s.now()))
	return nil
}

func (s *Server) getRestore(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	rec, err := s.svc.Restore(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("restore_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toRestoreJSON(rec, s.now()))
	return nil
}

func (s *Server) undoRestore(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	var body struct{}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	rec, err := s.svc.UndoRestore(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("restore_id"))
	if err != nil {
		return err
	}
	w.Header().Set("Location", restoreLocation(rec))
	writeJSON(w, http.StatusAccepted, toRestoreJSON(rec, s.now()))
	return nil
}
