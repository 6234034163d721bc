// Package auth owns authentication of API callers: it turns the `Authorization: Bearer <JWT>` header of a
// request into a Principal, validating the token against an OIDC issuer (Entra ID in Azure, the local
// issuer of package localissuer for `make run` and tests).
//
// Contract: every authentication failure is a *backup.Error with code backup.CodeUnauthenticated (401)
// and a message that says what was wrong without repeating token contents. When the issuer cannot be
// reached (discovery or key set download fails) the error has code backup.CodeTransient (503) instead,
// because the caller's token may well be valid. There is deliberately no switch that skips
// authentication.
package auth

import (
	"context"
	"strings"

	"github.com/mxazure/backups/internal/backup"
)

// MaxTokenBytes is the largest bearer token accepted; longer tokens are rejected before any parsing.
const MaxTokenBytes = 16 << 10

// Principal is an authenticated caller.
type Principal struct {
	// ID identifies the caller for permissions and the activity log: the token's oid claim, or its sub
	// claim when there is no oid.
	ID string
	// Subject is the sub claim.
	Subject string
	// ObjectID is the oid claim (Entra ID's stable user or service principal id), empty if absent.
	ObjectID string
	// TenantID is the tid claim (Entra ID tenant), empty if absent.
	TenantID string
	// Name is a display name (name, else preferred_username), empty if absent. For display only.
	Name string
}

// Authenticator validates the Authorization header of a request.
type Authenticator interface {
	// Authenticate returns the caller named by authorizationHeader (the raw header value, "" when the
	// header is absent). Errors are *backup.Error: CodeUnauthenticated for a bad or missing token,
	// CodeTransient when the issuer is unreachable.
	Authenticate(ctx context.Context, authorizationHeader string) (Principal, error)
}

// Messages of the authentication failures (the detail of the 401 problem response).
const (
	msgMissingToken    = "missing bearer token"
	msgMalformedHeader = "malformed authorization header"
	msgTooLarge        = "bearer token too large"
	msgMalformedToken  = "malformed token"
	msgAlgorithm       = "token signing algorithm not allowed"
	msgSignature       = "token signature not valid"
	msgIssuer          = "token issuer does not match"
	msgAudience        = "token audience does not match"
	msgExpired         = "token expired"
	msgNoExpiry        = "token has no expiry"
	msgNotYetValid     = "token not yet valid"
	msgNoSubject       = "token has neither oid nor sub claim"
	msgUnavailable     = "identity provider unavailable, try again shortly"
)

func unauthenticated(msg string) *backup.Error {
	return backup.Errorf(backup.CodeUnauthenticated, "%s", msg)
}

// bearerToken extracts the token from an Authorization header value of the form "Bearer <token>"
// (RFC 6750 section 2.1: the scheme is case-insensitive, one or more spaces, then a b64token).
func bearerToken(header string) (string, error) {
	header = strings.Trim(header, " \t")
	if header == "" {
		return "", unauthenticated(msgMissingToken)
	}
	scheme, rest, found := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// Another scheme (Basic, Negotiate, ...) or a bare value: there is no bearer token.
		return "", unauthenticated(msgMissingToken)
	}
	token := strings.TrimLeft(rest, " ")
	if !found || token == "" {
		return "", unauthenticated(msgMissingToken)
	}
	if len(token) > MaxTokenBytes {
		return "", unauthenticated(msgTooLarge)
	}
	if !isB64Token(token) {
		return "", unauthenticated(msgMalformedHeader)
	}
	return token, nil
}

// SentBearer reports whether an Authorization header value carries a bearer token at all: false when
// it is absent or empty, or another scheme (Basic, Negotiate, ...).
func SentBearer(header string) bool {
	scheme, rest, _ := strings.Cut(strings.Trim(header, " \t"), " ")
	return strings.EqualFold(scheme, "Bearer") && strings.TrimLeft(rest, " ") != ""
}

// Challenge is the WWW-Authenticate value of a 401 answering a request with that Authorization header.
// RFC 6750 section 3.1: a request without credentials gets no error code (realm only); a token that was
// sent and refused gets error="invalid_token".
func Challenge(realm, header string) string {
	c := `Bearer realm="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(realm) + `"`
	if SentBearer(header) {
		c += `, error="invalid_token"`
	}
	return c
}

// isB64Token reports whether s matches RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
// "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

type principalKey struct{}

// WithPrincipal returns a context carrying p, for handlers behind an authenticating middleware.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal stored by WithPrincipal, and false when there is none.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
