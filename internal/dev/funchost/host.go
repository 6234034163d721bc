// Package funchost is the project's local Azure Functions host. It owns everything `func start` would do
// for the custom handler, reproduced from docs/functions-host.md: reading host.json, function.json and
// local.settings.json; starting, probing, logging and restarting the handler process; forwarding HTTP
// requests; firing timers on NCRONTAB schedules; and an in-memory Service Bus with peek-lock
// redelivery, DeliveryCount, dead-lettering, sessions, duplicate detection and scheduled messages.
// `make run` and the end-to-end tests use it; internal/cmd/funchost is its command line.
package funchost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// Defaults of Options.
const (
	DefaultListen          = "127.0.0.1:7071"
	DefaultShutdownTimeout = 30 * time.Second
	idleHorizon            = time.Second
)

// ErrNoFunction is returned by Invoke for an unknown function name.
var ErrNoFunction = errors.New("no such function")

// Options configure a Host.
type Options struct {
	// AppRoot holds host.json and the function folders.
	AppRoot string
	// Listen is the address of the host's HTTP endpoint, "127.0.0.1:0" for a free port.
	Listen string
	// Env is added to the handler's environment after local.settings.json Values, and is consulted
	// first when resolving %SETTING% names.
	Env map[string]string
	// Logger receives the host's and the handler's logs; the zero value discards them.
	Logger zerolog.Logger
	// MaxDeliveryCount is the queues' maxDeliveryCount (default 10).
	MaxDeliveryCount int
	// DuplicateDetectionWindow is how long a MessageId is remembered (default 10 minutes).
	DuplicateDetectionWindow time.Duration
	// Clock drives timers, scheduled messages, duplicate detection and lock expiry (default real time).
	Clock Clock
	// ShutdownTimeout bounds how long Stop waits for in-flight invocations (default 30 s).
	ShutdownTimeout time.Duration
}

// Host is a running local Functions host. Create it with New, then Start and Stop it once.
type Host struct {
	opts   Options
	app    *App
	log    zerolog.Logger
	clock  Clock
	broker *broker
	front  *httpFront
	proc   *handlerProc
	inv    *invoker
	timers map[string]*timerRunner

	ln     net.Listener
	srv    *http.Server
	url    string
	runCtx context.Context
	cancel context.CancelFunc
	stop   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	state string
}

// New loads the app and prepares a host; it starts nothing.
func New(opts Options) (*Host, error) {
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.MaxDeliveryCount <= 0 {
		opts.MaxDeliveryCount = DefaultMaxDeliveryCount
	}
	if opts.DuplicateDetectionWindow <= 0 {
		opts.DuplicateDetectionWindow = DefaultDuplicateDetectionWindow
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.AppRoot == "" {
		opts.AppRoot = "."
	}
	app, err := load(opts.AppRoot, opts.Env)
	if err != nil {
		return nil, err
	}
	h := &Host{opts: opts, app: app, log: opts.Logger, clock: opts.Clock, timers: map[string]*timerRunner{},
		stop: make(chan struct{}), state: "Created"}
	h.broker = newBroker(opts.Clock, opts.DuplicateDetectionWindow, opts.MaxDeliveryCount, h.log.With().Str("component", "servicebus").Logger())
	h.proc = newHandlerProc(app, opts.Env, "", h.log)
	h.inv = newInvoker(h.proc, app.Host.FunctionTimeout, h.log)
	if h.front, err = newHTTPFront(app, h.inv, h.log); err != nil {
		return nil, err
	}
	for _, fn := range app.Functions {
		switch fn.Trigger {
		case TriggerServiceBus:
			if err := h.broker.addConsumer(fn, app.Host); err != nil {
				return nil, err
			}
		case TriggerTimer:
			h.timers[fn.Name] = newTimerRunner(fn, h.inv, opts.Clock, h.log)
		}
	}
	return h, nil
}

// App returns the loaded app.
func (h *Host) App() *App { return h.app }

// URL returns the host's base URL, such as http://127.0.0.1:7071, once started.
func (h *Host) URL() string { return h.url }

// Start listens, starts the handler and waits for it to be ready, then starts timers and Service Bus
// delivery. On error nothing keeps running.
func (h *Host) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", h.opts.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", h.opts.Listen, err)
	}
	h.ln, h.url = ln, "http://"+ln.Addr().String()
	h.proc.url = h.url
	h.setState("Starting")
	h.srv = &http.Server{Handler: h.routes(), ReadHeaderTimeout: 30 * time.Second}
	h.wg.Go(func() { _ = h.srv.Serve(ln) })
	for _, fn := range h.app.Functions {
		if fn.Trigger == TriggerUnsupported {
			h.log.Warn().Str("function", fn.Name).Str("trigger", fn.TriggerBinding.Type).
				Msg("trigger type not supported by the local host; function will not run")
		}
	}
	if err := h.proc.start(ctx); err != nil {
		_ = h.srv.Close()
		h.wg.Wait()
		h.setState("Stopped")
		return fmt.Errorf("start handler: %w", err)
	}
	h.runCtx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
	h.wg.Go(func() { h.broker.runScheduler(h.stop) })
	lockFor := func() Timer { return h.clock.NewTimer(h.app.Host.MaxAutoLockRenewalDuration) }
	for _, q := range h.broker.consumers {
		h.wg.Go(func() { h.broker.dispatch(h.runCtx, q, h.inv, lockFor, h.stop) })
		q.notify()
	}
	for _, t := range h.timers {
		h.wg.Go(func() { t.loop(h.runCtx, h.stop) })
	}
	h.setState("Running")
	h.log.Info().Str("url", h.url).Int("functions", len(h.app.Functions)).Msg("local functions host running")
	return nil
}

