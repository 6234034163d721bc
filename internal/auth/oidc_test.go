package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/mxazure/backups/internal/auth/localissuer"
	"github.com/mxazure/backups/internal/backup"
)

const testAudience = "api://backups-test"

// testIssuer is a localissuer served over loopback HTTP that can be taken down (connections closed
// without a response) and counts the requests it receives.
type testIssuer struct {
	*localissuer.Issuer
	client        *http.Client
	handler       http.Handler
	down          atomic.Bool
	gate          atomic.Pointer[chan struct{}] // when set, discovery requests wait for it to close
	discoveryHits atomic.Int64
	jwksHits      atomic.Int64
}

func startIssuer(t *testing.T) *testIssuer {
	t.Helper()
	ti := &testIssuer{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(ti.serveHTTP))
	iss, err := localissuer.New(localissuer.Options{
		KeyFile: filepath.Join(t.TempDir(), "issuer-key.pem"),
		Issuer:  "http://" + srv.Listener.Addr().String(),
	})
	if err != nil {
		t.Fatalf("localissuer.New: %v", err)
	}
	ti.Issuer, ti.handler = iss, iss.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	ti.client = srv.Client()
	ti.client.Timeout = 10 * time.Second
	return ti
}

func (ti *testIssuer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case localissuer.DiscoveryPath:
		ti.discoveryHits.Add(1)
		if gate := ti.gate.Load(); gate != nil {
			<-*gate
		}
	case localissuer.JWKSPath:
		ti.jwksHits.Add(1)
	}
	if ti.down.Load() {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	ti.handler.ServeHTTP(w, r)
}

// mint returns a token from the issuer.
func (ti *testIssuer) mint(t *testing.T, req localissuer.TokenRequest) string {
	t.Helper()
	tok, err := ti.Token(req)
	if err != nil {
		t.Fatalf("mint token: %v", err)
	}
	return tok
}

// currentKID is the kid the issuer signs with.
func (ti *testIssuer) currentKID(t *testing.T) string {
	t.Helper()
	kids, err := ti.KeyIDs()
	if err != nil {
		t.Fatal(err)
	}
	return kids[len(kids)-1]
}

func validRequest() localissuer.TokenRequest {
	return localissuer.TokenRequest{Subject: "sub-1", ObjectID: "oid-1", Name: "Demo User", Audience: testAudience}
}

// fakeClock is the authenticator's clock in tests; it starts at the real time so that issued tokens
// are valid.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newAuth(t *testing.T, issuerURL string, client *http.Client, clock *fakeClock) *OIDC {
	t.Helper()
	o, err := NewOIDC(t.Context(), Config{IssuerURL: issuerURL, Audience: testAudience, HTTPClient: client})
	if err != nil {
		t.Fatalf("NewOIDC: %v", err)
	}
	o.now = clock.Now
	return o
}

func bearer(tok string) string { return "Bearer " + tok }

