package backup

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/schedule"
)

// Automatic backups. Whichever timer fires first on a calendar day starts the day's run (RunSchedule):
// one message per eligible environment on the automatic-backups queue, scheduled at the run's start
// plus the environment's offset in the spread window. Each message is one try of the environment's
// backup of that day (HandleAutomaticBackup); a try that finds the environment busy or in a transient
// state, or whose snapshot fails, schedules the next try, up to schedule.MaxAttempts. A try's snapshot
// id is derived from (environment, day, try), so however often a timer fires or a message is
// delivered, a day has at most one automatic snapshot that is not Failed, and at most MaxAttempts in
// all.

// QueueAutomatic carries the automatic-backup messages: no sessions, so thousands of them are handled
// in parallel; each only starts a backup job (on QueueJobs) and returns.
const QueueAutomatic = "automatic-backups"

// ActorSchedule is the actor of automatic snapshots.
const ActorSchedule = "schedule"

// Schedule timing.
const (
	// fanOutBatch is how many messages the fan-out sends per Publish (the publisher splits them into
	// Service Bus batches by size) before recording its cursor.
	fanOutBatch = 500
	// fanOutStale is how long a fan-out may go without recording progress before recovery resumes it.
	fanOutStale = 10 * time.Minute
	// tryWindow bounds how late after the run's start (beyond the spread) a try may still be made: a
	// message delivered later (replayed from the dead-letter queue, say) no longer makes the day's
	// snapshot.
	tryWindow = 12 * time.Hour
	// checkAfter is how long after the spread window recovery waits before checking that every eligible
	// environment had its try: long enough for the retries to have been made.
	checkAfter = schedule.MaxAttempts*schedule.RetryDelay + time.Hour
)

// automaticMessage is the body of an automatic-backup message: one try of one environment's backup of
// one day.
type automaticMessage struct {
	Namespace     string       `json:"namespace"`
	EnvironmentID string       `json:"environment_id"`
	Day           string       `json:"day"`
	Kind          SnapshotKind `json:"kind"`
	Attempt       int          `json:"attempt"`
	// At is when this try was scheduled; RunStartedAt when the day's run started.
	At           time.Time `json:"at"`
	RunStartedAt time.Time `json:"run_started_at"`
	// Recheck marks the tries that follow recovery's resend of a lost first try: the day's first tries
	// may have been sent (and lost) already, and the queue drops a MessageId it saw that day, so these
	// tries have ids of their own.
	Recheck bool `json:"recheck,omitempty"`
}

// idempotencyKey is the environment's key for a day: the MessageId of the day's first try.
func idempotencyKey(envID, day string) string { return envID + "/" + day }

// messageID is the MessageId of a try: the key for the first, the key and the try for the others, and
// "/recheck" after either for recovery's resend and the tries that follow it, so duplicate detection
// drops a repeated send of the same try and not the next one.
func (m automaticMessage) messageID() string {
	id := idempotencyKey(m.EnvironmentID, m.Day)
	if m.Attempt > 0 {
		id += "/" + strconv.Itoa(m.Attempt)
	}
	if m.Recheck {
		id += "/recheck"
	}
	return id
}

func (m automaticMessage) encode() Message {
	body, _ := json.Marshal(m)
	return Message{ID: m.messageID(), Body: body, ContentType: "application/json", ScheduledAt: m.At}
}

// automaticNamespace seeds the derived ids of automatic snapshots.
var automaticNamespace = uuid.MustParse("6f1c8a52-4a39-4c0e-9d3e-5b8f0e7a2c11")

// automaticSnapshotID is the id of the snapshot of one try: the same (environment, day, try) always
// gives the same id, so a try cannot make two snapshots.
func automaticSnapshotID(namespace, envID, day string, attempt int) string {
	return uuid.NewSHA1(automaticNamespace, []byte(namespace+"|"+envID+"|"+day+"|"+strconv.Itoa(attempt))).String()
}

// eligibleForRun reports whether an environment of an enabled namespace gets a message in the day's
// run: deployed and not Deleted. One that is in a transient state when its try comes is tried again
// later that night; one with nothing deployed (being created, say) has nothing to back up.
func eligibleForRun(e Environment) bool {
	return e.State != StateDeleted && e.Deployed
}

// transientState reports whether a state is one an automatic try waits out: the try is repeated later.
func transientState(st EnvironmentState) bool {
	switch st {
	case StateCreating, StateCreationFailed, StateDeploying, StateTransitioning:
		return true
	}
	return false
}

