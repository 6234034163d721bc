// Command testhandler is a custom handler for the funchost tests. It listens on
// FUNCTIONS_CUSTOMHANDLER_PORT, answers GET / with 404, appends one JSON line per event to the file
// named by TESTHANDLER_RECORD, and behaves as message bodies say:
//
//	{"key":"a1"}                      a label copied into the records
//	{"fail":N}                        answer 500 on delivery counts 1..N
//	{"crash":N} or {"crash":true}     exit(3) on delivery counts 1..N (true: 1)
//	{"sleep_ms":N,"sleep_deliveries":K} sleep N ms (only on deliveries 1..K when K > 0)
//	{"barrier":"x","parties":N}       wait (up to 10 s) until N invocations reached barrier x
//	{"stdout":"..","stderr":".."}     print a line to stdout / stderr
//	{"status":N}                      answer with status N
//	{"bad_reply":true}                answer 200 with a body that is not a JSON object
//	{"wait_file":"/path"}             wait (up to 20 s) until the file exists
//
// Invocations without a "msg" binding (timers) take their steering from the environment variable
// TESTHANDLER_STEER_<FunctionName>.
//
// HTTP functions (paths under /api/): /api/env returns the environment, /api/stream hashes a POSTed
// body or streams ?size=N bytes, anything else echoes the request (status from ?status=).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type record struct {
	Event         string              `json:"event"` // start or end
	PID           int                 `json:"pid"`
	Method        string              `json:"method"`
	Path          string              `json:"path"`
	Header        map[string][]string `json:"header,omitempty"`
	Body          string              `json:"body,omitempty"` // raw request body (start only)
	Key           string              `json:"key,omitempty"`
	DeliveryCount int                 `json:"delivery_count,omitempty"`
	Concurrent    int                 `json:"concurrent,omitempty"`
	Status        int                 `json:"status,omitempty"`
	Note          string              `json:"note,omitempty"`
}

type steer struct {
	Key             string          `json:"key"`
	Fail            int             `json:"fail"`
	Crash           json.RawMessage `json:"crash"`
	SleepMS         int             `json:"sleep_ms"`
	SleepDeliveries int             `json:"sleep_deliveries"`
	Barrier         string          `json:"barrier"`
	Parties         int             `json:"parties"`
	Stdout          string          `json:"stdout"`
	Stderr          string          `json:"stderr"`
	Status          int             `json:"status"`
	BadReply        bool            `json:"bad_reply"`
	WaitFile        string          `json:"wait_file"`
}

var (
	mu       sync.Mutex
	inflight = map[string]int{}
	barriers = map[string]*barrier{}
)

type barrier struct {
	n    int
	done chan struct{}
}

func main() {
	port := os.Getenv("FUNCTIONS_CUSTOMHANDLER_PORT")
	fmt.Println("testhandler stdout: listening on " + port)
	fmt.Fprintln(os.Stderr, "testhandler stderr: started")
	http.HandleFunc("/", serve)
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
}

func write(r record) {
	r.PID = os.Getpid()
	b, _ := json.Marshal(r)
	mu.Lock()
	defer mu.Unlock()
	f, err := os.OpenFile(os.Getenv("TESTHANDLER_RECORD"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "record:", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
}

func serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/" && r.Method == http.MethodGet:
		http.NotFound(w, r)
	case strings.HasPrefix(r.URL.Path, "/api/stream"):
		stream(w, r)
	case strings.HasPrefix(r.URL.Path, "/api/env"):
		env := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(env)
	case strings.HasPrefix(r.URL.Path, "/api/"):
		echo(w, r)
	default:
		envelope(w, r)
	}
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	write(record{Event: "start", Method: r.Method, Path: r.URL.Path, Header: r.Header, Body: string(body)})
	status := http.StatusOK
	if s := r.URL.Query().Get("status"); s != "" {
		status, _ = strconv.Atoi(s)
	}
	if ms, _ := strconv.Atoi(r.URL.Query().Get("sleep_ms")); ms > 0 {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Handler", "testhandler")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"method": r.Method, "path": r.URL.Path, "raw_query": r.URL.RawQuery, "header": r.Header,
		"body": string(body), "host": r.Host,
	})
}

