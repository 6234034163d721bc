package funchost

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestBroker(t *testing.T, clock Clock, consumers ...*Function) *broker {
	t.Helper()
	b := newBroker(clock, 10*time.Minute, 3, noLog())
	for _, fn := range consumers {
		if err := b.addConsumer(fn, HostConfig{MaxConcurrentCalls: 2, MaxConcurrentSessions: 2}); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func sbFunction(name, queue string, sessions bool) *Function {
	return &Function{Name: name, Trigger: TriggerServiceBus,
		TriggerBinding: Binding{Name: "msg", QueueName: queue, IsSessionsEnabled: sessions}}
}

func subFunction(name, topic, sub string) *Function {
	return &Function{Name: name, Trigger: TriggerServiceBus,
		TriggerBinding: Binding{Name: "msg", TopicName: topic, SubscriptionName: sub}}
}

func mustPublish(t *testing.T, b *broker, entity string, msgs ...PublishMessage) PublishResult {
	t.Helper()
	res, err := b.publish(entity, msgs)
	if err != nil {
		t.Fatalf("publish(%s): %v", entity, err)
	}
	return res
}

func TestBrokerDuplicateDetection(t *testing.T) {
	clock := newFakeClock(t0)
	b := newTestBroker(t, clock)
	res := mustPublish(t, b, "events", PublishMessage{Body: "1", MessageID: "a"}, PublishMessage{Body: "2", MessageID: "a"},
		PublishMessage{Body: "3", MessageID: "b"})
	if res != (PublishResult{Accepted: 2, Duplicates: 1}) {
		t.Fatalf("first publish: got %+v, want 2 accepted 1 duplicate", res)
	}
	clock.set(t0.Add(9 * time.Minute))
	if res := mustPublish(t, b, "EVENTS", PublishMessage{Body: "4", MessageID: "a"}); res != (PublishResult{Duplicates: 1}) {
		t.Fatalf("inside the window (entity names are case-insensitive): got %+v, want 1 duplicate", res)
	}
	if res := mustPublish(t, b, "other", PublishMessage{Body: "5", MessageID: "a"}); res != (PublishResult{Accepted: 1}) {
		t.Fatalf("another entity: got %+v, want accepted (detection is per entity)", res)
	}
	clock.set(t0.Add(10*time.Minute + time.Second))
	if res := mustPublish(t, b, "events", PublishMessage{Body: "6", MessageID: "a"}); res != (PublishResult{Accepted: 1}) {
		t.Fatalf("after the window: got %+v, want accepted", res)
	}
	em, _ := b.inspect("events")
	var bodies []string
	for _, m := range em.Published {
		bodies = append(bodies, m.Body)
	}
	if got, want := strings.Join(bodies, ","), "1,3,6"; got != want {
		t.Fatalf("published bodies: got %s, want %s", got, want)
	}
	if len(em.Active) != 3 {
		t.Fatalf("retained queue active: got %d, want 3", len(em.Active))
	}
}

func TestBrokerGeneratesMessageID(t *testing.T) {
	b := newTestBroker(t, newFakeClock(t0))
	if res := mustPublish(t, b, "q", PublishMessage{Body: "x"}, PublishMessage{Body: "x"}); res.Accepted != 2 {
		t.Fatalf("messages without id: got %+v, want both accepted", res)
	}
	em, _ := b.inspect("q")
	if em.Published[0].MessageID == "" || em.Published[0].MessageID == em.Published[1].MessageID {
		t.Fatalf("generated ids: got %q and %q, want distinct non-empty", em.Published[0].MessageID, em.Published[1].MessageID)
	}
}

func TestBrokerRejectsBadScheduleAtomically(t *testing.T) {
	b := newTestBroker(t, newFakeClock(t0))
	_, err := b.publish("q", []PublishMessage{{Body: "ok"}, {Body: "bad", ScheduledEnqueueTime: "tomorrow"}})
	if err == nil || !strings.Contains(err.Error(), "scheduled_enqueue_time") {
		t.Fatalf("publish: got %v, want a scheduled_enqueue_time error", err)
	}
	if _, ok := b.inspect("q"); ok {
		t.Fatalf("inspect after a rejected publish: got an entity, want none (nothing accepted)")
	}
}

func TestBrokerScheduledMessages(t *testing.T) {
	clock := newFakeClock(t0)
	b := newTestBroker(t, clock, sbFunction("Work", "work", false))
	mustPublish(t, b, "work",
		PublishMessage{Body: "later", ScheduledEnqueueTime: t0.Add(time.Hour).Format(time.RFC3339)},
		PublishMessage{Body: "past", ScheduledEnqueueTime: t0.Add(-time.Hour).Format(time.RFC3339)},
		PublishMessage{Body: "now"})
	em, _ := b.inspect("work")
	if len(em.Scheduled) != 1 || em.Scheduled[0].Body != "later" || len(em.Active) != 2 {
		t.Fatalf("before: got active %d scheduled %+v, want 2 active and 'later' scheduled", len(em.Active), em.Scheduled)
	}
	if b.idle(time.Second) {
		t.Fatalf("idle with active messages: got true")
	}
	q := b.consumers[0]
	q.active = nil // consumed elsewhere; only the schedule matters below
	if !b.idle(time.Second) {
		t.Fatalf("idle with a message scheduled an hour ahead: got false, want true")
	}
	if next := b.releaseDue(); !next.Equal(t0.Add(time.Hour)) {
		t.Fatalf("releaseDue before time: got next %s, want %s", next, t0.Add(time.Hour))
	}
	clock.set(t0.Add(time.Hour))
	if next := b.releaseDue(); !next.IsZero() {
		t.Fatalf("releaseDue at time: got next %s, want none", next)
	}
	em, _ = b.inspect("work")
	if len(em.Scheduled) != 0 || len(em.Active) != 1 || em.Active[0].Body != "later" {
		t.Fatalf("after: got active %+v scheduled %d, want 'later' active", em.Active, len(em.Scheduled))
	}
}

func TestBrokerTopicFanOut(t *testing.T) {
	b := newTestBroker(t, newFakeClock(t0), subFunction("A", "backup-events", "a"), subFunction("B", "backup-events", "b"))
	mustPublish(t, b, "backup-events", PublishMessage{Body: "e1", MessageID: "1"}, PublishMessage{Body: "e2", MessageID: "2"})
	for _, sub := range []string{"a", "b"} {
		em, ok := b.inspect("backup-events/subscriptions/" + sub)
		if !ok || len(em.Active) != 2 || em.Active[0].Body != "e1" || em.Active[0].Subscription != sub {
			t.Fatalf("subscription %s: got %+v, want both messages", sub, em.Active)
		}
	}
	em, ok := b.inspect("backup-events")
	if !ok || len(em.Published) != 2 || len(em.Active) != 4 {
		t.Fatalf("topic: got published %d active %d, want 2 and 4", len(em.Published), len(em.Active))
	}
	if _, ok := b.inspect("backup-events/subscriptions/nope"); ok {
		t.Fatalf("unknown subscription: got found")
	}
}

func TestBrokerPublishedCap(t *testing.T) {
	b := newTestBroker(t, newFakeClock(t0))
	msgs := make([]PublishMessage, maxPublished+5)
	for i := range msgs {
		msgs[i] = PublishMessage{Body: fmt.Sprint(i)}
	}
	mustPublish(t, b, "big", msgs...)
	em, _ := b.inspect("big")
	if len(em.Published) != maxPublished || em.Published[0].Body != "5" {
		t.Fatalf("published: got %d starting at %q, want %d starting at 5", len(em.Published), em.Published[0].Body, maxPublished)
	}
}

func TestBrokerConsumerConflicts(t *testing.T) {
	b := newTestBroker(t, newFakeClock(t0), sbFunction("A", "q", false), subFunction("S", "t", "s"))
	tests := []struct {
		name string
		fn   *Function
	}{
		{"same queue", sbFunction("B", "Q", false)},
		{"queue used as topic", subFunction("C", "q", "s")},
		{"same subscription", subFunction("D", "t", "S")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := b.addConsumer(tc.fn, HostConfig{}); err == nil {
				t.Fatalf("addConsumer: got nil error, want a conflict")
			}
		})
	}
}

// takeAll locks every message take allows right now.
func takeAll(b *broker, q *queue) []*message {
	var out []*message
	for m := b.take(q); m != nil; m = b.take(q) {
		out = append(out, m)
	}
	return out
}

func bodiesOf(ms []*message) string {
	var s []string
	for _, m := range ms {
		s = append(s, fmt.Sprintf("%s#%d", m.body, m.deliveryCount))
	}
	return strings.Join(s, ",")
}

var errFail = errors.New("handler answered 500")

func TestBrokerPeekLockRedeliveryAndDeadLetter(t *testing.T) {
	b := newTestBroker(t, newFakeClock(t0), sbFunction("Work", "work", false))
	q := b.consumers[0]
	mustPublish(t, b, "work", PublishMessage{Body: "m1"}, PublishMessage{Body: "m2"}, PublishMessage{Body: "m3"})
	got := takeAll(b, q)
	if bodiesOf(got) != "m1#1,m2#1" {
		t.Fatalf("first take with maxConcurrentCalls 2: got %s, want m1#1,m2#1", bodiesOf(got))
	}
	b.settle(q, got[0].lockToken, errFail) // m1 abandoned: back at the head
	b.settle(q, got[1].lockToken, nil)     // m2 completed
	got = takeAll(b, q)
	if bodiesOf(got) != "m1#2,m3#1" {
		t.Fatalf("after abandon: got %s, want m1#2,m3#1 (redelivered message keeps its place)", bodiesOf(got))
	}
	b.settle(q, got[1].lockToken, nil)
	b.settle(q, got[0].lockToken, errFail)
	m := b.take(q)
	if m == nil || m.body != "m1" || m.deliveryCount != 3 {
		t.Fatalf("third delivery: got %+v, want m1#3", m)
	}
	b.settle(q, m.lockToken, errFail)
	em, _ := b.inspect("work")
	if len(em.Active) != 0 || em.Completed != 2 || len(em.Deadletter) != 1 {
		t.Fatalf("after max deliveries: got active %d completed %d deadletter %d, want 0 2 1", len(em.Active), em.Completed, len(em.Deadletter))
	}
	if dl := em.Deadletter[0]; dl.Body != "m1" || dl.DeliveryCount != 3 || dl.DeadLetterReason != DeadLetterMaxDelivery {
		t.Fatalf("dead letter: got %+v, want m1 after 3 deliveries with reason %s", dl, DeadLetterMaxDelivery)
	}
	if !b.idle(time.Second) {
		t.Fatalf("idle: got false, want true")
	}
}

func TestBrokerSessions(t *testing.T) {
	b := newTestBroker(t, newFakeClock(t0), sbFunction("Jobs", "jobs", true))
	q := b.consumers[0]
	mustPublish(t, b, "jobs",
		PublishMessage{Body: "a1", SessionID: "a"}, PublishMessage{Body: "a2", SessionID: "a"},
		PublishMessage{Body: "b1", SessionID: "b"}, PublishMessage{Body: "c1", SessionID: "c"},
		PublishMessage{Body: "b2", SessionID: "b"})
	got := takeAll(b, q)
	if bodiesOf(got) != "a1#1,b1#1" {
		t.Fatalf("first take (2 sessions at a time): got %s, want a1#1,b1#1", bodiesOf(got))
	}
	b.settle(q, got[0].lockToken, errFail) // a1 fails: session a must retry a1 before a2
	got2 := takeAll(b, q)
	if bodiesOf(got2) != "a1#2" {
		t.Fatalf("after a1 failed: got %s, want a1#2", bodiesOf(got2))
	}
	b.settle(q, got[1].lockToken, nil) // b1 done
	got3 := takeAll(b, q)
	if bodiesOf(got3) != "c1#1" {
		t.Fatalf("after b1 done: got %s, want c1#1 (b2 waits: two sessions busy)", bodiesOf(got3))
	}
	b.settle(q, got2[0].lockToken, nil)
	if got := bodiesOf(takeAll(b, q)); got != "a2#1" {
		t.Fatalf("after a1 done: got %s, want a2#1", got)
	}
}

func TestBrokerLockLost(t *testing.T) {
	b := newTestBroker(t, newFakeClock(t0), sbFunction("Work", "work", false))
	q := b.consumers[0]
	mustPublish(t, b, "work", PublishMessage{Body: "slow"})
	first := b.take(q)
	b.loseLock(q, first.lockToken)
	second := b.take(q)
	if second == nil || second.body != "slow" || second.deliveryCount != 2 {
		t.Fatalf("after the lock was lost: got %+v, want slow#2 redelivered while the first run goes on", second)
	}
	if m := b.take(q); m != nil {
		t.Fatalf("third take: got %s, want nothing (the first run still holds a slot)", m.body)
	}
	b.settle(q, second.lockToken, nil)
	b.settle(q, first.lockToken, nil) // the first run's late reply must not complete anything
	em, _ := b.inspect("work")
	if em.Completed != 1 || len(em.Active) != 0 {
		t.Fatalf("got completed %d active %d, want 1 and 0", em.Completed, len(em.Active))
	}
}
