package backup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/memstore"
	"github.com/mxazure/backups/internal/ncrontab"
	"github.com/mxazure/backups/internal/schedule"
)

// The fixture of the schedule's tests (automatic backups, their recovery and the expiry): a service with
// a schedule plan over memstore and the fakes of job_test.go, and a clock the test moves.

// defaultTimers are the default NCRONTAB schedules of the nightly, weekly and monthly timers.
var defaultTimers = []string{"0 0 1 * * 1-6", "0 0 1 8-31 * 0", "0 0 1 1-7 * 0"}

const testSpread = 2 * time.Hour

// hookPublisher is a fakePublisher whose sends a test can fail, and which remembers every message
// published (take empties the queues, history does not).
type hookPublisher struct {
	*fakePublisher
	mu sync.Mutex
	// hook, when set, is asked before each publish: a non-nil error fails it after sending the first
	// sent messages (a publisher may send some batches before one fails).
	hook    func(entity string, msgs []backup.Message) (sent int, err error)
	history map[string][]backup.Message
}

func (p *hookPublisher) Publish(ctx context.Context, entity string, msgs ...backup.Message) error {
	p.mu.Lock()
	hook := p.hook
	p.mu.Unlock()
	if hook != nil {
		if n, err := hook(entity, msgs); err != nil {
			p.record(entity, msgs[:n])
			_ = p.fakePublisher.Publish(ctx, entity, msgs[:n]...)
			return err
		}
	}
	if err := p.fakePublisher.Publish(ctx, entity, msgs...); err != nil {
		return err
	}
	p.record(entity, msgs)
	return nil
}

func (p *hookPublisher) record(entity string, msgs []backup.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.history[entity] = append(p.history[entity], msgs...)
}

func (p *hookPublisher) setHook(h func(entity string, msgs []backup.Message) (int, error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hook = h
}

// sentIDs is every MessageId ever published to entity.
func (p *hookPublisher) sentIDs(entity string) map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := map[string]bool{}
	for _, m := range p.history[entity] {
		ids[m.ID] = true
	}
	return ids
}

// hookOperations lets a test run something when the service next looks at an environment lock: another
// handler's whole work, as if it ran in between.
type hookOperations struct {
	backup.OperationStore
	mu        sync.Mutex
	onGetLock func()
}

func (o *hookOperations) GetLock(ctx context.Context, namespace, envID string) (backup.Lock, error) {
	o.mu.Lock()
	h := o.onGetLock
	o.onGetLock = nil
	o.mu.Unlock()
	if h != nil {
		h()
	}
	return o.OperationStore.GetLock(ctx, namespace, envID)
}

type schedFixture struct {
	svc   *backup.Service
	st    *memstore.Store
	snap  *fakeSnapshotter
	blobs *fakeBlobs
	pub   *hookPublisher
	ops   *hookOperations
	// worker restores (for tests of a restore reading a snapshot).
	worker *modelWorker
	now    time.Time
	user   backup.Principal
	plan   schedule.Plan
	seq    int // orders the environment events the fixture applies
}

// newSchedFixture builds the fixture with the default timers in zone ("" is UTC), a spread of
// testSpread and KEEP_LAST_GOOD_SNAPSHOT on. The clock starts at now.
func newSchedFixture(t *testing.T, zone string, now time.Time) *schedFixture {
	t.Helper()
	cal, err := schedule.LoadCalendar(zone)
	if err != nil {
		t.Fatal(err)
	}
	f := &schedFixture{st: memstore.New(), now: now, user: backup.Principal{ID: "user-1"}, worker: newModelWorker(),
		pub:  &hookPublisher{fakePublisher: &fakePublisher{msgs: map[string][]backup.Message{}}, history: map[string][]backup.Message{}},
		plan: schedule.Plan{Calendar: cal, Timers: parseTimers(t, defaultTimers...), Spread: testSpread}}
	f.blobs = &fakeBlobs{paths: map[string]time.Time{}, now: func() time.Time { return f.now }, undeletable: map[string]bool{}}
	f.snap = &fakeSnapshotter{blobs: f.blobs, readStatus: func(backup.SnapshotRequest) string { return "" }}
	f.ops = &hookOperations{OperationStore: f.st.Stores().Operations}
	f.rebuild(f.plan, true)
	return f
}

func parseTimers(t *testing.T, exprs ...string) []*ncrontab.Schedule {
	t.Helper()
	var out []*ncrontab.Schedule
	for _, e := range exprs {
		s, err := ncrontab.Parse(e)
		if err != nil {
			t.Fatalf("ncrontab.Parse(%q): %v", e, err)
		}
		out = append(out, s)
	}
	return out
}

