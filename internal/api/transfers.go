package api

import (
	"net/http"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// archiveJSON is a download as the API shows it (docs/api.md "Download archives"). Every field is
// always present: url and url_expires_at are null until completed (and url again once the link
// expired), size_bytes and sha256 are set once completed, progress only while queued or running.
type archiveJSON struct {
	ArchiveID     string           `json:"archive_id"`
	SnapshotID    string           `json:"snapshot_id"`
	DataType      string           `json:"data_type"`
	State         string           `json:"state"`
	StatusMessage string           `json:"status_message"`
	CreatedAt     time.Time        `json:"created_at"`
	UpdatedAt     time.Time        `json:"updated_at"`
	FinishedAt    *time.Time       `json:"finished_at"`
	URL           *string          `json:"url"`
	URLExpiresAt  *time.Time       `json:"url_expires_at"`
	FileName      string           `json:"file_name"`
	SizeBytes     int64            `json:"size_bytes"`
	SHA256        *string          `json:"sha256"`
	Progress      *backup.Progress `json:"progress"`
}

func toArchiveJSON(a backup.Archive) archiveJSON {
	out := archiveJSON{ArchiveID: a.ID, SnapshotID: a.SnapshotID, DataType: string(a.DataType), State: string(a.State),
		StatusMessage: a.StatusMessage, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt, FinishedAt: timeOrNull(a.FinishedAt),
		URL: stringOrNull(a.URL), FileName: a.FileName}
	if a.State == backup.ArchiveCompleted {
		out.URLExpiresAt, out.SizeBytes, out.SHA256 = timeOrNull(a.URLExpiresAt), a.SizeBytes, stringOrNull(a.SHA256)
	}
	if a.State == backup.ArchiveQueued || a.State == backup.ArchiveRunning {
		out.Progress = a.Progress
		if out.Progress == nil {
			out.Progress = &backup.Progress{Phase: "queued"}
		}
	}
	return out
}

func archiveLocation(a backup.Archive) string {
	return "/api/v1/namespaces/" + a.Namespace + "/environments/" + a.EnvironmentID + "/snapshots/" + a.SnapshotID + "/archives/" + a.ID
}

func (s *Server) createArchive(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	var body struct {
		DataType string `json:"data_type"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	dataType, err := backup.ParseDataType(body.DataType)
	if err != nil {
		return err
	}
	a, err := s.svc.CreateArchive(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("id"), dataType)
	if err != nil {
		return err
	}
	w.Header().Set("Location", archiveLocation(a))
	writeJSON(w, http.StatusAccepted, toArchiveJSON(a))
	return nil
}

func (s *Server) listArchives(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	all, err := s.svc.ListArchives(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("id"))
	if err != nil {
		return err
	}
	out := make([]archiveJSON, len(all))
	for i, a := range all {
		out[i] = toArchiveJSON(a)
	}
	writeJSON(w, http.StatusOK, map[string]any{"archives": out})
	return nil
}

func (s *Server) getArchive(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	a, err := s.svc.Archive(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("id"), r.PathValue("archive_id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toArchiveJSON(a))
	return nil
}

// uploadJSON is what POST .../uploads answers: the link to upload the archive to, and how to.
type uploadJSON struct {
	UploadID     string    `json:"upload_id"`
	UploadURL    string    `json:"upload_url"`
	ExpiresAt    time.Time `json:"expires_at"`
	FileName     string    `json:"file_name"`
	MaxSizeBytes int64     `json:"max_size_bytes"`
	CompleteURL  string    `json:"complete_url"`
}

func (s *Server) createUpload(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	var body struct {
		FileName string `json:"file_name"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	link, err := s.svc.CreateUpload(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), body.FileName)
	if err != nil {
		return err
	}
	u := link.Upload
	complete := "/api/v1/namespaces/" + u.Namespace + "/environments/" + u.EnvironmentID + "/uploads/" + u.ID + "/complete"
	writeJSON(w, http.StatusCreated, uploadJSON{UploadID: u.ID, UploadURL: link.URL, ExpiresAt: u.ExpiresAt, FileName: u.FileName,
		MaxSizeBytes: link.MaxBytes, CompleteURL: complete})
	return nil
}

func (s *Server) completeUpload(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	var body struct {
		Comment string `json:"comment"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	sn, err := s.svc.CompleteUpload(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), r.PathValue("upload_id"), body.Comment)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/namespaces/"+sn.Namespace+"/environments/"+sn.EnvironmentID+"/snapshots/"+sn.ID)
	writeJSON(w, http.StatusAccepted, toSnapshotJSON(sn))
	return nil
}
