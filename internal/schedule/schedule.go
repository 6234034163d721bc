// Package schedule holds the rules of automatic backups and retention, and nothing else: which calendar
// day a timer run is for and what kind of snapshot it makes, when a snapshot expires, when each
// environment's backup runs inside the spread window, how often it is tried, and which snapshots the
// expiry may delete. Everything here is a pure function of its inputs (no clock, no storage), so every
// rule is table-tested; the backup package applies them.
package schedule

import (
	"fmt"
	"hash/fnv"
	"time"
	// The tz database is embedded: Linux Flex and Consumption plans ignore WEBSITE_TIME_ZONE, and the
	// worker image need not carry /usr/share/zoneinfo for SCHEDULE_TIME_ZONE to work.
	_ "time/tzdata"
)

// Kind is why a snapshot exists; it decides retention. The values are the API's snapshot kinds.
type Kind string

const (
	Manual   Kind = "manual"
	Nightly  Kind = "nightly"
	Weekly   Kind = "weekly"
	Monthly  Kind = "monthly"
	Uploaded Kind = "uploaded"
)

// Automatic reports whether snapshots of kind k are made by the schedule.
func (k Kind) Automatic() bool { return k == Nightly || k == Weekly || k == Monthly }

// MaxAttempts is how often one environment's automatic backup of one day is tried: once, and at most
// twice more that night when the environment was busy or in a transient state, or the snapshot failed
// (Mendix Cloud retries as often). RetryDelay spaces the tries.
const (
	MaxAttempts = 3
	RetryDelay  = 30 * time.Minute
)

// FailedRetention is how long a Failed snapshot is kept, whatever its kind: long enough to see why.
const FailedRetention = 14 * 24 * time.Hour

// Day is a calendar day in the schedule's time zone.
type Day struct {
	Year  int
	Month time.Month
	Day   int
}

// String is the ISO form, 2026-12-06: it sorts as text and names the day in keys and message ids.
func (d Day) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day) }

// IsZero reports whether d is the zero Day.
func (d Day) IsZero() bool { return d == Day{} }

// ParseDay reads the form String writes.
func ParseDay(s string) (Day, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Day{}, fmt.Errorf("%q is not a day like 2026-12-06", s)
	}
	return Day{t.Year(), t.Month(), t.Day()}, nil
}

// Weekday is the day of the week of d.
func (d Day) Weekday() time.Weekday { return d.noon().Weekday() }

// AddDays returns the day n days after d (before, for negative n).
func (d Day) AddDays(n int) Day {
	t := d.noon().AddDate(0, 0, n)
	return Day{t.Year(), t.Month(), t.Day()}
}

// Before reports whether d is earlier than o.
func (d Day) Before(o Day) bool {
	if d.Year != o.Year {
		return d.Year < o.Year
	}
	if d.Month != o.Month {
		return d.Month < o.Month
	}
	return d.Day < o.Day
}

func (d Day) noon() time.Time { return time.Date(d.Year, d.Month, d.Day, 12, 0, 0, 0, time.UTC) }

// KindOf is the kind of the automatic snapshot of day d: the first Sunday of the month is monthly, any
// other Sunday weekly, every other day nightly. So a month whose first Sunday passed before an
// environment's first automatic backup has no monthly snapshot for that environment.
func KindOf(d Day) Kind {
	switch {
	case d.Weekday() != time.Sunday:
		return Nightly
	case d.Day <= 7:
		return Monthly
	default:
		return Weekly
	}
}

// Calendar computes days and retention in one time zone (SCHEDULE_TIME_ZONE).
type Calendar struct {
	loc *time.Location
}

// UTC is the calendar of the default time zone.
var UTC = Calendar{loc: time.UTC}

