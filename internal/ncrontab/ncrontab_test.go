package ncrontab

import (
	"strings"
	"testing"
	"time"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("parse time %q: %v", s, err)
	}
	return v
}

func TestScheduleNext(t *testing.T) {
	tests := []struct {
		name  string
		expr  string
		after string
		want  []string // successive occurrences
	}{
		{"first Sunday of the month", "0 0 1 1-7 * 0", "2024-01-01T00:00:00Z",
			[]string{"2024-01-07T01:00:00Z", "2024-02-04T01:00:00Z", "2024-03-03T01:00:00Z", "2024-04-07T01:00:00Z"}},
		{"Sundays other than the first", "0 0 1 8-31 * 0", "2024-01-01T00:00:00Z",
			[]string{"2024-01-14T01:00:00Z", "2024-01-21T01:00:00Z", "2024-01-28T01:00:00Z", "2024-02-11T01:00:00Z"}},
		{"Monday to Saturday", "0 0 1 * * 1-6", "2024-01-05T12:00:00Z", // a Friday
			[]string{"2024-01-06T01:00:00Z", "2024-01-08T01:00:00Z", "2024-01-09T01:00:00Z"}},
		{"every five minutes", "0 */5 * * * *", "2024-01-01T23:52:30Z",
			[]string{"2024-01-01T23:55:00Z", "2024-01-02T00:00:00Z", "2024-01-02T00:05:00Z"}},
		{"strictly after an occurrence", "0 */5 * * * *", "2024-01-01T00:05:00Z",
			[]string{"2024-01-01T00:10:00Z"}},
		{"every second", "* * * * * *", "2024-01-01T00:00:00.5Z",
			[]string{"2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z"}},
		{"list and range with step", "10,40 0-30/15 8 * * *", "2024-03-01T00:00:00Z",
			[]string{"2024-03-01T08:00:10Z", "2024-03-01T08:00:40Z", "2024-03-01T08:15:10Z", "2024-03-01T08:15:40Z",
				"2024-03-01T08:30:10Z", "2024-03-01T08:30:40Z", "2024-03-02T08:00:10Z"}},
		{"value with step runs to the maximum", "0 0 20/2 * * *", "2024-01-01T00:00:00Z",
			[]string{"2024-01-01T20:00:00Z", "2024-01-01T22:00:00Z", "2024-01-02T20:00:00Z"}},
		{"five fields mean second zero", "30 2 * * *", "2024-01-01T00:00:00Z",
			[]string{"2024-01-01T02:30:00Z", "2024-01-02T02:30:00Z"}},
		{"leap day", "0 0 0 29 2 *", "2024-03-01T00:00:00Z",
			[]string{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"}},
		{"names", "0 0 6 * jan,jul sat", "2024-01-01T00:00:00Z",
			[]string{"2024-01-06T06:00:00Z", "2024-01-13T06:00:00Z", "2024-01-20T06:00:00Z", "2024-01-27T06:00:00Z", "2024-07-06T06:00:00Z"}},
		{"month end across year", "0 59 23 31 12 *", "2024-12-31T23:59:00Z",
			[]string{"2025-12-31T23:59:00Z"}},
		{"non-UTC input is converted", "0 0 1 * * *", "2024-01-01T03:30:00+02:00",
			[]string{"2024-01-02T01:00:00Z"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(tc.expr)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.expr, err)
			}
			at := mustTime(t, tc.after)
			for i, w := range tc.want {
				got := s.Next(at)
				if want := mustTime(t, w); !got.Equal(want) {
					t.Fatalf("occurrence %d after %s: got %s, want %s", i+1, at.Format(time.RFC3339Nano), got.Format(time.RFC3339), w)
				}
				if got.Location() != time.UTC {
					t.Fatalf("occurrence %d: got location %s, want UTC", i+1, got.Location())
				}
				at = got
			}
		})
	}
}

func TestParseScheduleRejects(t *testing.T) {
	tests := []struct {
		name, expr, wantErr string
	}{
		{"empty", "", "want 6 fields"},
		{"four fields", "0 0 * *", "want 6 fields"},
		{"seven fields", "0 0 0 * * * 2024", "want 6 fields"},
		{"second out of range", "60 * * * * *", "second field"},
		{"hour out of range", "0 0 24 * * *", "out of range 0-23"},
		{"day zero", "0 0 0 0 * *", "out of range 1-31"},
		{"month thirteen", "0 0 0 1 13 *", "month field"},
		{"day-of-week seven", "0 0 0 * * 7", "day-of-week field"},
		{"reversed range", "0 0 5-1 * * *", "reversed"},
		{"zero step", "0 */0 * * * *", "step"},
		{"not a number", "0 x * * * *", "not a number"},
		{"empty list item", "0 1,,2 * * * *", "empty list item"},
		{"never occurs", "0 0 0 30 2 *", "never occurs"},
		{"unknown name", "0 0 0 * foo *", "not a number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.expr)
			if err == nil {
				t.Fatalf("Parse(%q): got nil error, want one containing %q", tc.expr, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Parse(%q): got error %q, want it to contain %q", tc.expr, err, tc.wantErr)
			}
		})
	}
}

func TestScheduleMinPeriod(t *testing.T) {
	tests := []struct {
		expr string
		want time.Duration
	}{
		{"*/10 * * * * *", 10 * time.Second},
		{"0 * * * * *", time.Minute},
		{"0 0 1 * * *", 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			s, err := Parse(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.MinPeriod(mustTime(t, "2024-01-01T00:00:00Z")); got != tc.want {
				t.Fatalf("minPeriod: got %s, want %s", got, tc.want)
			}
		})
	}
}
