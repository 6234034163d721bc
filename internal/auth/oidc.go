package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

const (
	// discoveryTimeout bounds one discovery attempt; it runs detached from the request that triggered it
	// so that a client going away does not fail discovery for everybody else.
	discoveryTimeout = 10 * time.Second
	// httpTimeout bounds every request to the issuer when Config.HTTPClient is nil.
	httpTimeout = 10 * time.Second
	// minRetry and maxRetry bound the wait after a failed discovery before the next attempt; requests
	// in between fail fast with CodeTransient instead of hammering a down issuer.
	minRetry = time.Second
	maxRetry = 30 * time.Second
)

// Config configures an OIDC authenticator.
type Config struct {
	// IssuerURL is the issuer exactly as it appears in the tokens' iss claim and in the discovery
	// document, e.g. https://login.microsoftonline.com/<tenant>/v2.0. It must be https, except for a
	// loopback host (the local issuer).
	IssuerURL string
	// Audience must be one of the tokens' aud values (for Entra ID the API's client id or its
	// api://... application ID URI, whichever the tokens carry).
	Audience string
	// HTTPClient makes the discovery and key set requests; nil means a client with a 10s timeout.
	HTTPClient *http.Client
	// Logger receives discovery and key set problems; the zero value logs nothing.
	Logger zerolog.Logger
}

// OIDC authenticates bearer tokens issued by one OIDC issuer. Discovery happens on first use, not at
// construction, and is retried with backoff while the issuer is unreachable. Keys come from the issuer's
// JWKS; a token whose kid is unknown makes the key set refetch, so key rotation needs no restart. Safe for
// concurrent use.
type OIDC struct {
	issuer   string
	audience string
	client   *http.Client
	log      zerolog.Logger
	base     context.Context // values only (never cancelled), for background issuer requests
	now      func() time.Time

	mu        sync.Mutex
	verifier  *oidc.IDTokenVerifier // set once discovery succeeded
	endpoints Endpoints             // from the same discovery
	inflight  chan struct{}         // closed when the running discovery attempt ends
	lastErr   error                 // why the last discovery attempt failed
	failures  int                   // consecutive failed attempts
	retryAt   time.Time             // no new attempt before this time
}

var _ Authenticator = (*OIDC)(nil)

// NewOIDC validates cfg and returns an authenticator. It makes no network request: discovery happens on
// the first Authenticate (or Check). ctx supplies values only; its cancellation is ignored.
func NewOIDC(ctx context.Context, cfg Config) (*OIDC, error) {
	if err := checkIssuerURL(cfg.IssuerURL); err != nil {
		return nil, fmt.Errorf("oidc issuer url: %w", err)
	}
	if strings.TrimSpace(cfg.Audience) == "" {
		return nil, errors.New("oidc audience: must be set")
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: httpTimeout}
	}
	return &OIDC{
		issuer:   cfg.IssuerURL,
		audience: cfg.Audience,
		client:   client,
		log:      cfg.Logger.With().Str("component", "auth").Str("issuer", cfg.IssuerURL).Logger(),
		base:     oidc.ClientContext(context.WithoutCancel(ctx), client),
		now:      time.Now,
	}, nil
}

// checkIssuerURL accepts absolute http(s) URLs without query, fragment or user info; plain http only
// for a loopback host.
func checkIssuerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not have a query or fragment", raw)
	}
	return checkEndpointURL(u)
}

