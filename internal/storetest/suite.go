// Package storetest is the conformance suite every implementation of the domain's stores must pass: the
// in-memory fake and the Table Storage adapter run the same tests, so the fake cannot drift from the real
// thing.
package storetest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
)

// Run runs the suite against the stores returned by newStores; each call must return empty stores (or
// stores isolated from earlier calls).
func Run(t *testing.T, newStores func(t *testing.T) backup.Stores) {
	t.Run("environment not found", func(t *testing.T) { testEnvironmentNotFound(t, newStores(t)) })
	t.Run("environment round trip", func(t *testing.T) { testEnvironmentRoundTrip(t, newStores(t)) })
	t.Run("environment update decisions", func(t *testing.T) { testEnvironmentUpdateDecisions(t, newStores(t)) })
	t.Run("concurrent updates lose nothing", func(t *testing.T) { testConcurrentUpdates(t, newStores(t)) })
	t.Run("environments listed per namespace", func(t *testing.T) { testListEnvironments(t, newStores(t)) })
	t.Run("grants", func(t *testing.T) { testGrants(t, newStores(t)) })
	t.Run("settings", func(t *testing.T) { testSettings(t, newStores(t)) })
	t.Run("activity newest first", func(t *testing.T) { testActivity(t, newStores(t)) })
	t.Run("activity pages", func(t *testing.T) { testActivityPages(t, newStores(t)) })
	t.Run("activity idempotent by id", func(t *testing.T) { testActivityIdempotent(t, newStores(t)) })
	t.Run("rejected events", func(t *testing.T) { testRejected(t, newStores(t)) })
}

func sampleEnvironment(ns, name string) backup.Environment {
	return backup.Environment{
		ID: uuid.NewString(), Namespace: ns, AppID: "app-1", Name: name, State: backup.StateRunning, Deployed: true,
		DeploymentPackage: "app_1.0.0.40.mda", ModelVersion: "1.0.0.40",
		Database:  backup.DatabaseLocation{Host: "pg.example", Port: 5432, Name: "app_db", Role: "app_role"},
		Files:     backup.FileLocation{Container: "files-app", Prefix: "docs/"},
		EventTime: time.Date(2026, 11, 1, 10, 0, 0, 123456789, time.UTC), EventID: "ev-1",
		UpdatedAt: time.Date(2026, 11, 1, 10, 0, 1, 0, time.UTC),
		FileStore: backup.FileStoreUsage{Objects: 1<<31 + 3, Bytes: 1<<53 + 11, MeasuredAt: time.Date(2026, 11, 2, 3, 4, 5, 6, time.UTC)},
	}
}

func put(t *testing.T, s backup.EnvironmentStore, e backup.Environment) {
	t.Helper()
	_, wrote, err := s.UpdateEnvironment(context.Background(), e.Namespace, e.ID,
		func(backup.Environment, bool) (backup.Environment, bool, error) { return e, true, nil })
	if err != nil || !wrote {
		t.Fatalf("UpdateEnvironment: wrote=%v err=%v", wrote, err)
	}
}

func testEnvironmentNotFound(t *testing.T, s backup.Stores) {
	_, err := s.Environments.GetEnvironment(context.Background(), "ns-a", uuid.NewString())
	if backup.CodeOf(err) != backup.CodeEnvironmentNotFound {
		t.Fatalf("got %v, want ENVIRONMENT_NOT_FOUND", err)
	}
}

