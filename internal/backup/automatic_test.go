package backup_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/schedule"
)

// seededEnv is an environment a test recorded, and whether the day's fan-out must send it a message.
type seededEnv struct {
	ns, id   string
	eligible bool
	what     string
}

// seedMixed records environments in every state across namespaces: backups enabled in ns-a and ns-b,
// disabled in ns-off, never configured in ns-never.
func seedMixed(t *testing.T, f *schedFixture) []seededEnv {
	t.Helper()
	f.enable(t, "ns-a", true)
	f.enable(t, "ns-b", true)
	f.enable(t, "ns-off", false)
	envs := []seededEnv{
		{"ns-a", testEnvID(1), true, "running, deployed"},
		{"ns-a", testEnvID(2), true, "stopped, deployed"},
		{"ns-a", testEnvID(3), false, "stopped, nothing deployed"},
		{"ns-a", testEnvID(4), false, "deleted"},
		{"ns-a", testEnvID(5), true, "deploying (transient: tried, and again later)"},
		{"ns-a", testEnvID(6), false, "creating, nothing deployed yet"},
		{"ns-a", testEnvID(7), true, "starting or stopping (transient)"},
		{"ns-a", testEnvID(8), false, "creation failed, nothing deployed"},
		{"ns-b", testEnvID(9), true, "running in another enabled namespace"},
		{"ns-b", testEnvID(10), false, "deleted in another namespace"},
		{"ns-off", testEnvID(11), false, "running in a namespace whose backups are off"},
		{"ns-never", testEnvID(12), false, "running in a namespace never configured"},
	}
	state := map[int]struct {
		st       backup.EnvironmentState
		deployed bool
	}{
		1: {backup.StateRunning, true}, 2: {backup.StateStopped, true}, 3: {backup.StateStopped, false},
		4: {backup.StateRunning, true}, 5: {backup.StateDeploying, true}, 6: {backup.StateCreating, false},
		7: {backup.StateTransitioning, true}, 8: {backup.StateCreationFailed, false}, 9: {backup.StateRunning, true},
		10: {backup.StateStopped, true}, 11: {backup.StateRunning, true}, 12: {backup.StateRunning, true},
	}
	for i, e := range envs {
		s := state[i+1]
		f.putEnv(t, e.ns, e.id, s.st, s.deployed)
	}
	f.deleteEnv(t, "ns-a", testEnvID(4))
	f.deleteEnv(t, "ns-b", testEnvID(10))
	return envs
}

func TestFanOutSendsOneMessagePerEligibleEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		zone    string
		now     time.Time
		day     string
		weekday time.Weekday // of day: a check of the table itself
		kind    backup.SnapshotKind
	}{
		{"a Wednesday is nightly", "", utc(2026, 12, 2, 1, 0), "2026-12-02", time.Wednesday, backup.KindNightly},
		{"the first Sunday is monthly", "", utc(2026, 12, 6, 1, 0), "2026-12-06", time.Sunday, backup.KindMonthly},
		{"another Sunday is weekly", "", utc(2026, 12, 13, 1, 0), "2026-12-13", time.Sunday, backup.KindWeekly},
		{"Thursday in UTC, Wednesday in Los Angeles", "America/Los_Angeles", utc(2026, 12, 3, 5, 0), "2026-12-02", time.Wednesday, backup.KindNightly},
		{"Saturday in UTC, the first Sunday in Auckland", "Pacific/Auckland", utc(2026, 12, 5, 13, 0), "2026-12-06", time.Sunday, backup.KindMonthly},
		{"Saturday in UTC, the second Sunday in Amsterdam", "Europe/Amsterdam", utc(2026, 12, 12, 23, 30), "2026-12-13", time.Sunday, backup.KindWeekly},
		{"Sunday in UTC, Saturday in New York", "America/New_York", utc(2026, 12, 13, 3, 0), "2026-12-12", time.Saturday, backup.KindNightly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d, _ := time.Parse(time.DateOnly, tt.day); d.Weekday() != tt.weekday {
				t.Fatalf("the table is wrong: %s is a %s", tt.day, d.Weekday())
			}
			f := newSchedFixture(t, tt.zone, tt.now)
			envs := seedMixed(t, f)
			if err := f.runSchedule(t, "NightlyBackups"); err != nil {
				t.Fatal(err)
			}
			got := byEnv(t, f.automatic())
			want := 0
			for _, e := range envs {
				m, sent := got[e.id]
				if sent != e.eligible {
					t.Errorf("%s (%s): message sent = %t, want %t", e.id, e.what, sent, e.eligible)
				}
				if !sent {
					continue
				}
				want++
				b := decodeAuto(t, m)
				at := tt.now.Add(schedule.Offset(e.id, testSpread))
				if m.ID != e.id+"/"+tt.day || !m.ScheduledAt.Equal(at) || m.ContentType != "application/json" || m.SessionID != "" {
					t.Errorf("%s: message id %q scheduled at %v (session %q), want id %q at %v, no session", e.what, m.ID, m.ScheduledAt, m.SessionID, e.id+"/"+tt.day, at)
				}
				if b.Namespace != e.ns || b.Day != tt.day || b.Kind != string(tt.kind) || b.Attempt != 0 || !b.At.Equal(at) || !b.RunStartedAt.Equal(tt.now) {
					t.Errorf("%s: body %+v, want %s/%s, day %s, kind %s, try 0, at %v, run start %v", e.what, b, e.ns, e.id, tt.day, tt.kind, at, tt.now)
				}
			}
			run := f.scheduleRun(t, tt.day)
			if !run.FannedOut || run.Sent != want || run.Kind != tt.kind || run.Trigger != "NightlyBackups" ||
				!run.StartedAt.Equal(tt.now) || run.Spread != testSpread || run.Checked {
				t.Errorf("run: %+v, want FannedOut with Sent %d, kind %s, started %v by NightlyBackups", run, want, tt.kind, tt.now)
			}
			if n := len(f.pub.take(backup.QueueJobs)); n != 0 {
				t.Errorf("the fan-out queued %d jobs; it only sends the tries", n)
			}
			for _, e := range envs {
				if s := f.snapshots(t, e.ns, e.id); len(s) != 0 {
					t.Errorf("%s: the fan-out made snapshots: %+v", e.what, s)
				}
			}
		})
	}
}

