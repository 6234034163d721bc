package backup_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/schedule"
)

// checkAt is when recovery may check a run started at start: once its spread window and the tries
// after it have passed.
func checkAt(start time.Time) time.Time {
	return start.Add(testSpread + schedule.MaxAttempts*schedule.RetryDelay + time.Hour)
}

func TestRecoverScheduleResendsLostMessagesAfterTheWindow(t *testing.T) {
	start := utc(2026, 12, 2, 1, 0)
	f := newSchedFixture(t, "", start)
	f.enable(t, "ns-a", true)
	f.enable(t, "ns-off", false)
	f.grant(t, "ns-a")
	made, busy, lost, running, undeployed, off := testEnvID(1), testEnvID(2), testEnvID(3), testEnvID(4), testEnvID(5), testEnvID(6)
	for _, id := range []string{made, busy, lost, running} {
		f.putEnv(t, "ns-a", id, backup.StateRunning, true)
	}
	f.putEnv(t, "ns-a", undeployed, backup.StateStopped, false)
	f.putEnv(t, "ns-off", off, backup.StateRunning, true)
	if _, err := f.svc.CreateSnapshot(context.Background(), f.user, "ns-a", busy, ""); err != nil {
		t.Fatal(err)
	}
	f.pub.take(backup.QueueJobs) // the manual backup of busy runs all night
	if err := f.runSchedule(t, "NightlyBackups"); err != nil {
		t.Fatal(err)
	}
	msgs := byEnv(t, f.automatic())
	if len(msgs) != 4 {
		t.Fatalf("%d messages, want 4", len(msgs))
	}
	// made's backup is made; busy's three tries find it busy; lost's message is lost; running's
	// backup is still being made at the check.
	f.handleAt(t, msgs[made])
	f.deliverJobs(t)
	m := msgs[busy]
	for range schedule.MaxAttempts {
		f.handleAt(t, m)
		if next := f.automatic(); len(next) == 1 {
			m = next[0]
		}
	}
	f.handleAt(t, msgs[running])
	f.pub.take(backup.QueueJobs)
	for id, want := range map[string]backup.SnapshotStatus{made: backup.SnapshotFinished, busy: backup.SnapshotFailed, running: backup.SnapshotProcessing} {
		found := false
		for _, sn := range f.snapshots(t, "ns-a", id) {
			found = found || (sn.AutomaticDay == "2026-12-02" && sn.Status == want)
		}
		if !found {
			t.Fatalf("test setup: %s has no %s automatic snapshot", id, want)
		}
	}

	// Not before the window and the retries have passed.
	for _, at := range []time.Time{start.Add(time.Hour), checkAt(start)} {
		f.now = at
		f.recoverSchedule(t)
		if got := f.automatic(); len(got) != 0 {
			t.Fatalf("at %v recovery sent %d messages", at, len(got))
		}
		if run := f.scheduleRun(t, "2026-12-02"); run.Checked {
			t.Fatalf("at %v the run was checked", at)
		}
	}
	f.now = checkAt(start).Add(time.Minute)
	f.recoverSchedule(t)
	resent := f.automatic()
	if len(resent) != 1 {
		t.Fatalf("recovery sent %d messages, want the lost one's", len(resent))
	}
	r, b := resent[0], decodeAuto(t, resent[0])
	if r.ID != lost+"/2026-12-02/recheck" || !r.ScheduledAt.Equal(f.now) || b.EnvironmentID != lost || b.Namespace != "ns-a" ||
		b.Day != "2026-12-02" || b.Kind != string(backup.KindNightly) || b.Attempt != 0 || !b.RunStartedAt.Equal(start) {
		t.Errorf("resent: %s at %v, body %+v", r.ID, r.ScheduledAt, b)
	}
	run := f.scheduleRun(t, "2026-12-02")
	if !run.Checked || !run.CheckedAt.Equal(f.now) || run.Resent != 1 || run.Sent != 4 {
		t.Errorf("checked run: %+v, want Checked now with Resent 1", run)
	}
	f.now = f.now.Add(time.Hour)
	f.recoverSchedule(t)
	if got := f.automatic(); len(got) != 0 {
		t.Errorf("a second recovery sent %d messages", len(got))
	}
	if again := f.scheduleRun(t, "2026-12-02"); again != run {
		t.Errorf("a second recovery changed the run: %+v", again)
	}
	// The resent try makes the day's backup.
	f.handle(t, r)
	f.deliverJobs(t)
	if snaps := f.snapshots(t, "ns-a", lost); len(snaps) != 1 || snaps[0].Status != backup.SnapshotFinished || snaps[0].AutomaticDay != "2026-12-02" {
		t.Errorf("lost's snapshots after the resend: %+v", snaps)
	}
}

