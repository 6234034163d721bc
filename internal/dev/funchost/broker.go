package funchost

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// Broker limits and defaults.
const (
	DefaultMaxDeliveryCount         = 10
	DefaultDuplicateDetectionWindow = 10 * time.Minute
	maxPublished                    = 10000
	// DeadLetterMaxDelivery is the dead-letter reason Service Bus gives after maxDeliveryCount deliveries.
	DeadLetterMaxDelivery = "MaxDeliveryCountExceeded"
)

// PublishMessage is one message of POST /admin/servicebus/{entity}/messages (the handler's local
// publisher sends these; the contract is fixed).
type PublishMessage struct {
	Body                  string         `json:"body"`
	MessageID             string         `json:"message_id,omitempty"`
	SessionID             string         `json:"session_id,omitempty"`
	ContentType           string         `json:"content_type,omitempty"`
	ScheduledEnqueueTime  string         `json:"scheduled_enqueue_time,omitempty"`
	ApplicationProperties map[string]any `json:"application_properties,omitempty"`
}

// PublishResult says how many messages were accepted and how many were dropped as duplicates.
type PublishResult struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

// MessageInfo describes one message for inspection.
type MessageInfo struct {
	Body                  string         `json:"body"`
	MessageID             string         `json:"message_id"`
	SessionID             string         `json:"session_id,omitempty"`
	ContentType           string         `json:"content_type,omitempty"`
	SequenceNumber        int64          `json:"sequence_number"`
	DeliveryCount         int            `json:"delivery_count"`
	EnqueuedTime          time.Time      `json:"enqueued_time"`
	ScheduledEnqueueTime  *time.Time     `json:"scheduled_enqueue_time,omitempty"`
	DeadLetterReason      string         `json:"dead_letter_reason,omitempty"`
	ApplicationProperties map[string]any `json:"application_properties,omitempty"`
	Locked                bool           `json:"locked,omitempty"`
	Subscription          string         `json:"subscription,omitempty"`
}

// EntityMessages is the inspection view of a queue, topic or subscription. Active holds visible and
// locked (in-flight) messages, Published every message ever accepted by the entity (the newest 10,000).
type EntityMessages struct {
	Active     []MessageInfo `json:"active"`
	Scheduled  []MessageInfo `json:"scheduled"`
	Deadletter []MessageInfo `json:"deadletter"`
	Completed  int           `json:"completed"`
	Published  []MessageInfo `json:"published"`
}

type message struct {
	seq              int64
	id               string
	body             string
	sessionID        string
	contentType      string
	props            map[string]any
	enqueued         time.Time
	scheduled        time.Time // zero when not scheduled
	deliveryCount    int
	lockToken        string
	deadLetterReason string
}

func (m *message) info(sub string) MessageInfo {
	mi := MessageInfo{Body: m.body, MessageID: m.id, SessionID: m.sessionID, ContentType: m.contentType,
		SequenceNumber: m.seq, DeliveryCount: m.deliveryCount, EnqueuedTime: m.enqueued,
		DeadLetterReason: m.deadLetterReason, ApplicationProperties: m.props, Locked: m.lockToken != "",
		Subscription: sub}
	if !m.scheduled.IsZero() {
		t := m.scheduled
		mi.ScheduledEnqueueTime = &t
	}
	return mi
}

// queue is a queue or a topic subscription: where messages wait for their consumer.
type queue struct {
	path     string // queue name or "<topic>/subscriptions/<name>"
	sub      string // subscription name, empty for a queue
	consumer *Function
	sessions bool
	limit    int // concurrent invocations: maxConcurrentCalls or maxConcurrentSessions

	active     []*message // visible and unlocked, in sequence order
	locked     map[string]*message
	scheduled  []*message
	deadletter []*message
	completed  int
	busy       map[string]bool // sessions with a locked message
	running    int             // invocations in flight, including ones whose lock was lost
	wake       chan struct{}
}

func newQueue(path, sub string) *queue {
	return &queue{path: path, sub: sub, locked: map[string]*message{}, busy: map[string]bool{},
		wake: make(chan struct{}, 1)}
}

func (q *queue) notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// insertActive puts m back in sequence order, so a redelivered message keeps its place.
func (q *queue) insertActive(m *message) {
	i := sort.Search(len(q.active), func(i int) bool { return q.active[i].seq > m.seq })
	q.active = slices.Insert(q.active, i, m)
}