func TestTimersFiringAgainTheSameDaySendNothing(t *testing.T) {
	start := utc(2026, 12, 2, 1, 0)
	f := newSchedFixture(t, "", start)
	seedMixed(t, f)
	if err := f.runSchedule(t, "NightlyBackups"); err != nil {
		t.Fatal(err)
	}
	first := f.automatic()
	run := f.scheduleRun(t, "2026-12-02")
	for _, fire := range []struct {
		trigger string
		at      time.Time
	}{
		{"NightlyBackups", start.Add(time.Second)},      // the same timer twice
		{"NightlyBackups", start.Add(30 * time.Minute)}, // past due, run late
		{"WeeklyBackups", start.Add(3 * time.Hour)},     // an overlapping schedule
		{"MonthlyBackups", utc(2026, 12, 2, 23, 59)},    // the last minute of the day
	} {
		f.now = fire.at
		if err := f.runSchedule(t, fire.trigger); err != nil {
			t.Fatal(err)
		}
		if msgs := f.automatic(); len(msgs) != 0 {
			t.Errorf("%s at %v sent %d messages again", fire.trigger, fire.at, len(msgs))
		}
		if got := f.scheduleRun(t, "2026-12-02"); got != run {
			t.Errorf("%s at %v changed the run: %+v, was %+v", fire.trigger, fire.at, got, run)
		}
	}
	// The next day is a run of its own.
	f.now = utc(2026, 12, 3, 1, 0)
	if err := f.runSchedule(t, "WeeklyBackups"); err != nil {
		t.Fatal(err)
	}
	next := f.automatic()
	if len(next) != len(first) || len(first) == 0 {
		t.Fatalf("the next day sent %d messages, the first %d", len(next), len(first))
	}
	for id, m := range byEnv(t, next) {
		if m.ID != id+"/2026-12-03" {
			t.Errorf("next day's message id %q", m.ID)
		}
	}
	if run := f.scheduleRun(t, "2026-12-03"); run.Trigger != "WeeklyBackups" || !run.FannedOut || run.Kind != backup.KindNightly {
		t.Errorf("the next day's run: %+v, want a nightly run started by WeeklyBackups", run)
	}
}

// seedMany records n environments over ns-a and ns-b (enabled) and 10 in ns-z (disabled); every
// twelfth has nothing deployed. It returns the eligible ones in the walk's (namespace, id) order.
func seedMany(t *testing.T, f *schedFixture, n int) []seededEnv {
	t.Helper()
	f.enable(t, "ns-a", true)
	f.enable(t, "ns-b", true)
	f.enable(t, "ns-z", false)
	var eligible []seededEnv
	for i := range n {
		ns := "ns-a"
		if i >= n/2 {
			ns = "ns-b"
		}
		deployed := i%12 != 5
		f.putEnv(t, ns, testEnvID(i), backup.StateRunning, deployed)
		if deployed {
			eligible = append(eligible, seededEnv{ns: ns, id: testEnvID(i), eligible: true})
		}
	}
	for i := range 10 {
		f.putEnv(t, "ns-z", testEnvID(n+i), backup.StateRunning, true)
	}
	return eligible
}

