package localissuer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

const (
	testClientID = "console-client"
	testAPI      = "api://backups-test"
	testRedirect = "http://127.0.0.1:7071/api/console/callback"
	// testRedirect2 is a second redirect URI of the console, on another origin (a browser may open
	// either host name).
	testRedirect2 = "http://localhost:7071/api/console/callback"
	// The verifier and challenge of RFC 7636 appendix B.
	testVerifier  = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	testChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
)

var (
	alice = User{Subject: "sub-alice", ObjectID: "oid-alice", Name: "Alice Admin"}
	bob   = User{Subject: "sub-bob", ObjectID: "oid-bob", Name: "Bob Guest"}
)

// fakeClock is the code expiry clock of a test issuer.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// flowIssuer is an issuer served over loopback HTTP with the console registered and alice signing in.
type flowIssuer struct {
	*Issuer
	url    string
	client *http.Client // does not follow redirects, so that tests see the authorize answer
	clock  *fakeClock
}

func startFlow(t *testing.T) *flowIssuer {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	iss := newIssuer(t, Options{Issuer: "http://" + srv.Listener.Addr().String()})
	clock := &fakeClock{t: time.Now()}
	iss.now = clock.Now
	iss.RegisterClient(Client{ID: testClientID, RedirectURIs: []string{testRedirect, testRedirect2}, Audience: testAPI})
	iss.SetSignInUser(alice)
	srv.Config.Handler = iss.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Timeout = 10 * time.Second
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &flowIssuer{Issuer: iss, url: iss.URL(), client: client, clock: clock}
}

// authorizeQuery is the console's authorize request.
func authorizeQuery() url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {testClientID},
		"redirect_uri":          {testRedirect},
		"scope":                 {"openid profile " + testAPI + "/user_impersonation"},
		"state":                 {"st-123"},
		"nonce":                 {"n-456"},
		"code_challenge":        {testChallenge},
		"code_challenge_method": {"S256"},
	}
}

// tokenForm redeems code as the console does.
func tokenForm(code string) url.Values {
	return url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code},
		"redirect_uri":  {testRedirect},
		"client_id":     {testClientID},
		"code_verifier": {testVerifier},
	}
}

func (f *flowIssuer) authorize(t *testing.T, q url.Values) *http.Response {
	t.Helper()
	resp, err := f.client.Get(f.url + AuthorizePath + "?" + q.Encode())
	if err != nil {
		t.Fatalf("GET authorize: %v", err)
	}
	resp.Body.Close()
	return resp
}

// redirected checks that resp sends the browser to a URL starting with base and returns its query.
func redirected(t *testing.T, resp *http.Response, base string) url.Values {
	t.Helper()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: status %d, want 302", resp.StatusCode)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("authorize: Cache-Control %q, want no-store", got)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("authorize: Location %q: %v", resp.Header.Get("Location"), err)
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != base {
		t.Fatalf("authorize redirected to %s, want %s", loc, base)
	}
	return loc.Query()
}

// signIn runs the authorize request q and returns the code it redirects with.
func (f *flowIssuer) signIn(t *testing.T, q url.Values) string {
	t.Helper()
	back := redirected(t, f.authorize(t, q), q.Get("redirect_uri"))
	if back.Get("error") != "" {
		t.Fatalf("authorize: error %s (%s), want a code", back.Get("error"), back.Get("error_description"))
	}
	if got := back.Get("state"); got != q.Get("state") {
		t.Errorf("authorize: state %q, want %q", got, q.Get("state"))
	}
	code := back.Get("code")
	if len(code) != 43 {
		t.Fatalf("authorize: code %q, want 43 base64url characters (32 random bytes)", code)
	}
	return code
}

type tokenReply struct {
	status int
	header http.Header
	tokenResponse
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func (f *flowIssuer) token(t *testing.T, form url.Values, header http.Header) tokenReply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url+TokenPath, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("POST token: %v", err)
	}
	defer resp.Body.Close()
	reply := tokenReply{status: resp.StatusCode, header: resp.Header}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Fatalf("POST token: status %d, Content-Type %q, want application/json", resp.StatusCode, got)
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		t.Fatalf("POST token: decode: %v", err)
	}
	return reply
}

