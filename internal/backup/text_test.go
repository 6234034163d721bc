package backup_test

import (
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

func TestCountSaysOneOrMany(t *testing.T) {
	for n, want := range map[int]string{0: "0 warnings", 1: "1 warning", 2: "2 warnings", 9950: "9,950 warnings", 1234567: "1,234,567 warnings"} {
		if got := backup.Count(n, "warning"); got != want {
			t.Errorf("Count(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestTruncateKeepsRunes(t *testing.T) {
	got := backup.Truncate(strings.Repeat("é", 10), 5) // 2 bytes a rune: 5 bytes cut one in half
	if got != "éé…" {
		t.Errorf("got %q", got)
	}
	if got := backup.Truncate("  short  ", 100); got != "short" {
		t.Errorf("got %q", got)
	}
}