func TestFanOutStoppedHalfWayIsResumedFromItsCursor(t *testing.T) {
	for _, resumer := range []string{"recovery", "a later timer"} {
		t.Run(resumer, func(t *testing.T) {
			start := utc(2026, 12, 2, 1, 0)
			f := newSchedFixture(t, "", start)
			eligible := seedMany(t, f, 1200)
			if len(eligible) != 1100 {
				t.Fatalf("test setup: %d eligible environments", len(eligible))
			}
			// The second send fails after the first 100 of its messages went out.
			publishes := 0
			f.pub.setHook(func(entity string, msgs []backup.Message) (int, error) {
				if entity != backup.QueueAutomatic {
					return 0, nil
				}
				if publishes++; publishes == 2 {
					return 100, backup.Errorf(backup.CodeTransient, "service bus: 503")
				}
				return 0, nil
			})
			if err := f.runSchedule(t, "NightlyBackups"); !backup.IsRetryable(err) {
				t.Fatalf("RunSchedule with a failing send: %v, want a retryable error", err)
			}
			sent := f.automatic()
			if len(sent) != 600 {
				t.Fatalf("sent %d messages before the failure, want the first batch of 500 and 100 of the second", len(sent))
			}
			run := f.scheduleRun(t, "2026-12-02")
			if run.FannedOut || run.Sent != 500 || run.Cursor != backup.EnvironmentKey(eligible[499].ns, eligible[499].id) {
				t.Fatalf("stopped run: %+v, want Sent 500 and the cursor at %s", run, backup.EnvironmentKey(eligible[499].ns, eligible[499].id))
			}
			f.pub.setHook(nil)

			// Within fanOutStale of its last progress nobody takes the run over.
			f.now = run.UpdatedAt.Add(10*time.Minute - time.Second)
			if err := f.runSchedule(t, "WeeklyBackups"); err != nil {
				t.Fatal(err)
			}
			f.recoverSchedule(t)
			if msgs := f.automatic(); len(msgs) != 0 {
				t.Fatalf("%d messages sent while the fan-out might still be running", len(msgs))
			}

			f.now = run.UpdatedAt.Add(10 * time.Minute)
			if resumer == "recovery" {
				f.recoverSchedule(t)
			} else if err := f.runSchedule(t, "MonthlyBackups"); err != nil {
				t.Fatal(err)
			}
			resumed := f.automatic()
			if len(resumed) != 600 {
				t.Fatalf("the resumed fan-out sent %d messages, want the 600 from the cursor on", len(resumed))
			}
			for i, m := range resumed {
				e := eligible[500+i]
				b := decodeAuto(t, m)
				if m.ID != e.id+"/2026-12-02" || !m.ScheduledAt.Equal(start.Add(schedule.Offset(e.id, testSpread))) || !b.RunStartedAt.Equal(start) {
					t.Fatalf("resumed message %d: %s at %v (run start %v), want %s at the run's start plus its offset", i, m.ID, m.ScheduledAt, b.RunStartedAt, e.id)
				}
			}
			// Every eligible environment by MessageId exactly once, but the 100 of the failed send.
			count := map[string]int{}
			for _, m := range append(sent, resumed...) {
				count[m.ID]++
			}
			if len(count) != len(eligible) {
				t.Errorf("%d distinct messages, want %d", len(count), len(eligible))
			}
			for i, e := range eligible {
				want := 1
				if i >= 500 && i < 600 {
					want = 2 // sent by the failed send and again by the resume: the broker drops the second
				}
				if got := count[e.id+"/2026-12-02"]; got != want {
					t.Errorf("environment %d (%s): sent %d times, want %d", i, e.id, got, want)
				}
			}
			run = f.scheduleRun(t, "2026-12-02")
			if !run.FannedOut || run.Sent != 1100 || !run.StartedAt.Equal(start) || run.Trigger != "NightlyBackups" {
				t.Errorf("resumed run: %+v, want FannedOut, Sent 1100, started at %v by NightlyBackups", run, start)
			}
			f.now = f.now.Add(time.Hour)
			f.recoverSchedule(t)
			if err := f.runSchedule(t, "NightlyBackups"); err != nil {
				t.Fatal(err)
			}
			if msgs := f.automatic(); len(msgs) != 0 {
				t.Errorf("%d messages after the fan-out was done", len(msgs))
			}
		})
	}
}

// wantExpiry is the end of retention of a snapshot of kind k made at created, on the wall clock of loc.
func wantExpiry(k backup.SnapshotKind, created time.Time, loc *time.Location) time.Time {
	c := created.In(loc)
	y, m, d := c.Date()
	switch k {
	case backup.KindWeekly:
		m += 3
	case backup.KindMonthly:
		y++
	default:
		d += 14
	}
	return time.Date(y, m, d, c.Hour(), c.Minute(), c.Second(), c.Nanosecond(), loc)
}

