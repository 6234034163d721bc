// Package backup is the domain of the service: environments, namespaces and their permissions,
// snapshots, restores, operations and their phases, and the interfaces the domain needs from storage,
// messaging and databases. Adapters (tablestore, blobstore, bus, pg) implement those interfaces and import
// this package; this package imports none of them.
package backup

import (
	"errors"
	"fmt"
)

// Code is a stable error code, part of the public API contract (docs/api.md). The HTTP status and the
// retry decision for each code live in one table, below.
type Code string

const (
	CodeUnauthenticated        Code = "UNAUTHENTICATED"
	CodeNoAccess               Code = "NO_ACCESS"
	CodeNotFound               Code = "NOT_FOUND"
	CodeEnvironmentNotFound    Code = "ENVIRONMENT_NOT_FOUND"
	CodeInvalidParameters      Code = "INVALID_PARAMETERS"
	CodeEnvironmentBusy        Code = "ENVIRONMENT_BUSY"
	CodeInvalidState           Code = "INVALID_STATE"
	CodeSnapshotNotReady       Code = "SNAPSHOT_NOT_READY"
	CodeSnapshotInUse          Code = "SNAPSHOT_IN_USE" // a restore or a download is reading it
	CodeCrossNamespace         Code = "CROSS_NAMESPACE_NOT_SUPPORTED"
	CodeBackupsNotEnabled      Code = "BACKUPS_NOT_ENABLED"
	CodePayloadTooLarge        Code = "PAYLOAD_TOO_LARGE"
	CodeConflict               Code = "CONFLICT"                // a concurrent update won (ETag mismatch)
	CodeTransient              Code = "TEMPORARILY_UNAVAILABLE" // a dependency failed; retrying can help
	CodeInternal               Code = "INTERNAL"
	CodeMethodNotAllowed       Code = "METHOD_NOT_ALLOWED"
	CodeUnsupportedContentType Code = "UNSUPPORTED_MEDIA_TYPE"
)

// codeInfo is the one table that maps an error code to its HTTP status, its title and whether a retry
// (a Service Bus redelivery, a client retry) can help.
var codeInfo = map[Code]struct {
	Status    int
	Title     string
	Retryable bool
}{
	CodeUnauthenticated:        {401, "Unauthenticated", false},
	CodeNoAccess:               {403, "No access", false},
	CodeNotFound:               {404, "Not found", false},
	CodeEnvironmentNotFound:    {404, "Environment not found", false},
	CodeInvalidParameters:      {400, "Invalid parameters", false},
	CodeEnvironmentBusy:        {409, "Environment busy", false},
	CodeInvalidState:           {409, "Invalid state", false},
	CodeSnapshotNotReady:       {409, "Snapshot not ready", false},
	CodeSnapshotInUse:          {409, "Snapshot in use", false},
	CodeCrossNamespace:         {400, "Cross-namespace restore not supported", false},
	CodeBackupsNotEnabled:      {409, "Backups not enabled", false},
	CodePayloadTooLarge:        {413, "Payload too large", false},
	CodeConflict:               {409, "Conflict", true},
	CodeTransient:              {503, "Temporarily unavailable", true},
	CodeInternal:               {500, "Internal error", false},
	CodeMethodNotAllowed:       {405, "Method not allowed", false},
	CodeUnsupportedContentType: {415, "Unsupported media type", false},
}

// Error is a domain error with a stable code and a message meant for the user.
type Error struct {
	Code    Code
	Message string
	Err     error // the cause, if any; never shown to API callers
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a formatted user-facing message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap attaches a code and a user-facing message to a cause.
func Wrap(code Code, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// CodeOf returns the code of the first *Error in err's chain, or CodeInternal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// HTTPStatus is the status an API response carries for code.
func (c Code) HTTPStatus() int {
	if info, ok := codeInfo[c]; ok {
		return info.Status
	}
	return 500
}

// Title is the short problem title for code.
func (c Code) Title() string {
	if info, ok := codeInfo[c]; ok {
		return info.Title
	}
	return "Internal error"
}

// IsRetryable reports whether err is worth a retry (a redelivery or a client retry). Errors without a
// domain code are treated as retryable only when they are marked transient by an adapter.
func IsRetryable(err error) bool {
	return codeInfo[CodeOf(err)].Retryable
}

// IsNotFound reports whether err says that something does not exist.
func IsNotFound(err error) bool {
	c := CodeOf(err)
	return c == CodeNotFound || c == CodeEnvironmentNotFound
}

// IsConflict reports whether err says that a concurrent writer came first.
func IsConflict(err error) bool { return CodeOf(err) == CodeConflict }

// Codes lists every code, for documentation and tests.
func Codes() []Code {
	out := make([]Code, 0, len(codeInfo))
	for c := range codeInfo {
		out = append(out, c)
	}
	return out
}
