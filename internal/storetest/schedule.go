package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
)

// RunSchedule runs the part of the suite the schedule reads and writes: the walk over every
// environment, the enabled namespaces, the snapshots due for expiry and the schedule's runs. Stores
// should page their walks and index reads by a few entities here (tests of the stores lower their page
// sizes), so that crossing pages is tested with a few dozen records.
func RunSchedule(t *testing.T, newStores func(t *testing.T) backup.Stores) {
	t.Run("walk environments in key order", func(t *testing.T) { testWalkOrder(t, newStores(t)) })
	t.Run("walk environments after a key", func(t *testing.T) { testWalkAfter(t, newStores(t)) })
	t.Run("walk environments stops", func(t *testing.T) { testWalkStops(t, newStores(t)) })
	t.Run("enabled namespaces", func(t *testing.T) { testEnabledNamespaces(t, newStores(t)) })
	t.Run("snapshots due by expiry", func(t *testing.T) { testSnapshotsDue(t, newStores(t)) })
	t.Run("snapshots due follow updates and deletions", func(t *testing.T) { testSnapshotsDueChanges(t, newStores(t)) })
	t.Run("snapshots due limit", func(t *testing.T) { testSnapshotsDueLimit(t, newStores(t)) })
	t.Run("snapshots due walk while deleting", func(t *testing.T) { testSnapshotsDueWalkDeleting(t, newStores(t)) })
	t.Run("schedule run round trip", func(t *testing.T) { testScheduleRunRoundTrip(t, newStores(t)) })
	t.Run("schedule run update decisions", func(t *testing.T) { testScheduleRunDecisions(t, newStores(t)) })
	t.Run("concurrent schedule run updates lose nothing", func(t *testing.T) { testScheduleRunConcurrent(t, newStores(t)) })
	t.Run("schedule runs from a day", func(t *testing.T) { testScheduleRunsFrom(t, newStores(t)) })
}

// walkNamespaces are chosen so that (namespace, id) order differs from the order of the text
// "<namespace>|<id>": "a" < "a-b" < "ab", but "a-b|…" < "a|…" ('-' < '|').
var walkNamespaces = []string{"ab", "a-b", "a", "b0"}

// putWalkEnvironments writes perNamespace environments in each of walkNamespaces, every third one
// Deleted, and returns their keys in (namespace, id) order.
func putWalkEnvironments(t *testing.T, s backup.Stores, perNamespace int) []string {
	t.Helper()
	var keys []string
	i := 0
	for _, ns := range walkNamespaces {
		for range perNamespace {
			e := sampleEnvironment(ns, fmt.Sprintf("env-%d", i))
			if i%3 == 0 {
				e.State = backup.StateDeleted
			}
			i++
			put(t, s.Environments, e)
			keys = append(keys, backup.EnvironmentKey(ns, e.ID))
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		ans, aid, _ := strings.Cut(a, "|")
		bns, bid, _ := strings.Cut(b, "|")
		if c := strings.Compare(ans, bns); c != 0 {
			return c
		}
		return strings.Compare(aid, bid)
	})
	return keys
}

// walk returns the keys WalkEnvironments visits from after, and the environments by key.
func walk(t *testing.T, s backup.Stores, after string) ([]string, map[string]backup.Environment) {
	t.Helper()
	var keys []string
	envs := map[string]backup.Environment{}
	err := s.Environments.WalkEnvironments(context.Background(), after, func(e backup.Environment) (bool, error) {
		k := backup.EnvironmentKey(e.Namespace, e.ID)
		keys = append(keys, k)
		envs[k] = e
		return true, nil
	})
	if err != nil {
		t.Fatalf("walk after %q: %v", after, err)
	}
	return keys, envs
}

// testWalkOrder: every environment once, Deleted ones included, in (namespace, id) order, across pages
// and namespaces, each as stored.
func testWalkOrder(t *testing.T, s backup.Stores) {
	want := putWalkEnvironments(t, s, 5)
	got, envs := walk(t, s, "")
	if !slices.Equal(got, want) {
		t.Fatalf("walk:\n got %q\nwant %q", got, want)
	}
	deleted := 0
	for _, k := range got {
		e := envs[k]
		if e.State == backup.StateDeleted {
			deleted++
		}
		stored, err := s.Environments.GetEnvironment(context.Background(), e.Namespace, e.ID)
		if err != nil || !reflect.DeepEqual(e, stored) {
			t.Errorf("walked %+v\nstored %+v (%v)", e, stored, err)
		}
	}
	if deleted != 7 {
		t.Errorf("walked %d Deleted environments, want 7", deleted)
	}
}

