package auth

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"
)

// ClockSkew is the leeway allowed between the issuer's clock and ours when checking exp and nbf.
const ClockSkew = time.Minute

// allowedAlgs are the only signing algorithms accepted. "none" and the HMAC family are never accepted:
// with HS256 an attacker could sign with the issuer's public key as the shared secret.
var allowedAlgs = []string{"RS256", "ES256"}

// jwtHeader is the part of the JOSE header checked before signature verification.
type jwtHeader struct {
	Alg string `json:"alg"`
}

// claims are the token claims this package reads. A claim of the wrong JSON type makes the token
// malformed.
type claims struct {
	Issuer            string   `json:"iss"`
	Subject           string   `json:"sub"`
	Audience          audience `json:"aud"`
	Expiry            *float64 `json:"exp"`
	NotBefore         *float64 `json:"nbf"`
	ObjectID          string   `json:"oid"`
	TenantID          string   `json:"tid"`
	Name              string   `json:"name"`
	PreferredUsername string   `json:"preferred_username"`
}

// audience is the aud claim, which RFC 7519 allows to be one string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// parseToken checks the structure of a compact JWS (three base64url parts, JSON header and payload, a
// non-empty signature) and that its algorithm is allowed. Nothing in the result is trusted: the signature
// has not been verified yet. Errors are *backup.Error with CodeUnauthenticated.
func parseToken(raw string) (claims, error) {
	var h jwtHeader
	var c claims
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return c, unauthenticated(msgMalformedToken)
	}
	if !decodeJSONPart(parts[0], &h) || !decodeJSONPart(parts[1], &c) {
		return c, unauthenticated(msgMalformedToken)
	}
	if !slices.Contains(allowedAlgs, h.Alg) {
		return c, unauthenticated(msgAlgorithm)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) == 0 {
		return c, unauthenticated(msgMalformedToken)
	}
	return c, nil
}

// decodeJSONPart decodes one base64url part of a token into v, which must be a JSON object.
func decodeJSONPart(part string, v any) bool {
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil || len(b) == 0 || b[0] != '{' {
		return false
	}
	return json.Unmarshal(b, v) == nil
}

// checkTimes checks exp (required) and nbf (optional) against now, allowing ClockSkew either way.
func checkTimes(c claims, now time.Time) error {
	if c.Expiry == nil {
		return unauthenticated(msgNoExpiry)
	}
	exp, ok := numericDate(*c.Expiry)
	if !ok {
		return unauthenticated(msgMalformedToken)
	}
	if now.After(exp.Add(ClockSkew)) {
		return unauthenticated(msgExpired)
	}
	if c.NotBefore != nil {
		nbf, ok := numericDate(*c.NotBefore)
		if !ok {
			return unauthenticated(msgMalformedToken)
		}
		if now.Add(ClockSkew).Before(nbf) {
			return unauthenticated(msgNotYetValid)
		}
	}
	return nil
}

// numericDate converts a JWT NumericDate (seconds since the epoch, possibly fractional) to a time.
func numericDate(f float64) (time.Time, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<40 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// principal builds the Principal from verified claims.
func (c claims) principal() (Principal, error) {
	id := c.ObjectID
	if id == "" {
		id = c.Subject
	}
	if id == "" {
		return Principal{}, unauthenticated(msgNoSubject)
	}
	name := c.Name
	if name == "" {
		name = c.PreferredUsername
	}
	return Principal{ID: id, Subject: c.Subject, ObjectID: c.ObjectID, TenantID: c.TenantID, Name: name}, nil
}
