package backup_test

import (
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

func TestCanonicalUUID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"0d3e301f-5551-46f8-ad44-8de2be084c95", "0d3e301f-5551-46f8-ad44-8de2be084c95", true},
		{"0D3E301F-5551-46F8-AD44-8DE2BE084C95", "0d3e301f-5551-46f8-ad44-8de2be084c95", true},
		{"0d3e301f555146f8ad448de2be084c95", "", false},
		{"{0d3e301f-5551-46f8-ad44-8de2be084c95}", "", false},
		{"0d3e301f-5551-46f8-ad44-8de2be084c9g", "", false},
		{"0d3e301f-5551-46f8-ad44_8de2be084c95", "", false},
		{"../../../../../../../../etc/passwd/xx", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := backup.CanonicalUUID(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("CanonicalUUID(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestValidateUUIDLowercases(t *testing.T) {
	got, err := backup.ValidateUUID("snapshot id", "0D3E301F-5551-46F8-AD44-8DE2BE084C95")
	if err != nil || got != "0d3e301f-5551-46f8-ad44-8de2be084c95" {
		t.Errorf("got %q, %v", got, err)
	}
	if _, err := backup.ValidateUUID("snapshot id", "urn:uuid:0d3e301f-5551-46f8-ad44-8de2be08"); backup.CodeOf(err) != backup.CodeInvalidParameters {
		t.Errorf("urn form: got %v, want INVALID_PARAMETERS", err)
	}
}
