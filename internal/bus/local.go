package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// Local publishes to the broker inside the project's local Functions host (internal/dev/funchost), which
// delivers to serviceBusTrigger functions with Service Bus semantics. Its wire format is
// `POST {base}/admin/servicebus/{entity}/messages` with a JSON array of LocalMessage.
type Local struct {
	base   string
	client *http.Client
}

var _ backup.Publisher = (*Local)(nil)

// LocalMessage is the local broker's wire form of a message.
type LocalMessage struct {
	Body                  string         `json:"body"`
	MessageID             string         `json:"message_id,omitempty"`
	SessionID             string         `json:"session_id,omitempty"`
	ContentType           string         `json:"content_type,omitempty"`
	ScheduledEnqueueTime  *time.Time     `json:"scheduled_enqueue_time,omitempty"`
	ApplicationProperties map[string]any `json:"application_properties,omitempty"`
}

// NewLocal publishes to the local host at baseURL (e.g. http://127.0.0.1:7071).
func NewLocal(baseURL string) *Local {
	return &Local{base: strings.TrimRight(baseURL, "/"), client: &http.Client{Timeout: 30 * time.Second}}
}

// Publish sends msgs in one request: the local broker accepts them all or none.
func (l *Local) Publish(ctx context.Context, entity string, msgs ...backup.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	wire := make([]LocalMessage, len(msgs))
	for i, m := range msgs {
		wire[i] = LocalMessage{
			Body: string(m.Body), MessageID: m.ID, SessionID: m.SessionID,
			ContentType: m.ContentType, ApplicationProperties: m.Properties,
		}
		if wire[i].ContentType == "" {
			wire[i].ContentType = "application/json"
		}
		if !m.ScheduledAt.IsZero() {
			at := m.ScheduledAt.UTC()
			wire[i].ScheduledEnqueueTime = &at
		}
	}
	body, err := json.Marshal(wire)
	if err != nil {
		return fmt.Errorf("encode messages for %s: %w", entity, err)
	}
	u := l.base + "/admin/servicebus/" + url.PathEscape(entity) + "/messages"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("publish to %s: %w", entity, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return backup.Wrap(backup.CodeTransient, err, "publish to %s", entity)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		detail, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return backup.Errorf(backup.CodeTransient, "publish to %s: local host answered %d: %s", entity, resp.StatusCode, bytes.TrimSpace(detail))
	}
	return nil
}

// Ping checks that the local host answers.
func (l *Local) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.base+"/admin/host/status", nil)
	if err != nil {
		return fmt.Errorf("ping local host: %w", err)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return fmt.Errorf("ping local host: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping local host: status %d", resp.StatusCode)
	}
	return nil
}

// Close releases idle connections.
func (l *Local) Close(context.Context) error {
	l.client.CloseIdleConnections()
	return nil
}
