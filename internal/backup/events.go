package backup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Inbound event types on the environment-events queue (docs/api.md).
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

// ParseOption adds a deployment's own checks to ParseEvent.
type ParseOption func(*parseOptions)

type parseOptions struct {
	databaseHosts HostAllowList
}

// WithDatabaseHosts makes ParseEvent reject an environment.updated event whose database.host is not on
// hosts. A zero list checks nothing.
func WithDatabaseHosts(hosts HostAllowList) ParseOption {
	return func(o *parseOptions) { o.databaseHosts = hosts }
}

// ParseEvent decodes and validates one event. Unknown fields are ignored (other services add fields);
// missing or invalid known ones are not. Its errors are *Error with CodeInvalidParameters and say what
// is wrong; such an event can never succeed, so it is recorded and acknowledged, not retried.
func ParseEvent(body []byte, opts ...ParseOption) (InboundEvent, error) {
	var o parseOptions
	for _, opt := range opts {
		opt(&o)
	}
	var ev InboundEvent
	dec := json.NewDecoder(bytes.NewReader(body))
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
		validateEnvironmentFields(&ev, o, bad)
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

func validateEnvironmentFields(ev *InboundEvent, o parseOptions, bad func(string, ...any)) {
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
		} else if !o.databaseHosts.IsZero() && !o.databaseHosts.Allows(db.Host) {
			bad("database.host %q is not an allowed database server (allowed: %s)", db.Host, o.databaseHosts)
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

// DefaultDatabaseHosts allows the servers of Azure Database for PostgreSQL Flexible Server.
const DefaultDatabaseHosts = ".postgres.database.azure.com"

// HostAllowList says which database servers environments may name, so that a forged event cannot make
// the service log in (with its managed identity's token) to someone else's server. An entry is an exact
// host name or IP address ("127.0.0.1", "db.example.com"), or a suffix that starts with a dot and has at
// least two labels (".postgres.database.azure.com", also written "*.postgres.database.azure.com"),
// which matches names that end in it but not IP addresses. Case and a trailing dot do not matter. The
// zero list allows nothing; callers treat it as "no list configured".
type HostAllowList struct {
	entries []string // lower case, no trailing dot; suffixes keep their leading dot
}

// ParseHostAllowList reads a comma-separated list of entries (see HostAllowList).
func ParseHostAllowList(s string) (HostAllowList, error) {
	var l HostAllowList
	var errs []error
	for _, raw := range strings.Split(s, ",") {
		e := strings.TrimSuffix(asciiLower(strings.TrimSpace(raw)), ".")
		if rest, ok := strings.CutPrefix(e, "*."); ok {
			e = "." + rest
		}
		switch {
		case e == "" || e == ".":
			errs = append(errs, fmt.Errorf("empty entry %q", raw))
		case !validHostChars(e) || strings.Contains(e, ".."):
			errs = append(errs, fmt.Errorf("entry %q is not a host name, IP address or .suffix", raw))
		case strings.HasPrefix(e, ".") && (strings.Count(e, ".") < 2 || strings.Contains(e, ":")):
			errs = append(errs, fmt.Errorf("suffix %q must name a domain of at least two labels, like .postgres.database.azure.com", raw))
		default:
			l.entries = append(l.entries, e)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return HostAllowList{}, err
	}
	return l, nil
}

// IsZero reports whether the list has no entries.
func (l HostAllowList) IsZero() bool { return len(l.entries) == 0 }

// Allows reports whether host is on the list.
func (l HostAllowList) Allows(host string) bool {
	h := strings.TrimSuffix(asciiLower(host), ".")
	if h == "" || !validHostChars(h) {
		return false
	}
	isIP := net.ParseIP(h) != nil
	for _, e := range l.entries {
		if !strings.HasPrefix(e, ".") {
			if h == e {
				return true
			}
			continue
		}
		if label, ok := strings.CutSuffix(h, e); ok && !isIP && label != "" && !strings.HasSuffix(label, ".") {
			return true
		}
	}
	return false
}

// String is the list as ParseHostAllowList reads it.
func (l HostAllowList) String() string { return strings.Join(l.entries, ",") }

// MarshalText makes logs and JSON show the list.
func (l HostAllowList) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// validHostChars accepts the characters of host names and IPv4/IPv6 addresses, in ASCII only, so that
// no Unicode look-alike can pass as an allowed name.
func validHostChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// asciiLower lowers ASCII letters only (strings.ToLower maps some non-ASCII letters to ASCII ones).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