// redeem exchanges code and fails the test unless tokens come back.
func (f *flowIssuer) redeem(t *testing.T, form url.Values) tokenReply {
	t.Helper()
	r := f.token(t, form, nil)
	if r.status != http.StatusOK || r.AccessToken == "" || r.IDToken == "" {
		t.Fatalf("POST token: status %d, error %q (%s), want 200 with tokens", r.status, r.Error, r.Description)
	}
	return r
}

func TestS256MatchesRFC7636(t *testing.T) {
	if got := s256(testVerifier); got != testChallenge {
		t.Errorf("s256(%q) = %q, want %q", testVerifier, got, testChallenge)
	}
}

func TestAuthorizationCodeFlow(t *testing.T) {
	f := startFlow(t)
	r := f.redeem(t, tokenForm(f.signIn(t, authorizeQuery())))
	if r.TokenType != "Bearer" || r.ExpiresIn != int64(DefaultTTL.Seconds()) || r.Scope != authorizeQuery().Get("scope") {
		t.Errorf("token_type %q expires_in %d scope %q, want Bearer, %d and the requested scope", r.TokenType, r.ExpiresIn, r.Scope, int64(DefaultTTL.Seconds()))
	}
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Pragma") != "no-cache" {
		t.Errorf("Cache-Control %q Pragma %q, want no-store and no-cache", r.header.Get("Cache-Control"), r.header.Get("Pragma"))
	}

	// A real OIDC client library accepts the discovery document and both tokens.
	ctx := oidc.ClientContext(t.Context(), f.client)
	provider, err := oidc.NewProvider(ctx, f.url)
	if err != nil {
		t.Fatalf("oidc.NewProvider: %v", err)
	}
	if got := provider.Endpoint(); got.AuthURL != f.url+AuthorizePath || got.TokenURL != f.url+TokenPath {
		t.Errorf("endpoints %+v, want %s and %s", got, f.url+AuthorizePath, f.url+TokenPath)
	}
	type identity struct {
		OID  string `json:"oid"`
		Name string `json:"name"`
	}
	check := func(kind, raw, aud string) *oidc.IDToken {
		t.Helper()
		tok, err := provider.Verifier(&oidc.Config{ClientID: aud}).Verify(ctx, raw)
		if err != nil {
			t.Fatalf("%s: verify for audience %s: %v", kind, aud, err)
		}
		var id identity
		if err := tok.Claims(&id); err != nil {
			t.Fatal(err)
		}
		if tok.Subject != alice.Subject || id.OID != alice.ObjectID || id.Name != alice.Name {
			t.Errorf("%s: sub=%q oid=%q name=%q, want %+v", kind, tok.Subject, id.OID, id.Name, alice)
		}
		if left := time.Until(tok.Expiry); left < DefaultTTL-time.Minute || left > DefaultTTL+time.Second {
			t.Errorf("%s: expires in %v, want about %v", kind, left, DefaultTTL)
		}
		return tok
	}
	check("access token", r.AccessToken, testAPI)
	if id := check("id token", r.IDToken, testClientID); id.Nonce != "n-456" {
		t.Errorf("id token nonce %q, want n-456", id.Nonce)
	}
	// And against the JWKS directly: the access token is not for the client, the id token is.
	if _, claims := verifyToken(t, f.Issuer, r.AccessToken); claims["aud"] != testAPI || claims["nonce"] != nil {
		t.Errorf("access token aud=%v nonce=%v, want %s and no nonce", claims["aud"], claims["nonce"], testAPI)
	}
	if _, claims := verifyToken(t, f.Issuer, r.IDToken); claims["aud"] != testClientID {
		t.Errorf("id token aud=%v, want %s", claims["aud"], testClientID)
	}
}

func TestIDTokenWithoutNonce(t *testing.T) {
	f := startFlow(t)
	q := authorizeQuery()
	q.Del("nonce")
	r := f.redeem(t, tokenForm(f.signIn(t, q)))
	if _, claims := verifyToken(t, f.Issuer, r.IDToken); claims["nonce"] != nil {
		t.Errorf("id token nonce %v, want none when the request had none", claims["nonce"])
	}
}

