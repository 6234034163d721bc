package schedule

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/ncrontab"
)

// The default timers (UTC) and spread.
var defaults = []string{"0 0 1 * * 1-6", "0 0 1 8-31 * 0", "0 0 1 1-7 * 0"}

const spread = 2 * time.Hour

const envID = "3f2b8c1e-9a4d-4e6b-8f1a-2c3d4e5f6a7b"

func plan(t *testing.T, zone string, exprs ...string) Plan {
	t.Helper()
	p := Plan{Calendar: calendar(t, zone), Spread: spread}
	for _, e := range exprs {
		s, err := ncrontab.Parse(e)
		if err != nil {
			t.Fatalf("ncrontab.Parse(%q): %v", e, err)
		}
		p.Timers = append(p.Timers, s)
	}
	return p
}

// uuids returns n version-4 UUIDs from a fixed seed.
func uuids(n int) []string {
	r := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, n)
	for i := range ids {
		a, b := r.Uint64(), r.Uint64()
		a = a&^0xf000 | 0x4000     // version 4
		b = b&^(0xc<<60) | 0x8<<60 // variant 10
		ids[i] = fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, a>>16&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
	}
	return ids
}

func TestOffsetDeterministic(t *testing.T) {
	for _, id := range []string{envID, "", "a", "env-1", "ENV-1"} {
		t.Run(id, func(t *testing.T) {
			first := Offset(id, spread)
			for range 3 {
				if got := Offset(id, spread); got != first {
					t.Fatalf("Offset(%q) = %s, then %s", id, first, got)
				}
			}
		})
	}
}

func TestOffsetRange(t *testing.T) {
	ids := uuids(2000)
	tests := []struct {
		name   string
		spread time.Duration
		max    time.Duration // largest allowed offset
	}{
		{"one second", time.Second, 0},
		{"a second and a half", 1500 * time.Millisecond, 0},
		{"seven seconds", 7 * time.Second, 6 * time.Second},
		{"ninety and a half minutes", 90*time.Minute + 30*time.Second, 90*time.Minute + 29*time.Second},
		{"two hours", 2 * time.Hour, 2*time.Hour - time.Second},
		{"a day", 24 * time.Hour, 24*time.Hour - time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var largest time.Duration
			for _, id := range ids {
				o := Offset(id, tc.spread)
				if o < 0 || o > tc.max || o >= tc.spread {
					t.Fatalf("Offset(%q, %s) = %s, want within [0, %s]", id, tc.spread, o, tc.max)
				}
				if o%time.Second != 0 {
					t.Fatalf("Offset(%q, %s) = %s, not whole seconds", id, tc.spread, o)
				}
				largest = max(largest, o)
			}
			// 2000 ids over at most 86,400 seconds: the largest is near the top.
			if tc.max > 0 && largest < tc.max*9/10 {
				t.Errorf("largest offset %s of 2000, want near %s", largest, tc.max)
			}
		})
	}
}

func TestOffsetZeroSpread(t *testing.T) {
	for _, s := range []time.Duration{0, time.Nanosecond, 999 * time.Millisecond, -time.Second, -2 * time.Hour, math.MinInt64} {
		t.Run(s.String(), func(t *testing.T) {
			for _, id := range uuids(100) {
				if got := Offset(id, s); got != 0 {
					t.Fatalf("Offset(%q, %s) = %s, want 0", id, s, got)
				}
			}
		})
	}
}

// Offsets spread evenly: no 10-minute bucket of the 2-hour window holds more than twice its share, or
// less than half of it. A constant or badly mixed hash fails this.
func TestOffsetSpreads(t *testing.T) {
	sequential := make([]string, 10000)
	for i := range sequential {
		sequential[i] = fmt.Sprintf("env-%05d", i)
	}
	tests := []struct {
		name string
		ids  []string
	}{
		{"random UUIDs", uuids(10000)},
		{"sequential names", sequential},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const bucket = 10 * time.Minute
			counts := make([]int, spread/bucket)
			distinct := map[time.Duration]bool{}
			for _, id := range tc.ids {
				o := Offset(id, spread)
				counts[o/bucket]++
				distinct[o] = true
			}
			mean := len(tc.ids) / len(counts)
			for i, n := range counts {
				if n > 2*mean || n < mean/2 {
					t.Errorf("bucket %d (%s..) holds %d offsets, mean %d", i, time.Duration(i)*bucket, n, mean)
				}
			}
			// 10,000 draws over 7,200 seconds hit about 5,400 distinct ones.
			if len(distinct) < 4000 {
				t.Errorf("%d distinct offsets of %d ids", len(distinct), len(tc.ids))
			}
		})
	}
}