// testWalkAfter: a walk resumed from a key starts strictly after it, whether or not an environment has
// that key, and within or across namespaces.
func testWalkAfter(t *testing.T, s backup.Stores) {
	all := putWalkEnvironments(t, s, 4)
	for _, i := range []int{0, 2, 3, 4, 7, 11, len(all) - 2, len(all) - 1} {
		got, _ := walk(t, s, all[i])
		if want := all[i+1:]; !slices.Equal(got, want) {
			t.Errorf("after %q (position %d):\n got %q\nwant %q", all[i], i, got, want)
		}
	}
	// Keys of no environment: before, between and after the stored ones.
	firstNS, firstID, _ := strings.Cut(all[0], "|")
	for _, c := range []struct {
		after string
		want  []string
	}{
		{backup.EnvironmentKey(firstNS, ""), all},
		{backup.EnvironmentKey("0", "x"), all},
		{backup.EnvironmentKey(firstNS, firstID+"0"), all[1:]},
		{backup.EnvironmentKey("a-a", "zzz"), keysFrom(all, "a-b")},
		{backup.EnvironmentKey("a-b", "~"), keysFrom(all, "ab")},
		{backup.EnvironmentKey("zz", ""), nil},
	} {
		if got, _ := walk(t, s, c.after); !slices.Equal(got, c.want) {
			t.Errorf("after %q:\n got %q\nwant %q", c.after, got, c.want)
		}
	}
}

// keysFrom returns the keys from the first one of namespace ns on.
func keysFrom(keys []string, ns string) []string {
	for i, k := range keys {
		if strings.HasPrefix(k, ns+"|") {
			return keys[i:]
		}
	}
	return nil
}

// testWalkStops: fn returning false stops the walk with no error; fn's error stops it and is returned.
func testWalkStops(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	all := putWalkEnvironments(t, s, 3)
	for _, n := range []int{1, 4, 7} {
		var got []string
		err := s.Environments.WalkEnvironments(ctx, "", func(e backup.Environment) (bool, error) {
			got = append(got, backup.EnvironmentKey(e.Namespace, e.ID))
			return len(got) < n, nil
		})
		if err != nil || !slices.Equal(got, all[:n]) {
			t.Errorf("stopping after %d: got %q, %v; want %q", n, got, err, all[:n])
		}
	}
	boom := errors.New("boom")
	calls := 0
	err := s.Environments.WalkEnvironments(ctx, "", func(backup.Environment) (bool, error) {
		calls++
		if calls == 5 {
			return true, boom
		}
		return true, nil
	})
	if !errors.Is(err, boom) || calls != 5 {
		t.Errorf("fn's error: got %v after %d calls, want boom after 5", err, calls)
	}
}