// LoadCalendar returns the calendar of an IANA time zone name ("Europe/Amsterdam"); "" is UTC. "Local"
// is refused: it would be whatever the machine says.
func LoadCalendar(name string) (Calendar, error) {
	switch name {
	case "", "UTC":
		return UTC, nil
	case "Local":
		return Calendar{}, fmt.Errorf("%q is not an IANA time zone name; name the zone, such as Europe/Amsterdam", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return Calendar{}, fmt.Errorf("%q is not an IANA time zone name (such as Europe/Amsterdam or UTC)", name)
	}
	return Calendar{loc: loc}, nil
}

// Location is the calendar's time zone.
func (c Calendar) Location() *time.Location {
	if c.loc == nil {
		return time.UTC
	}
	return c.loc
}

// DayOf is the calendar day of instant t.
func (c Calendar) DayOf(t time.Time) Day {
	y, m, d := t.In(c.Location()).Date()
	return Day{y, m, d}
}

// lastSecond is the last whole second of the day of t, so that the first occurrence after it is on a
// later day. It searches rather than trusting time.Date at midnight: where a zone skips
// midnight (America/Santiago) or a whole day (Pacific/Apia, 30 December 2011), time.Date can return an
// instant of the day before.
func (c Calendar) lastSecond(t time.Time) time.Time {
	d := c.DayOf(t)
	next := d.AddDays(1)
	lo, hi := t.Truncate(time.Second), time.Date(next.Year, next.Month, next.Day, 0, 0, 0, 0, c.Location())
	for i := 0; !d.Before(c.DayOf(hi)) || !hi.After(lo); i++ {
		if i == 48 {
			return lo // no day of more than two days
		}
		hi = hi.Add(time.Hour)
	}
	// lo is on d, hi on a later day.
	for hi.Sub(lo) > time.Second {
		mid := lo.Add((hi.Sub(lo) / 2).Truncate(time.Second))
		if d.Before(c.DayOf(mid)) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return lo
}

// ExpiresAt is the end of retention of a snapshot of kind k created at created: 14 days for nightly,
// manual and uploaded snapshots, 3 calendar months for weekly ones, 1 calendar year for monthly ones,
// exact to the instant on the wall clock of the calendar's zone (a weekly made 03:18 on 3 December
// expires 03:18 on 3 March, whatever daylight saving did in between). A day that the target month lacks
// is the month's last day, as PostgreSQL's interval arithmetic does: 31 January + 3 months is 30 April,
// 29 February + 1 year is 28 February. The result is in UTC.
func (c Calendar) ExpiresAt(k Kind, created time.Time) time.Time {
	t := created.In(c.Location())
	switch k {
	case Weekly:
		return addMonths(t, 3).UTC()
	case Monthly:
		return addMonths(t, 12).UTC()
	default:
		return t.AddDate(0, 0, 14).UTC()
	}
}

// FailedExpiresAt is when a Failed snapshot created at created expires: FailedRetention on the wall
// clock, like a nightly.
func (c Calendar) FailedExpiresAt(created time.Time) time.Time {
	return created.In(c.Location()).AddDate(0, 0, int(FailedRetention/(24*time.Hour))).UTC()
}

// addMonths adds n calendar months to t, keeping its wall-clock time and clamping the day to the end
// of the target month.
func addMonths(t time.Time, n int) time.Time {
	y, m, d := t.Date()
	if last := time.Date(y, m+time.Month(n)+1, 0, 0, 0, 0, 0, time.UTC).Day(); d > last {
		d = last
	}
	return time.Date(y, m+time.Month(n), d, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), t.Location())
}

// Offset is where in the spread window an environment's automatic backup is scheduled: a whole number
// of seconds in [0, spread), the same for the same environment every night, so that thousands of dumps
// do not start in the same minute and each environment backs up at about the same time each night.
func Offset(envID string, spread time.Duration) time.Duration {
	if spread < time.Second {
		return 0
	}
	seconds := uint64(spread / time.Second)
	h := fnv.New64a()
	_, _ = h.Write([]byte(envID))
	return time.Duration(h.Sum64()%seconds) * time.Second
}