func testEnvironmentRoundTrip(t *testing.T, s backup.Stores) {
	want := sampleEnvironment("ns-a", "acceptance")
	put(t, s.Environments, want)
	got, err := s.Environments.GetEnvironment(context.Background(), want.Namespace, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
}

func testEnvironmentUpdateDecisions(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	e := sampleEnvironment("ns-a", "test")
	calls := 0
	_, wrote, err := s.Environments.UpdateEnvironment(ctx, e.Namespace, e.ID, func(cur backup.Environment, exists bool) (backup.Environment, bool, error) {
		calls++
		if exists {
			t.Error("new record reported as existing")
		}
		return e, false, nil
	})
	if err != nil || wrote || calls != 1 {
		t.Fatalf("declined write: wrote=%v err=%v calls=%d", wrote, err, calls)
	}
	if _, err := s.Environments.GetEnvironment(ctx, e.Namespace, e.ID); backup.CodeOf(err) != backup.CodeEnvironmentNotFound {
		t.Fatalf("declined write stored something: %v", err)
	}
	put(t, s.Environments, e)
	wantErr := backup.Errorf(backup.CodeInvalidState, "no")
	_, _, err = s.Environments.UpdateEnvironment(ctx, e.Namespace, e.ID, func(cur backup.Environment, exists bool) (backup.Environment, bool, error) {
		if !exists || cur.Name != "test" {
			t.Errorf("got exists=%v name=%q, want the stored record", exists, cur.Name)
		}
		return cur, true, wantErr
	})
	if backup.CodeOf(err) != backup.CodeInvalidState {
		t.Fatalf("decision error not returned: %v", err)
	}
}

func testConcurrentUpdates(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	e := sampleEnvironment("ns-a", "counter")
	e.DeploymentPackage = ""
	put(t, s.Environments, e)
	const writers = 8
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.Environments.UpdateEnvironment(ctx, e.Namespace, e.ID, func(cur backup.Environment, exists bool) (backup.Environment, bool, error) {
				cur.DeploymentPackage += "x" // a counter: lost updates would show as fewer x
				return cur, true, nil
			})
			if err != nil {
				t.Errorf("concurrent update: %v", err)
			}
		}()
	}
	wg.Wait()
	got, err := s.Environments.GetEnvironment(ctx, e.Namespace, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.DeploymentPackage) != writers {
		t.Errorf("got %d updates applied, want %d (lost update)", len(got.DeploymentPackage), writers)
	}
}

func testListEnvironments(t *testing.T, s backup.Stores) {
	ns := "ns-" + uuid.NewString()[:8]
	for _, name := range []string{"prod", "acceptance", "test"} {
		put(t, s.Environments, sampleEnvironment(ns, name))
	}
	put(t, s.Environments, sampleEnvironment("other-"+ns, "elsewhere"))
	got, err := s.Environments.ListEnvironments(context.Background(), ns)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range got {
		names = append(names, e.Name)
	}
	if want := []string{"acceptance", "prod", "test"}; !slices.Equal(names, want) {
		t.Errorf("got %v, want %v", names, want)
	}
}

