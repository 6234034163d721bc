package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

// Problem is an RFC 9457 problem document with the service's stable code.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

// problemFor turns any error into the problem the caller sees. Only *backup.Error messages reach the
// caller; anything else is an internal error whose cause stays in the log.
func problemFor(err error) Problem {
	code := backup.CodeOf(err)
	detail := "internal error; the request id is in the X-Request-Id header"
	var e *backup.Error
	if errors.As(err, &e) {
		detail = e.Message
	}
	return Problem{
		Type:   "https://backups.mendix-azure.invalid/problems/" + strings.ToLower(strings.ReplaceAll(string(code), "_", "-")),
		Title:  code.Title(),
		Status: code.HTTPStatus(),
		Detail: detail,
		Code:   string(code),
	}
}

func writeProblem(w http.ResponseWriter, log zerolog.Logger, err error) {
	p := problemFor(err)
	ev := log.Info()
	if p.Status >= 500 {
		ev = log.Error()
	}
	ev.Err(err).Int("status", p.Status).Str("code", p.Code).Msg("request failed")
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// maxRequestBody bounds JSON request bodies; no request of this API needs more.
const maxRequestBody = 64 << 10

// decodeJSON reads a JSON request body strictly: one object, no unknown fields, nothing after it.
func decodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return backup.Errorf(backup.CodeUnsupportedContentType, "request body must be application/json, got %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return backup.Wrap(backup.CodeInvalidParameters, err, "could not read the request body")
	}
	if len(body) > maxRequestBody {
		return backup.Errorf(backup.CodePayloadTooLarge, "request body larger than %d bytes", maxRequestBody)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return backup.Errorf(backup.CodeInvalidParameters, "malformed JSON body: %s", jsonErrorText(err))
	}
	if dec.More() {
		return backup.Errorf(backup.CodeInvalidParameters, "malformed JSON body: unexpected data after the JSON object")
	}
	return nil
}

func jsonErrorText(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q must be %s", typeErr.Field, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("syntax error at byte %d", syntaxErr.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	default:
		return err.Error()
	}
}
