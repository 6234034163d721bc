package e2e

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/funchost"
	"github.com/mxazure/backups/internal/schedule"
)

// TestScheduleMakesAndExpiresAutomaticBackups runs automatic backups and their expiry end to end, on a
// stack of its own whose host's clock is moved from day to day (the handler runs the schedule as of the
// time the host sends; snapshots are dated by its real clock). Environments in every state: the demo's
// two (Stopped, deployed), and in a namespace of the test: one Running, one Deploying that is Running
// by its second try, one Deploying at every try, one with nothing deployed, one whose app is undeployed
// after the first day, one deleted after the first day; and one in a namespace whose backups are off.
//
// On a Thursday, the last Sunday of a month and the first Sunday of the next (all before today, so that
// no expiry is due meanwhile), the day's timer makes exactly one snapshot per eligible environment, of
// the day's kind, by the schedule, with the kind's expiry, its activity entries and its event; the
// Deploying ones are tried again 30 host minutes later, and the one Deploying at each of its 3 tries
// gets a Failed snapshot saying so (and a snapshot.failed event). Firing the same or another timer again that day, or delivering a try again, makes nothing;
// recovery's check after the window finds nothing missing. Then the host's clock goes to just before
// the first snapshot's expiry (the expiry deletes nothing), and past the last nightly's: the expiry
// deletes exactly the nightly and Failed snapshots, records, blobs, API and all, with an expire activity
// entry and a snapshot.expired event each, and keeps the weekly and monthly ones and, as
// KEEP_LAST_GOOD_SNAPSHOT says, the undeployed environment's nightly (its only Finished snapshot), but
// not the deleted environment's.
func TestScheduleMakesAndExpiresAutomaticBackups(t *testing.T) {
	realStart := time.Now().UTC()
	nightly, weekly, monthly := scheduleDays(realStart)
	s := startScheduleStack(t, nightly.Add(11*time.Hour))
	suffix := randomHex(t)[:6]
	ns, off := "sched-"+suffix, "sched-off-"+suffix
	s.namespace(t, ns, true)
	s.namespace(t, off, false)
	acceptance, test := s.envs[0], s.envs[1]
	running := s.newEnv(t, ns, "running", "Running", true)
	deploying := s.newEnv(t, ns, "deploying", "Deploying", true)
	stuck := s.newEnv(t, ns, "stuck", "Deploying", true)
	s.newEnv(t, ns, "undeployed", "Stopped", false)
	paused := s.newEnv(t, ns, "paused", "Stopped", true)
	gone := s.newEnv(t, ns, "gone", "Stopped", true)
	s.newEnv(t, off, "elsewhere", "Stopped", true)
	c := &schedCheck{s: s, realStart: realStart, made: map[string]backup.Snapshot{}}

	// A Thursday: nightly. The deploying environment is refused at its first try and backed up at its
	// second, once it is Running; stuck is refused three times.
	s.moveTo(t, nightly.Add(12*time.Hour))
	day := c.runDay(t, "NightlyBackups", func() { s.tell(t, deploying, "Running", true) })
	c.checkDay(t, day, backup.KindNightly, map[*schedEnv]schedWant{acceptance: madeAt(0), test: madeAt(0), running: madeAt(0),
		deploying: madeAt(1), paused: madeAt(0), gone: madeAt(0), stuck: gaveUp(backup.KindNightly)})
	c.nothingMore(t, day, "the nightly timer fired again", func() { s.fire(t, "NightlyBackups") })
	c.nothingMore(t, day, "the weekly timer fired the same day", func() { s.fire(t, "WeeklyBackups") })
	c.nothingMore(t, day, "tries delivered again", func() {
		for _, e := range []*schedEnv{running, stuck} {
			m := c.firstTry(t, day, e)
			if _, err := s.Host.Publish(backup.QueueAutomatic, []funchost.PublishMessage{{Body: m.Body,
				MessageID: m.MessageID + "/again", ContentType: "application/json"}}); err != nil {
				t.Fatal(err)
			}
		}
	})

	// Meanwhile paused's app is undeployed and gone is deleted: neither is backed up again.
	s.tell(t, paused, "Stopped", false)
	s.remove(t, gone)

	// The last Sunday of the month: weekly, whichever timer fires.
	s.moveTo(t, weekly.Add(12*time.Hour))
	day = c.runDay(t, "WeeklyBackups", nil)
	c.checkDay(t, day, backup.KindWeekly, map[*schedEnv]schedWant{acceptance: madeAt(0), test: madeAt(0), running: madeAt(0),
		deploying: madeAt(0), stuck: gaveUp(backup.KindWeekly)})
	c.nothingMore(t, day, "the nightly timer fired on a Sunday", func() { s.fire(t, "NightlyBackups") })
	// Recovery's check, once the window and the retries have passed, finds every eligible environment
	// with its snapshot of the day (stuck's Failed one included) and sends nothing again.
	c.nothingMore(t, day, "recovery checked the day", func() {
		s.moveTo(t, day.run.StartedAt.Add(3*time.Hour))
		s.fire(t, "RecoverOperations")
	})
	if run := c.run(t, day.day); !run.Checked || run.Resent != 0 {
		t.Errorf("the weekly run after recovery's check: %+v, want checked with nothing sent again", run)
	}

	// The first Sunday of the next month: monthly.
	s.moveTo(t, monthly.Add(12*time.Hour))
	day = c.runDay(t, "MonthlyBackups", nil)
	c.checkDay(t, day, backup.KindMonthly, map[*schedEnv]schedWant{acceptance: madeAt(0), test: madeAt(0), running: madeAt(0),
		deploying: madeAt(0), stuck: gaveUp(backup.KindMonthly)})
	c.nothingMore(t, day, "the monthly timer fired again", func() { s.fire(t, "MonthlyBackups") })
	c.nothingMore(t, day, "the weekly timer fired on the first Sunday", func() { s.fire(t, "WeeklyBackups") })

	c.checkExpiry(t, paused)
}