func TestDiscoveryAdvertisesCodeFlow(t *testing.T) {
	iss := newIssuer(t, Options{Issuer: "http://127.0.0.1:8090"})
	var doc map[string]any
	getJSON(t, iss.Handler(), DiscoveryPath, &doc)
	want := map[string]any{
		"authorization_endpoint":                "http://127.0.0.1:8090" + AuthorizePath,
		"token_endpoint":                        "http://127.0.0.1:8090" + TokenPath,
		"response_types_supported":              []any{"code", "id_token"},
		"grant_types_supported":                 []any{"authorization_code"},
		"code_challenge_methods_supported":      []any{"S256"},
		"scopes_supported":                      []any{"openid", "profile"},
		"token_endpoint_auth_methods_supported": []any{"none"},
	}
	for k, v := range want {
		if fmt.Sprint(doc[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
}

func TestAuthorizeRefusesWithoutRedirecting(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(q url.Values)
		reply string
	}{
		{name: "unknown client", edit: func(q url.Values) { q.Set("client_id", "someone-else") }, reply: `unknown client_id "someone-else"`},
		{name: "no client", edit: func(q url.Values) { q.Del("client_id") }, reply: "no client_id"},
		{name: "no redirect uri", edit: func(q url.Values) { q.Del("redirect_uri") }, reply: "no redirect_uri"},
		{name: "unregistered redirect uri", edit: func(q url.Values) { q.Set("redirect_uri", "http://evil.example/callback") }, reply: "not registered"},
		{name: "redirect uri differing by a slash", edit: func(q url.Values) { q.Set("redirect_uri", testRedirect+"/") }, reply: "not registered"},
		{name: "redirect uri with an added query", edit: func(q url.Values) { q.Set("redirect_uri", testRedirect+"?x=1") }, reply: "not registered"},
		{name: "another client's redirect uri", edit: func(q url.Values) { q.Set("redirect_uri", "http://127.0.0.1:9/other") }, reply: "not registered"},
		{name: "client id twice", edit: func(q url.Values) { q.Add("client_id", testClientID) }, reply: "more than once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFlow(t)
			f.RegisterClient(Client{ID: "other", RedirectURIs: []string{"http://127.0.0.1:9/other"}, Audience: testAPI})
			q := authorizeQuery()
			tt.edit(q)
			rec := httptest.NewRecorder()
			f.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, AuthorizePath+"?"+q.Encode(), nil))
			if rec.Code != http.StatusBadRequest || rec.Header().Get("Location") != "" {
				t.Fatalf("status %d Location %q, want 400 and no redirect", rec.Code, rec.Header().Get("Location"))
			}
			if !strings.Contains(rec.Body.String(), tt.reply) {
				t.Errorf("page %q, want it to say %q", rec.Body.String(), tt.reply)
			}
		})
	}
}

func TestAuthorizeRedirectsErrors(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(f *flowIssuer, q url.Values)
		wantError string
		wantDesc  string
	}{
		{name: "implicit flow", edit: func(_ *flowIssuer, q url.Values) { q.Set("response_type", "id_token") }, wantError: "unsupported_response_type"},
		{name: "no response type", edit: func(_ *flowIssuer, q url.Values) { q.Del("response_type") }, wantError: "unsupported_response_type"},
		{name: "no challenge", edit: func(_ *flowIssuer, q url.Values) { q.Del("code_challenge") }, wantError: "invalid_request", wantDesc: "PKCE"},
		{name: "plain challenge", edit: func(_ *flowIssuer, q url.Values) { q.Set("code_challenge_method", "plain") }, wantError: "invalid_request", wantDesc: "S256"},
		// RFC 7636 makes a missing method mean plain, which is refused.
		{name: "no challenge method", edit: func(_ *flowIssuer, q url.Values) { q.Del("code_challenge_method") }, wantError: "invalid_request", wantDesc: "S256"},
		{name: "short challenge", edit: func(_ *flowIssuer, q url.Values) { q.Set("code_challenge", testChallenge[:42]) }, wantError: "invalid_request", wantDesc: "43"},
		{name: "long challenge", edit: func(_ *flowIssuer, q url.Values) { q.Set("code_challenge", testChallenge+"A") }, wantError: "invalid_request", wantDesc: "43"},
		{name: "challenge not base64url", edit: func(_ *flowIssuer, q url.Values) { q.Set("code_challenge", "+"+testChallenge[1:]) }, wantError: "invalid_request", wantDesc: "43"},
		{name: "fragment response mode", edit: func(_ *flowIssuer, q url.Values) { q.Set("response_mode", "fragment") }, wantError: "invalid_request", wantDesc: "response_mode"},
		{name: "challenge twice", edit: func(_ *flowIssuer, q url.Values) { q.Add("code_challenge", testChallenge) }, wantError: "invalid_request", wantDesc: "more than once"},
		{name: "no user set up", edit: func(f *flowIssuer, _ url.Values) { f.SetSignInUser(User{}) },
			wantError: "access_denied", wantDesc: "no user is set up to sign in on the local issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFlow(t)
			q := authorizeQuery()
			tt.edit(f, q)
			back := redirected(t, f.authorize(t, q), testRedirect)
			if back.Get("error") != tt.wantError || !strings.Contains(back.Get("error_description"), tt.wantDesc) || back.Get("error_description") == "" {
				t.Errorf("error %q (%q), want %s with a description containing %q", back.Get("error"), back.Get("error_description"), tt.wantError, tt.wantDesc)
			}
			if back.Get("state") != "st-123" || back.Has("code") {
				t.Errorf("state %q code %q, want the request's state and no code", back.Get("state"), back.Get("code"))
			}
		})
	}
}

