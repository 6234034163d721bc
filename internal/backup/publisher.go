package backup

import (
	"context"
	"time"
)

// Queue and topic names used by the service. They match the Service Bus entities created in infra/ and
// the serviceBusTrigger bindings in functions/.
const (
	QueueJobs              = "backup-jobs"        // operation messages: dumps, restores, upload checks
	QueueEnvironmentEvents = "environment-events" // inbound: environment and permission events
	TopicBackupEvents      = "backup-events"      // outbound: snapshot and restore outcomes
)

// Message is one Service Bus message as the service sends it.
type Message struct {
	// ID becomes the Service Bus MessageId; entities are created with duplicate detection, so a second
	// message with the same ID inside the detection window is dropped by the broker.
	ID string
	// SessionID groups messages that must be handled one at a time, in order (environment id).
	SessionID string
	// Body is the message payload, JSON for every message this service sends.
	Body []byte
	// ContentType is "application/json" unless said otherwise.
	ContentType string
	// ScheduledAt, when not zero, delays delivery until that instant.
	ScheduledAt time.Time
	// Properties become application properties (UserProperties in the Functions envelope).
	Properties map[string]any
}

// Publisher sends messages to a queue or topic. Implementations: the azservicebus adapter (Azure) and the
// local host's broker (make run, tests). Publish sends all messages or returns an error; it may split them
// into several batches, so a failure can leave a prefix sent; duplicate detection on MessageId makes a
// retry of the whole call safe.
type Publisher interface {
	Publish(ctx context.Context, entity string, msgs ...Message) error
	// Ping checks that the broker is reachable, for the health function.
	Ping(ctx context.Context) error
	Close(ctx context.Context) error
}
