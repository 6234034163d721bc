package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

// TestJSONBodyErrorsArePlainSentences: a body of the wrong JSON type is described in JSON terms (field
// name, JSON type), never with Go types.
func TestJSONBodyErrorsArePlainSentences(t *testing.T) {
	f := newFixture(t)
	snaps := "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots"
	tests := []struct {
		method, path, body, detail string
	}{
		{"POST", snaps, `[]`, "the request body must be a JSON object"},
		{"POST", snaps, `"comment"`, "the request body must be a JSON object"},
		{"POST", snaps, `null`, "the request body must be a JSON object"},
		{"POST", snaps, `42`, "the request body must be a JSON object"},
		{"POST", snaps, `{"comment":42}`, "field comment must be a string"},
		{"POST", snaps, `{"comment":{"a":1}}`, "field comment must be a string"},
		{"PATCH", snaps + "/" + snapA, `{"comment":["x"]}`, "field comment must be a string"},
		{"PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":"yes"}`, "field backups_enabled must be true or false"},
		{"PUT", "/api/v1/namespaces/ns-a/settings", `[true]`, "the request body must be a JSON object"},
		{"PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":true,"admin":1}`, `the request body has an unknown field "admin"`},
		{"PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":`, "the request body is not valid JSON (it ends too early)"},
		{"PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":tru}`, "the request body is not valid JSON (at byte 23)"},
		{"PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":true}{}`, "the request body must be one JSON object, with nothing after it"},
		{"PUT", "/api/v1/namespaces/ns-a/settings", `{}`, "field backups_enabled is required"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.body, func(t *testing.T) {
			resp, body := f.do(t, manager, tt.method, tt.path, tt.body)
			wantProblem(t, resp, body, 400, backup.CodeInvalidParameters)
			if body["detail"] != tt.detail {
				t.Errorf("detail %q, want %q", body["detail"], tt.detail)
			}
		})
	}
}

// sdkDump is what an Azure SDK error prints: a URL, a response status and body.
const sdkDump = "GET https://acct.table.core.windows.net/Settings(PartitionKey='ns-a')\n" +
	"--------------------------------------------------------------------------------\n" +
	"RESPONSE 500: 500 Internal Server Error\nERROR CODE: InternalError\n" +
	`{"odata.error":{"code":"InternalError","message":{"value":"Server encountered an internal error."}}}`

// failingSettings is a settings store whose reads fail with err.
type failingSettings struct {
	backup.SettingsStore
	err error
}

func (f failingSettings) GetSettings(context.Context, string) (backup.Settings, error) {
	return backup.Settings{}, f.err
}

func withFailingSettings(err error) fixtureOption {
	return withStores(func(s backup.Stores) backup.Stores {
		s.Settings = failingSettings{SettingsStore: s.Settings, err: err}
		return s
	})
}

// TestInternalErrorsShowAReferenceNotTheCause: an error without a domain code answers a generic 500
// sentence with a reference; the response carries nothing of the cause, the log carries all of it under
// that reference.
func TestInternalErrorsShowAReferenceNotTheCause(t *testing.T) {
	for _, err := range []error{
		errors.New(sdkDump),
		fmt.Errorf("read settings: %w", errors.New(sdkDump)),
		backup.Wrap(backup.CodeInternal, errors.New(sdkDump), "settings of %s at https://acct.table.core.windows.net", nsA),
	} {
		f := newFixture(t, withFailingSettings(err))
		req := httptest.NewRequest("GET", "/api/v1/namespaces/ns-a/settings", nil)
		req.Header.Set("Authorization", "Bearer "+manager)
		req.Header.Set("X-Azure-Functions-InvocationId", "4f1c2b7e-invocation")
		rec := httptest.NewRecorder()
		f.srv.ServeHTTP(rec, req)
		raw, _ := io.ReadAll(rec.Result().Body)
		if rec.Code != 500 {
			t.Fatalf("got %d %s, want 500", rec.Code, raw)
		}
		for _, leak := range []string{"acct.table", "core.windows.net", "RESPONSE", "odata", "InternalError\n", "PartitionKey"} {
			if strings.Contains(string(raw), leak) {
				t.Errorf("response leaks %q: %s", leak, raw)
			}
		}
		if !strings.Contains(string(raw), `"detail":"An internal error occurred. Quote reference 4f1c2b7e-invocation when you report it."`) {
			t.Errorf("response has no generic detail with the reference: %s", raw)
		}
		logs := f.logs.String()
		if !strings.Contains(logs, "acct.table.core.windows.net") || !strings.Contains(logs, `"reference":"4f1c2b7e-invocation"`) {
			t.Errorf("the log lacks the cause or the reference: %s", logs)
		}
	}
}

// TestDomainErrorDetailIsItsMessage: a coded error shows its Message, not Error() with the cause.
func TestDomainErrorDetailIsItsMessage(t *testing.T) {
	err := fmt.Errorf("settings: %w", backup.Wrap(backup.CodeTransient, errors.New(sdkDump), "table storage is not answering; try again"))
	f := newFixture(t, withFailingSettings(err))
	resp, body := f.do(t, manager, "GET", "/api/v1/namespaces/ns-a/settings", "")
	wantProblem(t, resp, body, 503, backup.CodeTransient)
	if body["detail"] != "table storage is not answering; try again" {
		t.Errorf("detail %q", body["detail"])
	}
	if !strings.Contains(f.logs.String(), "acct.table.core.windows.net") {
		t.Error("the cause is not logged")
	}
}
