package backup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/memstore"
)

const envID = "0d3e301f-5551-46f8-ad44-8de2be084c95"

var t0 = time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)

func updated(id string, at time.Time, state backup.EnvironmentState, pkg string) string {
	return fmt.Sprintf(`{"type":"environment.updated","event_id":%q,"occurred_at":%q,"namespace":"ns-a",
	 "environment_id":%q,"app_id":"app-1","name":"acceptance","state":%q,"deployed":true,
	 "deployment_package":%q,"model_version":"1.0.0.40",
	 "database":{"host":"pg.local","port":5432,"name":"acc_db","role":"acc_role"},
	 "files":{"container":"files-acc","prefix":""}}`, id, at.Format(time.RFC3339Nano), envID, state, pkg)
}

func deleted(id string, at time.Time) string {
	return fmt.Sprintf(`{"type":"environment.deleted","event_id":%q,"occurred_at":%q,"namespace":"ns-a","environment_id":%q}`,
		id, at.Format(time.RFC3339Nano), envID)
}

func perms(id string, at time.Time, principal string, p ...string) string {
	b, _ := json.Marshal(p)
	if p == nil {
		b = []byte("[]")
	}
	return fmt.Sprintf(`{"type":"namespace.permissions","event_id":%q,"occurred_at":%q,"namespace":"ns-a","principal_id":%q,"permissions":%s}`,
		id, at.Format(time.RFC3339Nano), principal, b)
}

func newService(t *testing.T) (*backup.Service, *memstore.Store) {
	t.Helper()
	st := memstore.New()
	return backup.NewService(backup.Deps{Stores: st.Stores(), Now: func() time.Time { return t0 }}), st
}

func apply(t *testing.T, svc *backup.Service, body string) {
	t.Helper()
	if err := svc.HandleEnvironmentEvent(context.Background(), "m", []byte(body), zerolog.Nop()); err != nil {
		t.Fatalf("HandleEnvironmentEvent: %v", err)
	}
}

