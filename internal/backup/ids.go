package backup

import (
	"regexp"
	"strings"
	"unicode"
)

// Identifiers are validated before they reach a Table Storage key or filter, a blob path or a SQL
// statement, so no field can inject OData, a path or SQL.

var namespacePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateNamespace accepts Kubernetes-style namespace names (DNS labels): 1-63 lowercase letters,
// digits and dashes, starting and ending with a letter or digit.
func ValidateNamespace(ns string) error {
	if !namespacePattern.MatchString(ns) {
		return Errorf(CodeInvalidParameters, "namespace %s is not a valid namespace name (1-63 lowercase letters, digits, dashes)", quote(ns))
	}
	return nil
}

// ValidateUUID accepts a canonical UUID (36 characters, with dashes, any case) and returns it lowercased.
func ValidateUUID(kind, id string) (string, error) {
	u, ok := CanonicalUUID(id)
	if !ok {
		return "", Errorf(CodeInvalidParameters, "%s %s is not a UUID", kind, quote(id))
	}
	return u, nil
}

// CanonicalUUID returns s in lowercase canonical form (8-4-4-4-12 hexadecimal digits) and true, or ""
// and false when s is not a UUID in that form. Uppercase digits are accepted. It is the one UUID check
// of the service: API ids, file documents' UUIDs, archive entries.
func CanonicalUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return "", false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return "", false
		}
	}
	return strings.ToLower(s), true
}

// ValidatePrincipalID accepts an OIDC subject or Entra object id: 1-128 printable characters without
// the characters Table Storage keys forbid (/ \ # ?) and without quotes.
func ValidatePrincipalID(id string) error {
	if id == "" || len(id) > 128 || strings.ContainsAny(id, `/\#?'"`) {
		return Errorf(CodeInvalidParameters, "principal id %s is not valid", quote(id))
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return Errorf(CodeInvalidParameters, "principal id %s is not valid", quote(id))
		}
	}
	return nil
}

// quote shows a user-supplied value in an error message safely and briefly.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(`"`+strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)+`"`, "?")
}
