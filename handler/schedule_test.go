package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/config"
)

// TestWarnScheduleCoverage: the defaults cover every day once and log nothing; schedules that leave
// weekends out, or overlap, are named in a warning at start.
func TestWarnScheduleCoverage(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	base := config.Config{NightlySchedule: config.DefaultNightlySchedule, WeeklySchedule: config.DefaultWeeklySchedule,
		MonthlySchedule: config.DefaultMonthlySchedule, ScheduleTimeZone: "UTC", ScheduleSpread: 2 * time.Hour}
	tests := []struct {
		name  string
		edit  func(*config.Config)
		wants []string // substrings of the log; none when empty
	}{
		{"defaults", func(*config.Config) {}, nil},
		{"defaults in Auckland", func(c *config.Config) { c.ScheduleTimeZone = "Pacific/Auckland" }, nil},
		{"no weekends", func(c *config.Config) {
			c.NightlySchedule, c.WeeklySchedule, c.MonthlySchedule = "0 0 1 * * 1-5", "0 0 1 * * 1-5", "0 0 1 * * 1-5"
		}, []string{"fires on 17 of the next 60 days", "no automatic backup timer", "2026-12-05", "2026-12-06"}},
		{"nightly every day", func(c *config.Config) { c.NightlySchedule = "0 0 1 * * *" }, []string{"more than one automatic backup timer fires on 8 of the next 60 days", "2026-12-06"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			var buf bytes.Buffer
			warnScheduleCoverage(cfg, now, zerolog.New(&buf))
			got := buf.String()
			if len(tt.wants) == 0 && got != "" {
				t.Fatalf("want no warning, got %s", got)
			}
			for _, w := range tt.wants {
				if !strings.Contains(got, w) {
					t.Errorf("log lacks %q:\n%s", w, got)
				}
			}
		})
	}
}