func TestEventReplayAndReorderConverge(t *testing.T) {
	events := []string{
		updated("e1", t0, backup.StateCreating, ""),
		updated("e2", t0.Add(1*time.Minute), backup.StateDeploying, "v1.mda"),
		updated("e3", t0.Add(2*time.Minute), backup.StateRunning, "v1.mda"),
		updated("e4", t0.Add(3*time.Minute), backup.StateStopped, "v2.mda"),
	}
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 20; round++ {
		svc, st := newService(t)
		// Every event twice, in a random order.
		order := append(append([]string{}, events...), events...)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, ev := range order {
			apply(t, svc, ev)
		}
		got, err := st.GetEnvironment(context.Background(), "ns-a", envID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != backup.StateStopped || got.DeploymentPackage != "v2.mda" || got.EventID != "e4" {
			t.Fatalf("round %d: got state %s package %s event %s; want the newest event's Stopped v2.mda e4", round, got.State, got.DeploymentPackage, got.EventID)
		}
	}
}

func TestDeletedIsNotResurrectedByAnOlderUpdate(t *testing.T) {
	svc, st := newService(t)
	apply(t, svc, updated("e1", t0, backup.StateRunning, "v1"))
	apply(t, svc, deleted("e3", t0.Add(time.Hour)))
	apply(t, svc, updated("e2", t0.Add(time.Minute), backup.StateStopped, "v1")) // late, older than the delete
	got, _ := st.GetEnvironment(context.Background(), "ns-a", envID)
	if got.State != backup.StateDeleted {
		t.Fatalf("got state %s, want Deleted", got.State)
	}
	// A delete that arrives before any update leaves a tombstone the older update cannot override.
	svc2, st2 := newService(t)
	apply(t, svc2, deleted("e9", t0.Add(time.Hour)))
	apply(t, svc2, updated("e1", t0, backup.StateRunning, "v1"))
	if got, _ := st2.GetEnvironment(context.Background(), "ns-a", envID); got.State != backup.StateDeleted {
		t.Fatalf("tombstone: got state %s, want Deleted", got.State)
	}
}

func TestPermissionEventsReplaceAndRemove(t *testing.T) {
	svc, st := newService(t)
	ctx := context.Background()
	apply(t, svc, perms("p1", t0, "user-1", "ManageAppsBackups", "StopApps", "StopApps"))
	apply(t, svc, perms("p3", t0.Add(2*time.Minute), "user-1", "ManageAppsBackups"))
	apply(t, svc, perms("p2", t0.Add(time.Minute), "user-1", "StopApps")) // older: ignored
	g, _ := st.GetGrant(ctx, "ns-a", "user-1")
	if !g.Has(backup.PermManageAppsBackups) || g.Has(backup.PermStopApps) {
		t.Fatalf("got %v, want only ManageAppsBackups", g.Permissions)
	}
	apply(t, svc, perms("p4", t0.Add(3*time.Minute), "user-1"))
	apply(t, svc, perms("p3", t0.Add(2*time.Minute), "user-1", "ManageAppsBackups")) // replay of an older grant
	if g, _ := st.GetGrant(ctx, "ns-a", "user-1"); len(g.Permissions) != 0 {
		t.Fatalf("got %v after removal and replay, want none", g.Permissions)
	}
	err := svc.Authorize(ctx, backup.Principal{ID: "user-1"}, "ns-a", backup.PermManageAppsBackups)
	if backup.CodeOf(err) != backup.CodeNoAccess {
		t.Fatalf("Authorize after removal: got %v, want NO_ACCESS", err)
	}
}

func TestMalformedEventsAreRecordedAndAcknowledged(t *testing.T) {
	valid := updated("e1", t0, backup.StateRunning, "v1")
	tests := []struct {
		name, body, wantReason string
	}{
		{"not json", `{"type":`, "not valid JSON"},
		{"unknown type", `{"type":"environment.exploded","event_id":"x","occurred_at":"2026-11-20T08:00:00Z","namespace":"ns-a"}`, "is not one of"},
		{"missing type", `{"event_id":"x","occurred_at":"2026-11-20T08:00:00Z","namespace":"ns-a"}`, "type is missing"},
		{"bad state", strings.Replace(valid, `"Running"`, `"Exploding"`, 1), "state"},
		{"environment id not a uuid", strings.Replace(valid, envID, "../../etc", 1), "not a UUID"},
		{"namespace with quote", strings.Replace(valid, `"ns-a"`, `"ns' or 1 eq 1"`, 1), "namespace"},
		{"database name injection", strings.Replace(valid, `"acc_db"`, `"acc; DROP DATABASE x"`, 1), "database.name"},
		{"missing occurred_at", strings.Replace(valid, `"occurred_at"`, `"occurred"`, 1), "occurred_at is missing"},
		{"missing database", strings.Replace(valid, `"database":`, `"db":`, 1), "database is missing"},
		{"missing files", strings.Replace(valid, `"files":`, `"file_store":`, 1), "files is missing"},
		{"missing deployed", strings.Replace(valid, `"deployed":true`, `"is_deployed":true`, 1), "deployed is missing"},
		{"database port wrong type", strings.Replace(valid, `"port":5432`, `"port":"5432"`, 1), "not valid JSON"},
		{"unknown field with a bad known one", strings.Replace(valid, `"Running"`, `"Exploding","extra":1`, 1), "state"},
		{"unknown permission", perms("p", t0, "u", "RootEverything"), "permission"},
		{"permissions missing", `{"type":"namespace.permissions","event_id":"p","occurred_at":"2026-11-20T08:00:00Z","namespace":"ns-a","principal_id":"u"}`, "permissions is missing"},
		{"principal with slash", perms("p", t0, "a/b", "StopApps"), "principal id"},
		{"data after object", valid + `{}`, "after the JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st := newService(t)
			if err := svc.HandleEnvironmentEvent(context.Background(), "msg-1", []byte(tt.body), zerolog.Nop()); err != nil {
				t.Fatalf("malformed event must be acknowledged (nil), got %v", err)
			}
			rej := st.RejectedEvents()
			if len(rej) != 1 || rej[0].MessageID != "msg-1" || !strings.Contains(rej[0].Reason, tt.wantReason) {
				t.Fatalf("got rejected %+v, want one for msg-1 whose reason mentions %q", rej, tt.wantReason)
			}
			if envs, _ := st.ListEnvironments(context.Background(), "ns-a"); len(envs) != 0 {
				t.Errorf("malformed event stored an environment: %+v", envs)
			}
		})
	}
}

