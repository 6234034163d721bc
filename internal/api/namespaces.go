package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// environmentJSON is an Environment as the API shows it (docs/api.md).
type environmentJSON struct {
	EnvironmentID     string `json:"environment_id"`
	Namespace         string `json:"namespace"`
	AppID             string `json:"app_id"`
	Name              string `json:"name"`
	State             string `json:"state"`
	Deployed          bool   `json:"deployed"`
	DeploymentPackage string `json:"deployment_package"`
	ModelVersion      string `json:"model_version"`
	CanCreateBackup   bool   `json:"can_create_backup"`
	Reason            string `json:"reason"`
	FileStoreObjects  int    `json:"file_store_objects"`
	FileStoreBytes    int64  `json:"file_store_bytes"`
	// NextAutomaticBackup is null when no automatic backup will run; LastFinishedSnapshotAt null
	// before the first Finished snapshot.
	NextAutomaticBackup    *nextBackupJSON `json:"next_automatic_backup"`
	LastFinishedSnapshotAt *time.Time      `json:"last_finished_snapshot_at"`
}

// nextBackupJSON is when an environment's next automatic backup is scheduled, and for which calendar
// day (SCHEDULE_TIME_ZONE) and kind.
type nextBackupJSON struct {
	At   time.Time `json:"at"`
	Day  string    `json:"day"`
	Kind string    `json:"kind"`
}

func (s *Server) listEnvironments(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	envs, err := s.svc.ListEnvironments(r.Context(), p, r.PathValue("ns"))
	if err != nil {
		return err
	}
	out := make([]environmentJSON, len(envs))
	for i, e := range envs {
		out[i] = environmentJSON{
			EnvironmentID: e.ID, Namespace: e.Namespace, AppID: e.AppID, Name: e.Name, State: string(e.State),
			Deployed: e.Deployed, DeploymentPackage: e.DeploymentPackage, ModelVersion: e.ModelVersion,
			CanCreateBackup: e.CanCreateBackup, Reason: e.Reason,
			FileStoreObjects: e.FileStore.Objects, FileStoreBytes: e.FileStore.Bytes,
			LastFinishedSnapshotAt: timeOrNull(e.LastFinishedAt),
		}
		if n := e.NextAutomatic; n != nil {
			out[i].NextAutomaticBackup = &nextBackupJSON{At: n.At.UTC(), Day: n.Day.String(), Kind: string(n.Kind)}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"environments": out})
	return nil
}

// settingsJSON is a namespace's settings as the API shows them; updated_at and updated_by are null for
// a namespace never configured.
type settingsJSON struct {
	BackupsEnabled bool       `json:"backups_enabled"`
	UpdatedAt      *time.Time `json:"updated_at"`
	UpdatedBy      *string    `json:"updated_by"`
}

func toSettingsJSON(set backup.Settings) settingsJSON {
	return settingsJSON{BackupsEnabled: set.BackupsEnabled, UpdatedAt: timeOrNull(set.UpdatedAt), UpdatedBy: stringOrNull(set.UpdatedBy)}
}

func (s *Server) getSettings(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	set, err := s.svc.Settings(r.Context(), p, r.PathValue("ns"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toSettingsJSON(set))
	return nil
}

func (s *Server) putSettings(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	var body struct {
		BackupsEnabled *bool `json:"backups_enabled"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if body.BackupsEnabled == nil {
		return backup.Errorf(backup.CodeInvalidParameters, "field backups_enabled is required")
	}
	set, err := s.svc.UpdateSettings(r.Context(), p, r.PathValue("ns"), *body.BackupsEnabled)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toSettingsJSON(set))
	return nil
}

// activityJSON is an activity log entry as the API shows it: every field present, ids null when the
// entry is about no snapshot or restore.
type activityJSON struct {
	Time       time.Time `json:"time"`
	Action     string    `json:"action"`
	Status     string    `json:"status"`
	Actor      string    `json:"actor"`
	SnapshotID *string   `json:"snapshot_id"`
	RestoreID  *string   `json:"restore_id"`
	Message    string    `json:"message"`
}

func (s *Server) listActivity(w http.ResponseWriter, r *http.Request, p backup.Principal) error {
	offset, limit, err := paging(r, 100)
	if err != nil {
		return err
	}
	entries, total, err := s.svc.Activity(r.Context(), p, r.PathValue("ns"), r.PathValue("env"), offset, limit)
	if err != nil {
		return err
	}
	out := make([]activityJSON, len(entries))
	for i, e := range entries {
		out[i] = activityJSON{Time: e.Time, Action: string(e.Action), Status: string(e.Status), Actor: e.Actor,
			SnapshotID: stringOrNull(e.SnapshotID), RestoreID: stringOrNull(e.RestoreID), Message: e.Message}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out, "total": total, "offset": offset, "limit": limit})
	return nil
}

// maxLimit is the largest page a list call returns.
const maxLimit = 1000

// paging reads ?offset= and ?limit= (docs/api.md: default 0 and def, limit at most 1000).
func paging(r *http.Request, def int) (offset, limit int, err error) {
	q := r.URL.Query()
	offset, limit = 0, def
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return 0, 0, backup.Errorf(backup.CodeInvalidParameters, "offset must be a non-negative integer")
		}
	}
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxLimit {
			return 0, 0, backup.Errorf(backup.CodeInvalidParameters, "limit must be an integer from 1 to %d", maxLimit)
		}
	}
	return offset, limit, nil
}

// stringOrNull is nil for "" (JSON null: no such id), else &v.
func stringOrNull(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

// timeOrNull is nil for the zero time (JSON null: not happened yet), else &t.
func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
