package localissuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func newIssuer(t *testing.T, opts Options) *Issuer {
	t.Helper()
	iss, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	return iss
}

func keyIDs(t *testing.T, iss *Issuer) []string {
	t.Helper()
	kids, err := iss.KeyIDs()
	if err != nil {
		t.Fatalf("KeyIDs: %v", err)
	}
	return kids
}

func getJSON(t *testing.T, h http.Handler, path string, v any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200 (body %q)", path, rec.Code, rec.Body.String())
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("GET %s: Content-Type %q, want application/json", path, got)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("GET %s: decode: %v", path, err)
	}
}

func jwks(t *testing.T, iss *Issuer) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	getJSON(t, iss.Handler(), JWKSPath, &set)
	return set
}

func TestNewCreatesPrivateKeyFileAndReusesIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "key.pem")
	first := newIssuer(t, Options{KeyFile: path, Issuer: "http://127.0.0.1:1"})
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat key file: %v", err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode %o, want 600", got)
	}
	kids := keyIDs(t, first)
	if len(kids) != 1 {
		t.Fatalf("got %d keys, want 1", len(kids))
	}
	second := newIssuer(t, Options{KeyFile: path, Issuer: "http://127.0.0.1:1"})
	if got := keyIDs(t, second); !slices.Equal(got, kids) {
		t.Errorf("second issuer kids %v, want %v", got, kids)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("key directory holds %d entries, want only the key file (temp files left behind?)", len(entries))
	}
}

func TestNewConcurrentCreationAgreesOnOneKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	const n = 4
	kids := make([][]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			iss, err := New(Options{KeyFile: path})
			if err != nil {
				errs[g] = err
				return
			}
			kids[g], errs[g] = iss.KeyIDs()
		})
	}
	wg.Wait()
	for g := range n {
		if errs[g] != nil {
			t.Fatalf("issuer %d: %v", g, errs[g])
		}
		if !slices.Equal(kids[g], kids[0]) || len(kids[g]) != 1 {
			t.Errorf("issuer %d kids %v, want %v (one key)", g, kids[g], kids[0])
		}
	}
}

func writePEM(t *testing.T, blocks ...*pem.Block) string {
	t.Helper()
	var data []byte
	for _, b := range blocks {
		data = append(data, pem.EncodeToMemory(b)...)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func rsaKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyFileFormats(t *testing.T) {
	pkcs1 := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey(t, 2048))}
	pkcs8Der, err := x509.MarshalPKCS8PrivateKey(rsaKey(t, 2048))
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := &pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8Der}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDer, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	small := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey(t, 1024))}

	tests := []struct {
		name     string
		blocks   []*pem.Block
		wantKeys int
		wantErr  string
	}{
		{name: "pkcs1", blocks: []*pem.Block{pkcs1}, wantKeys: 1},
		{name: "pkcs8", blocks: []*pem.Block{pkcs8}, wantKeys: 1},
		{name: "both, oldest first", blocks: []*pem.Block{pkcs1, pkcs8}, wantKeys: 2},
		{name: "empty file", wantErr: "no PEM private key"},
		{name: "ec key", blocks: []*pem.Block{{Type: "PRIVATE KEY", Bytes: ecDer}}, wantErr: "want RSA"},
		{name: "small rsa key", blocks: []*pem.Block{small}, wantErr: "1024 bits"},
		{name: "certificate", blocks: []*pem.Block{{Type: "CERTIFICATE", Bytes: []byte{1}}}, wantErr: "unexpected PEM block type"},
		{name: "corrupt key", blocks: []*pem.Block{{Type: "PRIVATE KEY", Bytes: []byte("junk")}}, wantErr: "pem block 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writePEM(t, tt.blocks...)
			iss, err := New(Options{KeyFile: path})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := len(keyIDs(t, iss)); got != tt.wantKeys {
				t.Errorf("got %d keys, want %d", got, tt.wantKeys)
			}
		})
	}
}

func TestNewRejectsBadIssuer(t *testing.T) {
	for _, issuer := range []string{"ftp://host", "127.0.0.1:8080", "http://host/?q=1", "http://host/#f", "http://"} {
		if _, err := New(Options{Issuer: issuer}); err == nil {
			t.Errorf("New(Issuer: %q): got nil error, want one", issuer)
		}
	}
	iss := newIssuer(t, Options{Issuer: "http://127.0.0.1:9/base/"})
	if got, want := iss.URL(), "http://127.0.0.1:9/base"; got != want {
		t.Errorf("URL() = %q, want %q (trailing slash trimmed)", got, want)
	}
}

