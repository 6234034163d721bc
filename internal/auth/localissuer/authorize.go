package localissuer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// AuthorizePath and TokenPath are the authorization code flow's endpoints, served by Handler
	// relative to the issuer URL.
	AuthorizePath = "/authorize"
	TokenPath     = "/token"

	// codeTTL is how long an authorization code can be redeemed, as short as Entra's (a few minutes
	// there): the console redeems it at once.
	codeTTL = 60 * time.Second
	// maxFormBytes bounds the body of an authorize or token request.
	maxFormBytes = 64 << 10
	// corsMaxAge is how long a browser may cache the token endpoint's preflight answer, in seconds.
	corsMaxAge = "600"
)

// Client is an application allowed to sign users in with the authorization code flow: a public
// client (no secret), which proves with PKCE that it started the sign-in it redeems.
type Client struct {
	// ID is the client_id, and the aud of the id tokens issued to the client.
	ID string
	// RedirectURIs are the callbacks the client may be sent back to, compared to the redirect_uri of
	// a request by string equality. Their origins may call the token endpoint from a browser (CORS).
	RedirectURIs []string
	// Audience is the aud of the access tokens issued to the client: the API it calls.
	Audience string
}

// User is the identity the authorization endpoint signs in, without asking: the local issuer has no
// login form. The zero User means nobody can sign in.
type User struct {
	Subject  string // sub
	ObjectID string // oid
	Name     string // name
}

// flowState is the authorization code flow's part of an Issuer, guarded by its own mutex so that
// minting (which takes Issuer.mu) can happen without holding it.
type flowState struct {
	mu        sync.Mutex
	clients   map[string]Client
	user      User
	accessTTL time.Duration // zero means DefaultTTL
	codes     map[string]*authCode
}

// authCode is what an authorization code stands for until it is redeemed.
type authCode struct {
	clientID, redirectURI, challenge, nonce, scope string
	user                                           User
	expires                                        time.Time
	// used keeps a redeemed code until it expires, so that a second redemption is told so.
	used bool
}

// RegisterClient lets c sign users in, replacing any client registered with the same ID.
func (i *Issuer) RegisterClient(c Client) {
	c.RedirectURIs = append([]string(nil), c.RedirectURIs...)
	i.flow.mu.Lock()
	defer i.flow.mu.Unlock()
	if i.flow.clients == nil {
		i.flow.clients = make(map[string]Client)
	}
	i.flow.clients[c.ID] = c
}

// SetSignInUser makes u the user that later authorization requests sign in; codes already issued keep
// the user they were issued for. The zero User makes them fail with access_denied.
func (i *Issuer) SetSignInUser(u User) {
	i.flow.mu.Lock()
	defer i.flow.mu.Unlock()
	i.flow.user = u
}

// SetAccessTokenTTL sets the lifetime of the tokens the token endpoint issues, rounded up to whole
// seconds (expires_in and exp count seconds); zero or negative restores DefaultTTL.
func (i *Issuer) SetAccessTokenTTL(d time.Duration) {
	if d > 0 {
		d = (d + time.Second - 1).Truncate(time.Second)
	}
	i.flow.mu.Lock()
	defer i.flow.mu.Unlock()
	i.flow.accessTTL = max(d, 0)
}

func (i *Issuer) clock() time.Time {
	if i.now != nil {
		return i.now()
	}
	return time.Now()
}

// pruneLocked forgets expired codes, used or not. Callers hold i.flow.mu.
func (i *Issuer) pruneLocked(now time.Time) {
	for code, c := range i.flow.codes {
		if !now.Before(c.expires) {
			delete(i.flow.codes, code)
		}
	}
}

// singleParams returns the named parameters of form, refusing any given more than once (RFC 6749
// §3.1), since which of two values counts would be a guess.
func singleParams(form url.Values, names ...string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	for _, n := range names {
		switch vs := form[n]; len(vs) {
		case 0:
		case 1:
			out[n] = vs[0]
		default:
			return nil, fmt.Errorf("parameter %s is given more than once", n)
		}
	}
	return out, nil
}

// parseForm reads the query and, for a POST, a form body of at most maxFormBytes.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	if r.Method == http.MethodPost {
		ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || ct != "application/x-www-form-urlencoded" {
			return fmt.Errorf("content type %q: want application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	}
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("read the request's parameters: %w", err)
	}
	return nil
}

