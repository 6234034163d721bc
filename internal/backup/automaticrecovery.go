package backup

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/schedule"
)

// checkBatch is how many environments recovery's check of a run looks at together (their point reads
// run checkConcurrency at a time, and their resends go in one Publish).
const (
	checkBatch       = 200
	checkConcurrency = 16
)

// RecoverSchedule finishes what the schedule's runs of the last days left undone (run by the recovery
// timer; now is the invocation's time): a fan-out that stopped half-way (its timer died) is resumed
// from its cursor, and once a run's spread window and retries have passed, every environment that is
// eligible and has no snapshot of that day is sent its message again (it was lost: dead-lettered, say).
func (s *Service) RecoverSchedule(ctx context.Context, now time.Time, log zerolog.Logger) error {
	runs, err := s.stores.Schedule.ListScheduleRuns(ctx, s.calendar.DayOf(now).AddDays(-2).String())
	if err != nil {
		return err
	}
	var errs []error
	for _, run := range runs {
		l := log.With().Str("day", run.Day).Str("kind", string(run.Kind)).Logger()
		late := now.Sub(run.StartedAt) > tryWindow
		switch {
		case !run.FannedOut && !late && now.Sub(run.UpdatedAt) >= fanOutStale:
			taken, ok, err := s.takeOverRun(ctx, run, now)
			if err != nil || !ok {
				errs = append(errs, err)
				continue
			}
			l.Warn().Str("cursor", taken.Cursor).Int("sent", taken.Sent).Msg("the day's fan-out stopped half-way; resuming it")
			errs = append(errs, s.fanOut(ctx, taken, now, l))
		case run.FannedOut && !run.Checked && now.After(run.StartedAt.Add(run.Spread+checkAfter)):
			errs = append(errs, s.checkRun(ctx, run, now, late, l))
		}
	}
	return errors.Join(errs...)
}

// takeOverRun claims a stalled fan-out: it writes only if nobody recorded progress since run was read.
func (s *Service) takeOverRun(ctx context.Context, run ScheduleRun, now time.Time) (ScheduleRun, bool, error) {
	return s.stores.Schedule.UpdateScheduleRun(ctx, run.Day, func(cur ScheduleRun, exists bool) (ScheduleRun, bool, error) {
		if !exists || cur.FannedOut || !cur.UpdatedAt.Equal(run.UpdatedAt) {
			return cur, false, nil
		}
		cur.UpdatedAt = now
		return cur, true, nil
	})
}

// checkRun sends the day's message again to every eligible environment that has no snapshot of the day
// (unless it is too late for the day), and marks the run checked.
func (s *Service) checkRun(ctx context.Context, run ScheduleRun, now time.Time, late bool, log zerolog.Logger) error {
	resent := 0
	if !late {
		enabled, err := s.enabledNamespaces(ctx)
		if err != nil {
			return err
		}
		var batch []Environment
		check := func() error {
			n, err := s.resendMissing(ctx, run, batch, now)
			resent += n
			batch = batch[:0]
			return err
		}
		err = s.stores.Environments.WalkEnvironments(ctx, "", func(e Environment) (bool, error) {
			if !enabled[e.Namespace] || !eligibleForRun(e) {
				return true, nil
			}
			if batch = append(batch, e); len(batch) == checkBatch {
				return true, check()
			}
			return true, nil
		})
		if err == nil {
			err = check()
		}
		if err != nil {
			return err
		}
	}
	_, _, err := s.stores.Schedule.UpdateScheduleRun(ctx, run.Day, func(cur ScheduleRun, exists bool) (ScheduleRun, bool, error) {
		if !exists || cur.Checked {
			return cur, false, nil
		}
		cur.Checked, cur.CheckedAt, cur.Resent, cur.UpdatedAt = true, now, cur.Resent+resent, now
		return cur, true, nil
	})
	if err != nil {
		return err
	}
	if resent > 0 {
		log.Warn().Int("resent", resent).Msg("environments without their automatic backup of the day; their message was sent again")
	} else {
		log.Info().Bool("too_late", late).Msg("every eligible environment had its automatic backup of the day")
	}
	return nil
}

// resendMissing looks up the day's snapshots of envs and sends the first try again to those that have
// none.
func (s *Service) resendMissing(ctx context.Context, run ScheduleRun, envs []Environment, now time.Time) (int, error) {
	missing := make([]bool, len(envs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(checkConcurrency)
	for i, e := range envs {
		g.Go(func() error {
			found, err := s.hasAutomaticSnapshot(gctx, e.Namespace, e.ID, run.Day)
			missing[i] = !found
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	var msgs []Message
	for i, e := range envs {
		if missing[i] {
			m := automaticMessage{Namespace: e.Namespace, EnvironmentID: e.ID, Day: run.Day, Kind: run.Kind, At: now,
				RunStartedAt: run.StartedAt, Recheck: true}
			msgs = append(msgs, m.encode())
		}
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	if err := s.publisher.Publish(ctx, QueueAutomatic, msgs...); err != nil {
		return 0, Wrap(CodeTransient, err, "send the lost automatic backups of %s again", run.Day)
	}
	return len(msgs), nil
}

// hasAutomaticSnapshot reports whether any try of the day made a snapshot (of any status).
func (s *Service) hasAutomaticSnapshot(ctx context.Context, namespace, envID, day string) (bool, error) {
	for attempt := range schedule.MaxAttempts {
		_, err := s.stores.Snapshots.GetSnapshot(ctx, namespace, envID, automaticSnapshotID(namespace, envID, day, attempt))
		if err == nil {
			return true, nil
		}
		if !IsNotFound(err) {
			return false, err
		}
	}
	return false, nil
}
