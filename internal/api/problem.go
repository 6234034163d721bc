package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
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

// problemFor turns any error into the problem the caller sees. The detail is the user-facing Message of
// the first *backup.Error in the chain, never Error() (which appends the cause: SDK dumps, URLs, response
// bodies). Internal errors (no domain code, or CodeInternal) get a generic sentence with the reference
// under which the whole error is logged.
func problemFor(err error, reference string) Problem {
	code := backup.CodeOf(err)
	var detail string
	var e *backup.Error
	if code != backup.CodeInternal && errors.As(err, &e) {
		detail = e.Message
	} else {
		detail = "An internal error occurred. Quote reference " + reference + " when you report it."
	}
	return Problem{
		Type:   "https://backups.mendix-azure.invalid/problems/" + strings.ToLower(strings.ReplaceAll(string(code), "_", "-")),
		Title:  code.Title(),
		Status: code.HTTPStatus(),
		Detail: detail,
		Code:   string(code),
	}
}

// writeProblem answers err as problem+json and logs it in full, with the request's reference.
func writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	rc := requestFrom(r.Context(), zerolog.Nop())
	p := problemFor(err, rc.id)
	ev := rc.log.Info()
	if p.Status >= 500 {
		ev = rc.log.Error()
	}
	ev.Err(err).Int("status", p.Status).Str("code", p.Code).Str("reference", rc.id).Msg("request failed")
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

// decodeJSON reads a JSON request body strictly: one object, no unknown fields, nothing after it. An
// empty body is an empty object. Messages name the field and the JSON type it needs, never Go types.
func decodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return backup.Errorf(backup.CodeUnsupportedContentType, "the request body must be application/json, not %q", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		return backup.Wrap(backup.CodeInvalidParameters, err, "the request body could not be read")
	}
	if len(body) > maxRequestBody {
		return backup.Errorf(backup.CodePayloadTooLarge, "the request body is larger than %d bytes", maxRequestBody)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		trimmed = []byte("{}")
	}
	if trimmed[0] != '{' {
		return backup.Errorf(backup.CodeInvalidParameters, "the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return backup.Wrap(backup.CodeInvalidParameters, err, "%s", jsonErrorText(err))
	}
	if dec.More() {
		return backup.Errorf(backup.CodeInvalidParameters, "the request body must be one JSON object, with nothing after it")
	}
	return nil
}

// jsonErrorText is a decoding error as a sentence for the caller.
func jsonErrorText(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return "the request body must be a JSON object"
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %s must be %s", typeErr.Field, jsonTypeName(typeErr.Type))
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("the request body is not valid JSON (at byte %d)", syntaxErr.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "the request body has an unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the request body is not valid JSON (it ends too early)"
	default:
		return "the request body is not valid JSON"
	}
}

// jsonTypeName names the JSON value a Go type decodes from: "a string", "true or false", ...
func jsonTypeName(t reflect.Type) string {
	if t == nil {
		return "of another type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "of another type"
}
