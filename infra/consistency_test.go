package infra

import (
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/config"
	"github.com/mxazure/backups/internal/tablestore"
)

// absentInAzure: settings the handler reads that the function app deliberately does not set. Adding
// a setting to config.FromEnv fails TestInfrastructureMatchesCode until it is set in infra/main.tf or
// listed here with its reason.
var absentInAzure = map[string]string{
	// The Functions host sets the port at start.
	"FUNCTIONS_CUSTOMHANDLER_PORT": "set by the Functions host",
	"FUNCTIONS_HTTPWORKER_PORT":    "legacy name of the port, set by older hosts",
	// Set by the image (infra/Dockerfile ENV), next to the bundle it names.
	"PG_SSLROOTCERT": "set by infra/Dockerfile to the Azure root CAs it installs",
	// The older single-directory form: infra sets PG_BIN_DIRS, and config refuses both.
	"PG_BIN_DIR": "older form of one PG_BIN_DIRS entry; infra sets PG_BIN_DIRS and config refuses both set",
	// Defaults that suit Azure; an operator overrides them through var.extra_app_settings.
	"PG_ALLOWED_HOSTS":          "defaults to Azure Flexible Server (.postgres.database.azure.com)",
	"SHUTDOWN_TIMEOUT":          "default 25s fits the host's shutdown grace",
	"JOB_STALL_TIMEOUT":         "default 5m, longer than PG_LOCK_WAIT_TIMEOUT's default",
	"ARCHIVE_COMPRESSION_LEVEL": "default 6",
	"BACKUP_FILE_WORKERS":       "default 16",
	"UPLOAD_MAX_UNPACKED_BYTES": "default 256 GiB",
	// Only set when var.table_prefix is not empty; found in the conditional branch anyway.
	"TABLE_PREFIX": "set only when var.table_prefix is not empty",
}

// forbiddenInAzure: secrets and local-only settings. The deployment uses the managed identity, so
// none of these may be set: each would replace the identity with a secret (or point the handler at
// a local broker).
var forbiddenInAzure = map[string]string{
	"STORAGE_CONNECTION_STRING":    "the service reaches storage with the managed identity (STORAGE_BLOB_URL, STORAGE_TABLE_URL); the account refuses shared keys",
	"SERVICEBUS_CONNECTION_STRING": "the service reaches Service Bus with the managed identity (SERVICEBUS_NAMESPACE)",
	"PG_PASSWORD":                  "the service logs in to PostgreSQL with Entra tokens of the managed identity",
	"LOCAL_SERVICEBUS_URL":         "it is the local Functions host's broker, set by the project's local host only",
}

// hostSettings: app settings read by the Functions host or App Service, not by the handler.
var hostSettings = map[string]string{
	"FUNCTIONS_WORKER_RUNTIME":            "the host: custom handler",
	"WEBSITES_ENABLE_APP_SERVICE_STORAGE": "App Service: no Azure Files mount over the image's /home",
	"AzureWebJobsStorage__credential":     "the host's identity-based storage",
	"AzureWebJobsStorage__clientId":       "the host's identity-based storage",
	"AzureWebJobsStorage__accountName":    "the host's identity-based storage",
}

// readSettings records every name config.FromEnv asks for.
func readSettings(t *testing.T) []string {
	seen := map[string]bool{}
	_, _ = config.FromEnv(func(name string) string { seen[name] = true; return "" })
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	if len(out) < 10 {
		t.Fatalf("config.FromEnv read only %d settings (%v); the recording getenv no longer sees them", len(out), out)
	}
	return out
}

// codeFactsFromRepo gathers what the code uses, from the packages themselves.
func codeFactsFromRepo(t *testing.T, root string) codeFacts {
	cfg, _ := config.FromEnv(func(string) string { return "" })
	maxAttempts, err := intConst(filepath.Join(root, "internal", "backup", "progress.go"), "maxAttempts")
	if err != nil {
		t.Fatalf("backup.maxAttempts: %v", err)
	}
	return codeFacts{
		Queues: map[string]string{
			"backup.QueueJobs":              backup.QueueJobs,
			"backup.QueueAutomatic":         backup.QueueAutomatic,
			"backup.QueueEnvironmentEvents": backup.QueueEnvironmentEvents,
		},
		Topic:        backup.TopicBackupEvents,
		SessionQueue: backup.QueueJobs,
		// The API and recovery send jobs; the fan-out and each try send automatic tries; settling
		// publishes the outcome events.
		PublishedTo: []string{backup.QueueJobs, backup.QueueAutomatic, backup.TopicBackupEvents},
		// The triggers (function.json) and the health check's peek (internal/bus/servicebus.go Ping).
		ReceivedFrom: []string{backup.QueueJobs, backup.QueueAutomatic, backup.QueueEnvironmentEvents},
		MinDuplicateWindow: map[string]time.Duration{
			// MessageId = "<environment>/<day>[/<try>][/recheck]": the same id is sent again during
			// the whole day (a second timer, overlapping schedules, a resumed fan-out).
			backup.QueueAutomatic: 24 * time.Hour,
			// MessageId = operation id (and the resend's number): SDK retries and a send retried
			// after a timeout, within minutes.
			backup.QueueJobs: 10 * time.Minute,
			// MessageId = event_id: the publisher's retries after a lost acknowledgement.
			backup.TopicBackupEvents: 10 * time.Minute,
			// The portal sends MessageId = event_id (infra/README.md, docs/api.md).
			backup.QueueEnvironmentEvents: 10 * time.Minute,
		},
		MaxAttempts: maxAttempts,
		Tables:      tablestore.Tables(),
		Containers: map[string]string{
			"SNAPSHOTS_CONTAINER":  cfg.SnapshotsContainer,
			"FILE_STORE_CONTAINER": cfg.FileStoreContainer,
			"UPLOADS_CONTAINER":    cfg.UploadsContainer,
		},
		Settings:      readSettings(t),
		AbsentInAzure: absentInAzure,
		Forbidden:     forbiddenInAzure,
		HostSettings:  hostSettings,
	}
}

// TestInfrastructureMatchesCode fails when infra/*.tf, functions/*/function.json, host.json and the
// code disagree: names of queues, topic, containers, tables and settings; the entities' settings the
// code relies on; the identity's roles (least privilege). Each failure is a sentence naming the file,
// the resource and the fix.
func TestInfrastructureMatchesCode(t *testing.T) {
	root := ".."
	tf, err := readTerraform(".")
	if err != nil {
		t.Fatal(err)
	}
	fns, host, err := readFunctions(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range check(tf, codeFactsFromRepo(t, root), fns, host) {
		t.Error(p)
	}
}

// TestAllowListsAreRead keeps the allow-lists honest: each entry is a setting the handler reads.
func TestAllowListsAreRead(t *testing.T) {
	read := map[string]bool{}
	for _, s := range readSettings(t) {
		read[s] = true
	}
	for _, m := range []map[string]string{absentInAzure, forbiddenInAzure} {
		for s := range m {
			if !read[s] && !strings.HasPrefix(s, "AzureWebJobs") {
				t.Errorf("infra/consistency_test.go lists %s, which internal/config/config.go no longer reads: remove it from the list.", s)
			}
		}
	}
}
