package funchost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func httpApp(t *testing.T) string {
	t.Helper()
	return writeApp(t, appSpec{
		functions: map[string]string{
			"Echo":   httpFn("echo/{*rest}"),
			"Items":  httpFn("items/{id:int}/{name?}", "get"),
			"Hello":  httpFn(""),
			"Env":    httpFn("env"),
			"Stream": httpFn("stream"),
			"Mixed": mustJSON(map[string]any{"bindings": []any{
				map[string]any{"type": "httpTrigger", "direction": "in", "name": "req", "route": "mixed"},
				map[string]any{"type": "http", "direction": "out", "name": "res"},
				map[string]any{"type": "serviceBus", "direction": "out", "name": "out", "queueName": "x"}}}),
		},
		settings: map[string]string{"FROM_SETTINGS": "values", "OVERRIDDEN": "values", "FUNCTIONS_WORKER_RUNTIME": "custom"},
	})
}

func TestHostStartEnvAndLogs(t *testing.T) {
	t.Setenv("FUNCHOST_FROM_PROCESS", "process")
	root := httpApp(t)
	th := startHost(t, root, Options{Env: map[string]string{"OVERRIDDEN": "extra", "EXTRA": "x"}})

	st := th.Status()
	if st.State != "Running" || st.HandlerPID <= 0 || st.Restarts != 0 {
		t.Fatalf("Status: got %+v, want Running with a pid and no restarts", st)
	}
	resp, err := http.Get(th.URL() + "/api/env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	port := env["FUNCTIONS_CUSTOMHANDLER_PORT"]
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatalf("FUNCTIONS_CUSTOMHANDLER_PORT: got %q, want a port", port)
	}
	want := map[string]string{
		"FUNCTIONS_HTTPWORKER_PORT": port,
		"FUNCTIONS_WORKER_RUNTIME":  "custom",
		"AzureWebJobsScriptRoot":    th.App().Root,
		"LOCAL_SERVICEBUS_URL":      th.URL(),
		"FROM_SETTINGS":             "values",
		"OVERRIDDEN":                "extra",
		"EXTRA":                     "x",
		"FUNCHOST_FROM_PROCESS":     "process",
	}
	for k, w := range want {
		if env[k] != w {
			t.Errorf("handler env %s: got %q, want %q", k, env[k], w)
		}
	}

	// The handler printed one line on each stream at start-up.
	var sawOut, sawErr bool
	for _, l := range th.logs.lines() {
		if l["source"] != "handler" {
			continue
		}
		msg, _ := l["message"].(string)
		switch {
		case strings.Contains(msg, "testhandler stdout: listening"):
			sawOut = true
			if l["level"] != "info" {
				t.Errorf("stdout line: got level %v, want info", l["level"])
			}
		case strings.Contains(msg, "testhandler stderr: started"):
			sawErr = true
			if l["level"] != "error" {
				t.Errorf("stderr line: got level %v, want error", l["level"])
			}
		}
	}
	if !sawOut || !sawErr {
		t.Errorf("handler output logged: got stdout %v stderr %v, want both", sawOut, sawErr)
	}
}

func TestHostLocalServiceBusURLNotOverridden(t *testing.T) {
	th := startHost(t, httpApp(t), Options{Env: map[string]string{"LOCAL_SERVICEBUS_URL": "http://elsewhere"}})
	resp, err := http.Get(th.URL() + "/api/env")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatal(err)
	}
	if got := env["LOCAL_SERVICEBUS_URL"]; got != "http://elsewhere" {
		t.Fatalf("LOCAL_SERVICEBUS_URL: got %q, want the value already set", got)
	}
}

