// Package localissuer is a small OpenID Connect issuer for `make run` and tests. It serves a discovery
// document and a JWKS over HTTP, mints RS256 tokens for any subject, and signs a browser app (the web
// console) in with the authorization code flow. The service authenticates its tokens exactly like Entra
// ID's, through package auth, which trusts plain-http issuers on loopback hosts only.
//
// # Sign-in
//
// The authorization code flow with PKCE (RFC 6749 §4.1, RFC 7636, S256 only) is for public clients, as
// Entra ID runs it for single-page apps. RegisterClient declares a client: its exact redirect URIs and the
// audience of its access tokens. There is no login form: AuthorizePath signs in whoever SetSignInUser
// set, at once, and redirects back with a single-use code valid for a minute; TokenPath redeems it for an
// access token and an id token (aud the client ID, with the request's nonce), each living
// SetAccessTokenTTL. The token endpoint answers CORS requests from the origins of registered redirect
// URIs; there are no refresh tokens, a client signs in again.
//
// # Key file
//
// Options.KeyFile is a PEM file holding one or more RSA private keys (at least 2048 bits), each a
// "PRIVATE KEY" (PKCS #8) or "RSA PRIVATE KEY" (PKCS #1) block, oldest first. The last key signs new
// tokens; the ones before it are previous keys, still published in the JWKS so that tokens they signed
// stay valid. A key's kid is the base64url SHA-256 JWK thumbprint (RFC 7638) of its public key, so every
// process using the file agrees on kids. New creates a missing file (mode 0600, one new 2048-bit key),
// safely when several processes start at once; Rotate appends a key and keeps the last MaxKeys. The file
// is re-read whenever it changes, so a process serving the JWKS picks up a rotation done by another
// (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 >> key.pem` rotates by hand).
// An empty KeyFile keeps one generated key in memory only.
package localissuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// DiscoveryPath and JWKSPath are served by Handler, relative to the issuer URL.
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/.well-known/jwks.json"
	// DefaultTTL is the lifetime of a token whose request has no TTL.
	DefaultTTL = time.Hour
)

// Options configures an Issuer.
type Options struct {
	// KeyFile is the PEM key file shared by the processes that serve and mint tokens (see the package
	// comment); empty means an in-memory key.
	KeyFile string
	// Issuer is the base URL the issuer is served at and the iss claim of its tokens, e.g.
	// http://127.0.0.1:8090. Empty means Serve decides it from its listener.
	Issuer string
}

// TokenRequest describes a token to mint. Empty strings leave their claim out.
type TokenRequest struct {
	Subject  string // sub
	ObjectID string // oid
	Name     string // name
	Audience string // aud
	// TTL is the lifetime (exp - iat); zero means DefaultTTL, negative gives an expired token.
	TTL time.Duration
	// ExtraClaims are set last and override the standard claims (iss, sub, aud, exp, nbf, iat, oid,
	// name), so tests can craft bad tokens; a nil value removes the claim.
	ExtraClaims map[string]any
}

// Issuer is a local OIDC issuer. Safe for concurrent use.
type Issuer struct {
	keyFile string

	mu     sync.Mutex
	issuer string
	keys   []signingKey // oldest first; the last one signs
	info   os.FileInfo  // of the key file when keys were read; nil for in-memory keys

	flow flowState // the authorization code flow's clients, user and codes (authorize.go)
	// now is the clock of authorization code expiry; nil means time.Now. Tests set it before serving.
	now func() time.Time
}

// New loads (or creates) the key file and returns the issuer.
func New(opts Options) (*Issuer, error) {
	issuer, err := normalizeIssuer(opts.Issuer)
	if err != nil {
		return nil, err
	}
	i := &Issuer{keyFile: opts.KeyFile, issuer: issuer}
	if opts.KeyFile == "" {
		k, err := generateKey()
		if err != nil {
			return nil, err
		}
		i.keys = []signingKey{k}
		return i, nil
	}
	if i.keys, i.info, err = readKeyFile(opts.KeyFile); err != nil {
		return nil, err
	}
	return i, nil
}

func normalizeIssuer(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("issuer %q: want an http(s) base URL without query or fragment", raw)
	}
	return strings.TrimSuffix(raw, "/"), nil
}

// URL returns the issuer URL, empty until set by Options.Issuer or Serve.
func (i *Issuer) URL() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.issuer
}

// KeyIDs returns the kids of the published keys, oldest first; the last one signs new tokens.
func (i *Issuer) KeyIDs() ([]string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.refreshLocked(); err != nil {
		return nil, err
	}
	kids := make([]string, len(i.keys))
	for n, k := range i.keys {
		kids[n] = k.kid
	}
	return kids, nil
}

// refreshLocked re-reads the key file if it changed since it was read. Callers hold i.mu.
func (i *Issuer) refreshLocked() error {
	if i.keyFile == "" {
		return nil
	}
	info, err := os.Stat(i.keyFile)
	if err == nil && os.SameFile(info, i.info) && info.ModTime().Equal(i.info.ModTime()) && info.Size() == i.info.Size() {
		return nil
	}
	keys, info, err := readKeyFile(i.keyFile)
	if err != nil {
		return err
	}
	i.keys, i.info = keys, info
	return nil
}