// RunSchedule is a timer's run: it starts the day's run of automatic backups, unless another timer
// already did (a timer firing twice, or overlapping schedules: the day decides, not the timer), and
// sends one message per eligible environment. now is the invocation's time. A run that stops half-way
// is resumed by recovery from its cursor.
func (s *Service) RunSchedule(ctx context.Context, trigger string, now time.Time, log zerolog.Logger) error {
	day := s.calendar.DayOf(now)
	kind := SnapshotKind(schedule.KindOf(day))
	log = log.With().Str("day", day.String()).Str("kind", string(kind)).Logger()
	var created bool
	run, _, err := s.stores.Schedule.UpdateScheduleRun(ctx, day.String(), func(cur ScheduleRun, exists bool) (ScheduleRun, bool, error) {
		created = false
		if exists {
			return cur, false, nil
		}
		created = true
		return ScheduleRun{Day: day.String(), Kind: kind, Trigger: trigger, StartedAt: now, Spread: s.plan.Spread, UpdatedAt: now}, true, nil
	})
	if err != nil {
		return err
	}
	switch {
	case created:
		log.Info().Dur("spread", run.Spread).Msg("automatic backups of the day: fanning out")
	case run.FannedOut:
		log.Info().Str("started_by", run.Trigger).Time("started_at", run.StartedAt).Msg("the day's automatic backups were already sent; nothing to do")
		return nil
	case now.Sub(run.UpdatedAt) < fanOutStale:
		log.Info().Str("started_by", run.Trigger).Msg("the day's fan-out is under way; nothing to do")
		return nil
	default:
		taken, ok, err := s.takeOverRun(ctx, run, now)
		if err != nil || !ok {
			return err // nil when recovery or another timer took it over first
		}
		log.Warn().Str("cursor", taken.Cursor).Msg("the day's fan-out stopped half-way; resuming it")
		run = taken
	}
	return s.fanOut(ctx, run, now, log)
}

// FanOutStats counts what one fan-out did.
type FanOutStats struct {
	Environments int // walked
	Sent         int // messages sent
}