// checkEndpointURL accepts absolute https URLs, and http URLs of a loopback host.
func checkEndpointURL(u *url.URL) error {
	raw := u.Redacted()
	if u.Host == "" || u.User != nil {
		return fmt.Errorf("%q is not an absolute URL without user info", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q must use https (http is allowed for loopback hosts only)", raw)
	default:
		return fmt.Errorf("%q must be an https URL", raw)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Authenticate implements Authenticator. Header and token structure are checked before the issuer is
// contacted, so a malformed token is a 401 even while the issuer is down.
func (o *OIDC) Authenticate(ctx context.Context, authorizationHeader string) (Principal, error) {
	raw, err := bearerToken(authorizationHeader)
	if err != nil {
		return Principal{}, err
	}
	if _, err := parseToken(raw); err != nil {
		return Principal{}, err
	}
	v, err := o.ensureVerifier(ctx)
	if err != nil {
		return Principal{}, err
	}
	res := &sigResult{}
	tok, err := v.Verify(context.WithValue(ctx, sigResultKey{}, res), raw)
	if err != nil {
		return Principal{}, o.verifyFailure(raw, res, err)
	}
	// Read the claims from the verified payload, not from the pre-parse above.
	var c claims
	if err := tok.Claims(&c); err != nil {
		return Principal{}, unauthenticated(msgMalformedToken)
	}
	if err := checkTimes(c, o.now()); err != nil {
		return Principal{}, err
	}
	// go-oidc checked these already; checking again costs nothing and does not depend on its config.
	if c.Issuer != o.issuer {
		return Principal{}, unauthenticated(msgIssuer)
	}
	if !slices.Contains(c.Audience, o.audience) {
		return Principal{}, unauthenticated(msgAudience)
	}
	return c.principal()
}

// Check makes sure discovery has succeeded, attempting it if needed, for health checks. It returns nil
// or a CodeTransient *backup.Error.
func (o *OIDC) Check(ctx context.Context) error {
	_, err := o.ensureVerifier(ctx)
	return err
}

// verifyFailure maps an error of IDTokenVerifier.Verify to a *backup.Error. The key set wrapper tells
// whether the signature check ran and how it ended; go-oidc's own errors are plain strings.
func (o *OIDC) verifyFailure(raw string, res *sigResult, err error) error {
	switch {
	case !res.called:
		// go-oidc refused to parse what parseToken accepted.
		return backup.Wrap(backup.CodeUnauthenticated, err, msgMalformedToken)
	case res.err != nil && isKeyFetchError(res.err):
		o.log.Warn().Err(res.err).Msg("fetch issuer signing keys")
		return backup.Wrap(backup.CodeTransient, res.err, msgUnavailable)
	case res.err != nil:
		return unauthenticated(msgSignature)
	}
	// The signature is good, so a claim check of go-oidc failed; say which.
	c, perr := parseToken(raw)
	switch {
	case perr != nil:
		return perr
	case c.Issuer != o.issuer:
		return unauthenticated(msgIssuer)
	case !slices.Contains(c.Audience, o.audience):
		return unauthenticated(msgAudience)
	default:
		return backup.Wrap(backup.CodeUnauthenticated, err, msgMalformedToken)
	}
}

// isKeyFetchError reports whether a RemoteKeySet error means the JWKS could not be fetched (as opposed
// to no key verifying the signature). go-oidc wraps fetch failures as "fetching keys ...: %w".
func isKeyFetchError(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || strings.HasPrefix(err.Error(), "fetching keys")
}

// ensureVerifier returns the verifier, running discovery if it has not succeeded yet. Concurrent callers
// share one attempt; after a failure, callers fail fast until the backoff has passed.
func (o *OIDC) ensureVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	if o.verifier != nil {
		v := o.verifier
		o.mu.Unlock()
		return v, nil
	}
	if o.inflight == nil {
		if o.lastErr != nil && o.now().Before(o.retryAt) {
			err := o.lastErr
			o.mu.Unlock()
			return nil, backup.Wrap(backup.CodeTransient, err, msgUnavailable)
		}
		o.inflight = make(chan struct{})
		go o.discover(o.inflight)
	}
	done := o.inflight
	o.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
		return nil, backup.Wrap(backup.CodeTransient, ctx.Err(), msgUnavailable)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.verifier != nil {
		return o.verifier, nil
	}
	return nil, backup.Wrap(backup.CodeTransient, o.lastErr, msgUnavailable)
}

// discover runs one discovery attempt, records its outcome and closes done.
func (o *OIDC) discover(done chan struct{}) {
	ctx, cancel := context.WithTimeout(o.base, discoveryTimeout)
	defer cancel()
	v, endpoints, err := o.newVerifier(ctx)

	o.mu.Lock()
	if err != nil {
		o.failures++
		o.lastErr = err
		wait := min(minRetry<<min(o.failures-1, 16), maxRetry)
		o.retryAt = o.now().Add(wait)
		o.log.Warn().Err(err).Int("attempt", o.failures).Dur("retry_in", wait).Msg("oidc discovery failed")
	} else {
		o.verifier, o.endpoints = v, endpoints
		o.lastErr = nil
		o.failures = 0
		o.log.Info().Msg("oidc discovery done")
	}
	o.inflight = nil
	o.mu.Unlock()
	close(done)
}

// newVerifier fetches the discovery document and builds a verifier on the issuer's JWKS. It also
// returns the issuer's sign-in endpoints, for the console.
func (o *OIDC) newVerifier(ctx context.Context) (*oidc.IDTokenVerifier, Endpoints, error) {
	p, err := oidc.NewProvider(ctx, o.issuer)
	if err != nil {
		return nil, Endpoints{}, fmt.Errorf("discover %s: %w", o.issuer, err)
	}
	var meta struct {
		JWKSURL string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, Endpoints{}, fmt.Errorf("read discovery document: %w", err)
	}
	if meta.JWKSURL == "" {
		return nil, Endpoints{}, errors.New("discovery document has no jwks_uri")
	}
	jwksURL, err := url.Parse(meta.JWKSURL)
	if err == nil {
		err = checkEndpointURL(jwksURL)
	}
	if err != nil {
		return nil, Endpoints{}, fmt.Errorf("jwks_uri: %w", err)
	}
	// Sign-in endpoints are optional for verifying tokens; an issuer without them just cannot sign
	// users in to the console, which Endpoints reports.
	endpoints := Endpoints{Authorization: p.Endpoint().AuthURL, Token: p.Endpoint().TokenURL}
	keys := &keySet{remote: oidc.NewRemoteKeySet(o.base, meta.JWKSURL)}
	return oidc.NewVerifier(o.issuer, keys, &oidc.Config{
		ClientID:             o.audience,
		SupportedSigningAlgs: allowedAlgs,
		// exp and nbf are checked by checkTimes, with a symmetric ClockSkew and clearer errors.
		SkipExpiryCheck: true,
	}), endpoints, nil
}

// Endpoints are an issuer's OAuth 2.0 endpoints for signing users in (authorization code with PKCE).
type Endpoints struct {
	Authorization string // authorization_endpoint
	Token         string // token_endpoint
}

// Endpoints returns the issuer's sign-in endpoints from its discovery document, running discovery if it
// has not succeeded yet. Errors are *backup.Error: CodeTransient while the issuer is unreachable,
// CodeInternal when its document names no usable endpoints.
func (o *OIDC) Endpoints(ctx context.Context) (Endpoints, error) {
	if _, err := o.ensureVerifier(ctx); err != nil {
		return Endpoints{}, err
	}
	o.mu.Lock()
	e := o.endpoints
	o.mu.Unlock()
	for name, raw := range map[string]string{"authorization_endpoint": e.Authorization, "token_endpoint": e.Token} {
		u, err := url.Parse(raw)
		if err == nil {
			err = checkEndpointURL(u)
		}
		if raw == "" || err != nil {
			return Endpoints{}, backup.Wrap(backup.CodeInternal, fmt.Errorf("discovery document %s %q: %v", name, raw, err),
				"the identity provider does not offer sign-in for the console")
		}
	}
	return e, nil
}

// keySet wraps the remote key set to record, in the request context, how the signature check ended.
type keySet struct {
	remote *oidc.RemoteKeySet
}

type sigResultKey struct{}

// sigResult is the outcome of the signature check of one Verify call.
type sigResult struct {
	called bool
	err    error
}

func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	payload, err := k.remote.VerifySignature(ctx, jwt)
	if r, ok := ctx.Value(sigResultKey{}).(*sigResult); ok {
		r.called = true
		r.err = err
	}
	return payload, err
}
