package envelope

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func decode(t *testing.T, payload string) *Request {
	t.Helper()
	req, err := Decode(strings.NewReader(payload))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return req
}

func TestTimerPayloads(t *testing.T) {
	tests := []struct {
		name        string
		payload     string
		wantPastDue bool
		wantStatus  bool
		wantMethod  string
	}{
		{
			name: "captured, null schedule status",
			payload: `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":false}},
			 "Metadata":{"sys":{"MethodName":"NightlyBackups","UtcNow":"2023-09-07T11:40:45.004275Z","RandGuid":"0f7d"}}}`,
			wantMethod: "NightlyBackups",
		},
		{
			name: "schedule monitor, past due",
			payload: `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2023-09-06T01:00:00Z","Next":"2023-09-07T01:00:00Z","LastUpdated":"2023-09-06T01:00:00.12Z"},"IsPastDue":true}},
			 "Metadata":{"sys":{"MethodName":"NightlyBackups","UtcNow":"2023-09-07T11:40:45Z","RandGuid":"x"}}}`,
			wantPastDue: true, wantStatus: true, wantMethod: "NightlyBackups",
		},
		{
			name:        "timer as a JSON string, no metadata",
			payload:     `{"Data":{"timer":"{\"IsPastDue\":true,\"ScheduleStatus\":null}"}}`,
			wantPastDue: true,
		},
		{
			name:       "schedule status omitted, unknown keys",
			payload:    `{"Data":{"timer":{"IsPastDue":false,"Extra":[1,2]},"other":1},"Metadata":{"unknown":"\"x\"","sys":{"MethodName":"M"}}}`,
			wantMethod: "M",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tm, err := decode(t, tt.payload).Timer("timer")
			if err != nil {
				t.Fatalf("Timer: %v", err)
			}
			if tm.IsPastDue != tt.wantPastDue {
				t.Errorf("IsPastDue = %v, want %v", tm.IsPastDue, tt.wantPastDue)
			}
			if (tm.ScheduleStatus != nil) != tt.wantStatus {
				t.Errorf("ScheduleStatus = %+v, want present=%v", tm.ScheduleStatus, tt.wantStatus)
			}
			if tm.Sys.MethodName != tt.wantMethod {
				t.Errorf("MethodName = %q, want %q", tm.Sys.MethodName, tt.wantMethod)
			}
		})
	}
}

func TestTimerStatusValues(t *testing.T) {
	tm, err := decode(t, `{"Data":{"t":{"ScheduleStatus":{"Last":"2023-09-06T01:00:00Z","Next":"2023-09-07T01:00:00Z"}}}}`).Timer("t")
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2023, 9, 7, 1, 0, 0, 0, time.UTC)
	if !tm.ScheduleStatus.Next.Equal(want) {
		t.Errorf("Next = %v, want %v", tm.ScheduleStatus.Next, want)
	}
}

func TestMissingBindingIsAnError(t *testing.T) {
	req := decode(t, `{"Data":{"other":{}},"Metadata":{}}`)
	if _, err := req.Timer("timer"); err == nil {
		t.Error("Timer: got nil error for a missing binding")
	}
	if _, err := req.ServiceBus("msg"); err == nil {
		t.Error("ServiceBus: got nil error for a missing binding")
	}
}

