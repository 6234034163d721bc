package funchost

import (
	"context"

	"github.com/google/uuid"
)

// dispatch delivers the messages of a consumed queue to its function until stop closes: peek-lock,
// complete on success, abandon (redeliver at once, DeliveryCount+1) on failure, dead-letter after
// maxDeliveryCount deliveries. With sessions, one message per session at a time, in order.
func (b *broker) dispatch(ctx context.Context, q *queue, inv *invoker, lockFor func() Timer, stop <-chan struct{}) {
	for {
		select {
		case <-q.wake:
		case <-stop:
			return
		}
		for {
			m := b.take(q)
			if m == nil {
				break
			}
			end := inv.begin() // counted from the moment it is locked, through settlement
			go func() {
				defer end()
				b.deliver(ctx, q, m, inv, lockFor())
			}()
		}
	}
}

// take locks the next deliverable message and returns a snapshot of it, or nil.
func (b *broker) take(q *queue) *message {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q.running >= q.limit {
		return nil
	}
	for i, m := range q.active {
		if q.sessions && q.busy[m.sessionID] {
			continue
		}
		q.active = append(q.active[:i], q.active[i+1:]...)
		m.deliveryCount++
		m.lockToken = uuid.NewString()
		q.locked[m.lockToken] = m
		if q.sessions {
			q.busy[m.sessionID] = true
		}
		q.running++
		snap := *m
		return &snap
	}
	return nil
}

// deliver runs one delivery and settles the message. lock fires when the lock renewal limit passes.
func (b *broker) deliver(ctx context.Context, q *queue, m *message, inv *invoker, lock Timer) {
	call := envelopeCall{fn: q.consumer, id: newInvocationID(), trigger: "serviceBusTrigger",
		deliveryCount: m.deliveryCount, payload: serviceBusEnvelope(q.consumer, m, q.path, b.clock.Now())}
	done := make(chan struct{})
	go func() {
		select {
		case <-lock.C():
			b.loseLock(q, m.lockToken)
		case <-done:
		}
	}()
	err := inv.invokeEnvelope(ctx, call)
	close(done)
	lock.Stop()
	b.settle(q, m.lockToken, err)
}

// settle completes or abandons a delivered message, unless its lock was lost meanwhile.
func (b *broker) settle(q *queue, token string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer q.notify()
	q.running--
	m, ok := q.locked[token]
	if !ok {
		b.log.Warn().Str("entity", q.path).Msg("reply of an invocation whose message lock was lost is ignored")
		return
	}
	b.unlock(q, m)
	if err == nil {
		q.completed++
		return
	}
	b.abandon(q, m)
}

// loseLock emulates the lock expiring after maxAutoLockRenewalDuration: the message becomes visible
// again while the first invocation still runs.
func (b *broker) loseLock(q *queue, token string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m, ok := q.locked[token]
	if !ok {
		return
	}
	b.log.Warn().Str("entity", q.path).Str("message_id", m.id).Int("delivery_count", m.deliveryCount).
		Msg("message lock lost after maxAutoLockRenewalDuration; message will be redelivered while the invocation still runs")
	b.unlock(q, m)
	b.abandon(q, m)
	q.notify()
}

func (b *broker) unlock(q *queue, m *message) {
	delete(q.locked, m.lockToken)
	m.lockToken = ""
	if q.sessions {
		delete(q.busy, m.sessionID)
	}
}

// abandon makes m visible again, or dead-letters it after maxDeliveryCount deliveries; b.mu held.
func (b *broker) abandon(q *queue, m *message) {
	if m.deliveryCount >= b.maxDelivery {
		m.deadLetterReason = DeadLetterMaxDelivery
		q.deadletter = append(q.deadletter, m)
		b.log.Warn().Str("entity", q.path).Str("message_id", m.id).Int("delivery_count", m.deliveryCount).
			Msg("message dead-lettered")
		return
	}
	q.insertActive(m)
}