// entity is what publishers address: a queue, or a topic fanning out to its subscriptions.
type entity struct {
	name      string
	queue     *queue   // set for a queue
	subs      []*queue // set for a topic
	published []*message
	seq       int64
	dedupIDs  map[string]time.Time
	dedupFIFO []dedupEntry
}

type dedupEntry struct {
	id string
	at time.Time
}

func (e *entity) targets() []*queue {
	if e.queue != nil {
		return []*queue{e.queue}
	}
	return e.subs
}

// broker is the in-memory Service Bus namespace.
type broker struct {
	clock       Clock
	window      time.Duration
	maxDelivery int
	log         zerolog.Logger

	mu        sync.Mutex
	entities  map[string]*entity // by lower-cased name
	consumers []*queue
	wakeSched chan struct{}
}

func newBroker(clock Clock, window time.Duration, maxDelivery int, log zerolog.Logger) *broker {
	return &broker{clock: clock, window: window, maxDelivery: maxDelivery, log: log,
		entities: map[string]*entity{}, wakeSched: make(chan struct{}, 1)}
}

// addConsumer declares the entity a Service Bus function consumes.
func (b *broker) addConsumer(fn *Function, hc HostConfig) error {
	tb := fn.TriggerBinding
	b.mu.Lock()
	defer b.mu.Unlock()
	var q *queue
	if tb.QueueName != "" {
		e := b.entities[strings.ToLower(tb.QueueName)]
		if e != nil {
			return fmt.Errorf("function %s: queue %s is already consumed by %s", fn.Name, tb.QueueName, e.queue.consumer.Name)
		}
		q = newQueue(tb.QueueName, "")
		b.entities[strings.ToLower(tb.QueueName)] = &entity{name: tb.QueueName, queue: q, dedupIDs: map[string]time.Time{}}
	} else {
		e := b.entities[strings.ToLower(tb.TopicName)]
		if e == nil {
			e = &entity{name: tb.TopicName, dedupIDs: map[string]time.Time{}}
			b.entities[strings.ToLower(tb.TopicName)] = e
		}
		if e.queue != nil {
			return fmt.Errorf("function %s: %s is a queue, not a topic", fn.Name, tb.TopicName)
		}
		for _, s := range e.subs {
			if strings.EqualFold(s.sub, tb.SubscriptionName) {
				return fmt.Errorf("function %s: subscription %s is already consumed by %s", fn.Name, s.path, s.consumer.Name)
			}
		}
		q = newQueue(tb.TopicName+"/subscriptions/"+tb.SubscriptionName, tb.SubscriptionName)
		e.subs = append(e.subs, q)
	}
	q.consumer, q.sessions = fn, tb.IsSessionsEnabled
	q.limit = hc.MaxConcurrentCalls
	if q.sessions {
		q.limit = hc.MaxConcurrentSessions
	}
	b.consumers = append(b.consumers, q)
	return nil
}

// publish accepts messages for an entity, creating an unknown name as a retained queue without
// consumer. A MessageId seen by the entity within the duplicate detection window is dropped.
func (b *broker) publish(name string, msgs []PublishMessage) (PublishResult, error) {
	var res PublishResult
	if strings.TrimSpace(name) == "" {
		return res, fmt.Errorf("entity name is empty")
	}
	sched := make([]time.Time, len(msgs))
	for i, pm := range msgs {
		if pm.ScheduledEnqueueTime == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, pm.ScheduledEnqueueTime)
		if err != nil {
			return res, fmt.Errorf("message %d: scheduled_enqueue_time: %w", i, err)
		}
		sched[i] = t.UTC()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entity(name)
	now := b.clock.Now()
	e.pruneDedup(now.Add(-b.window))
	var scheduled bool
	for i, pm := range msgs {
		id := pm.MessageID
		if id == "" {
			id = strings.ReplaceAll(uuid.NewString(), "-", "")
		}
		if _, dup := e.dedupIDs[id]; dup {
			res.Duplicates++
			continue
		}
		e.dedupIDs[id] = now
		e.dedupFIFO = append(e.dedupFIFO, dedupEntry{id, now})
		e.seq++
		m := &message{seq: e.seq, id: id, body: pm.Body, sessionID: pm.SessionID, contentType: pm.ContentType,
			props: pm.ApplicationProperties, enqueued: now, scheduled: sched[i]}
		e.published = append(e.published, m)
		if len(e.published) > maxPublished {
			e.published = e.published[len(e.published)-maxPublished:]
		}
		for _, q := range e.targets() {
			cp := *m
			if cp.scheduled.After(now) {
				q.scheduled = append(q.scheduled, &cp)
				scheduled = true
				continue
			}
			q.active = append(q.active, &cp)
			q.notify()
		}
		res.Accepted++
	}
	if scheduled {
		select {
		case b.wakeSched <- struct{}{}:
		default:
		}
	}
	return res, nil
}