// sign builds a compact JWS of claims with any algorithm and key, for tokens the issuer would not mint.
func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatalf("new %s signer: %v", alg, err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64JSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// goodClaims are claims the authenticator accepts for an issuer.
func goodClaims(issuer string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": issuer, "sub": "sub-1", "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

func TestAuthenticateValidTokens(t *testing.T) {
	ti := startIssuer(t)
	o := newAuth(t, ti.URL(), ti.client, newClock())
	now := time.Now()
	tests := []struct {
		name string
		req  localissuer.TokenRequest
		want Principal
	}{
		{
			name: "oid preferred over sub",
			req:  validRequest(),
			want: Principal{ID: "oid-1", Subject: "sub-1", ObjectID: "oid-1", Name: "Demo User"},
		},
		{
			name: "sub when there is no oid",
			req:  localissuer.TokenRequest{Subject: "sub-2", Audience: testAudience},
			want: Principal{ID: "sub-2", Subject: "sub-2"},
		},
		{
			name: "oid without sub",
			req:  localissuer.TokenRequest{ObjectID: "oid-3", Audience: testAudience},
			want: Principal{ID: "oid-3", ObjectID: "oid-3"},
		},
		{
			name: "entra v2 claims",
			req: localissuer.TokenRequest{Subject: "pairwise-sub", ObjectID: "oid-4", Audience: testAudience,
				ExtraClaims: map[string]any{"tid": "tenant-4", "preferred_username": "user@example.com", "ver": "2.0"}},
			want: Principal{ID: "oid-4", Subject: "pairwise-sub", ObjectID: "oid-4", TenantID: "tenant-4", Name: "user@example.com"},
		},
		{
			name: "audience list containing ours",
			req: localissuer.TokenRequest{Subject: "sub-5",
				ExtraClaims: map[string]any{"aud": []string{"other-api", testAudience}}},
			want: Principal{ID: "sub-5", Subject: "sub-5"},
		},
		{
			name: "expired within clock skew",
			req: localissuer.TokenRequest{Subject: "sub-6", Audience: testAudience,
				ExtraClaims: map[string]any{"exp": now.Add(-ClockSkew / 2).Unix()}},
			want: Principal{ID: "sub-6", Subject: "sub-6"},
		},
		{
			name: "not before within clock skew",
			req: localissuer.TokenRequest{Subject: "sub-7", Audience: testAudience,
				ExtraClaims: map[string]any{"nbf": now.Add(ClockSkew / 2).Unix()}},
			want: Principal{ID: "sub-7", Subject: "sub-7"},
		},
		{
			name: "no nbf",
			req:  localissuer.TokenRequest{Subject: "sub-8", Audience: testAudience, ExtraClaims: map[string]any{"nbf": nil}},
			want: Principal{ID: "sub-8", Subject: "sub-8"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := o.Authenticate(t.Context(), bearer(ti.mint(t, tt.req)))
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthenticateRejects(t *testing.T) {
	ti := startIssuer(t)
	o := newAuth(t, ti.URL(), ti.client, newClock())
	kid := ti.currentKID(t)
	now := time.Now()
	mint := func(req localissuer.TokenRequest) func(t *testing.T) string {
		return func(t *testing.T) string { return bearer(ti.mint(t, req)) }
	}
	withClaims := func(extra map[string]any) func(t *testing.T) string {
		req := validRequest()
		req.ExtraClaims = extra
		return mint(req)
	}
	goodHeader := b64JSON(t, map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid})
	goodPayload := b64JSON(t, goodClaims(ti.URL()))
	raw := func(parts ...string) func(t *testing.T) string {
		return func(t *testing.T) string { return bearer(strings.Join(parts, ".")) }
	}
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		header  func(t *testing.T) string
		wantMsg string
	}{
		{name: "missing header", header: raw(""), wantMsg: msgMissingToken},
		{name: "wrong scheme", header: func(t *testing.T) string { return "Basic " + ti.mint(t, validRequest()) }, wantMsg: msgMissingToken},
		{name: "not a bearer value", header: raw("Bearer a b"), wantMsg: msgMalformedHeader},
		{name: "oversized token", header: raw("Bearer " + strings.Repeat("a", MaxTokenBytes+1)), wantMsg: msgTooLarge},
		{name: "one part", header: raw("abc"), wantMsg: msgMalformedToken},
		{name: "two parts", header: raw(goodHeader, goodPayload), wantMsg: msgMalformedToken},
		{name: "four parts", header: raw(goodHeader, goodPayload, "c2ln", "c2ln"), wantMsg: msgMalformedToken},
		{name: "bad base64 header", header: raw("A", goodPayload, "c2ln"), wantMsg: msgMalformedToken},
		{name: "standard base64 header", header: raw("ab+/", goodPayload, "c2ln"), wantMsg: msgMalformedToken},
		{name: "bad json header", header: raw(b64(`{"alg":"RS256"`), goodPayload, "c2ln"), wantMsg: msgMalformedToken},
		{name: "header not an object", header: raw(b64(`"RS256"`), goodPayload, "c2ln"), wantMsg: msgMalformedToken},
		{name: "bad base64 payload", header: raw(goodHeader, "A", "c2ln"), wantMsg: msgMalformedToken},
		{name: "bad json payload", header: raw(goodHeader, b64(`{"sub":`), "c2ln"), wantMsg: msgMalformedToken},
		{name: "payload not an object", header: raw(goodHeader, b64(`[1,2]`), "c2ln"), wantMsg: msgMalformedToken},
		{name: "claim of wrong type", header: withClaims(map[string]any{"oid": 42}), wantMsg: msgMalformedToken},
		{name: "empty signature", header: raw(goodHeader, goodPayload, ""), wantMsg: msgMalformedToken},
		{name: "bad base64 signature", header: raw(goodHeader, goodPayload, "A"), wantMsg: msgMalformedToken},
		{name: "expired", header: mint(localissuer.TokenRequest{Subject: "s", Audience: testAudience, TTL: -10 * time.Minute}), wantMsg: msgExpired},
		{name: "no exp", header: withClaims(map[string]any{"exp": nil}), wantMsg: msgNoExpiry},
		{name: "nbf in the future", header: withClaims(map[string]any{"nbf": now.Add(10 * time.Minute).Unix()}), wantMsg: msgNotYetValid},
		{name: "wrong audience", header: mint(localissuer.TokenRequest{Subject: "s", Audience: "api://other"}), wantMsg: msgAudience},
		{name: "no audience", header: mint(localissuer.TokenRequest{Subject: "s"}), wantMsg: msgAudience},
		{name: "audience list without ours", header: withClaims(map[string]any{"aud": []string{"a", "b"}}), wantMsg: msgAudience},
		{name: "wrong issuer", header: withClaims(map[string]any{"iss": "http://127.0.0.1:1"}), wantMsg: msgIssuer},
		{name: "issuer with trailing slash", header: withClaims(map[string]any{"iss": ti.URL() + "/"}), wantMsg: msgIssuer},
		{name: "neither oid nor sub", header: mint(localissuer.TokenRequest{Audience: testAudience}), wantMsg: msgNoSubject},
		{
			name:    "unknown key with the current kid",
			header:  func(t *testing.T) string { return bearer(sign(t, jose.RS256, otherRSA, kid, goodClaims(ti.URL()))) },
			wantMsg: msgSignature,
		},
		{
			name: "unknown key and kid",
			header: func(t *testing.T) string {
				return bearer(sign(t, jose.RS256, otherRSA, "no-such-kid", goodClaims(ti.URL())))
			},
			wantMsg: msgSignature,
		},
		{
			name: "payload swapped under a valid signature",
			header: func(t *testing.T) string {
				parts := strings.Split(ti.mint(t, validRequest()), ".")
				forged := goodClaims(ti.URL())
				forged["oid"] = "someone-else"
				return bearer(parts[0] + "." + b64JSON(t, forged) + "." + parts[2])
			},
			wantMsg: msgSignature,
		},
		{
			name:    "alg none",
			header:  raw(b64JSON(t, map[string]any{"alg": "none", "typ": "JWT"}), goodPayload, ""),
			wantMsg: msgAlgorithm,
		},
		{
			name:    "alg none with a signature",
			header:  raw(b64JSON(t, map[string]any{"alg": "none", "kid": kid}), goodPayload, "c2ln"),
			wantMsg: msgAlgorithm,
		},
		{
			name: "HS256 with the public key as secret",
			header: func(t *testing.T) string {
				return bearer(sign(t, jose.HS256, publicKeyPEM(t, ti), kid, goodClaims(ti.URL())))
			},
			wantMsg: msgAlgorithm,
		},
		{
			name:    "RS512",
			header:  func(t *testing.T) string { return bearer(sign(t, jose.RS512, otherRSA, kid, goodClaims(ti.URL()))) },
			wantMsg: msgAlgorithm,
		},
		{
			name:    "PS256",
			header:  func(t *testing.T) string { return bearer(sign(t, jose.PS256, otherRSA, kid, goodClaims(ti.URL()))) },
			wantMsg: msgAlgorithm,
		},
		{name: "no alg", header: raw(b64JSON(t, map[string]any{"kid": kid}), goodPayload, "c2ln"), wantMsg: msgAlgorithm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header := tt.header(t)
			_, err := o.Authenticate(t.Context(), header)
			wantAuthError(t, err, backup.CodeUnauthenticated, tt.wantMsg)
			// The error must not echo the token.
			for _, part := range strings.Split(strings.TrimPrefix(header, "Bearer "), ".") {
				if len(part) > 8 && err != nil && strings.Contains(err.Error(), part) {
					t.Errorf("error %q contains part of the token", err)
				}
			}
		})
	}
}

// publicKeyPEM is the issuer's current public key as PEM, the classic HS256 confusion secret.
func publicKeyPEM(t *testing.T, ti *testIssuer) []byte {
	t.Helper()
	resp, err := ti.client.Get(ti.URL() + localissuer.JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	keys := set.Key(ti.currentKID(t))
	if len(keys) != 1 {
		t.Fatalf("current kid: %d keys in JWKS, want 1", len(keys))
	}
	der, err := x509.MarshalPKIXPublicKey(keys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestKeyRotation(t *testing.T) {
	ti := startIssuer(t)
	o := newAuth(t, ti.URL(), ti.client, newClock())
	oldTok := ti.mint(t, validRequest())
	if _, err := o.Authenticate(t.Context(), bearer(oldTok)); err != nil {
		t.Fatalf("token of the first key: %v", err)
	}
	oldKID := ti.currentKID(t)
	fetches := ti.jwksHits.Load()

	if err := ti.Rotate(); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if ti.currentKID(t) == oldKID {
		t.Fatalf("Rotate kept kid %s", oldKID)
	}
	got, err := o.Authenticate(t.Context(), bearer(ti.mint(t, validRequest())))
	if err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if got.ID != "oid-1" {
		t.Errorf("got principal %q, want oid-1", got.ID)
	}
	if after := ti.jwksHits.Load(); after != fetches+1 {
		t.Errorf("JWKS fetched %d times for the new kid, want once", after-fetches)
	}
	if _, err := o.Authenticate(t.Context(), bearer(oldTok)); err != nil {
		t.Errorf("token of the previous key after rotation: %v", err)
	}
}

func TestIssuerDownAtConstructionThenUp(t *testing.T) {
	ti := startIssuer(t)
	ti.down.Store(true)
	clock := newClock()
	o := newAuth(t, ti.URL(), ti.client, clock)
	if hits := ti.discoveryHits.Load(); hits != 0 {
		t.Fatalf("NewOIDC made %d discovery requests, want none", hits)
	}
	tok := bearer(ti.mint(t, validRequest()))

	_, err := o.Authenticate(t.Context(), tok)
	wantAuthError(t, err, backup.CodeTransient, msgUnavailable)
	if hits := ti.discoveryHits.Load(); hits != 1 {
		t.Fatalf("discovery requests after first use: %d, want 1", hits)
	}
	// Bad tokens are refused without the issuer.
	_, err = o.Authenticate(t.Context(), "Bearer not-a-jwt")
	wantAuthError(t, err, backup.CodeUnauthenticated, msgMalformedToken)

	// Within the backoff, requests fail fast without contacting the issuer, even once it is back.
	_, err = o.Authenticate(t.Context(), tok)
	wantAuthError(t, err, backup.CodeTransient, msgUnavailable)
	ti.down.Store(false)
	_, err = o.Authenticate(t.Context(), tok)
	wantAuthError(t, err, backup.CodeTransient, msgUnavailable)
	if hits := ti.discoveryHits.Load(); hits != 1 {
		t.Fatalf("discovery requests during backoff: %d, want still 1", hits)
	}

	clock.Advance(minRetry)
	got, err := o.Authenticate(t.Context(), tok)
	if err != nil {
		t.Fatalf("Authenticate after the issuer came back: %v", err)
	}
	if got.ID != "oid-1" {
		t.Errorf("got principal %q, want oid-1", got.ID)
	}
	if hits := ti.discoveryHits.Load(); hits != 2 {
		t.Errorf("discovery requests: %d, want 2", hits)
	}
}

func TestDiscoveryBackoffGrows(t *testing.T) {
	ti := startIssuer(t)
	ti.down.Store(true)
	clock := newClock()
	o := newAuth(t, ti.URL(), ti.client, clock)
	tok := bearer(ti.mint(t, validRequest()))
	wantWaits := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for n, w := range wantWaits {
		want := w * time.Second
		_, err := o.Authenticate(t.Context(), tok)
		wantAuthError(t, err, backup.CodeTransient, msgUnavailable)
		if hits := ti.discoveryHits.Load(); hits != int64(n+1) {
			t.Fatalf("attempt %d: %d discovery requests, want %d", n+1, hits, n+1)
		}
		o.mu.Lock()
		got := o.retryAt.Sub(clock.Now())
		o.mu.Unlock()
		if got != want {
			t.Errorf("attempt %d: retry in %v, want %v", n+1, got, want)
		}
		clock.Advance(want)
	}
}

func TestIssuerUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	ln.Close()
	o := newAuth(t, issuer, &http.Client{Timeout: 10 * time.Second}, newClock())

	err = o.Check(t.Context())
	wantAuthError(t, err, backup.CodeTransient, msgUnavailable)
	var ue interface{ Timeout() bool }
	if !errors.As(err, &ue) {
		t.Errorf("Check error %v does not carry the network error", err)
	}
	if got := backup.CodeOf(err).HTTPStatus(); got != http.StatusServiceUnavailable {
		t.Errorf("HTTP status %d, want 503", got)
	}
}

func TestJWKSDownAfterDiscovery(t *testing.T) {
	ti := startIssuer(t)
	o := newAuth(t, ti.URL(), ti.client, newClock())
	if err := o.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	tok := bearer(ti.mint(t, validRequest()))
	ti.down.Store(true)
	_, err := o.Authenticate(t.Context(), tok)
	wantAuthError(t, err, backup.CodeTransient, msgUnavailable)

	ti.down.Store(false)
	if _, err := o.Authenticate(t.Context(), tok); err != nil {
		t.Errorf("Authenticate once the JWKS is back: %v", err)
	}
}

func TestIssuerMismatchIsUnavailable(t *testing.T) {
	ti := startIssuer(t)
	// Configured with a trailing slash, the issuer does not match the discovery document: a
	// misconfiguration, reported as 503 and logged, not blamed on the caller's token.
	o := newAuth(t, ti.URL()+"/", ti.client, newClock())
	_, err := o.Authenticate(t.Context(), bearer(ti.mint(t, validRequest())))
	wantAuthError(t, err, backup.CodeTransient, msgUnavailable)
	var mismatch *oidc.IssuerMismatchError
	if !errors.As(err, &mismatch) {
		t.Errorf("error %v does not carry the issuer mismatch", err)
	}
}

func TestConcurrentFirstUseDiscoversOnce(t *testing.T) {
	ti := startIssuer(t)
	o := newAuth(t, ti.URL(), ti.client, newClock())
	tok := bearer(ti.mint(t, validRequest()))
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() { _, errs[g] = o.Authenticate(t.Context(), tok) })
	}
	wg.Wait()
	for g, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", g, err)
		}
	}
	if hits := ti.discoveryHits.Load(); hits != 1 {
		t.Errorf("discovery requests: %d, want 1", hits)
	}
}

func TestCancelledCallerDoesNotFailDiscovery(t *testing.T) {
	ti := startIssuer(t)
	gate := make(chan struct{})
	ti.gate.Store(&gate)
	o := newAuth(t, ti.URL(), ti.client, newClock())
	tok := bearer(ti.mint(t, validRequest()))

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := o.Authenticate(ctx, tok)
	wantAuthError(t, err, backup.CodeTransient, msgUnavailable)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not carry context.Canceled", err)
	}

	close(gate)
	if _, err := o.Authenticate(t.Context(), tok); err != nil {
		t.Fatalf("Authenticate after the slow discovery finished: %v", err)
	}
	if hits := ti.discoveryHits.Load(); hits != 1 {
		t.Errorf("discovery requests: %d, want 1 (the cancelled caller's attempt completed)", hits)
	}
}

