package funchost

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func sbApp(t *testing.T, hostExtra string) string {
	t.Helper()
	host := `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler"},"enableForwardingHttpRequest":true}` +
		hostExtra + `}`
	return writeApp(t, appSpec{
		hostJSON: host,
		functions: map[string]string{
			"Work":   queueFn("%WORK_QUEUE%", false),
			"Jobs":   queueFn("jobs", true),
			"AuditA": subscriptionFn("backup-events", "a"),
			"AuditB": subscriptionFn("backup-events", "b"),
		},
		settings: map[string]string{"WORK_QUEUE": "work"},
	})
}

func TestServiceBusEnvelopeAsReceived(t *testing.T) {
	th := startHost(t, sbApp(t, ""), Options{})
	th.publish(t, "work", PublishMessage{Body: envelopeBody, MessageID: "abc", SessionID: "env-1",
		ContentType: "application/json", ApplicationProperties: map[string]any{"k": "v"}})
	th.waitIdle(t)
	rs := starts(th.records(t), "/Work")
	if len(rs) != 1 {
		t.Fatalf("deliveries: got %d, want 1", len(rs))
	}
	r := rs[0]
	if r.Method != "POST" || !strings.HasPrefix(strings.Join(r.Header["Content-Type"], ""), "application/json") {
		t.Errorf("request: got %s with Content-Type %v, want POST application/json", r.Method, r.Header["Content-Type"])
	}
	checkServiceBusEnvelope(t, []byte(r.Body), "Work", 1)
	// The reply's Logs are logged in the invocation's scope.
	var found bool
	for _, l := range th.logs.lines() {
		if l["source"] == "function" && l["function"] == "Work" && l["invocation"] != nil &&
			strings.Contains(fmt.Sprint(l["message"]), "handled Work") {
			found = true
		}
	}
	if !found {
		t.Errorf("reply Logs: no log line with source=function for Work")
	}
	em := th.messages(t, "work")
	if em.Completed != 1 || len(em.Active) != 0 {
		t.Errorf("queue after success: got completed %d active %d, want 1 and 0", em.Completed, len(em.Active))
	}
}

func TestServiceBusRedeliveryAndDeadLetter(t *testing.T) {
	th := startHost(t, sbApp(t, ""), Options{MaxDeliveryCount: 3})
	th.publish(t, "work",
		PublishMessage{Body: `{"key":"flaky","fail":2}`, MessageID: "flaky"},
		PublishMessage{Body: `{"key":"broken","fail":100}`, MessageID: "broken"},
		PublishMessage{Body: `{"key":"badreply","bad_reply":true,"fail":0}`, MessageID: "badreply"})
	th.waitIdle(t)
	byKey := map[string][]int{}
	for _, r := range starts(th.records(t), "/Work") {
		byKey[r.Key] = append(byKey[r.Key], r.DeliveryCount)
	}
	want := map[string]string{"flaky": "[1 2 3]", "broken": "[1 2 3]", "badreply": "[1 2 3]"}
	for k, w := range want {
		if got := fmt.Sprint(byKey[k]); got != w {
			t.Errorf("%s delivery counts: got %s, want %s", k, got, w)
		}
	}
	em := th.messages(t, "work")
	if em.Completed != 1 || len(em.Active) != 0 || len(em.Deadletter) != 2 {
		t.Fatalf("queue: got completed %d active %d deadletter %d, want 1 0 2", em.Completed, len(em.Active), len(em.Deadletter))
	}
	for _, dl := range em.Deadletter {
		if dl.DeadLetterReason != DeadLetterMaxDelivery || dl.DeliveryCount != 3 {
			t.Errorf("dead letter %s: got reason %q delivery count %d, want %s after 3", dl.MessageID, dl.DeadLetterReason, dl.DeliveryCount, DeadLetterMaxDelivery)
		}
	}
	var failed, succeeded int
	for _, inv := range th.Invocations("Work") {
		switch inv.Status {
		case StatusFailed:
			failed++
			if inv.Error == "" {
				t.Errorf("failed invocation %s: empty error", inv.ID)
			}
		case StatusSucceeded:
			succeeded++
		}
	}
	if failed != 8 || succeeded != 1 {
		t.Errorf("invocations: got %d failed %d succeeded, want 8 and 1", failed, succeeded)
	}
}

