package schedule

import (
	"strings"
	"testing"
	"time"
)

// at parses an RFC 3339 instant.
func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("parse time %q: %v", s, err)
	}
	return v
}

// day parses a day without ParseDay, so that tests of other things do not depend on it.
func day(t *testing.T, s string) Day {
	t.Helper()
	v, err := time.Parse(time.DateOnly, s)
	if err != nil {
		t.Fatalf("parse day %q: %v", s, err)
	}
	return Day{v.Year(), v.Month(), v.Day()}
}

func calendar(t *testing.T, zone string) Calendar {
	t.Helper()
	c, err := LoadCalendar(zone)
	if err != nil {
		t.Fatalf("LoadCalendar(%q): %v", zone, err)
	}
	return c
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		name string
		day  string
		want Kind
	}{
		// November 2026 starts on a Sunday.
		{"first Sunday is the 1st", "2026-11-01", Monthly},
		{"Monday after a monthly", "2026-11-02", Nightly},
		{"Saturday before the second Sunday", "2026-11-07", Nightly},
		{"the 8th as a Sunday", "2026-11-08", Weekly},
		{"last Sunday of November", "2026-11-29", Weekly},
		{"Monday the 30th", "2026-11-30", Nightly},
		// June 2026 starts on a Monday.
		{"the 1st as a Monday", "2026-06-01", Nightly},
		{"Saturday the 6th", "2026-06-06", Nightly},
		{"first Sunday is the 7th", "2026-06-07", Monthly},
		{"Monday the 8th", "2026-06-08", Nightly},
		{"second Sunday the 14th", "2026-06-14", Weekly},
		// February 2027 starts on a Monday; August 2026 on a Saturday.
		{"first Sunday the 7th in February", "2027-02-07", Monthly},
		{"Saturday the 1st", "2026-08-01", Nightly},
		{"first Sunday the 2nd", "2026-08-02", Monthly},
		{"Sunday the 9th", "2026-08-09", Weekly},
		{"leap day on a Tuesday", "2028-02-29", Nightly},
		{"leap day on a Sunday is weekly", "2032-02-29", Weekly},
		{"Sunday the 31st", "2026-05-31", Weekly},
		{"Sunday 3 January 2027", "2027-01-03", Monthly},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := KindOf(day(t, tc.day)); got != tc.want {
				t.Errorf("KindOf(%s) = %s, want %s", tc.day, got, tc.want)
			}
		})
	}
}

// An environment first backed up on 3 November 2026, after that month's first Sunday (the 1st), has no
// monthly snapshot in November: the only monthly until 6 December is 6 December's.
func TestKindOfFirstSundayMissed(t *testing.T) {
	sundays := map[string]Kind{
		"2026-11-08": Weekly,
		"2026-11-15": Weekly,
		"2026-11-22": Weekly,
		"2026-11-29": Weekly,
		"2026-12-06": Monthly, // 1 December 2026 is a Tuesday
	}
	first, last := day(t, "2026-11-03"), day(t, "2026-12-06")
	monthlies, days := 0, 0
	for d := first; d != last.AddDays(1); d = d.AddDays(1) {
		days++
		want, ok := sundays[d.String()]
		if !ok {
			want = Nightly
		}
		got := KindOf(d)
		if got != want {
			t.Errorf("KindOf(%s) = %s, want %s", d, got, want)
		}
		if got == Monthly {
			monthlies++
		}
	}
	if days != 34 {
		t.Errorf("walked %d days from 3 November to 6 December, want 34", days)
	}
	if monthlies != 1 {
		t.Errorf("%d monthly days, want 1", monthlies)
	}
}

func TestKindAutomatic(t *testing.T) {
	tests := []struct {
		kind Kind
		want bool
	}{
		{Nightly, true}, {Weekly, true}, {Monthly, true}, {Manual, false}, {Uploaded, false}, {"", false},
	}
	for _, tc := range tests {
		t.Run(string(tc.kind), func(t *testing.T) {
			if got := tc.kind.Automatic(); got != tc.want {
				t.Errorf("%q.Automatic() = %v, want %v", tc.kind, got, tc.want)
			}
		})
	}
}