func TestListEnvironmentsSaysWhyNoBackup(t *testing.T) {
	svc, st := newService(t)
	ctx := context.Background()
	apply(t, svc, perms("p1", t0, "user-1", "ManageAppsBackups"))
	apply(t, svc, updated("e1", t0, backup.StateDeploying, "v1"))
	p := backup.Principal{ID: "user-1"}
	envs, err := svc.ListEnvironments(ctx, p, "ns-a")
	if err != nil || len(envs) != 1 {
		t.Fatalf("got %v, %v", envs, err)
	}
	if envs[0].CanCreateBackup || !strings.Contains(envs[0].Reason, "deployed") {
		t.Errorf("Deploying: got can=%v reason=%q, want false and a reason", envs[0].CanCreateBackup, envs[0].Reason)
	}
	apply(t, svc, updated("e2", t0.Add(time.Minute), backup.StateRunning, "v1"))
	envs, _ = svc.ListEnvironments(ctx, p, "ns-a")
	if envs[0].CanCreateBackup || !strings.Contains(envs[0].Reason, "not enabled") {
		t.Errorf("backups disabled: got can=%v reason=%q", envs[0].CanCreateBackup, envs[0].Reason)
	}
	if _, err := svc.UpdateSettings(ctx, p, "ns-a", true); err != nil {
		t.Fatal(err)
	}
	envs, _ = svc.ListEnvironments(ctx, p, "ns-a")
	if !envs[0].CanCreateBackup || envs[0].Reason != "" {
		t.Errorf("Running and enabled: got can=%v reason=%q, want true", envs[0].CanCreateBackup, envs[0].Reason)
	}
	apply(t, svc, deleted("e3", t0.Add(2*time.Minute)))
	if envs, _ := svc.ListEnvironments(ctx, p, "ns-a"); len(envs) != 0 {
		t.Errorf("deleted environment listed: %+v", envs)
	}
	if _, err := svc.Environment(ctx, p, "ns-a", envID); backup.CodeOf(err) != backup.CodeEnvironmentNotFound {
		t.Errorf("deleted environment: got %v, want ENVIRONMENT_NOT_FOUND", err)
	}
	_ = st
}

func TestBackupBlockers(t *testing.T) {
	tests := []struct {
		state    backup.EnvironmentState
		deployed bool
		blocked  bool
	}{
		{backup.StateCreating, true, true},
		{backup.StateCreationFailed, true, true},
		{backup.StateDeploying, true, true},
		{backup.StateTransitioning, true, true},
		{backup.StateDeleted, true, true},
		{backup.StateRunning, false, true},
		{backup.StateRunning, true, false},
		{backup.StateStopped, true, false},
	}
	for _, tt := range tests {
		e := backup.Environment{State: tt.state, Deployed: tt.deployed}
		if got := e.BackupBlocker() != ""; got != tt.blocked {
			t.Errorf("%s deployed=%v: blocked=%v, want %v", tt.state, tt.deployed, got, tt.blocked)
		}
	}
}

func TestEventsWithUnknownFieldsAreAccepted(t *testing.T) {
	valid := updated("e1", t0, backup.StateRunning, "v1")
	body := strings.Replace(valid, `"name":"acceptance"`, `"name":"acceptance","region":"westeurope","tags":{"a":[1,2]}`, 1)
	body = strings.Replace(body, `"role":"acc_role"`, `"role":"acc_role","sslmode":"require","replica":{"host":"x"}`, 1)
	body = strings.Replace(body, `"prefix":""`, `"prefix":"","account":"stfiles","tier":"Hot"`, 1)
	for _, b := range []string{body, valid} {
		ev, err := backup.ParseEvent([]byte(b))
		if err != nil {
			t.Fatalf("ParseEvent(%s): %v", b, err)
		}
		if ev.Database == nil || ev.Database.Host != "pg.local" || ev.Database.Role != "acc_role" ||
			ev.Files == nil || ev.Files.Container != "files-acc" || ev.Name != "acceptance" {
			t.Errorf("got %+v, want the known fields decoded", ev)
		}
	}
	svc, st := newService(t)
	apply(t, svc, body)
	if got, err := st.GetEnvironment(context.Background(), "ns-a", envID); err != nil || got.Database.Name != "acc_db" {
		t.Fatalf("got %+v, %v; want the environment stored", got, err)
	}
	if rej := st.RejectedEvents(); len(rej) != 0 {
		t.Errorf("got rejected events %+v, want none", rej)
	}
	// Unknown fields in other event types too.
	for _, b := range []string{
		strings.Replace(deleted("d1", t0.Add(time.Hour)), `"namespace"`, `"reason":"cleanup","namespace"`, 1),
		strings.Replace(perms("p1", t0, "user-1", "StopApps"), `"permissions"`, `"granted_by":"admin","permissions"`, 1),
	} {
		if _, err := backup.ParseEvent([]byte(b)); err != nil {
			t.Errorf("ParseEvent(%s): %v", b, err)
		}
	}
}

