// Package ncrontab reads the NCRONTAB expressions of Azure Functions timer triggers and computes their
// occurrences: the local Functions host fires timers with it, and the service computes when its
// automatic backups next run.
package ncrontab

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is an NCRONTAB expression as the Functions timer trigger reads it: six fields
// "second minute hour day month day-of-week" (five fields mean second 0), evaluated in UTC. Unlike Vixie
// cron, a restricted day-of-month and a restricted day-of-week must BOTH match.
type Schedule struct {
	expr                                   string
	second, minute, hour, day, month, dows fieldSet
}

// fieldSet is a bitmap of allowed values (0..63).
type fieldSet uint64

func (s fieldSet) has(v int) bool { return s&(1<<uint(v)) != 0 }

type fieldSpec struct {
	name     string
	min, max int
	names    []string // optional names for min.. (month, day-of-week)
}

var (
	monthNames = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	dayNames   = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
	specs      = [6]fieldSpec{
		{name: "second", min: 0, max: 59},
		{name: "minute", min: 0, max: 59},
		{name: "hour", min: 0, max: 23},
		{name: "day", min: 1, max: 31},
		{name: "month", min: 1, max: 12, names: monthNames},
		{name: "day-of-week", min: 0, max: 6, names: dayNames},
	}
)

// searchYears bounds Next: a schedule with no occurrence in this many years never fires.
const searchYears = 30

// Parse parses an NCRONTAB expression. It rejects a malformed field, a value out of range and a
// schedule that never fires (such as 30 February).
func Parse(expr string) (*Schedule, error) {
	fields := strings.Fields(expr)
	switch len(fields) {
	case 5:
		fields = append([]string{"0"}, fields...)
	case 6:
	default:
		return nil, fmt.Errorf("schedule %q: want 6 fields (second minute hour day month day-of-week), got %d", expr, len(fields))
	}
	s := &Schedule{expr: expr}
	dst := [6]*fieldSet{&s.second, &s.minute, &s.hour, &s.day, &s.month, &s.dows}
	for i, f := range fields {
		set, err := parseField(f, specs[i])
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %w", expr, err)
		}
		*dst[i] = set
	}
	probe := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	if s.Next(probe).IsZero() {
		return nil, fmt.Errorf("schedule %q never occurs", expr)
	}
	return s, nil
}

// String returns the expression as written.
func (s *Schedule) String() string { return s.expr }

func parseField(f string, spec fieldSpec) (fieldSet, error) {
	var set fieldSet
	for part := range strings.SplitSeq(f, ",") {
		lo, hi, step, err := parseRange(part, spec)
		if err != nil {
			return 0, fmt.Errorf("%s field %q: %w", spec.name, f, err)
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, nil
}

// parseRange reads "*", "v", "a-b", each optionally followed by "/step"; "v/step" means v through max.
func parseRange(part string, spec fieldSpec) (lo, hi, step int, err error) {
	if part == "" {
		return 0, 0, 0, fmt.Errorf("empty list item")
	}
	step = 1
	rng := part
	if i := strings.IndexByte(part, '/'); i >= 0 {
		rng = part[:i]
		step, err = strconv.Atoi(part[i+1:])
		if err != nil || step <= 0 {
			return 0, 0, 0, fmt.Errorf("step %q is not a positive number", part[i+1:])
		}
	}
	switch {
	case rng == "*":
		return spec.min, spec.max, step, nil
	case strings.Contains(rng, "-"):
		a, b, _ := strings.Cut(rng, "-")
		if lo, err = parseValue(a, spec); err != nil {
			return 0, 0, 0, err
		}
		if hi, err = parseValue(b, spec); err != nil {
			return 0, 0, 0, err
		}
		if lo > hi {
			return 0, 0, 0, fmt.Errorf("range %d-%d is reversed", lo, hi)
		}
		return lo, hi, step, nil
	default:
		if lo, err = parseValue(rng, spec); err != nil {
			return 0, 0, 0, err
		}
		if step > 1 || strings.Contains(part, "/") {
			return lo, spec.max, step, nil
		}
		return lo, lo, 1, nil
	}
}

func parseValue(s string, spec fieldSpec) (int, error) {
	for i, n := range spec.names {
		if strings.EqualFold(s, n) {
			return spec.min + i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if v < spec.min || v > spec.max {
		return 0, fmt.Errorf("%d is out of range %d-%d", v, spec.min, spec.max)
	}
	return v, nil
}

// Next returns the first occurrence strictly after after, in UTC, or the zero time when there is none
// within 30 years.
func (s *Schedule) Next(after time.Time) time.Time {
	t := after.UTC().Truncate(time.Second).Add(time.Second)
	limit := t.AddDate(searchYears, 0, 0)
	for t.Before(limit) {
		switch {
		case !s.month.has(int(t.Month())):
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		case !s.day.has(t.Day()) || !s.dows.has(int(t.Weekday())):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
		case !s.hour.has(t.Hour()):
			t = t.Truncate(time.Hour).Add(time.Hour)
		case !s.minute.has(t.Minute()):
			t = t.Truncate(time.Minute).Add(time.Minute)
		case !s.second.has(t.Second()):
			t = t.Add(time.Second)
		default:
			return t
		}
	}
	return time.Time{}
}

// MinPeriod returns the shortest gap between the next few occurrences, used to decide whether the
// schedule monitor is on by default (it is for periods of at least a minute).
func (s *Schedule) MinPeriod(from time.Time) time.Duration {
	prev := s.Next(from)
	shortest := time.Duration(0)
	for range 8 {
		next := s.Next(prev)
		if next.IsZero() {
			break
		}
		if gap := next.Sub(prev); shortest == 0 || gap < shortest {
			shortest = gap
		}
		prev = next
	}
	return shortest
}