func TestAuthorizeRedirectQueryAndState(t *testing.T) {
	f := startFlow(t)
	withQuery := "http://127.0.0.1:7071/cb?tenant=a&x=1"
	f.RegisterClient(Client{ID: testClientID, RedirectURIs: []string{withQuery}, Audience: testAPI})

	q := authorizeQuery()
	q.Set("redirect_uri", withQuery)
	q.Set("state", "a b&c=d/é")
	back := redirected(t, f.authorize(t, q), "http://127.0.0.1:7071/cb")
	if back.Get("tenant") != "a" || back.Get("x") != "1" || back.Get("state") != "a b&c=d/é" || len(back.Get("code")) != 43 {
		t.Errorf("redirect query %v, want the redirect URI's tenant=a&x=1, the state as sent and a code", back)
	}
	form := tokenForm(back.Get("code"))
	form.Set("redirect_uri", withQuery)
	f.redeem(t, form)

	// Without a state, the answer has none either.
	q.Del("state")
	if back := redirected(t, f.authorize(t, q), "http://127.0.0.1:7071/cb"); back.Has("state") {
		t.Errorf("redirect query %v, want no state", back)
	}
}

func TestAuthorizeByPost(t *testing.T) {
	f := startFlow(t)
	resp, err := f.client.PostForm(f.url+AuthorizePath, authorizeQuery())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if back := redirected(t, resp, testRedirect); len(back.Get("code")) != 43 || back.Get("state") != "st-123" {
		t.Errorf("redirect query %v, want a code and the state", back)
	}
}

