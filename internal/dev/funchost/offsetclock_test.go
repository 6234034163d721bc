package funchost

import (
	"encoding/json"
	"testing"
	"time"
)

// within fails unless got is in [want, want+slack].
func within(t *testing.T, what string, got, want time.Time, slack time.Duration) {
	t.Helper()
	if got.Before(want) || got.After(want.Add(slack)) {
		t.Fatalf("%s: got %s, want %s (up to %s later)", what, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano), slack)
	}
}

// fired waits up to limit for the timer and reports the time it delivered.
func fired(tm Timer, limit time.Duration) (time.Time, bool) {
	select {
	case at := <-tm.C():
		return at, true
	case <-time.After(limit):
		return time.Time{}, false
	}
}

func TestOffsetClockNowFollowsSetAndAdvance(t *testing.T) {
	start := time.Date(2031, 3, 2, 12, 0, 0, 0, time.UTC)
	c := NewOffsetClock(start)
	within(t, "Now after NewOffsetClock", c.Now(), start, time.Second)
	if got := c.Now().Location(); got != time.UTC {
		t.Errorf("Now is in %s, want UTC", got)
	}
	if off := c.Offset(); off < time.Until(start)-time.Second || off > time.Until(start)+time.Second {
		t.Errorf("Offset %s, want about %s", off, time.Until(start))
	}

	c.Advance(36 * time.Hour)
	within(t, "Now after Advance(36h)", c.Now(), start.Add(36*time.Hour), time.Second)
	earlier := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC) // before the machine's time: a negative offset
	c.Set(earlier)
	within(t, "Now after Set to the past", c.Now(), earlier, time.Second)
	if c.Offset() >= 0 {
		t.Errorf("Offset %s after a Set to the past, want negative", c.Offset())
	}
	// It runs at the real rate.
	before := c.Now()
	time.Sleep(30 * time.Millisecond)
	if d := c.Now().Sub(before); d < 30*time.Millisecond || d > 5*time.Second {
		t.Errorf("30 ms of real time moved the clock by %s", d)
	}
}

func TestOffsetClockTimerTakesRealTimeWhenTheClockStays(t *testing.T) {
	c := NewOffsetClock(time.Date(2031, 3, 2, 12, 0, 0, 0, time.UTC))
	began, start := time.Now(), c.Now()
	tm := c.NewTimer(50 * time.Millisecond)
	at, ok := fired(tm, 10*time.Second)
	if !ok {
		t.Fatal("a 50 ms timer did not fire within 10 s")
	}
	if real := time.Since(began); real < 50*time.Millisecond {
		t.Errorf("the timer fired after %s of real time, want at least 50 ms", real)
	}
	within(t, "the time the timer delivered", at, start.Add(50*time.Millisecond), 5*time.Second)
	if tm.Stop() {
		t.Error("Stop of a fired timer reported true")
	}
	if n := c.pending(); n != 0 {
		t.Errorf("%d timers pending after the only one fired", n)
	}
	// A timer of 0 or less fires at once, as a real one does.
	if _, ok := fired(c.NewTimer(-time.Second), 5*time.Second); !ok {
		t.Error("a timer of -1 s did not fire")
	}
}

func TestOffsetClockJumpForwardFiresPassedTimers(t *testing.T) {
	start := time.Date(2031, 3, 2, 12, 0, 0, 0, time.UTC)
	c := NewOffsetClock(start)
	hour, day := c.NewTimer(time.Hour), c.NewTimer(24*time.Hour)
	c.Advance(30 * time.Minute) // short of both
	if _, ok := fired(hour, 100*time.Millisecond); ok {
		t.Fatal("the 1 h timer fired after the clock moved 30 min")
	}
	c.Advance(31 * time.Minute) // past the first
	at, ok := fired(hour, 5*time.Second)
	if !ok {
		t.Fatal("the 1 h timer did not fire once the clock passed its time")
	}
	within(t, "the time the 1 h timer delivered", at, start.Add(61*time.Minute), 5*time.Second)
	if _, ok := fired(day, 100*time.Millisecond); ok {
		t.Fatal("the 24 h timer fired at 1 h")
	}
	c.Set(start.Add(3 * 24 * time.Hour)) // Set jumps as Advance does; a passed timer fires once
	if _, ok := fired(day, 5*time.Second); !ok {
		t.Fatal("the 24 h timer did not fire after a Set 3 days on")
	}
	if n := c.pending(); n != 0 {
		t.Errorf("%d timers pending, want 0", n)
	}
}

