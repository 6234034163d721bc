package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/memstore"
)

func TestClassifyTableCall(t *testing.T) {
	const a = "/devstoreaccount1/"
	tests := []struct {
		method, path     string
		wantTable, wantK string
	}{
		{"GET", a + "fanout1000abcEnvironments()", "Environments", "query"},
		{"GET", a + "fanout1000abcScheduleRuns(PartitionKey='runs',RowKey='2026-12-02')", "ScheduleRuns", "point read"},
		{"POST", a + "fanout1000abcScheduleRuns", "ScheduleRuns", "write"}, // insert
		{"PUT", a + "fanout1000abcScheduleRuns(PartitionKey='runs',RowKey='2026-12-02')", "ScheduleRuns", "write"},
		{"MERGE", a + "fanout1000abcEnvironments(PartitionKey='ns',RowKey='x')", "Environments", "write"},
		{"DELETE", a + "fanout1000abcEnvironments(PartitionKey='ns',RowKey='x')", "Environments", "write"},
		{"POST", a + "Tables", "Tables", "table"},
		{"DELETE", a + "Tables('fanout1000abcEnvironments')", "Tables", "table"},
		{"POST", a + "$batch", "$batch", "write"},
		{"GET", "/fanout1000abcNamespaceSettings()", "NamespaceSettings", "query"}, // an account in the host name
		{"GET", a + "otherEnvironments()", "otherEnvironments", "query"},           // another prefix stays whole
	}
	for _, tt := range tests {
		table, kind := classifyTableCall(tt.method, tt.path, "fanout1000abc")
		if table != tt.wantTable || kind != tt.wantK {
			t.Errorf("%s %s: got %q %q, want %q %q", tt.method, tt.path, table, kind, tt.wantTable, tt.wantK)
		}
	}
}

// transport answers every request with 204 after wait.
type transport struct{ wait time.Duration }