// scheduleDays are the host's days of the schedule's test: the last first Sunday of a month before
// today (monthly), the Sunday a week earlier (weekly: the 22nd or later) and the Thursday before that
// (nightly), at midnight UTC. All are before today: the snapshots the test makes are dated by the real
// clock, so none is due for expiry while the host's clock is on these days.
func scheduleDays(now time.Time) (nightly, weekly, monthly time.Time) {
	d := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -1)
	for d.Weekday() != time.Sunday || d.Day() > 7 {
		d = d.AddDate(0, 0, -1)
	}
	return d.AddDate(0, 0, -10), d.AddDate(0, 0, -7), d
}

// schedCheck follows what the schedule's test expects.
type schedCheck struct {
	s         *schedStack
	realStart time.Time
	made      map[string]backup.Snapshot // every snapshot the test expects to exist, by id
}

// schedWant is an environment's automatic snapshot of a day: made at which try (0, 1 or 2) and with which
// status; a Failed one's status message and activity entry say message.
type schedWant struct {
	attempt int
	status  backup.SnapshotStatus
	message string
}

func madeAt(attempt int) schedWant {
	return schedWant{attempt: attempt, status: backup.SnapshotFinished}
}

func gaveUp(kind backup.SnapshotKind) schedWant {
	return schedWant{attempt: schedule.MaxAttempts - 1, status: backup.SnapshotFailed,
		message: "the automatic " + string(kind) + " backup was not made: the environment is being deployed at each of its 3 tries"}
}

// dayRun is a day's run as a timer started it.
type dayRun struct {
	day                   string
	timer                 string
	hostBefore, hostAfter time.Time // the host's clock around the timer's run
	run                   backup.ScheduleRun
}

// runDay fires timer now (the host's clock) and walks the day through its tries: the first ones come
// within the spread; between runs after them; then, twice, the host's clock goes 31 minutes on, so
// that the tries the environments in a transient state asked for come due.
func (c *schedCheck) runDay(t *testing.T, timer string, between func()) dayRun {
	t.Helper()
	s := c.s
	s.quiet(t)
	r := dayRun{timer: timer, hostBefore: s.clock.Now()}
	s.fire(t, timer)
	r.hostAfter = s.clock.Now()
	s.quiet(t)
	if between != nil {
		between()
	}
	for range schedule.MaxAttempts - 1 {
		s.moveTo(t, s.clock.Now().Add(schedule.RetryDelay+time.Minute))
	}
	r.day = r.hostBefore.Format(time.DateOnly)
	r.run = c.run(t, r.day)
	return r
}

