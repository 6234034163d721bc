// Package bus owns sending messages: to Azure Service Bus with azservicebus (MessageId, SessionId,
// scheduled enqueue time, batches), or to the project's local Functions host broker. Both implement
// backup.Publisher. Receiving is not here: the Functions host receives and calls the handler.
package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/mxazure/backups/internal/backup"
)

// The SDK's retry policy, set explicitly, and the bound on one Publish. Publishes happen inside HTTP
// calls (starting a backup answers 202 only once its job is queued; the Azure front end gives up after
// 230 s) and at the end of jobs, so a broker that does not answer must fail the call within a minute,
// not hold it: azservicebus has no per-try timeout, so PublishTimeout bounds the whole call, retries
// included.
const (
	// MaxRetries: 4 tries in all, with pauses of about 1, 3 and 7 s (RetryDelay grown exponentially,
	// capped by MaxRetryDelay): rides out a dropped connection or a short throttling.
	MaxRetries     = 3
	RetryDelay     = time.Second
	MaxRetryDelay  = 10 * time.Second
	PublishTimeout = time.Minute
)

// Options tune a ServiceBus publisher. The zero value is the service's configuration (the constants
// above); tests shorten it.
type Options struct {
	// Retry replaces the SDK's retry policy; zero fields take MaxRetries, RetryDelay and MaxRetryDelay.
	Retry azservicebus.RetryOptions
	// PublishTimeout bounds one Publish, retries included; default PublishTimeout.
	PublishTimeout time.Duration
}

func options(opts []Options) Options {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Retry.MaxRetries == 0 {
		o.Retry.MaxRetries = MaxRetries
	}
	if o.Retry.RetryDelay == 0 {
		o.Retry.RetryDelay = RetryDelay
	}
	if o.Retry.MaxRetryDelay == 0 {
		o.Retry.MaxRetryDelay = MaxRetryDelay
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = PublishTimeout
	}
	return o
}

// ServiceBus publishes with azservicebus. The SDK retries transient failures itself (Options.Retry);
// this type adds no retry loop of its own.
type ServiceBus struct {
	client  *azservicebus.Client
	timeout time.Duration // of one Publish

	mu      sync.Mutex
	senders map[string]*azservicebus.Sender
}

var _ backup.Publisher = (*ServiceBus)(nil)

// NewServiceBusFromConnectionString connects with a connection string (shared access key). At most one
// Options.
func NewServiceBusFromConnectionString(connectionString string, opts ...Options) (*ServiceBus, error) {
	o := options(opts)
	c, err := azservicebus.NewClientFromConnectionString(connectionString, &azservicebus.ClientOptions{RetryOptions: o.Retry})
	if err != nil {
		return nil, fmt.Errorf("service bus client: %w", err)
	}
	return &ServiceBus{client: c, timeout: o.PublishTimeout, senders: map[string]*azservicebus.Sender{}}, nil
}

// NewServiceBus connects to namespace (e.g. "mybus.servicebus.windows.net") with an Entra ID credential
// (the function app's managed identity in Azure). At most one Options.
func NewServiceBus(namespace string, cred azcore.TokenCredential, opts ...Options) (*ServiceBus, error) {
	o := options(opts)
	c, err := azservicebus.NewClient(namespace, cred, &azservicebus.ClientOptions{RetryOptions: o.Retry})
	if err != nil {
		return nil, fmt.Errorf("service bus client for %s: %w", namespace, err)
	}
	return &ServiceBus{client: c, timeout: o.PublishTimeout, senders: map[string]*azservicebus.Sender{}}, nil
}

func (s *ServiceBus) sender(entity string) (*azservicebus.Sender, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snd, ok := s.senders[entity]; ok {
		return snd, nil
	}
	snd, err := s.client.NewSender(entity, nil)
	if err != nil {
		return nil, fmt.Errorf("sender for %s: %w", entity, err)
	}
	s.senders[entity] = snd
	return snd, nil
}

// Publish sends msgs in as few batches as fit, within the publish timeout. Scheduled messages are sent
// in the same batches: the ScheduledEnqueueTime property makes the broker hold them.
func (s *ServiceBus) Publish(ctx context.Context, entity string, msgs ...backup.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	snd, err := s.sender(entity)
	if err != nil {
		return err
	}
	batch, err := snd.NewMessageBatch(ctx, nil)
	if err != nil {
		return fmt.Errorf("new batch for %s: %w", entity, err)
	}
	sent := 0
	for i := range msgs {
		m := toSDK(msgs[i])
		err := batch.AddMessage(m, nil)
		if errors.Is(err, azservicebus.ErrMessageTooLarge) && batch.NumMessages() > 0 {
			if err := snd.SendMessageBatch(ctx, batch, nil); err != nil {
				return fmt.Errorf("send batch to %s after %d of %d messages: %w", entity, sent, len(msgs), err)
			}
			sent += int(batch.NumMessages())
			if batch, err = snd.NewMessageBatch(ctx, nil); err != nil {
				return fmt.Errorf("new batch for %s: %w", entity, err)
			}
			err = batch.AddMessage(m, nil)
		}
		if err != nil {
			return fmt.Errorf("add message %s to batch for %s: %w", msgs[i].ID, entity, err)
		}
	}
	if batch.NumMessages() > 0 {
		if err := snd.SendMessageBatch(ctx, batch, nil); err != nil {
			return fmt.Errorf("send batch to %s after %d of %d messages: %w", entity, sent, len(msgs), err)
		}
	}
	return nil
}

func toSDK(m backup.Message) *azservicebus.Message {
	out := &azservicebus.Message{
		Body:                  m.Body,
		ApplicationProperties: m.Properties,
	}
	if m.ID != "" {
		out.MessageID = to.Ptr(m.ID)
	}
	if m.SessionID != "" {
		out.SessionID = to.Ptr(m.SessionID)
	}
	ct := m.ContentType
	if ct == "" {
		ct = "application/json"
	}
	out.ContentType = to.Ptr(ct)
	if !m.ScheduledAt.IsZero() {
		out.ScheduledEnqueueTime = to.Ptr(m.ScheduledAt.UTC())
	}
	return out
}

// Ping peeks the environment-events queue, which needs a working connection, the entity to exist and
// the Receiver role on it. The SDK opens AMQP links lazily, so a peek is the reliable reachability check.
func (s *ServiceBus) Ping(ctx context.Context) error {
	r, err := s.client.NewReceiverForQueue(backup.QueueEnvironmentEvents, &azservicebus.ReceiverOptions{ReceiveMode: azservicebus.ReceiveModePeekLock})
	if err != nil {
		return fmt.Errorf("service bus receiver: %w", err)
	}
	defer r.Close(ctx)
	if _, err := r.PeekMessages(ctx, 1, nil); err != nil {
		return fmt.Errorf("service bus peek %s: %w", backup.QueueEnvironmentEvents, err)
	}
	return nil
}

// Close closes every sender and the client.
func (s *ServiceBus) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name, snd := range s.senders {
		if err := snd.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close sender %s: %w", name, err))
		}
	}
	s.senders = map[string]*azservicebus.Sender{}
	if err := s.client.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("close service bus client: %w", err))
	}
	return errors.Join(errs...)
}
