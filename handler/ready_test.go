package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A trigger that arrives while storage is still initialising must wait, not fail: the host redelivers
// a refused Service Bus message at once and would dead-letter it after maxDeliveryCount refusals.
func TestTriggersWaitForReadiness(t *testing.T) {
	a := &app{ready: make(chan struct{})}
	h := a.whenReady(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }),
		time.Minute, func(w http.ResponseWriter) { w.WriteHeader(503) })
	done := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/BackupJobs", nil))
		done <- rec.Code
	}()
	select {
	case code := <-done:
		t.Fatalf("answered %d before storage was ready", code)
	case <-time.After(100 * time.Millisecond):
	}
	close(a.ready)
	if code := <-done; code != 200 {
		t.Fatalf("got %d after readiness, want 200", code)
	}
}

func TestNotReadyInTimeIsRefused(t *testing.T) {
	a := &app{ready: make(chan struct{})}
	h := a.whenReady(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }),
		10*time.Millisecond, func(w http.ResponseWriter) { w.WriteHeader(503) })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/x", nil))
	if rec.Code != 503 {
		t.Fatalf("got %d, want 503", rec.Code)
	}
}