// Rotate makes a new key the signing key. The previous keys stay published (up to MaxKeys in all), so
// tokens they signed remain valid; verifiers see the new kid and refetch the JWKS.
func (i *Issuer) Rotate() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.refreshLocked(); err != nil {
		return err
	}
	k, err := generateKey()
	if err != nil {
		return err
	}
	keys := append(append([]signingKey(nil), i.keys...), k)
	if len(keys) > MaxKeys {
		keys = keys[len(keys)-MaxKeys:]
	}
	if i.keyFile == "" {
		i.keys = keys
		return nil
	}
	if err := writeKeyFile(i.keyFile, keys); err != nil {
		return err
	}
	info, err := os.Stat(i.keyFile)
	if err != nil {
		return fmt.Errorf("stat key file: %w", err)
	}
	i.keys, i.info = keys, info
	return nil
}

// Token mints a token signed RS256 by the current key, with kid and typ JWT in its header.
func (i *Issuer) Token(req TokenRequest) (string, error) {
	i.mu.Lock()
	err := i.refreshLocked()
	issuer, keys := i.issuer, i.keys
	i.mu.Unlock()
	if err != nil {
		return "", err
	}
	if issuer == "" {
		return "", errors.New("mint token: issuer URL not set (Options.Issuer or Serve)")
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	now := time.Now()
	claims := map[string]any{"iss": issuer, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix()}
	for name, v := range map[string]string{"sub": req.Subject, "oid": req.ObjectID, "name": req.Name, "aud": req.Audience} {
		if v != "" {
			claims[name] = v
		}
	}
	maps.Copy(claims, req.ExtraClaims)
	maps.DeleteFunc(claims, func(_ string, v any) bool { return v == nil })
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("mint token: encode claims: %w", err)
	}
	key := keys[len(keys)-1]
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key.priv, KeyID: key.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("mint token: sign: %w", err)
	}
	return jws.CompactSerialize()
}

// Handler serves DiscoveryPath, JWKSPath, AuthorizePath and TokenPath. Mount it at the root of the
// issuer URL (behind http.StripPrefix when the issuer URL has a path).
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiscoveryPath, i.serveDiscovery)
	mux.HandleFunc("GET "+JWKSPath, i.serveJWKS)
	mux.HandleFunc("GET "+AuthorizePath, i.serveAuthorize)
	mux.HandleFunc("POST "+AuthorizePath, i.serveAuthorize)
	mux.HandleFunc("POST "+TokenPath, i.serveToken)
	mux.HandleFunc("OPTIONS "+TokenPath, i.serveTokenPreflight)
	return mux
}

func (i *Issuer) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	// Public metadata: any page may read it, as Entra's.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	issuer := i.URL()
	if issuer == "" {
		http.Error(w, "issuer URL not set", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, map[string]any{
		"issuer":                                issuer,
		"jwks_uri":                              issuer + JWKSPath,
		"authorization_endpoint":                issuer + AuthorizePath,
		"token_endpoint":                        issuer + TokenPath,
		"id_token_signing_alg_values_supported": []string{string(jose.RS256)},
		"response_types_supported":              []string{"code", "id_token"},
		"response_modes_supported":              []string{"query"},
		"grant_types_supported":                 []string{"authorization_code"},
		"code_challenge_methods_supported":      []string{"S256"},
		"scopes_supported":                      []string{"openid", "profile"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"subject_types_supported":               []string{"public"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "nbf", "iat", "oid", "name", "nonce"},
	})
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	i.mu.Lock()
	err := i.refreshLocked()
	keys := i.keys
	i.mu.Unlock()
	if err != nil {
		http.Error(w, "key file unreadable", http.StatusInternalServerError)
		return
	}
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(keys))}
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: string(jose.RS256), Use: "sig"})
	}
	writeJSON(w, set)
}

func writeJSON(w http.ResponseWriter, v any) { writeJSONStatus(w, http.StatusOK, v) }

func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	// No caching, so that a rotation is visible at once, and tokens are not kept (RFC 6749 §5.1).
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Serve listens on listenAddr (e.g. "127.0.0.1:0") and serves Handler in the background until ctx is
// cancelled. It returns the issuer URL: Options.Issuer if set, else http://<listener address>, which then
// also becomes the iss of new tokens.
func (i *Issuer) Serve(ctx context.Context, listenAddr string) (string, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listenAddr)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", listenAddr, err)
	}
	i.mu.Lock()
	if i.issuer == "" {
		i.issuer = "http://" + reachableAddr(ln.Addr())
	}
	issuer := i.issuer
	i.mu.Unlock()

	srv := &http.Server{Handler: i.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	return issuer, nil
}

// reachableAddr turns a listener address into host:port a client can dial: a wildcard host becomes
// 127.0.0.1.
func reachableAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
