package triggers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/envelope"
)

func serve(t *testing.T, d *Dispatcher, fn, body string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("POST /{function}", d)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/"+fn, strings.NewReader(body)))
	var obj map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &obj); err != nil || obj == nil {
		t.Fatalf("reply %q is not a JSON object", rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	return rec
}

const sbEnvelope = `{"Data":{"msg":"\"{\\\"a\\\":1}\""},"Metadata":{"MessageId":"\"m1\"","DeliveryCount":"2"}}`

func TestRetryDecision(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 200},
		{"transient", backup.Errorf(backup.CodeTransient, "storage down"), 500},
		{"conflict", backup.Errorf(backup.CodeConflict, "raced"), 500},
		{"cancelled by shutdown", context.Canceled, 500},
		{"permanent", backup.Errorf(backup.CodeInvalidParameters, "bad"), 200},
		{"plain error", errors.New("boom"), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDispatcher(zerolog.Nop())
			var got envelope.ServiceBusMessage
			d.Register("Jobs", ServiceBus("msg", func(_ context.Context, m envelope.ServiceBusMessage, _ zerolog.Logger) error {
				got = m
				return tt.err
			}))
			rec := serve(t, d, "Jobs", sbEnvelope)
			if rec.Code != tt.want {
				t.Errorf("status %d, want %d", rec.Code, tt.want)
			}
			if string(got.Body) != `{"a":1}` || got.MessageID != "m1" || got.DeliveryCount != 2 {
				t.Errorf("message: %+v", got)
			}
		})
	}
}

func TestUnknownFunctionAndGarbage(t *testing.T) {
	d := NewDispatcher(zerolog.Nop())
	called := false
	d.Register("Tick", Timer("timer", func(context.Context, envelope.Timer, zerolog.Logger) error { called = true; return nil }))
	if rec := serve(t, d, "Nope", `{}`); rec.Code != 404 {
		t.Errorf("unknown function: %d", rec.Code)
	}
	if rec := serve(t, d, "Tick", `not json`); rec.Code != 200 || called {
		t.Errorf("garbage envelope: %d called=%v, want acknowledged without running", rec.Code, called)
	}
	if rec := serve(t, d, "Tick", `{"Data":{"timer":{"IsPastDue":true}},"Metadata":{}}`); rec.Code != 200 || !called {
		t.Errorf("timer: %d called=%v", rec.Code, called)
	}
	if got := d.Names(); len(got) != 1 || got[0] != "Tick" || !d.Has("Tick") {
		t.Errorf("Names = %v", got)
	}
}