// TestES256 runs against a minimal issuer with an EC key, since the local issuer only signs RS256.
func TestES256(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &key.PublicKey, KeyID: "ec-1", Algorithm: "ES256", Use: "sig"},
		}})
	})
	o := newAuth(t, srv.URL, srv.Client(), newClock())

	got, err := o.Authenticate(t.Context(), bearer(sign(t, jose.ES256, key, "ec-1", goodClaims(srv.URL))))
	if err != nil {
		t.Fatalf("ES256 token: %v", err)
	}
	if got.ID != "sub-1" {
		t.Errorf("got principal %q, want sub-1", got.ID)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, err = o.Authenticate(t.Context(), bearer(sign(t, jose.ES256, other, "ec-1", goodClaims(srv.URL))))
	wantAuthError(t, err, backup.CodeUnauthenticated, msgSignature)
	_, err = o.Authenticate(t.Context(), bearer(sign(t, jose.ES384, mustP384(t), "ec-1", goodClaims(srv.URL))))
	wantAuthError(t, err, backup.CodeUnauthenticated, msgAlgorithm)
}

func mustP384(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewOIDCValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "https issuer", cfg: Config{IssuerURL: "https://login.microsoftonline.com/t/v2.0", Audience: "api://x"}},
		{name: "http loopback ip", cfg: Config{IssuerURL: "http://127.0.0.1:8090", Audience: "a"}},
		{name: "http localhost", cfg: Config{IssuerURL: "http://localhost:8090", Audience: "a"}},
		{name: "http ipv6 loopback", cfg: Config{IssuerURL: "http://[::1]:8090", Audience: "a"}},
		{name: "empty issuer", cfg: Config{Audience: "a"}, wantErr: true},
		{name: "http remote issuer", cfg: Config{IssuerURL: "http://login.example.com", Audience: "a"}, wantErr: true},
		{name: "other scheme", cfg: Config{IssuerURL: "ftp://login.example.com", Audience: "a"}, wantErr: true},
		{name: "relative issuer", cfg: Config{IssuerURL: "login.example.com", Audience: "a"}, wantErr: true},
		{name: "issuer with query", cfg: Config{IssuerURL: "https://login.example.com/?tenant=x", Audience: "a"}, wantErr: true},
		{name: "issuer with user info", cfg: Config{IssuerURL: "https://u:p@login.example.com", Audience: "a"}, wantErr: true},
		{name: "no audience", cfg: Config{IssuerURL: "https://login.example.com"}, wantErr: true},
		{name: "blank audience", cfg: Config{IssuerURL: "https://login.example.com", Audience: "  "}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := NewOIDC(t.Context(), tt.cfg)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NewOIDC(%+v): got nil error, want one", tt.cfg)
				}
				if strings.Contains(err.Error(), "u:p@") {
					t.Errorf("error %q leaks URL credentials", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewOIDC(%+v): %v", tt.cfg, err)
			}
			if o == nil {
				t.Fatal("NewOIDC returned nil")
			}
		})
	}
}