func testEnabledNamespaces(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	if got, err := s.Settings.ListEnabledNamespaces(ctx); err != nil || len(got) != 0 {
		t.Fatalf("no settings: got %q, %v; want none", got, err)
	}
	at := time.Date(2026, 11, 2, 3, 4, 5, 0, time.UTC)
	set := func(ns string, enabled bool) {
		t.Helper()
		if err := s.Settings.PutSettings(ctx, backup.Settings{Namespace: ns, BackupsEnabled: enabled, UpdatedAt: at, UpdatedBy: "u"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"zeta", "alpha", "off", "a-b", "mid", "turned-off"} {
		set(ns, ns != "off")
	}
	set("turned-off", false)
	got, err := s.Settings.ListEnabledNamespaces(ctx)
	if want := []string{"a-b", "alpha", "mid", "zeta"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}

// DueSnapshots walks the snapshots due before before and returns the first limit of them.
func DueSnapshots(ctx context.Context, s backup.SnapshotStore, before time.Time, limit int) ([]backup.Snapshot, error) {
	out := []backup.Snapshot{}
	if limit <= 0 {
		return out, nil
	}
	err := s.WalkSnapshotsDue(ctx, before, func(sn backup.Snapshot) (bool, error) {
		out = append(out, sn)
		return len(out) < limit, nil
	})
	return out, err
}

// dueIDs returns the ids of the first limit snapshots due before before.
func dueIDs(t *testing.T, s backup.Stores, before time.Time, limit int) []string {
	t.Helper()
	due, err := DueSnapshots(context.Background(), s.Snapshots, before, limit)
	if err != nil {
		t.Fatalf("snapshots due before %v: %v", before, err)
	}
	ids := []string{}
	for _, sn := range due {
		ids = append(ids, sn.ID)
	}
	return ids
}

func createSnapshot(t *testing.T, s backup.Stores, sn backup.Snapshot) backup.Snapshot {
	t.Helper()
	if err := s.Snapshots.CreateSnapshot(context.Background(), sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// firstListing lists once before a test writes: a store may do one-time work on its first listing
// (tablestore's backfill of its index from the records), which would hide what the writes do.
func firstListing(t *testing.T, s backup.Stores) {
	t.Helper()
	if got := dueIDs(t, s, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 10); len(got) != 0 {
		t.Fatalf("due in an empty store: %q", got)
	}
}

// dueSnapshot is a snapshot of environment env (of namespace ns) that expires at expires.
func dueSnapshot(ns, env string, expires time.Time) backup.Snapshot {
	sn := sampleSnapshot(env, expires.AddDate(0, 0, -14))
	sn.Namespace, sn.ExpiresAt = ns, expires
	return sn
}

// testSnapshotsDue: of every environment, earliest expiry first, strictly before the cutoff (to the
// nanosecond), marked snapshots included, snapshots without an expiry never; each as stored.
func testSnapshotsDue(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	firstListing(t, s)
	cutoff := time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)
	envA, envB := "env-a-"+uuid.NewString(), "env-b-"+uuid.NewString()
	third := createSnapshot(t, s, dueSnapshot("ns-a", envA, cutoff.Add(-time.Nanosecond)))
	first := createSnapshot(t, s, dueSnapshot("ns-b", envB, cutoff.AddDate(-1, 0, 0)))
	second := createSnapshot(t, s, dueSnapshot("ns-a", envB, cutoff.Add(-1500*time.Millisecond)))
	atCutoff := createSnapshot(t, s, dueSnapshot("ns-a", envA, cutoff))
	createSnapshot(t, s, dueSnapshot("ns-a", envA, cutoff.Add(time.Hour)))
	never := dueSnapshot("ns-a", envA, time.Time{})
	createSnapshot(t, s, never)
	marked := dueSnapshot("ns-a", envB, cutoff.Add(-time.Hour))
	marked.DeletedAt, marked.Expired = cutoff.Add(-time.Minute), true
	createSnapshot(t, s, marked)
	// Ties: in the order of "<namespace>|<environment>|<id>".
	tieA, tieB := dueSnapshot("ns-c", "env-1", cutoff.Add(-time.Second)), dueSnapshot("ns-c", "env-2", cutoff.Add(-time.Second))
	createSnapshot(t, s, tieB)
	createSnapshot(t, s, tieA)

	want := []string{first.ID, marked.ID, second.ID, tieA.ID, tieB.ID, third.ID}
	if got := dueIDs(t, s, cutoff, 100); !slices.Equal(got, want) {
		t.Errorf("due before %v:\n got %q\nwant %q", cutoff, got, want)
	}
	if got := dueIDs(t, s, cutoff.Add(time.Nanosecond), 100); !slices.Contains(got, atCutoff.ID) || len(got) != len(want)+1 {
		t.Errorf("due a nanosecond later: got %q, want the snapshot expiring at the cutoff too", got)
	}
	if got := dueIDs(t, s, first.ExpiresAt, 100); len(got) != 0 {
		t.Errorf("due before the earliest expiry: got %q, want none", got)
	}
	due, err := DueSnapshots(ctx, s.Snapshots, cutoff, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range due {
		stored, err := s.Snapshots.GetSnapshot(ctx, sn.Namespace, sn.EnvironmentID, sn.ID)
		if err != nil || !reflect.DeepEqual(sn, stored) {
			t.Errorf("listed %+v\nstored %+v (%v)", sn, stored, err)
		}
	}
}

// testSnapshotsDueChanges: a snapshot whose ExpiresAt an update moves is due by its new time only; a
// deleted one is not due; an update that leaves ExpiresAt alone changes nothing.
func testSnapshotsDueChanges(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	firstListing(t, s)
	cutoff := time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)
	env := uuid.NewString()
	earlier := createSnapshot(t, s, dueSnapshot("ns-a", env, cutoff.AddDate(0, 3, 0))) // moved before the cutoff
	later := createSnapshot(t, s, dueSnapshot("ns-a", env, cutoff.Add(-time.Hour)))    // moved past it
	deleted := createSnapshot(t, s, dueSnapshot("ns-a", env, cutoff.Add(-2*time.Hour)))
	kept := createSnapshot(t, s, dueSnapshot("ns-a", env, cutoff.Add(-3*time.Hour)))
	setExpiry := func(id string, at time.Time) {
		t.Helper()
		_, wrote, err := s.Snapshots.UpdateSnapshot(ctx, "ns-a", env, id, func(cur backup.Snapshot, _ bool) (backup.Snapshot, bool, error) {
			cur.ExpiresAt, cur.Status = at, backup.SnapshotFailed
			return cur, true, nil
		})
		if err != nil || !wrote {
			t.Fatalf("update: wrote %v, %v", wrote, err)
		}
	}
	newEarlier := cutoff.Add(-30 * time.Minute)
	setExpiry(earlier.ID, newEarlier)
	setExpiry(later.ID, cutoff.AddDate(0, 0, 14))
	setExpiry(kept.ID, kept.ExpiresAt) // the same time: a comment or a status written
	if err := s.Snapshots.DeleteSnapshot(ctx, "ns-a", env, deleted.ID); err != nil {
		t.Fatal(err)
	}
	if got, want := dueIDs(t, s, cutoff, 100), []string{kept.ID, earlier.ID}; !slices.Equal(got, want) {
		t.Errorf("due before %v:\n got %q\nwant %q (the moved one by its new time, the later one and the deleted one not)", cutoff, got, want)
	}
	if got, want := dueIDs(t, s, cutoff.AddDate(1, 0, 0), 100), []string{kept.ID, earlier.ID, later.ID}; !slices.Equal(got, want) {
		t.Errorf("due a year later:\n got %q\nwant %q (each once, by its new time)", got, want)
	}
	if got, want := dueIDs(t, s, newEarlier.Add(time.Nanosecond), 100), []string{kept.ID, earlier.ID}; !slices.Equal(got, want) {
		t.Errorf("due just after the moved time: got %q, want %q", got, want)
	}
	if got := dueIDs(t, s, newEarlier, 100); !slices.Equal(got, []string{kept.ID}) {
		t.Errorf("due at the moved time: got %q, want only %s", got, kept.ID)
	}
}

// testSnapshotsDueLimit: at most limit, the earliest; a limit of 0 lists nothing.
func testSnapshotsDueLimit(t *testing.T, s backup.Stores) {
	firstListing(t, s)
	cutoff := time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)
	var want []string
	for i := range 9 {
		sn := createSnapshot(t, s, dueSnapshot("ns-a", fmt.Sprintf("env-%d", i%3), cutoff.Add(-time.Duration(9-i)*time.Minute)))
		want = append(want, sn.ID)
	}
	for _, limit := range []int{1, 2, 5, 8, 9, 20} {
		if got := dueIDs(t, s, cutoff, limit); !slices.Equal(got, want[:min(limit, 9)]) {
			t.Errorf("limit %d:\n got %q\nwant %q", limit, got, want[:min(limit, 9)])
		}
	}
	if got := dueIDs(t, s, cutoff, 0); len(got) != 0 {
		t.Errorf("limit 0: got %q", got)
	}
}

// testSnapshotsDueWalkDeleting: the expiry deletes each snapshot as the walk gives it; the walk still
// gives every due snapshot once, in order, across pages and point-read batches, and an error from fn
// ends it with that error.
func testSnapshotsDueWalkDeleting(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	firstListing(t, s)
	cutoff := time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)
	var want []string
	for i := range 40 {
		sn := createSnapshot(t, s, dueSnapshot("ns-a", fmt.Sprintf("env-%d", i%4), cutoff.Add(-time.Duration(40-i)*time.Minute)))
		want = append(want, sn.ID)
	}
	var got []string
	err := s.Snapshots.WalkSnapshotsDue(ctx, cutoff, func(sn backup.Snapshot) (bool, error) {
		got = append(got, sn.ID)
		return true, s.Snapshots.DeleteSnapshot(ctx, sn.Namespace, sn.EnvironmentID, sn.ID)
	})
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("walk deleting: err %v\n got %q\nwant %q", err, got, want)
	}
	if left := dueIDs(t, s, cutoff, 100); len(left) != 0 {
		t.Errorf("due after deleting every one: %q", left)
	}
	createSnapshot(t, s, dueSnapshot("ns-a", "env-0", cutoff.Add(-time.Hour)))
	boom := fmt.Errorf("boom")
	if err := s.Snapshots.WalkSnapshotsDue(ctx, cutoff, func(backup.Snapshot) (bool, error) { return true, boom }); err != boom {
		t.Errorf("walk with a failing fn: got %v, want its error", err)
	}
}

func sampleScheduleRun(day string) backup.ScheduleRun {
	at := time.Date(2026, 11, 1, 1, 0, 0, 123456789, time.UTC)
	return backup.ScheduleRun{Day: day, Kind: backup.KindWeekly, Trigger: "ScheduleTimerB", StartedAt: at,
		Spread: 3*time.Hour + time.Nanosecond, Cursor: backup.EnvironmentKey("ns-a", uuid.NewString()), Sent: 1<<31 + 5,
		FannedOut: true, FannedOutAt: at.Add(time.Minute + 7), Checked: true, CheckedAt: at.Add(4*time.Hour + 9),
		Resent: 1<<31 + 3, UpdatedAt: at.Add(4*time.Hour + 11)}
}

func putScheduleRun(t *testing.T, s backup.Stores, r backup.ScheduleRun) {
	t.Helper()
	_, wrote, err := s.Schedule.UpdateScheduleRun(context.Background(), r.Day, func(backup.ScheduleRun, bool) (backup.ScheduleRun, bool, error) {
		return r, true, nil
	})
	if err != nil || !wrote {
		t.Fatalf("UpdateScheduleRun: wrote %v, %v", wrote, err)
	}
}

func testScheduleRunRoundTrip(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	if _, err := s.Schedule.GetScheduleRun(ctx, "2026-11-01"); backup.CodeOf(err) != backup.CodeNotFound {
		t.Fatalf("no run: got %v, want NOT_FOUND", err)
	}
	want := sampleScheduleRun("2026-11-01")
	putScheduleRun(t, s, want)
	got, err := s.Schedule.GetScheduleRun(ctx, want.Day)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v (%v)\nwant %+v", got, err, want)
	}
	// The key is the day given, whatever Day fn returns.
	moved := sampleScheduleRun("2026-12-31")
	next, _, err := s.Schedule.UpdateScheduleRun(ctx, "2026-11-02", func(backup.ScheduleRun, bool) (backup.ScheduleRun, bool, error) {
		return moved, true, nil
	})
	if err != nil || next.Day != "2026-11-02" {
		t.Errorf("run written under another day: got %+v, %v", next, err)
	}
	if _, err := s.Schedule.GetScheduleRun(ctx, moved.Day); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("fn moved the run to %s: %v", moved.Day, err)
	}
}