func (c *schedCheck) run(t *testing.T, day string) backup.ScheduleRun {
	t.Helper()
	run, err := c.s.stores.Schedule.GetScheduleRun(context.Background(), day)
	if err != nil {
		t.Fatalf("the schedule's run of %s: %v", day, err)
	}
	return run
}

// firstTry is the day's first try of e as the run sent it: its MessageId is the environment's key for
// the day.
func (c *schedCheck) firstTry(t *testing.T, r dayRun, e *schedEnv) funchost.MessageInfo {
	t.Helper()
	var found []funchost.MessageInfo
	for _, m := range c.s.published(t, backup.QueueAutomatic) {
		if m.MessageID == e.id+"/"+r.day {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d first tries of %s, want 1: %+v", r.day, len(found), e, found)
	}
	return found[0]
}

// checkDay checks a day's run and its snapshots: the run is the day's, of its kind, started by the
// timer as of the host's time; it sent one first try to each environment of want, at its offset in the
// spread window; each of those has exactly the snapshot want says, and no other environment has one of
// that day.
func (c *schedCheck) checkDay(t *testing.T, r dayRun, kind backup.SnapshotKind, wants map[*schedEnv]schedWant) {
	s, run := c.s, r.run
	if run.Day != r.day || run.Kind != kind || run.Trigger != r.timer || !run.FannedOut || run.Sent != len(wants) ||
		run.Spread != scheduleSpread || run.StartedAt.Before(r.hostBefore) || run.StartedAt.After(r.hostAfter) {
		t.Errorf("the run of %s: %+v; want kind %s by %s, fanned out with %d messages, spread %s, started between %s and %s (the host's clock)",
			r.day, run, kind, r.timer, len(wants), scheduleSpread, r.hostBefore, r.hostAfter)
	}
	for e := range wants {
		m := c.firstTry(t, r, e)
		if at := run.StartedAt.Add(schedule.Offset(e.id, scheduleSpread)); m.ScheduledEnqueueTime == nil || !m.ScheduledEnqueueTime.Equal(at) {
			t.Errorf("%s: the first try of %s is scheduled at %v, want the run's start plus its offset, %s", r.day, e, m.ScheduledEnqueueTime, at)
		}
	}
	// The environment that was Deploying at each try asked for its second and third, 30 minutes apart.
	for e, w := range wants {
		if w.status != backup.SnapshotFailed {
			continue
		}
		prev := run.StartedAt
		for try := 1; try < schedule.MaxAttempts; try++ {
			var at *time.Time
			for _, m := range s.published(t, backup.QueueAutomatic) {
				if m.MessageID == e.id+"/"+r.day+"/"+strconv.Itoa(try) {
					at = m.ScheduledEnqueueTime
				}
			}
			if at == nil || at.Before(prev.Add(schedule.RetryDelay)) {
				t.Errorf("%s: try %d of %s scheduled at %v, want 30 minutes after the one before (%s)", r.day, try+1, e, at, prev)
				break
			}
			prev = *at
		}
	}

	all := s.snapshots(t)
	byEnv := map[*schedEnv][]backup.Snapshot{}
	for _, sn := range all {
		if sn.AutomaticDay == r.day {
			byEnv[s.envOf(sn)] = append(byEnv[s.envOf(sn)], sn)
		}
	}
	for _, e := range s.envs {
		got := byEnv[e]
		w, ok := wants[e]
		switch {
		case !ok && len(got) > 0:
			t.Errorf("%s: %s has %d automatic snapshots, want none: %+v", r.day, e, len(got), got)
			continue
		case !ok:
			continue
		case len(got) != 1:
			t.Errorf("%s: %s has %d automatic snapshots, want 1: %+v", r.day, e, len(got), got)
			continue
		}
		c.checkSnapshot(t, e, got[0], r.day, kind, w)
		c.made[got[0].ID] = got[0]
	}
	c.nothingElse(t, all)
}

// checkSnapshot checks one automatic snapshot in Table Storage, in the snapshots container, in the
// activity log and in the API.
func (c *schedCheck) checkSnapshot(t *testing.T, e *schedEnv, sn backup.Snapshot, day string, kind backup.SnapshotKind, w schedWant) {
	s := c.s
	if sn.Kind != kind || sn.Status != w.status || sn.AutomaticAttempt != w.attempt || sn.CreatedBy != backup.ActorSchedule {
		t.Errorf("%s: the snapshot of %s is %s %s by %q at try %d; want %s %s by the schedule at try %d",
			day, e, sn.Kind, sn.Status, sn.CreatedBy, sn.AutomaticAttempt+1, kind, w.status, w.attempt+1)
	}
	// Dated by the handler's clock, which is real: the host's is weeks back.
	if sn.CreatedAt.Before(c.realStart) || sn.CreatedAt.After(time.Now()) {
		t.Errorf("%s: the snapshot of %s was created at %s, want the real time (since %s)", day, e, sn.CreatedAt, c.realStart)
	}
	if want := wantExpiry(kind, w.status, sn.CreatedAt); !sn.ExpiresAt.Equal(want) {
		t.Errorf("%s: the %s %s snapshot of %s created at %s expires at %s, want %s", day, sn.Status, kind, e, sn.CreatedAt, sn.ExpiresAt, want)
	}
	blobs := s.snapshotBlobs(t, sn)
	entries := s.activity(t, e)
	told := s.events(t)
	switch w.status {
	case backup.SnapshotFinished:
		if n := told[backup.EventSnapshotFinished][sn.ID]; n != 1 {
			t.Errorf("%s: %d snapshot.finished events of %s's snapshot, want 1", day, n, e)
		}
		if len(blobs) != 2 || !strings.HasSuffix(blobs[0], ".db.backup.gz") || !strings.HasSuffix(blobs[1], ".manifest.gz") {
			t.Errorf("%s: the blobs of %s's snapshot: %v, want its dump and its manifest", day, e, blobs)
		}
		if sn.FilesCount != e.files {
			t.Errorf("%s: %s's snapshot has %d files, want %d", day, e, sn.FilesCount, e.files)
		}
		if !hasEntry(entries, sn.ID, backup.ActionBackup, backup.ActivityStarted, backup.ActorSchedule, string(kind)+" snapshot started") ||
			!hasEntry(entries, sn.ID, backup.ActionBackup, backup.ActivityFinished, backup.ActorSchedule, "snapshot finished") {
			t.Errorf("%s: the activity of %s lacks the schedule's backup STARTED and FINISHED of %s: %+v", day, e, sn.ID, entries)
		}
	case backup.SnapshotFailed:
		if len(blobs) != 0 {
			t.Errorf("%s: the Failed snapshot of %s has blobs %v", day, e, blobs)
		}
		if !strings.Contains(sn.StatusMessage, w.message) {
			t.Errorf("%s: the Failed snapshot of %s says %q, want %q", day, e, sn.StatusMessage, w.message)
		}
		if n := told[backup.EventSnapshotFailed][sn.ID]; n != 1 {
			t.Errorf("%s: %d snapshot.failed events of %s's given-up snapshot, want 1", day, n, e)
		}
		if !hasEntry(entries, sn.ID, backup.ActionBackup, backup.ActivityFailed, backup.ActorSchedule, w.message) {
			t.Errorf("%s: the activity of %s lacks the schedule's backup FAILED of %s: %+v", day, e, sn.ID, entries)
		}
	}
	if e.deleted {
		return
	}
	status, api := s.call(t, "GET", e.api()+"/snapshots/"+sn.ID, "")
	created, _ := time.Parse(time.RFC3339Nano, jsonString(api["created_at"]))
	expires, _ := time.Parse(time.RFC3339Nano, jsonString(api["expires_at"]))
	if status != http.StatusOK || api["kind"] != string(kind) || api["status"] != string(w.status) ||
		!created.Equal(sn.CreatedAt) || !expires.Equal(sn.ExpiresAt) {
		t.Errorf("%s: the API shows %s's snapshot as %d %v", day, e, status, api)
	}
}

func jsonString(v any) string { s, _ := v.(string); return s }

// nothingElse fails unless the snapshots are exactly those the test expects, as they were.
func (c *schedCheck) nothingElse(t *testing.T, all map[string]backup.Snapshot) {
	t.Helper()
	for id, sn := range all {
		was, ok := c.made[id]
		switch {
		case !ok:
			t.Errorf("an unexpected snapshot of %s: %+v", c.s.envOf(sn), sn)
		case !sn.UpdatedAt.Equal(was.UpdatedAt) || sn.Status != was.Status || sn.Deleted():
			t.Errorf("the snapshot %s of %s changed: %+v, was %+v", id, c.s.envOf(sn), sn, was)
		}
	}
	for id, sn := range c.made {
		if _, ok := all[id]; !ok {
			t.Errorf("the snapshot %s of %s (%s of %s) is gone", id, c.s.envOf(sn), sn.Kind, sn.AutomaticDay)
		}
	}
}

// nothingMore does something that must not make, change or delete any snapshot, nor change the day's
// run beyond recovery's check.
func (c *schedCheck) nothingMore(t *testing.T, r dayRun, what string, do func()) {
	t.Helper()
	do()
	c.s.quiet(t)
	before := len(c.made)
	c.nothingElse(t, c.s.snapshots(t))
	run := c.run(t, r.day)
	run.Checked, run.CheckedAt, run.UpdatedAt = r.run.Checked, r.run.CheckedAt, r.run.UpdatedAt
	if a, b := mustMarshal(t, run), mustMarshal(t, r.run); a != b {
		t.Errorf("%s: %s changed the day's run: %+v, was %+v", r.day, what, run, r.run)
	}
	if t.Failed() {
		t.Fatalf("%s: after %s (%d snapshots expected)", r.day, what, before)
	}
}

// checkExpiry moves the host's clock to just before the first expiry of the snapshots made (nothing is
// deleted), then past the last expiry of the 14-day ones, and checks what the expiry deleted and kept.
// lastGood is the environment whose only Finished snapshot, a nightly, is kept.
func (c *schedCheck) checkExpiry(t *testing.T, lastGood *schedEnv) {
	s := c.s
	all := s.snapshots(t)
	c.nothingElse(t, all)
	var first, last time.Time
	deleted, kept := map[string]backup.Snapshot{}, map[string]backup.Snapshot{}
	for id, sn := range all {
		short := sn.ExpiresAt.Before(c.realStart.AddDate(0, 1, 0)) // nightly or Failed
		switch {
		case short && s.envOf(sn) == lastGood:
			if sn.Kind != backup.KindNightly || sn.Status != backup.SnapshotFinished {
				t.Fatalf("%s's snapshot %+v, want only its nightly", lastGood, sn)
			}
			kept[id] = sn
		case short:
			deleted[id] = sn
		default:
			kept[id] = sn
		}
		if short && (first.IsZero() || sn.ExpiresAt.Before(first)) {
			first = sn.ExpiresAt
		}
		if short && sn.ExpiresAt.After(last) {
			last = sn.ExpiresAt
		}
	}
	// 4 nightlies deleted (the demo's two, running's and deploying's), gone's as its environment is
	// deleted, and stuck's three Failed ones; kept: 4 weekly, 4 monthly and paused's nightly.
	if len(deleted) != 8 || len(kept) != 9 {
		t.Fatalf("%d snapshots to be deleted and %d to be kept, want 8 and 9: %v", len(deleted), len(kept), all)
	}

	s.moveTo(t, first.Add(-time.Minute))
	s.fire(t, "ExpireSnapshots")
	s.quiet(t)
	c.nothingElse(t, s.snapshots(t))
	if t.Failed() {
		t.Fatal("the expiry deleted snapshots before their expires_at")
	}

	s.moveTo(t, last.Add(time.Minute))
	s.fire(t, "ExpireSnapshots")
	s.quiet(t)
	after := s.snapshots(t)
	if got, want := slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(kept)); !slices.Equal(got, want) {
		t.Errorf("after the expiry the snapshots are %v, want %v", got, want)
	}
	expired := s.events(t)[backup.EventSnapshotExpired]
	for id, sn := range deleted {
		e := s.envOf(sn)
		if blobs := s.snapshotBlobs(t, sn); len(blobs) != 0 {
			t.Errorf("the expired %s snapshot of %s left blobs %v", sn.Kind, e, blobs)
		}
		if expired[id] != 1 {
			t.Errorf("%d snapshot.expired events of %s's %s snapshot %s, want 1", expired[id], e, sn.Kind, id)
		}
		if !hasEntry(s.activity(t, e), id, backup.ActionExpire, backup.ActivityFinished, backup.ActorSystem, string(sn.Kind)+" snapshot expired") {
			t.Errorf("no expire FINISHED entry of %s's %s snapshot %s: %+v", e, sn.Kind, id, s.activity(t, e))
		}
		if !e.deleted {
			if status, body := s.call(t, "GET", e.api()+"/snapshots/"+id, ""); status != http.StatusNotFound {
				t.Errorf("GET the expired snapshot %s of %s: %d %v, want 404", id, e, status, body)
			}
		}
	}
	for id, sn := range kept {
		e := s.envOf(sn)
		if got := after[id]; got.Deleted() || !got.UpdatedAt.Equal(sn.UpdatedAt) {
			t.Errorf("the kept %s snapshot of %s changed: %+v", sn.Kind, e, got)
		}
		if blobs := s.snapshotBlobs(t, sn); len(blobs) != 2 {
			t.Errorf("the kept %s snapshot of %s has blobs %v, want its dump and its manifest", sn.Kind, e, blobs)
		}
		if expired[id] != 0 || hasEntry(s.activity(t, e), id, backup.ActionExpire, backup.ActivityFinished, backup.ActorSystem, "") {
			t.Errorf("the kept %s snapshot %s of %s was told expired", sn.Kind, id, e)
		}
	}
	if n := len(expired); n != len(deleted) {
		t.Errorf("snapshot.expired events of %d snapshots, want %d", n, len(deleted))
	}
	// The API lists what is kept: the weekly and the monthly of an environment backed up every day, the
	// nightly of the one no longer deployed (and shows it as its last Finished one).
	for _, e := range s.envs {
		if e.deleted {
			continue
		}
		status, list := s.call(t, "GET", e.api()+"/snapshots", "")
		var ids, want []string
		for _, x := range jsonList(list["snapshots"]) {
			ids = append(ids, jsonString(x["snapshot_id"]))
		}
		var newest time.Time
		for id, sn := range kept {
			if s.envOf(sn) == e {
				want = append(want, id)
				newest = laterOf(newest, sn.CreatedAt)
			}
		}
		slices.Sort(ids)
		slices.Sort(want)
		if status != http.StatusOK || !slices.Equal(ids, want) {
			t.Errorf("the API lists the snapshots of %s as %d %v, want %v", e, status, ids, want)
		}
		if newest.IsZero() {
			continue
		}
		_, envs := s.call(t, "GET", "/api/v1/namespaces/"+e.ns+"/environments", "")
		var shown time.Time
		for _, x := range jsonList(envs["environments"]) {
			if x["environment_id"] == e.id {
				shown, _ = time.Parse(time.RFC3339Nano, jsonString(x["last_finished_snapshot_at"]))
			}
		}
		if !shown.Equal(newest) {
			t.Errorf("the environment list shows %s's last Finished snapshot at %s, want %s", e, shown, newest)
		}
	}

	// Another run finds nothing more to do, and tells nothing again.
	s.fire(t, "ExpireSnapshots")
	s.quiet(t)
	if again := s.snapshots(t); !slices.Equal(slices.Sorted(maps.Keys(again)), slices.Sorted(maps.Keys(kept))) {
		t.Errorf("a second expiry run changed the snapshots: %v", slices.Sorted(maps.Keys(again)))
	}
	n := 0
	for _, k := range s.events(t)[backup.EventSnapshotExpired] {
		n += k
	}
	if n != len(deleted) {
		t.Errorf("%d snapshot.expired events after a second expiry run, want %d", n, len(deleted))
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func jsonList(v any) []map[string]any {
	var out []map[string]any
	xs, _ := v.([]any)
	for _, x := range xs {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
