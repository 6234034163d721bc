// Package triggers owns the handler's non-HTTP functions: it receives the host's envelope at
// POST /<FunctionName>, decodes it, runs the registered function and answers with the status that tells
// the host what to do. The retry decision is made here, in one place: a Service Bus function answers
// non-2xx only when its error is transient (a redelivery can fix it); permanent failures are recorded by
// the function and acknowledged with 200.
package triggers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/envelope"
)

// Func runs one invocation. Its error decides the reply: nil → 200; an error for which
// backup.IsRetryable is true, or a cancelled context (shutdown) → 500, so the host redelivers (Service
// Bus); any other error → 200 after logging, since retrying cannot fix it.
type Func func(ctx context.Context, req *envelope.Request, log zerolog.Logger) error

// Dispatcher routes envelopes to functions by name.
type Dispatcher struct {
	log   zerolog.Logger
	funcs map[string]Func
}

// NewDispatcher returns an empty dispatcher.
func NewDispatcher(log zerolog.Logger) *Dispatcher {
	return &Dispatcher{log: log, funcs: map[string]Func{}}
}

// Register adds a function; the name must match its folder under functions/.
func (d *Dispatcher) Register(name string, f Func) {
	if _, dup := d.funcs[name]; dup {
		panic(fmt.Sprintf("triggers: function %s registered twice", name))
	}
	d.funcs[name] = f
}

// Names lists the registered functions, sorted.
func (d *Dispatcher) Names() []string {
	out := make([]string, 0, len(d.funcs))
	for n := range d.funcs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Has reports whether name is a registered function.
func (d *Dispatcher) Has(name string) bool { _, ok := d.funcs[name]; return ok }

// ServeHTTP handles POST /{function}.
func (d *Dispatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("function")
	f, ok := d.funcs[name]
	if !ok {
		reply(w, http.StatusNotFound, envelope.Response{Logs: []string{"no function named " + name}})
		return
	}
	invocation := r.Header.Get("X-Azure-Functions-InvocationId")
	log := d.log.With().Str("function", name).Str("invocation", invocation).Logger()
	req, err := envelope.Decode(r.Body)
	if err != nil {
		// The host sent something we cannot read: a redelivery would carry the same bytes.
		log.Error().Err(err).Msg("undecodable envelope acknowledged")
		reply(w, http.StatusOK, envelope.Response{Logs: []string{"undecodable envelope: " + err.Error()}})
		return
	}
	if invocation == "" {
		log = log.With().Str("invocation", req.Sys().RandGuid).Logger()
	}
	start := time.Now()
	err = f(r.Context(), req, log)
	elapsed := time.Since(start)
	switch {
	case err == nil:
		log.Info().Dur("duration", elapsed).Msg("function succeeded")
		reply(w, http.StatusOK, envelope.Response{})
	case backup.IsRetryable(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		log.Warn().Err(err).Dur("duration", elapsed).Msg("function failed transiently; asking the host to retry")
		reply(w, http.StatusInternalServerError, envelope.Response{Logs: []string{"transient failure: " + err.Error()}})
	default:
		log.Error().Err(err).Dur("duration", elapsed).Msg("function failed permanently; acknowledged")
		reply(w, http.StatusOK, envelope.Response{Logs: []string{"permanent failure: " + err.Error()}})
	}
}

func reply(w http.ResponseWriter, status int, resp envelope.Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(resp.Marshal())
}

// Timer adapts a timer function bound as binding.
func Timer(binding string, f func(ctx context.Context, t envelope.Timer, log zerolog.Logger) error) Func {
	return func(ctx context.Context, req *envelope.Request, log zerolog.Logger) error {
		t, err := req.Timer(binding)
		if err != nil {
			return err // permanent: a redelivery carries the same envelope
		}
		if t.IsPastDue {
			log.Warn().Msg("timer is past due; running anyway")
		}
		return f(ctx, t, log)
	}
}

// ServiceBus adapts a Service Bus function bound as binding. Metadata that cannot be read is logged and
// the message still handled: the body is what matters.
func ServiceBus(binding string, f func(ctx context.Context, m envelope.ServiceBusMessage, log zerolog.Logger) error) Func {
	return func(ctx context.Context, req *envelope.Request, log zerolog.Logger) error {
		m, err := req.ServiceBus(binding)
		if m.Body == nil {
			return err
		}
		if err != nil {
			log.Warn().Err(err).Msg("some service bus metadata could not be read")
		}
		log = log.With().Str("message_id", m.MessageID).Int64("delivery", m.DeliveryCount).Logger()
		return f(ctx, m, log)
	}
}
