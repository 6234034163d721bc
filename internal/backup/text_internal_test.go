package backup

import (
	"encoding/json"
	"strings"
	"testing"
)

// Warnings are bounded by their size as stored (JSON): control characters escape to six bytes each,
// and Azure refuses a property over 64 KiB.
func TestBoundWarningsCountsEscapedText(t *testing.T) {
	ws := make([]string, 40)
	for i := range ws {
		ws[i] = strings.Repeat("\x01", 900)
	}
	out := boundWarnings(ws)
	b, _ := json.Marshal(out)
	if len(b) > maxWarningsBytes+200 || len(out) >= len(ws) {
		t.Errorf("%d warnings kept, %d bytes of JSON", len(out), len(b))
	}
}
