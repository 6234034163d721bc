package funchost

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

func noLog() zerolog.Logger { return zerolog.Nop() }

// decodeEnvelope splits a payload into its raw Data and Metadata members.
func decodeEnvelope(t *testing.T, payload []byte) (data, md map[string]json.RawMessage) {
	t.Helper()
	var env struct {
		Data     map[string]json.RawMessage `json:"Data"`
		Metadata map[string]json.RawMessage `json:"Metadata"`
	}
	if err := json.Unmarshal(payload, &env); err != nil {
		t.Fatalf("envelope is not JSON: %v\n%s", err, payload)
	}
	return env.Data, env.Metadata
}

// checkServiceBusEnvelope asserts the captured encoding of a message
// {"hello":"world","n":5,"nested":{"a":1},"gone":null} with id abc, session env-1,
// content type application/json and property k=v.
func checkServiceBusEnvelope(t *testing.T, payload []byte, wantFunction string, wantDelivery int) {
	t.Helper()
	data, md := decodeEnvelope(t, payload)
	wantRaw := map[string]string{
		"Data.msg":                       `"\"{\\\"hello\\\":\\\"world\\\",\\\"n\\\":5,\\\"nested\\\":{\\\"a\\\":1},\\\"gone\\\":null}\""`,
		"Metadata.MessageId":             `"\"abc\""`,
		"Metadata.DeliveryCount":         `"` + itoaTest(wantDelivery) + `"`,
		"Metadata.SessionId":             `"\"env-1\""`,
		"Metadata.ContentType":           `"\"application/json\""`,
		"Metadata.UserProperties":        `{"k":"v"}`,
		"Metadata.ApplicationProperties": `{"k":"v"}`,
		"Metadata.hello":                 `"\"world\""`,
		"Metadata.n":                     `"5"`,
		"Metadata.nested":                `{"a":1}`,
	}
	got := map[string]string{"Data.msg": string(data["msg"])}
	for k, v := range md {
		got["Metadata."+k] = string(v)
	}
	for k, want := range wantRaw {
		if got[k] != want {
			t.Errorf("%s: got %s, want %s", k, got[k], want)
		}
	}
	if _, ok := md["gone"]; ok {
		t.Errorf("Metadata.gone: null body members must be dropped, got %s", md["gone"])
	}
	var seq string
	if err := json.Unmarshal(md["SequenceNumber"], &seq); err != nil || seq == "" || seq[0] == '"' {
		t.Errorf("Metadata.SequenceNumber: got %s, want a number as a string", md["SequenceNumber"])
	}
	for _, k := range []string{"LockToken", "EnqueuedTimeUtc"} {
		var outer, inner string
		if err := json.Unmarshal(md[k], &outer); err != nil {
			t.Fatalf("Metadata.%s: got %s, want a JSON string: %v", k, md[k], err)
		}
		if err := json.Unmarshal([]byte(outer), &inner); err != nil {
			t.Fatalf("Metadata.%s: got %s, want JSON text of a string inside the string", k, md[k])
		}
		if k == "EnqueuedTimeUtc" {
			if _, err := time.Parse(time.RFC3339Nano, inner); err != nil {
				t.Errorf("Metadata.EnqueuedTimeUtc: got %q, want RFC 3339: %v", inner, err)
			}
		} else if _, err := uuid.Parse(inner); err != nil {
			t.Errorf("Metadata.LockToken: got %q, want a uuid", inner)
		}
	}
	var sys struct{ MethodName, UtcNow, RandGuid string }
	if err := json.Unmarshal(md["sys"], &sys); err != nil {
		t.Fatalf("Metadata.sys: got %s: %v", md["sys"], err)
	}
	if sys.MethodName != wantFunction {
		t.Errorf("sys.MethodName: got %q, want %q", sys.MethodName, wantFunction)
	}
	if _, err := time.Parse(time.RFC3339Nano, sys.UtcNow); err != nil {
		t.Errorf("sys.UtcNow: got %q: %v", sys.UtcNow, err)
	}
	if _, err := uuid.Parse(sys.RandGuid); err != nil {
		t.Errorf("sys.RandGuid: got %q: %v", sys.RandGuid, err)
	}
}

func itoaTest(n int) string { b, _ := json.Marshal(n); return string(b) }

const envelopeBody = `{"hello":"world","n":5,"nested":{"a":1},"gone":null}`

func TestServiceBusEnvelope(t *testing.T) {
	fn := &Function{Name: "Work", TriggerBinding: Binding{Name: "msg"}}
	m := &message{seq: 7, id: "abc", body: envelopeBody, sessionID: "env-1", contentType: "application/json",
		props: map[string]any{"k": "v"}, enqueued: time.Date(2020, 10, 8, 21, 49, 35, 809000000, time.UTC),
		deliveryCount: 2, lockToken: uuid.NewString()}
	payload := serviceBusEnvelope(fn, m, "work", time.Now())
	checkServiceBusEnvelope(t, payload, "Work", 2)
	_, md := decodeEnvelope(t, payload)
	if got, want := string(md["SequenceNumber"]), `"7"`; got != want {
		t.Errorf("SequenceNumber: got %s, want %s", got, want)
	}
	if got, want := string(md["EnqueuedTimeUtc"]), `"\"2020-10-08T21:49:35.809Z\""`; got != want {
		t.Errorf("EnqueuedTimeUtc: got %s, want %s", got, want)
	}
}

func TestServiceBusEnvelopeTextBody(t *testing.T) {
	fn := &Function{Name: "Work", TriggerBinding: Binding{Name: "in"}}
	m := &message{seq: 1, id: "x", body: "plain text", deliveryCount: 1, lockToken: "t"}
	data, md := decodeEnvelope(t, serviceBusEnvelope(fn, m, "work", time.Now()))
	if got, want := string(data["in"]), `"\"plain text\""`; got != want {
		t.Errorf("Data.in: got %s, want %s", got, want)
	}
	for _, k := range []string{"SessionId", "ContentType"} {
		if v, ok := md[k]; ok {
			t.Errorf("Metadata.%s: got %s, want it absent when empty", k, v)
		}
	}
	if got := string(md["UserProperties"]); got != "{}" {
		t.Errorf("UserProperties: got %s, want {}", got)
	}
}

func TestTimerEnvelope(t *testing.T) {
	fn := &Function{Name: "Nightly", TriggerBinding: Binding{Name: "timer"}}
	now := time.Date(2023, 9, 7, 11, 40, 45, 4275000, time.UTC)
	tests := []struct {
		name    string
		status  *scheduleStatus
		pastDue bool
		want    string
	}{
		{"no monitor", nil, false, `{"IsPastDue":false,"Schedule":{"AdjustForDST":true},"ScheduleStatus":null}`},
		{"monitor, past due", &scheduleStatus{Last: now.Add(-time.Hour), Next: now, LastUpdated: now.Add(-time.Hour)}, true,
			`{"IsPastDue":true,"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2023-09-07T10:40:45.004275Z","Next":"2023-09-07T11:40:45.004275Z","LastUpdated":"2023-09-07T10:40:45.004275Z"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, md := decodeEnvelope(t, timerEnvelope(fn, tc.status, tc.pastDue, now))
			if got := string(data["timer"]); got != tc.want {
				t.Errorf("Data.timer: got %s, want %s", got, tc.want)
			}
			var sys struct{ MethodName, UtcNow string }
			if err := json.Unmarshal(md["sys"], &sys); err != nil || sys.MethodName != "Nightly" || sys.UtcNow != "2023-09-07T11:40:45.004275Z" {
				t.Errorf("Metadata.sys: got %s", md["sys"])
			}
		})
	}
}
