package funchost

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The real host encodes binding data values for a custom handler in a peculiar way (see
// docs/functions-host.md): strings and numbers are JSON text inside a JSON string, objects are real
// objects. These helpers reproduce the captured payloads byte for byte in shape.

// jsonText returns v marshalled, then that JSON text marshalled again as a string.
func jsonText(v any) json.RawMessage {
	inner, _ := json.Marshal(v)
	outer, _ := json.Marshal(string(inner))
	return outer
}

// rawJSON marshals v as a real JSON value.
func rawJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func sysMetadata(fn *Function, now time.Time) json.RawMessage {
	return rawJSON(map[string]string{
		"MethodName": fn.Name,
		"UtcNow":     now.UTC().Format(time.RFC3339Nano),
		"RandGuid":   uuid.NewString(),
	})
}

// scheduleStatus is the timer's schedule monitor record.
type scheduleStatus struct {
	Last        time.Time `json:"Last"`
	Next        time.Time `json:"Next"`
	LastUpdated time.Time `json:"LastUpdated"`
}

// timerEnvelope builds the payload of a timer trigger invocation.
func timerEnvelope(fn *Function, status *scheduleStatus, pastDue bool, now time.Time) []byte {
	info := map[string]any{
		"Schedule":       map[string]bool{"AdjustForDST": true},
		"ScheduleStatus": status,
		"IsPastDue":      pastDue,
	}
	env := map[string]any{
		"Data":     map[string]json.RawMessage{fn.TriggerBinding.Name: rawJSON(info)},
		"Metadata": map[string]json.RawMessage{"sys": sysMetadata(fn, now)},
	}
	return rawJSON(env)
}

// serviceBusEnvelope builds the payload of a Service Bus trigger invocation of message m.
func serviceBusEnvelope(fn *Function, m *message, entityPath string, now time.Time) []byte {
	props := m.props
	if props == nil {
		props = map[string]any{}
	}
	md := map[string]json.RawMessage{}
	// Top-level keys of a JSON object body come first so the system keys below win on a clash.
	for k, v := range bodyFields(m.body) {
		md[k] = v
	}
	md["DeliveryCount"] = jsonText(m.deliveryCount)
	md["SequenceNumber"] = jsonText(m.seq)
	md["LockToken"] = jsonText(m.lockToken)
	md["MessageId"] = jsonText(m.id)
	md["EnqueuedTimeUtc"] = jsonText(m.enqueued.UTC().Format(time.RFC3339Nano))
	if m.contentType != "" {
		md["ContentType"] = jsonText(m.contentType)
	}
	if m.sessionID != "" {
		md["SessionId"] = jsonText(m.sessionID)
	}
	md["UserProperties"] = rawJSON(props)
	md["ApplicationProperties"] = rawJSON(props)
	md["MessageReceiver"] = rawJSON(map[string]any{"EntityPath": entityPath, "FullyQualifiedNamespace": "localhost", "IsClosed": false})
	md["sys"] = sysMetadata(fn, now)
	env := map[string]any{
		"Data":     map[string]json.RawMessage{fn.TriggerBinding.Name: jsonText(m.body)},
		"Metadata": md,
	}
	return rawJSON(env)
}

// bodyFields returns the top-level members of a JSON object body encoded as binding data: objects
// and arrays as real JSON, other values as JSON text in a string, nulls dropped.
func bodyFields(body string) map[string]json.RawMessage {
	trimmed := strings.TrimSpace(body)
	if !strings.HasPrefix(trimmed, "{") {
		return nil
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal([]byte(trimmed), &obj) != nil {
		return nil
	}
	out := make(map[string]json.RawMessage, len(obj))
	for k, v := range obj {
		v = bytes.TrimSpace(v)
		switch {
		case k == "sys", string(v) == "null":
		case v[0] == '{' || v[0] == '[':
			out[k] = v
		default:
			s, _ := json.Marshal(string(v))
			out[k] = s
		}
	}
	return out
}

func equalFold(a, b string) bool { return strings.EqualFold(a, b) }