func TestNextRun(t *testing.T) {
	offset := Offset(envID, spread)
	if offset < time.Second || offset > spread-2*time.Second {
		t.Fatalf("fixture: Offset(%s) = %s; pick an id inside the window", envID, offset)
	}
	t.Logf("offset %s", offset)
	tests := []struct {
		name   string
		zone   string
		timers []string
		now    string
		plus   bool          // now is the instant plus the env's offset
		delta  time.Duration // and then this
		fire   string        // "" when none
		day    string
		kind   Kind
	}{
		// Defaults in UTC; 4 November 2026 is a Wednesday.
		{name: "before the fire", timers: defaults, now: "2026-11-04T00:30:00Z",
			fire: "2026-11-04T01:00:00Z", day: "2026-11-04", kind: Nightly},
		{name: "at the fire", timers: defaults, now: "2026-11-04T01:00:00Z",
			fire: "2026-11-04T01:00:00Z", day: "2026-11-04", kind: Nightly},
		{name: "in the window before the offset", timers: defaults, now: "2026-11-04T01:00:00Z", plus: true, delta: -time.Second,
			fire: "2026-11-04T01:00:00Z", day: "2026-11-04", kind: Nightly},
		{name: "at the offset", timers: defaults, now: "2026-11-04T01:00:00Z", plus: true,
			fire: "2026-11-05T01:00:00Z", day: "2026-11-05", kind: Nightly},
		{name: "in the window after the offset", timers: defaults, now: "2026-11-04T01:00:00Z", plus: true, delta: time.Second,
			fire: "2026-11-05T01:00:00Z", day: "2026-11-05", kind: Nightly},
		{name: "after the window", timers: defaults, now: "2026-11-04T03:30:00Z",
			fire: "2026-11-05T01:00:00Z", day: "2026-11-05", kind: Nightly},
		{name: "Saturday night before the 8th", timers: defaults, now: "2026-11-07T03:00:00Z",
			fire: "2026-11-08T01:00:00Z", day: "2026-11-08", kind: Weekly},
		{name: "Saturday night before the first Sunday", timers: defaults, now: "2026-10-31T03:00:00Z",
			fire: "2026-11-01T01:00:00Z", day: "2026-11-01", kind: Monthly},
		{name: "Saturday night before Sunday the 7th", timers: defaults, now: "2026-06-06T12:00:00Z",
			fire: "2026-06-07T01:00:00Z", day: "2026-06-07", kind: Monthly},
		{name: "Sunday after its run", timers: defaults, now: "2026-11-08T05:00:00Z",
			fire: "2026-11-09T01:00:00Z", day: "2026-11-09", kind: Nightly},
		{name: "Sunday in the window of its run", timers: defaults, now: "2026-11-08T01:00:00Z", plus: true, delta: -time.Second,
			fire: "2026-11-08T01:00:00Z", day: "2026-11-08", kind: Weekly},
		{name: "year end", timers: defaults, now: "2026-12-31T12:00:00Z",
			fire: "2027-01-01T01:00:00Z", day: "2027-01-01", kind: Nightly},
		// Los Angeles: 01:00 UTC is 17:00 or 18:00 the day before, so the Monday timer makes Sunday's.
		{name: "Los Angeles, Saturday evening", zone: "America/Los_Angeles", timers: defaults, now: "2026-11-08T03:00:00Z",
			fire: "2026-11-09T01:00:00Z", day: "2026-11-08", kind: Weekly},
		{name: "Los Angeles, first Sunday", zone: "America/Los_Angeles", timers: defaults, now: "2026-12-06T12:00:00Z",
			fire: "2026-12-07T01:00:00Z", day: "2026-12-06", kind: Monthly},
		{name: "Los Angeles, the monthly timer makes a nightly", zone: "America/Los_Angeles", timers: defaults,
			now: "2026-11-01T00:30:00Z", fire: "2026-11-01T01:00:00Z", day: "2026-10-31", kind: Nightly},
		{name: "Auckland, Sunday afternoon", zone: "Pacific/Auckland", timers: defaults, now: "2026-11-07T03:00:00Z",
			fire: "2026-11-08T01:00:00Z", day: "2026-11-08", kind: Weekly},
		// Overlapping schedules: one run per day, the day's first occurrence.
		{name: "overlap, Saturday night", timers: []string{"0 0 1 * * *", "0 0 1 * * 0", "0 0 3 * * 0"},
			now: "2026-11-07T03:00:00Z", fire: "2026-11-08T01:00:00Z", day: "2026-11-08", kind: Weekly},
		{name: "overlap, after Sunday's first run", timers: []string{"0 0 1 * * *", "0 0 1 * * 0", "0 0 3 * * 0"},
			now: "2026-11-08T01:00:00Z", plus: true, delta: time.Second,
			fire: "2026-11-09T01:00:00Z", day: "2026-11-09", kind: Nightly},
		{name: "overlap, in the window of Sunday's second", timers: []string{"0 0 1 * * *", "0 0 1 * * 0", "0 0 3 * * 0"},
			now: "2026-11-08T03:00:00Z", plus: true, delta: -time.Second,
			fire: "2026-11-09T01:00:00Z", day: "2026-11-09", kind: Nightly},
		{name: "overlap, the later timer listed first", timers: []string{"0 0 3 * * 0", "0 0 1 * * 0", "0 0 1 * * *"},
			now: "2026-11-07T03:00:00Z", fire: "2026-11-08T01:00:00Z", day: "2026-11-08", kind: Weekly},
		// A timer that fires more than once a day.
		{name: "twice a day, after the first", timers: []string{"0 0 1,13 * * *"},
			now: "2026-11-04T01:00:00Z", plus: true, delta: time.Second,
			fire: "2026-11-05T01:00:00Z", day: "2026-11-05", kind: Nightly},
		{name: "twice a day, in the second's window", timers: []string{"0 0 1,13 * * *"},
			now: "2026-11-04T13:00:00Z", plus: true, delta: -time.Second,
			fire: "2026-11-05T01:00:00Z", day: "2026-11-05", kind: Nightly},
		{name: "every minute", timers: []string{"0 * * * * *"}, now: "2026-11-04T12:00:30Z",
			fire: "2026-11-05T00:00:00Z", day: "2026-11-05", kind: Nightly},
		{name: "every minute, before the day's first offset", timers: []string{"0 * * * * *"},
			now: "2026-11-04T00:00:00Z", plus: true, delta: -time.Second,
			fire: "2026-11-04T00:00:00Z", day: "2026-11-04", kind: Nightly},
		{name: "every second", timers: []string{"* * * * * *"}, now: "2026-11-04T12:00:00Z",
			fire: "2026-11-05T00:00:00Z", day: "2026-11-05", kind: Nightly},
		{name: "every minute in Los Angeles", zone: "America/Los_Angeles", timers: []string{"0 * * * * *"},
			now: "2026-11-04T12:00:30Z", fire: "2026-11-05T08:00:00Z", day: "2026-11-05", kind: Nightly},
		{name: "every minute into a DST change day", zone: "Europe/Amsterdam", timers: []string{"0 * * * * *"},
			now: "2026-03-28T12:00:00Z", fire: "2026-03-28T23:00:00Z", day: "2026-03-29", kind: Weekly},
		{name: "every minute into a skipped midnight", zone: "America/Santiago", timers: []string{"0 * * * * *"},
			now: "2026-09-05T12:00:00Z", fire: "2026-09-06T04:00:00Z", day: "2026-09-06", kind: Monthly},
		{name: "every minute over a skipped day", zone: "Pacific/Apia", timers: []string{"0 * * * * *"},
			now: "2011-12-29T20:00:00Z", fire: "2011-12-30T10:00:00Z", day: "2011-12-31", kind: Nightly},
		// Timers that do not fire (again).
		{name: "no timers", timers: nil, now: "2026-11-04T00:00:00Z"},
		{name: "Sunday 29 February", timers: []string{"0 0 1 29 2 0"}, now: "2060-01-01T00:00:00Z",
			fire: "2060-02-29T01:00:00Z", day: "2060-02-29", kind: Weekly},
		// The next Sunday 29 February after 2088 is in 2128, beyond the 30 years ncrontab looks ahead.
		{name: "never again after 2088", timers: []string{"0 0 1 29 2 0"}, now: "2088-03-01T00:00:00Z"},
		{name: "never again, in the last one's window", timers: []string{"0 0 1 29 2 0"},
			now: "2088-02-29T01:00:00Z", plus: true, delta: -time.Second,
			fire: "2088-02-29T01:00:00Z", day: "2088-02-29", kind: Weekly},
		{name: "never again, after the last one", timers: []string{"0 0 1 29 2 0"},
			now: "2088-02-29T01:00:00Z", plus: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := plan(t, tc.zone, tc.timers...)
			now := at(t, tc.now).Add(tc.delta)
			if tc.plus {
				now = now.Add(offset)
			}
			run, ok := p.NextRun(envID, now)
			if tc.fire == "" {
				if ok {
					t.Fatalf("NextRun(%s) = %+v, want none", now.Format(time.RFC3339), run)
				}
				return
			}
			if !ok {
				t.Fatalf("NextRun(%s) = none, want %s", now.Format(time.RFC3339), tc.fire)
			}
			fire := at(t, tc.fire)
			if !run.Fire.Equal(fire) || !run.At.Equal(fire.Add(offset)) || run.Day != day(t, tc.day) || run.Kind != tc.kind {
				t.Errorf("NextRun(%s) = fire %s at %s day %s %s, want fire %s at %s day %s %s",
					now.Format(time.RFC3339), run.Fire.Format(time.RFC3339), run.At.Format(time.RFC3339), run.Day, run.Kind,
					tc.fire, fire.Add(offset).Format(time.RFC3339), tc.day, tc.kind)
			}
		})
	}
}

