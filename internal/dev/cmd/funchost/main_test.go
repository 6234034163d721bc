package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const waitLimit = 30 * time.Second

// build compiles this command and the funchost test handler into dir.
func build(t *testing.T, dir string) (cli, handler string) {
	t.Helper()
	cli, handler = filepath.Join(dir, "funchost"), filepath.Join(dir, "app", "handler")
	for _, b := range [][2]string{{cli, "."}, {handler, "../../funchost/testdata/testhandler"}} {
		if out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	return cli, handler
}

// startCLI runs the command on a fresh app and returns it with its base URL, read from its JSON log.
func startCLI(t *testing.T) (*exec.Cmd, string, *bufio.Scanner) {
	t.Helper()
	dir := t.TempDir()
	cli, _ := build(t, dir)
	app := filepath.Join(dir, "app")
	write := func(path, s string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(app, "host.json"), `{"customHandler":{"description":{"defaultExecutablePath":"handler"},"enableForwardingHttpRequest":true}}`)
	write(filepath.Join(app, "functions", "Env", "function.json"),
		`{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","route":"env"},{"type":"http","direction":"out","name":"res"}]}`)
	cmd := exec.Command(cli, "-root", app, "-listen", "127.0.0.1:0", "-env", "GREETING=hi=there", "-env", "TESTHANDLER_RECORD="+filepath.Join(dir, "rec"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	sc := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(waitLimit, func() { _ = cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		var l struct{ URL, Message string }
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			t.Fatalf("log line is not JSON: %s", sc.Text())
		}
		if l.Message == "local functions host running" {
			return cmd, l.URL, sc
		}
	}
	t.Fatalf("funchost exited before it was running")
	return nil, "", nil
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestCLIServesAndStopsOnSIGTERM(t *testing.T) {
	cmd, url, sc := startCLI(t)
	var env map[string]string
	getJSON(t, url+"/api/env", &env)
	if env["GREETING"] != "hi=there" {
		t.Fatalf("-env GREETING=hi=there: handler got %q", env["GREETING"])
	}
	var st struct {
		HandlerPID int `json:"handler_pid"`
	}
	getJSON(t, url+"/admin/host/status", &st)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var stopped bool
	for sc.Scan() {
		if strings.Contains(sc.Text(), "local functions host stopped") {
			stopped = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("funchost exit after SIGTERM: got %v, want status 0", err)
	}
	if !stopped {
		t.Errorf("log: want 'local functions host stopped'")
	}
	waitGone(t, st.HandlerPID)
}

func TestCLIKilledTakesHandlerDown(t *testing.T) {
	cmd, url, _ := startCLI(t)
	var st struct {
		HandlerPID int `json:"handler_pid"`
	}
	getJSON(t, url+"/admin/host/status", &st)
	if st.HandlerPID == 0 {
		t.Fatalf("status: got no handler pid")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitGone(t, st.HandlerPID) // Pdeathsig
}

// waitGone waits until pid no longer runs (gone, or a zombie nobody reaped).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if f := strings.Fields(string(data)); len(f) > 2 && f[2] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("handler %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEnvFlags(t *testing.T) {
	tests := []struct {
		in      string
		wantKey string
		wantVal string
		wantErr bool
	}{
		{"A=1", "A", "1", false},
		{"B=x=y", "B", "x=y", false},
		{"C=", "C", "", false},
		{"novalue", "", "", true},
		{"=v", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			e := envFlags{}
			err := e.Set(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Set(%q): got error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if !tc.wantErr && e[tc.wantKey] != tc.wantVal {
				t.Fatalf("Set(%q): got %v, want %s=%s", tc.in, e, tc.wantKey, tc.wantVal)
			}
		})
	}
}
