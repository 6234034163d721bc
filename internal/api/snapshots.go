package api

import (
	"net/http"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// snapshotJSON is a Snapshot as the API shows it (docs/api.md; field names follow Mendix Cloud's
// Backups API v2 where the concept is the same). Every field is always present: finished_at and sha256
// are null until Finished, progress is null unless Processing, warnings is [] when there are none.
type snapshotJSON struct {
	SnapshotID        string           `json:"snapshot_id"`
	Namespace         string           `json:"namespace"`
	EnvironmentID     string           `json:"environment_id"`
	Status            string           `json:"status"`
	Kind              string           `json:"kind"`
	Comment           string           `json:"comment"`
	CreatedAt         time.Time        `json:"created_at"`
	UpdatedAt         time.Time        `json:"updated_at"`
	FinishedAt        *time.Time       `json:"finished_at"`
	ExpiresAt         time.Time        `json:"expires_at"`
	DeploymentPackage string           `json:"deployment_package"`
	ModelVersion      string           `json:"model_version"`
	SizeBytes         int64            `json:"size_bytes"`
	DatabaseSizeBytes int64            `json:"database_size_bytes"`
	DumpSizeBytes     int64            `json:"dump_size_bytes"`
	FilesBytes        int64            `json:"files_bytes"`
	FilesCount        int              `json:"files_count"`
	NewFilesCount     int              `json:"new_files_count"`
	NewFilesBytes     int64            `json:"new_files_bytes"`
	StoredBytes       int64            `json:"stored_bytes"`
	SHA256            *string          `json:"sha256"`
	StatusMessage     string           `json:"status_message"`
	Warnings          []string         `json:"warnings"`
	Progress          *backup.Progress `json:"progress"`
	UploadSHA256      *string          `json:"upload_sha256"`
}

func toSnapshotJSON(s backup.Snapshot) snapshotJSON {
	out := snapshotJSON{
		SnapshotID: s.ID, Namespace: s.Namespace, EnvironmentID: s.EnvironmentID, Status: string(s.Status), Kind: string(s.Kind),
		Comment: s.Comment, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, ExpiresAt: s.ExpiresAt,
		DeploymentPackage: s.DeploymentPackage, ModelVersion: s.ModelVersion, SizeBytes: s.SizeBytes,
		DatabaseSizeBytes: s.DatabaseSizeBytes, DumpSizeBytes: s.DumpSizeBytes, FilesBytes: s.FilesBytes, FilesCount: s.FilesCount,
		NewFilesCount: s.NewFilesCount, NewFilesBytes: s.NewFilesBytes, StoredBytes: s.StoredBytes, SHA256: stringOrNull(s.SHA256), StatusMessage: s.StatusMessage,
		Warnings: s.Warnings, FinishedAt: timeOrNull(s.FinishedAt), UploadSHA256: stringOrNull(s.UploadSHA256),
	}
	if out.Warnings == nil {
		out.Warnings = []string{}
	}
	if s.Status == backup.SnapshotProcessing {
		out.Progress = s.Progress
		if out.Progress == nil {
			out.Progress = &backup.Progress{Phase: "queued"}
		}
	}
	return out
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	offset, limit, err := paging(r, 100)
	if err != nil {
		return err
	}
	snaps, total, err := s.svc.ListSnapshots(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), offset, limit)
	if err != nil {
		return err
	}
	out := make([]snapshotJSON, len(snaps))
	for i, sn := range snaps {
		out[i] = toSnapshotJSON(sn)
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshots": out, "total": total, "offset": offset, "limit": limit})
	return nil
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	var body struct {
		Comment string `json:"comment"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	snap, err := s.svc.CreateSnapshot(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), body.Comment)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/namespaces/"+snap.Namespace+"/environments/"+snap.EnvironmentID+"/snapshots/"+snap.ID)
	writeJSON(w, http.StatusAccepted, toSnapshotJSON(snap))
	return nil
}

func (s *Server) getSnapshot(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	snap, err := s.svc.Snapshot(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toSnapshotJSON(snap))
	return nil
}

func (s *Server) patchSnapshot(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	var body struct {
		Comment *string `json:"comment"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if body.Comment == nil {
		return backup.Errorf(backup.CodeInvalidParameters, "field comment is required (only the comment can be changed)")
	}
	snap, err := s.svc.UpdateComment(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("id"), *body.Comment)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toSnapshotJSON(snap))
	return nil
}

func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	if err := s.svc.DeleteSnapshot(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
