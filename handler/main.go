// Command handler is the Azure Functions custom handler of the backup service. The Functions host (or the
// project's local host) starts it with FUNCTIONS_CUSTOMHANDLER_PORT set, forwards HTTP requests to it and
// posts the JSON envelope of every other trigger to /<FunctionName>. This package only wires the
// internal packages together.
package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/config"
	"github.com/mxazure/backups/internal/schedule"
)

// gcPercent is the handler's GOGC unless the environment sets one.
const gcPercent = 50

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run())
}

func run() int {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	log := zerolog.New(os.Stdout).With().Timestamp().Str("service", "backups").Str("version", version).Logger()

	cfg, err := config.FromEnv(os.Getenv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		log.Error().Err(err).Msg("invalid configuration; fix the settings named above")
		return 2
	}
	if lvl, err := zerolog.ParseLevel(cfg.LogLevel); err == nil {
		log = log.Level(lvl)
	}
	cfg.Version = version
	log.Info().Interface("config", cfg).Msg("starting")
	warnScheduleCoverage(cfg, time.Now(), log)

	// A backup keeps about 45 MiB of buffers live and churns through short-lived ones (a Storage response
	// per file document); the default GOGC=100 lets the heap reach twice the live size before collecting.
	// Collecting at +50% keeps the peak RSS lower for a few milliseconds of GC per second. An operator's
	// GOGC wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}

	// signalCtx ends on SIGTERM/SIGINT. Long jobs run under it, so a shutdown cancels them and they
	// record the interruption; HTTP requests get ShutdownTimeout to finish.
	signalCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	app, err := newApp(signalCtx, cfg, log)
	if err != nil {
		log.Error().Err(err).Msg("start-up failed")
		return 1
	}
	defer app.close()

	// Listen before anything slow: the host polls GET / and gives the handler 30 s to answer.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)))
	if err != nil {
		log.Error().Err(err).Int("port", cfg.Port).Msg("cannot listen")
		return 1
	}
	srv := &http.Server{
		Handler:           app.handler(),
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return signalCtx },
		ErrorLog:          nil,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	go app.initialize(signalCtx)
	log.Info().Str("address", ln.Addr().String()).Msg("listening")

	select {
	case err := <-serveErr:
		log.Error().Err(err).Msg("server stopped")
		return 1
	case <-signalCtx.Done():
	}
	log.Info().Dur("timeout", cfg.ShutdownTimeout).Msg("shutting down: cancelling running jobs, finishing requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn().Err(err).Msg("shutdown did not finish in time; closing")
		_ = srv.Close()
	}
	log.Info().Msg("stopped")
	return 0
}

// coverageDays is how far ahead the schedules are checked at start.
const coverageDays = 60

// warnScheduleCoverage logs the days of the next coverageDays on which no timer fires (no automatic
// backup that day) or more than one does (harmless, the day's second run makes nothing, but likely a
// mistake in NIGHTLY_SCHEDULE, WEEKLY_SCHEDULE or MONTHLY_SCHEDULE).
func warnScheduleCoverage(cfg config.Config, now time.Time, log zerolog.Logger) {
	shared, missing := cfg.SchedulePlan().Coverage(now, coverageDays)
	days := func(ds []schedule.Day) []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = d.String()
		}
		return out
	}
	if len(missing) > 0 {
		log.Warn().Strs("days", days(missing)).Str("time_zone", cfg.ScheduleTimeZone).
			Msgf("no automatic backup timer fires on %d of the next %d days; check the schedules", len(missing), coverageDays)
	}
	if len(shared) > 0 {
		log.Warn().Strs("days", days(shared)).Str("time_zone", cfg.ScheduleTimeZone).
			Msgf("more than one automatic backup timer fires on %d of the next %d days; a day still gets one automatic snapshot", len(shared), coverageDays)
	}
}