func TestDayOfInZone(t *testing.T) {
	tests := []struct {
		name    string
		zone    string
		instant string
		want    string
		kind    Kind
	}{
		{"Saturday in UTC", "UTC", "2026-11-07T12:00:00Z", "2026-11-07", Nightly},
		{"Saturday in UTC is Sunday the 8th in Auckland", "Pacific/Auckland", "2026-11-07T12:00:00Z", "2026-11-08", Weekly},
		{"Saturday in UTC is the first Sunday in Auckland", "Pacific/Auckland", "2026-06-06T13:00:00Z", "2026-06-07", Monthly},
		{"the hour before Auckland's midnight", "Pacific/Auckland", "2026-06-06T11:59:59Z", "2026-06-06", Nightly},
		{"first Sunday in UTC is Saturday in Los Angeles", "America/Los_Angeles", "2026-11-01T01:00:00Z", "2026-10-31", Nightly},
		{"Monday in UTC is the first Sunday in Los Angeles", "America/Los_Angeles", "2026-12-07T01:00:00Z", "2026-12-06", Monthly},
		{"Monday in UTC is Sunday the 8th in Los Angeles", "America/Los_Angeles", "2026-11-09T01:00:00Z", "2026-11-08", Weekly},
		{"zero calendar is UTC", "", "2026-11-01T23:59:59Z", "2026-11-01", Monthly},
		{"Amsterdam an hour past UTC midnight", "Europe/Amsterdam", "2026-10-31T23:30:00Z", "2026-11-01", Monthly},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := calendar(t, tc.zone)
			got := c.DayOf(at(t, tc.instant))
			if want := day(t, tc.want); got != want {
				t.Fatalf("DayOf(%s) in %s = %s, want %s", tc.instant, tc.zone, got, want)
			}
			if k := KindOf(got); k != tc.kind {
				t.Errorf("KindOf(%s) = %s, want %s", got, k, tc.kind)
			}
		})
	}
	if got, want := (Calendar{}).DayOf(at(t, "2026-11-01T23:59:59Z")), day(t, "2026-11-01"); got != want {
		t.Errorf("zero Calendar DayOf = %s, want %s", got, want)
	}
}

// A timer at 01:00 UTC falls on exactly one local day each day of 2026 in these zones, across both
// daylight saving changes: the same day east of UTC, the day before in Los Angeles.
func TestDayOfDailyTimerAcrossDST(t *testing.T) {
	tests := []struct {
		zone  string
		shift int // local day of the UTC day's 01:00, in days
	}{
		{"Europe/Amsterdam", 0},     // 02:00 or 03:00
		{"America/Los_Angeles", -1}, // 17:00 or 18:00 the day before
		{"Pacific/Auckland", 0},     // 13:00 or 14:00
		{"Pacific/Kiritimati", 0},   // 15:00
	}
	for _, tc := range tests {
		t.Run(tc.zone, func(t *testing.T) {
			c := calendar(t, tc.zone)
			seen := map[Day]bool{}
			for d := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC); d.Year() == 2026; d = d.Add(24 * time.Hour) {
				u := d.AddDate(0, 0, tc.shift)
				want := Day{u.Year(), u.Month(), u.Day()}
				got := c.DayOf(d)
				if got != want {
					t.Errorf("DayOf(%s) = %s, want %s", d.Format(time.RFC3339), got, want)
				}
				if seen[got] {
					t.Errorf("%s seen twice", got)
				}
				seen[got] = true
			}
			if len(seen) != 365 {
				t.Errorf("%d distinct days in 2026, want 365", len(seen))
			}
		})
	}
}

