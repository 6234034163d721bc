package funchost

import (
	"sync"
	"time"
)

// OffsetClock is the machine's clock moved by an offset: Now is the real time plus the offset, in UTC,
// and it runs at the real rate. Tests use it to run a whole stack (a real handler, real storage) as of
// another day: the host puts its time in every envelope (Metadata.sys.UtcNow), and times its timers,
// scheduled messages, duplicate detection and message locks by it.
//
// Moving it (Set, Advance) is a jump of the host's time, and its timers keep to the clock's time, as
// the Clock contract says (a timer fires once d has elapsed on this clock): a jump forward fires at once
// every timer whose time it passed, so a scheduled message that came due is released, a timer function
// whose occurrence was passed fires (past due, once, as the real host does after a pause), and a message
// whose lock renewal limit was passed loses its lock; a jump back postpones them all. So move it only
// while nothing runs that a jump could disturb. Between jumps its timers take real durations. Safe for
// concurrent use.
type OffsetClock struct {
	mu     sync.Mutex
	offset time.Duration
	timers map[*offsetTimer]struct{} // pending: neither fired nor stopped
}

// NewOffsetClock returns a clock that reads t now.
func NewOffsetClock(t time.Time) *OffsetClock {
	c := &OffsetClock{timers: map[*offsetTimer]struct{}{}}
	c.offset = time.Until(t)
	return c
}

// Now returns the real time plus the offset, in UTC.
func (c *OffsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now()
}

// now is Now with c.mu held. The real time's monotonic reading is dropped (UTC does), so instants
// compare by the wall clock, as the instants the host hands out do.
func (c *OffsetClock) now() time.Time { return time.Now().UTC().Add(c.offset) }

// Offset is how far the clock is ahead of the machine's (negative when behind).
func (c *OffsetClock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

// Set moves the clock so that it reads t now, firing the timers whose time that passes.
func (c *OffsetClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = time.Until(t)
	c.rearm()
}

// Advance moves the clock by d (back, for a negative d), firing the timers whose time that passes.
func (c *OffsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
	c.rearm()
}

// NewTimer returns a timer that fires when the clock reads its time now plus d: after d of real time,
// or sooner (later) when the clock is moved forward (back) meanwhile.
func (c *OffsetClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &offsetTimer{c: c, at: c.now().Add(d), ch: make(chan time.Time, 1)}
	c.timers[t] = struct{}{}
	t.arm(d)
	return t
}

// rearm sets every pending timer's real timer to the time left on the clock; c.mu held.
func (c *OffsetClock) rearm() {
	now := c.now()
	for t := range c.timers {
		t.arm(t.at.Sub(now))
	}
}

// offsetTimer is a Timer of an OffsetClock: a real timer for the time left until at, re-armed when
// the clock moves.
type offsetTimer struct {
	c    *OffsetClock
	at   time.Time // on the clock
	ch   chan time.Time
	real *time.Timer
	gen  int // the arming in force; an earlier arming's callback does nothing
}

// arm (re)starts the real timer for d; c.mu held.
func (t *offsetTimer) arm(d time.Duration) {
	t.gen++
	gen := t.gen
	if t.real != nil {
		t.real.Stop()
	}
	t.real = time.AfterFunc(max(d, 0), func() { t.expire(gen) })
}

// expire fires the timer if the clock has reached its time, and re-arms it otherwise (the real timer
// ran out before the clock got there: it was moved back).
func (t *offsetTimer) expire(gen int) {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, pending := c.timers[t]; !pending || gen != t.gen {
		return
	}
	now := c.now()
	if now.Before(t.at) {
		t.arm(t.at.Sub(now))
		return
	}
	delete(c.timers, t)
	t.ch <- now // buffered, and sent once: never blocks
}

func (t *offsetTimer) C() <-chan time.Time { return t.ch }

// Stop prevents the timer from firing; it reports whether it was pending.
func (t *offsetTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, pending := c.timers[t]; !pending {
		return false
	}
	delete(c.timers, t)
	t.gen++
	t.real.Stop()
	return true
}

// pending counts the timers that have neither fired nor been stopped (for tests).
func (c *OffsetClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
