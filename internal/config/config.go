// Package config owns the handler's settings: one struct, read from the environment in one function,
// validated at start with messages that name the bad setting. Secrets print as **redacted**.
package config

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/ncrontab"
	"github.com/mxazure/backups/internal/pg"
	"github.com/mxazure/backups/internal/schedule"
)

// DefaultSSLRootCert is the OS's CA bundle (Debian's ca-certificates), which holds the roots Azure
// Database for PostgreSQL uses; the worker image points PG_SSLROOTCERT at a bundle of only those roots.
const DefaultSSLRootCert = "/etc/ssl/certs/ca-certificates.crt"

// Secret is a string that never prints its value.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "**redacted**"
}

// GoString keeps %#v from leaking the value too.
func (s Secret) GoString() string { return s.String() }

// MarshalText keeps JSON and zerolog from leaking the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Value returns the secret itself, for the one place that needs it.
func (s Secret) Value() string { return string(s) }

// Config is every setting of the handler. Field comments name the environment variable.
type Config struct {
	// Port the Functions host told us to listen on (FUNCTIONS_CUSTOMHANDLER_PORT, legacy
	// FUNCTIONS_HTTPWORKER_PORT).
	Port int
	// Version of this build, reported by the health function (set at link time, not from the environment).
	Version string

	// Storage for status (Table Storage) and archives (Blob Storage): either a connection string
	// (STORAGE_CONNECTION_STRING, Azurite locally) or account URLs with managed identity
	// (STORAGE_BLOB_URL, STORAGE_TABLE_URL).
	StorageConnectionString Secret
	StorageBlobURL          string
	StorageTableURL         string
	// TablePrefix prefixes every table name (TABLE_PREFIX), so several deployments or tests can share an
	// account.
	TablePrefix string
	// SnapshotsContainer holds the snapshots' dumps and manifests (SNAPSHOTS_CONTAINER, default
	// "snapshots"); FileStoreContainer the environments' file stores, which their snapshots share
	// (FILE_STORE_CONTAINER, default "snapshot-files"). They must differ.
	SnapshotsContainer string
	FileStoreContainer string
	// UploadsContainer holds archives users upload, until they are validated (UPLOADS_CONTAINER,
	// default "snapshot-uploads"); it must differ from both.
	UploadsContainer string

	// Service Bus: a connection string (SERVICEBUS_CONNECTION_STRING), or a namespace with managed identity
	// (SERVICEBUS_NAMESPACE, e.g. "mybus.servicebus.windows.net"), or the local Functions host's broker
	// (LOCAL_SERVICEBUS_URL, set by the project's local host only).
	ServiceBusConnectionString Secret
	ServiceBusNamespace        string
	LocalServiceBusURL         string

	// ManagedIdentityClientID selects a user-assigned managed identity (AZURE_CLIENT_ID); empty means the
	// default credential chain.
	ManagedIdentityClientID string

	// OIDC issuer and audience of the bearer tokens the portal sends (AUTH_ISSUER_URL, AUTH_AUDIENCE).
	AuthIssuerURL string
	AuthAudience  string
	// The web console signs users in with the same issuer: ConsoleClientID is its public client's id
	// (CONSOLE_CLIENT_ID; empty turns the console's sign-in off, and it says so), ConsoleScopes what it
	// asks for (CONSOLE_SCOPES, space-separated, default "openid profile"; with Entra ID add the API's
	// scope, e.g. api://<client id>/access_as_user, so that the access token's audience is the API),
	// ConsoleNamespace the namespace it opens when its link names none (CONSOLE_DEFAULT_NAMESPACE).
	ConsoleClientID  string
	ConsoleScopes    string
	ConsoleNamespace string

	// Environments' databases: the service's own role (PG_USER; in Azure the managed identity's Entra
	// role name) and its password (PG_PASSWORD; empty in Azure, where an Entra token is used instead).
	PGUser     string
	PGPassword Secret
	// PGBinDirs are the PostgreSQL client programs (pg_dump, pg_restore) by major version (PG_BIN_DIRS,
	// comma-separated <major>=<dir>, default pg.DefaultClients, 15=/usr/lib/postgresql/15/bin): a
	// server of major M is dumped by the smallest configured major >= M. PG_BIN_DIR, the older form, is
	// one directory whose major version FromEnv reads from its pg_dump --version; setting both is refused.
	PGBinDirs pg.Clients
	// pgBinDirsFrom names the variable PGBinDirs came from, for Validate's messages.
	pgBinDirsFrom string
	// PGSSLMode is libpq's sslmode for pgx and pg_dump alike (PG_SSLMODE, default "verify-full").
	// PGSSLRootCert is the PEM file of the CAs that verify the servers (PG_SSLROOTCERT); with verify-ca or
	// verify-full it defaults to the OS bundle, DefaultSSLRootCert. It must be a file: pg_dump 15 knows
	// no sslrootcert=system.
	PGSSLMode     string
	PGSSLRootCert string
	// PGAllowedHosts are the only database servers environments may name (PG_ALLOWED_HOSTS,
	// comma-separated host names, addresses and .suffixes; default backup.DefaultDatabaseHosts, Azure
	// Flexible Server).
	PGAllowedHosts backup.HostAllowList
	// PGLockWaitTimeout bounds how long pg_dump waits for a table lock (PG_LOCK_WAIT_TIMEOUT, default 2m).
	PGLockWaitTimeout time.Duration

	// ArchiveCompressionLevel is the gzip level of archives, 1 (fastest) to 9 (smallest)
	// (ARCHIVE_COMPRESSION_LEVEL, default 6). FileWorkers is how many file blobs a backup reads at once
	// (BACKUP_FILE_WORKERS, default 16).
	ArchiveCompressionLevel int
	FileWorkers             int

	// JobStallTimeout is how long a job may go without progress before its attempt is abandoned as
	// stalled (JOB_STALL_TIMEOUT, default 5m; longer than PG_LOCK_WAIT_TIMEOUT).
	JobStallTimeout time.Duration

	// RestoreUndoHours is how long a completed restore can be undone: the previous database and the
	// overwritten files are kept that long (RESTORE_UNDO_HOURS, default 24, 1 to 720).
	RestoreUndoHours int

	// UploadLinkHours is how long an upload link is valid (UPLOAD_LINK_HOURS, default 24, 1 to 167).
	// UploadMaxBytes bounds an uploaded archive (UPLOAD_MAX_BYTES, default 64 GiB) and each of its
	// entries; UploadMaxUnpackedBytes bounds what it unpacks to, against gzip bombs
	// (UPLOAD_MAX_UNPACKED_BYTES, default 256 GiB, at least UPLOAD_MAX_BYTES).
	UploadLinkHours        int
	UploadMaxBytes         int64
	UploadMaxUnpackedBytes int64

	// Automatic backups (docs/operations.md, "Automatic backups"): the NCRONTAB schedules of the three
	// timers (NIGHTLY_SCHEDULE, WEEKLY_SCHEDULE, MONTHLY_SCHEDULE, read by the Functions host from the
	// same app settings; the defaults are DefaultNightlySchedule...), the IANA time zone that decides
	// calendar days and Sundays (SCHEDULE_TIME_ZONE, default UTC), the window the day's backups are
	// spread over (SCHEDULE_SPREAD, default 2h, at most 6h), and whether the expiry keeps each
	// environment's newest Finished snapshot (KEEP_LAST_GOOD_SNAPSHOT, default true).
	NightlySchedule      string
	WeeklySchedule       string
	MonthlySchedule      string
	ScheduleTimeZone     string
	ScheduleSpread       time.Duration
	KeepLastGoodSnapshot bool

	// ShutdownTimeout bounds graceful shutdown on SIGTERM (SHUTDOWN_TIMEOUT, default 25s).
	ShutdownTimeout time.Duration
	// LogLevel is the zerolog level (LOG_LEVEL, default "info").
	LogLevel string
}

