package bus

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

func TestLocalWireFormat(t *testing.T) {
	var gotPath string
	var got []LocalMessage
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.Path
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &got); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	at := time.Date(2026, 11, 24, 1, 0, 0, 0, time.UTC)
	err := NewLocal(srv.URL+"/").Publish(context.Background(), "backup-jobs",
		backup.Message{ID: "op-1", SessionID: "env-1", Body: []byte(`{"a":1}`), ScheduledAt: at, Properties: map[string]any{"k": "v"}},
		backup.Message{ID: "op-2", Body: []byte(`{}`), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	if gotPath != "/admin/servicebus/backup-jobs/messages" {
		t.Errorf("path %s", gotPath)
	}
	if len(got) != 2 || got[0].MessageID != "op-1" || got[0].SessionID != "env-1" || got[0].Body != `{"a":1}` ||
		got[0].ContentType != "application/json" || !got[0].ScheduledEnqueueTime.Equal(at) || got[0].ApplicationProperties["k"] != "v" ||
		got[1].ContentType != "text/plain" || got[1].ScheduledEnqueueTime != nil {
		t.Errorf("messages: %+v", got)
	}
}

func TestLocalFailuresAreTransient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "broker full", http.StatusServiceUnavailable)
	}))
	err := NewLocal(srv.URL).Publish(context.Background(), "q", backup.Message{ID: "1", Body: []byte("{}")})
	if backup.CodeOf(err) != backup.CodeTransient {
		t.Errorf("503: got %v, want TEMPORARILY_UNAVAILABLE", err)
	}
	srv.Close()
	err = NewLocal(srv.URL).Publish(context.Background(), "q", backup.Message{ID: "1", Body: []byte("{}")})
	if backup.CodeOf(err) != backup.CodeTransient {
		t.Errorf("connection refused: got %v, want TEMPORARILY_UNAVAILABLE", err)
	}
	if err := NewLocal(srv.URL).Publish(context.Background(), "q"); err != nil {
		t.Errorf("no messages: %v", err)
	}
}

func TestServiceBusMessageMapping(t *testing.T) {
	at := time.Date(2026, 11, 24, 1, 0, 0, 0, time.FixedZone("x", 3600))
	m := toSDK(backup.Message{ID: "op-1", SessionID: "env-1", Body: []byte("{}"), ScheduledAt: at, Properties: map[string]any{"k": 1}})
	if *m.MessageID != "op-1" || *m.SessionID != "env-1" || *m.ContentType != "application/json" ||
		!m.ScheduledEnqueueTime.Equal(at) || m.ScheduledEnqueueTime.Location() != time.UTC || m.ApplicationProperties["k"] != 1 {
		t.Errorf("mapped: %+v", m)
	}
	if m := toSDK(backup.Message{Body: []byte("x")}); m.MessageID != nil || m.SessionID != nil || m.ScheduledEnqueueTime != nil {
		t.Errorf("empty fields must stay unset: %+v", m)
	}
}