func TestExpiresAt(t *testing.T) {
	tests := []struct {
		name    string
		zone    string
		kind    Kind
		created string
		want    string
	}{
		// 14 days for nightly, manual and uploaded.
		{"nightly", "UTC", Nightly, "2026-11-04T01:23:45Z", "2026-11-18T01:23:45Z"},
		{"manual", "UTC", Manual, "2026-11-04T01:23:45Z", "2026-11-18T01:23:45Z"},
		{"uploaded", "UTC", Uploaded, "2026-11-04T01:23:45Z", "2026-11-18T01:23:45Z"},
		{"nightly across the year end", "UTC", Nightly, "2026-12-25T01:00:00Z", "2027-01-08T01:00:00Z"},
		{"nightly across February", "UTC", Nightly, "2026-02-20T01:00:00Z", "2026-03-06T01:00:00Z"},
		{"nightly across a leap February", "UTC", Nightly, "2028-02-20T01:00:00Z", "2028-03-05T01:00:00Z"},
		{"nightly keeps nanoseconds", "UTC", Nightly, "2026-11-04T01:00:00.123456789Z", "2026-11-18T01:00:00.123456789Z"},
		// 3 calendar months for weekly.
		{"weekly, the spec's example", "UTC", Weekly, "2026-12-03T03:18:00Z", "2027-03-03T03:18:00Z"},
		{"weekly 31 January to 30 April", "UTC", Weekly, "2026-01-31T01:00:00Z", "2026-04-30T01:00:00Z"},
		{"weekly 31 January of a leap year", "UTC", Weekly, "2028-01-31T01:00:00Z", "2028-04-30T01:00:00Z"},
		{"weekly 30 November to 28 February", "UTC", Weekly, "2026-11-30T01:00:00Z", "2027-02-28T01:00:00Z"},
		{"weekly 30 November to 29 February", "UTC", Weekly, "2027-11-30T01:00:00Z", "2028-02-29T01:00:00Z"},
		{"weekly 29 November to 28 February", "UTC", Weekly, "2025-11-29T01:00:00Z", "2026-02-28T01:00:00Z"},
		{"weekly 29 November to 29 February", "UTC", Weekly, "2027-11-29T01:00:00Z", "2028-02-29T01:00:00Z"},
		{"weekly 31 March to 30 June", "UTC", Weekly, "2026-03-31T01:00:00Z", "2026-06-30T01:00:00Z"},
		{"weekly 31 May to 31 August", "UTC", Weekly, "2026-05-31T01:00:00Z", "2026-08-31T01:00:00Z"},
		{"weekly 31 August to 30 November", "UTC", Weekly, "2026-08-31T01:00:00Z", "2026-11-30T01:00:00Z"},
		{"weekly 31 October to 31 January", "UTC", Weekly, "2026-10-31T01:00:00Z", "2027-01-31T01:00:00Z"},
		{"weekly 31 December to 31 March", "UTC", Weekly, "2026-12-31T23:59:59Z", "2027-03-31T23:59:59Z"},
		{"weekly 29 February to 29 May", "UTC", Weekly, "2028-02-29T01:00:00Z", "2028-05-29T01:00:00Z"},
		// 1 calendar year for monthly.
		{"monthly", "UTC", Monthly, "2026-11-01T01:00:00Z", "2027-11-01T01:00:00Z"},
		{"monthly 29 February to 28 February", "UTC", Monthly, "2028-02-29T01:00:00Z", "2029-02-28T01:00:00Z"},
		{"monthly 29 February 2024", "UTC", Monthly, "2024-02-29T06:00:00Z", "2025-02-28T06:00:00Z"},
		{"monthly 28 February to 28 February of a leap year", "UTC", Monthly, "2027-02-28T01:00:00Z", "2028-02-28T01:00:00Z"},
		{"monthly 31 December", "UTC", Monthly, "2026-12-31T01:00:00Z", "2027-12-31T01:00:00Z"},
		// Wall clock of the zone, across daylight saving.
		{"nightly across the March change in Amsterdam", "Europe/Amsterdam", Nightly,
			"2026-03-20T01:30:00Z",  // 02:30 CET
			"2026-04-03T00:30:00Z"}, // 02:30 CEST, 13 days 23 hours later
		{"nightly across the October change in Amsterdam", "Europe/Amsterdam", Nightly,
			"2026-10-20T01:30:00Z",  // 03:30 CEST
			"2026-11-03T02:30:00Z"}, // 03:30 CET, 14 days 1 hour later
		{"weekly across the October change in Amsterdam", "Europe/Amsterdam", Weekly,
			"2026-08-09T01:18:00Z",  // 03:18 CEST
			"2026-11-09T02:18:00Z"}, // 03:18 CET
		{"weekly across the March change in Amsterdam", "Europe/Amsterdam", Weekly,
			"2026-12-03T02:18:00Z",  // 03:18 CET
			"2027-03-03T02:18:00Z"}, // 03:18 CET; 2027's change is on 28 March
		{"weekly from winter to summer in Amsterdam", "Europe/Amsterdam", Weekly,
			"2026-02-01T02:18:00Z",  // 03:18 CET
			"2026-05-01T01:18:00Z"}, // 03:18 CEST
		{"monthly summer to summer in Amsterdam", "Europe/Amsterdam", Monthly,
			"2026-07-05T01:30:00Z", "2027-07-05T01:30:00Z"}, // 03:30 CEST both
		{"weekly across the March change in Los Angeles", "America/Los_Angeles", Weekly,
			"2026-01-11T09:00:00Z",  // 01:00 PST
			"2026-04-11T08:00:00Z"}, // 01:00 PDT
		// The month end is clamped in the calendar's zone, not in UTC: 23:30 UTC on 31 January is
		// 00:30 CET on 1 February in Amsterdam, so + 3 months is 00:30 CEST on 1 May.
		{"month end in the zone, not in UTC", "Europe/Amsterdam", Weekly,
			"2026-01-31T23:30:00Z", "2026-04-30T22:30:00Z"},
		{"month end in UTC for the same instant", "UTC", Weekly,
			"2026-01-31T23:30:00Z", "2026-04-30T23:30:00Z"},
		{"31 January in Los Angeles is 1 February in UTC", "America/Los_Angeles", Weekly,
			"2026-02-01T07:00:00Z",  // 23:00 PST on 31 January
			"2026-05-01T06:00:00Z"}, // 23:00 PDT on 30 April
		// A wall time the target day lacks: 02:30 on 29 March 2026 does not exist in Amsterdam (02:00
		// CET jumps to 03:00 CEST). Go's time.Date moves it forward by the gap, to 03:30 CEST, which is
		// 01:30 UTC: exactly 14×24 hours after 02:30 CET on 15 March.
		{"nightly into the March gap", "Europe/Amsterdam", Nightly,
			"2026-03-15T01:30:00Z", "2026-03-29T01:30:00Z"},
		{"weekly into the March gap", "Europe/Amsterdam", Weekly,
			"2025-12-29T01:30:00Z", "2026-03-29T01:30:00Z"},
		{"monthly into the March gap", "Europe/Amsterdam", Monthly,
			"2025-03-29T01:30:00Z", "2026-03-29T01:30:00Z"},
		// A wall time the target day has twice: 02:30 on 25 October 2026 in Amsterdam is 00:30 UTC
		// (CEST) and 01:30 UTC (CET); time.Date takes the later, CET.
		{"nightly into the October repeat", "Europe/Amsterdam", Nightly,
			"2026-10-11T00:30:00Z", "2026-10-25T01:30:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := calendar(t, tc.zone)
			got := c.ExpiresAt(tc.kind, at(t, tc.created))
			want := at(t, tc.want)
			if !got.Equal(want) {
				t.Errorf("ExpiresAt(%s, %s) in %s = %s, want %s", tc.kind, tc.created, tc.zone,
					got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
			}
			if got.Location() != time.UTC {
				t.Errorf("ExpiresAt is in %s, want UTC", got.Location())
			}
		})
	}
}

