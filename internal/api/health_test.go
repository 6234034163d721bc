package api

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingPinger counts pings; it fails with err when set, and holds each ping until release is closed
// (when set) so that callers pile up on one check.
type countingPinger struct {
	n       atomic.Int32
	err     error
	release chan struct{}
}

func (p *countingPinger) Ping(ctx context.Context) error {
	p.n.Add(1)
	if p.release != nil {
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.err
}

// TestHealthSaysOKOrNotWithoutErrorText: the unauthenticated report says ok or failed per dependency;
// the error text is in the log only.
func TestHealthSaysOKOrNotWithoutErrorText(t *testing.T) {
	bad := &countingPinger{err: errors.New("dial tcp 10.1.2.3:5671: connect: connection refused; https://mybus.servicebus.windows.net/")}
	f := newFixture(t, withChecks(Check{Name: "table_storage", Pinger: &countingPinger{}}, Check{Name: "service_bus", Pinger: bad}))
	code, got := f.getRaw(t, "/api/health")
	if code != 503 {
		t.Fatalf("got %d %s, want 503", code, got)
	}
	for _, want := range []string{`"status":"degraded"`, `"table_storage":{"status":"ok"`, `"service_bus":{"status":"failed"`} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %s: %s", want, got)
		}
	}
	for _, leak := range []string{"dial", "10.1.2.3", "servicebus.windows.net", "error"} {
		if strings.Contains(got, leak) {
			t.Errorf("report leaks %q: %s", leak, got)
		}
	}
	if !strings.Contains(f.logs.String(), "connection refused") {
		t.Errorf("the failure is not logged: %s", f.logs)
	}
}

// TestHealthChecksAreCached: however many callers, each dependency is pinged once per cache period;
// callers arriving during a check share it.
func TestHealthChecksAreCached(t *testing.T) {
	p := &countingPinger{release: make(chan struct{})}
	f := newFixture(t, withChecks(Check{Name: "service_bus", Pinger: p}))
	var mu sync.Mutex
	now := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
	f.srv.health.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Go(func() { codes[i], _ = f.getRaw(t, "/api/health") })
	}
	// Every caller is waiting on the one check in flight.
	for deadline := time.Now().Add(5 * time.Second); p.n.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(p.release)
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("caller %d: %d", i, c)
		}
	}
	if n := p.n.Load(); n != 1 {
		t.Errorf("20 concurrent callers: %d pings, want 1", n)
	}
	advance(4 * time.Second)
	f.getRaw(t, "/api/health")
	if n := p.n.Load(); n != 1 {
		t.Errorf("within the cache period: %d pings, want 1", n)
	}
	advance(2 * time.Second)
	f.getRaw(t, "/api/health")
	if n := p.n.Load(); n != 2 {
		t.Errorf("after the cache period: %d pings, want 2", n)
	}
}
