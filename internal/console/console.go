// Package console serves the web console: a single page (Backups, like Mendix's portals) that signs the
// user in with the configured OIDC issuer (authorization code with PKCE) and does everything through the
// public API with the user's bearer token. The server side only hands out static files, embedded in the
// binary, and the page's settings; it renders no data, so the console can do nothing the API would not
// allow its user to do.
//
// Routes, under Prefix (the Console function's route, console/{*path}, behind the host's "api" prefix):
//
//	GET /api/console             → redirect to /api/console/ (the assets' paths are relative)
//	GET /api/console/            → the page
//	GET /api/console/callback    → the page again: the issuer's redirect back after sign-in
//	GET /api/console/config.json → the page's settings: issuer endpoints, client id, scopes
//	GET /api/console/assets/…    → scripts and styles
//
// Every response has a strict Content-Security-Policy: the page loads nothing from elsewhere, and talks
// only to the service itself, the issuer's token endpoint and the blob endpoint that uploads go to.
package console

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth"
)

// Prefix is the path the console is served under: the Console function's route behind the host's route
// prefix.
const Prefix = "/api/console/"

// CallbackPath is the redirect URI's path, to register with the issuer (an SPA redirect URI in Entra ID).
const CallbackPath = Prefix + "callback"

//go:embed assets
var assetFS embed.FS

// Config is what the page needs to know.
type Config struct {
	IssuerURL string
	// ClientID is the console's public client at the issuer; empty means sign-in is not set up, which
	// the page says.
	ClientID string
	// Scopes are asked for at sign-in, space-separated.
	Scopes string
	// DefaultNamespace is opened when the page's link names no namespace; may be empty.
	DefaultNamespace string
	Version          string
	// Endpoints gives the issuer's sign-in endpoints (from its discovery document).
	Endpoints func(ctx context.Context) (auth.Endpoints, error)
	// BlobURL is the blob endpoint upload links point at (STORAGE_BLOB_URL, or Azurite's): the page
	// uploads archives straight to it.
	BlobURL string
	Log     zerolog.Logger
}

// Handler serves the console.
type Handler struct {
	cfg    Config
	assets map[string]asset // by name under assets/
	page   asset
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// endpointsTimeout bounds the discovery a page load may wait for; later loads use the cached result.
const endpointsTimeout = 5 * time.Second

// New reads the embedded files.
func New(cfg Config) (*Handler, error) {
	h := &Handler{cfg: cfg, assets: map[string]asset{}}
	err := fs.WalkDir(assetFS, "assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assetFS.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a := asset{body: body, contentType: mime.TypeByExtension(path.Ext(name)), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		if a.contentType == "" {
			a.contentType = "application/octet-stream"
		}
		h.assets[strings.TrimPrefix(name, "assets/")] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	page, ok := h.assets["index.html"]
	if !ok {
		return nil, fmt.Errorf("console assets: no index.html")
	}
	h.page = page
	return h, nil
}

// ServeHTTP serves the routes of the package comment.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.securityHeaders(w, "")
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "The console only answers GET.", http.StatusMethodNotAllowed)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	switch {
	case r.URL.Path == strings.TrimSuffix(Prefix, "/"):
		h.securityHeaders(w, "")
		target := Prefix
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
	case !ok:
		http.NotFound(w, r)
	case rest == "" || rest == "callback":
		h.servePage(w, r)
	case rest == "config.json":
		h.serveConfig(w, r)
	case strings.HasPrefix(rest, "assets/"):
		name := strings.TrimPrefix(rest, "assets/")
		a, found := h.assets[name]
		if !found || name == "index.html" {
			h.notFound(w)
			return
		}
		h.serveAsset(w, r, a, "no-cache")
	default:
		h.notFound(w)
	}
}

func (h *Handler) notFound(w http.ResponseWriter) {
	h.securityHeaders(w, "")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte("There is no such page in the console.\n"))
}

// servePage serves index.html with a policy naming the token endpoint, which the page posts the
// authorization code to.
func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	tokenOrigin := ""
	if e, err := h.endpoints(r.Context()); err == nil {
		tokenOrigin = origin(e.Token)
	}
	h.securityHeaders(w, tokenOrigin)
	// The page's URL carries the authorization code after sign-in: never cache it.
	h.serveAsset(w, r, h.page, "no-store")
}

func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request, a asset, cacheControl string) {
	if w.Header().Get("Content-Security-Policy") == "" {
		h.securityHeaders(w, "")
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Cache-Control", cacheControl)
	w.Header().Set("ETag", a.etag)
	if match := r.Header.Get("If-None-Match"); match != "" && match == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(a.body)
}

// pageConfig is config.json.
type pageConfig struct {
	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	ClientID              string `json:"client_id"`
	Scopes                string `json:"scopes"`
	DefaultNamespace      string `json:"default_namespace"`
	API                   string `json:"api"`
	Version               string `json:"version"`
	// Problem is a sentence saying why sign-in cannot work now; empty when it can.
	Problem string `json:"problem"`
}

func (h *Handler) serveConfig(w http.ResponseWriter, r *http.Request) {
	cfg := pageConfig{Issuer: h.cfg.IssuerURL, ClientID: h.cfg.ClientID, Scopes: h.cfg.Scopes,
		DefaultNamespace: h.cfg.DefaultNamespace, API: "/api/v1", Version: h.cfg.Version}
	status := http.StatusOK
	if cfg.ClientID == "" {
		cfg.Problem = "Sign-in to the console is not set up: the service's operator has to set CONSOLE_CLIENT_ID to the console's client id at the identity provider."
	} else if e, err := h.endpoints(r.Context()); err != nil {
		h.cfg.Log.Warn().Err(err).Msg("console: the issuer's sign-in endpoints are unknown")
		cfg.Problem = "The identity provider cannot be reached, so signing in is not possible right now. Try again in a minute."
		status = http.StatusServiceUnavailable
	} else {
		cfg.AuthorizationEndpoint, cfg.TokenEndpoint = e.Authorization, e.Token
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		http.Error(w, "encode config", http.StatusInternalServerError)
		return
	}
	h.securityHeaders(w, "")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (h *Handler) endpoints(ctx context.Context) (auth.Endpoints, error) {
	if h.cfg.Endpoints == nil {
		return auth.Endpoints{}, fmt.Errorf("no issuer endpoints configured")
	}
	ctx, cancel := context.WithTimeout(ctx, endpointsTimeout)
	defer cancel()
	return h.cfg.Endpoints(ctx)
}

// ContentSecurityPolicy is the policy of every console response: nothing but the console's own scripts
// and styles, no inline code, no framing; connections to the service itself, plus the issuer's token
// endpoint (tokenOrigin, may be empty) and the blob endpoint that uploads go to.
func (h *Handler) ContentSecurityPolicy(tokenOrigin string) string {
	connect := []string{"'self'"}
	for _, o := range []string{tokenOrigin, origin(h.cfg.BlobURL)} {
		if o != "" && !slices.Contains(connect, o) {
			connect = append(connect, o)
		}
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self'",
		"img-src 'self' data:",
		"connect-src " + strings.Join(connect, " "),
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

func (h *Handler) securityHeaders(w http.ResponseWriter, tokenOrigin string) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", h.ContentSecurityPolicy(tokenOrigin))
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	// The page's URL holds the authorization code for a moment: send it nowhere.
	hd.Set("Referrer-Policy", "no-referrer")
}

// origin is scheme://host[:port] of an absolute URL, empty for anything else.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
