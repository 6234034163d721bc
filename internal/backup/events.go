package backup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Inbound event types on the environment-events queue (spec/api.md).
const (
	EventEnvironmentUpdated   = "environment.updated"
	EventEnvironmentDeleted   = "environment.deleted"
	EventNamespacePermissions = "namespace.permissions"
)

// InboundEvent is the union of the inbound event shapes; which fields matter depends on Type.
type InboundEvent struct {
	Type              string            `json:"type"`
	EventID           string            `json:"event_id"`
	OccurredAt        time.Time         `json:"occurred_at"`
	Namespace         string            `json:"namespace"`
	EnvironmentID     string            `json:"environment_id"`
	AppID             string            `json:"app_id"`
	Name              string            `json:"name"`
	State             EnvironmentState  `json:"state"`
	Deployed          *bool             `json:"deployed"`
	DeploymentPackage string            `json:"deployment_package"`
	ModelVersion      string            `json:"model_version"`
	Database          *DatabaseLocation `json:"database"`
	Files             *FileLocation     `json:"files"`
	PrincipalID       string            `json:"principal_id"`
	Permissions       *[]Permission     `json:"permissions"`
}

// ParseEvent decodes and validates one event. Its errors are *Error with CodeInvalidParameters and say
// what is wrong; such an event can never succeed, so it is recorded and acknowledged, not retried.
func ParseEvent(body []byte) (InboundEvent, error) {
	var ev InboundEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return ev, Errorf(CodeInvalidParameters, "event is not valid JSON of a known shape: %v", err)
	}
	if dec.More() {
		return ev, Errorf(CodeInvalidParameters, "event has data after the JSON object")
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if ev.EventID == "" || len(ev.EventID) > 128 {
		bad("event_id is missing or longer than 128 characters")
	}
	if ev.OccurredAt.IsZero() {
		bad("occurred_at is missing")
	}
	if err := ValidateNamespace(ev.Namespace); err != nil {
		bad("%v", err)
	}
	switch ev.Type {
	case EventEnvironmentUpdated:
		validateEnvironmentFields(&ev, bad)
	case EventEnvironmentDeleted:
		if id, err := ValidateUUID("environment_id", ev.EnvironmentID); err != nil {
			bad("%v", err)
		} else {
			ev.EnvironmentID = id
		}
	case EventNamespacePermissions:
		if err := ValidatePrincipalID(ev.PrincipalID); err != nil {
			bad("%v", err)
		}
		if ev.Permissions == nil {
			bad("permissions is missing (send [] to remove every permission)")
		} else {
			for _, p := range *ev.Permissions {
				if p != PermManageAppsBackups && p != PermStopApps {
					bad("permission %q is not one of ManageAppsBackups, StopApps", p)
				}
			}
		}
	case "":
		bad("type is missing")
	default:
		bad("type %q is not one of %s, %s, %s", ev.Type, EventEnvironmentUpdated, EventEnvironmentDeleted, EventNamespacePermissions)
	}
	if len(problems) > 0 {
		return ev, Errorf(CodeInvalidParameters, "invalid %s event: %s", orUnknown(ev.Type), strings.Join(problems, "; "))
	}
	ev.OccurredAt = ev.OccurredAt.UTC()
	return ev, nil
}

func validateEnvironmentFields(ev *InboundEvent, bad func(string, ...any)) {
	if id, err := ValidateUUID("environment_id", ev.EnvironmentID); err != nil {
		bad("%v", err)
	} else {
		ev.EnvironmentID = id
	}
	if !ev.State.Valid() {
		bad("state %q is not one of Creating, CreationFailed, Deploying, Transitioning, Running, Stopped, Deleted", ev.State)
	}
	if ev.Deployed == nil {
		bad("deployed is missing")
	}
	if ev.Name == "" || len(ev.Name) > 200 {
		bad("name is missing or longer than 200 characters")
	}
	if len(ev.AppID) > 200 || len(ev.DeploymentPackage) > 500 || len(ev.ModelVersion) > 100 {
		bad("app_id, deployment_package or model_version is too long")
	}
	if db := ev.Database; db == nil {
		bad("database is missing")
	} else {
		if db.Host == "" || strings.ContainsAny(db.Host, " /\\'\"") {
			bad("database.host %q is not a host name", db.Host)
		}
		if db.Port <= 0 || db.Port > 65535 {
			bad("database.port %d is not a port", db.Port)
		}
		if !validSQLName(db.Name) {
			bad("database.name %q is not a valid PostgreSQL database name", db.Name)
		}
		if !validSQLName(db.Role) {
			bad("database.role %q is not a valid PostgreSQL role name", db.Role)
		}
	}
	if f := ev.Files; f == nil {
		bad("files is missing")
	} else {
		if !ValidContainerName(f.Container) {
			bad("files.container %q is not a valid blob container name", f.Container)
		}
		if len(f.Prefix) > 200 || strings.Contains(f.Prefix, "..") || strings.HasPrefix(f.Prefix, "/") {
			bad("files.prefix %q is not a valid blob name prefix", f.Prefix)
		}
	}
}

// validSQLName accepts names that need no quoting surprises: letters, digits, underscore, dash; at most
// 63 bytes (PostgreSQL's identifier limit).
func validSQLName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		ok := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && (r == '-' || (r >= '0' && r <= '9')))
		if !ok {
			return false
		}
	}
	return true
}

// ValidContainerName reports whether n is a valid Azure Blob container name: 3-63 lowercase letters,
// digits and single dashes, starting and ending with a letter or digit.
func ValidContainerName(n string) bool {
	if len(n) < 3 || len(n) > 63 || n[0] == '-' || n[len(n)-1] == '-' || strings.Contains(n, "--") {
		return false
	}
	for _, r := range n {
		if !((r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-') {
			return false
		}
	}
	return true
}

func orUnknown(s string) string {
	if s == "" || len(s) > 40 {
		return "unknown"
	}
	return s
}

// newer reports whether an event at (t, id) supersedes the stored (storedT, storedID). Equal times are
// ordered by event id so that replays in any order converge on the same state.
func newer(t time.Time, id string, storedT time.Time, storedID string) bool {
	if !t.Equal(storedT) {
		return t.After(storedT)
	}
	return id > storedID
}