// fanOut sends the run's messages from its cursor on, recording the cursor after each batch, and marks
// the run fanned out.
func (s *Service) fanOut(ctx context.Context, run ScheduleRun, now time.Time, log zerolog.Logger) error {
	enabled, err := s.enabledNamespaces(ctx)
	if err != nil {
		return err
	}
	var stats FanOutStats
	// Progress is recorded in the invocation's time (as RunSchedule and recovery compare it), moved on
	// by the time the fan-out has taken.
	began := s.now()
	progressAt := func() time.Time { return now.Add(s.now().Sub(began)) }
	batch := make([]Message, 0, fanOutBatch)
	cursor := run.Cursor
	flush := func(last string) error {
		if len(batch) > 0 {
			if err := s.publisher.Publish(ctx, QueueAutomatic, batch...); err != nil {
				return Wrap(CodeTransient, err, "send the automatic backups of %s", run.Day)
			}
		}
		n := len(batch)
		run, _, err = s.stores.Schedule.UpdateScheduleRun(ctx, run.Day, func(cur ScheduleRun, exists bool) (ScheduleRun, bool, error) {
			if !exists {
				return cur, false, Errorf(CodeNotFound, "the schedule run of %s disappeared", run.Day)
			}
			cur.Cursor, cur.Sent, cur.UpdatedAt = last, cur.Sent+n, progressAt()
			return cur, true, nil
		})
		stats.Sent += n
		batch = batch[:0]
		return err
	}
	err = s.stores.Environments.WalkEnvironments(ctx, run.Cursor, func(e Environment) (bool, error) {
		stats.Environments++
		cursor = EnvironmentKey(e.Namespace, e.ID)
		if !enabled[e.Namespace] || !eligibleForRun(e) {
			return true, nil
		}
		m := automaticMessage{Namespace: e.Namespace, EnvironmentID: e.ID, Day: run.Day, Kind: run.Kind,
			At: run.StartedAt.Add(schedule.Offset(e.ID, run.Spread)), RunStartedAt: run.StartedAt}
		batch = append(batch, m.encode())
		if len(batch) == fanOutBatch {
			return true, flush(cursor)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if err := flush(cursor); err != nil {
		return err
	}
	_, _, err = s.stores.Schedule.UpdateScheduleRun(ctx, run.Day, func(cur ScheduleRun, exists bool) (ScheduleRun, bool, error) {
		if !exists || cur.FannedOut {
			return cur, false, nil
		}
		cur.FannedOut, cur.FannedOutAt, cur.UpdatedAt = true, progressAt(), progressAt()
		return cur, true, nil
	})
	if err != nil {
		return err
	}
	log.Info().Int("environments", stats.Environments).Int("sent", stats.Sent).Dur("took", s.now().Sub(began)).
		Msg("automatic backups of the day sent")
	return nil
}

func (s *Service) enabledNamespaces(ctx context.Context) (map[string]bool, error) {
	names, err := s.stores.Settings.ListEnabledNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	enabled := make(map[string]bool, len(names))
	for _, n := range names {
		enabled[n] = true
	}
	return enabled, nil
}

// HandleAutomaticBackup makes one try of an environment's automatic backup of a day (a message of the
// day's run, or a retry). now is the invocation's time. A message that can never be handled is logged
// and acknowledged; a storage failure is returned so the message is redelivered.
func (s *Service) HandleAutomaticBackup(ctx context.Context, body []byte, now time.Time, log zerolog.Logger) error {
	var m automaticMessage
	if err := json.Unmarshal(body, &m); err != nil || m.validate() != nil {
		log.Error().Bytes("body", body).Msg("automatic backup message that cannot be read; dropped")
		return nil
	}
	log = log.With().Str("namespace", m.Namespace).Str("environment", m.EnvironmentID).Str("day", m.Day).
		Str("kind", string(m.Kind)).Int("try", m.Attempt+1).Logger()
	if late := now.Sub(m.RunStartedAt); late > tryWindow+s.plan.Spread {
		log.Warn().Dur("late", late).Msg("automatic backup message delivered too late for its day; dropped")
		return nil
	}
	env, err := s.stores.Environments.GetEnvironment(ctx, m.Namespace, m.EnvironmentID)
	if IsNotFound(err) {
		log.Info().Msg("the environment no longer exists; no automatic backup")
		return nil
	} else if err != nil {
		return err
	}
	set, err := s.stores.Settings.GetSettings(ctx, m.Namespace)
	if err != nil {
		return err
	}
	switch {
	case !set.BackupsEnabled:
		log.Info().Msg("backups are no longer enabled for the namespace; no automatic backup")
		return nil
	case env.State == StateDeleted:
		log.Info().Msg("the environment is deleted; no automatic backup")
		return nil
	}
	done, err := s.automaticTryDone(ctx, m)
	if err != nil || done {
		if done {
			log.Info().Msg("the day's automatic backup is already made or being made; nothing to do")
		}
		return err
	}
	if !env.Deployed {
		log.Info().Msg("the environment has no deployed app any more; no automatic backup")
		return nil
	}
	if transientState(env.State) {
		return s.tryLater(ctx, m, env.BackupBlocker(), now, log)
	}
	_, err = s.startBackup(ctx, env, backupStart{kind: m.Kind, actor: ActorSchedule,
		snapshotID: automaticSnapshotID(m.Namespace, m.EnvironmentID, m.Day, m.Attempt), automaticDay: m.Day, automaticAttempt: m.Attempt,
		ready: func(ctx context.Context) error {
			// Decided again under the lock: no other try of the day can start meanwhile.
			done, err := s.automaticTryDone(ctx, m)
			if err == nil && done {
				err = errTryDone
			}
			return err
		}})
	switch {
	case err == nil:
		log.Info().Msg("automatic backup started")
		return nil
	case err == errTryDone:
		log.Info().Msg("the day's automatic backup is already made or being made; nothing to do")
		return nil
	case CodeOf(err) == CodeEnvironmentBusy:
		reason, lerr := s.lockBlocker(ctx, m.Namespace, m.EnvironmentID)
		if lerr != nil || reason == "" {
			reason = "another operation was running"
		}
		return s.tryLater(ctx, m, reason, now, log)
	}
	return err
}

var errTryDone = Errorf(CodeConflict, "the day's automatic backup is already made or being made")

func (m automaticMessage) validate() error {
	if err := ValidateNamespace(m.Namespace); err != nil {
		return err
	}
	if _, err := ValidateUUID("environment id", m.EnvironmentID); err != nil {
		return err
	}
	if _, err := schedule.ParseDay(m.Day); err != nil {
		return err
	}
	if !m.Kind.Automatic() || m.Attempt < 0 || m.Attempt >= schedule.MaxAttempts || m.RunStartedAt.IsZero() {
		return fmt.Errorf("kind %q, try %d, run start %s", m.Kind, m.Attempt, m.RunStartedAt)
	}
	return nil
}

// automaticTryDone reports whether try m has nothing left to do: a snapshot of the day that is not
// Failed exists (made or being made), or one of this try or a later one exists (a later try superseded
// this message; a failed one scheduled its own retry).
func (s *Service) automaticTryDone(ctx context.Context, m automaticMessage) (bool, error) {
	for attempt := range schedule.MaxAttempts {
		sn, err := s.stores.Snapshots.GetSnapshot(ctx, m.Namespace, m.EnvironmentID, automaticSnapshotID(m.Namespace, m.EnvironmentID, m.Day, attempt))
		if IsNotFound(err) {
			continue
		} else if err != nil {
			return false, err
		}
		if sn.Status != SnapshotFailed || attempt >= m.Attempt {
			return true, nil
		}
	}
	return false, nil
}

// tryLater schedules the next try of the day, or, after the last one, records the day's automatic
// snapshot as Failed with the reason, so users see why there is none.
func (s *Service) tryLater(ctx context.Context, m automaticMessage, reason string, now time.Time, log zerolog.Logger) error {
	if m.Attempt+1 < schedule.MaxAttempts {
		next := m
		next.Attempt, next.At = m.Attempt+1, now.Add(schedule.RetryDelay)
		if err := s.publisher.Publish(ctx, QueueAutomatic, next.encode()); err != nil {
			return Wrap(CodeTransient, err, "schedule the next try of the automatic backup")
		}
		log.Info().Str("reason", reason).Time("next_try", next.At).Msg("automatic backup not possible now; trying again later")
		return nil
	}
	msg := fmt.Sprintf("the automatic %s backup was not made: %s at each of its %d tries", m.Kind, reason, schedule.MaxAttempts)
	created := s.now()
	sn := Snapshot{ID: automaticSnapshotID(m.Namespace, m.EnvironmentID, m.Day, m.Attempt), Namespace: m.Namespace,
		EnvironmentID: m.EnvironmentID, Status: SnapshotFailed, Kind: m.Kind, CreatedAt: created, UpdatedAt: created,
		FinishedAt: created, ExpiresAt: s.calendar.FailedExpiresAt(created), CreatedBy: ActorSchedule,
		StatusMessage: Truncate(msg, maxStatusMessage), AutomaticDay: m.Day, AutomaticAttempt: m.Attempt}
	if err := s.stores.Snapshots.CreateSnapshot(ctx, sn); err != nil && CodeOf(err) != CodeConflict {
		return err
	}
	s.activity(ctx, ActivityEntry{ID: "automatic:" + m.Day, Namespace: m.Namespace, EnvironmentID: m.EnvironmentID,
		Time: m.At, Action: ActionBackup, Status: ActivityFailed, Actor: ActorSchedule, SnapshotID: sn.ID, Message: msg})
	// Told like a failed job, so consumers learn that the day has no backup; a redelivery sends the same
	// event id, which the broker drops.
	ev := OutboundEvent{Type: EventSnapshotFailed, EventID: sn.ID + ":" + EventSnapshotFailed, OccurredAt: m.At,
		Namespace: m.Namespace, EnvironmentID: m.EnvironmentID, SnapshotID: sn.ID, StatusMessage: sn.StatusMessage}
	if err := s.publishEvent(ctx, ev); err != nil {
		return Wrap(CodeTransient, err, "tell that the automatic backup was not made")
	}
	log.Warn().Str("reason", reason).Msg("automatic backup given up for the day")
	return nil
}

// retryFailedAutomatic schedules the next try of the day after an automatic snapshot failed (from the
// backup's settling, which may run again: the next try's MessageId and snapshot id make that harmless).
func (s *Service) retryFailedAutomatic(ctx context.Context, sn Snapshot) error {
	if !sn.Kind.Automatic() || sn.AutomaticDay == "" || sn.AutomaticAttempt+1 >= schedule.MaxAttempts {
		return nil
	}
	now := s.now()
	runStart, checked := now, false
	if run, err := s.stores.Schedule.GetScheduleRun(ctx, sn.AutomaticDay); err == nil {
		runStart, checked = run.StartedAt, run.Checked
	} else if !IsNotFound(err) {
		return err
	}
	// The snapshot does not say whether recovery's resend made it. Once the run was checked it may have:
	// the next try then takes a recheck id, as the first tries' ids may have been used that day (and a
	// try made before the check had its snapshot, so nothing was resent for it: the id is free too).
	next := automaticMessage{Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, Day: sn.AutomaticDay, Kind: sn.Kind,
		Attempt: sn.AutomaticAttempt + 1, At: now.Add(schedule.RetryDelay), RunStartedAt: runStart, Recheck: checked}
	if err := s.publisher.Publish(ctx, QueueAutomatic, next.encode()); err != nil {
		return Wrap(CodeTransient, err, "schedule the next try of the automatic backup")
	}
	return nil
}
