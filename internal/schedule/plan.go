package schedule

import (
	"time"

	"github.com/mxazure/backups/internal/ncrontab"
)

// Plan is the configured schedule: the timers' NCRONTAB schedules (nightly, weekly and monthly; any of
// them may fire on any day, since the day decides the kind), the calendar and the spread window.
type Plan struct {
	Calendar Calendar
	Timers   []*ncrontab.Schedule
	Spread   time.Duration
}

// Run is one environment's automatic backup: the timer occurrence that starts it (Fire), when the
// environment's backup is scheduled (At = Fire + its Offset), and the day and kind it is for.
type Run struct {
	Fire time.Time
	At   time.Time
	Day  Day
	Kind Kind
}

// maxSearch bounds the days NextRun looks at: over four years of days with an occurrence.
const maxSearch = 4 * 400

// next is the first occurrence of any timer strictly after t, or the zero time.
func (p Plan) next(t time.Time) time.Time {
	first, _ := p.firing(t)
	return first
}

// firing is the first occurrence of any timer strictly after t and how many timers fire at that
// instant (two timers with the same time on the same day are two runs started, of which one makes
// something).
func (p Plan) firing(t time.Time) (time.Time, int) {
	var first time.Time
	n := 0
	for _, s := range p.Timers {
		next := s.Next(t)
		switch {
		case next.IsZero():
		case first.IsZero() || next.Before(first):
			first, n = next, 1
		case next.Equal(first):
			n++
		}
	}
	return first, n
}

// NextRun is the next automatic backup of environment envID after now: the first day's first
// occurrence whose scheduled time for this environment is still to come. A later occurrence on a day
// that already had one makes nothing (the run is per day), so it is skipped. It reports false when no
// timer fires any more.
func (p Plan) NextRun(envID string, now time.Time) (Run, bool) {
	offset := Offset(envID, p.Spread)
	// Start early enough that an occurrence whose window still runs, and any earlier one of its day,
	// are seen.
	t := now.Add(-max(p.Spread, 0) - 48*time.Hour)
	for range maxSearch {
		fire := p.next(t)
		if fire.IsZero() {
			return Run{}, false
		}
		day := p.Calendar.DayOf(fire)
		if at := fire.Add(offset); at.After(now) {
			return Run{Fire: fire, At: at, Day: day, Kind: KindOf(day)}, true
		}
		// The day's later occurrences make nothing: go on from the next day.
		t = p.Calendar.lastSecond(fire)
	}
	return Run{}, false
}

// Coverage looks at the days days from the day of from on, and returns those on which more than one
// occurrence falls (overlapping schedules: harmless, as the day's second run makes nothing, but likely
// a mistake) and those on which none does (no automatic backup that day), for a warning at start.
func (p Plan) Coverage(from time.Time, days int) (shared, missing []Day) {
	first := p.Calendar.DayOf(from)
	end := first.AddDays(days)
	counts := map[Day]int{}
	// Occurrences from a day before, so that the first day's are all seen whatever the zone.
	for t := from.Add(-48 * time.Hour); ; {
		fire, n := p.firing(t)
		if fire.IsZero() {
			break
		}
		t = fire
		day := p.Calendar.DayOf(fire)
		if !day.Before(end) {
			break
		}
		// Two make a day shared; more need not be counted.
		if counts[day] += n; counts[day] > 1 {
			t = p.Calendar.lastSecond(fire)
		}
	}
	for d := first; d.Before(end); d = d.AddDays(1) {
		switch n := counts[d]; {
		case n > 1:
			shared = append(shared, d)
		case n == 0:
			missing = append(missing, d)
		}
	}
	return shared, missing
}
