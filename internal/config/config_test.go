package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

const azurite = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=s3cr3tkey==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"

func validEnv() map[string]string {
	return map[string]string{
		"FUNCTIONS_CUSTOMHANDLER_PORT": "8080",
		"STORAGE_CONNECTION_STRING":    azurite,
		"LOCAL_SERVICEBUS_URL":         "http://127.0.0.1:7071",
		"AUTH_ISSUER_URL":              "http://127.0.0.1:7072",
		"AUTH_AUDIENCE":                "api://backups",
		"PG_USER":                      "backups",
	}
}

func load(t *testing.T, env map[string]string) (Config, error) {
	t.Helper()
	c, err := FromEnv(func(k string) string { return env[k] })
	if err != nil {
		return c, err
	}
	return c, c.Validate()
}

func TestValidConfig(t *testing.T) {
	c, err := load(t, validEnv())
	if err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	if c.Port != 8080 || c.SnapshotsContainer != "snapshots" || c.ShutdownTimeout.Seconds() != 25 {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestLegacyPortVariable(t *testing.T) {
	env := validEnv()
	delete(env, "FUNCTIONS_CUSTOMHANDLER_PORT")
	env["FUNCTIONS_HTTPWORKER_PORT"] = "9090"
	c, err := load(t, env)
	if err != nil || c.Port != 9090 {
		t.Fatalf("got port %d, err %v; want 9090", c.Port, err)
	}
}

func TestInvalidSettingsNameTheVariable(t *testing.T) {
	tests := []struct {
		name    string
		change  func(map[string]string)
		wantVar string
	}{
		{"no port", func(e map[string]string) { delete(e, "FUNCTIONS_CUSTOMHANDLER_PORT") }, "FUNCTIONS_CUSTOMHANDLER_PORT"},
		{"port not a number", func(e map[string]string) { e["FUNCTIONS_CUSTOMHANDLER_PORT"] = "http" }, "FUNCTIONS_CUSTOMHANDLER_PORT"},
		{"no storage", func(e map[string]string) { delete(e, "STORAGE_CONNECTION_STRING") }, "STORAGE_BLOB_URL"},
		{"development storage shortcut", func(e map[string]string) { e["STORAGE_CONNECTION_STRING"] = "UseDevelopmentStorage=true" }, "STORAGE_CONNECTION_STRING"},
		{"both storage modes", func(e map[string]string) { e["STORAGE_BLOB_URL"] = "https://a.blob.core.windows.net" }, "STORAGE_CONNECTION_STRING and STORAGE_BLOB_URL"},
		{"bad blob url", func(e map[string]string) {
			delete(e, "STORAGE_CONNECTION_STRING")
			e["STORAGE_BLOB_URL"] = "ftp://x"
			e["STORAGE_TABLE_URL"] = "https://a.table.core.windows.net"
		}, "STORAGE_BLOB_URL"},
		{"no service bus", func(e map[string]string) { delete(e, "LOCAL_SERVICEBUS_URL") }, "SERVICEBUS_NAMESPACE"},
		{"two service bus modes", func(e map[string]string) { e["SERVICEBUS_NAMESPACE"] = "x.servicebus.windows.net" }, "set exactly one"},
		{"no issuer", func(e map[string]string) { delete(e, "AUTH_ISSUER_URL") }, "AUTH_ISSUER_URL"},
		{"no audience", func(e map[string]string) { delete(e, "AUTH_AUDIENCE") }, "AUTH_AUDIENCE"},
		{"bad container", func(e map[string]string) { e["SNAPSHOTS_CONTAINER"] = "Snap_Shots" }, "SNAPSHOTS_CONTAINER"},
		{"bad table prefix", func(e map[string]string) { e["TABLE_PREFIX"] = "a-b" }, "TABLE_PREFIX"},
		{"bad duration", func(e map[string]string) { e["SHUTDOWN_TIMEOUT"] = "soon" }, "SHUTDOWN_TIMEOUT"},
		{"no pg user", func(e map[string]string) { delete(e, "PG_USER") }, "PG_USER"},
		{"bad sslmode", func(e map[string]string) { e["PG_SSLMODE"] = "sometimes" }, "PG_SSLMODE"},
		{"bad lock wait", func(e map[string]string) { e["PG_LOCK_WAIT_TIMEOUT"] = "-1s" }, "PG_LOCK_WAIT_TIMEOUT"},
		{"bad compression level", func(e map[string]string) { e["ARCHIVE_COMPRESSION_LEVEL"] = "12" }, "ARCHIVE_COMPRESSION_LEVEL"},
		{"compression level not a number", func(e map[string]string) { e["ARCHIVE_COMPRESSION_LEVEL"] = "best" }, "ARCHIVE_COMPRESSION_LEVEL"},
		{"bad file workers", func(e map[string]string) { e["BACKUP_FILE_WORKERS"] = "0" }, "BACKUP_FILE_WORKERS"},
		{"bad log level", func(e map[string]string) { e["LOG_LEVEL"] = "loud" }, "LOG_LEVEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			tt.change(env)
			_, err := load(t, env)
			if err == nil {
				t.Fatalf("got no error, want one naming %s", tt.wantVar)
			}
			if !strings.Contains(err.Error(), tt.wantVar) {
				t.Errorf("got error %q, want it to name %s", err, tt.wantVar)
			}
		})
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	env := validEnv()
	env["SERVICEBUS_CONNECTION_STRING"] = "Endpoint=sb://x/;SharedAccessKey=topsecret"
	env["PG_PASSWORD"] = "pgtopsecret"
	c, _ := FromEnv(func(k string) string { return env[k] })
	var sb strings.Builder
	log := zerolog.New(&sb)
	log.Info().Interface("config", c).Msg("start")
	js, _ := json.Marshal(c)
	for _, out := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), sb.String(), string(js)} {
		if strings.Contains(out, "s3cr3tkey") || strings.Contains(out, "topsecret") || strings.Contains(out, "pgtopsecret") {
			t.Errorf("secret leaked in %q", out)
		}
	}
	if c.StorageConnectionString.Value() != azurite {
		t.Errorf("Value() = %q, want the secret itself", c.StorageConnectionString.Value())
	}
}