// The absolute length of a retention follows the wall clock: an hour short or long across a change.
func TestExpiresAtDurationAcrossDST(t *testing.T) {
	ams := calendar(t, "Europe/Amsterdam")
	tests := []struct {
		name    string
		kind    Kind
		created string
		want    time.Duration
	}{
		{"spring, 02:30 CET to 02:30 CEST", Nightly, "2026-03-20T01:30:00Z", 14*24*time.Hour - time.Hour},
		{"autumn, 03:30 CEST to 03:30 CET", Nightly, "2026-10-20T01:30:00Z", 14*24*time.Hour + time.Hour},
		{"no change in between", Nightly, "2026-06-01T01:30:00Z", 14 * 24 * time.Hour},
		{"the gap is within the hour", Nightly, "2026-03-15T01:30:00Z", 14 * 24 * time.Hour},
		{"weekly 9 August to 9 November", Weekly, "2026-08-09T01:18:00Z", 92*24*time.Hour + time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			created := at(t, tc.created)
			if got := ams.ExpiresAt(tc.kind, created).Sub(created); got != tc.want {
				t.Errorf("retention = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestFailedExpiresAt(t *testing.T) {
	tests := []struct {
		name    string
		zone    string
		created string
		want    string
	}{
		{"UTC", "UTC", "2026-11-04T01:00:00Z", "2026-11-18T01:00:00Z"},
		{"across the year end", "UTC", "2026-12-31T23:00:00Z", "2027-01-14T23:00:00Z"},
		{"spring change in Amsterdam", "Europe/Amsterdam", "2026-03-20T01:30:00Z", "2026-04-03T00:30:00Z"},
		{"autumn change in Amsterdam", "Europe/Amsterdam", "2026-10-20T01:30:00Z", "2026-11-03T02:30:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := calendar(t, tc.zone).FailedExpiresAt(at(t, tc.created))
			if want := at(t, tc.want); !got.Equal(want) {
				t.Errorf("FailedExpiresAt(%s) = %s, want %s", tc.created, got.Format(time.RFC3339), tc.want)
			}
			if got.Location() != time.UTC {
				t.Errorf("FailedExpiresAt is in %s, want UTC", got.Location())
			}
		})
	}
}

func TestLoadCalendar(t *testing.T) {
	tests := []struct {
		name    string
		zone    string
		want    string // the Location's name; "" when refused
		instant string // an instant and its day in the zone
		day     string
	}{
		{"empty is UTC", "", "UTC", "2026-11-01T23:30:00Z", "2026-11-01"},
		{"UTC", "UTC", "UTC", "2026-11-01T23:30:00Z", "2026-11-01"},
		{"Europe/Amsterdam", "Europe/Amsterdam", "Europe/Amsterdam", "2026-11-01T23:30:00Z", "2026-11-02"},
		{"Etc/GMT+1 is one hour west", "Etc/GMT+1", "Etc/GMT+1", "2026-11-01T00:30:00Z", "2026-10-31"},
		{"Local", "Local", "", "", ""},
		{"no such zone", "Mars/Olympus", "", "", ""},
		{"an offset is not a name", "utc+1", "", "", ""},
		{"spaces", " UTC", "", "", ""},
		{"a path", "../../etc/passwd", "", "", ""},
		{"an absolute path", "/usr/share/zoneinfo/UTC", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadCalendar(tc.zone)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("LoadCalendar(%q) = %s, want an error", tc.zone, c.Location())
				}
				if !strings.Contains(err.Error(), `"`+tc.zone+`"`) {
					t.Errorf("error %q does not name %q", err, tc.zone)
				}
				if c != (Calendar{}) {
					t.Errorf("a refused zone returned %v, want the zero Calendar", c.Location())
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadCalendar(%q): %v", tc.zone, err)
			}
			if got := c.Location().String(); got != tc.want {
				t.Errorf("Location() = %s, want %s", got, tc.want)
			}
			if got := c.DayOf(at(t, tc.instant)); got != day(t, tc.day) {
				t.Errorf("DayOf(%s) = %s, want %s", tc.instant, got, tc.day)
			}
		})
	}
}

func TestDayStringParse(t *testing.T) {
	tests := []struct {
		name string
		day  Day
		text string
	}{
		{"ordinary", Day{2026, time.December, 6}, "2026-12-06"},
		{"first of the year", Day{2027, time.January, 1}, "2027-01-01"},
		{"leap day", Day{2028, time.February, 29}, "2028-02-29"},
		{"year with leading zeros", Day{999, time.March, 5}, "0999-03-05"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.day.String(); got != tc.text {
				t.Errorf("String() = %q, want %q", got, tc.text)
			}
			got, err := ParseDay(tc.text)
			if err != nil {
				t.Fatalf("ParseDay(%q): %v", tc.text, err)
			}
			if got != tc.day {
				t.Errorf("ParseDay(%q) = %+v, want %+v", tc.text, got, tc.day)
			}
		})
	}
}