// Stop stops timers and delivery, stops accepting requests, waits for in-flight invocations (bounded
// by ctx and Options.ShutdownTimeout), then stops the handler: SIGTERM, then SIGKILL after 10 s.
func (h *Host) Stop(ctx context.Context) error {
	h.mu.Lock()
	if h.state != "Running" {
		h.mu.Unlock()
		return fmt.Errorf("stop: host is %s", h.state)
	}
	h.state = "Stopping"
	h.mu.Unlock()
	close(h.stop)
	waitCtx, cancel := context.WithTimeout(ctx, h.opts.ShutdownTimeout)
	defer cancel()
	err := h.srv.Shutdown(waitCtx)
	if werr := h.inv.inflight.wait(waitCtx); werr != nil {
		h.log.Warn().Int("in_flight", h.inv.inflight.count()).Msg("stop: abandoning in-flight invocations")
	}
	h.cancel()
	if perr := h.proc.stop(ctx); err == nil {
		err = perr
	}
	h.wg.Wait()
	h.setState("Stopped")
	h.log.Info().Msg("local functions host stopped")
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

// Run starts a host and stops it when ctx is done: the entry point for the CLI and the dev runner.
func Run(ctx context.Context, opts Options) error {
	h, err := New(opts)
	if err != nil {
		return err
	}
	if err := h.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.opts.ShutdownTimeout+stopGrace+5*time.Second)
	defer cancel()
	return h.Stop(stopCtx)
}

func (h *Host) setState(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state = s
}

// Status returns the host state, the handler's pid (0 while it restarts) and its restart count.
func (h *Host) Status() HostStatus {
	h.mu.Lock()
	state := h.state
	h.mu.Unlock()
	pid, restarts := h.proc.status()
	if state == "Running" && pid == 0 {
		state = "Restarting"
	}
	return HostStatus{State: state, HandlerPID: pid, Restarts: restarts}
}

// Publish sends messages to a queue or topic, as POST /admin/servicebus/{entity}/messages does.
func (h *Host) Publish(entity string, msgs []PublishMessage) (PublishResult, error) {
	return h.broker.publish(entity, msgs)
}

// Messages returns the inspection view of a queue, a topic or "<topic>/subscriptions/<name>"; false
// when no such entity exists.
func (h *Host) Messages(entity string) (EntityMessages, bool) {
	return h.broker.inspect(entity)
}

// Invocations returns the last finished invocations (up to 1,000), oldest first; function filters by
// name when not empty.
func (h *Host) Invocations(function string) []Invocation {
	return h.inv.invocations(function)
}

// Invoke runs a non-HTTP function once in the background, as Azure's admin API does: a timer with
// IsPastDue false, a Service Bus function with input as the message body (delivered once, no retry).
func (h *Host) Invoke(name, input string) error {
	fn := h.app.Function(name)
	if fn == nil {
		return fmt.Errorf("%w: %s", ErrNoFunction, name)
	}
	// h.mu is held while the run is registered, so Stop cannot begin waiting before it.
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != "Running" {
		return fmt.Errorf("invoke %s: host is not running", fn.Name)
	}
	switch fn.Trigger {
	case TriggerTimer:
		t := h.timers[fn.Name]
		h.wg.Go(func() { t.fire(h.runCtx, time.Time{}, false) })
	case TriggerServiceBus:
		now := h.clock.Now()
		m := &message{id: uuid.NewString(), body: input, enqueued: now, deliveryCount: 1, lockToken: uuid.NewString()}
		call := envelopeCall{fn: fn, id: newInvocationID(), trigger: "serviceBusTrigger", deliveryCount: 1,
			payload: serviceBusEnvelope(fn, m, fn.Entity(), now)}
		h.wg.Go(func() { _ = h.inv.invokeEnvelope(h.runCtx, call) })
	case TriggerHTTP:
		return fmt.Errorf("invoke %s: HTTP functions are called through their route", fn.Name)
	default:
		return fmt.Errorf("invoke %s: trigger %s is not supported by the local host", fn.Name, fn.TriggerBinding.Type)
	}
	return nil
}

// WaitIdle waits until every consumed queue is empty, nothing is in flight and no scheduled message is
// due within a second.
func (h *Host) WaitIdle(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if h.broker.idle(idleHorizon) && h.inv.inflight.count() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait idle: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