// Without a spread every environment runs at the fire itself.
func TestNextRunNoSpread(t *testing.T) {
	p := plan(t, "", defaults...)
	p.Spread = 0
	tests := []struct {
		name, now, fire string
	}{
		{"a second before", "2026-11-04T00:59:59Z", "2026-11-04T01:00:00Z"},
		{"at the fire", "2026-11-04T01:00:00Z", "2026-11-05T01:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run, ok := p.NextRun(envID, at(t, tc.now))
			want := at(t, tc.fire)
			if !ok || !run.Fire.Equal(want) || !run.At.Equal(want) {
				t.Errorf("NextRun(%s) = %+v %v, want fire and at %s", tc.now, run, ok, tc.fire)
			}
		})
		// A negative spread is none.
		t.Run(tc.name+", negative spread", func(t *testing.T) {
			p := p
			p.Spread = -100 * time.Hour
			run, ok := p.NextRun(envID, at(t, tc.now))
			want := at(t, tc.fire)
			if !ok || !run.Fire.Equal(want) || !run.At.Equal(want) {
				t.Errorf("NextRun(%s) = %+v %v, want fire and at %s", tc.now, run, ok, tc.fire)
			}
		})
	}
}

// Successive runs with the defaults: one a day, each day once, the kind from the date.
func TestNextRunSuccessive(t *testing.T) {
	for _, zone := range []string{"UTC", "Europe/Amsterdam", "America/Los_Angeles", "Pacific/Auckland"} {
		t.Run(zone, func(t *testing.T) {
			p := plan(t, zone, defaults...)
			loc := p.Calendar.Location()
			now := at(t, "2026-01-01T12:00:00Z")
			var prev Run
			for i := range 400 {
				run, ok := p.NextRun(envID, now)
				if !ok {
					t.Fatalf("run %d after %s: none", i, now)
				}
				if run.Fire.Hour() != 1 || run.Fire.Minute() != 0 || run.Fire.Second() != 0 {
					t.Fatalf("run %d fires at %s, want 01:00 UTC", i, run.Fire)
				}
				lt := run.Fire.In(loc)
				if d := (Day{lt.Year(), lt.Month(), lt.Day()}); run.Day != d {
					t.Fatalf("run %d is for %s, fire is on %s there", i, run.Day, d)
				}
				if i > 0 {
					if got := run.Fire.Sub(prev.Fire); got != 24*time.Hour {
						t.Fatalf("run %d %s fires %s after the one before", i, run.Day, got)
					}
					if want := prev.Day.AddDays(1); run.Day != want {
						t.Fatalf("run %d is for %s, want %s", i, run.Day, want)
					}
				}
				wantKind := Nightly
				if lt.Weekday() == time.Sunday {
					wantKind = Weekly
					if lt.Day() <= 7 {
						wantKind = Monthly
					}
				}
				if run.Kind != wantKind {
					t.Fatalf("run %d for %s is %s, want %s", i, run.Day, run.Kind, wantKind)
				}
				prev, now = run, run.At
			}
		})
	}
}