func TestParseDayRefuses(t *testing.T) {
	for _, s := range []string{
		"", "2026-12-6", "2026-2-03", "26-12-06", "2026/12/06", "2026-12-06T00:00:00Z", " 2026-12-06",
		"2026-12-06 ", "2026-13-01", "2026-00-10", "2026-12-00", "2026-12-32", "2027-02-29", "2026-04-31",
		"06-12-2026", "today",
	} {
		t.Run(s, func(t *testing.T) {
			d, err := ParseDay(s)
			if err == nil {
				t.Fatalf("ParseDay(%q) = %s, want an error", s, d)
			}
			if !strings.Contains(err.Error(), `"`+s+`"`) {
				t.Errorf("error %q does not name %q", err, s)
			}
			if !d.IsZero() {
				t.Errorf("ParseDay(%q) returned %+v with its error, want the zero Day", s, d)
			}
		})
	}
}

func TestDayIsZero(t *testing.T) {
	if !(Day{}).IsZero() {
		t.Error("Day{}.IsZero() = false")
	}
	if (Day{2026, time.January, 1}).IsZero() {
		t.Error("2026-01-01 IsZero() = true")
	}
}

func TestDayAddDays(t *testing.T) {
	tests := []struct {
		name string
		from string
		n    int
		want string
	}{
		{"zero", "2026-11-04", 0, "2026-11-04"},
		{"next day", "2026-11-04", 1, "2026-11-05"},
		{"month end", "2026-11-30", 1, "2026-12-01"},
		{"31-day month end", "2026-10-31", 1, "2026-11-01"},
		{"year end", "2026-12-31", 1, "2027-01-01"},
		{"back over the year end", "2027-01-01", -1, "2026-12-31"},
		{"February of a common year", "2027-02-28", 1, "2027-03-01"},
		{"into a leap day", "2028-02-28", 1, "2028-02-29"},
		{"out of a leap day", "2028-02-29", 1, "2028-03-01"},
		{"back into a leap day", "2028-03-01", -1, "2028-02-29"},
		{"2100 is not a leap year", "2100-02-28", 1, "2100-03-01"},
		{"2000 was a leap year", "2000-02-28", 1, "2000-02-29"},
		{"two weeks", "2026-12-25", 14, "2027-01-08"},
		{"a leap year of days", "2028-01-01", 366, "2029-01-01"},
		{"a common year of days", "2026-01-01", 365, "2027-01-01"},
		{"a DST change day is one day", "2026-03-29", 1, "2026-03-30"},
		{"back a month", "2026-03-15", -28, "2026-02-15"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := day(t, tc.from).AddDays(tc.n); got != day(t, tc.want) {
				t.Errorf("%s.AddDays(%d) = %s, want %s", tc.from, tc.n, got, tc.want)
			}
		})
	}
}