func TestDiscoveryDocument(t *testing.T) {
	iss := newIssuer(t, Options{Issuer: "http://127.0.0.1:8090"})
	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	getJSON(t, iss.Handler(), DiscoveryPath, &doc)
	if doc.Issuer != "http://127.0.0.1:8090" {
		t.Errorf("issuer %q, want http://127.0.0.1:8090", doc.Issuer)
	}
	if doc.JWKSURI != "http://127.0.0.1:8090"+JWKSPath {
		t.Errorf("jwks_uri %q, want http://127.0.0.1:8090%s", doc.JWKSURI, JWKSPath)
	}
	if !slices.Equal(doc.Algs, []string{"RS256"}) {
		t.Errorf("algorithms %v, want [RS256]", doc.Algs)
	}
}

func TestHandlerRoutes(t *testing.T) {
	unset := newIssuer(t, Options{})
	tests := []struct {
		name   string
		iss    *Issuer
		method string
		path   string
		want   int
	}{
		{name: "unknown path", iss: unset, method: http.MethodGet, path: "/userinfo", want: http.StatusNotFound},
		{name: "get token endpoint", iss: unset, method: http.MethodGet, path: TokenPath, want: http.StatusMethodNotAllowed},
		{name: "post to jwks", iss: unset, method: http.MethodPost, path: JWKSPath, want: http.StatusMethodNotAllowed},
		{name: "discovery before issuer is known", iss: unset, method: http.MethodGet, path: DiscoveryPath, want: http.StatusServiceUnavailable},
		{name: "jwks without issuer", iss: unset, method: http.MethodGet, path: JWKSPath, want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.iss.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.want {
				t.Errorf("%s %s: status %d, want %d", tt.method, tt.path, rec.Code, tt.want)
			}
		})
	}
}

func TestJWKSPublishesPublicKeysOnly(t *testing.T) {
	iss := newIssuer(t, Options{Issuer: "http://127.0.0.1:1"})
	set := jwks(t, iss)
	if len(set.Keys) != 1 {
		t.Fatalf("got %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	if !k.IsPublic() {
		t.Errorf("published key is private")
	}
	if k.KeyID != keyIDs(t, iss)[0] || k.Algorithm != "RS256" || k.Use != "sig" {
		t.Errorf("key kid=%q alg=%q use=%q, want kid=%q alg=RS256 use=sig", k.KeyID, k.Algorithm, k.Use, keyIDs(t, iss)[0])
	}
	rec := httptest.NewRecorder()
	iss.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, JWKSPath, nil))
	if strings.Contains(rec.Body.String(), `"d"`) {
		t.Errorf("JWKS contains a private exponent: %s", rec.Body.String())
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
}