func TestServiceBusSessions(t *testing.T) {
	th := startHost(t, sbApp(t, ""), Options{})
	// Session a's first message waits at a barrier for session b's first: they must run in parallel.
	// a2 fails once and must be retried before a3.
	var msgs []PublishMessage
	add := func(session, key, extra string) {
		msgs = append(msgs, PublishMessage{SessionID: session, MessageID: key,
			Body: `{"key":"` + key + `","sleep_ms":20` + extra + `}`})
	}
	add("a", "a1", `,"barrier":"ab","parties":2`)
	add("b", "b1", `,"barrier":"ab","parties":2`)
	add("a", "a2", `,"fail":1`)
	add("b", "b2", "")
	add("a", "a3", "")
	add("b", "b3", "")
	add("a", "a4", "")
	th.publish(t, "jobs", msgs...)
	th.waitIdle(t)

	rs := th.records(t)
	seq := map[string][]string{}
	open := map[string]string{}
	for _, r := range rs {
		if r.Path != "/Jobs" {
			continue
		}
		s := r.Key[:1]
		label := fmt.Sprintf("%s#%d", r.Key, r.DeliveryCount)
		switch r.Event {
		case "start":
			if cur := open[s]; cur != "" {
				t.Fatalf("session %s: %s started while %s was running", s, label, cur)
			}
			open[s] = label
			seq[s] = append(seq[s], label)
		case "end":
			open[s] = ""
			if r.Note == "barrier timeout" {
				t.Errorf("%s: sessions a and b did not run in parallel (barrier timed out)", label)
			}
		}
	}
	if got, want := strings.Join(seq["a"], ","), "a1#1,a2#1,a2#2,a3#1,a4#1"; got != want {
		t.Errorf("session a order: got %s, want %s", got, want)
	}
	if got, want := strings.Join(seq["b"], ","), "b1#1,b2#1,b3#1"; got != want {
		t.Errorf("session b order: got %s, want %s", got, want)
	}
	if em := th.messages(t, "jobs"); em.Completed != 7 {
		t.Errorf("completed: got %d, want 7", em.Completed)
	}
}

func TestServiceBusMaxConcurrentCalls(t *testing.T) {
	th := startHost(t, sbApp(t, `,"extensions":{"serviceBus":{"maxConcurrentCalls":2}}`), Options{})
	var msgs []PublishMessage
	for i := range 6 {
		// Pairs meet at a barrier, so two run at once; a third would exceed the limit.
		msgs = append(msgs, PublishMessage{Body: fmt.Sprintf(`{"key":"m%d","barrier":"p%d","parties":2,"sleep_ms":20}`, i, i/2)})
	}
	th.publish(t, "work", msgs...)
	th.waitIdle(t)
	rs := th.records(t)
	maxSeen := 0
	for _, r := range starts(rs, "/Work") {
		maxSeen = max(maxSeen, r.Concurrent)
	}
	if maxSeen != 2 {
		t.Errorf("max concurrent invocations: got %d, want 2 (maxConcurrentCalls)", maxSeen)
	}
	for _, r := range rs {
		if r.Event == "end" && r.Note != "barrier ok" {
			t.Errorf("%s: got %q, want barrier ok", r.Key, r.Note)
		}
	}
}

func TestServiceBusScheduledMessage(t *testing.T) {
	clock := newFakeClock(t0)
	th := startHost(t, sbApp(t, ""), Options{Clock: clock})
	due := t0.Add(time.Hour)
	th.publish(t, "work", PublishMessage{Body: `{"key":"later"}`, MessageID: "later", ScheduledEnqueueTime: due.Format(time.RFC3339)})
	clock.waitTimer(t, due)
	em := th.messages(t, "work")
	if len(em.Scheduled) != 1 || em.Scheduled[0].ScheduledEnqueueTime == nil || !em.Scheduled[0].ScheduledEnqueueTime.Equal(due) {
		t.Fatalf("before due: got scheduled %+v, want the message due at %s", em.Scheduled, due)
	}
	th.waitIdle(t) // due in an hour: idle now
	if n := len(starts(th.records(t), "/Work")); n != 0 {
		t.Fatalf("deliveries before due: got %d, want 0", n)
	}
	clock.set(due)
	th.waitRecords(t, "the scheduled delivery", func(rs []record) bool { return len(starts(rs, "/Work")) == 1 })
	th.waitIdle(t)
	if em := th.messages(t, "work"); em.Completed != 1 || len(em.Scheduled) != 0 {
		t.Fatalf("after due: got completed %d scheduled %d, want 1 and 0", em.Completed, len(em.Scheduled))
	}
}

func TestServiceBusTopicFanOut(t *testing.T) {
	th := startHost(t, sbApp(t, ""), Options{})
	th.publish(t, "backup-events", PublishMessage{Body: `{"key":"e1"}`, MessageID: "e1"})
	th.publish(t, "restore-events", PublishMessage{Body: `{"key":"r1"}`, MessageID: "r1"})
	th.waitIdle(t)
	rs := th.records(t)
	for _, fn := range []string{"/AuditA", "/AuditB"} {
		if got := starts(rs, fn); len(got) != 1 || got[0].Key != "e1" {
			t.Errorf("%s deliveries: got %+v, want e1 once", fn, got)
		}
	}
	topic := th.messages(t, "backup-events")
	if len(topic.Published) != 1 || topic.Completed != 2 {
		t.Errorf("topic: got published %d completed %d, want 1 and 2", len(topic.Published), topic.Completed)
	}
	sub := th.messages(t, "backup-events/subscriptions/b")
	if sub.Completed != 1 {
		t.Errorf("subscription b: got completed %d, want 1", sub.Completed)
	}
	retained := th.messages(t, "restore-events")
	if len(retained.Active) != 1 || retained.Active[0].Body != `{"key":"r1"}` || len(retained.Published) != 1 {
		t.Errorf("retained queue: got %+v, want r1 kept without a consumer", retained)
	}
}