func testGrants(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	g, err := s.Grants.GetGrant(ctx, "ns-a", "user-1")
	if err != nil || len(g.Permissions) != 0 {
		t.Fatalf("unknown principal: got %+v, %v; want an empty grant", g, err)
	}
	want := []backup.Permission{backup.PermManageAppsBackups, backup.PermStopApps}
	_, _, err = s.Grants.UpdateGrant(ctx, "ns-a", "user-1", func(cur backup.Grant, exists bool) (backup.Grant, bool, error) {
		cur.Permissions, cur.EventID = want, "e1"
		return cur, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	g, err = s.Grants.GetGrant(ctx, "ns-a", "user-1")
	if err != nil || !slices.Equal(g.Permissions, want) || g.EventID != "e1" {
		t.Fatalf("got %+v, %v; want %v", g, err, want)
	}
	if other, _ := s.Grants.GetGrant(ctx, "ns-b", "user-1"); len(other.Permissions) != 0 {
		t.Errorf("grant leaked to another namespace: %+v", other)
	}
	_, _, err = s.Grants.UpdateGrant(ctx, "ns-a", "user-1", func(cur backup.Grant, exists bool) (backup.Grant, bool, error) {
		cur.Permissions = nil
		return cur, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := s.Grants.GetGrant(ctx, "ns-a", "user-1"); len(g.Permissions) != 0 || g.EventID != "e1" {
		t.Errorf("emptied grant: got %+v, want no permissions and the tombstone kept", g)
	}
}

func testSettings(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	got, err := s.Settings.GetSettings(ctx, "ns-new")
	if err != nil || got.BackupsEnabled {
		t.Fatalf("unconfigured namespace: got %+v, %v; want backups disabled", got, err)
	}
	at := time.Date(2026, 11, 2, 3, 4, 5, 0, time.UTC)
	if err := s.Settings.PutSettings(ctx, backup.Settings{Namespace: "ns-new", BackupsEnabled: true, UpdatedAt: at, UpdatedBy: "u"}); err != nil {
		t.Fatal(err)
	}
	got, err = s.Settings.GetSettings(ctx, "ns-new")
	if err != nil || !got.BackupsEnabled || !got.UpdatedAt.Equal(at) || got.UpdatedBy != "u" {
		t.Errorf("got %+v, %v", got, err)
	}
}

func testActivity(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	base := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 5; i++ {
		err := s.Activity.AddActivity(ctx, backup.ActivityEntry{Namespace: "ns-a", EnvironmentID: env,
			Time: base.Add(time.Duration(i) * time.Minute), Action: backup.ActionBackup, Status: backup.ActivityStarted,
			Actor: "u", Message: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := s.Activity.ListActivity(ctx, "ns-a", env, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range got {
		msgs = append(msgs, e.Message)
	}
	if want := []string{"4", "3", "2"}; !slices.Equal(msgs, want) {
		t.Errorf("got %v, want %v", msgs, want)
	}
	if got[0].Action != backup.ActionBackup || got[0].Status != backup.ActivityStarted || !got[0].Time.Equal(base.Add(4*time.Minute)) {
		t.Errorf("entry fields lost: %+v", got[0])
	}
}

func testActivityPages(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	base := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	const n = 7
	for i := 0; i < n; i++ {
		// Fractions of a second and whole seconds mixed: the order must follow time, not text.
		at := base.Add(time.Duration(i) * 500 * time.Millisecond)
		err := s.Activity.AddActivity(ctx, backup.ActivityEntry{Namespace: "ns-a", EnvironmentID: env, Time: at,
			Action: backup.ActionBackup, Status: backup.ActivityFinished, Actor: "u", Message: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Activity.AddActivity(ctx, backup.ActivityEntry{Namespace: "ns-a", EnvironmentID: uuid.NewString(), Time: base, Message: "elsewhere"})
	for _, c := range []struct {
		offset, limit int
		want          []string
	}{
		{0, 3, []string{"6", "5", "4"}},
		{3, 3, []string{"3", "2", "1"}},
		{6, 3, []string{"0"}},
		{7, 3, []string{}},
		{20, 3, []string{}},
		{2, 0, []string{}},
		{0, 100, []string{"6", "5", "4", "3", "2", "1", "0"}},
	} {
		got, total, err := s.Activity.ListActivity(ctx, "ns-a", env, c.offset, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		msgs := []string{}
		for _, e := range got {
			msgs = append(msgs, e.Message)
		}
		if total != n || !slices.Equal(msgs, c.want) {
			t.Errorf("offset %d limit %d: got %v (total %d), want %v (total %d)", c.offset, c.limit, msgs, total, c.want, n)
		}
	}
}

// testActivityIdempotent: an entry with an ID added again (a retried step) is stored once; entries
// without an ID are all kept, even at the same time.
func testActivityIdempotent(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env := uuid.NewString()
	at := time.Date(2026, 11, 3, 4, 5, 6, 7, time.UTC)
	entry := backup.ActivityEntry{ID: "op-1/finished", Namespace: "ns-a", EnvironmentID: env, Time: at,
		Action: backup.ActionBackup, Status: backup.ActivityFinished, Actor: "u", SnapshotID: "s", RestoreID: "r", Message: "first"}
	add := func(e backup.ActivityEntry) {
		t.Helper()
		if err := s.Activity.AddActivity(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	add(entry)
	again := entry
	again.Message = "second"
	add(again) // the same (Time, ID): changes nothing
	later := entry
	later.Time = at.Add(time.Second) // the same ID at another time is another entry
	add(later)
	other := entry
	other.ID = "op-2/finished"
	add(other)
	anon := entry
	anon.ID = ""
	add(anon)
	add(anon) // no ID: kept twice
	got, total, err := s.Activity.ListActivity(ctx, "ns-a", env, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if total != 5 || len(got) != 5 {
		t.Fatalf("got %d entries (total %d), want 5: %+v", len(got), total, got)
	}
	if !reflect.DeepEqual(got[0], later) {
		t.Errorf("newest entry:\n got %+v\nwant %+v", got[0], later)
	}
	byID := map[string]int{}
	for _, e := range got[1:] {
		byID[e.ID]++
		if e.ID == entry.ID && !reflect.DeepEqual(e, entry) {
			t.Errorf("entry added twice: got %+v, want the first one %+v", e, entry)
		}
	}
	if want := map[string]int{entry.ID: 1, other.ID: 1, "": 2}; !reflect.DeepEqual(byID, want) {
		t.Errorf("entries at %v by id: got %v, want %v", at, byID, want)
	}
}

func testRejected(t *testing.T, s backup.Stores) {
	err := s.Rejected.AddRejectedEvent(context.Background(), backup.RejectedEvent{Time: time.Now(), MessageID: "m", Reason: "bad", Body: "{"})
	if err != nil {
		t.Fatal(err)
	}
}