func TestDeliveredTriesMakeOneSnapshotPerEnvironment(t *testing.T) {
	tests := []struct {
		zone string
		now  time.Time
		day  string
		kind backup.SnapshotKind
	}{
		{"", utc(2026, 12, 2, 1, 0), "2026-12-02", backup.KindNightly},
		// A weekly made in winter expires in summer time: three months on the wall clock, not in UTC.
		{"Europe/Amsterdam", utc(2027, 1, 10, 0, 30), "2027-01-10", backup.KindWeekly},
		{"Pacific/Auckland", utc(2026, 12, 5, 13, 0), "2026-12-06", backup.KindMonthly},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			f := newSchedFixture(t, tt.zone, tt.now)
			loc := f.plan.Calendar.Location()
			f.enable(t, "ns-a", true)
			f.enable(t, "ns-b", true)
			envs := []seededEnv{{"ns-a", testEnvID(1), true, "running"}, {"ns-a", testEnvID(2), true, "stopped"},
				{"ns-b", testEnvID(3), true, "running"}, {"ns-b", testEnvID(4), false, "nothing deployed"}}
			f.putEnv(t, "ns-a", testEnvID(1), backup.StateRunning, true)
			f.putEnv(t, "ns-a", testEnvID(2), backup.StateStopped, true)
			f.putEnv(t, "ns-b", testEnvID(3), backup.StateRunning, true)
			f.putEnv(t, "ns-b", testEnvID(4), backup.StateStopped, false)
			if err := f.runSchedule(t, "NightlyBackups"); err != nil {
				t.Fatal(err)
			}
			msgs := f.automatic()
			slices.SortFunc(msgs, func(a, b backup.Message) int { return a.ScheduledAt.Compare(b.ScheduledAt) })
			if len(msgs) != 3 {
				t.Fatalf("%d messages, want 3", len(msgs))
			}
			made := map[string]time.Time{}
			for _, m := range msgs {
				f.handleAt(t, m)
				made[decodeAuto(t, m).EnvironmentID] = f.now
				// Delivered again while the job is queued: no second job.
				f.handle(t, m)
				if n := f.deliverJobs(t); n != 1 {
					t.Fatalf("%s: %d jobs, want 1", m.ID, n)
				}
				// And once the snapshot is Finished.
				f.handle(t, m)
				if n := f.deliverJobs(t); n != 0 {
					t.Fatalf("%s delivered after its snapshot finished: %d jobs", m.ID, n)
				}
			}
			if msgs := f.automatic(); len(msgs) != 0 {
				t.Errorf("tries that made their snapshot sent %d more messages", len(msgs))
			}
			for _, e := range envs {
				snaps := f.snapshots(t, e.ns, e.id)
				if !e.eligible {
					if len(snaps) != 0 {
						t.Errorf("%s: %d snapshots", e.what, len(snaps))
					}
					continue
				}
				if len(snaps) != 1 {
					t.Fatalf("%s: %d snapshots, want 1", e.what, len(snaps))
				}
				sn := snaps[0]
				created := made[e.id]
				if sn.Status != backup.SnapshotFinished || sn.Kind != tt.kind || sn.CreatedBy != backup.ActorSchedule ||
					sn.AutomaticDay != tt.day || sn.AutomaticAttempt != 0 || !sn.CreatedAt.Equal(created) || sn.DumpPath == "" {
					t.Errorf("%s: %+v, want Finished %s by schedule for %s, try 0, made at %v", e.what, sn, tt.kind, tt.day, created)
				}
				if want := wantExpiry(tt.kind, created, loc); !sn.ExpiresAt.Equal(want) {
					t.Errorf("%s: expires at %v, want %v", e.what, sn.ExpiresAt, want)
				}
				acts := f.activity(t, e.ns, e.id)
				if len(acts) != 2 || len(activityOf(acts, backup.ActionBackup, backup.ActivityFinished)) != 1 || acts[0].Actor != backup.ActorSchedule {
					t.Errorf("%s: activity %+v, want STARTED and FINISHED by the schedule", e.what, acts)
				}
			}
			if evs := ofType(f.events(t), backup.EventSnapshotFinished); len(evs) != 3 {
				t.Errorf("%d snapshot.finished events, want 3", len(evs))
			}
			if len(f.snap.calls) != 3 {
				t.Errorf("%d dumps, want 3", len(f.snap.calls))
			}
		})
	}
}