// entity returns the entity for name, creating a retained queue; b.mu must be held.
func (b *broker) entity(name string) *entity {
	key := strings.ToLower(name)
	e := b.entities[key]
	if e == nil {
		e = &entity{name: name, queue: newQueue(name, ""), dedupIDs: map[string]time.Time{}}
		b.entities[key] = e
		b.log.Info().Str("entity", name).Msg("created retained queue on first publish")
	}
	return e
}

func (e *entity) pruneDedup(before time.Time) {
	n := 0
	for n < len(e.dedupFIFO) && !e.dedupFIFO[n].at.After(before) {
		if e.dedupIDs[e.dedupFIFO[n].id] == e.dedupFIFO[n].at {
			delete(e.dedupIDs, e.dedupFIFO[n].id)
		}
		n++
	}
	e.dedupFIFO = e.dedupFIFO[n:]
}

// releaseDue makes due scheduled messages visible and returns the earliest pending schedule.
func (b *broker) releaseDue() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	var earliest time.Time
	for _, e := range b.entities {
		for _, q := range e.targets() {
			kept := q.scheduled[:0]
			for _, m := range q.scheduled {
				if !m.scheduled.After(now) {
					q.insertActive(m)
					q.notify()
					continue
				}
				kept = append(kept, m)
				if earliest.IsZero() || m.scheduled.Before(earliest) {
					earliest = m.scheduled
				}
			}
			q.scheduled = kept
		}
	}
	return earliest
}

// runScheduler releases scheduled messages at their time until stop closes.
func (b *broker) runScheduler(stop <-chan struct{}) {
	for {
		earliest := b.releaseDue()
		var fire <-chan time.Time
		var t Timer
		if !earliest.IsZero() {
			t = b.clock.NewTimer(earliest.Sub(b.clock.Now()))
			fire = t.C()
		}
		select {
		case <-fire:
		case <-b.wakeSched:
		case <-stop:
		}
		if t != nil {
			t.Stop()
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

// inspect returns the messages of a queue, topic or "<topic>/subscriptions/<name>".
func (b *broker) inspect(name string) (EntityMessages, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := EntityMessages{Active: []MessageInfo{}, Scheduled: []MessageInfo{}, Deadletter: []MessageInfo{}, Published: []MessageInfo{}}
	topic, sub, isSub := strings.Cut(name, "/subscriptions/")
	e := b.entities[strings.ToLower(topic)]
	if e == nil {
		return out, false
	}
	qs := e.targets()
	if isSub {
		qs = nil
		for _, q := range e.subs {
			if strings.EqualFold(q.sub, sub) {
				qs = append(qs, q)
			}
		}
		if len(qs) == 0 {
			return out, false
		}
	}
	for _, m := range e.published {
		out.Published = append(out.Published, m.info(""))
	}
	for _, q := range qs {
		var act []*message
		act = append(act, q.active...)
		for _, m := range q.locked {
			act = append(act, m)
		}
		sort.Slice(act, func(i, j int) bool { return act[i].seq < act[j].seq })
		for _, m := range act {
			out.Active = append(out.Active, m.info(q.sub))
		}
		for _, m := range q.scheduled {
			out.Scheduled = append(out.Scheduled, m.info(q.sub))
		}
		for _, m := range q.deadletter {
			out.Deadletter = append(out.Deadletter, m.info(q.sub))
		}
		out.Completed += q.completed
	}
	return out, true
}

// idle reports whether every consumed queue is empty with nothing in flight and nothing scheduled
// within soon.
func (b *broker) idle(soon time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	horizon := b.clock.Now().Add(soon)
	for _, q := range b.consumers {
		if len(q.active) > 0 || len(q.locked) > 0 || q.running > 0 {
			return false
		}
		for _, m := range q.scheduled {
			if !m.scheduled.After(horizon) {
				return false
			}
		}
	}
	return true
}
