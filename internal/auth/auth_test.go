package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// wantAuthError fails unless err is a *backup.Error with code and message.
func wantAuthError(t *testing.T, err error, code backup.Code, msg string) {
	t.Helper()
	var be *backup.Error
	if !errors.As(err, &be) {
		t.Fatalf("got error %v (%T), want a *backup.Error with code %s", err, err, code)
	}
	if be.Code != code {
		t.Errorf("got code %s, want %s (error %v)", be.Code, code, err)
	}
	if be.Message != msg {
		t.Errorf("got message %q, want %q", be.Message, msg)
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		want    string
		wantMsg string // empty: success
	}{
		{name: "canonical", header: "Bearer abc.def.ghi", want: "abc.def.ghi"},
		{name: "lower-case scheme", header: "bearer abc.def.ghi", want: "abc.def.ghi"},
		{name: "upper-case scheme", header: "BEARER abc.def.ghi", want: "abc.def.ghi"},
		{name: "several spaces", header: "Bearer   abc.def.ghi", want: "abc.def.ghi"},
		{name: "surrounding whitespace", header: " \tBearer abc.def.ghi \t", want: "abc.def.ghi"},
		{name: "padding and b64 symbols", header: "Bearer a-b_c~d+e/f==", want: "a-b_c~d+e/f=="},
		{name: "empty", header: "", wantMsg: msgMissingToken},
		{name: "blank", header: "   ", wantMsg: msgMissingToken},
		{name: "scheme only", header: "Bearer", wantMsg: msgMissingToken},
		{name: "scheme and space", header: "Bearer ", wantMsg: msgMissingToken},
		{name: "basic scheme", header: "Basic dXNlcjpwYXNz", wantMsg: msgMissingToken},
		{name: "token without scheme", header: "abc.def.ghi", wantMsg: msgMissingToken},
		{name: "scheme glued to token", header: "Bearerabc.def.ghi", wantMsg: msgMissingToken},
		{name: "two tokens", header: "Bearer abc def", wantMsg: msgMalformedHeader},
		{name: "tab inside", header: "Bearer abc\tdef", wantMsg: msgMalformedHeader},
		{name: "comma list", header: "Bearer abc, Bearer def", wantMsg: msgMalformedHeader},
		{name: "padding only", header: "Bearer ==", wantMsg: msgMalformedHeader},
		{name: "padding in the middle", header: "Bearer ab=c", wantMsg: msgMalformedHeader},
		{name: "non-ascii", header: "Bearer abcé", wantMsg: msgMalformedHeader},
		{name: "largest allowed", header: "Bearer " + strings.Repeat("a", MaxTokenBytes), want: strings.Repeat("a", MaxTokenBytes)},
		{name: "oversized", header: "Bearer " + strings.Repeat("a", MaxTokenBytes+1), wantMsg: msgTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bearerToken(tt.header)
			if tt.wantMsg != "" {
				wantAuthError(t, err, backup.CodeUnauthenticated, tt.wantMsg)
				return
			}
			if err != nil {
				t.Fatalf("bearerToken: %v", err)
			}
			if got != tt.want {
				t.Errorf("got token %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckTimes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) *float64 {
		f := float64(now.Add(d).Unix())
		return &f
	}
	negative := -5.0
	tests := []struct {
		name    string
		c       claims
		wantMsg string // empty: valid
	}{
		{name: "valid", c: claims{Expiry: at(time.Hour), NotBefore: at(-time.Minute)}},
		{name: "expired within skew", c: claims{Expiry: at(-ClockSkew)}},
		{name: "expired beyond skew", c: claims{Expiry: at(-ClockSkew - time.Second)}, wantMsg: msgExpired},
		{name: "expired long ago", c: claims{Expiry: at(-24 * time.Hour)}, wantMsg: msgExpired},
		{name: "no exp", c: claims{}, wantMsg: msgNoExpiry},
		{name: "negative exp", c: claims{Expiry: &negative}, wantMsg: msgMalformedToken},
		{name: "nbf within skew", c: claims{Expiry: at(time.Hour), NotBefore: at(ClockSkew)}},
		{name: "nbf beyond skew", c: claims{Expiry: at(time.Hour), NotBefore: at(ClockSkew + time.Second)}, wantMsg: msgNotYetValid},
		{name: "negative nbf", c: claims{Expiry: at(time.Hour), NotBefore: &negative}, wantMsg: msgMalformedToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkTimes(tt.c, now)
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("checkTimes: got %v, want nil", err)
				}
				return
			}
			wantAuthError(t, err, backup.CodeUnauthenticated, tt.wantMsg)
		})
	}
}

func TestNumericDateFraction(t *testing.T) {
	got, ok := numericDate(1_800_000_000.5)
	if want := time.Unix(1_800_000_000, 500_000_000); !ok || !got.Equal(want) {
		t.Errorf("numericDate(1800000000.5) = %v, %v; want %v, true", got, ok, want)
	}
}

func TestPrincipalContext(t *testing.T) {
	if _, ok := PrincipalFrom(t.Context()); ok {
		t.Errorf("PrincipalFrom(empty context): got ok, want none")
	}
	want := Principal{ID: "oid-1", Subject: "sub-1", ObjectID: "oid-1", TenantID: "tid", Name: "Demo"}
	got, ok := PrincipalFrom(WithPrincipal(t.Context(), want))
	if !ok || got != want {
		t.Errorf("PrincipalFrom = %+v, %v; want %+v, true", got, ok, want)
	}
}

// TestChallenge: RFC 6750 section 3.1: no error code when the request carried no bearer token (no
// header, another scheme, an empty one), invalid_token when one was sent; exactly the headers
// bearerToken reports as missing get no error code.
func TestChallenge(t *testing.T) {
	tests := []struct {
		header string
		want   string
	}{
		{"", `Bearer realm="r"`},
		{"   ", `Bearer realm="r"`},
		{"Basic dXNlcjpwYXNz", `Bearer realm="r"`},
		{"Bearer", `Bearer realm="r"`},
		{"Bearer    ", `Bearer realm="r"`},
		{"Bearer abc.def.ghi", `Bearer realm="r", error="invalid_token"`},
		{"bearer abc", `Bearer realm="r", error="invalid_token"`},
		{"Bearer a b", `Bearer realm="r", error="invalid_token"`},
	}
	for _, tt := range tests {
		if got := Challenge("r", tt.header); got != tt.want {
			t.Errorf("Challenge(%q) = %s, want %s", tt.header, got, tt.want)
		}
		_, err := bearerToken(tt.header)
		missing := err != nil && err.Error() == msgMissingToken
		if missing == SentBearer(tt.header) {
			t.Errorf("%q: bearerToken says missing=%v, SentBearer says %v", tt.header, missing, SentBearer(tt.header))
		}
	}
	if got := Challenge(`a"b`, ""); got != `Bearer realm="a\"b"` {
		t.Errorf("quoted realm: %s", got)
	}
}
