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

type checkResult struct {
	Status     string `json:"status"` // "ok" or "failed"
	DurationMS int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

type healthReport struct {
	Status  string                 `json:"status"` // "ok" when every check passed, else "degraded"
	Version string                 `json:"version"`
	Checks  map[string]checkResult `json:"checks"`
}

// healthTimeout bounds each dependency check, so a hung dependency cannot hang the probe.
const healthTimeout = 5 * time.Second

// handleHealth answers GET /api/health: 200 when every dependency answers, 503 otherwise. The checks
// run in parallel.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	report := healthReport{Status: "ok", Version: s.version, Checks: map[string]checkResult{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range s.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
			defer cancel()
			start := time.Now()
			err := c.Pinger.Ping(ctx)
			res := checkResult{Status: "ok", DurationMS: time.Since(start).Milliseconds()}
			if err != nil {
				res.Status, res.Error = "failed", err.Error()
				s.log.Warn().Err(err).Str("check", c.Name).Msg("health check failed")
			}
			mu.Lock()
			defer mu.Unlock()
			report.Checks[c.Name] = res
			if err != nil {
				report.Status = "degraded"
			}
		}()
	}
	wg.Wait()
	status := http.StatusOK
	if report.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, report)
}
