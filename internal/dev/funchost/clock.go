package funchost

import "time"

// Clock is the host's source of time for timer triggers, scheduled messages, duplicate detection and
// message lock expiry. Tests substitute a fake to drive timers without sleeping. Function timeouts and
// the handler's readiness probe always use real time: they guard real processes.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that delivers on its channel once d has elapsed on this clock.
	NewTimer(d time.Duration) Timer
}

// Timer is a stoppable one-shot timer of a Clock.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped a pending timer.
	Stop() bool
}

// SystemClock is the real clock, in UTC.
type SystemClock struct{}

// Now returns the current time in UTC.
func (SystemClock) Now() time.Time { return time.Now().UTC() }

// NewTimer returns a real timer.
func (SystemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (s systemTimer) C() <-chan time.Time { return s.t.C }
func (s systemTimer) Stop() bool          { return s.t.Stop() }