func TestHostStartFailsWithoutHandler(t *testing.T) {
	root := writeApp(t, appSpec{hostJSON: `{"customHandler":{"description":{"defaultExecutablePath":"missing-binary"}}}`})
	h, err := New(Options{AppRoot: root, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = h.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "missing-binary") {
		t.Fatalf("Start: got %v, want an error naming the executable", err)
	}
	if st := h.Status().State; st != "Stopped" {
		t.Fatalf("state after a failed start: got %s, want Stopped", st)
	}
}

type echoReply struct {
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	RawQuery string              `json:"raw_query"`
	Header   map[string][]string `json:"header"`
	Body     string              `json:"body"`
}

func TestHTTPForwarding(t *testing.T) {
	th := startHost(t, httpApp(t), Options{})
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantEcho   bool // the handler answered with its echo
	}{
		{"catch-all with query", "PUT", "/api/echo/a/b%20c?x=1&y=two", "payload", 200, true},
		{"catch-all empty", "GET", "/api/echo", "", 200, true},
		{"status honoured", "POST", "/api/echo/created?status=201", `{"k":1}`, 201, true},
		{"handler error status honoured", "GET", "/api/echo/x?status=503", "", 503, true},
		{"int constraint and optional", "GET", "/api/items/42", "", 200, true},
		{"optional given", "GET", "/api/items/42/widget", "", 200, true},
		{"constraint fails", "GET", "/api/items/abc", "", 404, false},
		{"method filtered", "POST", "/api/items/42", "x", 404, false},
		{"no route means function name", "GET", "/api/hello", "", 200, true},
		{"missing prefix", "GET", "/hello", "", 404, false},
		{"unknown path", "GET", "/api/nothing/here", "", 404, false},
		{"other binding shapes are not forwarded", "GET", "/api/mixed", "", 501, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, th.URL()+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Custom", "yes")
			req.Header.Add("X-Multi", "1")
			req.Header.Add("X-Multi", "2")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (%s)", resp.StatusCode, tc.wantStatus, data)
			}
			if !tc.wantEcho {
				if resp.Header.Get("X-Handler") != "" {
					t.Fatalf("response came from the handler, want the host's own answer")
				}
				return
			}
			if resp.Header.Get("X-Handler") != "testhandler" || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("response headers: got %v, want the handler's", resp.Header)
			}
			if resp.Header.Get("X-Azure-Functions-InvocationId") == "" {
				t.Errorf("response: missing X-Azure-Functions-InvocationId")
			}
			var e echoReply
			if err := json.Unmarshal(data, &e); err != nil {
				t.Fatalf("echo: %v (%s)", err, data)
			}
			wantPath, wantQuery, _ := strings.Cut(tc.path, "?")
			wantPath = strings.ReplaceAll(wantPath, "%20", " ")
			if e.Method != tc.method || e.Path != wantPath || e.RawQuery != wantQuery || e.Body != tc.body {
				t.Errorf("forwarded request: got %s %s ?%s body %q, want %s %s ?%s body %q",
					e.Method, e.Path, e.RawQuery, e.Body, tc.method, wantPath, wantQuery, tc.body)
			}
			h := http.Header(e.Header)
			if h.Get("X-Custom") != "yes" || strings.Join(h.Values("X-Multi"), ",") != "1,2" {
				t.Errorf("forwarded headers: got %v", e.Header)
			}
			if h.Get("X-Azure-Functions-InvocationId") != resp.Header.Get("X-Azure-Functions-InvocationId") {
				t.Errorf("invocation id: handler saw %q, caller got %q", h.Get("X-Azure-Functions-InvocationId"),
					resp.Header.Get("X-Azure-Functions-InvocationId"))
			}
		})
	}
	// The caller may read the whole response before the host records the invocation.
	waitFor(t, "4 Echo invocations", func() bool { return len(th.Invocations("Echo")) == 4 })
	invs := th.Invocations("Echo")
	if last := invs[len(invs)-1]; last.Status != StatusSucceeded || last.HTTPStatus != 503 || last.Trigger != "httpTrigger" {
		t.Errorf("last Echo invocation: got %+v, want Succeeded with http_status 503", last)
	}
}