func testScheduleRunDecisions(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	day := "2026-11-03"
	calls := 0
	_, wrote, err := s.Schedule.UpdateScheduleRun(ctx, day, func(cur backup.ScheduleRun, exists bool) (backup.ScheduleRun, bool, error) {
		calls++
		if exists {
			t.Error("new run reported as existing")
		}
		return sampleScheduleRun(day), false, nil
	})
	if err != nil || wrote || calls != 1 {
		t.Fatalf("declined write: wrote %v, %v, %d calls", wrote, err, calls)
	}
	if _, err := s.Schedule.GetScheduleRun(ctx, day); backup.CodeOf(err) != backup.CodeNotFound {
		t.Fatalf("declined write stored something: %v", err)
	}
	want := sampleScheduleRun(day)
	putScheduleRun(t, s, want)
	cur, wrote, err := s.Schedule.UpdateScheduleRun(ctx, day, func(cur backup.ScheduleRun, exists bool) (backup.ScheduleRun, bool, error) {
		if !exists || !reflect.DeepEqual(cur, want) {
			t.Errorf("update sees %+v (exists %v), want the stored run", cur, exists)
		}
		cur.Sent++
		return cur, false, nil
	})
	if err != nil || wrote || !reflect.DeepEqual(cur, want) {
		t.Errorf("declined update: wrote %v, %v, returned %+v; want the stored run", wrote, err, cur)
	}
	wantErr := backup.Errorf(backup.CodeInvalidState, "no")
	_, wrote, err = s.Schedule.UpdateScheduleRun(ctx, day, func(cur backup.ScheduleRun, _ bool) (backup.ScheduleRun, bool, error) {
		cur.Sent++
		return cur, true, wantErr
	})
	if backup.CodeOf(err) != backup.CodeInvalidState || wrote {
		t.Errorf("decision error: wrote %v, %v", wrote, err)
	}
	if got, _ := s.Schedule.GetScheduleRun(ctx, day); !reflect.DeepEqual(got, want) {
		t.Errorf("after declined updates: %+v, want %+v", got, want)
	}
}

