package funchost

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// timerInfo is Data.timer of a timer envelope.
type timerInfo struct {
	Schedule       map[string]bool `json:"Schedule"`
	ScheduleStatus *struct {
		Last, Next, LastUpdated time.Time
	} `json:"ScheduleStatus"`
	IsPastDue bool `json:"IsPastDue"`
}

func timerOf(t *testing.T, r record) timerInfo {
	t.Helper()
	data, md := decodeEnvelope(t, []byte(r.Body))
	var ti timerInfo
	if err := json.Unmarshal(data["timer"], &ti); err != nil {
		t.Fatalf("Data.timer: %v (%s)", err, data["timer"])
	}
	if !ti.Schedule["AdjustForDST"] {
		t.Errorf("Data.timer.Schedule: got %v, want AdjustForDST true", ti.Schedule)
	}
	var sys struct{ MethodName string }
	if err := json.Unmarshal(md["sys"], &sys); err != nil || "/"+sys.MethodName != r.Path {
		t.Errorf("Metadata.sys: got %s for %s", md["sys"], r.Path)
	}
	return ti
}

func TestTimerSchedulePastDueAndOnDemand(t *testing.T) {
	clock := newFakeClock(t0)
	root := writeApp(t, appSpec{
		functions: map[string]string{
			"Nightly": timerFn("%NIGHTLY%", nil),
			"Startup": timerFn("0 0 0 1 1 *", map[string]any{"runOnStartup": true}),
		},
		settings: map[string]string{"NIGHTLY": "0 0 1 * * *"},
	})
	th := startHost(t, root, Options{Clock: clock})

	rs := th.waitRecords(t, "the runOnStartup run", func(rs []record) bool { return len(starts(rs, "/Startup")) == 1 })
	if ti := timerOf(t, starts(rs, "/Startup")[0]); ti.IsPastDue {
		t.Errorf("runOnStartup: got IsPastDue true, want false")
	}

	first := t0.Add(time.Hour)
	clock.waitTimer(t, first)
	if n := len(starts(th.records(t), "/Nightly")); n != 0 {
		t.Fatalf("Nightly runs before 01:00: got %d, want 0", n)
	}
	clock.set(first)
	rs = th.waitRecords(t, "the 01:00 run", func(rs []record) bool { return len(starts(rs, "/Nightly")) == 1 })
	ti := timerOf(t, starts(rs, "/Nightly")[0])
	if ti.IsPastDue || ti.ScheduleStatus == nil || !ti.ScheduleStatus.Next.Equal(first) || !ti.ScheduleStatus.Last.IsZero() {
		t.Fatalf("on-time run: got %+v, want IsPastDue false and ScheduleStatus{Last: zero, Next: %s}", ti, first)
	}

	// The host is blocked past the next occurrence: the late run is past due, and missed occurrences
	// are not replayed.
	second := first.Add(24 * time.Hour)
	clock.waitTimer(t, second)
	clock.set(second.Add(2 * time.Hour))
	rs = th.waitRecords(t, "the late run", func(rs []record) bool { return len(starts(rs, "/Nightly")) == 2 })
	ti = timerOf(t, starts(rs, "/Nightly")[1])
	if !ti.IsPastDue || ti.ScheduleStatus == nil || !ti.ScheduleStatus.Last.Equal(first) || !ti.ScheduleStatus.Next.Equal(second) {
		t.Fatalf("late run: got %+v, want IsPastDue true, Last %s, Next %s", ti, first, second)
	}
	clock.waitTimer(t, second.Add(24*time.Hour))

	// On demand, as POST /admin/functions/<name>.
	resp, err := http.Post(th.URL()+"/admin/functions/nightly", "application/json", strings.NewReader(`{"input":""}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /admin/functions/nightly: got %d, want 202", resp.StatusCode)
	}
	rs = th.waitRecords(t, "the on-demand run", func(rs []record) bool { return len(starts(rs, "/Nightly")) == 3 })
	if ti := timerOf(t, starts(rs, "/Nightly")[2]); ti.IsPastDue {
		t.Errorf("on-demand run: got IsPastDue true, want false")
	}
	th.waitIdle(t)
	invs := th.Invocations("Nightly")
	if len(invs) != 3 || invs[0].Trigger != "timerTrigger" || invs[2].Status != StatusSucceeded {
		t.Errorf("Nightly invocations: got %+v, want 3 succeeded timer runs", invs)
	}
}

func TestTimerOverlappingRunIsPastDue(t *testing.T) {
	clock := newFakeClock(t0)
	release := filepath.Join(t.TempDir(), "release")
	root := writeApp(t, appSpec{functions: map[string]string{"Fast": timerFn("*/10 * * * * *", nil)}})
	th := startHost(t, root, Options{Clock: clock, Env: map[string]string{
		"TESTHANDLER_STEER_Fast": `{"wait_file":"` + release + `"}`}})

	clock.waitTimer(t, t0.Add(10*time.Second))
	clock.set(t0.Add(10 * time.Second))
	th.waitRecords(t, "the first run", func(rs []record) bool { return len(starts(rs, "/Fast")) == 1 })
	// While the first run blocks, the 00:00:20 occurrence passes.
	clock.set(t0.Add(25 * time.Second))
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rs := th.waitRecords(t, "the overlapping occurrence", func(rs []record) bool { return len(starts(rs, "/Fast")) == 2 })
	runs := starts(rs, "/Fast")
	if ti := timerOf(t, runs[0]); ti.IsPastDue || ti.ScheduleStatus != nil {
		t.Errorf("first run: got %+v, want on time, no ScheduleStatus (period under a minute)", ti)
	}
	if ti := timerOf(t, runs[1]); !ti.IsPastDue {
		t.Errorf("run after the overlap: got IsPastDue false, want true")
	}
	for _, r := range rs {
		if r.Event == "start" && r.Concurrent != 1 {
			t.Errorf("timer ran %d times at once, want never concurrently", r.Concurrent)
		}
	}
	clock.waitTimer(t, t0.Add(30*time.Second)) // back on schedule, the missed 00:00:20 not replayed again
	if n := len(starts(th.records(t), "/Fast")); n != 2 {
		t.Fatalf("runs: got %d, want 2", n)
	}
}

func TestTimerFailureIsNotRetried(t *testing.T) {
	clock := newFakeClock(t0)
	root := writeApp(t, appSpec{functions: map[string]string{"Nightly": timerFn("0 0 1 * * *", nil)}})
	th := startHost(t, root, Options{Clock: clock, Env: map[string]string{"TESTHANDLER_STEER_Nightly": `{"status":500}`}})
	clock.waitTimer(t, t0.Add(time.Hour))
	clock.set(t0.Add(time.Hour))
	clock.waitTimer(t, t0.Add(25*time.Hour)) // the loop moved on to the next occurrence
	th.waitIdle(t)
	invs := th.Invocations("Nightly")
	if len(invs) != 1 || invs[0].Status != StatusFailed || invs[0].HTTPStatus != 500 {
		t.Fatalf("invocations: got %+v, want one Failed run with status 500 and no retry", invs)
	}
}