func TestParseHostAllowList(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{".postgres.database.azure.com", ".postgres.database.azure.com", ""},
		{" 127.0.0.1 , LocalHost ", "127.0.0.1,localhost", ""},
		{"*.Postgres.Database.Azure.Com.", ".postgres.database.azure.com", ""},
		{"::1,db.example.com.", "::1,db.example.com", ""},
		{"", "", "empty entry"},
		{"a,,b", "", "empty entry"},
		{"*", "", "not a host name"},
		{".com", "", "at least two labels"},
		{"db example.com", "", "not a host name"},
		{"db/x", "", "not a host name"},
		{"a..b.com", "", "not a host name"},
		{"d\u212ab.example.com", "", "not a host name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			l, err := backup.ParseHostAllowList(tt.in)
			if got := fmt.Sprint(err); tt.wantErr == "" && err != nil || tt.wantErr != "" && !strings.Contains(got, tt.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
			if l.String() != tt.want {
				t.Errorf("got %q, want %q", l, tt.want)
			}
		})
	}
}

func TestHostAllowListAllows(t *testing.T) {
	l, err := backup.ParseHostAllowList(backup.DefaultDatabaseHosts + ",127.0.0.1,localhost,::1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		want bool
	}{
		{"myserver.postgres.database.azure.com", true},
		{"MyServer.Postgres.Database.Azure.Com.", true},
		{"a.b.postgres.database.azure.com", true},
		{"127.0.0.1", true},
		{"localhost", true},
		{"::1", true},
		{"postgres.database.azure.com", false},     // the suffix alone is no server
		{".postgres.database.azure.com", false},    // nor an empty label
		{"x..postgres.database.azure.com", false},  // nor an empty label in between
		{"evilpostgres.database.azure.com", false}, // a suffix matches whole labels
		{"myserver.postgres.database.azure.com.evil.example", false},
		{"myserver.postgres.database.azure.co", false},
		{"127.0.0.2", false},
		{"localhost.evil.example", false},
		{"attacker.example.com", false},
		{"\u212a.postgres.database.azure.com", false}, // Kelvin sign, not ASCII
		{"", false},
	}
	for _, tt := range tests {
		if got := l.Allows(tt.host); got != tt.want {
			t.Errorf("Allows(%q): got %v, want %v", tt.host, got, tt.want)
		}
	}
	if (backup.HostAllowList{}).Allows("localhost") || !(backup.HostAllowList{}).IsZero() {
		t.Error("the zero list must allow nothing and be zero")
	}
}

func TestEventNamingADisallowedDatabaseHostIsRejected(t *testing.T) {
	hosts, err := backup.ParseHostAllowList(backup.DefaultDatabaseHosts)
	if err != nil {
		t.Fatal(err)
	}
	allowed := strings.Replace(updated("e1", t0, backup.StateRunning, "v1"), "pg.local", "srv1.postgres.database.azure.com", 1)
	if _, err := backup.ParseEvent([]byte(allowed), backup.WithDatabaseHosts(hosts)); err != nil {
		t.Errorf("allowed host: got %v, want no error", err)
	}
	forged := strings.Replace(allowed, "srv1.postgres.database.azure.com", "collector.attacker.example", 1)
	_, err = backup.ParseEvent([]byte(forged), backup.WithDatabaseHosts(hosts))
	want := `invalid environment.updated event: database.host "collector.attacker.example" is not an allowed database server (allowed: .postgres.database.azure.com)`
	if backup.CodeOf(err) != backup.CodeInvalidParameters || fmt.Sprint(err) != want {
		t.Errorf("forged host: got %v (code %s), want %q", err, backup.CodeOf(err), want)
	}
	// Without a list (tests, tools) any well-formed host passes.
	if _, err := backup.ParseEvent([]byte(forged)); err != nil {
		t.Errorf("no list: got %v, want no error", err)
	}
	// Other event types name no host.
	if _, err := backup.ParseEvent([]byte(deleted("d1", t0)), backup.WithDatabaseHosts(hosts)); err != nil {
		t.Errorf("deleted event: got %v", err)
	}
}

func TestServiceRejectsEventsNamingAHostOffTheList(t *testing.T) {
	hosts, err := backup.ParseHostAllowList(backup.DefaultDatabaseHosts)
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New()
	svc := backup.NewService(backup.Deps{Stores: st.Stores(), Now: func() time.Time { return t0 }, DatabaseHosts: hosts})
	if err := svc.HandleEnvironmentEvent(context.Background(), "msg-1", []byte(updated("e1", t0, backup.StateRunning, "v1")), zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	rej := st.RejectedEvents()
	if len(rej) != 1 || !strings.Contains(rej[0].Reason, `database.host "pg.local" is not an allowed database server`) {
		t.Errorf("rejected %+v, want the event naming pg.local", rej)
	}
	if _, err := st.GetEnvironment(context.Background(), "ns-a", envID); backup.CodeOf(err) != backup.CodeEnvironmentNotFound {
		t.Errorf("the environment was stored: %v", err)
	}
}