func TestServiceBusCapturedPayload(t *testing.T) {
	// The shape captured from the real host (docs/functions-host.md), including the top-level key of the
	// body copied into Metadata and double-encoded strings.
	payload := `{"Data":{"msg":"\"{\\\"hello\\\":\\\"world\\\"}\""},
	 "Metadata":{"DeliveryCount":"3","LockToken":"\"4223\"","MessageId":"\"088f\"",
	  "EnqueuedTimeUtc":"\"2020-10-08T21:49:35.809Z\"","ContentType":"\"application/json\"",
	  "SequenceNumber":"17","SessionId":"\"env-1\"","UserProperties":{"k":"v","n":2},
	  "MessageReceiver":{"Path":"q"},"sys":{"MethodName":"BackupJobs","UtcNow":"2020-10-08T21:49:36Z","RandGuid":"r"},
	  "hello":"\"world\""}}`
	m, err := decode(t, payload).ServiceBus("msg")
	if err != nil {
		t.Fatalf("ServiceBus: %v", err)
	}
	checks := []struct{ name, got, want string }{
		{"body", string(m.Body), `{"hello":"world"}`},
		{"MessageId", m.MessageID, "088f"},
		{"SessionId", m.SessionID, "env-1"},
		{"ContentType", m.ContentType, "application/json"},
		{"method", m.Sys.MethodName, "BackupJobs"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if m.DeliveryCount != 3 || m.SequenceNumber != 17 {
		t.Errorf("DeliveryCount, SequenceNumber = %d, %d; want 3, 17", m.DeliveryCount, m.SequenceNumber)
	}
	if !m.EnqueuedTimeUTC.Equal(time.Date(2020, 10, 8, 21, 49, 35, 809e6, time.UTC)) {
		t.Errorf("EnqueuedTimeUTC = %v", m.EnqueuedTimeUTC)
	}
	if m.Properties["k"] != "v" || m.Properties["n"] != float64(2) {
		t.Errorf("Properties = %v", m.Properties)
	}
}

func TestServiceBusBodyEncodings(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"json text in a string", `"{\"a\":1}"`, `{"a":1}`},
		{"json text wrapped twice", `"\"{\\\"a\\\":1}\""`, `{"a":1}`},
		{"real object", `{"a":1}`, `{"a":1}`},
		{"plain text", `"hello world"`, `hello world`},
		{"number", `"42"`, `42`},
		{"array wrapped", `"[1,2]"`, `[1,2]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decode(t, `{"Data":{"msg":`+tt.data+`},"Metadata":{}}`).ServiceBus("msg")
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Body) != tt.want {
				t.Errorf("body = %q, want %q", m.Body, tt.want)
			}
		})
	}
}

func TestServiceBusMetadataOddities(t *testing.T) {
	tests := []struct {
		name          string
		meta          string
		wantDelivery  int64
		wantMessageID string
		wantProps     map[string]any
		wantErr       bool
	}{
		{"missing keys", `{}`, 1, "", nil, false},
		{"numbers as real numbers", `{"DeliveryCount":2,"MessageId":"abc"}`, 2, "abc", nil, false},
		{"nulls", `{"DeliveryCount":null,"MessageId":null,"UserProperties":null}`, 1, "", nil, false},
		{"application properties preferred", `{"ApplicationProperties":{"a":"1"},"UserProperties":{"u":"2"}}`, 1, "", map[string]any{"a": "1"}, false},
		{"properties as a string", `{"UserProperties":"{\"u\":\"2\"}"}`, 1, "", map[string]any{"u": "2"}, false},
		{"triple-wrapped id", `{"MessageId":"\"\\\"id-1\\\"\""}`, 1, "id-1", nil, false},
		{"bad delivery count", `{"DeliveryCount":"\"many\""}`, 1, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decode(t, `{"Data":{"msg":"\"{}\""},"Metadata":`+tt.meta+`}`).ServiceBus("msg")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if m.DeliveryCount != tt.wantDelivery || m.MessageID != tt.wantMessageID {
				t.Errorf("DeliveryCount, MessageID = %d, %q; want %d, %q", m.DeliveryCount, m.MessageID, tt.wantDelivery, tt.wantMessageID)
			}
			if len(tt.wantProps) > 0 {
				gotJSON, _ := json.Marshal(m.Properties)
				wantJSON, _ := json.Marshal(tt.wantProps)
				if string(gotJSON) != string(wantJSON) {
					t.Errorf("Properties = %s, want %s", gotJSON, wantJSON)
				}
			}
		})
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	for _, payload := range []string{``, `not json`, `[1,2]`, `{"Data":`} {
		if _, err := Decode(strings.NewReader(payload)); err == nil {
			t.Errorf("Decode(%q): got nil error", payload)
		}
	}
	if _, err := Decode(strings.NewReader(`{"Data":"` + strings.Repeat("x", maxEnvelopeBytes) + `"}`)); err == nil {
		t.Error("Decode of an oversized envelope: got nil error")
	}
}

func TestResponseIsAlwaysAnObject(t *testing.T) {
	tests := []struct {
		name string
		resp Response
		want string
	}{
		{"empty", Response{}, `{"Outputs":{},"Logs":[],"ReturnValue":null}`},
		{"logs", Response{Logs: []string{"done"}}, `{"Outputs":{},"Logs":["done"],"ReturnValue":null}`},
		{"unmarshalable return value", Response{ReturnValue: func() {}}, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.resp.Marshal()
			var obj map[string]any
			if err := json.Unmarshal(got, &obj); err != nil || obj == nil {
				t.Fatalf("reply %q is not a JSON object", got)
			}
			if tt.want != "" && string(got) != tt.want {
				t.Errorf("reply = %s, want %s", got, tt.want)
			}
		})
	}
}
