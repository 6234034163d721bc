package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Timer is the data of a timer trigger.
type Timer struct {
	IsPastDue      bool
	ScheduleStatus *ScheduleStatus // nil when the host sends null (no schedule monitor)
	Sys            Sys
}

// ScheduleStatus is present when the schedule monitor is on.
type ScheduleStatus struct {
	Last        time.Time `json:"Last"`
	Next        time.Time `json:"Next"`
	LastUpdated time.Time `json:"LastUpdated"`
}

// Timer decodes the timer trigger bound as binding. A missing binding is an error: the function.json and
// the handler disagree.
func (r *Request) Timer(binding string) (Timer, error) {
	raw, ok := r.Data[binding]
	if !ok {
		return Timer{}, fmt.Errorf("timer binding %q missing from envelope", binding)
	}
	var t struct {
		IsPastDue      bool            `json:"IsPastDue"`
		ScheduleStatus json.RawMessage `json:"ScheduleStatus"`
	}
	if err := unmarshalTolerant(raw, &t); err != nil {
		return Timer{}, fmt.Errorf("decode timer %q: %w", binding, err)
	}
	out := Timer{IsPastDue: t.IsPastDue, Sys: r.Sys()}
	if s := unwrap(t.ScheduleStatus); len(s) > 0 && string(s) != "null" {
		var st ScheduleStatus
		if err := json.Unmarshal(s, &st); err != nil {
			return Timer{}, fmt.Errorf("decode timer %q schedule status: %w", binding, err)
		}
		out.ScheduleStatus = &st
	}
	return out, nil
}

// ServiceBusMessage is one message delivered by a Service Bus trigger.
type ServiceBusMessage struct {
	// Body is the message body as sent (the JSON text, once unwrapped from the host's string encoding).
	Body            []byte
	MessageID       string
	SessionID       string
	CorrelationID   string
	ContentType     string
	DeliveryCount   int64
	SequenceNumber  int64
	EnqueuedTimeUTC time.Time
	// Properties are the application properties (UserProperties, or ApplicationProperties in newer
	// extension versions).
	Properties map[string]any
	Sys        Sys
}

// ServiceBus decodes the Service Bus message bound as binding.
func (r *Request) ServiceBus(binding string) (ServiceBusMessage, error) {
	raw, ok := r.Data[binding]
	if !ok {
		return ServiceBusMessage{}, fmt.Errorf("service bus binding %q missing from envelope", binding)
	}
	m := ServiceBusMessage{
		Body:          body(raw),
		MessageID:     str(r.Metadata, "MessageId"),
		SessionID:     str(r.Metadata, "SessionId"),
		CorrelationID: str(r.Metadata, "CorrelationId"),
		ContentType:   str(r.Metadata, "ContentType"),
		Sys:           r.Sys(),
	}
	var errs []error
	var err error
	if m.DeliveryCount, err = integer(r.Metadata, "DeliveryCount"); err != nil {
		errs = append(errs, err)
	}
	if m.SequenceNumber, err = integer(r.Metadata, "SequenceNumber"); err != nil {
		errs = append(errs, err)
	}
	if m.EnqueuedTimeUTC, err = timestamp(r.Metadata, "EnqueuedTimeUtc"); err != nil {
		errs = append(errs, err)
	}
	for _, key := range []string{"ApplicationProperties", "UserProperties"} {
		if raw, ok := r.Metadata[key]; ok && m.Properties == nil {
			var props map[string]any
			if err := unmarshalTolerant(raw, &props); err == nil {
				m.Properties = props
			}
		}
	}
	if m.DeliveryCount == 0 {
		m.DeliveryCount = 1 // absent means first delivery
	}
	return m, errors.Join(errs...)
}

// body turns the binding value into the message body as the sender wrote it. A JSON body arrives as a
// string holding JSON text (possibly wrapped twice); an object body sometimes arrives as a real object;
// a plain text body arrives as a JSON string.
func body(raw json.RawMessage) []byte {
	inner := unwrap(raw)
	if len(inner) > 0 && inner[0] == '"' {
		var s string
		if err := json.Unmarshal(inner, &s); err == nil {
			return []byte(s)
		}
	}
	return []byte(inner)
}