// FromEnv reads the configuration through getenv (os.Getenv in production, a map in tests). It does not
// validate; call Validate.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		StorageConnectionString:    Secret(getenv("STORAGE_CONNECTION_STRING")),
		StorageBlobURL:             getenv("STORAGE_BLOB_URL"),
		StorageTableURL:            getenv("STORAGE_TABLE_URL"),
		TablePrefix:                orDefault(getenv("TABLE_PREFIX"), ""),
		SnapshotsContainer:         orDefault(getenv("SNAPSHOTS_CONTAINER"), "snapshots"),
		FileStoreContainer:         orDefault(getenv("FILE_STORE_CONTAINER"), "snapshot-files"),
		UploadsContainer:           orDefault(getenv("UPLOADS_CONTAINER"), "snapshot-uploads"),
		ServiceBusConnectionString: Secret(getenv("SERVICEBUS_CONNECTION_STRING")),
		ServiceBusNamespace:        getenv("SERVICEBUS_NAMESPACE"),
		LocalServiceBusURL:         getenv("LOCAL_SERVICEBUS_URL"),
		ManagedIdentityClientID:    getenv("AZURE_CLIENT_ID"),
		AuthIssuerURL:              getenv("AUTH_ISSUER_URL"),
		AuthAudience:               getenv("AUTH_AUDIENCE"),
		ConsoleClientID:            getenv("CONSOLE_CLIENT_ID"),
		ConsoleScopes:              strings.Join(strings.Fields(orDefault(getenv("CONSOLE_SCOPES"), "openid profile")), " "),
		ConsoleNamespace:           getenv("CONSOLE_DEFAULT_NAMESPACE"),
		LogLevel:                   orDefault(getenv("LOG_LEVEL"), "info"),
		PGUser:                     getenv("PG_USER"),
		PGPassword:                 Secret(getenv("PG_PASSWORD")),
		PGSSLMode:                  orDefault(getenv("PG_SSLMODE"), "verify-full"),
		PGSSLRootCert:              getenv("PG_SSLROOTCERT"),
		NightlySchedule:            orDefault(getenv("NIGHTLY_SCHEDULE"), DefaultNightlySchedule),
		WeeklySchedule:             orDefault(getenv("WEEKLY_SCHEDULE"), DefaultWeeklySchedule),
		MonthlySchedule:            orDefault(getenv("MONTHLY_SCHEDULE"), DefaultMonthlySchedule),
		ScheduleTimeZone:           orDefault(getenv("SCHEDULE_TIME_ZONE"), "UTC"),
	}
	var errs []error
	port := orDefault(getenv("FUNCTIONS_CUSTOMHANDLER_PORT"), getenv("FUNCTIONS_HTTPWORKER_PORT"))
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil {
			errs = append(errs, fmt.Errorf("FUNCTIONS_CUSTOMHANDLER_PORT: %q is not a number", port))
		}
		c.Port = p
	}
	if err := c.readBinDirs(getenv("PG_BIN_DIRS"), getenv("PG_BIN_DIR")); err != nil {
		errs = append(errs, err)
	}
	if c.PGSSLRootCert == "" && strings.HasPrefix(c.PGSSLMode, "verify-") {
		c.PGSSLRootCert = DefaultSSLRootCert
	}
	var err error
	if c.PGAllowedHosts, err = backup.ParseHostAllowList(orDefault(getenv("PG_ALLOWED_HOSTS"), backup.DefaultDatabaseHosts)); err != nil {
		errs = append(errs, fmt.Errorf("PG_ALLOWED_HOSTS: %w", err))
	}
	if c.ShutdownTimeout, err = duration(getenv, "SHUTDOWN_TIMEOUT", 25*time.Second); err != nil {
		errs = append(errs, err)
	}
	if c.PGLockWaitTimeout, err = duration(getenv, "PG_LOCK_WAIT_TIMEOUT", 2*time.Minute); err != nil {
		errs = append(errs, err)
	}
	if c.JobStallTimeout, err = duration(getenv, "JOB_STALL_TIMEOUT", backup.DefaultStallTimeout); err != nil {
		errs = append(errs, err)
	}
	if c.ArchiveCompressionLevel, err = integer(getenv, "ARCHIVE_COMPRESSION_LEVEL", 6); err != nil {
		errs = append(errs, err)
	}
	if c.FileWorkers, err = integer(getenv, "BACKUP_FILE_WORKERS", 16); err != nil {
		errs = append(errs, err)
	}
	if c.RestoreUndoHours, err = integer(getenv, "RESTORE_UNDO_HOURS", int(backup.DefaultRestoreUndo/time.Hour)); err != nil {
		errs = append(errs, err)
	}
	if c.UploadLinkHours, err = integer(getenv, "UPLOAD_LINK_HOURS", int(backup.DefaultUploadLinkTTL/time.Hour)); err != nil {
		errs = append(errs, err)
	}
	var n int
	if n, err = integer(getenv, "UPLOAD_MAX_BYTES", 64<<30); err != nil {
		errs = append(errs, err)
	}
	c.UploadMaxBytes = int64(n)
	if n, err = integer(getenv, "UPLOAD_MAX_UNPACKED_BYTES", 256<<30); err != nil {
		errs = append(errs, err)
	}
	c.UploadMaxUnpackedBytes = int64(n)
	if c.ScheduleSpread, err = duration(getenv, "SCHEDULE_SPREAD", DefaultScheduleSpread); err != nil {
		errs = append(errs, err)
	}
	switch v := strings.ToLower(getenv("KEEP_LAST_GOOD_SNAPSHOT")); v {
	case "", "true":
		c.KeepLastGoodSnapshot = true
	case "false":
	default:
		errs = append(errs, fmt.Errorf("KEEP_LAST_GOOD_SNAPSHOT: %q must be true or false", v))
	}
	return c, errors.Join(errs...)
}