// TestEndpoints: the console's sign-in endpoints come from the same discovery as the verifier; an
// issuer without them, or with a plain-http one on another host, cannot sign users in.
func TestEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name            string
		authorize, tok  string
		wantErrContains string
	}{
		{name: "both", authorize: "/authorize", tok: "/token"},
		{name: "no token endpoint", authorize: "/authorize", wantErrContains: "does not offer sign-in"},
		{name: "no authorization endpoint", tok: "/token", wantErrContains: "does not offer sign-in"},
		{name: "plain http elsewhere", authorize: "http://login.example.com/authorize", tok: "/token", wantErrContains: "does not offer sign-in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)
			abs := func(p string) string {
				if p == "" || strings.HasPrefix(p, "http") {
					return p
				}
				return srv.URL + p
			}
			mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
				_ = json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys",
					"authorization_endpoint": abs(tc.authorize), "token_endpoint": abs(tc.tok)})
			})
			o := newAuth(t, srv.URL, srv.Client(), newClock())
			e, err := o.Endpoints(t.Context())
			if tc.wantErrContains != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrContains) || backup.CodeOf(err) != backup.CodeInternal {
					t.Fatalf("got %+v, %v; want an INTERNAL error with %q", e, err, tc.wantErrContains)
				}
				return
			}
			if err != nil || e.Authorization != srv.URL+"/authorize" || e.Token != srv.URL+"/token" {
				t.Fatalf("got %+v, %v", e, err)
			}
		})
	}
	t.Run("issuer down", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		o := newAuth(t, srv.URL, srv.Client(), newClock())
		if _, err := o.Endpoints(t.Context()); backup.CodeOf(err) != backup.CodeTransient {
			t.Fatalf("got %v, want TEMPORARILY_UNAVAILABLE", err)
		}
	})
}
