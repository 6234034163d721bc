package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/stack"
	"github.com/mxazure/backups/internal/dev/funchost"
	"github.com/mxazure/backups/internal/tablestore"
)

// The schedule's test runs a stack of its own: its host's clock is moved across days, and the shared
// stack's must stay real for the other tests. It reuses the app TestMain built.

// neverSchedule is an NCRONTAB schedule that does not occur while the test runs (29 February on a
// Monday: 2016, then 2044). The schedule's timers get it, so that a jump of the host's clock, which fires
// every timer whose occurrence it passes, does not start a day's run: the test fires them itself.
const neverSchedule = "0 0 0 29 2 1"

// scheduleSpread is SCHEDULE_SPREAD of the schedule's stack: the day's first tries come within seconds.
const scheduleSpread = 5 * time.Second

// schedStack is the schedule test's stack: its host runs on clock.
type schedStack struct {
	*stack.Stack
	clock  *funchost.OffsetClock
	tok    string
	stores backup.Stores
	blobs  *azblob.Client
	demo   *stack.Demo
	envs   []*schedEnv
}

// schedEnv is an environment of the schedule's test.
type schedEnv struct {
	name, ns, id, db, container string
	files                       int  // its file documents, each with a blob
	deleted                     bool // told deleted: the API no longer shows it
}

func (e *schedEnv) String() string { return e.ns + "/" + e.name }

func (e *schedEnv) api() string { return "/api/v1/namespaces/" + e.ns + "/environments/" + e.id }

// startScheduleStack starts Azurite, PostgreSQL, the issuer and the local host with the handler, the
// host's clock reading start, and seeds the demo (which makes the role the test's databases belong to).
func startScheduleStack(t *testing.T, start time.Time) *schedStack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stdout, NoColor: true, TimeFormat: time.TimeOnly}).With().
		Timestamp().Str("stack", "schedule").Logger()
	// Every jump of the clock makes the host warn of timers past due: only errors are shown.
	hostLog := log.Level(zerolog.ErrorLevel)
	log = log.Level(zerolog.WarnLevel)
	if os.Getenv("E2E_VERBOSE") != "" {
		log, hostLog = log.Level(zerolog.DebugLevel), hostLog.Level(zerolog.DebugLevel)
	}
	s := &schedStack{clock: funchost.NewOffsetClock(start)}
	st, err := stack.Start(ctx, stack.Options{AppDir: env.Host.App().Root, Listen: "127.0.0.1:0", Logger: log,
		HandlerLogger: &hostLog, Clock: s.clock, Env: map[string]string{
			"SCHEDULE_SPREAD":  scheduleSpread.String(),
			"NIGHTLY_SCHEDULE": neverSchedule, "WEEKLY_SCHEDULE": neverSchedule, "MONTHLY_SCHEDULE": neverSchedule,
		}})
	if err != nil {
		t.Fatalf("start the schedule's stack: %v", err)
	}
	s.Stack = st
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := st.Stop(ctx); err != nil {
			t.Errorf("stop the schedule's stack: %v", err)
		}
	})
	conn := st.Azurite.ConnectionString()
	tables, err := tablestore.NewFromConnectionString(conn, tablePrefix)
	if err != nil {
		t.Fatal(err)
	}
	s.stores = tables.Stores()
	if s.blobs, err = azblob.NewClientFromConnectionString(conn, nil); err != nil {
		t.Fatal(err)
	}
	if s.demo, err = st.SeedDemo(ctx); err != nil {
		t.Fatalf("seed the demo: %v", err)
	}
	if s.tok, err = st.Token(stack.DemoUserID, stack.DemoUserName); err != nil {
		t.Fatal(err)
	}
	s.envs = append(s.envs,
		&schedEnv{name: "acceptance", ns: s.demo.Namespace, id: s.demo.EnvironmentID, db: s.demo.Database, container: s.demo.Container, files: len(s.demo.Files)},
		&schedEnv{name: "test", ns: s.demo.Namespace, id: s.demo.TestEnvironmentID, db: s.demo.TestDatabase, container: s.demo.TestContainer, files: len(s.demo.TestFiles)})
	return s
}

