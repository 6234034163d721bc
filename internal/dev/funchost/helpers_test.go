package funchost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// waitLimit bounds every wait in these tests; it only prevents hangs, nothing asserts on timing.
const waitLimit = 30 * time.Second

var (
	buildOnce  sync.Once
	handlerBin string
	buildErr   error
	buildDir   string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// testHandler compiles testdata/testhandler once per test binary and returns its path.
func testHandler(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "funchost-testhandler-")
		if buildErr != nil {
			return
		}
		handlerBin = filepath.Join(buildDir, "testhandler")
		out, err := exec.Command("go", "build", "-o", handlerBin, "./testdata/testhandler").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build testhandler: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return handlerBin
}

// appSpec describes an app root for a test.
type appSpec struct {
	hostJSON  string            // default: forwarding on, executable "handler"
	functions map[string]string // name -> function.json
	settings  map[string]string // local.settings.json Values; nil: no file
	flat      bool              // function folders directly in the root (the deployed layout)
}

const defaultHostJSON = `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler"},
 "enableForwardingHttpRequest":true}}`

// writeApp creates the app root with the test handler copied in as "handler".
func writeApp(t *testing.T, spec appSpec) string {
	t.Helper()
	root := t.TempDir()
	if spec.hostJSON == "" {
		spec.hostJSON = defaultHostJSON
	}
	writeFile(t, filepath.Join(root, "host.json"), spec.hostJSON)
	for name, fj := range spec.functions {
		dir := filepath.Join(root, "functions", name)
		if spec.flat {
			dir = filepath.Join(root, name)
		}
		writeFile(t, filepath.Join(dir, "function.json"), fj)
	}
	if spec.settings != nil {
		b, err := json.Marshal(map[string]any{"IsEncrypted": false, "Values": spec.settings})
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, "local.settings.json"), string(b))
	}
	bin := testHandler(t)
	dst := filepath.Join(root, "handler")
	if err := os.Link(bin, dst); err != nil {
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dst, string(data))
		if err := os.Chmod(dst, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Function.json snippets.
func httpFn(route string, methods ...string) string {
	b := map[string]any{"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "anonymous"}
	if route != "" {
		b["route"] = route
	}
	if len(methods) > 0 {
		b["methods"] = methods
	}
	return mustJSON(map[string]any{"bindings": []any{b, map[string]any{"type": "http", "direction": "out", "name": "res"}}})
}

func queueFn(queue string, sessions bool) string {
	return mustJSON(map[string]any{"bindings": []any{map[string]any{"type": "serviceBusTrigger", "direction": "in",
		"name": "msg", "queueName": queue, "connection": "ServiceBus", "isSessionsEnabled": sessions}}})
}

func subscriptionFn(topic, sub string) string {
	return mustJSON(map[string]any{"bindings": []any{map[string]any{"type": "serviceBusTrigger", "direction": "in",
		"name": "msg", "topicName": topic, "subscriptionName": sub, "connection": "ServiceBus"}}})
}

func timerFn(schedule string, extra map[string]any) string {
	b := map[string]any{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": schedule}
	for k, v := range extra {
		b[k] = v
	}
	return mustJSON(map[string]any{"bindings": []any{b}})
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// syncBuffer collects log lines safely across goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// lines returns the JSON log lines written so far.
func (s *syncBuffer) lines() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// testHost is a started host with its record file and logs.
type testHost struct {
	*Host
	record string
	logs   *syncBuffer
}

// startHost starts a host on root; opts may set anything but AppRoot, Listen and Logger.
func startHost(t *testing.T, root string, opts Options) *testHost {
	t.Helper()
	th := &testHost{record: filepath.Join(t.TempDir(), "records.jsonl"), logs: &syncBuffer{}}
	opts.AppRoot, opts.Listen = root, "127.0.0.1:0"
	opts.Logger = zerolog.New(io.MultiWriter(th.logs, zerolog.NewTestWriter(t)))
	if opts.Env == nil {
		opts.Env = map[string]string{}
	}
	opts.Env["TESTHANDLER_RECORD"] = th.record
	h, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	th.Host = h
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if h.Status().State == "Running" {
			if err := h.Stop(ctx); err != nil {
				t.Errorf("Stop: %v", err)
			}
		}
	})
	return th
}

// record mirrors testhandler's record.
type record struct {
	Event         string              `json:"event"`
	PID           int                 `json:"pid"`
	Method        string              `json:"method"`
	Path          string              `json:"path"`
	Header        map[string][]string `json:"header"`
	Body          string              `json:"body"`
	Key           string              `json:"key"`
	DeliveryCount int                 `json:"delivery_count"`
	Concurrent    int                 `json:"concurrent"`
	Status        int                 `json:"status"`
	Note          string              `json:"note"`
}

func (th *testHost) records(t *testing.T) []record {
	t.Helper()
	data, err := os.ReadFile(th.record)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []record
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var r record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("record line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// waitRecords polls the records until ok accepts them.
func (th *testHost) waitRecords(t *testing.T, what string, ok func([]record) bool) []record {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		rs := th.records(t)
		if ok(rs) {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; records: %+v", what, rs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// starts returns the start records of a function path, in order.
func starts(rs []record, path string) []record {
	var out []record
	for _, r := range rs {
		if r.Event == "start" && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func (th *testHost) waitIdle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := th.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until true.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (th *testHost) publish(t *testing.T, entity string, msgs ...PublishMessage) PublishResult {
	t.Helper()
	res, err := th.Publish(entity, msgs)
	if err != nil {
		t.Fatalf("Publish(%s): %v", entity, err)
	}
	return res
}

func (th *testHost) messages(t *testing.T, entity string) EntityMessages {
	t.Helper()
	resp, err := http.Get(th.URL() + "/admin/servicebus/" + entity + "/messages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET messages of %s: got status %d, want 200", entity, resp.StatusCode)
	}
	var em EntityMessages
	if err := json.NewDecoder(resp.Body).Decode(&em); err != nil {
		t.Fatal(err)
	}
	return em
}

// fakeClock is a Clock moved by hand.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeTimer
}

type fakeTimer struct {
	c        *fakeClock
	at       time.Time
	ch       chan time.Time
	stopped  bool
	finished bool
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &fakeTimer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		ft.finished = true
		ft.ch <- c.now
		return ft
	}
	c.waiters = append(c.waiters, ft)
	return ft
}

func (ft *fakeTimer) C() <-chan time.Time { return ft.ch }

func (ft *fakeTimer) Stop() bool {
	ft.c.mu.Lock()
	defer ft.c.mu.Unlock()
	was := !ft.stopped && !ft.finished
	ft.stopped = true
	return was
}

// set moves the clock to t, firing every timer due by then.
func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		switch {
		case w.stopped:
		case !w.at.After(t):
			w.finished = true
			w.ch <- t
		default:
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// waitTimer waits until a live timer is set for exactly at.
func (c *fakeClock) waitTimer(t *testing.T, at time.Time) {
	t.Helper()
	waitFor(t, "a timer at "+at.Format(time.RFC3339), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, w := range c.waiters {
			if !w.stopped && w.at.Equal(at) {
				return true
			}
		}
		return false
	})
}
