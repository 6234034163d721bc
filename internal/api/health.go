package api

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Pinger is one dependency the health function checks.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Check names a dependency for the health report.
type Check struct {
	Name   string
	Pinger Pinger
}

// checkResult is one dependency in the report: ok or not, never why (that is logged), because the
// health function is unauthenticated.
type checkResult struct {
	Status     string `json:"status"` // "ok" or "failed"
	DurationMS int64  `json:"duration_ms"`
}

type healthReport struct {
	Status  string                 `json:"status"` // "ok" when every check passed, else "degraded"
	Version string                 `json:"version"`
	Checks  map[string]checkResult `json:"checks"`
}

const (
	// healthTimeout bounds each dependency check, so a hung dependency cannot hang the probe.
	healthTimeout = 5 * time.Second
	// healthCacheTTL is how long a report is reused: however often the unauthenticated health function
	// is called, each dependency is pinged at most once per TTL.
	healthCacheTTL = 5 * time.Second
)

// healthCache runs the checks at most once per ttl; callers arriving while a run is under way wait for
// it and share its report.
type healthCache struct {
	ttl time.Duration
	now func() time.Time

	mu       sync.Mutex
	report   healthReport
	at       time.Time     // when report was made; zero before the first run
	inflight chan struct{} // closed when the running check ends; nil when none runs
}

// get returns a report no older than ttl, running the checks if there is none.
func (c *healthCache) get(ctx context.Context, run func(context.Context) healthReport) (healthReport, error) {
	c.mu.Lock()
	if !c.at.IsZero() && c.now().Sub(c.at) < c.ttl {
		r := c.report
		c.mu.Unlock()
		return r, nil
	}
	done := c.inflight
	if done == nil {
		done = make(chan struct{})
		c.inflight = done
		// Detached from the caller: one client going away must not fail the check for the others.
		go func() {
			r := run(context.WithoutCancel(ctx))
			c.mu.Lock()
			c.report, c.at, c.inflight = r, c.now(), nil
			c.mu.Unlock()
			close(done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return healthReport{}, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.report, nil
}

// handleHealth answers GET /api/health: 200 when every dependency answers, 503 otherwise.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	report, err := s.health.get(r.Context(), s.runChecks)
	if err != nil {
		return // the caller went away
	}
	status := http.StatusOK
	if report.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, report)
}

// runChecks pings every dependency in parallel; failures are logged with their error.
func (s *Server) runChecks(ctx context.Context) healthReport {
	report := healthReport{Status: "ok", Version: s.version, Checks: map[string]checkResult{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range s.checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, healthTimeout)
			defer cancel()
			start := time.Now()
			err := c.Pinger.Ping(ctx)
			res := checkResult{Status: "ok", DurationMS: time.Since(start).Milliseconds()}
			if err != nil {
				res.Status = "failed"
				s.log.Warn().Err(err).Str("check", c.Name).Msg("health check failed")
			}
			mu.Lock()
			defer mu.Unlock()
			report.Checks[c.Name] = res
			if err != nil {
				report.Status = "degraded"
			}
		})
	}
	wg.Wait()
	return report
}
