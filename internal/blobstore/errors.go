package blobstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/mxazure/backups/internal/backup"
)

// transient is the one classifier of failed storage calls. It returns a *backup.Error whose Message
// is a sentence for users, "could not <what>: <why>", without URLs or response dumps; the SDK's error
// is its cause, for the logs. Network errors, timeouts, throttling, 5xx and a block refused for its
// checksum (damaged on the way; the next attempt sends it again) are transient; refused access is
// permanent (CodeInvalidState: the service's identity lacks a role); any other refusal is CodeInternal.
func transient(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	var re *azcore.ResponseError
	switch code := statusOf(err); {
	case errors.Is(err, context.Canceled):
		return backup.Wrap(backup.CodeTransient, err, "could not %s: interrupted", what)
	case code == 0:
		return backup.Wrap(backup.CodeTransient, err, "could not %s: Blob Storage could not be reached or did not answer in time", what)
	case checksumRefused(err):
		return backup.Wrap(backup.CodeTransient, err, "could not %s: Blob Storage refused data damaged on the way (its MD5 did not match)", what)
	case code == 408 || code == 429 || code >= 500:
		return backup.Wrap(backup.CodeTransient, err, "could not %s: Blob Storage is busy or failing (it answered %s)", what, answer(err))
	case code == 401 || code == 403:
		return backup.Wrap(backup.CodeInvalidState, err, "could not %s: the service's identity lacks permission (Blob Storage answered %s)", what, answer(err))
	case errors.As(err, &re):
		return backup.Wrap(backup.CodeInternal, err, "could not %s: Blob Storage refused it (it answered %s)", what, answer(err))
	}
	return backup.Wrap(backup.CodeInternal, err, "could not %s", what)
}

// answer names a response for a message: "503 ServerBusy".
func answer(err error) string {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return "nothing"
	}
	s := strconv.Itoa(re.StatusCode)
	if re.ErrorCode != "" {
		s += " " + re.ErrorCode
	} else if t := http.StatusText(re.StatusCode); t != "" {
		s += " " + t
	}
	return s
}

// statusOf returns the HTTP status of an Azure response error, or 0 for errors without a response.
func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// checksumRefused reports Storage's refusal of a block whose bytes do not match its Content-MD5: code
// Md5Mismatch in Azure; Azurite answers InvalidOperation "Provided contentMD5 doesn't match."
func checksumRefused(err error) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 400 {
		return false
	}
	return re.ErrorCode == string(bloberror.MD5Mismatch) ||
		(re.ErrorCode == string(bloberror.InvalidOperation) && strings.Contains(strings.ToLower(err.Error()), "contentmd5"))
}