// oneEnv is a fixture with one Running environment in ns-a, whose fan-out of the day at start ran; it
// returns the environment's message.
func oneEnv(t *testing.T, zone string, start time.Time) (*schedFixture, backup.Message) {
	t.Helper()
	f := newSchedFixture(t, zone, start)
	f.enable(t, "ns-a", true)
	f.grant(t, "ns-a")
	f.putEnv(t, "ns-a", envID, backup.StateRunning, true)
	if err := f.runSchedule(t, "NightlyBackups"); err != nil {
		t.Fatal(err)
	}
	msgs := f.automatic()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	return f, msgs[0]
}

// nextTry takes the one automatic message a try sent and checks it is try attempt of day, scheduled
// RetryDelay after now.
func (f *schedFixture) nextTry(t *testing.T, day string, attempt int, runStart time.Time) backup.Message {
	t.Helper()
	msgs := f.automatic()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want the next try", len(msgs))
	}
	m, b := msgs[0], decodeAuto(t, msgs[0])
	wantID := envID + "/" + day + "/" + string(rune('0'+attempt))
	if at := f.now.Add(schedule.RetryDelay); m.ID != wantID || !m.ScheduledAt.Equal(at) || b.Attempt != attempt ||
		!b.At.Equal(at) || !b.RunStartedAt.Equal(runStart) || b.Day != day || b.EnvironmentID != envID {
		t.Fatalf("next try: %s at %v, body %+v; want %s at %v, try %d of the run started %v", m.ID, m.ScheduledAt, b, wantID, at, attempt, runStart)
	}
	return m
}

func TestBusyEnvironmentIsTriedTwiceMoreThenRecordedFailed(t *testing.T) {
	start := utc(2026, 12, 2, 1, 0)
	f, m := oneEnv(t, "", start)
	manual, err := f.svc.CreateSnapshot(context.Background(), f.user, "ns-a", envID, "long one")
	if err != nil {
		t.Fatal(err)
	}
	manualJob := f.pub.take(backup.QueueJobs) // the manual backup runs all night: the lock stays held
	for attempt := 1; attempt < schedule.MaxAttempts; attempt++ {
		f.handleAt(t, m)
		m = f.nextTry(t, "2026-12-02", attempt, start)
		if n := len(f.pub.take(backup.QueueJobs)); n != 0 {
			t.Fatalf("a try on a busy environment queued %d jobs", n)
		}
	}
	f.handleAt(t, m) // the last try, still busy
	if msgs := f.automatic(); len(msgs) != 0 {
		t.Fatalf("the last try sent %d messages", len(msgs))
	}
	var failed []backup.Snapshot
	for _, sn := range f.snapshots(t, "ns-a", envID) {
		if sn.ID != manual.ID {
			failed = append(failed, sn)
		}
	}
	if len(failed) != 1 {
		t.Fatalf("%d automatic snapshots, want one Failed record", len(failed))
	}
	sn := failed[0]
	if sn.Status != backup.SnapshotFailed || sn.Kind != backup.KindNightly || sn.CreatedBy != backup.ActorSchedule ||
		sn.AutomaticDay != "2026-12-02" || sn.AutomaticAttempt != 2 || !sn.CreatedAt.Equal(f.now) ||
		!strings.Contains(sn.StatusMessage, "a backup is running") || !strings.Contains(sn.StatusMessage, "3 tries") {
		t.Errorf("failed record: %+v", sn)
	}
	if want := f.now.AddDate(0, 0, 14); !sn.ExpiresAt.Equal(want) {
		t.Errorf("the failed record expires at %v, want %v", sn.ExpiresAt, want)
	}
	acts := activityOf(f.activity(t, "ns-a", envID), backup.ActionBackup, backup.ActivityFailed)
	if len(acts) != 1 || acts[0].Actor != backup.ActorSchedule || acts[0].SnapshotID != sn.ID || acts[0].Message != sn.StatusMessage {
		t.Errorf("FAILED activity: %+v, want one by the schedule naming %s with its reason", acts, sn.ID)
	}
	var failedEvents []backup.OutboundEvent
	for _, ev := range f.events(t) {
		if ev.Type == backup.EventSnapshotFailed {
			failedEvents = append(failedEvents, ev)
		}
	}
	if len(failedEvents) != 1 || failedEvents[0].SnapshotID != sn.ID || failedEvents[0].StatusMessage != sn.StatusMessage {
		t.Errorf("snapshot.failed events: %+v, want one for %s with its reason", failedEvents, sn.ID)
	}
	// The last try again (redelivered): nothing more.
	f.handle(t, m)
	if msgs := f.automatic(); len(msgs) != 0 || len(f.snapshots(t, "ns-a", envID)) != 2 ||
		len(activityOf(f.activity(t, "ns-a", envID), backup.ActionBackup, backup.ActivityFailed)) != 1 {
		t.Errorf("the redelivered last try did something: %d messages", len(msgs))
	}
	if got, _ := f.st.GetSnapshot(context.Background(), "ns-a", envID, manual.ID); got.Status != backup.SnapshotProcessing || len(manualJob) != 1 {
		t.Errorf("the manual backup was disturbed: %+v", got)
	}
}