// readBinDirs fills PGBinDirs from PG_BIN_DIRS (dirs) or PG_BIN_DIR (dir), of which one at most may be
// set; PG_BIN_DIR's major version is its pg_dump's. Validate checks the directories.
func (c *Config) readBinDirs(dirs, dir string) error {
	switch {
	case dirs != "" && dir != "":
		c.pgBinDirsFrom = "PG_BIN_DIRS"
		return errors.New("PG_BIN_DIRS and PG_BIN_DIR: set one or the other, not both (PG_BIN_DIR is the older form of one PG_BIN_DIRS entry)")
	case dir != "":
		c.pgBinDirsFrom = "PG_BIN_DIR"
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, major, err := pg.ClientVersion(ctx, dir)
		if err != nil {
			return fmt.Errorf("PG_BIN_DIR: %w (PG_BIN_DIRS lists <major>=<dir> without running it)", err)
		}
		c.PGBinDirs = pg.Clients{{Major: major, Dir: dir}}
		return nil
	}
	c.pgBinDirsFrom = "PG_BIN_DIRS"
	clients, err := pg.ParseClients(orDefault(dirs, pg.DefaultClients))
	if err != nil {
		return fmt.Errorf("PG_BIN_DIRS: %w", err)
	}
	c.PGBinDirs = clients
	return nil
}

