package schedule

import (
	"slices"
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	ams := time.FixedZone("CET", 3600)
	days := func(n int) time.Time { return now.AddDate(0, 0, n) }
	// finished, failed and processing snapshots created and expiring at these instants.
	finished := func(id string, created, expires time.Time) Retained {
		return Retained{ID: id, Finished: true, CreatedAt: created, ExpiresAt: expires}
	}
	failed := func(id string, created, expires time.Time) Retained {
		return Retained{ID: id, CreatedAt: created, ExpiresAt: expires}
	}
	processing := func(id string, created, expires time.Time) Retained {
		return Retained{ID: id, Processing: true, CreatedAt: created, ExpiresAt: expires}
	}
	tests := []struct {
		name string
		all  []Retained
		keep bool
		due  []string
		kept string
	}{
		{name: "nothing", keep: true},
		{name: "expired, a newer Finished one exists", keep: true,
			all: []Retained{finished("a", days(-19), days(-5)), finished("b", days(-1), days(13))},
			due: []string{"a"}},
		{name: "expires exactly now", keep: true,
			all: []Retained{finished("a", days(-14), now), finished("b", days(-1), days(13))},
			due: []string{"a"}},
		{name: "expired a nanosecond ago", keep: true,
			all: []Retained{finished("a", days(-14), now.Add(-time.Nanosecond)), finished("b", days(-1), days(13))},
			due: []string{"a"}},
		{name: "expires a nanosecond from now", keep: true,
			all: []Retained{finished("a", days(-14), now.Add(time.Nanosecond)), finished("b", days(-1), days(13))}},
		{name: "expires now, written in another zone", keep: true,
			all: []Retained{finished("a", days(-14), now.In(ams)), finished("b", days(-1), days(13))},
			due: []string{"a"}},
		{name: "not yet expired", keep: false,
			all: []Retained{finished("a", days(-1), days(13)), failed("f", days(-1), days(13))}},
		{name: "processing is never due", keep: false,
			all: []Retained{processing("p", days(-30), days(-16))}},
		{name: "processing is never due, with the floor", keep: true,
			all: []Retained{processing("p", days(-30), days(-16)), finished("a", days(-1), days(13))}},
		{name: "zero ExpiresAt is never due", keep: false,
			all: []Retained{finished("a", days(-400), time.Time{}), failed("f", days(-400), time.Time{})}},
		{name: "the floor keeps the only Finished one", keep: true,
			all:  []Retained{finished("a", days(-20), days(-6))},
			kept: "a"},
		{name: "without the floor the only Finished one goes", keep: false,
			all: []Retained{finished("a", days(-20), days(-6))},
			due: []string{"a"}},
		{name: "the floor keeps the newest and nothing more", keep: true,
			all: []Retained{finished("a", days(-30), days(-16)), finished("b", days(-20), days(-6)),
				failed("f", days(-16), days(-2))},
			due: []string{"a", "f"}, kept: "b"},
		{name: "newer Failed ones do not replace the last good one", keep: true,
			all: []Retained{finished("a", days(-20), days(-6)), failed("f1", days(-16), days(-2)),
				failed("f2", days(-15), days(-1)), failed("f3", days(-1), days(13))},
			due: []string{"f1", "f2"}, kept: "a"},
		{name: "a Failed newest one is due after its expiry", keep: true,
			all: []Retained{failed("f", days(-15), days(-1))},
			due: []string{"f"}},
		{name: "a Failed one newer than the last good one is due", keep: true,
			all: []Retained{failed("f", days(-15), days(-1)), finished("a", days(-16), days(-2))},
			due: []string{"f"}, kept: "a"},
		{name: "without the floor all expired ones go", keep: false,
			all: []Retained{finished("a", days(-30), days(-16)), finished("b", days(-20), days(-6)),
				failed("f", days(-16), days(-2)), finished("c", days(-1), days(13))},
			due: []string{"a", "b", "f"}},
		{name: "a processing one is not Finished", keep: true,
			all:  []Retained{finished("a", days(-20), days(-6)), processing("p", days(0), time.Time{})},
			kept: "a"},
		{name: "newest among all, including ones not due", keep: true,
			all: []Retained{finished("a", days(-20), days(-6)), finished("b", days(-1), days(13))},
			due: []string{"a"}},
		{name: "newest by creation, not by expiry", keep: true,
			// a weekly made before a nightly outlives it, yet the nightly is the newest.
			all:  []Retained{finished("weekly", days(-19), days(73)), finished("nightly", days(-18), days(-4))},
			kept: "nightly"},
		{name: "the order given does not decide the newest", keep: true,
			all: []Retained{finished("b", days(-1), days(-1)), finished("a", days(-20), days(-6)),
				finished("c", days(-10), days(-2))},
			due: []string{"a", "c"}, kept: "b"},
		{name: "due ones in the order given", keep: false,
			all: []Retained{finished("c", days(-20), days(-6)), failed("a", days(-30), days(-16)),
				finished("b", days(-25), days(-11))},
			due: []string{"c", "a", "b"}},
		{name: "a tie in CreatedAt goes to the larger id", keep: true,
			all: []Retained{finished("a", days(-20), days(-6)), finished("b", days(-20), days(-6))},
			due: []string{"a"}, kept: "b"},
		{name: "a tie in CreatedAt goes to the larger id, listed first", keep: true,
			all: []Retained{finished("b", days(-20), days(-6)), finished("a", days(-20), days(-6))},
			due: []string{"a"}, kept: "b"},
		{name: "a tie across zones is a tie", keep: true,
			all: []Retained{finished("b", days(-20).In(ams), days(-6)), finished("a", days(-20), days(-6))},
			due: []string{"a"}, kept: "b"},
		{name: "a tie with a newer one is no tie", keep: true,
			all: []Retained{finished("b", days(-20), days(-6)), finished("a", days(-20).Add(time.Nanosecond), days(-6))},
			due: []string{"b"}, kept: "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			due, kept := Due(tc.all, now, tc.keep)
			if !slices.Equal(due, tc.due) {
				t.Errorf("due = %q, want %q", due, tc.due)
			}
			if kept != tc.kept {
				t.Errorf("kept = %q, want %q", kept, tc.kept)
			}
		})
	}
}

// Due leaves its input as it was.
func TestDueDoesNotReorder(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	all := []Retained{
		{ID: "b", Finished: true, CreatedAt: now.AddDate(0, 0, -1), ExpiresAt: now.AddDate(0, 0, -1)},
		{ID: "a", Finished: true, CreatedAt: now.AddDate(0, 0, -20), ExpiresAt: now.AddDate(0, 0, -6)},
	}
	before := slices.Clone(all)
	Due(all, now, true)
	if !slices.Equal(all, before) {
		t.Errorf("Due changed its input: %v, was %v", all, before)
	}
}
