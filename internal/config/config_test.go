package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
		{"bad console namespace", func(e map[string]string) { e["CONSOLE_DEFAULT_NAMESPACE"] = "Demo_NS" }, "CONSOLE_DEFAULT_NAMESPACE"},
		{"console scopes without openid", func(e map[string]string) {
			e["CONSOLE_CLIENT_ID"], e["CONSOLE_SCOPES"] = "console", "profile api://x/access"
		}, "CONSOLE_SCOPES: must include openid"},
		{"bad container", func(e map[string]string) { e["SNAPSHOTS_CONTAINER"] = "Snap_Shots" }, "SNAPSHOTS_CONTAINER"},
		{"bad file-store container", func(e map[string]string) { e["FILE_STORE_CONTAINER"] = "x" }, "FILE_STORE_CONTAINER"},
		{"one container for both", func(e map[string]string) { e["FILE_STORE_CONTAINER"] = "snapshots" }, "FILE_STORE_CONTAINER"},
		{"bad table prefix", func(e map[string]string) { e["TABLE_PREFIX"] = "a-b" }, "TABLE_PREFIX"},
		{"bad duration", func(e map[string]string) { e["SHUTDOWN_TIMEOUT"] = "soon" }, "SHUTDOWN_TIMEOUT"},
		{"no pg user", func(e map[string]string) { delete(e, "PG_USER") }, "PG_USER"},
		{"bad sslmode", func(e map[string]string) { e["PG_SSLMODE"] = "sometimes" }, "PG_SSLMODE"},
		{"stall shorter than the lock wait", func(e map[string]string) { e["JOB_STALL_TIMEOUT"] = "1m" }, "JOB_STALL_TIMEOUT: 1m0s must be longer than PG_LOCK_WAIT_TIMEOUT"},
		{"missing CA bundle", func(e map[string]string) { e["PG_SSLROOTCERT"] = "/nonexistent/roots.pem" }, "PG_SSLROOTCERT: cannot read"},
		{"CA bundle without certificates", func(e map[string]string) { e["PG_SSLROOTCERT"] = "config_test.go" }, "holds no PEM certificate"},
		{"CA bundle checked with require too", func(e map[string]string) {
			e["PG_SSLMODE"], e["PG_SSLROOTCERT"] = "require", "/nonexistent/roots.pem"
		}, "PG_SSLROOTCERT"},
		{"bad allowed host", func(e map[string]string) { e["PG_ALLOWED_HOSTS"] = "db.example.com,*" }, `PG_ALLOWED_HOSTS: entry "*"`},
		{"allowed hosts blank", func(e map[string]string) { e["PG_ALLOWED_HOSTS"] = " , " }, "PG_ALLOWED_HOSTS: empty entry"},
		{"allowed suffix too wide", func(e map[string]string) { e["PG_ALLOWED_HOSTS"] = ".azure" }, "PG_ALLOWED_HOSTS"},
		{"bad lock wait", func(e map[string]string) { e["PG_LOCK_WAIT_TIMEOUT"] = "-1s" }, "PG_LOCK_WAIT_TIMEOUT"},
		{"bad compression level", func(e map[string]string) { e["ARCHIVE_COMPRESSION_LEVEL"] = "12" }, "ARCHIVE_COMPRESSION_LEVEL"},
		{"compression level not a number", func(e map[string]string) { e["ARCHIVE_COMPRESSION_LEVEL"] = "best" }, "ARCHIVE_COMPRESSION_LEVEL"},
		{"bad file workers", func(e map[string]string) { e["BACKUP_FILE_WORKERS"] = "0" }, "BACKUP_FILE_WORKERS"},
		{"undo hours zero", func(e map[string]string) { e["RESTORE_UNDO_HOURS"] = "0" }, "RESTORE_UNDO_HOURS"},
		{"undo hours beyond 30 days", func(e map[string]string) { e["RESTORE_UNDO_HOURS"] = "721" }, "RESTORE_UNDO_HOURS"},
		{"upload link hours zero", func(e map[string]string) { e["UPLOAD_LINK_HOURS"] = "0" }, "UPLOAD_LINK_HOURS"},
		{"upload link hours of 7 days", func(e map[string]string) { e["UPLOAD_LINK_HOURS"] = "168" }, "UPLOAD_LINK_HOURS"},
		{"upload limit below 1 MiB", func(e map[string]string) { e["UPLOAD_MAX_BYTES"] = "1000" }, "UPLOAD_MAX_BYTES"},
		{"upload limit not a number", func(e map[string]string) { e["UPLOAD_MAX_BYTES"] = "64G" }, "UPLOAD_MAX_BYTES"},
		{"unpacked limit below the upload limit", func(e map[string]string) {
			e["UPLOAD_MAX_BYTES"] = "2000000"
			e["UPLOAD_MAX_UNPACKED_BYTES"] = "1999999"
		}, "UPLOAD_MAX_UNPACKED_BYTES"},
		{"uploads container is the snapshots container", func(e map[string]string) { e["UPLOADS_CONTAINER"] = "snapshots" }, "UPLOADS_CONTAINER"},
		{"uploads container invalid", func(e map[string]string) { e["UPLOADS_CONTAINER"] = "Up" }, "UPLOADS_CONTAINER"},
		{"bad log level", func(e map[string]string) { e["LOG_LEVEL"] = "loud" }, "LOG_LEVEL"},
		{"nightly schedule of seven fields", func(e map[string]string) { e["NIGHTLY_SCHEDULE"] = "0 1 * * 1-6 x x" }, "NIGHTLY_SCHEDULE"},
		{"weekly schedule out of range", func(e map[string]string) { e["WEEKLY_SCHEDULE"] = "0 0 25 8-31 * 0" }, "WEEKLY_SCHEDULE"},
		{"monthly schedule that never fires", func(e map[string]string) { e["MONTHLY_SCHEDULE"] = "0 0 1 31 2 *" }, "MONTHLY_SCHEDULE"},
		{"unknown time zone", func(e map[string]string) { e["SCHEDULE_TIME_ZONE"] = "Europe/Atlantis" }, "SCHEDULE_TIME_ZONE"},
		{"the machine's zone", func(e map[string]string) { e["SCHEDULE_TIME_ZONE"] = "Local" }, "SCHEDULE_TIME_ZONE"},
		{"spread beyond 6 hours", func(e map[string]string) { e["SCHEDULE_SPREAD"] = "7h" }, "SCHEDULE_SPREAD"},
		{"negative spread", func(e map[string]string) { e["SCHEDULE_SPREAD"] = "-1m" }, "SCHEDULE_SPREAD"},
		{"spread not a duration", func(e map[string]string) { e["SCHEDULE_SPREAD"] = "2 hours" }, "SCHEDULE_SPREAD"},
		{"keep last good not a boolean", func(e map[string]string) { e["KEEP_LAST_GOOD_SNAPSHOT"] = "yes" }, "KEEP_LAST_GOOD_SNAPSHOT"},
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

