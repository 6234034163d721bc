package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// buildHandler compiles this package into a temp dir.
func buildHandler(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "handler")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestInvalidConfigurationStopsWithNamedSettings(t *testing.T) {
	bin := buildHandler(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"FUNCTIONS_CUSTOMHANDLER_PORT=8080", "STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true", "PG_PASSWORD=hunter2"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("exit code %d (%v), want 2", code, err)
	}
	for _, name := range []string{"STORAGE_CONNECTION_STRING", "SERVICEBUS_NAMESPACE", "AUTH_ISSUER_URL", "AUTH_AUDIENCE", "PG_USER"} {
		if !strings.Contains(stdout.String(), name) {
			t.Errorf("output does not name %s:\n%s", name, stdout.String())
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("wrote to stderr (the host logs it as errors): %s", stderr.String())
	}
	if strings.Contains(stdout.String(), "hunter2") {
		t.Error("a secret was printed")
	}
	// Every stdout line is a JSON log record.
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("not a JSON log line: %q", sc.Text())
		}
	}
}

func TestServesProbeAndStopsOnSIGTERM(t *testing.T) {
	bin := buildHandler(t)
	az := azurite.ForTest(t)
	port := freePort(t)
	bus := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = bus.Serve(ln) }()
	defer bus.Close()

	cmd := exec.Command(bin)
	cmd.Env = []string{
		"FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port),
		"STORAGE_CONNECTION_STRING=" + az.ConnectionString(),
		"LOCAL_SERVICEBUS_URL=http://" + ln.Addr().String(),
		"AUTH_ISSUER_URL=http://127.0.0.1:1", "AUTH_AUDIENCE=api://x", "PG_USER=backups",
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer to the readiness probe: %v\n%s", err, stdout.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	// Health answers (storage is ready once tables exist; the bus stub answers the ping).
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/api/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	// An unencoded ".." gets a problem, not the 307 redirect of Go's mux (which a client would follow
	// to a path it did not ask for).
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(base + "/api/v1/namespaces/demo/../environments")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("unclean path: %d %s, want 400 application/problem+json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The console is routed to its own handler: the page, and the redirect to it.
	for path, want := range map[string]int{"/api/console/": 200, "/api/console": 301, "/api/console/config.json": 200} {
		resp, err := noRedirect.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: %d (CSP %q), want %d with the console's policy: %.200s", path, resp.StatusCode, resp.Header.Get("Content-Security-Policy"), want, body)
		}
		// Without CONSOLE_CLIENT_ID the page's settings say why nobody can sign in.
		if path == "/api/console/config.json" && !strings.Contains(string(body), "CONSOLE_CLIENT_ID") {
			t.Errorf("config.json without a client id: %s", body)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stdout.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop within 30 s of SIGTERM")
	}
	if !strings.Contains(stdout.String(), `"stopped"`) {
		t.Errorf("no stop record in the log:\n%s", stdout.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("wrote to stderr: %s", stderr.String())
	}
}