func TestRecoverScheduleTooLateForTheDayOnlyChecks(t *testing.T) {
	start := utc(2026, 12, 2, 1, 0)
	f, _ := oneEnv(t, "", start) // the message is lost
	f.now = start.Add(12*time.Hour + time.Minute)
	f.recoverSchedule(t)
	if got := f.automatic(); len(got) != 0 {
		t.Errorf("recovery sent %d messages after the day's try window", len(got))
	}
	if run := f.scheduleRun(t, "2026-12-02"); !run.Checked || run.Resent != 0 {
		t.Errorf("run: %+v, want Checked with nothing resent", run)
	}
}

// A try that recovery sent again must be able to schedule its own next tries: the first ones of the
// day may have been sent already (and lost), and the queue drops a MessageId it saw that day.
func TestResentTriesScheduleTriesOfTheirOwn(t *testing.T) {
	lostRetry := func(t *testing.T) (*schedFixture, []backup.Message, backup.Message) {
		start := utc(2026, 12, 2, 1, 0)
		f, m := oneEnv(t, "", start)
		if _, err := f.svc.CreateSnapshot(context.Background(), f.user, "ns-a", envID, ""); err != nil {
			t.Fatal(err)
		}
		manual := f.pub.take(backup.QueueJobs)
		f.handleAt(t, m)
		if len(f.automatic()) != 1 { // the next try is lost
			t.Fatal("no next try")
		}
		f.now = checkAt(start).Add(time.Minute)
		f.recoverSchedule(t)
		resent := f.automatic()
		if len(resent) != 1 || resent[0].ID != envID+"/2026-12-02/recheck" {
			t.Fatalf("resent: %+v", resent)
		}
		return f, manual, resent[0]
	}
	unused := func(t *testing.T, f *schedFixture, before map[string]bool) backup.Message {
		t.Helper()
		msgs := f.automatic()
		if len(msgs) != 1 {
			t.Fatalf("%d messages, want the next try", len(msgs))
		}
		if before[msgs[0].ID] {
			t.Fatalf("the next try reuses MessageId %s, sent earlier that day: the queue's duplicate detection drops it", msgs[0].ID)
		}
		return msgs[0]
	}

	t.Run("still busy", func(t *testing.T) {
		f, _, m := lostRetry(t)
		for range schedule.MaxAttempts - 1 {
			before := f.pub.sentIDs(backup.QueueAutomatic)
			f.handleAt(t, m)
			m = unused(t, f, before)
			if b := decodeAuto(t, m); b.Attempt == 0 {
				t.Fatalf("next try %+v", b)
			}
		}
		f.handleAt(t, m)
		var failed []backup.Snapshot
		for _, sn := range f.snapshots(t, "ns-a", envID) {
			if sn.Kind == backup.KindNightly {
				failed = append(failed, sn)
			}
		}
		if len(failed) != 1 || failed[0].Status != backup.SnapshotFailed || !strings.Contains(failed[0].StatusMessage, "3 tries") {
			t.Errorf("after the resent try's own tries: %+v, want the day's Failed record", failed)
		}
		if got := f.automatic(); len(got) != 0 {
			t.Errorf("%d more messages", len(got))
		}
	})
	t.Run("its snapshot fails", func(t *testing.T) {
		f, manual, m := lostRetry(t)
		f.pub.msgs[backup.QueueJobs] = manual
		f.deliverJobs(t) // the manual backup ends
		f.snap.errs = []error{permanent}
		before := f.pub.sentIDs(backup.QueueAutomatic)
		f.handleAt(t, m)
		f.deliverJobs(t)
		retry := unused(t, f, before)
		f.handleAt(t, retry)
		f.deliverJobs(t)
		var auto []backup.Snapshot
		for _, sn := range f.snapshots(t, "ns-a", envID) {
			if sn.Kind == backup.KindNightly {
				auto = append(auto, sn)
			}
		}
		if len(auto) != 2 || auto[0].Status != backup.SnapshotFinished || auto[1].Status != backup.SnapshotFailed {
			t.Errorf("automatic snapshots: %+v, want the failed one and the retry's Finished one", auto)
		}
	})
}