func days(t *testing.T, s ...string) []string {
	t.Helper()
	for _, d := range s {
		day(t, d) // a valid day
	}
	return s
}

func strs(ds []Day) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

func TestCoverage(t *testing.T) {
	overlap := []string{"0 0 1 * * *", "0 0 1 * * 0", "0 0 3 * * 0"}
	tests := []struct {
		name    string
		zone    string
		timers  []string
		from    string
		days    int
		shared  []string
		missing []string
	}{
		{name: "defaults, 60 days", timers: defaults, from: "2026-11-01T00:00:00Z", days: 60},
		{name: "defaults, 2026", timers: defaults, from: "2026-01-01T00:00:00Z", days: 365},
		{name: "defaults, a leap year", timers: defaults, from: "2028-01-01T00:00:00Z", days: 366},
		{name: "defaults, Kiritimati", zone: "Pacific/Kiritimati", timers: defaults, from: "2026-01-01T00:00:00Z", days: 365},
		{name: "defaults, Los Angeles", zone: "America/Los_Angeles", timers: defaults, from: "2026-01-01T00:00:00Z", days: 365},
		{name: "defaults, Amsterdam", zone: "Europe/Amsterdam", timers: defaults, from: "2026-01-01T00:00:00Z", days: 365},
		{name: "defaults, Auckland", zone: "Pacific/Auckland", timers: defaults, from: "2026-01-01T00:00:00Z", days: 365},
		// Nuuk is UTC-2 in winter and UTC-1 in summer, changing at 01:00 UTC: 01:00 UTC is 23:00 the
		// day before in winter and 00:00 the same day in summer. So 28 March 2026 has no occurrence and
		// 24 October has two (00:00 and 23:00).
		{name: "defaults, Nuuk", zone: "America/Nuuk", timers: defaults, from: "2026-01-01T12:00:00Z", days: 365,
			shared: days(t, "2026-10-24"), missing: days(t, "2026-03-28")},
		{name: "the first day's fire before from", timers: defaults, from: "2026-11-04T23:00:00Z", days: 2},
		{name: "no days", timers: defaults, from: "2026-11-04T00:00:00Z", days: 0},
		{name: "nightly on weekdays only", timers: []string{"0 0 1 * * 1-5"}, from: "2026-11-02T00:00:00Z", days: 14,
			missing: days(t, "2026-11-07", "2026-11-08", "2026-11-14", "2026-11-15")},
		{name: "nightly on weekdays with the default Sundays",
			timers: []string{"0 0 1 * * 1-5", "0 0 1 8-31 * 0", "0 0 1 1-7 * 0"}, from: "2026-10-26T00:00:00Z", days: 14,
			missing: days(t, "2026-10-31", "2026-11-07")},
		{name: "no monthly timer", timers: []string{"0 0 1 * * 1-6", "0 0 1 8-31 * 0"}, from: "2026-10-26T00:00:00Z", days: 21,
			missing: days(t, "2026-11-01")},
		{name: "overlapping", timers: overlap, from: "2026-11-02T00:00:00Z", days: 14,
			shared: days(t, "2026-11-08", "2026-11-15")},
		// The nightly timer on every day and the default Sunday timers fire at the same instant on Sundays:
		// two runs start, one makes the snapshot.
		{name: "two timers at the same instant", timers: []string{"0 0 1 * * *", "0 0 1 8-31 * 0", "0 0 1 1-7 * 0"},
			from: "2026-11-02T00:00:00Z", days: 14, shared: days(t, "2026-11-08", "2026-11-15")},
		{name: "twice a day", timers: []string{"0 0 1,13 * * *"}, from: "2026-11-02T00:00:00Z", days: 3,
			shared: days(t, "2026-11-02", "2026-11-03", "2026-11-04")},
		{name: "every minute", timers: []string{"0 * * * * *"}, from: "2026-11-02T00:00:00Z", days: 2,
			shared: days(t, "2026-11-02", "2026-11-03")},
		{name: "a skipped day is missing", zone: "Pacific/Apia", timers: defaults, from: "2011-12-28T12:00:00Z", days: 4,
			missing: days(t, "2011-12-30")},
		{name: "no timers", from: "2026-11-02T00:00:00Z", days: 3,
			missing: days(t, "2026-11-02", "2026-11-03", "2026-11-04")},
		{name: "a timer that stops", timers: []string{"0 0 1 29 2 0"}, from: "2088-02-28T00:00:00Z", days: 3,
			missing: days(t, "2088-02-28", "2088-03-01")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := plan(t, tc.zone, tc.timers...)
			shared, missing := p.Coverage(at(t, tc.from), tc.days)
			want := func(s []string) []string { return append([]string{}, s...) }
			if got := strs(shared); !slices.Equal(got, want(tc.shared)) {
				t.Errorf("shared = %v, want %v", got, tc.shared)
			}
			if got := strs(missing); !slices.Equal(got, want(tc.missing)) {
				t.Errorf("missing = %v, want %v", got, tc.missing)
			}
		})
	}
}