// verifyToken checks raw against the issuer's JWKS and returns its header and claims.
func verifyToken(t *testing.T, iss *Issuer, raw string) (jose.Header, map[string]any) {
	t.Helper()
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	hdr := jws.Signatures[0].Header
	set := jwks(t, iss)
	keys := set.Key(hdr.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q: %d keys in JWKS, want 1", hdr.KeyID, len(keys))
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("verify token with published key: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return hdr, claims
}

func TestToken(t *testing.T) {
	iss := newIssuer(t, Options{KeyFile: filepath.Join(t.TempDir(), "key.pem"), Issuer: "http://127.0.0.1:8090"})
	raw, err := iss.Token(TokenRequest{Subject: "sub-1", ObjectID: "oid-1", Name: "Demo User", Audience: "api://backups", TTL: 10 * time.Minute})
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	hdr, claims := verifyToken(t, iss, raw)
	if hdr.KeyID != keyIDs(t, iss)[0] || hdr.Algorithm != "RS256" || hdr.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header kid=%q alg=%q typ=%v, want kid=%q alg=RS256 typ=JWT", hdr.KeyID, hdr.Algorithm, hdr.ExtraHeaders["typ"], keyIDs(t, iss)[0])
	}
	for name, want := range map[string]string{"iss": "http://127.0.0.1:8090", "sub": "sub-1", "oid": "oid-1", "name": "Demo User", "aud": "api://backups"} {
		if claims[name] != want {
			t.Errorf("claim %s = %v, want %q", name, claims[name], want)
		}
	}
	iat, exp := claims["iat"].(float64), claims["exp"].(float64)
	if exp-iat != 600 {
		t.Errorf("exp - iat = %v, want 600", exp-iat)
	}
	if claims["nbf"] != claims["iat"] {
		t.Errorf("nbf %v, want iat %v", claims["nbf"], claims["iat"])
	}
}

func TestTokenDefaultsAndExtraClaims(t *testing.T) {
	iss := newIssuer(t, Options{Issuer: "http://127.0.0.1:8090"})
	raw, err := iss.Token(TokenRequest{Subject: "sub-1", ExtraClaims: map[string]any{
		"tid": "tenant-1", "iss": "http://other", "nbf": nil, "roles": []string{"a"},
	}})
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	_, claims := verifyToken(t, iss, raw)
	if got := claims["exp"].(float64) - claims["iat"].(float64); got != DefaultTTL.Seconds() {
		t.Errorf("exp - iat = %v, want %v", got, DefaultTTL.Seconds())
	}
	if claims["tid"] != "tenant-1" || claims["iss"] != "http://other" {
		t.Errorf("tid=%v iss=%v, want tenant-1 and the overridden http://other", claims["tid"], claims["iss"])
	}
	for _, absent := range []string{"nbf", "oid", "name", "aud"} {
		if v, ok := claims[absent]; ok {
			t.Errorf("claim %s = %v, want absent", absent, v)
		}
	}
}

func TestTokenNeedsIssuer(t *testing.T) {
	iss := newIssuer(t, Options{})
	if _, err := iss.Token(TokenRequest{Subject: "s"}); err == nil || !strings.Contains(err.Error(), "issuer URL not set") {
		t.Errorf("Token without issuer: got %v, want an 'issuer URL not set' error", err)
	}
}

func TestRotateKeepsPreviousKeysAndPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.pem")
	iss := newIssuer(t, Options{KeyFile: path, Issuer: "http://127.0.0.1:1"})
	other := newIssuer(t, Options{KeyFile: path, Issuer: "http://127.0.0.1:1"})
	before, err := iss.Token(TokenRequest{Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	var history [][]string
	history = append(history, keyIDs(t, iss))
	for range MaxKeys + 1 {
		if err := iss.Rotate(); err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		history = append(history, keyIDs(t, iss))
	}
	for n := 1; n < len(history); n++ {
		prev, cur := history[n-1], history[n]
		wantLen := min(len(prev)+1, MaxKeys)
		if len(cur) != wantLen {
			t.Fatalf("after rotation %d: %d keys, want %d", n, len(cur), wantLen)
		}
		if !slices.Equal(cur[:len(cur)-1], prev[len(prev)-(wantLen-1):]) {
			t.Errorf("after rotation %d: kids %v do not keep the newest previous ones of %v", n, cur, prev)
		}
		if slices.Contains(prev, cur[len(cur)-1]) {
			t.Errorf("after rotation %d: new kid %s was already used", n, cur[len(cur)-1])
		}
	}
	latest := history[len(history)-1]
	// The other process sees the rotation through the shared file, in its JWKS and its tokens.
	if got := keyIDs(t, other); !slices.Equal(got, latest) {
		t.Errorf("other issuer kids %v, want %v", got, latest)
	}
	raw, err := other.Token(TokenRequest{Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if hdr, _ := verifyToken(t, other, raw); hdr.KeyID != latest[len(latest)-1] {
		t.Errorf("other issuer signs with kid %q, want the current %q", hdr.KeyID, latest[len(latest)-1])
	}
	// A token from the first key is no longer verifiable once its key left the file.
	jws, err := jose.ParseSignedCompact(before, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	set := jwks(t, other)
	if keys := set.Key(jws.Signatures[0].Header.KeyID); len(keys) != 0 {
		t.Errorf("key of the first token still published after %d rotations", MaxKeys+1)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode after rotation %o, want 600", got)
	}
}

func TestRotateInMemory(t *testing.T) {
	iss := newIssuer(t, Options{Issuer: "http://127.0.0.1:1"})
	if err := iss.Rotate(); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	kids := keyIDs(t, iss)
	if len(kids) != 2 {
		t.Fatalf("got %d keys, want 2", len(kids))
	}
	raw, err := iss.Token(TokenRequest{Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if hdr, _ := verifyToken(t, iss, raw); hdr.KeyID != kids[1] {
		t.Errorf("token kid %q, want the new key %q", hdr.KeyID, kids[1])
	}
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	iss := newIssuer(t, Options{})
	url, err := iss.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !strings.HasPrefix(url, "http://127.0.0.1:") || iss.URL() != url {
		t.Fatalf("Serve URL %q (URL() %q), want http://127.0.0.1:<port> in both", url, iss.URL())
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url + DiscoveryPath)
	if err != nil {
		t.Fatalf("GET discovery: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Issuer != url {
		t.Errorf("served discovery issuer %q (err %v), want %q", doc.Issuer, err, url)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(url + DiscoveryPath)
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("issuer still serving 10s after its context was cancelled")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeKeepsConfiguredIssuer(t *testing.T) {
	iss := newIssuer(t, Options{Issuer: "http://localhost:1234"})
	url, err := iss.Serve(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if url != "http://localhost:1234" {
		t.Errorf("Serve URL %q, want the configured http://localhost:1234", url)
	}
	if _, err := iss.Serve(t.Context(), "256.0.0.1:0"); err == nil {
		t.Errorf("Serve on an invalid address: got nil error, want one")
	}
}