func TestBusyEnvironmentIsBackedUpWhenFreeAtALaterTry(t *testing.T) {
	start := utc(2026, 12, 2, 1, 0)
	f, m := oneEnv(t, "", start)
	if _, err := f.svc.CreateSnapshot(context.Background(), f.user, "ns-a", envID, ""); err != nil {
		t.Fatal(err)
	}
	jobs := f.pub.take(backup.QueueJobs)
	f.handleAt(t, m)
	retry := f.nextTry(t, "2026-12-02", 1, start)
	f.pub.msgs[backup.QueueJobs] = jobs
	f.deliverJobs(t) // the manual backup ends
	f.handleAt(t, retry)
	if n := f.deliverJobs(t); n != 1 {
		t.Fatalf("%d jobs, want the automatic backup's", n)
	}
	var auto []backup.Snapshot
	for _, sn := range f.snapshots(t, "ns-a", envID) {
		if sn.Kind == backup.KindNightly {
			auto = append(auto, sn)
		}
	}
	if len(auto) != 1 || auto[0].Status != backup.SnapshotFinished || auto[0].AutomaticAttempt != 1 || auto[0].AutomaticDay != "2026-12-02" {
		t.Fatalf("automatic snapshots: %+v, want one Finished by try 1", auto)
	}
	if msgs := f.automatic(); len(msgs) != 0 {
		t.Errorf("%d messages after the backup", len(msgs))
	}
}

func TestTransientStateIsWaitedOut(t *testing.T) {
	t.Run("running again before the second try", func(t *testing.T) {
		start := utc(2026, 12, 2, 1, 0)
		f, m := oneEnv(t, "", start)
		f.putEnv(t, "ns-a", envID, backup.StateDeploying, true)
		f.handleAt(t, m)
		retry := f.nextTry(t, "2026-12-02", 1, start)
		if n := len(f.pub.take(backup.QueueJobs)); n != 0 || len(f.snapshots(t, "ns-a", envID)) != 0 {
			t.Fatalf("a try during a deployment started a backup")
		}
		f.putEnv(t, "ns-a", envID, backup.StateRunning, true)
		f.handleAt(t, retry)
		f.deliverJobs(t)
		snaps := f.snapshots(t, "ns-a", envID)
		if len(snaps) != 1 || snaps[0].Status != backup.SnapshotFinished || snaps[0].AutomaticAttempt != 1 || snaps[0].Kind != backup.KindNightly {
			t.Fatalf("snapshots: %+v, want one Finished by try 1", snaps)
		}
	})
	t.Run("deploying at every try", func(t *testing.T) {
		start := utc(2026, 12, 13, 1, 0) // a Sunday: weekly
		f, m := oneEnv(t, "", start)
		f.putEnv(t, "ns-a", envID, backup.StateDeploying, true)
		for attempt := 1; attempt < schedule.MaxAttempts; attempt++ {
			f.handleAt(t, m)
			m = f.nextTry(t, "2026-12-13", attempt, start)
		}
		f.handleAt(t, m)
		if msgs := f.automatic(); len(msgs) != 0 {
			t.Fatalf("the last try sent %d messages", len(msgs))
		}
		snaps := f.snapshots(t, "ns-a", envID)
		if len(snaps) != 1 || snaps[0].Status != backup.SnapshotFailed || snaps[0].Kind != backup.KindWeekly ||
			!strings.Contains(snaps[0].StatusMessage, "being deployed") || !strings.Contains(snaps[0].StatusMessage, "3 tries") {
			t.Fatalf("snapshots: %+v, want one Failed record naming the deployment", snaps)
		}
		if want := f.now.AddDate(0, 0, 14); !snaps[0].ExpiresAt.Equal(want) {
			t.Errorf("a failed weekly expires at %v, want 14 days after: %v", snaps[0].ExpiresAt, want)
		}
		if acts := activityOf(f.activity(t, "ns-a", envID), backup.ActionBackup, backup.ActivityFailed); len(acts) != 1 {
			t.Errorf("FAILED activity: %+v", acts)
		}
	})
}