// isChallenge reports whether s is an S256 code_challenge: the base64url SHA-256 of a verifier,
// 43 characters without padding.
func isChallenge(s string) bool {
	if len(s) != 43 {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// isVerifier reports whether s is a code_verifier as RFC 7636 §4.1 defines it.
func isVerifier(s string) bool {
	if len(s) < 43 || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && !strings.ContainsRune("-._~", rune(c)) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// serveAuthorize is the authorization endpoint (RFC 6749 §4.1.1, RFC 7636 §4.3). It signs in the
// configured user at once and sends the browser back to the client with a code, or with an error.
func (i *Issuer) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	// Until client and redirect URI are known good, errors are shown here: redirecting to an
	// unchecked URI would make the issuer an open redirector (RFC 6749 §4.1.2.1).
	refuse := func(format string, args ...any) {
		http.Error(w, "Sign-in refused: "+fmt.Sprintf(format, args...)+".", http.StatusBadRequest)
	}
	if err := parseForm(w, r); err != nil {
		refuse("%v", err)
		return
	}
	target, err := singleParams(r.Form, "client_id", "redirect_uri")
	if err != nil {
		refuse("%v", err)
		return
	}
	clientID, redirectURI := target["client_id"], target["redirect_uri"]
	i.flow.mu.Lock()
	client, known := i.flow.clients[clientID]
	i.flow.mu.Unlock()
	switch {
	case clientID == "":
		refuse("the request has no client_id")
		return
	case !known:
		refuse("unknown client_id %q", clientID)
		return
	case redirectURI == "":
		refuse("the request has no redirect_uri")
		return
	}
	if !slices.Contains(client.RedirectURIs, redirectURI) {
		refuse("redirect_uri %q is not registered for client %q", redirectURI, clientID)
		return
	}
	back, err := url.Parse(redirectURI)
	if err != nil || !back.IsAbs() {
		refuse("the registered redirect_uri %q is not an absolute URL", redirectURI)
		return
	}

	p, err := singleParams(r.Form, "response_type", "response_mode", "scope", "state", "code_challenge", "code_challenge_method", "nonce")
	// From here on the client hears about problems at its redirect URI, with its state.
	redirect := func(params url.Values) {
		if s := p["state"]; s != "" {
			params.Set("state", s)
		}
		q := back.Query()
		for k, vs := range params {
			q[k] = vs
		}
		u := *back
		u.RawQuery = q.Encode()
		w.Header().Set("Location", u.String())
		w.WriteHeader(http.StatusFound)
	}
	fail := func(code, description string) {
		redirect(url.Values{"error": {code}, "error_description": {description}})
	}
	if err != nil {
		p = map[string]string{"state": r.Form.Get("state")}
		fail("invalid_request", err.Error())
		return
	}
	switch {
	case p["response_type"] != "code":
		fail("unsupported_response_type", fmt.Sprintf("response_type %q is not supported: use code (the authorization code flow)", p["response_type"]))
		return
	case p["response_mode"] != "" && p["response_mode"] != "query":
		fail("invalid_request", fmt.Sprintf("response_mode %q is not supported: the response comes in the query", p["response_mode"]))
		return
	case p["code_challenge"] == "":
		fail("invalid_request", "PKCE is required: the request has no code_challenge")
		return
	case p["code_challenge_method"] != "S256":
		fail("invalid_request", fmt.Sprintf("code_challenge_method %q is not supported: use S256", p["code_challenge_method"]))
		return
	case !isChallenge(p["code_challenge"]):
		fail("invalid_request", "code_challenge is not an S256 challenge (43 base64url characters)")
		return
	}

	code, err := newCode()
	if err != nil {
		fail("server_error", err.Error())
		return
	}
	now := i.clock()
	i.flow.mu.Lock()
	i.pruneLocked(now)
	user := i.flow.user
	if user != (User{}) {
		if i.flow.codes == nil {
			i.flow.codes = make(map[string]*authCode)
		}
		i.flow.codes[code] = &authCode{clientID: clientID, redirectURI: redirectURI, challenge: p["code_challenge"],
			nonce: p["nonce"], scope: p["scope"], user: user, expires: now.Add(codeTTL)}
	}
	i.flow.mu.Unlock()
	if user == (User{}) {
		fail("access_denied", "no user is set up to sign in on the local issuer")
		return
	}
	redirect(url.Values{"code": {code}})
}

// newCode returns a fresh authorization code: 32 random bytes, base64url.
func newCode() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate authorization code: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenResponse is the token endpoint's success answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	IDToken     string `json:"id_token"`
	Scope       string `json:"scope,omitempty"`
}

// tokenError is a refusal of the token endpoint (RFC 6749 §5.2).
type tokenError struct {
	status      int
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

func refusal(status int, code, format string, args ...any) *tokenError {
	return &tokenError{status: status, Code: code, Description: fmt.Sprintf(format, args...)}
}

// serveToken is the token endpoint: it redeems an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.6).
func (i *Issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	i.allowOrigin(w, r)
	w.Header().Set("Pragma", "no-cache")
	resp, terr := i.redeem(w, r)
	if terr != nil {
		writeJSONStatus(w, terr.status, terr)
		return
	}
	writeJSON(w, resp)
}

func (i *Issuer) redeem(w http.ResponseWriter, r *http.Request) (*tokenResponse, *tokenError) {
	if err := parseForm(w, r); err != nil {
		return nil, refusal(http.StatusBadRequest, "invalid_request", "%v", err)
	}
	// Parameters belong in the body (RFC 6749 §4.1.3); the query is not looked at.
	p, err := singleParams(r.PostForm, "grant_type", "code", "redirect_uri", "client_id", "code_verifier")
	if err != nil {
		return nil, refusal(http.StatusBadRequest, "invalid_request", "%v", err)
	}
	switch {
	case p["grant_type"] == "":
		return nil, refusal(http.StatusBadRequest, "invalid_request", "the request has no grant_type")
	case p["grant_type"] != "authorization_code":
		return nil, refusal(http.StatusBadRequest, "unsupported_grant_type", "grant_type %q is not supported: use authorization_code", p["grant_type"])
	case r.Header.Get("Authorization") != "" || r.PostForm.Has("client_secret") || r.PostForm.Has("client_assertion"):
		// As Entra does for SPA clients: a public client has no credentials to present.
		return nil, refusal(http.StatusUnauthorized, "invalid_client", "the client is public: present no client credentials")
	case p["client_id"] == "":
		return nil, refusal(http.StatusBadRequest, "invalid_request", "the request has no client_id")
	case p["code"] == "":
		return nil, refusal(http.StatusBadRequest, "invalid_request", "the request has no code")
	case p["code_verifier"] == "":
		return nil, refusal(http.StatusBadRequest, "invalid_request", "the request has no code_verifier (PKCE is required)")
	}

	now := i.clock()
	i.flow.mu.Lock()
	client, known := i.flow.clients[p["client_id"]]
	var grant authCode
	c, found := i.flow.codes[p["code"]]
	// Any attempt at a known code uses it up, so that a verifier cannot be guessed in several tries.
	redeemable := found && !c.used && now.Before(c.expires)
	if found {
		grant = *c
		c.used = true
	}
	ttl := i.flow.accessTTL
	i.pruneLocked(now)
	i.flow.mu.Unlock()
	if ttl == 0 {
		ttl = DefaultTTL
	}

	switch {
	case !known:
		return nil, refusal(http.StatusUnauthorized, "invalid_client", "unknown client_id %q", p["client_id"])
	case !found:
		return nil, refusal(http.StatusBadRequest, "invalid_grant", "the authorization code is unknown or expired")
	case grant.used:
		return nil, refusal(http.StatusBadRequest, "invalid_grant", "the authorization code was already used")
	case !redeemable:
		return nil, refusal(http.StatusBadRequest, "invalid_grant", "the authorization code expired")
	case p["client_id"] != grant.clientID:
		return nil, refusal(http.StatusBadRequest, "invalid_grant", "the authorization code was issued to another client")
	case p["redirect_uri"] != grant.redirectURI:
		return nil, refusal(http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization request's")
	case !isVerifier(p["code_verifier"]):
		return nil, refusal(http.StatusBadRequest, "invalid_grant", "code_verifier is not 43 to 128 characters of A-Z a-z 0-9 - . _ ~")
	case subtle.ConstantTimeCompare([]byte(s256(p["code_verifier"])), []byte(grant.challenge)) != 1:
		return nil, refusal(http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge")
	}

	u := grant.user
	access, err := i.Token(TokenRequest{Subject: u.Subject, ObjectID: u.ObjectID, Name: u.Name, Audience: client.Audience, TTL: ttl})
	if err != nil {
		return nil, refusal(http.StatusInternalServerError, "server_error", "access token: %v", err)
	}
	idReq := TokenRequest{Subject: u.Subject, ObjectID: u.ObjectID, Name: u.Name, Audience: client.ID, TTL: ttl}
	if grant.nonce != "" {
		idReq.ExtraClaims = map[string]any{"nonce": grant.nonce}
	}
	id, err := i.Token(idReq)
	if err != nil {
		return nil, refusal(http.StatusInternalServerError, "server_error", "id token: %v", err)
	}
	return &tokenResponse{AccessToken: access, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second), IDToken: id, Scope: grant.scope}, nil
}

// serveTokenPreflight answers a browser's CORS preflight for the token endpoint.
func (i *Issuer) serveTokenPreflight(w http.ResponseWriter, r *http.Request) {
	if i.allowOrigin(w, r) {
		w.Header().Set("Access-Control-Allow-Methods", http.MethodPost)
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
		w.Header().Set("Access-Control-Max-Age", corsMaxAge)
	}
	w.WriteHeader(http.StatusNoContent)
}

// allowOrigin lets the request's Origin read the token endpoint's answer if it is the origin of a
// registered redirect URI: the page that received the code is the one that redeems it. It reports
// whether it did.
func (i *Issuer) allowOrigin(w http.ResponseWriter, r *http.Request) bool {
	w.Header().Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	want := originOf(origin)
	if want == "" {
		return false
	}
	i.flow.mu.Lock()
	defer i.flow.mu.Unlock()
	for _, c := range i.flow.clients {
		for _, u := range c.RedirectURIs {
			if originOf(u) == want {
				w.Header().Set("Access-Control-Allow-Origin", origin)
				return true
			}
		}
	}
	return false
}

// originOf returns the origin of an http(s) URL as a browser writes it (RFC 6454): lower case scheme
// and host, no default port. Empty if raw is not such a URL.
func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		if _, err := strconv.Atoi(port); err != nil {
			return ""
		}
		host += ":" + port
	}
	return scheme + "://" + host
}