// checkBinDirs reports what makes PGBinDirs unusable: no entry, a major version out of range or
// repeated (a Config written by hand), a directory without pg_dump and pg_restore of its major version.
func (c Config) checkBinDirs(bad func(format string, args ...any)) {
	name := orDefault(c.pgBinDirsFrom, "PG_BIN_DIRS")
	if len(c.PGBinDirs) == 0 {
		bad("%s: lists no PostgreSQL client programs; want <major>=<dir>, like %s", name, pg.DefaultClients)
		return
	}
	seen := map[int]bool{}
	for _, cl := range c.PGBinDirs {
		switch {
		case cl.Major < pg.MinClientMajor || cl.Major > pg.MaxClientMajor:
			bad("%s: PostgreSQL %d (%s) is not a major version from %d to %d", name, cl.Major, cl.Dir, pg.MinClientMajor, pg.MaxClientMajor)
			return
		case seen[cl.Major]:
			bad("%s: PostgreSQL %d appears twice", name, cl.Major)
			return
		}
		seen[cl.Major] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, cl := range c.PGBinDirs {
		if err := (pg.Clients{cl}).Check(ctx); err != nil {
			bad("%s: %v", name, err)
		}
	}
}

// Defaults of the schedule settings (UTC: the timers' schedules are read in UTC). Day-of-month and
// day-of-week are ANDed in NCRONTAB: the first Sunday of a month is "1-7 * 0".
const (
	DefaultNightlySchedule = "0 0 1 * * 1-6"
	DefaultWeeklySchedule  = "0 0 1 8-31 * 0"
	DefaultMonthlySchedule = "0 0 1 1-7 * 0"
	DefaultScheduleSpread  = 2 * time.Hour
	// maxScheduleSpread keeps the day's tries (spread, then retries) inside the night.
	maxScheduleSpread = 6 * time.Hour
)

// SchedulePlan is the schedule the settings describe. Call it after Validate.
func (c Config) SchedulePlan() schedule.Plan {
	cal, _ := schedule.LoadCalendar(c.ScheduleTimeZone)
	plan := schedule.Plan{Calendar: cal, Spread: c.ScheduleSpread}
	for _, expr := range []string{c.NightlySchedule, c.WeeklySchedule, c.MonthlySchedule} {
		if s, err := ncrontab.Parse(expr); err == nil {
			plan.Timers = append(plan.Timers, s)
		}
	}
	return plan
}

// Validate reports every bad or missing setting, each naming its environment variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Port <= 0 || c.Port > 65535 {
		bad("FUNCTIONS_CUSTOMHANDLER_PORT: must be set to a port (1-65535); the Functions host sets it")
	}
	switch {
	case c.StorageConnectionString != "" && (c.StorageBlobURL != "" || c.StorageTableURL != ""):
		bad("STORAGE_CONNECTION_STRING and STORAGE_BLOB_URL/STORAGE_TABLE_URL: set one or the other, not both")
	case c.StorageConnectionString != "":
		if !strings.Contains(c.StorageConnectionString.Value(), "AccountName=") &&
			!strings.Contains(c.StorageConnectionString.Value(), "SharedAccessSignature=") {
			bad("STORAGE_CONNECTION_STRING: not an Azure Storage connection string (no AccountName=); " +
				"UseDevelopmentStorage=true is not accepted by the Go SDKs, use the explicit devstoreaccount1 form")
		}
	case c.StorageBlobURL == "" || c.StorageTableURL == "":
		bad("STORAGE_BLOB_URL and STORAGE_TABLE_URL: both must be set (or STORAGE_CONNECTION_STRING)")
	default:
		checkURL(&errs, "STORAGE_BLOB_URL", c.StorageBlobURL)
		checkURL(&errs, "STORAGE_TABLE_URL", c.StorageTableURL)
	}
	if !validTablePrefix(c.TablePrefix) {
		bad("TABLE_PREFIX: %q must be letters and digits only, starting with a letter, at most 20 characters", c.TablePrefix)
	}
	if !backup.ValidContainerName(c.SnapshotsContainer) {
		bad("SNAPSHOTS_CONTAINER: %q is not a valid container name (3-63 lowercase letters, digits, dashes)", c.SnapshotsContainer)
	}
	if !backup.ValidContainerName(c.FileStoreContainer) {
		bad("FILE_STORE_CONTAINER: %q is not a valid container name (3-63 lowercase letters, digits, dashes)", c.FileStoreContainer)
	} else if c.FileStoreContainer == c.SnapshotsContainer {
		bad("FILE_STORE_CONTAINER: %q is also SNAPSHOTS_CONTAINER; the file stores need a container of their own", c.FileStoreContainer)
	}
	if !backup.ValidContainerName(c.UploadsContainer) {
		bad("UPLOADS_CONTAINER: %q is not a valid container name (3-63 lowercase letters, digits, dashes)", c.UploadsContainer)
	} else if c.UploadsContainer == c.SnapshotsContainer || c.UploadsContainer == c.FileStoreContainer {
		bad("UPLOADS_CONTAINER: %q is also SNAPSHOTS_CONTAINER or FILE_STORE_CONTAINER; uploads need a container of their own", c.UploadsContainer)
	}
	// A user-delegation key lasts at most 7 days from its start, which is set a few minutes back for
	// clock skew: a link of 168 hours would outlive it.
	if c.UploadLinkHours < 1 || c.UploadLinkHours > 167 {
		bad("UPLOAD_LINK_HOURS: %d must be from 1 to 167 (a user-delegation link lasts less than 7 days)", c.UploadLinkHours)
	}
	if c.UploadMaxBytes < 1<<20 {
		bad("UPLOAD_MAX_BYTES: %d must be at least 1048576 (1 MiB)", c.UploadMaxBytes)
	}
	if c.UploadMaxUnpackedBytes < c.UploadMaxBytes {
		bad("UPLOAD_MAX_UNPACKED_BYTES: %d must be at least UPLOAD_MAX_BYTES (%d)", c.UploadMaxUnpackedBytes, c.UploadMaxBytes)
	}
	busModes := 0
	for _, set := range []bool{c.ServiceBusConnectionString != "", c.ServiceBusNamespace != "", c.LocalServiceBusURL != ""} {
		if set {
			busModes++
		}
	}
	switch {
	case busModes == 0:
		bad("SERVICEBUS_NAMESPACE: must be set (or SERVICEBUS_CONNECTION_STRING, or LOCAL_SERVICEBUS_URL when run by the local host)")
	case busModes > 1:
		bad("SERVICEBUS_CONNECTION_STRING, SERVICEBUS_NAMESPACE, LOCAL_SERVICEBUS_URL: set exactly one")
	case c.LocalServiceBusURL != "":
		checkURL(&errs, "LOCAL_SERVICEBUS_URL", c.LocalServiceBusURL)
	}
	if c.AuthIssuerURL == "" {
		bad("AUTH_ISSUER_URL: must be set to the OIDC issuer of the portal's tokens")
	} else {
		checkURL(&errs, "AUTH_ISSUER_URL", c.AuthIssuerURL)
	}
	if c.AuthAudience == "" {
		bad("AUTH_AUDIENCE: must be set to the audience (application ID URI or client id) the tokens are issued for")
	}
	if c.ConsoleNamespace != "" {
		if err := backup.ValidateNamespace(c.ConsoleNamespace); err != nil {
			bad("CONSOLE_DEFAULT_NAMESPACE: %q is not a namespace name (1-63 lowercase letters, digits, dashes)", c.ConsoleNamespace)
		}
	}
	if c.ConsoleClientID != "" && !slices.Contains(strings.Fields(c.ConsoleScopes), "openid") {
		bad("CONSOLE_SCOPES: must include openid (the console signs users in with OpenID Connect)")
	}
	if c.PGUser == "" {
		bad("PG_USER: must be set to the role the service uses on the environments' PostgreSQL servers")
	}
	switch c.PGSSLMode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		bad("PG_SSLMODE: %q is not a libpq sslmode", c.PGSSLMode)
	}
	if c.PGSSLRootCert != "" && c.PGSSLMode != "disable" {
		if err := checkCABundle(c.PGSSLRootCert); err != nil {
			bad("PG_SSLROOTCERT: %v", err)
		}
	}
	c.checkBinDirs(bad)
	if c.PGAllowedHosts.IsZero() {
		bad("PG_ALLOWED_HOSTS: must list the database servers environments may name")
	}
	if c.JobStallTimeout <= c.PGLockWaitTimeout {
		bad("JOB_STALL_TIMEOUT: %s must be longer than PG_LOCK_WAIT_TIMEOUT (%s), or a dump waiting for a lock counts as stalled", c.JobStallTimeout, c.PGLockWaitTimeout)
	}
	if c.PGLockWaitTimeout <= 0 {
		bad("PG_LOCK_WAIT_TIMEOUT: must be positive")
	}
	if c.ArchiveCompressionLevel < 1 || c.ArchiveCompressionLevel > 9 {
		bad("ARCHIVE_COMPRESSION_LEVEL: %d is not a gzip level from 1 to 9", c.ArchiveCompressionLevel)
	}
	if c.FileWorkers < 1 || c.FileWorkers > 256 {
		bad("BACKUP_FILE_WORKERS: %d must be from 1 to 256", c.FileWorkers)
	}
	if c.RestoreUndoHours < 1 || c.RestoreUndoHours > 720 {
		bad("RESTORE_UNDO_HOURS: %d must be from 1 to 720 (30 days): the previous database is kept that long", c.RestoreUndoHours)
	}
	for _, sch := range []struct{ name, expr string }{
		{"NIGHTLY_SCHEDULE", c.NightlySchedule}, {"WEEKLY_SCHEDULE", c.WeeklySchedule}, {"MONTHLY_SCHEDULE", c.MonthlySchedule},
	} {
		if _, err := ncrontab.Parse(sch.expr); err != nil {
			bad("%s: %v", sch.name, err)
		}
	}
	if _, err := schedule.LoadCalendar(c.ScheduleTimeZone); err != nil {
		bad("SCHEDULE_TIME_ZONE: %v", err)
	}
	if c.ScheduleSpread < 0 || c.ScheduleSpread > maxScheduleSpread {
		bad("SCHEDULE_SPREAD: %s must be from 0 to %s, so that the night's tries fit in the night", c.ScheduleSpread, maxScheduleSpread)
	}
	if c.ShutdownTimeout <= 0 {
		bad("SHUTDOWN_TIMEOUT: must be positive")
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL: %q is not one of trace, debug, info, warn, error", c.LogLevel)
	}
	return errors.Join(errs...)
}

// checkCABundle reports why path is not a readable PEM file of at least one CA certificate.
func checkCABundle(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read the CA bundle: %w", err)
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("%s holds a certificate that does not parse: %w", path, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

func checkURL(errs *[]error, name, raw string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		*errs = append(*errs, fmt.Errorf("%s: %q is not an http(s) URL", name, raw))
	}
}

func duration(getenv func(string) string, name string, def time.Duration) (time.Duration, error) {
	raw := getenv(name)
	if raw == "" {
		return def, nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil {
		return def, fmt.Errorf("%s: %q is not a duration like 30s or 5m", name, raw)
	}
	return d, nil
}

func integer(getenv func(string) string, name string, def int) (int, error) {
	raw := getenv(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil {
		return def, fmt.Errorf("%s: %q is not a whole number", name, raw)
	}
	return n, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func validTablePrefix(p string) bool {
	if len(p) > 20 {
		return false
	}
	for i, r := range p {
		isLetter := (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !(isLetter || (i > 0 && r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}