// Two tries of the day handled at once (a try and a later one, delivered late): the later one finds no
// snapshot, then, once it holds the lock, the first one's. It must decide again under the lock.
func TestTriesHandledAtOnceMakeOneSnapshot(t *testing.T) {
	start := utc(2026, 12, 2, 1, 0)
	f, first := oneEnv(t, "", start)
	later := first
	edit(t, &later, func(b *autoBody) { b.Attempt = 1 })
	f.now = first.ScheduledAt.Add(schedule.RetryDelay)
	f.ops.onGetLock = func() { // the first try runs to the end while the later one is about to take the lock
		f.handle(t, first)
		f.deliverJobs(t)
	}
	f.handle(t, later)
	if f.ops.onGetLock != nil {
		t.Fatal("test setup: the later try never looked at the lock")
	}
	snaps := f.snapshots(t, "ns-a", envID)
	if len(snaps) != 1 || snaps[0].AutomaticAttempt != 0 || snaps[0].Status != backup.SnapshotFinished {
		t.Errorf("snapshots: %+v, want the first try's only", snaps)
	}
	if jobs, msgs := len(f.pub.take(backup.QueueJobs)), len(f.automatic()); jobs != 0 || msgs != 0 {
		t.Errorf("the later try queued %d jobs and %d tries", jobs, msgs)
	}
	if lock, _ := f.st.GetLock(context.Background(), "ns-a", envID); lock.OperationID != "" {
		if op, _ := f.st.GetOperation(context.Background(), "ns-a", envID, lock.OperationID); !op.Phase.Done() {
			t.Errorf("the lock is held by %+v", op)
		}
	}
}

var permanent = backup.Errorf(backup.CodeInvalidState, "pg_dump: the database acc_db does not exist")

func TestFailedAutomaticSnapshotIsTriedAgain(t *testing.T) {
	start := utc(2026, 12, 13, 1, 0) // a Sunday: weekly
	f, m := oneEnv(t, "", start)
	f.snap.errs = []error{permanent}
	f.handleAt(t, m)
	f.deliverJobs(t)
	first := f.snapshots(t, "ns-a", envID)
	if len(first) != 1 || first[0].Status != backup.SnapshotFailed || first[0].AutomaticAttempt != 0 {
		t.Fatalf("first try: %+v, want Failed", first)
	}
	if want := first[0].CreatedAt.AddDate(0, 0, 14); !first[0].ExpiresAt.Equal(want) {
		t.Errorf("a failed weekly expires at %v, want %v", first[0].ExpiresAt, want)
	}
	retry := f.nextTry(t, "2026-12-13", 1, start)
	// The first try delivered again: its snapshot failed and scheduled its own retry.
	f.handle(t, m)
	if n := len(f.pub.take(backup.QueueJobs)); n != 0 {
		t.Fatalf("the failed try, redelivered, queued %d jobs", n)
	}
	f.handleAt(t, retry)
	f.deliverJobs(t)
	snaps := f.snapshots(t, "ns-a", envID)
	if len(snaps) != 2 || snaps[0].ID == first[0].ID {
		t.Fatalf("snapshots: %+v, want a second one", snaps)
	}
	if s := snaps[0]; s.Status != backup.SnapshotFinished || s.AutomaticAttempt != 1 || s.Kind != backup.KindWeekly ||
		!s.ExpiresAt.Equal(s.CreatedAt.AddDate(0, 3, 0)) {
		t.Errorf("second try: %+v, want a Finished weekly kept 3 months", s)
	}
	if msgs := f.automatic(); len(msgs) != 0 {
		t.Errorf("%d messages after a try succeeded", len(msgs))
	}
	// Every message again: nothing.
	f.handle(t, m)
	f.handle(t, retry)
	if n := f.deliverJobs(t); n != 0 || len(f.snapshots(t, "ns-a", envID)) != 2 {
		t.Errorf("redeliveries made %d jobs", n)
	}
}

func TestAutomaticSnapshotFailingThreeTimesIsNotTriedAgain(t *testing.T) {
	start := utc(2026, 12, 2, 1, 0)
	f, m := oneEnv(t, "", start)
	f.snap.errs = []error{permanent, permanent, permanent, permanent}
	all := []backup.Message{m}
	for attempt := 0; attempt < schedule.MaxAttempts; attempt++ {
		f.handleAt(t, m)
		if n := f.deliverJobs(t); n != 1 {
			t.Fatalf("try %d: %d jobs", attempt, n)
		}
		if attempt+1 < schedule.MaxAttempts {
			m = f.nextTry(t, "2026-12-02", attempt+1, start)
			all = append(all, m)
		}
	}
	if msgs := f.automatic(); len(msgs) != 0 {
		t.Fatalf("the third failure sent %d messages", len(msgs))
	}
	// Every message of the day again, and later in the night.
	f.now = f.now.Add(time.Hour)
	for _, m := range all {
		f.handle(t, m)
	}
	f.deliverJobs(t)
	snaps := f.snapshots(t, "ns-a", envID)
	if len(snaps) != 3 {
		t.Fatalf("%d snapshots, want 3 at most", len(snaps))
	}
	attempts := map[int]bool{}
	for _, s := range snaps {
		attempts[s.AutomaticAttempt] = true
		if s.Status != backup.SnapshotFailed || !strings.Contains(s.StatusMessage, "does not exist") {
			t.Errorf("snapshot %+v, want Failed with the cause", s)
		}
	}
	if len(attempts) != 3 || f.automatic() != nil || len(f.snap.calls) != 3 {
		t.Errorf("tries %v, %d dumps; want tries 0, 1 and 2 and 3 dumps", attempts, len(f.snap.calls))
	}
	if evs := ofType(f.events(t), backup.EventSnapshotFailed); len(evs) != 3 {
		t.Errorf("%d snapshot.failed events, want 3", len(evs))
	}
}