func TestDatabaseSettingsDefaults(t *testing.T) {
	c, err := FromEnv(func(k string) string { return validEnv()[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.PGSSLMode != "verify-full" || c.PGSSLRootCert != DefaultSSLRootCert {
		t.Errorf("got sslmode %q, sslrootcert %q; want verify-full with %s", c.PGSSLMode, c.PGSSLRootCert, DefaultSSLRootCert)
	}
	if got := c.PGAllowedHosts.String(); got != ".postgres.database.azure.com" {
		t.Errorf("got allowed hosts %q, want Azure Flexible Server's suffix", got)
	}
	if c.PGAllowedHosts.Allows("127.0.0.1") || !c.PGAllowedHosts.Allows("srv.postgres.database.azure.com") {
		t.Error("the default allow-list must allow Azure Flexible Servers only")
	}
}

func TestDatabaseSettingsOverrides(t *testing.T) {
	bundle := filepath.Join(t.TempDir(), "roots.pem")
	writeTestCA(t, bundle)
	env := validEnv()
	env["PG_SSLMODE"], env["PG_SSLROOTCERT"] = "verify-ca", bundle
	env["PG_ALLOWED_HOSTS"] = "127.0.0.1, localhost"
	c, err := load(t, env)
	if err != nil {
		t.Fatalf("got %v, want the settings accepted", err)
	}
	if c.PGSSLMode != "verify-ca" || c.PGSSLRootCert != bundle || c.PGAllowedHosts.String() != "127.0.0.1,localhost" {
		t.Errorf("got %q %q %q", c.PGSSLMode, c.PGSSLRootCert, c.PGAllowedHosts)
	}
	// The local stack: no TLS, so no CA bundle is read or needed.
	env = validEnv()
	env["PG_SSLMODE"] = "disable"
	if c, err := load(t, env); err != nil || c.PGSSLRootCert != "" {
		t.Errorf("sslmode disable: got %v, sslrootcert %q; want it accepted without a bundle", err, c.PGSSLRootCert)
	}
	// The allow-list shows in the start-up log.
	var sb strings.Builder
	log := zerolog.New(&sb)
	log.Info().Interface("config", c).Msg("start")
	if !strings.Contains(sb.String(), `"PGAllowedHosts":"127.0.0.1,localhost"`) {
		t.Errorf("got log %s, want the allow-list in it", sb.String())
	}
}

func writeTestCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestScheduleSettings: the defaults are the documented schedules, UTC, 2 hours and the safety floor
// on; set values are read, and the plan holds the three timers in the zone.
func TestScheduleSettings(t *testing.T) {
	c, err := load(t, validEnv())
	if err != nil {
		t.Fatal(err)
	}
	if c.NightlySchedule != "0 0 1 * * 1-6" || c.WeeklySchedule != "0 0 1 8-31 * 0" || c.MonthlySchedule != "0 0 1 1-7 * 0" ||
		c.ScheduleTimeZone != "UTC" || c.ScheduleSpread != 2*time.Hour || !c.KeepLastGoodSnapshot {
		t.Errorf("defaults: %+v", c)
	}
	env := validEnv()
	env["NIGHTLY_SCHEDULE"], env["SCHEDULE_TIME_ZONE"], env["SCHEDULE_SPREAD"], env["KEEP_LAST_GOOD_SNAPSHOT"] = "0 30 2 * * 1-6", "Europe/Amsterdam", "45m", "FALSE"
	if c, err = load(t, env); err != nil {
		t.Fatal(err)
	}
	if c.KeepLastGoodSnapshot || c.ScheduleSpread != 45*time.Minute {
		t.Errorf("overrides: keep %v spread %s", c.KeepLastGoodSnapshot, c.ScheduleSpread)
	}
	plan := c.SchedulePlan()
	if len(plan.Timers) != 3 || plan.Spread != 45*time.Minute || plan.Calendar.Location().String() != "Europe/Amsterdam" {
		t.Fatalf("plan: %d timers, spread %s, zone %s", len(plan.Timers), plan.Spread, plan.Calendar.Location())
	}
	// Monday 2026-12-07 02:30 UTC is the nightly timer's first occurrence after Sunday noon.
	if got, want := plan.Timers[0].Next(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)), time.Date(2026, 12, 7, 2, 30, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("nightly timer: next %s, want %s", got, want)
	}
}

// fakeClientDir writes pg_dump (reporting version) and pg_restore scripts into a new directory.
func fakeClientDir(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"pg_dump": `echo "pg_dump (PostgreSQL) ` + version + `"`, "pg_restore": "exit 0"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestPGBinDirs: PG_BIN_DIRS maps majors to directories (default 15=/usr/lib/postgresql/15/bin), and
// PG_BIN_DIR, the older form, is one directory whose major its pg_dump reports; every entry is checked
// at start, and each refusal names the variable.
func TestPGBinDirs(t *testing.T) {
	d15, d17 := fakeClientDir(t, "15.18"), fakeClientDir(t, "17.10 (Debian 17.10-1.pgdg120+1)")
	accepted := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"default", nil, "15=/usr/lib/postgresql/15/bin"},
		{"15 and 17", map[string]string{"PG_BIN_DIRS": "17=" + d17 + ", 15=" + d15}, "15=" + d15 + ",17=" + d17},
		{"PG_BIN_DIR, the real 15", map[string]string{"PG_BIN_DIR": "/usr/lib/postgresql/15/bin"}, "15=/usr/lib/postgresql/15/bin"},
		{"PG_BIN_DIR of a 17", map[string]string{"PG_BIN_DIR": d17}, "17=" + d17},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := load(t, env)
			if err != nil || c.PGBinDirs.String() != tt.want {
				t.Errorf("got %v, %v; want %s", c.PGBinDirs, err, tt.want)
			}
		})
	}
	noRestore := t.TempDir()
	if err := os.WriteFile(filepath.Join(noRestore, "pg_dump"), []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) 15.2'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"both set", map[string]string{"PG_BIN_DIRS": "15=" + d15, "PG_BIN_DIR": d15}, "PG_BIN_DIRS and PG_BIN_DIR: set one or the other"},
		{"no major", map[string]string{"PG_BIN_DIRS": d15}, "PG_BIN_DIRS: \"" + d15 + "\" is not <major>=<directory>"},
		{"major out of range", map[string]string{"PG_BIN_DIRS": "11=" + d15}, "PG_BIN_DIRS: \"11=" + d15 + "\": the major version \"11\" is not a whole number from 12 to 30"},
		{"major twice", map[string]string{"PG_BIN_DIRS": "15=" + d15 + ",15=" + d17}, "PG_BIN_DIRS: PostgreSQL 15 appears twice"},
		{"directory missing", map[string]string{"PG_BIN_DIRS": "15=" + d15 + ",17=/nonexistent/17/bin"}, "PG_BIN_DIRS: PostgreSQL 17: stat /nonexistent/17/bin/pg_dump"},
		{"no pg_restore", map[string]string{"PG_BIN_DIRS": "15=" + noRestore}, "PG_BIN_DIRS: PostgreSQL 15: stat " + noRestore + "/pg_restore"},
		{"another major than said", map[string]string{"PG_BIN_DIRS": "15=" + d17}, "PG_BIN_DIRS: PostgreSQL 15: " + d17 + "/pg_dump is version 17.10, not 15"},
		{"PG_BIN_DIR missing", map[string]string{"PG_BIN_DIR": "/nonexistent/bin"}, "PG_BIN_DIR: /nonexistent/bin/pg_dump --version failed"},
		{"PG_BIN_DIR of an 11", map[string]string{"PG_BIN_DIR": fakeClientDir(t, "11.22")}, "PG_BIN_DIR: PostgreSQL 11 ("},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			env := validEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			_, err := load(t, env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// The start-up log shows the list as it is set.
	c, err := load(t, validEnv())
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	log := zerolog.New(&sb)
	log.Info().Interface("config", c).Msg("start")
	if !strings.Contains(sb.String(), `"PGBinDirs":"15=/usr/lib/postgresql/15/bin"`) {
		t.Errorf("got log %s, want PG_BIN_DIRS in it", sb.String())
	}
}