// rebuild replaces the service (same stores, fakes and clock) with one of another plan or
// KEEP_LAST_GOOD_SNAPSHOT setting.
func (f *schedFixture) rebuild(plan schedule.Plan, keepLastGood bool) {
	f.plan = plan
	stores := f.st.Stores()
	stores.Operations = f.ops
	f.svc = backup.NewService(backup.Deps{Stores: stores, Publisher: f.pub, Snapshotter: f.snap, Archives: f.blobs,
		Layout: layout{}, Restorer: f.worker, Now: func() time.Time { return f.now }, Log: zerolog.Nop(), Plan: plan, KeepLastGood: keepLastGood})
}

// testEnvID is a UUID naming the i-th test environment; ids sort as i does.
func testEnvID(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }

// putEnv records environment (ns, id) as the platform's events do.
func (f *schedFixture) putEnv(t *testing.T, ns, id string, state backup.EnvironmentState, deployed bool) {
	t.Helper()
	f.seq++
	body := fmt.Sprintf(`{"type":"environment.updated","event_id":"ev-%d","occurred_at":%q,"namespace":%q,
	 "environment_id":%q,"app_id":"app-1","name":"env-%s","state":%q,"deployed":%t,
	 "deployment_package":"v1.mda","model_version":"1.0.0.40",
	 "database":{"host":"pg.local","port":5432,"name":"acc_db","role":"acc_role"},
	 "files":{"container":"files-acc","prefix":""}}`, f.seq, t0.Add(time.Duration(f.seq)*time.Millisecond).Format(time.RFC3339Nano),
		ns, id, id, state, deployed)
	if err := f.svc.HandleEnvironmentEvent(context.Background(), "m", []byte(body), zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if e, err := f.st.GetEnvironment(context.Background(), ns, id); err != nil || e.State != state || e.Deployed != deployed {
		t.Fatalf("test setup: environment %s/%s is %+v (%v), want %s deployed=%t", ns, id, e, err, state, deployed)
	}
}

// deleteEnv records that environment (ns, id) was deleted.
func (f *schedFixture) deleteEnv(t *testing.T, ns, id string) {
	t.Helper()
	f.seq++
	body := fmt.Sprintf(`{"type":"environment.deleted","event_id":"ev-%d","occurred_at":%q,"namespace":%q,"environment_id":%q}`,
		f.seq, t0.Add(time.Duration(f.seq)*time.Millisecond).Format(time.RFC3339Nano), ns, id)
	if err := f.svc.HandleEnvironmentEvent(context.Background(), "m", []byte(body), zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
}

// enable turns the namespace's backups on or off.
func (f *schedFixture) enable(t *testing.T, ns string, on bool) {
	t.Helper()
	if err := f.st.PutSettings(context.Background(), backup.Settings{Namespace: ns, BackupsEnabled: on, UpdatedAt: f.now, UpdatedBy: "user-1"}); err != nil {
		t.Fatal(err)
	}
}

// grant gives the fixture's user ManageAppsBackups on ns, and the other permissions named.
func (f *schedFixture) grant(t *testing.T, ns string, more ...backup.Permission) {
	t.Helper()
	_, _, err := f.st.UpdateGrant(context.Background(), ns, f.user.ID, func(backup.Grant, bool) (backup.Grant, bool, error) {
		return backup.Grant{Namespace: ns, PrincipalID: f.user.ID, Permissions: append([]backup.Permission{backup.PermManageAppsBackups}, more...)}, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// autoBody is the body of an automatic-backup message, as the handler reads it.
type autoBody struct {
	Namespace     string    `json:"namespace"`
	EnvironmentID string    `json:"environment_id"`
	Day           string    `json:"day"`
	Kind          string    `json:"kind"`
	Attempt       int       `json:"attempt"`
	At            time.Time `json:"at"`
	RunStartedAt  time.Time `json:"run_started_at"`
}

func decodeAuto(t *testing.T, m backup.Message) autoBody {
	t.Helper()
	var b autoBody
	if err := json.Unmarshal(m.Body, &b); err != nil {
		t.Fatalf("automatic message %s: %v", m.ID, err)
	}
	return b
}

// encodeAuto is a message body as the fan-out writes it (for messages a test makes up).
func encodeAuto(b autoBody) []byte {
	out, _ := json.Marshal(b)
	return out
}

func (f *schedFixture) runSchedule(t *testing.T, trigger string) error {
	t.Helper()
	return f.svc.RunSchedule(context.Background(), trigger, f.now, zerolog.Nop())
}

func (f *schedFixture) recoverSchedule(t *testing.T) {
	t.Helper()
	if err := f.svc.RecoverSchedule(context.Background(), f.now, zerolog.Nop()); err != nil {
		t.Fatalf("RecoverSchedule: %v", err)
	}
}

// automatic takes the messages sent to the automatic-backups queue since the last take.
func (f *schedFixture) automatic() []backup.Message { return f.pub.take(backup.QueueAutomatic) }

// byEnv indexes automatic messages by environment, failing on a second message for one.
func byEnv(t *testing.T, msgs []backup.Message) map[string]backup.Message {
	t.Helper()
	out := map[string]backup.Message{}
	for _, m := range msgs {
		b := decodeAuto(t, m)
		if prev, dup := out[b.EnvironmentID]; dup {
			t.Fatalf("two messages for environment %s: %s and %s", b.EnvironmentID, prev.ID, m.ID)
		}
		out[b.EnvironmentID] = m
	}
	return out
}

// handle delivers one automatic message at the fixture's clock; the handler must not fail.
func (f *schedFixture) handle(t *testing.T, m backup.Message) {
	t.Helper()
	if err := f.svc.HandleAutomaticBackup(context.Background(), m.Body, f.now, zerolog.Nop()); err != nil {
		t.Fatalf("HandleAutomaticBackup(%s): %v", m.ID, err)
	}
}

// handleAt moves the clock to the message's scheduled time (if later) and delivers it.
func (f *schedFixture) handleAt(t *testing.T, m backup.Message) {
	t.Helper()
	if m.ScheduledAt.After(f.now) {
		f.now = m.ScheduledAt
	}
	f.handle(t, m)
}

// deliverJobs runs the queued job messages like the Functions host (see jobFixture.deliver); every job
// must end in an acknowledgement.
func (f *schedFixture) deliverJobs(t *testing.T) int {
	t.Helper()
	n := 0
	for _, m := range f.pub.take(backup.QueueJobs) {
		n++
		var err error
		for delivery := 1; delivery <= 10; delivery++ {
			err = f.svc.HandleJob(context.Background(), m.Body, fmt.Sprintf("%s/%d", m.ID, delivery), zerolog.Nop())
			if err == nil || !backup.IsRetryable(err) {
				break
			}
		}
		if err != nil {
			t.Fatalf("job %s: %v", m.ID, err)
		}
	}
	return n
}

// snapshots are the environment's snapshots that are not being deleted, newest first.
func (f *schedFixture) snapshots(t *testing.T, ns, id string) []backup.Snapshot {
	t.Helper()
	all, _, err := f.st.ListSnapshots(context.Background(), ns, id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func (f *schedFixture) scheduleRun(t *testing.T, day string) backup.ScheduleRun {
	t.Helper()
	run, err := f.st.GetScheduleRun(context.Background(), day)
	if err != nil {
		t.Fatalf("the run of %s: %v", day, err)
	}
	return run
}

func (f *schedFixture) activity(t *testing.T, ns, id string) []backup.ActivityEntry {
	t.Helper()
	all, _, err := f.st.ListActivity(context.Background(), ns, id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// activityOf keeps the entries of one action and status.
func activityOf(all []backup.ActivityEntry, action backup.ActivityAction, status backup.ActivityStatus) []backup.ActivityEntry {
	return slices.DeleteFunc(slices.Clone(all), func(e backup.ActivityEntry) bool { return e.Action != action || e.Status != status })
}

// events takes the outbound events published since the last take.
func (f *schedFixture) events(t *testing.T) []backup.OutboundEvent {
	t.Helper()
	var out []backup.OutboundEvent
	for _, m := range f.pub.take(backup.TopicBackupEvents) {
		var ev backup.OutboundEvent
		if err := json.Unmarshal(m.Body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.EventID != m.ID {
			t.Errorf("event %s sent with MessageId %s", ev.EventID, m.ID)
		}
		out = append(out, ev)
	}
	return out
}

// ofType keeps the events of one type.
func ofType(evs []backup.OutboundEvent, typ string) []backup.OutboundEvent {
	return slices.DeleteFunc(slices.Clone(evs), func(e backup.OutboundEvent) bool { return e.Type != typ })
}

// utc is a UTC instant.
func utc(y int, m time.Month, d, h, mi int) time.Time {
	return time.Date(y, m, d, h, mi, 0, 0, time.UTC)
}