func TestTokenRefusals(t *testing.T) {
	set := func(k, v string) func(url.Values) { return func(form url.Values) { form.Set(k, v) } }
	del := func(k string) func(url.Values) { return func(form url.Values) { form.Del(k) } }
	tests := []struct {
		name       string
		edit       func(form url.Values)
		header     map[string]string
		wantStatus int
		wantError  string
		wantDesc   string
	}{
		{name: "refresh grant", edit: set("grant_type", "refresh_token"), wantStatus: 400, wantError: "unsupported_grant_type"},
		{name: "no grant type", edit: del("grant_type"), wantStatus: 400, wantError: "invalid_request", wantDesc: "grant_type"},
		{name: "unknown client", edit: set("client_id", "nobody"), wantStatus: 401, wantError: "invalid_client", wantDesc: "nobody"},
		{name: "client secret", edit: set("client_secret", "s"), wantStatus: 401, wantError: "invalid_client", wantDesc: "public"},
		{name: "basic auth", header: map[string]string{"Authorization": "Basic Y29uc29sZTp4"}, wantStatus: 401, wantError: "invalid_client", wantDesc: "public"},
		{name: "no client id", edit: del("client_id"), wantStatus: 400, wantError: "invalid_request", wantDesc: "client_id"},
		{name: "another client", edit: set("client_id", "other"), wantStatus: 400, wantError: "invalid_grant", wantDesc: "another client"},
		{name: "another registered redirect uri", edit: set("redirect_uri", testRedirect2), wantStatus: 400, wantError: "invalid_grant", wantDesc: "redirect_uri"},
		{name: "no redirect uri", edit: del("redirect_uri"), wantStatus: 400, wantError: "invalid_grant", wantDesc: "redirect_uri"},
		{name: "unknown code", edit: set("code", testChallenge), wantStatus: 400, wantError: "invalid_grant", wantDesc: "unknown"},
		{name: "no code", edit: del("code"), wantStatus: 400, wantError: "invalid_request", wantDesc: "code"},
		{name: "code twice", edit: func(form url.Values) { form.Add("code", form.Get("code")) }, wantStatus: 400, wantError: "invalid_request", wantDesc: "more than once"},
		{name: "wrong verifier", edit: set("code_verifier", strings.Repeat("a", 43)), wantStatus: 400, wantError: "invalid_grant", wantDesc: "does not match"},
		{name: "the challenge as verifier", edit: set("code_verifier", testChallenge), wantStatus: 400, wantError: "invalid_grant", wantDesc: "does not match"},
		{name: "short verifier", edit: set("code_verifier", testVerifier[:42]), wantStatus: 400, wantError: "invalid_grant", wantDesc: "43 to 128"},
		{name: "long verifier", edit: set("code_verifier", strings.Repeat("a", 129)), wantStatus: 400, wantError: "invalid_grant", wantDesc: "43 to 128"},
		{name: "verifier outside the alphabet", edit: set("code_verifier", testVerifier[:42]+"+"), wantStatus: 400, wantError: "invalid_grant", wantDesc: "43 to 128"},
		{name: "no verifier", edit: del("code_verifier"), wantStatus: 400, wantError: "invalid_request", wantDesc: "code_verifier"},
		{name: "json body", header: map[string]string{"Content-Type": "application/json"}, wantStatus: 400, wantError: "invalid_request", wantDesc: "content type"},
		{name: "oversized body", edit: set("pad", strings.Repeat("x", maxFormBytes)), wantStatus: 400, wantError: "invalid_request", wantDesc: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFlow(t)
			f.RegisterClient(Client{ID: "other", RedirectURIs: []string{testRedirect}, Audience: testAPI})
			form, h := tokenForm(f.signIn(t, authorizeQuery())), http.Header{}
			if tt.edit != nil {
				tt.edit(form)
			}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			r := f.token(t, form, h)
			if r.status != tt.wantStatus || r.Error != tt.wantError || !strings.Contains(r.Description, tt.wantDesc) || r.Description == "" {
				t.Errorf("status %d error %q (%q), want %d %s with a description containing %q", r.status, r.Error, r.Description, tt.wantStatus, tt.wantError, tt.wantDesc)
			}
			if r.AccessToken != "" || r.IDToken != "" {
				t.Errorf("a refusal carries tokens")
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
			}
		})
	}
}

func TestCodeIsSingleUse(t *testing.T) {
	f := startFlow(t)
	code := f.signIn(t, authorizeQuery())
	f.redeem(t, tokenForm(code))
	if r := f.token(t, tokenForm(code), nil); r.status != 400 || r.Error != "invalid_grant" || !strings.Contains(r.Description, "already used") {
		t.Errorf("second redemption: status %d error %q (%q), want 400 invalid_grant, already used", r.status, r.Error, r.Description)
	}

	// A failed attempt uses the code up too, so that verifiers cannot be tried one after another.
	code = f.signIn(t, authorizeQuery())
	wrong := tokenForm(code)
	wrong.Set("code_verifier", strings.Repeat("b", 43))
	if r := f.token(t, wrong, nil); r.Error != "invalid_grant" {
		t.Fatalf("wrong verifier: error %q, want invalid_grant", r.Error)
	}
	if r := f.token(t, tokenForm(code), nil); r.status != 400 || r.Error != "invalid_grant" {
		t.Errorf("right verifier after a wrong one: status %d error %q, want 400 invalid_grant", r.status, r.Error)
	}
}