func TestOffsetClockJumpBackPostponesTimers(t *testing.T) {
	start := time.Date(2031, 3, 2, 12, 0, 0, 0, time.UTC)
	c := NewOffsetClock(start)
	tm := c.NewTimer(40 * time.Millisecond)
	c.Advance(-time.Hour) // its time is now an hour and 40 ms away
	if _, ok := fired(tm, 300*time.Millisecond); ok {
		t.Fatal("the timer fired although the clock was moved back an hour")
	}
	c.Set(start.Add(time.Second))
	if _, ok := fired(tm, 5*time.Second); !ok {
		t.Fatal("the timer did not fire once the clock was moved past its time again")
	}
}

func TestOffsetClockStop(t *testing.T) {
	c := NewOffsetClock(time.Date(2031, 3, 2, 12, 0, 0, 0, time.UTC))
	tm := c.NewTimer(time.Minute)
	if !tm.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	if tm.Stop() {
		t.Error("a second Stop reported true")
	}
	c.Advance(time.Hour)
	if _, ok := fired(tm, 100*time.Millisecond); ok {
		t.Error("a stopped timer fired when the clock passed its time")
	}
	if n := c.pending(); n != 0 {
		t.Errorf("%d timers pending after Stop, want 0", n)
	}
}

// TestOffsetClockDrivesTheHost: a host on an OffsetClock puts the clock's time in its envelopes, and a
// jump past a scheduled message's time and past a timer's occurrence delivers the message and fires the
// timer (past due) at once.
func TestOffsetClockDrivesTheHost(t *testing.T) {
	start := time.Date(2031, 3, 2, 0, 30, 0, 0, time.UTC)
	clock := NewOffsetClock(start)
	root := writeApp(t, appSpec{functions: map[string]string{
		"Nightly": timerFn("0 0 1 * * *", nil),
		"Work":    queueFn("work", false),
	}})
	th := startHost(t, root, Options{Clock: clock})
	due := clock.Now().Add(30 * time.Minute)
	th.publish(t, "work", PublishMessage{Body: `{"n":1}`, MessageID: "later", ScheduledEnqueueTime: due.Format(time.RFC3339Nano)})
	if em := th.messages(t, "work"); len(em.Scheduled) != 1 {
		t.Fatalf("the message is not scheduled: %+v", em)
	}
	// The timer's loop and the broker's scheduler wait on the clock (the loop from its start, the
	// scheduler once the message came): a jump before then would pass them by.
	waitFor(t, "the timer and the scheduler to wait", func() bool { return clock.pending() == 2 })

	clock.Advance(31 * time.Minute) // past the message's time and the 01:00 occurrence
	rs := th.waitRecords(t, "the message and the timer", func(rs []record) bool {
		return len(starts(rs, "/Work")) == 1 && len(starts(rs, "/Nightly")) == 1
	})
	utcNow := func(r record) time.Time {
		t.Helper()
		_, md := decodeEnvelope(t, []byte(r.Body))
		var sys struct{ UtcNow time.Time }
		if err := json.Unmarshal(md["sys"], &sys); err != nil {
			t.Fatalf("Metadata.sys: %v (%s)", err, md["sys"])
		}
		return sys.UtcNow
	}
	now := start.Add(31 * time.Minute)
	within(t, "UtcNow of the message's delivery", utcNow(starts(rs, "/Work")[0]), now, 10*time.Second)
	night := starts(rs, "/Nightly")[0]
	within(t, "UtcNow of the timer's run", utcNow(night), now, 10*time.Second)
	if ti := timerOf(t, night); !ti.IsPastDue {
		t.Errorf("the timer's run after a jump past its occurrence: IsPastDue false, want true")
	}
	th.waitIdle(t)
}