func TestHTTPStreamingBothWays(t *testing.T) {
	th := startHost(t, httpApp(t), Options{})
	const size = 24 << 20
	pr, pw := io.Pipe()
	want := sha256.New()
	go func() {
		buf := make([]byte, 1<<20)
		for i := range size / len(buf) {
			for j := range buf {
				buf[j] = byte(i + j)
			}
			want.Write(buf)
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
		pw.Close()
	}()
	resp, err := http.Post(th.URL()+"/api/stream", "application/octet-stream", pr) // chunked, unknown length
	if err != nil {
		t.Fatal(err)
	}
	var up struct {
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	}
	err = json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if up.Size != size || up.SHA256 != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("upload: handler got %d bytes sha %s, want %d bytes sha %x", up.Size, up.SHA256, size, want.Sum(nil))
	}

	resp, err = http.Get(th.URL() + "/api/stream?size=" + strconv.Itoa(size+7))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var n int
	buf := make([]byte, 1<<16)
	for {
		k, err := resp.Body.Read(buf)
		for i := range k {
			if buf[i] != byte((n+i)%251) {
				t.Fatalf("download byte %d: got %d, want %d", n+i, buf[i], (n+i)%251)
			}
		}
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != size+7 {
		t.Fatalf("download: got %d bytes, want %d", n, size+7)
	}
}

func TestAdminEndpoints(t *testing.T) {
	th := startHost(t, httpApp(t), Options{})
	resp, err := http.Get(th.URL() + "/api/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, "the Hello invocation", func() bool { return len(th.Invocations("Hello")) == 1 })
	getJSON := func(path string, v any) int {
		t.Helper()
		resp, err := http.Get(th.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if v != nil {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
		return resp.StatusCode
	}
	var st HostStatus
	if code := getJSON("/admin/host/status", &st); code != 200 || st.State != "Running" || st.HandlerPID == 0 {
		t.Errorf("GET /admin/host/status: got %d %+v", code, st)
	}
	var invs []Invocation
	if code := getJSON("/admin/invocations?function=hello", &invs); code != 200 || len(invs) != 1 || invs[0].Function != "Hello" {
		t.Errorf("GET /admin/invocations?function=hello: got %d %+v, want one Hello invocation", code, invs)
	}
	if code := getJSON("/admin/servicebus/nothing/messages", nil); code != 404 {
		t.Errorf("GET messages of an unknown entity: got %d, want 404", code)
	}
	tests := []struct {
		name, path, body string
		wantStatus       int
		wantBody         string
	}{
		{"publish", "/admin/servicebus/backup-events/messages", `[{"body":"{\"a\":1}","message_id":"m1"},{"body":"x","message_id":"m1"}]`, 202, `{"accepted":1,"duplicates":1}`},
		{"publish malformed", "/admin/servicebus/backup-events/messages", `{"body":`, 400, ""},
		{"publish object instead of array", "/admin/servicebus/backup-events/messages", `{"body":"x"}`, 400, ""},
		{"publish bad time", "/admin/servicebus/q/messages", `[{"body":"x","scheduled_enqueue_time":"soon"}]`, 400, ""},
		{"invoke unknown", "/admin/functions/Nope", `{"input":""}`, 404, ""},
		{"invoke http function", "/admin/functions/Hello", ``, 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(th.URL()+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (%s)", resp.StatusCode, tc.wantStatus, data)
			}
			if tc.wantBody != "" && strings.TrimSpace(string(data)) != tc.wantBody {
				t.Fatalf("body: got %s, want %s", data, tc.wantBody)
			}
		})
	}
	em := th.messages(t, "backup-events")
	if len(em.Published) != 1 || em.Published[0].Body != `{"a":1}` || em.Published[0].MessageID != "m1" || len(em.Active) != 1 {
		t.Fatalf("retained backup-events: got %+v, want the one accepted message", em)
	}
}

func TestStopWaitsForInFlight(t *testing.T) {
	root := writeApp(t, appSpec{functions: map[string]string{"Work": queueFn("work", false)}})
	th := startHost(t, root, Options{})
	th.publish(t, "work", PublishMessage{Body: `{"key":"slow","sleep_ms":300}`})
	th.waitRecords(t, "the slow message to start", func(rs []record) bool { return len(starts(rs, "/Work")) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := th.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	invs := th.Invocations("Work")
	if len(invs) != 1 || invs[0].Status != StatusSucceeded {
		t.Fatalf("invocations after Stop: got %+v, want the in-flight one finished and Succeeded", invs)
	}
	if st := th.Status(); st.State != "Stopped" || st.HandlerPID != 0 {
		t.Fatalf("status after Stop: got %+v, want Stopped without handler", st)
	}
	if err := th.Stop(ctx); err == nil {
		t.Fatalf("second Stop: got nil error, want one")
	}
	resp, err := http.Post(th.URL()+"/admin/servicebus/work/messages", "application/json", bytes.NewReader([]byte(`[]`)))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("request after Stop: got status %d, want connection refused", resp.StatusCode)
	}
}

func TestHTTPFunctionTimeoutRestarts(t *testing.T) {
	root := writeApp(t, appSpec{
		hostJSON: `{"functionTimeout":"00:00:01","customHandler":{"description":{"defaultExecutablePath":"handler"},
 "enableForwardingHttpRequest":true}}`,
		functions: map[string]string{"Echo": httpFn("echo/{*rest}")},
	})
	th := startHost(t, root, Options{})
	pid := th.Status().HandlerPID
	resp, err := http.Get(th.URL() + "/api/echo/slow?sleep_ms=600000")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(data), "timeout") {
		t.Fatalf("slow request: got %d %q, want 500 mentioning the timeout", resp.StatusCode, data)
	}
	resp, err = http.Get(th.URL() + "/api/echo/fast")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	st := th.Status()
	if resp.StatusCode != http.StatusOK || st.Restarts != 1 || st.HandlerPID == pid {
		t.Fatalf("after the timeout: got status %d and %+v, want 200 from a restarted handler", resp.StatusCode, st)
	}
	waitFor(t, "2 Echo invocations", func() bool { return len(th.Invocations("Echo")) == 2 })
	invs := th.Invocations("Echo")
	if len(invs) != 2 || invs[0].Status != StatusFailed || invs[1].Status != StatusSucceeded {
		t.Fatalf("invocations: got %+v, want Failed then Succeeded", invs)
	}
}

func TestInvokeServiceBusFunctionOnDemand(t *testing.T) {
	root := writeApp(t, appSpec{functions: map[string]string{"Work": queueFn("work", false)}})
	th := startHost(t, root, Options{})
	resp, err := http.Post(th.URL()+"/admin/functions/Work", "application/json", strings.NewReader(`{"input":"{\"key\":\"manual\"}"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /admin/functions/Work: got %d, want 202", resp.StatusCode)
	}
	rs := th.waitRecords(t, "the on-demand delivery", func(rs []record) bool { return len(starts(rs, "/Work")) == 1 })
	if r := starts(rs, "/Work")[0]; r.Key != "manual" || r.DeliveryCount != 1 {
		t.Fatalf("on-demand run: got key %q delivery %d, want manual on delivery 1", r.Key, r.DeliveryCount)
	}
}