func TestCodeExpires(t *testing.T) {
	f := startFlow(t)
	code := f.signIn(t, authorizeQuery())
	f.clock.Advance(codeTTL - time.Second)
	f.redeem(t, tokenForm(code))

	code = f.signIn(t, authorizeQuery())
	f.clock.Advance(codeTTL)
	if r := f.token(t, tokenForm(code), nil); r.status != 400 || r.Error != "invalid_grant" || !strings.Contains(r.Description, "expired") {
		t.Errorf("expired code: status %d error %q (%q), want 400 invalid_grant, expired", r.status, r.Error, r.Description)
	}
	// Expired codes, redeemed or not, are forgotten.
	f.signIn(t, authorizeQuery())
	f.clock.Advance(codeTTL)
	f.signIn(t, authorizeQuery())
	f.flow.mu.Lock()
	n := len(f.flow.codes)
	f.flow.mu.Unlock()
	if n != 1 {
		t.Errorf("%d codes kept, want only the unexpired one", n)
	}
}

func TestTokenCORS(t *testing.T) {
	f := startFlow(t)
	f.RegisterClient(Client{ID: "hosted", RedirectURIs: []string{"https://Console.Example:443/cb"}, Audience: testAPI})
	tests := []struct {
		origin  string
		allowed bool
	}{
		{origin: "http://127.0.0.1:7071", allowed: true},
		{origin: "http://localhost:7071", allowed: true},
		{origin: "https://console.example", allowed: true},
		{origin: "http://127.0.0.1:7072", allowed: false},
		{origin: "https://127.0.0.1:7071", allowed: false},
		{origin: "http://evil.example", allowed: false},
		{origin: "null", allowed: false},
		{origin: "", allowed: false},
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			want := ""
			if tt.allowed {
				want = tt.origin
			}
			h := http.Header{}
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			// Refusals are readable too, so that the page can show why.
			for _, form := range []url.Values{tokenForm(f.signIn(t, authorizeQuery())), {"grant_type": {"password"}}} {
				r := f.token(t, form, h)
				if got := r.header.Get("Access-Control-Allow-Origin"); got != want {
					t.Errorf("POST (%d): Access-Control-Allow-Origin %q, want %q", r.status, got, want)
				}
				if got := r.header.Values("Vary"); len(got) != 1 || got[0] != "Origin" {
					t.Errorf("POST: Vary %q, want Origin", got)
				}
			}

			req, err := http.NewRequest(http.MethodOptions, f.url+TokenPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header = h.Clone()
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "content-type")
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				t.Errorf("preflight: status %d, want 204", resp.StatusCode)
			}
			wantPreflight := map[string]string{"Access-Control-Allow-Origin": want}
			if tt.allowed {
				wantPreflight["Access-Control-Allow-Methods"] = "POST"
				wantPreflight["Access-Control-Allow-Headers"] = "Content-Type"
				wantPreflight["Access-Control-Max-Age"] = "600"
			}
			for k, v := range wantPreflight {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("preflight: %s %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestPublicDocumentsAllowAnyOrigin(t *testing.T) {
	iss := newIssuer(t, Options{Issuer: "http://127.0.0.1:8090"})
	for _, path := range []string{DiscoveryPath, JWKSPath} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Origin", "http://anywhere.example")
		rec := httptest.NewRecorder()
		iss.Handler().ServeHTTP(rec, req)
		if got := rec.Header().Get("Access-Control-Allow-Origin"); rec.Code != 200 || got != "*" {
			t.Errorf("GET %s: status %d, Access-Control-Allow-Origin %q, want 200 and *", path, rec.Code, got)
		}
	}
}

func TestOriginOf(t *testing.T) {
	for raw, want := range map[string]string{
		"http://127.0.0.1:7071/api/console/callback": "http://127.0.0.1:7071",
		"HTTPS://Console.Example:443/cb":             "https://console.example",
		"http://localhost:80":                        "http://localhost",
		"http://[::1]:8080/x":                        "http://[::1]:8080",
		"https://host:8443":                          "https://host:8443",
		"null":                                       "",
		"ftp://host":                                 "",
		"http://host:port":                           "",
	} {
		if got := originOf(raw); got != want {
			t.Errorf("originOf(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestSignInUserSwitch(t *testing.T) {
	f := startFlow(t)
	early := f.signIn(t, authorizeQuery()) // issued for alice
	for _, u := range []User{bob, alice, bob} {
		f.SetSignInUser(u)
		r := f.redeem(t, tokenForm(f.signIn(t, authorizeQuery())))
		for kind, raw := range map[string]string{"access": r.AccessToken, "id": r.IDToken} {
			_, claims := verifyToken(t, f.Issuer, raw)
			if claims["sub"] != u.Subject || claims["oid"] != u.ObjectID || claims["name"] != u.Name {
				t.Errorf("%s token sub=%v oid=%v name=%v, want %+v", kind, claims["sub"], claims["oid"], claims["name"], u)
			}
		}
	}
	// A code is for the user signed in when it was issued.
	r := f.redeem(t, tokenForm(early))
	if _, claims := verifyToken(t, f.Issuer, r.AccessToken); claims["sub"] != alice.Subject {
		t.Errorf("code issued for alice gave a token for %v", claims["sub"])
	}
}

func TestAccessTokenTTL(t *testing.T) {
	tests := []struct {
		ttl  time.Duration
		want int64
	}{
		{ttl: 90 * time.Second, want: 90},
		{ttl: 1500 * time.Millisecond, want: 2},
		{ttl: 0, want: int64(DefaultTTL.Seconds())},
		{ttl: -time.Minute, want: int64(DefaultTTL.Seconds())},
	}
	for _, tt := range tests {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			f := startFlow(t)
			f.SetAccessTokenTTL(time.Minute) // overridden below
			f.SetAccessTokenTTL(tt.ttl)
			r := f.redeem(t, tokenForm(f.signIn(t, authorizeQuery())))
			if r.ExpiresIn != tt.want {
				t.Errorf("expires_in %d, want %d", r.ExpiresIn, tt.want)
			}
			for kind, raw := range map[string]string{"access": r.AccessToken, "id": r.IDToken} {
				_, claims := verifyToken(t, f.Issuer, raw)
				if got := int64(claims["exp"].(float64) - claims["iat"].(float64)); got != tt.want {
					t.Errorf("%s token exp - iat = %d, want %d", kind, got, tt.want)
				}
			}
		})
	}
}

func TestRegisterClientReplaces(t *testing.T) {
	f := startFlow(t)
	uris := []string{testRedirect2}
	f.RegisterClient(Client{ID: testClientID, RedirectURIs: uris, Audience: "api://new"})
	uris[0] = testRedirect // the issuer keeps its own copy

	rec := httptest.NewRecorder()
	f.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, AuthorizePath+"?"+authorizeQuery().Encode(), nil))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("redirect URI of the replaced registration: status %d, want 400", rec.Code)
	}
	q := authorizeQuery()
	q.Set("redirect_uri", testRedirect2)
	form := tokenForm(f.signIn(t, q))
	form.Set("redirect_uri", testRedirect2)
	r := f.redeem(t, form)
	if _, claims := verifyToken(t, f.Issuer, r.AccessToken); claims["aud"] != "api://new" {
		t.Errorf("access token aud %v, want the new registration's api://new", claims["aud"])
	}
}

