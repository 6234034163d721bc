package bus

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/mxazure/backups/internal/backup"
)

// fakeBroker accepts TCP connections and counts them; it closes each at once, or holds it silent.
type fakeBroker struct {
	ln    net.Listener
	conns atomic.Int64
	hold  bool

	mu   sync.Mutex
	held []net.Conn
}

func newFakeBroker(t *testing.T, hold bool) *fakeBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{ln: ln, hold: hold}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.conns.Add(1)
			if !hold {
				c.Close()
				continue
			}
			b.mu.Lock()
			b.held = append(b.held, c)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range b.held {
			c.Close()
		}
	})
	return b
}

// connectionString points the SDK at the fake broker over plain AMQP (the emulator mode).
func (b *fakeBroker) connectionString() string {
	return "Endpoint=sb://" + b.ln.Addr().String() + ";SharedAccessKeyName=k;SharedAccessKey=a2V5;UseDevelopmentEmulator=true"
}

type fakeCredential struct{}

func (fakeCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "t", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

var msg = backup.Message{ID: "op-1", Body: []byte("{}")}

func TestDefaultOptions(t *testing.T) {
	o := options(nil)
	if o.Retry.MaxRetries != MaxRetries || o.Retry.RetryDelay != RetryDelay || o.Retry.MaxRetryDelay != MaxRetryDelay || o.PublishTimeout != PublishTimeout {
		t.Errorf("defaults: %+v", o)
	}
}

// TestConstructorsSetTheRetryPolicy: with MaxRetries N, a broker that drops every connection sees N+1
// of them from either constructor.
func TestConstructorsSetTheRetryPolicy(t *testing.T) {
	retry := Options{Retry: azservicebus.RetryOptions{MaxRetries: 5, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond}}
	plain := newFakeBroker(t, false)
	fromConn, err := NewServiceBusFromConnectionString(plain.connectionString(), retry)
	if err != nil {
		t.Fatal(err)
	}
	tls := newFakeBroker(t, false)
	withCred, err := NewServiceBus(tls.ln.Addr().String(), fakeCredential{}, retry)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		p      *ServiceBus
		broker *fakeBroker
	}{"NewServiceBusFromConnectionString": {fromConn, plain}, "NewServiceBus": {withCred, tls}} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := c.p.Publish(ctx, "q", msg)
		cancel()
		if err == nil {
			t.Errorf("%s: a broker that drops connections took the message", name)
		}
		if got := c.broker.conns.Load(); got != 6 {
			t.Errorf("%s: %d connections, want 6 (MaxRetries 5)", name, got)
		}
	}
}

// TestPublishTimeoutBoundsAHungBroker: a broker that accepts and never answers fails the call after
// the publish timeout.
func TestPublishTimeoutBoundsAHungBroker(t *testing.T) {
	b := newFakeBroker(t, true)
	const timeout = 300 * time.Millisecond
	p, err := NewServiceBusFromConnectionString(b.connectionString(), Options{PublishTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // without the bound: fail, do not hang
	defer cancel()
	start := time.Now()
	err = p.Publish(ctx, "q", msg)
	if took := time.Since(start); err == nil || took < timeout || took > timeout+3*time.Second {
		t.Errorf("got %v after %s, want a failure after about %s", err, took, timeout)
	}
}
