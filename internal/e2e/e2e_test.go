// Package e2e runs the service end to end: the real handler binary, built from this tree, under the
// project's local Functions host, against real Azurite and a real PostgreSQL 15 cluster, driven through
// its HTTP API and Service Bus queues like the portal and other services drive it.
package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
	"github.com/mxazure/backups/internal/dev/devstack/stack"
	"github.com/mxazure/backups/internal/dev/funchost"
)

// env is the running stack shared by the tests of this package (starting it takes seconds).
var (
	env         *stack.Stack
	demo        *stack.Demo
	tok         string
	dumpControl string // control file of the pg_dump wrapper (pgwrapper_test.go)
	// restoreControl steers the pg_restore wrapper; proxy stands between the handler and Azurite's blobs.
	restoreControl string
	proxy          *blobProxy
)

var sprintf = fmt.Sprintf

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		println("e2e: skipped with -short (needs PostgreSQL, Azurite and the local Functions host)")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, file, _, _ := runtime.Caller(0)
	app, err := stack.BuildApp(ctx, filepath.Join(filepath.Dir(file), "..", ".."))
	if err != nil {
		println("e2e: build the app:", err.Error())
		return 1
	}
	defer os.RemoveAll(app)
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stdout, NoColor: true, TimeFormat: time.TimeOnly}).With().Timestamp().Logger().Level(zerolog.WarnLevel)
	if os.Getenv("E2E_VERBOSE") != "" {
		log = log.Level(zerolog.DebugLevel)
	}
	realBin, err := pgcluster.DefaultBinDir()
	if err != nil {
		println("e2e: postgresql binaries:", err.Error())
		return 1
	}
	wrapDir, control, err := pgWrapper(realBin)
	if err != nil {
		println("e2e: pg_dump wrapper:", err.Error())
		return 1
	}
	defer os.RemoveAll(wrapDir)
	dumpControl, restoreControl = control, control+"-restore"
	st, err := stack.Start(ctx, stack.Options{AppDir: app, Listen: "127.0.0.1:0", Logger: log,
		Env: map[string]string{"PG_BIN_DIR": wrapDir, "PG_LOCK_WAIT_TIMEOUT": "5s"},
		HandlerBlobURL: func(azuriteBlobURL string) (string, error) {
			u, p, err := startBlobProxy(azuriteBlobURL)
			proxy = p
			return u, err
		}})
	if err != nil {
		println("e2e: start the stack:", err.Error())
		return 1
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = st.Stop(stopCtx)
	}()
	env = st
	if demo, err = st.SeedDemo(ctx); err != nil {
		println("e2e: seed:", err.Error())
		return 1
	}
	if tok, err = st.Token(stack.DemoUserID, stack.DemoUserName); err != nil {
		println("e2e: token:", err.Error())
		return 1
	}
	return m.Run()
}

// listed finds an environment in an environment list.
func listed(body map[string]any, id string) map[string]any {
	envs, _ := body["environments"].([]any)
	for _, e := range envs {
		if m, _ := e.(map[string]any); m["environment_id"] == id {
			return m
		}
	}
	return nil
}

// call makes an API call and decodes a JSON answer.
func call(t *testing.T, token, method, path, body string) (int, map[string]any) {
	t.Helper()
	status, raw, err := env.Call(context.Background(), token, method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	var out map[string]any
	if raw != "" {
		_ = json.Unmarshal([]byte(raw), &out)
	}
	return status, out
}

// waitInvocation waits until function has an invocation with the given status after since.
func waitInvocation(t *testing.T, function, status string, since time.Time) funchost.Invocation {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, inv := range env.Host.Invocations(function) {
			if inv.Status == status && !inv.StartedAt.Before(since) {
				return inv
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s invocation of %s since %s; got %+v", status, function, since, env.Host.Invocations(function))
	return funchost.Invocation{}
}

func TestHealth(t *testing.T) {
	status, body := call(t, "", "GET", "/api/health", "")
	if status != http.StatusOK || body["status"] != "ok" {
		t.Fatalf("health: %d %v", status, body)
	}
	checks, _ := body["checks"].(map[string]any)
	for _, name := range []string{"table_storage", "blob_storage", "service_bus"} {
		c, _ := checks[name].(map[string]any)
		if c["status"] != "ok" {
			t.Errorf("check %s: %v", name, c)
		}
	}
	if body["version"] == "" {
		t.Error("health has no version")
	}
}

func TestTimerFiredOnDemand(t *testing.T) {
	since := time.Now()
	resp, err := http.Post(env.URL+"/admin/functions/RecoverOperations", "application/json", strings.NewReader(`{"input":""}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("admin fire: %d, want 202", resp.StatusCode)
	}
	inv := waitInvocation(t, "RecoverOperations", "Succeeded", since)
	if inv.Trigger != "timerTrigger" && inv.Trigger != "timer" {
		t.Logf("trigger recorded as %q", inv.Trigger)
	}
}

func TestEnvironmentEventDelivered(t *testing.T) {
	// The seed's events went through the queue to the EnvironmentEvents function: the API lists it.
	status, body := call(t, tok, "GET", "/api/v1/namespaces/demo/environments", "")
	if status != http.StatusOK {
		t.Fatalf("list environments: %d %v", status, body)
	}
	envs, _ := body["environments"].([]any)
	if len(envs) != 2 {
		t.Fatalf("got %d environments, want the demo's 2: %v", len(envs), body)
	}
	for _, id := range []string{stack.DemoEnvironmentID, stack.DemoTestEnvironmentID} {
		if e := listed(body, id); e == nil || e["state"] != "Stopped" || e["can_create_backup"] != true {
			t.Errorf("environment %s: %v", id, e)
		}
	}
	found := false
	for _, inv := range env.Host.Invocations("EnvironmentEvents") {
		found = found || inv.Status == "Succeeded"
	}
	if !found {
		t.Error("no successful EnvironmentEvents invocation recorded by the host")
	}
}

func TestAuthenticationEndToEnd(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		status int
	}{
		{"no token", "", 401},
		{"garbage", "not-a-jwt", 401},
		{"another user without permissions", mustToken(t, "11111111-1111-4111-8111-111111111111"), 403},
		{"demo user", tok, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := call(t, tt.token, "GET", "/api/v1/namespaces/demo/environments", "")
			if status != tt.status {
				t.Errorf("got %d %v, want %d", status, body, tt.status)
			}
		})
	}
}

func mustToken(t *testing.T, principal string) string {
	t.Helper()
	tk, err := env.Token(principal, "someone")
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestRestartHostKeepsData restarts the host with an extra setting: the handler comes back on the same
// storage and database, and what was stored before is still there.
func TestRestartHostKeepsData(t *testing.T) {
	if err := env.RestartHost(context.Background(), map[string]string{"ARCHIVE_COMPRESSION_LEVEL": "7"}); err != nil {
		t.Fatal(err)
	}
	status, body := call(t, tok, "GET", "/api/v1/namespaces/demo/environments", "")
	if status != http.StatusOK || !strings.Contains(fmt.Sprint(body), stack.DemoEnvironmentID) {
		t.Fatalf("after restart: %d %v", status, body)
	}
	id := createSnapshot(t, "after a host restart at level 7")
	if snap := waitSnapshot(t, id, 2*time.Minute); snap["status"] != "Finished" {
		t.Fatalf("snapshot: %v", snap)
	}
}
