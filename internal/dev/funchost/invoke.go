package funchost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// Invocation statuses.
const (
	StatusSucceeded = "Succeeded"
	StatusFailed    = "Failed"
)

// maxInvocations is how many finished invocations the host remembers.
const maxInvocations = 1000

// maxReplyBytes bounds the envelope reply the host reads from the handler.
const maxReplyBytes = 64 << 20

// hostVersion is sent to the handler like the real host's version header.
const hostVersion = "4.0.0-local"

// Invocation is one finished function run, as GET /admin/invocations lists it.
type Invocation struct {
	ID            string    `json:"id"`
	Function      string    `json:"function"`
	Trigger       string    `json:"trigger"`
	StartedAt     time.Time `json:"started_at"`
	DurationMS    int64     `json:"duration_ms"`
	Status        string    `json:"status"`
	HTTPStatus    int       `json:"http_status,omitempty"`
	Error         string    `json:"error,omitempty"`
	DeliveryCount int       `json:"delivery_count,omitempty"`
}

// invoker runs functions on the handler and records their outcome.
type invoker struct {
	proc    *handlerProc
	client  *http.Client
	timeout time.Duration // 0: unbounded
	log     zerolog.Logger

	inflight tracker

	mu      sync.Mutex
	history []Invocation // ring of the last maxInvocations
	next    int
}

func newInvoker(proc *handlerProc, timeout time.Duration, log zerolog.Logger) *invoker {
	tr := &http.Transport{
		Proxy:               nil,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	return &invoker{proc: proc, client: &http.Client{Transport: tr}, timeout: timeout, log: log}
}

// begin counts an invocation in flight; the returned func ends it.
func (iv *invoker) begin() func() { return iv.inflight.begin() }

// tracker counts work in flight. Unlike sync.WaitGroup, begin may be called at any time, even while
// another goroutine waits for zero.
type tracker struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; nil while n is 0
}

func (t *tracker) begin() func() {
	t.mu.Lock()
	if t.n == 0 {
		t.zero = make(chan struct{})
	}
	t.n++
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.n--
			if t.n == 0 {
				close(t.zero)
				t.zero = nil
			}
		})
	}
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// wait returns once nothing is in flight, or with ctx's error.
func (t *tracker) wait(ctx context.Context) error {
	for {
		t.mu.Lock()
		ch := t.zero
		t.mu.Unlock()
		if ch == nil {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// record stores a finished invocation and logs it as the real host does.
func (iv *invoker) record(inv Invocation, log zerolog.Logger) {
	ev := log.Info()
	if inv.Status != StatusSucceeded {
		ev = log.Error().Str("error", inv.Error)
	}
	ev.Int64("duration_ms", inv.DurationMS).Int("http_status", inv.HTTPStatus).
		Msgf("Executed 'Functions.%s' (%s, Id=%s)", inv.Function, inv.Status, inv.ID)
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if len(iv.history) < maxInvocations {
		iv.history = append(iv.history, inv)
		return
	}
	iv.history[iv.next] = inv
	iv.next = (iv.next + 1) % maxInvocations
}

// invocations returns the remembered invocations, oldest first, optionally of one function.
func (iv *invoker) invocations(function string) []Invocation {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	out := make([]Invocation, 0, len(iv.history))
	for i := range iv.history {
		inv := iv.history[(iv.next+i)%len(iv.history)]
		if function == "" || equalFold(inv.Function, function) {
			out = append(out, inv)
		}
	}
	return out
}

// envelopeCall is one non-HTTP invocation.
type envelopeCall struct {
	fn            *Function
	id            string
	trigger       string
	deliveryCount int
	payload       []byte
}

// invokeEnvelope POSTs the envelope to /<FunctionName> and records the outcome. It returns nil only for
// a 2xx reply whose body is a JSON object. A timeout kills and restarts the handler.
func (iv *invoker) invokeEnvelope(ctx context.Context, call envelopeCall) error {
	defer iv.begin()()
	log := iv.log.With().Str("function", call.fn.Name).Str("invocation", call.id).Logger()
	log.Info().Str("trigger", call.trigger).Int("delivery_count", call.deliveryCount).
		Msgf("Executing 'Functions.%s' (Id=%s)", call.fn.Name, call.id)
	inv := Invocation{ID: call.id, Function: call.fn.Name, Trigger: call.trigger, StartedAt: time.Now().UTC(),
		DeliveryCount: call.deliveryCount}
	status, err := iv.post(ctx, call, log)
	inv.DurationMS = time.Since(inv.StartedAt).Milliseconds()
	inv.HTTPStatus = status
	inv.Status = StatusSucceeded
	if err != nil {
		inv.Status, inv.Error = StatusFailed, err.Error()
	}
	iv.record(inv, log)
	return err
}

func (iv *invoker) post(ctx context.Context, call envelopeCall, log zerolog.Logger) (int, error) {
	g, err := iv.proc.current(ctx)
	if err != nil {
		return 0, fmt.Errorf("wait for handler: %w", err)
	}
	if iv.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, iv.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.baseURL+"/"+call.fn.Name, bytes.NewReader(call.payload))
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", call.id)
	req.Header.Set("X-Azure-Functions-HostVersion", hostVersion)
	resp, err := iv.client.Do(req)
	if err != nil {
		return 0, iv.transportError(ctx, g, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return resp.StatusCode, iv.transportError(ctx, g, err)
	}
	logReply(body, log)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("handler answered %d: %s", resp.StatusCode, snippet(body))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return resp.StatusCode, fmt.Errorf("handler reply is not a JSON object: %s", snippet(body))
	}
	return resp.StatusCode, nil
}

// transportError turns a failed exchange into the invocation's error, killing the handler on timeout
// and waiting briefly for a crashed handler to be noticed.
func (iv *invoker) transportError(ctx context.Context, g *procGen, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		iv.proc.kill(g, "function timeout")
		g.awaitExit() // the redelivery must go to the restarted handler
		return fmt.Errorf("timeout value of %s exceeded by function", iv.timeout)
	}
	if g.awaitExit() {
		return fmt.Errorf("handler process exited during invocation: %w", err)
	}
	return fmt.Errorf("call handler: %w", err)
}

// logReply logs the Logs entries of an envelope reply in the invocation's scope.
func logReply(body []byte, log zerolog.Logger) {
	var reply struct {
		Logs []any `json:"Logs"`
	}
	if json.Unmarshal(body, &reply) != nil {
		return
	}
	for _, l := range reply.Logs {
		s, ok := l.(string)
		if !ok {
			b, _ := json.Marshal(l)
			s = string(b)
		}
		log.Info().Str("source", "function").Msg(s)
	}
}

func snippet(b []byte) string {
	const n = 512
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	if len(b) == 0 {
		return "(empty body)"
	}
	return string(b)
}

func newInvocationID() string { return uuid.NewString() }