func TestDayBefore(t *testing.T) {
	tests := []struct {
		name string
		d, o Day
		want bool
	}{
		{"earlier day", Day{2026, 11, 4}, Day{2026, 11, 5}, true},
		{"later day", Day{2026, 11, 5}, Day{2026, 11, 4}, false},
		{"same day", Day{2026, 11, 4}, Day{2026, 11, 4}, false},
		{"earlier month, later day", Day{2026, 9, 30}, Day{2026, 10, 1}, true},
		{"earlier year, later month", Day{2026, 12, 31}, Day{2027, 1, 1}, true},
		{"later year", Day{2027, 1, 1}, Day{2026, 12, 31}, false},
		{"zero is before any day", Day{}, Day{2026, 1, 1}, true},
		{"a five-digit year", Day{9999, 12, 31}, Day{10000, 1, 1}, true},
		{"after a five-digit year", Day{10000, 1, 1}, Day{9999, 12, 31}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.d.Before(tc.o); got != tc.want {
				t.Errorf("%s.Before(%s) = %v, want %v", tc.d, tc.o, got, tc.want)
			}
		})
	}
}

func TestDayWeekday(t *testing.T) {
	tests := []struct {
		day  string
		want time.Weekday
	}{
		{"2026-11-01", time.Sunday},
		{"2026-11-07", time.Saturday},
		{"2026-06-01", time.Monday},
		{"2026-12-01", time.Tuesday},
		{"2028-02-29", time.Tuesday},
		{"2032-02-29", time.Sunday},
		{"2027-01-01", time.Friday},
		{"2026-03-29", time.Sunday}, // a DST change day in Europe
	}
	for _, tc := range tests {
		t.Run(tc.day, func(t *testing.T) {
			if got := day(t, tc.day).Weekday(); got != tc.want {
				t.Errorf("%s.Weekday() = %s, want %s", tc.day, got, tc.want)
			}
		})
	}
}