func stream(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"size": n, "sha256": hex.EncodeToString(h.Sum(nil))})
		return
	}
	size, _ := strconv.Atoi(r.URL.Query().Get("size"))
	w.Header().Set("Content-Type", "application/octet-stream")
	buf := make([]byte, 32<<10)
	for off := 0; off < size; {
		n := min(len(buf), size-off)
		for i := range n {
			buf[i] = byte((off + i) % 251)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return
		}
		off += n
	}
}

// decodeText unwraps JSON text nested in JSON strings, as a tolerant handler must.
func decodeText(raw []byte) []byte {
	for {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return raw
		}
		raw = []byte(s)
	}
}

func envelope(w http.ResponseWriter, r *http.Request) {
	fn := strings.TrimPrefix(r.URL.Path, "/")
	raw, _ := io.ReadAll(r.Body)
	var env struct {
		Data     map[string]json.RawMessage `json:"Data"`
		Metadata map[string]json.RawMessage `json:"Metadata"`
	}
	_ = json.Unmarshal(raw, &env)
	var st steer
	var body []byte
	if m, ok := env.Data["msg"]; ok {
		body = decodeText(m)
		_ = json.Unmarshal(body, &st)
	} else if s := os.Getenv("TESTHANDLER_STEER_" + fn); s != "" {
		_ = json.Unmarshal([]byte(s), &st)
	}
	dc, _ := strconv.Atoi(string(decodeText(env.Metadata["DeliveryCount"])))
	mu.Lock()
	inflight[fn]++
	conc := inflight[fn]
	mu.Unlock()
	defer func() {
		mu.Lock()
		inflight[fn]--
		mu.Unlock()
	}()
	write(record{Event: "start", Method: r.Method, Path: r.URL.Path, Header: r.Header, Body: string(raw),
		Key: st.Key, DeliveryCount: dc, Concurrent: conc})
	status, note := behave(st, dc)
	write(record{Event: "end", Path: r.URL.Path, Key: st.Key, DeliveryCount: dc, Status: status, Note: note})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if st.BadReply {
		_, _ = w.Write([]byte("null"))
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"Outputs": map[string]any{},
		"Logs": []string{fmt.Sprintf("handled %s key=%s delivery=%d", fn, st.Key, dc)}, "ReturnValue": nil})
}

func behave(st steer, dc int) (int, string) {
	if st.Stdout != "" {
		fmt.Println(st.Stdout)
	}
	if st.Stderr != "" {
		fmt.Fprintln(os.Stderr, st.Stderr)
	}
	crash := 0
	if string(st.Crash) == "true" {
		crash = 1
	} else if len(st.Crash) > 0 {
		crash, _ = strconv.Atoi(string(st.Crash))
	}
	if dc >= 1 && dc <= crash {
		os.Exit(3)
	}
	var note string
	if st.WaitFile != "" {
		note = "wait_file timeout"
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(st.WaitFile); err == nil {
				note = "wait_file ok"
				break
			}
		}
	}
	if st.Barrier != "" {
		note = waitBarrier(st.Barrier, st.Parties)
	}
	if st.SleepMS > 0 && (st.SleepDeliveries == 0 || dc <= st.SleepDeliveries) {
		time.Sleep(time.Duration(st.SleepMS) * time.Millisecond)
	}
	switch {
	case dc >= 1 && dc <= st.Fail:
		return http.StatusInternalServerError, note
	case st.Status != 0:
		return st.Status, note
	}
	return http.StatusOK, note
}

func waitBarrier(name string, parties int) string {
	mu.Lock()
	b := barriers[name]
	if b == nil {
		b = &barrier{done: make(chan struct{})}
		barriers[name] = b
	}
	b.n++
	if b.n == parties {
		close(b.done)
	}
	mu.Unlock()
	select {
	case <-b.done:
		return "barrier ok"
	case <-time.After(10 * time.Second):
		return "barrier timeout"
	}
}