func TestServiceBusDuplicateDetection(t *testing.T) {
	th := startHost(t, sbApp(t, ""), Options{})
	res := th.publish(t, "work", PublishMessage{Body: `{"key":"op1"}`, MessageID: "op-1"}, PublishMessage{Body: `{"key":"op1-again"}`, MessageID: "op-1"})
	if res != (PublishResult{Accepted: 1, Duplicates: 1}) {
		t.Fatalf("publish: got %+v, want 1 accepted 1 duplicate", res)
	}
	th.waitIdle(t)
	if res := th.publish(t, "work", PublishMessage{Body: `{"key":"op1-late"}`, MessageID: "op-1"}); res.Duplicates != 1 {
		t.Fatalf("publish after completion inside the window: got %+v, want a duplicate", res)
	}
	th.waitIdle(t)
	if rs := starts(th.records(t), "/Work"); len(rs) != 1 || rs[0].Key != "op1" {
		t.Fatalf("deliveries: got %+v, want op1 once", rs)
	}
}

func TestServiceBusHandlerCrashRestarts(t *testing.T) {
	th := startHost(t, sbApp(t, ""), Options{})
	pid := th.Status().HandlerPID
	th.publish(t, "work", PublishMessage{Body: `{"key":"boom","crash":true}`, MessageID: "boom"})
	th.waitIdle(t)
	rs := starts(th.records(t), "/Work")
	if len(rs) != 2 || rs[0].DeliveryCount != 1 || rs[1].DeliveryCount != 2 {
		t.Fatalf("deliveries: got %+v, want delivery 1 (crash) then 2", rs)
	}
	if rs[0].PID != pid || rs[1].PID == pid {
		t.Fatalf("pids: got %d then %d, want the first on %d and the redelivery on a new process", rs[0].PID, rs[1].PID, pid)
	}
	st := th.Status()
	if st.Restarts != 1 || st.HandlerPID != rs[1].PID || st.State != "Running" {
		t.Fatalf("status: got %+v, want 1 restart and pid %d", st, rs[1].PID)
	}
	invs := th.Invocations("Work")
	if len(invs) != 2 || invs[0].Status != StatusFailed || invs[1].Status != StatusSucceeded || invs[1].DeliveryCount != 2 {
		t.Fatalf("invocations: got %+v, want Failed then Succeeded on delivery 2", invs)
	}
	if em := th.messages(t, "work"); em.Completed != 1 {
		t.Fatalf("completed: got %d, want 1", em.Completed)
	}
}

func TestServiceBusFunctionTimeoutRestarts(t *testing.T) {
	th := startHost(t, sbApp(t, `,"functionTimeout":"00:00:01"`), Options{})
	pid := th.Status().HandlerPID
	th.publish(t, "work", PublishMessage{Body: `{"key":"hang","sleep_ms":600000,"sleep_deliveries":1}`, MessageID: "hang"})
	th.waitIdle(t)
	rs := starts(th.records(t), "/Work")
	if len(rs) != 2 || rs[1].DeliveryCount != 2 || rs[1].PID == pid {
		t.Fatalf("deliveries: got %+v, want a redelivery on a restarted handler", rs)
	}
	if st := th.Status(); st.Restarts != 1 {
		t.Fatalf("restarts: got %d, want 1", st.Restarts)
	}
	invs := th.Invocations("Work")
	if len(invs) != 2 || invs[0].Status != StatusFailed || !strings.Contains(invs[0].Error, "timeout") {
		t.Fatalf("invocations: got %+v, want the first Failed with a timeout error", invs)
	}
}

func TestServiceBusLockLostRedelivers(t *testing.T) {
	th := startHost(t, sbApp(t, `,"extensions":{"serviceBus":{"maxAutoLockRenewalDuration":"00:00:01"}}`), Options{})
	th.publish(t, "work", PublishMessage{Body: `{"key":"long","sleep_ms":2500,"sleep_deliveries":1}`, MessageID: "long"})
	rs := th.waitRecords(t, "the redelivery while the first run works", func(rs []record) bool {
		return len(starts(rs, "/Work")) == 2
	})
	// The redelivery started while the first run was still going: no end record of delivery 1 yet.
	for _, r := range rs {
		if r.Event == "end" && r.DeliveryCount == 1 {
			t.Fatalf("delivery 1 ended before the redelivery started; want the lock lost mid-run")
		}
	}
	th.waitIdle(t)
	em := th.messages(t, "work")
	if em.Completed != 1 || len(em.Active) != 0 {
		t.Fatalf("queue: got completed %d active %d, want 1 and 0 (the first reply ignored)", em.Completed, len(em.Active))
	}
	var warned bool
	for _, l := range th.logs.lines() {
		if l["level"] == "warn" && strings.Contains(fmt.Sprint(l["message"]), "lock lost") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("logs: want a warning about the lost lock")
	}
}