func TestAutomaticMessagesThatAreDropped(t *testing.T) {
	start := utc(2026, 12, 2, 1, 0)
	late := start.Add(12*time.Hour + testSpread)
	tests := []struct {
		name   string
		change func(t *testing.T, f *schedFixture, m *backup.Message)
		made   bool
	}{
		{"backups disabled after the fan-out", func(t *testing.T, f *schedFixture, _ *backup.Message) { f.enable(t, "ns-a", false) }, false},
		{"environment deleted", func(t *testing.T, f *schedFixture, _ *backup.Message) { f.deleteEnv(t, "ns-a", envID) }, false},
		{"nothing deployed any more", func(t *testing.T, f *schedFixture, _ *backup.Message) {
			f.putEnv(t, "ns-a", envID, backup.StateStopped, false)
		}, false},
		{"an environment never recorded", func(t *testing.T, f *schedFixture, m *backup.Message) {
			b := decodeAuto(t, *m)
			b.EnvironmentID = testEnvID(77)
			m.Body = encodeAuto(b)
		}, false},
		{"not JSON", func(_ *testing.T, _ *schedFixture, m *backup.Message) { m.Body = []byte("nightly please") }, false},
		{"empty object", func(_ *testing.T, _ *schedFixture, m *backup.Message) { m.Body = []byte("{}") }, false},
		{"a manual kind", func(t *testing.T, _ *schedFixture, m *backup.Message) {
			edit(t, m, func(b *autoBody) { b.Kind = "manual" })
		}, false},
		{"a fourth try", func(t *testing.T, _ *schedFixture, m *backup.Message) {
			edit(t, m, func(b *autoBody) { b.Attempt = 3 })
		}, false},
		{"a negative try", func(t *testing.T, _ *schedFixture, m *backup.Message) {
			edit(t, m, func(b *autoBody) { b.Attempt = -1 })
		}, false},
		{"no day", func(t *testing.T, _ *schedFixture, m *backup.Message) {
			edit(t, m, func(b *autoBody) { b.Day = "2026-13-02" })
		}, false},
		{"a bad namespace", func(t *testing.T, _ *schedFixture, m *backup.Message) {
			edit(t, m, func(b *autoBody) { b.Namespace = "NS_A" })
		}, false},
		{"a bad environment id", func(t *testing.T, _ *schedFixture, m *backup.Message) {
			edit(t, m, func(b *autoBody) { b.EnvironmentID = "env-1" })
		}, false},
		{"no run start", func(t *testing.T, _ *schedFixture, m *backup.Message) {
			edit(t, m, func(b *autoBody) { b.RunStartedAt = time.Time{} })
		}, false},
		{"delivered after the try window", func(_ *testing.T, f *schedFixture, _ *backup.Message) { f.now = late.Add(time.Second) }, false},
		{"delivered at the end of the try window", func(_ *testing.T, f *schedFixture, _ *backup.Message) { f.now = late }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, m := oneEnv(t, "", start)
			f.now = m.ScheduledAt
			tt.change(t, f, &m)
			if err := f.svc.HandleAutomaticBackup(context.Background(), m.Body, f.now, zerolog.Nop()); err != nil {
				t.Fatalf("a message that cannot be handled must be acknowledged: %v", err)
			}
			jobs, retries := len(f.pub.take(backup.QueueJobs)), len(f.automatic())
			if snaps := f.snapshots(t, "ns-a", envID); (len(snaps) == 1 && jobs == 1) != tt.made || retries != 0 {
				t.Errorf("%d snapshots, %d jobs, %d next tries; want a backup made = %t and no next try", len(snaps), jobs, retries, tt.made)
			}
		})
	}
}

func edit(t *testing.T, m *backup.Message, change func(*autoBody)) {
	t.Helper()
	b := decodeAuto(t, *m)
	change(&b)
	m.Body = encodeAuto(b)
}
