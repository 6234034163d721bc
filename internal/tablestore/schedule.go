package tablestore

import (
	"context"
	"fmt"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

var _ backup.ScheduleStore = (*Store)(nil)

// scheduleRunPartition holds every run: one row a day, so a partition query in key order lists them by
// day.
const scheduleRunPartition = "runs"

// scheduleRunEntity: PartitionKey "runs", RowKey = the day (2006-01-02, which sorts as text in day
// order). Spread is kept as Int64 nanoseconds (a time.Duration exactly).
type scheduleRunEntity struct {
	PartitionKey      string
	RowKey            string
	Kind              string
	Trigger           string
	StartedAt         time.Time
	SpreadNanoseconds int64
	Cursor            string
	Sent              int64
	FannedOut         bool
	FannedOutAt       time.Time
	Checked           bool
	CheckedAt         time.Time
	Resent            int64
	UpdatedAt         time.Time
}

func (e *scheduleRunEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

func (e *scheduleRunEntity) toDomain() backup.ScheduleRun {
	return backup.ScheduleRun{Day: e.RowKey, Kind: backup.SnapshotKind(e.Kind), Trigger: e.Trigger, StartedAt: e.StartedAt,
		Spread: time.Duration(e.SpreadNanoseconds), Cursor: e.Cursor, Sent: int(e.Sent), FannedOut: e.FannedOut,
		FannedOutAt: e.FannedOutAt, Checked: e.Checked, CheckedAt: e.CheckedAt, Resent: int(e.Resent), UpdatedAt: e.UpdatedAt}
}

func scheduleRunFromDomain(r backup.ScheduleRun) *scheduleRunEntity {
	return &scheduleRunEntity{PartitionKey: scheduleRunPartition, RowKey: r.Day, Kind: string(r.Kind), Trigger: r.Trigger,
		StartedAt: r.StartedAt, SpreadNanoseconds: int64(r.Spread), Cursor: r.Cursor, Sent: int64(r.Sent),
		FannedOut: r.FannedOut, FannedOutAt: r.FannedOutAt, Checked: r.Checked, CheckedAt: r.CheckedAt,
		Resent: int64(r.Resent), UpdatedAt: r.UpdatedAt}
}

func (s *Store) GetScheduleRun(ctx context.Context, day string) (backup.ScheduleRun, error) {
	var e scheduleRunEntity
	_, found, err := get(ctx, s.table(tableScheduleRuns), scheduleRunPartition, day, &e)
	if err != nil {
		return backup.ScheduleRun{}, err
	}
	if !found {
		return backup.ScheduleRun{}, backup.Errorf(backup.CodeNotFound, "the schedule has no run on %s", day)
	}
	return e.toDomain(), nil
}

func (s *Store) UpdateScheduleRun(ctx context.Context, day string, fn backup.UpdateFunc[backup.ScheduleRun]) (backup.ScheduleRun, bool, error) {
	next, wrote, err := update(ctx, s.table(tableScheduleRuns), scheduleRunPartition, day,
		func(cur *scheduleRunEntity, exists bool) (*scheduleRunEntity, bool, error) {
			var d backup.ScheduleRun
			if exists {
				d = cur.toDomain()
			}
			n, write, err := fn(d, exists)
			if err != nil || !write {
				return cur, false, err
			}
			n.Day = day
			return scheduleRunFromDomain(n), true, nil
		})
	if err != nil {
		return backup.ScheduleRun{}, false, err
	}
	return next.toDomain(), wrote, nil
}

func (s *Store) ListScheduleRuns(ctx context.Context, fromDay string) ([]backup.ScheduleRun, error) {
	out := []backup.ScheduleRun{}
	filter := "PartitionKey eq " + odataString(scheduleRunPartition) + " and RowKey ge " + odataString(fromDay)
	err := list(ctx, s.table(tableScheduleRuns), listQuery{filter: filter, top: s.pageSize}, "schedule runs", func(raw []byte) (bool, error) {
		var e scheduleRunEntity
		if err := decodeEntity(raw, &e); err != nil {
			return false, fmt.Errorf("table storage: decode a schedule run: %w", err)
		}
		out = append(out, e.toDomain())
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
