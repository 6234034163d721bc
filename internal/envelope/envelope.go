// Package envelope owns the JSON envelope the Azure Functions host sends a custom handler for every
// non-HTTP trigger (docs/functions-host.md), and the reply it expects.
//
// The host encodes inconsistently: strings and numbers arrive as JSON text inside a JSON string, sometimes
// wrapped twice (`"\"abc\""`, `"1"`), objects arrive as real objects, nulls are dropped and unknown keys
// appear. Every value is therefore decoded tolerantly: unmarshal, and while the result is a string that is
// itself JSON text, unmarshal again.
package envelope

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// maxEnvelopeBytes bounds what the handler reads from the host: Service Bus messages are at most 256 KiB
// (Standard) or 100 MiB (Premium); bodies of this service's messages are small JSON.
const maxEnvelopeBytes = 8 << 20

// Request is the raw envelope: binding data and trigger metadata, undecoded.
type Request struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// Sys is the host's system metadata.
type Sys struct {
	MethodName string    `json:"MethodName"`
	UtcNow     time.Time `json:"UtcNow"`
	RandGuid   string    `json:"RandGuid"`
}

// Decode reads an envelope from r.
func Decode(r io.Reader) (*Request, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxEnvelopeBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read envelope: %w", err)
	}
	if len(body) > maxEnvelopeBytes {
		return nil, fmt.Errorf("envelope larger than %d bytes", maxEnvelopeBytes)
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("decode envelope: %w", err)
	}
	return &req, nil
}

// Sys returns the host's system metadata; missing parts are zero.
func (r *Request) Sys() Sys {
	var s Sys
	if raw, ok := r.Metadata["sys"]; ok {
		_ = unmarshalTolerant(raw, &s) // a malformed sys block leaves the zero value: it is informational only
	}
	return s
}

// unwrap peels JSON-text-in-a-JSON-string layers: `"\"abc\""` → `"abc"`, `"{\"a\":1}"` → `{"a":1}`,
// `"1"` → `1`. It stops at the first layer that is not a string holding valid JSON, so a plain string
// such as `"hello"` stays a string.
func unwrap(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	for depth := 0; depth < 4 && len(raw) > 0 && raw[0] == '"'; depth++ {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return raw
		}
		inner := bytes.TrimSpace([]byte(s))
		if !json.Valid(inner) {
			return raw
		}
		raw = inner
	}
	return raw
}

// unmarshalTolerant decodes raw into v after unwrapping double encoding.
func unmarshalTolerant(raw json.RawMessage, v any) error {
	return json.Unmarshal(unwrap(raw), v)
}

// str reads a metadata value as a string: double-encoded strings are unwrapped, numbers and booleans are
// given as their text, null and missing keys are "".
func str(m map[string]json.RawMessage, key string) string {
	raw, ok := m[key]
	if !ok {
		return ""
	}
	raw = unwrap(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return strings.TrimSpace(string(raw)) // a number or boolean
}

func integer(m map[string]json.RawMessage, key string) (int64, error) {
	s := str(m, key)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("metadata %s: %q is not an integer", key, s)
	}
	return n, nil
}

func timestamp(m map[string]json.RawMessage, key string) (time.Time, error) {
	s := str(m, key)
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999", "1/2/2006 3:04:05 PM"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("metadata %s: %q is not a timestamp", key, s)
}

// Response is what the handler answers for a non-HTTP trigger. The host needs a JSON object: an empty or
// null body can leave the invocation hanging until the function timeout.
type Response struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// Marshal renders the response, never as null.
func (r Response) Marshal() []byte {
	if r.Outputs == nil {
		r.Outputs = map[string]any{}
	}
	if r.Logs == nil {
		r.Logs = []string{}
	}
	b, err := json.Marshal(r)
	if err != nil { // only reachable with an unmarshalable ReturnValue: drop it, keep the logs
		b, _ = json.Marshal(Response{Outputs: map[string]any{}, Logs: append(r.Logs, "reply: "+err.Error())})
	}
	return b
}
