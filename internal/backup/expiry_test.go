package backup_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/schedule"
)

// putSnapshot records snapshot n of (ns, env) as its job left it, retention ending at expires: a
// Finished one with its dump and manifest in the snapshots container.
func (f *schedFixture) putSnapshot(t *testing.T, ns, env string, n int, kind backup.SnapshotKind, status backup.SnapshotStatus, created, expires time.Time) backup.Snapshot {
	t.Helper()
	id := fmt.Sprintf("%08x-5555-4000-8000-%012x", n, n)
	sn := backup.Snapshot{ID: id, Namespace: ns, EnvironmentID: env, Status: status, Kind: kind, CreatedAt: created,
		UpdatedAt: created, ExpiresAt: expires, CreatedBy: "user-1", OperationID: "op-" + id, ModelVersion: "1.0.0.40"}
	switch status {
	case backup.SnapshotFinished:
		sn.DumpPath, sn.ManifestPath = layout{}.SnapshotDump(ns, env, id, 1), layout{}.SnapshotManifest(ns, env, id, 1)
		sn.FinishedAt, sn.FilesCount = created.Add(time.Minute), 3
		f.blobs.put(sn.DumpPath)
		f.blobs.put(sn.ManifestPath)
	case backup.SnapshotFailed:
		sn.FinishedAt, sn.StatusMessage = created.Add(time.Minute), "pg_dump failed"
	}
	if err := f.st.CreateSnapshot(context.Background(), sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

func (f *schedFixture) expire(t *testing.T) backup.ExpiryStats {
	t.Helper()
	stats, err := f.svc.ExpireSnapshots(context.Background(), f.now, zerolog.Nop())
	if err != nil {
		t.Fatalf("ExpireSnapshots: %v", err)
	}
	return stats
}

// gone checks that the snapshot's record and blobs are deleted.
func (f *schedFixture) gone(t *testing.T, sn backup.Snapshot, what string) {
	t.Helper()
	if got, err := f.st.GetSnapshot(context.Background(), sn.Namespace, sn.EnvironmentID, sn.ID); !backup.IsNotFound(err) {
		t.Errorf("%s: the record is still there: %+v", what, got)
	}
	if paths, _ := f.blobs.ListSnapshotBlobs(context.Background(), sn.Namespace, sn.EnvironmentID, sn.ID); len(paths) != 0 {
		t.Errorf("%s: blobs left: %v", what, paths)
	}
}

// kept checks that the snapshot is there, not marked, with its blobs.
func (f *schedFixture) kept(t *testing.T, sn backup.Snapshot, what string) {
	t.Helper()
	got, err := f.st.GetSnapshot(context.Background(), sn.Namespace, sn.EnvironmentID, sn.ID)
	if err != nil || got.Deleted() {
		t.Errorf("%s: deleted (%v, marked at %v), want it kept", what, err, got.DeletedAt)
		return
	}
	for _, p := range sn.Blobs() {
		if !f.blobs.has(p) {
			t.Errorf("%s: blob %s deleted", what, p)
		}
	}
}

// expiredEntries are the expire entries of the environment's activity, by snapshot.
func (f *schedFixture) expiredEntries(t *testing.T, ns, env string) map[string][]backup.ActivityEntry {
	t.Helper()
	out := map[string][]backup.ActivityEntry{}
	for _, e := range activityOf(f.activity(t, ns, env), backup.ActionExpire, backup.ActivityFinished) {
		out[e.SnapshotID] = append(out[e.SnapshotID], e)
	}
	return out
}

// expiredEvents takes the snapshot.expired events published, by EventID.
func (f *schedFixture) expiredEvents(t *testing.T) map[string]backup.OutboundEvent {
	t.Helper()
	out := map[string]backup.OutboundEvent{}
	for _, ev := range f.events(t) {
		if ev.Type != backup.EventSnapshotExpired {
			t.Errorf("unexpected %s event", ev.Type)
			continue
		}
		out[ev.EventID] = ev
	}
	return out
}

func TestExpiryDeletesWhatRetentionEnded(t *testing.T) {
	now := utc(2027, 1, 20, 3, 0)
	f := newSchedFixture(t, "", now)
	f.enable(t, "ns-a", true)
	f.enable(t, "ns-b", true)
	a, b := testEnvID(1), testEnvID(2)
	f.putEnv(t, "ns-a", a, backup.StateRunning, true)
	f.putEnv(t, "ns-b", b, backup.StateRunning, true)
	day := 24 * time.Hour
	nightly := f.putSnapshot(t, "ns-a", a, 1, backup.KindNightly, backup.SnapshotFinished, now.Add(-20*day), now.Add(-6*day))
	weekly := f.putSnapshot(t, "ns-a", a, 2, backup.KindWeekly, backup.SnapshotFinished, now.AddDate(0, -3, -1), now.Add(-day))
	monthly := f.putSnapshot(t, "ns-a", a, 3, backup.KindMonthly, backup.SnapshotFinished, now.AddDate(0, -11, 0), now.AddDate(0, 1, 0))
	newest := f.putSnapshot(t, "ns-a", a, 4, backup.KindNightly, backup.SnapshotFinished, now.Add(-day), now.Add(13*day))
	failedOld := f.putSnapshot(t, "ns-a", a, 5, backup.KindWeekly, backup.SnapshotFailed, now.Add(-15*day), now.Add(-day))
	failedYoung := f.putSnapshot(t, "ns-a", a, 6, backup.KindNightly, backup.SnapshotFailed, now.Add(-13*day), now.Add(day))
	manual := f.putSnapshot(t, "ns-b", b, 7, backup.KindManual, backup.SnapshotFinished, now.Add(-15*day), now.Add(-day))
	upload := f.putSnapshot(t, "ns-b", b, 8, backup.KindUploaded, backup.SnapshotFinished, now.Add(-2*day), now.Add(12*day))

	stats := f.expire(t)
	if stats != (backup.ExpiryStats{Expired: 4}) {
		t.Errorf("stats %+v, want 4 expired", stats)
	}
	deleted := []backup.Snapshot{nightly, weekly, failedOld, manual}
	for _, sn := range deleted {
		f.gone(t, sn, string(sn.Kind)+" "+string(sn.Status))
	}
	for _, sn := range []backup.Snapshot{monthly, newest, failedYoung, upload} {
		f.kept(t, sn, string(sn.Kind)+" "+string(sn.Status)+" not expired")
	}
	entries := f.expiredEntries(t, "ns-a", a)
	for id, e := range f.expiredEntries(t, "ns-b", b) {
		entries[id] = e
	}
	events := f.expiredEvents(t)
	if len(entries) != 4 || len(events) != 4 {
		t.Errorf("%d expire entries and %d events, want 4 of each", len(entries), len(events))
	}
	for _, sn := range deleted {
		e := entries[sn.ID]
		if len(e) != 1 || e[0].Actor != backup.ActorSystem || !e[0].Time.Equal(now) || !strings.Contains(e[0].Message, "expired") {
			t.Errorf("%s: expire entries %+v, want one by the system at %v", sn.ID, e, now)
		}
		ev, ok := events[sn.ID+":"+backup.EventSnapshotExpired]
		if !ok || ev.SnapshotID != sn.ID || ev.Namespace != sn.Namespace || ev.EnvironmentID != sn.EnvironmentID || !ev.OccurredAt.Equal(now) {
			t.Errorf("%s: event %+v", sn.ID, ev)
		}
	}
	// A second run has nothing to do.
	f.now = now.Add(time.Hour)
	if stats := f.expire(t); stats != (backup.ExpiryStats{}) {
		t.Errorf("second run: %+v", stats)
	}
	if evs := f.events(t); len(evs) != 0 || len(f.expiredEntries(t, "ns-a", a)) != 3 {
		t.Errorf("the second run told again: %d events", len(evs))
	}
}

func TestAutomaticSnapshotsExpireByKindAndFailedOnesAfterFourteenDays(t *testing.T) {
	start := utc(2026, 12, 6, 1, 0) // the first Sunday: monthly
	f, m := oneEnv(t, "", start)
	f.snap.errs = []error{permanent}
	f.handleAt(t, m)
	f.deliverJobs(t)
	f.handleAt(t, f.nextTry(t, "2026-12-06", 1, start))
	f.deliverJobs(t)
	snaps := f.snapshots(t, "ns-a", envID)
	if len(snaps) != 2 || snaps[1].Status != backup.SnapshotFailed || snaps[0].Status != backup.SnapshotFinished {
		t.Fatalf("test setup: %+v", snaps)
	}
	made, failed := snaps[0], snaps[1]
	f.events(t)
	f.now = failed.CreatedAt.Add(14*24*time.Hour - time.Minute)
	if stats := f.expire(t); stats.Expired != 0 {
		t.Errorf("a minute before 14 days: %+v", stats)
	}
	f.kept(t, failed, "failed monthly before 14 days")
	f.now = failed.CreatedAt.Add(14*24*time.Hour + time.Minute)
	if stats := f.expire(t); stats.Expired != 1 {
		t.Errorf("after 14 days: %+v", stats)
	}
	f.gone(t, failed, "failed monthly after 14 days")
	f.kept(t, made, "finished monthly after 14 days")
	if evs := f.expiredEvents(t); len(evs) != 1 {
		t.Errorf("%d events", len(evs))
	}
	// The Finished monthly goes a calendar year after it was made (a newer snapshot is Finished by then).
	f.putSnapshot(t, "ns-a", envID, 1, backup.KindNightly, backup.SnapshotFinished, made.CreatedAt.AddDate(0, 11, 0), made.CreatedAt.AddDate(0, 11, 14))
	f.now = made.CreatedAt.AddDate(1, 0, 0).Add(-time.Minute)
	if stats := f.expire(t); stats.Expired != 0 {
		t.Errorf("a minute before a year: %+v", stats)
	}
	f.now = made.CreatedAt.AddDate(1, 0, 0).Add(time.Minute)
	if stats := f.expire(t); stats.Expired != 1 {
		t.Errorf("a minute after a year: %+v", stats)
	}
	f.gone(t, made, "finished monthly after a year")
}

func TestExpiryKeepsTheLastGoodSnapshot(t *testing.T) {
	now := utc(2027, 1, 20, 3, 0)
	day := 24 * time.Hour
	tests := []struct {
		name     string
		keep     bool
		envState backup.EnvironmentState // "" for an environment never recorded
		newer    backup.SnapshotStatus   // of a newer snapshot, "" for none
		deleted  bool                    // whether the expired Finished snapshot is deleted
	}{
		{"the only Finished one", true, backup.StateRunning, "", false},
		{"newer ones all Failed", true, backup.StateRunning, backup.SnapshotFailed, false},
		{"a newer one being made", true, backup.StateRunning, backup.SnapshotProcessing, false},
		{"a newer Finished one", true, backup.StateRunning, backup.SnapshotFinished, true},
		{"KEEP_LAST_GOOD_SNAPSHOT off", false, backup.StateRunning, backup.SnapshotFailed, true},
		{"the environment deleted", true, backup.StateDeleted, backup.SnapshotFailed, true},
		{"the environment never known", true, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newSchedFixture(t, "", now)
			f.rebuild(f.plan, tt.keep)
			f.enable(t, "ns-a", true)
			switch tt.envState {
			case backup.StateDeleted:
				f.putEnv(t, "ns-a", envID, backup.StateRunning, true)
				f.deleteEnv(t, "ns-a", envID)
			case "":
			default:
				f.putEnv(t, "ns-a", envID, tt.envState, true)
			}
			older := f.putSnapshot(t, "ns-a", envID, 1, backup.KindNightly, backup.SnapshotFinished, now.Add(-30*day), now.Add(-16*day))
			last := f.putSnapshot(t, "ns-a", envID, 2, backup.KindNightly, backup.SnapshotFinished, now.Add(-20*day), now.Add(-6*day))
			if tt.newer != "" {
				f.putSnapshot(t, "ns-a", envID, 3, backup.KindNightly, tt.newer, now.Add(-day), now.Add(13*day))
			}
			stats := f.expire(t)
			f.gone(t, older, "an older expired Finished snapshot")
			if tt.deleted {
				f.gone(t, last, "the expired last Finished snapshot")
				if stats != (backup.ExpiryStats{Expired: 2}) {
					t.Errorf("stats %+v", stats)
				}
				return
			}
			f.kept(t, last, "the expired last Finished snapshot")
			if stats != (backup.ExpiryStats{Expired: 1, Kept: 1}) {
				t.Errorf("stats %+v, want 1 expired and 1 kept", stats)
			}
			if e := f.expiredEntries(t, "ns-a", envID); len(e) != 1 || e[last.ID] != nil {
				t.Errorf("expire entries %v", e)
			}
			if evs := f.expiredEvents(t); len(evs) != 1 {
				t.Errorf("%d events, want the older one's", len(evs))
			}
		})
	}
}

func TestExpiryWaitsForTheSnapshotsReaders(t *testing.T) {
	now := utc(2027, 1, 20, 3, 0)
	day := 24 * time.Hour
	f := newSchedFixture(t, "", now)
	f.enable(t, "ns-a", true)
	f.grant(t, "ns-a", backup.PermStopApps)
	f.putEnv(t, "ns-a", envID, backup.StateStopped, true)
	read := f.putSnapshot(t, "ns-a", envID, 1, backup.KindNightly, backup.SnapshotFinished, now.Add(-20*day), now.Add(-6*day))
	f.putSnapshot(t, "ns-a", envID, 2, backup.KindNightly, backup.SnapshotFinished, now.Add(-day), now.Add(13*day))
	processing := f.putSnapshot(t, "ns-a", envID, 3, backup.KindManual, backup.SnapshotProcessing, now.Add(-15*day), now.Add(-day))
	r, err := f.svc.CreateRestore(context.Background(), f.user, "ns-a", envID, backup.RestoreRequest{SnapshotID: read.ID})
	if err != nil {
		t.Fatal(err)
	}
	withReader, err := f.st.GetSnapshot(context.Background(), "ns-a", envID, read.ID)
	if err != nil {
		t.Fatal(err)
	}
	readers := withReader.Readers
	if len(readers) != 1 {
		t.Fatalf("test setup: readers %v", readers)
	}
	for range 2 {
		if stats := f.expire(t); stats != (backup.ExpiryStats{Busy: 2}) {
			t.Errorf("stats %+v, want the read and the processing snapshots busy", stats)
		}
		f.kept(t, read, "a snapshot a restore reads")
		f.kept(t, processing, "a snapshot being made")
		if got, _ := f.st.GetSnapshot(context.Background(), "ns-a", envID, read.ID); !slices.Equal(got.Readers, readers) {
			t.Errorf("readers %v, were %v", got.Readers, readers)
		}
		if evs := f.events(t); len(evs) != 0 || len(f.expiredEntries(t, "ns-a", envID)) != 0 {
			t.Errorf("told about an expiry that did not happen: %+v", evs)
		}
		f.now = f.now.Add(time.Hour)
	}
	// The restore ends and lets go of the snapshot: the next run deletes it.
	f.deliverJobs(t)
	if got, _ := f.st.GetRestore(context.Background(), "ns-a", envID, r.ID); got.State != backup.RestoreCompleted {
		t.Fatalf("test setup: restore %s", got.State)
	}
	f.pub.take(backup.TopicBackupEvents)
	if stats := f.expire(t); stats != (backup.ExpiryStats{Expired: 1, Busy: 1}) {
		t.Errorf("after the restore: %+v", stats)
	}
	f.gone(t, read, "a snapshot whose restore ended")
	f.kept(t, processing, "a snapshot being made")
	if evs := f.expiredEvents(t); len(evs) != 1 {
		t.Errorf("%d events", len(evs))
	}
}

// TestExpiryIgnoresTheEntryOfAReaderThatEnded: a reader entry left behind by an ended operation
// (removing it is best effort) does not keep the snapshot from expiring.
func TestExpiryIgnoresTheEntryOfAReaderThatEnded(t *testing.T) {
	now := utc(2027, 1, 20, 3, 0)
	day := 24 * time.Hour
	f := newSchedFixture(t, "", now)
	f.enable(t, "ns-a", true)
	f.putEnv(t, "ns-a", envID, backup.StateRunning, true)
	f.putSnapshot(t, "ns-a", envID, 2, backup.KindNightly, backup.SnapshotFinished, now.Add(-day), now.Add(13*day))
	read := f.putSnapshot(t, "ns-a", envID, 1, backup.KindNightly, backup.SnapshotFinished, now.Add(-20*day), now.Add(-6*day))
	ended := backup.Operation{ID: "01a237ac-0000-7000-8000-000000000001", Namespace: "ns-a", EnvironmentID: envID, Kind: backup.OpRestore,
		Phase: backup.OpSucceeded, Settled: true, CreatedAt: now.Add(-time.Hour), FinishedAt: now.Add(-time.Hour)}
	if err := f.st.CreateOperation(context.Background(), ended); err != nil {
		t.Fatal(err)
	}
	_, _, err := f.st.UpdateSnapshot(context.Background(), "ns-a", envID, read.ID, func(sn backup.Snapshot, _ bool) (backup.Snapshot, bool, error) {
		sn.Readers = []string{envID + "/" + ended.ID, envID + "/01a237ac-0000-7000-8000-00000000dead"} // ended, and unknown
		return sn, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if stats := f.expire(t); stats != (backup.ExpiryStats{Expired: 1}) {
		t.Errorf("stats %+v, want the snapshot expired", stats)
	}
	f.gone(t, read, "a snapshot whose readers ended")
}

func TestExpiryStoppedHalfWayIsFinishedByTheNextRun(t *testing.T) {
	now := utc(2027, 1, 20, 3, 0)
	day := 24 * time.Hour
	f := newSchedFixture(t, "", now)
	f.enable(t, "ns-a", true)
	f.putEnv(t, "ns-a", envID, backup.StateRunning, true)
	f.putSnapshot(t, "ns-a", envID, 9, backup.KindNightly, backup.SnapshotFinished, now.Add(-day), now.Add(13*day))
	marked := now.Add(-time.Hour)
	mark := func(sn backup.Snapshot, expired bool) {
		_, _, err := f.st.UpdateSnapshot(context.Background(), "ns-a", envID, sn.ID, func(cur backup.Snapshot, _ bool) (backup.Snapshot, bool, error) {
			cur.DeletedAt, cur.UpdatedAt, cur.Expired = marked, marked, expired
			return cur, true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// (a) marked, blobs still there; (b) marked, blobs gone, record left; (c) a user's deletion left
	// half-way, due as well.
	withBlobs := f.putSnapshot(t, "ns-a", envID, 1, backup.KindNightly, backup.SnapshotFinished, now.Add(-20*day), now.Add(-6*day))
	mark(withBlobs, true)
	noBlobs := f.putSnapshot(t, "ns-a", envID, 2, backup.KindWeekly, backup.SnapshotFinished, now.AddDate(0, -4, 0), now.AddDate(0, -1, 0))
	mark(noBlobs, true)
	for _, p := range noBlobs.Blobs() {
		if err := f.blobs.DeleteBlob(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	byUser := f.putSnapshot(t, "ns-a", envID, 3, backup.KindManual, backup.SnapshotFinished, now.Add(-15*day), now.Add(-day))
	mark(byUser, false)

	if stats := f.expire(t); stats.Expired != 3 || stats.Kept != 0 || stats.Busy != 0 {
		t.Errorf("stats %+v, want the 3 deletions finished", stats)
	}
	for _, sn := range []backup.Snapshot{withBlobs, noBlobs, byUser} {
		f.gone(t, sn, sn.ID)
	}
	entries, events := f.expiredEntries(t, "ns-a", envID), f.expiredEvents(t)
	for _, sn := range []backup.Snapshot{withBlobs, noBlobs} {
		if e := entries[sn.ID]; len(e) != 1 || !e[0].Time.Equal(marked) {
			t.Errorf("%s: expire entries %+v, want one at the mark's time", sn.ID, e)
		}
		if ev, ok := events[sn.ID+":"+backup.EventSnapshotExpired]; !ok || !ev.OccurredAt.Equal(marked) {
			t.Errorf("%s: event %+v", sn.ID, ev)
		}
	}
	if len(entries) != 2 || len(events) != 2 {
		t.Errorf("%d expire entries and %d events; a deletion a user started is not an expiry", len(entries), len(events))
	}
}

func TestExpiryOfAnUndeletableBlobIsTriedAgain(t *testing.T) {
	now := utc(2027, 1, 20, 3, 0)
	day := 24 * time.Hour
	f := newSchedFixture(t, "", now)
	f.enable(t, "ns-a", true)
	f.putEnv(t, "ns-a", envID, backup.StateRunning, true)
	f.putSnapshot(t, "ns-a", envID, 9, backup.KindNightly, backup.SnapshotFinished, now.Add(-day), now.Add(13*day))
	sn := f.putSnapshot(t, "ns-a", envID, 1, backup.KindNightly, backup.SnapshotFinished, now.Add(-20*day), now.Add(-6*day))
	f.blobs.undeletable[sn.DumpPath] = true
	var ids []string
	for run := range 2 {
		f.expire(t)
		got, err := f.st.GetSnapshot(context.Background(), "ns-a", envID, sn.ID)
		if err != nil || !got.Deleted() || !got.Expired || !f.blobs.has(sn.DumpPath) || f.blobs.has(sn.ManifestPath) {
			t.Fatalf("run %d: %+v (%v), want the record marked and only the undeletable blob left", run, got, err)
		}
		if slices.ContainsFunc(f.snapshots(t, "ns-a", envID), func(s backup.Snapshot) bool { return s.ID == sn.ID }) {
			t.Errorf("run %d: the marked snapshot is still listed", run)
		}
		for id := range f.expiredEvents(t) {
			ids = append(ids, id)
		}
		f.now = f.now.Add(time.Hour)
	}
	delete(f.blobs.undeletable, sn.DumpPath)
	f.expire(t)
	f.gone(t, sn, "once the blob could be deleted")
	for id := range f.expiredEvents(t) {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if ids = slices.Compact(ids); len(ids) != 1 || ids[0] != sn.ID+":"+backup.EventSnapshotExpired {
		t.Errorf("events by EventID: %v, want one", ids)
	}
	if e := f.expiredEntries(t, "ns-a", envID); len(e) != 1 || len(e[sn.ID]) != 1 {
		t.Errorf("expire entries %+v, want one", e)
	}
}

func TestEnvironmentListShowsTheNextAutomaticBackupAndTheLastFinished(t *testing.T) {
	now := utc(2026, 12, 2, 0, 30) // a Wednesday, before the nightly timer
	f := newSchedFixture(t, "", now)
	f.enable(t, "ns-a", true)
	f.enable(t, "ns-off", false)
	f.grant(t, "ns-a")
	f.grant(t, "ns-off")
	running, deploying, undeployed, failedOnly, off := testEnvID(1), testEnvID(2), testEnvID(3), testEnvID(4), testEnvID(5)
	f.putEnv(t, "ns-a", running, backup.StateRunning, true)
	f.putEnv(t, "ns-a", deploying, backup.StateDeploying, true)
	f.putEnv(t, "ns-a", undeployed, backup.StateStopped, false)
	f.putEnv(t, "ns-a", failedOnly, backup.StateRunning, true)
	f.putEnv(t, "ns-off", off, backup.StateRunning, true)
	day := 24 * time.Hour
	f.putSnapshot(t, "ns-a", running, 1, backup.KindNightly, backup.SnapshotFinished, now.Add(-3*day), now.Add(11*day))
	last := f.putSnapshot(t, "ns-a", running, 2, backup.KindManual, backup.SnapshotFinished, now.Add(-day), now.Add(13*day))
	f.putSnapshot(t, "ns-a", running, 3, backup.KindNightly, backup.SnapshotFailed, now.Add(-time.Hour), now.Add(14*day))
	f.putSnapshot(t, "ns-a", running, 4, backup.KindManual, backup.SnapshotProcessing, now.Add(-time.Minute), now.Add(14*day))
	beingDeleted := f.putSnapshot(t, "ns-a", running, 5, backup.KindManual, backup.SnapshotFinished, now.Add(-2*time.Hour), now.Add(14*day))
	_, _, _ = f.st.UpdateSnapshot(context.Background(), "ns-a", running, beingDeleted.ID, func(sn backup.Snapshot, _ bool) (backup.Snapshot, bool, error) {
		sn.DeletedAt = now
		return sn, true, nil
	})
	f.putSnapshot(t, "ns-a", failedOnly, 6, backup.KindNightly, backup.SnapshotFailed, now.Add(-time.Hour), now.Add(14*day))

	list := func(ns string) map[string]backup.EnvironmentSummary {
		t.Helper()
		sums, err := f.svc.ListEnvironments(context.Background(), f.user, ns)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]backup.EnvironmentSummary{}
		for _, s := range sums {
			out[s.ID] = s
		}
		return out
	}
	// The nightly timer fires at 01:00 UTC; each environment's backup is at its offset after.
	fire := utc(2026, 12, 2, 1, 0)
	want := func(id string, fire time.Time) schedule.Run {
		return schedule.Run{Fire: fire, At: fire.Add(schedule.Offset(id, testSpread)), Day: schedule.Day{Year: 2026, Month: 12, Day: fire.Day()}, Kind: schedule.Nightly}
	}
	sums := list("ns-a")
	for _, id := range []string{running, deploying, failedOnly} {
		got := sums[id].NextAutomatic
		if planned, ok := f.plan.NextRun(id, now); got == nil || !ok || *got != planned || *got != want(id, fire) {
			t.Errorf("%s: next automatic %+v, want %+v", id, got, want(id, fire))
		}
	}
	if got := sums[undeployed].NextAutomatic; got != nil {
		t.Errorf("nothing deployed: next automatic %+v, want none", got)
	}
	if got := list("ns-off")[off].NextAutomatic; got != nil {
		t.Errorf("backups disabled: next automatic %+v, want none", got)
	}
	if got := sums[running].LastFinishedAt; !got.Equal(last.CreatedAt) {
		t.Errorf("last finished %v, want %v (the newest Finished, not the newer Failed, Processing or deleted ones)", got, last.CreatedAt)
	}
	for _, id := range []string{deploying, failedOnly} {
		if got := sums[id].LastFinishedAt; !got.IsZero() {
			t.Errorf("%s: last finished %v, want none", id, got)
		}
	}
	// Once today's time of the environment passed, the next is tomorrow's.
	f.now = want(running, fire).At.Add(time.Second)
	if got := list("ns-a")[running].NextAutomatic; got == nil || *got != want(running, fire.Add(day)) {
		t.Errorf("after today's: next automatic %+v, want %+v", got, want(running, fire.Add(day)))
	}
	// With no timer known, none is shown.
	f.rebuild(schedule.Plan{Calendar: f.plan.Calendar, Spread: testSpread}, true)
	for id, s := range list("ns-a") {
		if s.NextAutomatic != nil {
			t.Errorf("%s: next automatic %+v with no timers", id, s.NextAutomatic)
		}
	}
}