func TestLastSecond(t *testing.T) {
	tests := []struct {
		name    string
		zone    string
		instant string
		want    string
	}{
		{"UTC", "UTC", "2026-11-04T01:00:00Z", "2026-11-04T23:59:59Z"},
		{"UTC midnight", "UTC", "2026-11-04T00:00:00Z", "2026-11-04T23:59:59Z"},
		{"UTC last second", "UTC", "2026-11-04T23:59:59Z", "2026-11-04T23:59:59Z"},
		{"UTC, within the last second", "UTC", "2026-11-04T23:59:59.5Z", "2026-11-04T23:59:59Z"},
		{"UTC, a fraction of a second", "UTC", "2026-11-04T01:00:00.25Z", "2026-11-04T23:59:59Z"},
		{"Los Angeles", "America/Los_Angeles", "2026-11-04T12:00:00Z", "2026-11-05T07:59:59Z"},
		{"Amsterdam, 23-hour day", "Europe/Amsterdam", "2026-03-29T01:00:00Z", "2026-03-29T21:59:59Z"},
		{"Amsterdam, 25-hour day", "Europe/Amsterdam", "2026-10-25T01:00:00Z", "2026-10-25T22:59:59Z"},
		{"Beirut, midnight skipped", "Asia/Beirut", "2026-03-28T12:00:00Z", "2026-03-28T21:59:59Z"},
		// Santiago skips from 23:59:59 -04 on 5 September to 01:00 -03 on the 6th; time.Date of the 6th's
		// midnight is 23:00 on the 5th.
		{"Santiago, midnight skipped", "America/Santiago", "2026-09-05T12:00:00Z", "2026-09-06T03:59:59Z"},
		{"Santiago, 23:00 twice", "America/Santiago", "2026-04-04T12:00:00Z", "2026-04-05T03:59:59Z"},
		// Havana has 00:00 to 01:00 twice on 1 November.
		{"Havana, the day before midnight twice", "America/Havana", "2026-10-31T12:00:00Z", "2026-11-01T03:59:59Z"},
		{"Havana, midnight twice", "America/Havana", "2026-11-01T04:00:00Z", "2026-11-02T04:59:59Z"},
		// Samoa skipped 30 December 2011: the 29th (UTC-10) is followed by the 31st (UTC+14).
		{"Apia, a day skipped", "Pacific/Apia", "2011-12-29T12:00:00Z", "2011-12-30T09:59:59Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := calendar(t, tc.zone)
			got := c.lastSecond(at(t, tc.instant))
			if want := at(t, tc.want); !got.Equal(want) {
				t.Errorf("lastSecond(%s) in %s = %s, want %s", tc.instant, tc.zone, got.UTC().Format(time.RFC3339), tc.want)
			}
		})
	}
}
