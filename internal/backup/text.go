package backup

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// Bounds of what records carry, far inside Table Storage's limits (64 KiB a property, 1 MiB an
// entity), so that no amount of trouble makes a record unwritable.
const (
	maxStatusMessage   = 2000
	maxActivityMessage = 1000
	maxWarnings        = 50       // warnings listed one by one; the rest are summarised
	maxWarningsBytes   = 16 << 10 // total JSON text of the listed warnings (control characters escape to 6 bytes each)
	maxWarningLength   = 1000
)

// Truncate shortens a message for storage and display to about n bytes, on a rune boundary. It is the
// one truncation helper of the service.
func Truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// boundWarnings keeps at most maxWarnings warnings and maxWarningsBytes of text, and says how many
// more there were in a last line, so a snapshot with 10,000 problems still has a readable record.
func boundWarnings(ws []string) []string {
	out := make([]string, 0, min(len(ws), maxWarnings+1))
	size := 0
	for i, w := range ws {
		w = Truncate(w, maxWarningLength)
		n := encodedLen(w)
		if len(out) == maxWarnings || size+n > maxWarningsBytes {
			out = append(out, "and "+Count(len(ws)-i, "more warning"))
			break
		}
		out = append(out, w)
		size += n
	}
	return out
}

// encodedLen is the length of s as a JSON string, as records store warnings: a warning of control
// characters takes up to six times its length there.
func encodedLen(s string) int {
	b, err := json.Marshal(s)
	if err != nil {
		return len(s)
	}
	return len(b)
}

// Count says "1 file", "2 files", "10,000 files".
func Count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return thousands(int64(n)) + " " + noun + "s"
}

// warningsNote is ", 1 warning" or ", 3 warnings", or "" for none.
func warningsNote(n int) string {
	if n == 0 {
		return ""
	}
	return ", " + Count(n, "warning")
}

// thousands formats n with comma separators: 1234567 → "1,234,567".
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// userMessage is the part of an error a user can read: a domain error's message (never its cause, which
// may hold SDK dumps, URLs or pg_dump's stderr), or for any other error a sentence. Whenever something
// was left out, the message quotes a reference that the caller logs next to the full error.
func (s *Service) userMessage(err error) (msg, ref string) {
	var e *Error
	if errors.As(err, &e) && e.Code != CodeInternal && e.Message != "" {
		if e.Err == nil {
			return e.Message, ""
		}
		ref = newReference()
		return e.Message + " (reference " + ref + " in the service's log)", ref
	}
	ref = newReference()
	return "an internal error stopped it (reference " + ref + " in the service's log)", ref
}

// newReference returns a short random id that ties a message for users to a log entry.
func newReference() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