// call makes an API call as the demo user and decodes a JSON answer.
func (s *schedStack) call(t *testing.T, method, path, body string) (int, map[string]any) {
	t.Helper()
	status, raw, err := s.Call(context.Background(), s.tok, method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	var out map[string]any
	if raw != "" {
		_ = json.Unmarshal([]byte(raw), &out)
	}
	return status, out
}

// publishEvent sends an event to the environment-events queue, as the portal's services do.
func (s *schedStack) publishEvent(t *testing.T, ev map[string]any) {
	t.Helper()
	id := fmt.Sprintf("sched-%s-%d", ev["type"], time.Now().UnixNano())
	ev["event_id"], ev["occurred_at"] = id, time.Now().UTC()
	body, _ := json.Marshal(ev)
	if _, err := s.Host.Publish("environment-events", []funchost.PublishMessage{{Body: string(body), MessageID: id, ContentType: "application/json"}}); err != nil {
		t.Fatal(err)
	}
}

// namespace grants the demo user ManageAppsBackups on ns and sets its backups on or off.
func (s *schedStack) namespace(t *testing.T, ns string, enabled bool) {
	t.Helper()
	s.publishEvent(t, map[string]any{"type": "namespace.permissions", "namespace": ns, "principal_id": stack.DemoUserID,
		"permissions": []string{"ManageAppsBackups", "StopApps"}})
	s.quiet(t)
	if status, body := s.call(t, "PUT", "/api/v1/namespaces/"+ns+"/settings", fmt.Sprintf(`{"backups_enabled":%v}`, enabled)); status != http.StatusOK {
		t.Fatalf("settings of %s: %d %v", ns, status, body)
	}
}

// newEnv makes an environment of ns: a small database of the demo's role (the file documents' table
// and the model version), a container with files file documents, and tells the service about it.
func (s *schedStack) newEnv(t *testing.T, ns, name, state string, deployed bool) *schedEnv {
	t.Helper()
	ctx := context.Background()
	suffix := strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	e := &schedEnv{name: name, ns: ns, id: uuid.NewString(), db: "sched_" + strings.ReplaceAll(name, "-", "_") + "_" + suffix,
		container: "sched-" + name + "-" + suffix, files: 2}
	if err := s.Postgres.CreateDatabase(ctx, e.db, "demo_app_role"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.blobs.CreateContainer(ctx, e.container, nil); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for i := range e.files {
		u := uuid.NewString()
		data := content(name+" document "+u, 50*(i+1))
		if _, err := s.blobs.UploadBuffer(ctx, e.container, u, data, nil); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, fmt.Sprintf("(%d, '%s', 'doc-%d.txt', %d, true, false)", i+1, u, i+1, len(data)))
	}
	if err := s.Postgres.Exec(ctx, e.db, `SET ROLE demo_app_role;
CREATE TABLE "system$filedocument" (id bigint PRIMARY KEY, __uuid__ varchar(36), name varchar(400), size bigint,
  hascontents boolean, deleteafterdownload boolean, changeddate timestamp DEFAULT now());
INSERT INTO "system$filedocument" (id, __uuid__, name, size, hascontents, deleteafterdownload) VALUES `+strings.Join(rows, ", ")+`;
CREATE TABLE "mendixsystem$version" (versionnumber varchar(50), lastsyncdate timestamp);
INSERT INTO "mendixsystem$version" VALUES ('`+testModelVersion+`', now());`); err != nil {
		t.Fatal(err)
	}
	s.envs = append(s.envs, e)
	s.tell(t, e, state, deployed)
	return e
}

// tell sends e's environment.updated event with a state and whether an app is deployed, and waits until
// it is applied.
func (s *schedStack) tell(t *testing.T, e *schedEnv, state string, deployed bool) {
	t.Helper()
	s.publishEvent(t, map[string]any{"type": "environment.updated", "namespace": e.ns, "environment_id": e.id, "app_id": "sched-app",
		"name": e.name, "state": state, "deployed": deployed, "deployment_package": "Sched_" + testModelVersion + ".mda",
		"model_version": testModelVersion,
		"database":      map[string]any{"host": s.Postgres.Host, "port": s.Postgres.Port, "name": e.db, "role": "demo_app_role"},
		"files":         map[string]any{"container": e.container, "prefix": ""}})
	s.quiet(t)
	if got, err := s.stores.Environments.GetEnvironment(context.Background(), e.ns, e.id); err != nil || string(got.State) != state || got.Deployed != deployed {
		t.Fatalf("environment %s after its event: %+v %v, want %s, deployed %v", e, got, err, state, deployed)
	}
}

// remove sends e's environment.deleted event and waits until it is applied.
func (s *schedStack) remove(t *testing.T, e *schedEnv) {
	t.Helper()
	s.publishEvent(t, map[string]any{"type": "environment.deleted", "namespace": e.ns, "environment_id": e.id})
	s.quiet(t)
	if got, err := s.stores.Environments.GetEnvironment(context.Background(), e.ns, e.id); err != nil || got.State != backup.StateDeleted {
		t.Fatalf("environment %s after its deletion: %+v %v", e, got, err)
	}
	e.deleted = true
}

// fire runs a timer function on demand, as POST /admin/functions/<name> does in Azure, and waits until
// it succeeded.
func (s *schedStack) fire(t *testing.T, function string) {
	t.Helper()
	since := time.Now().UTC()
	resp, err := http.Post(s.URL+"/admin/functions/"+function, "application/json", strings.NewReader(`{"input":""}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /admin/functions/%s: %d", function, resp.StatusCode)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		for _, inv := range s.Host.Invocations(function) {
			if inv.StartedAt.Before(since) {
				continue
			}
			if inv.Status != funchost.StatusSucceeded {
				t.Fatalf("%s: %+v", function, inv)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not run within a minute of POST /admin/functions/%s", function, function)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quiet waits until the host has nothing to do: no message visible or locked, none scheduled within
// the next 10 minutes of its clock, no invocation in flight, and that for half a second (a timer that a
// jump of the clock passed fires a moment after the jump).
func (s *schedStack) quiet(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var calm time.Time
	for {
		switch {
		case !s.idle():
			calm = time.Time{}
		case calm.IsZero():
			calm = time.Now()
		case time.Since(calm) >= 500*time.Millisecond:
			return
		}
		if time.Now().After(deadline) {
			am, _ := s.Host.Messages(backup.QueueAutomatic)
			jm, _ := s.Host.Messages(backup.QueueJobs)
			t.Fatalf("the host did not come to rest in 2 minutes: automatic-backups %+v, backup-jobs %+v", am, jm)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *schedStack) idle() bool {
	now, cancel := context.WithCancel(context.Background())
	cancel() // WaitIdle looks once before it waits: a done context asks whether it is idle now
	if s.Host.WaitIdle(now) != nil {
		return false
	}
	horizon := s.clock.Now().Add(10 * time.Minute)
	for _, q := range []string{backup.QueueAutomatic, backup.QueueJobs, "environment-events"} {
		em, _ := s.Host.Messages(q)
		for _, m := range em.Scheduled {
			if m.ScheduledEnqueueTime.Before(horizon) {
				return false
			}
		}
	}
	return true
}

// moveTo sets the host's clock once nothing runs (a jump could take a message's lock away from the
// invocation holding it), then waits for what the jump started (the timers whose occurrences it passed
// fire, past due; scheduled messages that came due are delivered).
func (s *schedStack) moveTo(t *testing.T, at time.Time) {
	t.Helper()
	s.quiet(t)
	s.clock.Set(at)
	s.quiet(t)
}

// snapshots reads every snapshot record of the test's environments from Table Storage (deleted
// environments' too, which the API no longer shows), by id.
func (s *schedStack) snapshots(t *testing.T) map[string]backup.Snapshot {
	t.Helper()
	out := map[string]backup.Snapshot{}
	for _, e := range s.envs {
		list, _, err := s.stores.Snapshots.ListSnapshots(context.Background(), e.ns, e.id, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, sn := range list {
			out[sn.ID] = sn
		}
	}
	return out
}

// envOf is the test's environment of a snapshot.
func (s *schedStack) envOf(sn backup.Snapshot) *schedEnv {
	for _, e := range s.envs {
		if e.ns == sn.Namespace && e.id == sn.EnvironmentID {
			return e
		}
	}
	return nil
}

// snapshotBlobs lists a snapshot's blobs in the snapshots container, sorted.
func (s *schedStack) snapshotBlobs(t *testing.T, sn backup.Snapshot) []string {
	t.Helper()
	prefix := sn.Namespace + "/" + sn.EnvironmentID + "/" + sn.ID + "/"
	pager := s.blobs.NewListBlobsFlatPager(snapshotsContainer, &container.ListBlobsFlatOptions{Prefix: &prefix})
	var names []string
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, strings.TrimPrefix(*b.Name, prefix))
		}
	}
	slices.Sort(names)
	return names
}

// activity is an environment's activity log from Table Storage, newest first.
func (s *schedStack) activity(t *testing.T, e *schedEnv) []backup.ActivityEntry {
	t.Helper()
	entries, _, err := s.stores.Activity.ListActivity(context.Background(), e.ns, e.id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// hasEntry reports whether entries hold one for the snapshot with the action, status and actor whose
// message contains text.
func hasEntry(entries []backup.ActivityEntry, snapshotID string, action backup.ActivityAction, status backup.ActivityStatus, actor, text string) bool {
	for _, a := range entries {
		if a.SnapshotID == snapshotID && a.Action == action && a.Status == status && a.Actor == actor && strings.Contains(a.Message, text) {
			return true
		}
	}
	return false
}

// published is every message an entity of the host accepted.
func (s *schedStack) published(t *testing.T, entity string) []funchost.MessageInfo {
	t.Helper()
	em, ok := s.Host.Messages(entity)
	if !ok {
		t.Fatalf("the host has no entity %s", entity)
	}
	return em.Published
}

// events counts the events on the backup-events topic by type and snapshot.
func (s *schedStack) events(t *testing.T) map[string]map[string]int {
	t.Helper()
	out := map[string]map[string]int{}
	for _, m := range s.published(t, backup.TopicBackupEvents) {
		var ev backup.OutboundEvent
		if err := json.Unmarshal([]byte(m.Body), &ev); err != nil {
			t.Fatalf("an event on %s is not JSON: %v: %s", backup.TopicBackupEvents, err, m.Body)
		}
		if out[ev.Type] == nil {
			out[ev.Type] = map[string]int{}
		}
		out[ev.Type][ev.SnapshotID]++
	}
	return out
}

// addMonths is t plus n calendar months on the same wall clock, the day clamped to the target month's
// last (31 January + 3 months is 30 April): docs/schedule.md's rule, written out again here.
func addMonths(t time.Time, n int) time.Time {
	y, m, d := t.Date()
	first := time.Date(y, m+time.Month(n), 1, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), t.Location())
	last := first.AddDate(0, 1, -1).Day()
	return first.AddDate(0, 0, min(d, last)-1)
}

// wantExpiry is when a snapshot of kind made at created expires (UTC, the stack's SCHEDULE_TIME_ZONE):
// 14 days for nightly and Failed ones, 3 calendar months for weekly, 1 calendar year for monthly (the
// zero time for a kind the schedule does not make).
func wantExpiry(kind backup.SnapshotKind, status backup.SnapshotStatus, created time.Time) time.Time {
	c := created.UTC()
	switch {
	case status == backup.SnapshotFailed || kind == backup.KindNightly:
		return c.AddDate(0, 0, 14)
	case kind == backup.KindWeekly:
		return addMonths(c, 3)
	case kind == backup.KindMonthly:
		return addMonths(c, 12)
	}
	return time.Time{}
}