// TestConcurrentSignIns changes the user and lifetime while sign-ins run (meaningful under -race).
func TestConcurrentSignIns(t *testing.T) {
	f := startFlow(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			// Not f.signIn and f.token: they may call t.Fatal, which only the test's goroutine can.
			for range 3 {
				if err := f.signInOnce(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		for n := range 20 {
			f.SetSignInUser([]User{alice, bob}[n%2])
			f.SetAccessTokenTTL(time.Duration(n+1) * time.Minute)
			f.RegisterClient(Client{ID: fmt.Sprintf("c%d", n), RedirectURIs: []string{"http://127.0.0.1:1/cb"}})
		}
	})
	wg.Wait()
}

// signInOnce runs the whole flow and reports what went wrong, if anything.
func (f *flowIssuer) signInOnce() error {
	resp, err := f.client.Get(f.url + AuthorizePath + "?" + authorizeQuery().Encode())
	if err != nil {
		return fmt.Errorf("authorize: %w", err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		return fmt.Errorf("authorize: status %d, Location %q, want a code", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = f.client.PostForm(f.url+TokenPath, tokenForm(loc.Query().Get("code")))
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	defer resp.Body.Close()
	var r tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK || r.AccessToken == "" {
		return fmt.Errorf("token: status %d (decode: %v), want 200 with an access token", resp.StatusCode, err)
	}
	return nil
}