func (f transport) Do(req *http.Request) (*http.Response, error) {
	time.Sleep(f.wait)
	return &http.Response{StatusCode: http.StatusNoContent, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
}

// TestTableCounter: the policy counts every request that goes through a pipeline by table and kind,
// sums their waits, and Take starts again from zero.
func TestTableCounter(t *testing.T) {
	c := &TableCounter{Prefix: "p1"}
	pl := runtime.NewPipeline("bench", "v0", runtime.PipelineOptions{PerRetry: []policy.Policy{c}},
		&policy.ClientOptions{Transport: transport{wait: 2 * time.Millisecond}})
	send := func(method, path string) {
		t.Helper()
		req, err := runtime.NewRequest(context.Background(), method, "http://127.0.0.1:1/devstoreaccount1/"+path)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := pl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if calls, wait := c.Take(); calls.Total() != 0 || wait != 0 {
		t.Fatalf("before any request: %v, %s", calls, wait)
	}
	send("GET", "p1Environments()")
	send("GET", "p1Environments()")
	send("GET", "p1ScheduleRuns(PartitionKey='runs',RowKey='2026-12-02')")
	send("PUT", "p1ScheduleRuns(PartitionKey='runs',RowKey='2026-12-02')")
	send("POST", "p1ScheduleRuns")
	calls, wait := c.Take()
	if calls.Total() != 5 || calls["Environments"]["query"] != 2 || calls["ScheduleRuns"]["point read"] != 1 || calls["ScheduleRuns"]["write"] != 2 {
		t.Errorf("counted %v, want 2 Environments queries, 1 ScheduleRuns point read and 2 writes", calls)
	}
	if wait < 10*time.Millisecond {
		t.Errorf("waited %s for 5 requests of at least 2 ms", wait)
	}
	if got, want := calls.Text(), "Environments 2 query; ScheduleRuns 1 point read, 2 write"; got != want {
		t.Errorf("Text() = %q, want %q", got, want)
	}
	send("GET", "p1NamespaceSettings()")
	if calls, _ := c.Take(); calls.Total() != 1 || calls["NamespaceSettings"]["query"] != 1 {
		t.Errorf("after Take: %v, want only the settings query", calls)
	}
}

func TestBatchesFor(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int
		want  int
	}{
		{"none", nil, 0},
		{"one", []int{10}, 1},
		{"fills one exactly", []int{40, 60}, 1},
		{"one byte over", []int{40, 61}, 2},
		{"greedy, in order", []int{60, 50, 50, 60}, 3}, // [60] [50 50] [60]: not the best packing, the adapter's
		{"larger than a batch alone", []int{150, 10}, 2},
	}
	for _, tt := range tests {
		if got := batchesFor(tt.sizes, 100); got != tt.want {
			t.Errorf("%s: %d batches, want %d", tt.name, got, tt.want)
		}
	}
}

// TestCountingPublisher: Publish calls, messages, bytes and batches are counted per Take, a call to
// another entity is reported, and nothing fails.
func TestCountingPublisher(t *testing.T) {
	p := &CountingPublisher{Entity: backup.QueueAutomatic}
	body := bytes.Repeat([]byte("x"), 1000)
	msgs := make([]backup.Message, 300)
	for i := range msgs {
		msgs[i] = backup.Message{ID: "id", Body: body, ContentType: "application/json"}
	}
	ctx := context.Background()
	if err := p.Publish(ctx, backup.QueueAutomatic, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, backup.QueueAutomatic, msgs[:10]...); err != nil {
		t.Fatal(err)
	}
	stats, got, wrong := p.Take()
	size := messageSize(msgs[0])
	if size != 1000+2+16+amqpOverhead {
		t.Errorf("messageSize = %d, want the body, id, content type and %d", size, amqpOverhead)
	}
	perBatch := serviceBusBatchBytes / size // 229 of 1,146 bytes
	want := PublishStats{Calls: 2, Messages: 310, Bytes: int64(310 * size), Batches: (300+perBatch-1)/perBatch + 1}
	if stats != want || len(got) != 310 || len(wrong) != 0 {
		t.Errorf("got %+v, %d messages, wrong %v; want %+v, 310, none", stats, len(got), wrong, want)
	}
	_ = p.Publish(ctx, backup.TopicBackupEvents, msgs[0])
	if stats, got, wrong := p.Take(); stats.Calls != 1 || len(got) != 1 || len(wrong) != 1 || wrong[0] != backup.TopicBackupEvents {
		t.Errorf("after Take, a publish to another entity: %+v, %d messages, wrong %v", stats, len(got), wrong)
	}
}

// TestFanOutEnvironments: the seeded mix is 96 eligible of every 100, in namespaces of 100, with
// valid and unique names and ids, and every kind of environment the eligibility rule tells apart.
func TestFanOutEnvironments(t *testing.T) {
	ids := map[string]bool{}
	eligible := 0
	states := map[string]int{}
	for i := range 1000 {
		e, ok := fanOutEnvironment(i, FanOutPerNamespace, "db.example")
		if err := backup.ValidateNamespace(e.Namespace); err != nil {
			t.Fatal(err)
		}
		if _, err := backup.ValidateUUID("environment id", e.ID); err != nil {
			t.Fatal(err)
		}
		if e.Namespace != fanOutNamespace(i/100) || ids[e.ID] {
			t.Fatalf("environment %d: namespace %s, id %s (seen before: %v)", i, e.Namespace, e.ID, ids[e.ID])
		}
		ids[e.ID] = true
		if ok {
			eligible++
		}
		// The rule, as docs/schedule.md states it: not Deleted, and deployed (a transient state is waited
		// out by the try, not decided here).
		if want := e.State != backup.StateDeleted && e.Deployed; ok != want {
			t.Errorf("environment %d (%s, deployed %v): eligible %v", i, e.State, e.Deployed, ok)
		}
		states[string(e.State)+map[bool]string{true: "+deployed", false: ""}[e.Deployed]]++
	}
	if eligible != 940 {
		t.Errorf("%d of 1,000 eligible, want 940", eligible)
	}
	want := map[string]int{"Running+deployed": 880, "Stopped+deployed": 40, "Stopped": 20, "Deploying": 20, "Deploying+deployed": 20, "Deleted+deployed": 20}
	for k, n := range want {
		if states[k] != n {
			t.Errorf("%s: %d, want %d (all: %v)", k, states[k], n, states)
		}
	}
}

// TestFanOutRunsInMemory runs the benchmark's runs against memstore: the service's fan-out passes
// CheckFanOut, every run made the same calls, and a run record is checked.
func TestFanOutRunsInMemory(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	eligible, err := seedFanOut(ctx, st, 250)
	if err != nil {
		t.Fatal(err)
	}
	if len(eligible) != 235 {
		t.Fatalf("%d eligible of 250, want 235", len(eligible))
	}
	res := FanOutResult{Environments: 250}
	if err := timeRuns(ctx, st.Stores(), &TableCounter{}, eligible, 2, zerolog.Nop(), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Walls) != 2 || len(res.Waits) != 2 || res.Publish.Messages != 235 || res.Publish.Calls != 1 || res.Publish.Batches != 1 {
		t.Errorf("result %+v: want 2 timed runs, 235 messages in 1 Publish call and 1 batch", res)
	}
	// Another check of the same eligible set fails for a run that sent one message too few.
	pub := &CountingPublisher{Entity: backup.QueueAutomatic}
	plan, err := defaultPlan()
	if err != nil {
		t.Fatal(err)
	}
	svc := backup.NewService(backup.Deps{Stores: st.Stores(), Publisher: pub, Plan: plan})
	now := time.Date(2030, 1, 2, 1, 0, 0, 0, time.UTC)
	if err := svc.RunSchedule(ctx, FanOutTrigger, now, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	_, msgs, _ := pub.Take()
	if err := CheckFanOut(msgs, eligible, "2030-01-02", now, plan.Spread); err != nil {
		t.Fatalf("the service's own run fails the check: %v", err)
	}
	if err := CheckFanOut(msgs[1:], eligible, "2030-01-02", now, plan.Spread); err == nil {
		t.Error("a run that missed an environment passes the check")
	}
	if err := checkRunRecord(ctx, st, "2030-01-02", len(eligible)); err != nil {
		t.Error(err)
	}
	if err := checkRunRecord(ctx, st, "2030-01-02", len(eligible)+1); err == nil {
		t.Error("a run record with a wrong count passes the check")
	}
}

// TestCheckFanOut: each way a run can go wrong is caught.
func TestCheckFanOut(t *testing.T) {
	start := time.Date(2030, 1, 2, 1, 0, 0, 0, time.UTC)
	spread := 2 * time.Hour
	msg := func(ns, env, day string, attempt int, at time.Time) backup.Message {
		recheck := attempt < 0 // -1: the first try, resent by recovery
		body, _ := json.Marshal(fanOutMessage{Namespace: ns, EnvironmentID: env, Day: day, Attempt: max(attempt, 0), At: at,
			RunStartedAt: start, Recheck: recheck})
		return backup.Message{ID: env + "/" + day, Body: body, ScheduledAt: at}
	}
	eligible := map[string]bool{"a|e1": true, "a|e2": true, "b|e3": true}
	good := func() []backup.Message {
		return []backup.Message{msg("a", "e1", "2030-01-02", 0, start), msg("a", "e2", "2030-01-02", 0, start.Add(time.Hour)),
			msg("b", "e3", "2030-01-02", 0, start.Add(spread-time.Second))}
	}
	if err := CheckFanOut(good(), eligible, "2030-01-02", start, spread); err != nil {
		t.Fatalf("a good run: %v", err)
	}
	tests := []struct {
		name   string
		change func([]backup.Message) []backup.Message
		want   string
	}{
		{"one missing", func(m []backup.Message) []backup.Message { return m[:2] }, "2 messages sent for 3"},
		{"a MessageId twice", func(m []backup.Message) []backup.Message { m[1].ID = m[0].ID; return m }, "sent twice"},
		{"an ineligible environment", func(m []backup.Message) []backup.Message {
			m[2] = msg("b", "e4", "2030-01-02", 0, start)
			return m
		}, "not an eligible environment"},
		{"an environment twice", func(m []backup.Message) []backup.Message {
			m[2] = msg("a", "e1", "2030-01-02", 0, start)
			m[2].ID = "other"
			return m
		}, "got two messages"},
		{"another day", func(m []backup.Message) []backup.Message { m[0] = msg("a", "e1", "2030-01-03", 0, start); return m }, "day 2030-01-03"},
		{"a retry", func(m []backup.Message) []backup.Message { m[0] = msg("a", "e1", "2030-01-02", 1, start); return m }, "try 1"},
		{"a recheck", func(m []backup.Message) []backup.Message { m[0] = msg("a", "e1", "2030-01-02", -1, start); return m }, "try 0 (recheck true)"},
		{"after the spread", func(m []backup.Message) []backup.Message {
			m[0] = msg("a", "e1", "2030-01-02", 0, start.Add(spread))
			return m
		}, "not within the spread"},
		{"scheduled apart from its body", func(m []backup.Message) []backup.Message { m[0].ScheduledAt = start.Add(time.Minute); return m },
			"not within the spread"},
		{"not JSON", func(m []backup.Message) []backup.Message { m[0].Body = []byte("{"); return m }, "not JSON"},
	}
	for _, tt := range tests {
		err := CheckFanOut(tt.change(good()), eligible, "2030-01-02", start, spread)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

func fanOutRun(n, eligible int, walls []time.Duration, tableCalls, publishCalls int) FanOutResult {
	return FanOutResult{Environments: n, Namespaces: n / 100, Eligible: eligible, Seed: time.Second, Walls: walls,
		Waits: walls[:1], Table: TableCalls{"Environments": {"query": tableCalls}},
		Publish: PublishStats{Calls: publishCalls, Messages: eligible, Bytes: int64(eligible) * 390, Batches: publishCalls}}
}

// TestRenderFanOut: the rows of both sizes (medians), the ratios of the largest to the smallest with
// the linear target, and the slowest large run against Consumption's 10 minutes.
func TestRenderFanOut(t *testing.T) {
	ms := func(x int) time.Duration { return time.Duration(x) * time.Millisecond }
	r := Report{FanOut: FanOutReport{Runs: []FanOutResult{
		fanOutRun(1000, 960, []time.Duration{ms(70), ms(60), ms(90)}, 10, 2),
		fanOutRun(10000, 9600, []time.Duration{ms(800), ms(700), ms(1000)}, 55, 20),
	}}}
	var buf bytes.Buffer
	r.Render(&buf)
	out := buf.String()
	for _, want := range []struct{ prefix, contains string }{
		{"1,000 environments (10 namespaces, 960 eligible)", "0.070 s"},
		{"10,000 environments (100 namespaces, 9,600 eligible)", "0.800 s"},
		{"10,000 environments (100 namespaces, 9,600 eligible)", "55 (0.0055)"},
		{"10,000 vs 1,000 environments: time", "11.43    <= 12.0   met"},
		{"10,000 vs 1,000 environments: Table calls", "5.50     <= 12.0   met"},
		{"10,000 vs 1,000 environments: Publish calls", "10.00    <= 12.0   met"},
		{"10,000 environments, slowest run, vs Consumption's limit", "1.000 s of 10 min"},
		{"10,000 environments: seeded", "Environments 55 query"},
	} {
		if l := line(t, out, want.prefix, 0); !strings.Contains(l, want.contains) {
			t.Errorf("line %q lacks %q", l, want.contains)
		}
	}

	// Slower than linear by more than the target, and over Consumption's limit.
	r.FanOut.Runs[1].Walls = []time.Duration{ms(900), 11 * time.Minute}
	buf.Reset()
	r.RenderFanOut(&buf)
	out = buf.String()
	if !strings.HasPrefix(out, "Fan-out benchmark, ") {
		t.Errorf("RenderFanOut starts with %q", strings.SplitN(out, "\n", 2)[0])
	}
	if l := line(t, out, "10,000 vs 1,000 environments: time", 0); !strings.Contains(l, "NOT MET") {
		t.Errorf("a time ratio of about 4,700 is met: %q", l)
	}
	if l := line(t, out, "10,000 environments, slowest run", 0); !strings.Contains(l, "NOT MET") {
		t.Errorf("11 minutes is within Consumption's 10: %q", l)
	}

	// Sizes other than 1:10 scale the target; one size has no ratios; none has no section.
	r.FanOut.Runs = []FanOutResult{fanOutRun(1000, 960, []time.Duration{ms(100)}, 10, 2), fanOutRun(2000, 1920, []time.Duration{ms(250)}, 12, 4)}
	buf.Reset()
	r.Render(&buf)
	if l := line(t, buf.String(), "2,000 vs 1,000 environments: time", 0); !strings.Contains(l, "2.50     <= 2.4    NOT MET") {
		t.Errorf("twice the environments: %q", l)
	}
	r.FanOut.Runs = r.FanOut.Runs[:1]
	buf.Reset()
	r.Render(&buf)
	if strings.Contains(buf.String(), "vs 1,000 environments") {
		t.Errorf("one size has ratios:\n%s", buf.String())
	}
	r.FanOut.Runs = nil
	buf.Reset()
	r.Render(&buf)
	if strings.Contains(buf.String(), "fan-out") {
		t.Errorf("no fan-out, yet:\n%s", buf.String())
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567", -1000: "-1,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}