func testScheduleRunConcurrent(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	day := "2026-11-04"
	const writers = 8
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.Schedule.UpdateScheduleRun(ctx, day, func(cur backup.ScheduleRun, exists bool) (backup.ScheduleRun, bool, error) {
				// A counter, from a run that does not exist yet: lost updates show as fewer. Each writer
				// adds its own letter, so no two write the same record (tablestore takes an insert that
				// finds its very record stored for its own, retried by the SDK).
				cur.Sent++
				cur.Cursor += string(rune('a' + i))
				return cur, true, nil
			})
			if err != nil {
				t.Errorf("concurrent update: %v", err)
			}
		}()
	}
	wg.Wait()
	got, err := s.Schedule.GetScheduleRun(ctx, day)
	letters := strings.Split(got.Cursor, "")
	slices.Sort(letters)
	if err != nil || got.Sent != writers || strings.Join(letters, "") != "abcdefgh" {
		t.Errorf("got %+v, %v; want %d updates applied, each once", got, err, writers)
	}
}

func testScheduleRunsFrom(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	if got, err := s.Schedule.ListScheduleRuns(ctx, "2000-01-01"); err != nil || len(got) != 0 {
		t.Fatalf("no runs: got %+v, %v", got, err)
	}
	days := []string{"2026-12-01", "2026-10-30", "2026-11-02", "2026-11-01", "2027-01-01"}
	runs := map[string]backup.ScheduleRun{}
	for _, d := range days {
		runs[d] = sampleScheduleRun(d)
		putScheduleRun(t, s, runs[d])
	}
	for _, c := range []struct {
		from string
		want []string
	}{
		{"2026-11-01", []string{"2026-11-01", "2026-11-02", "2026-12-01", "2027-01-01"}},
		{"2026-10-31", []string{"2026-11-01", "2026-11-02", "2026-12-01", "2027-01-01"}},
		{"", []string{"2026-10-30", "2026-11-01", "2026-11-02", "2026-12-01", "2027-01-01"}},
		{"2027-01-01", []string{"2027-01-01"}},
		{"2027-01-02", nil},
	} {
		got, err := s.Schedule.ListScheduleRuns(ctx, c.from)
		if err != nil {
			t.Fatal(err)
		}
		var gotDays []string
		for _, r := range got {
			gotDays = append(gotDays, r.Day)
			if !reflect.DeepEqual(r, runs[r.Day]) {
				t.Errorf("listed %+v\nstored %+v", r, runs[r.Day])
			}
		}
		if !slices.Equal(gotDays, c.want) {
			t.Errorf("from %q: got %q, want %q", c.from, gotDays, c.want)
		}
	}
}
