package console

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/auth"
)

func newTestHandler(t *testing.T, cfg Config) *Handler {
	t.Helper()
	if cfg.Endpoints == nil {
		cfg.Endpoints = func(context.Context) (auth.Endpoints, error) {
			return auth.Endpoints{Authorization: "https://login.example.com/t/oauth2/v2.0/authorize", Token: "https://login.example.com/t/oauth2/v2.0/token"}, nil
		}
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, method, path string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestRoutes(t *testing.T) {
	h := newTestHandler(t, Config{ClientID: "console", Scopes: "openid profile", BlobURL: "https://acct.blob.core.windows.net/"})
	for _, tc := range []struct {
		method, path string
		status       int
		contentType  string
		bodyHas      string
	}{
		{"GET", "/api/console/", 200, "text/html; charset=utf-8", `<script type="module" src="assets/app.js">`},
		{"GET", "/api/console/callback", 200, "text/html; charset=utf-8", "<title>Backups</title>"},
		{"HEAD", "/api/console/", 200, "text/html; charset=utf-8", ""},
		{"GET", "/api/console/assets/app.js", 200, "text/javascript; charset=utf-8", "import * as auth"},
		{"GET", "/api/console/assets/styles.css", 200, "text/css; charset=utf-8", ":root"},
		{"GET", "/api/console/config.json", 200, "application/json", `"client_id":"console"`},
		// index.html is the page, never an asset of its own; other names are not found.
		{"GET", "/api/console/assets/index.html", 404, "text/plain; charset=utf-8", "no such page"},
		{"GET", "/api/console/assets/nope.js", 404, "text/plain; charset=utf-8", "no such page"},
		{"GET", "/api/console/admin", 404, "text/plain; charset=utf-8", "no such page"},
		{"GET", "/api/console/assets/", 404, "text/plain; charset=utf-8", "no such page"},
		{"POST", "/api/console/", 405, "text/plain; charset=utf-8", "only answers GET"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp := get(t, h, tc.method, tc.path, nil)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if !strings.Contains(string(body), tc.bodyHas) {
				t.Errorf("body lacks %q: %.200s", tc.bodyHas, body)
			}
			if tc.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD answered a body of %d bytes", len(body))
			}
			// Every answer, errors included, carries the policy and the hardening headers.
			for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s %q, want %q", k, got, want)
				}
			}
			if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
				t.Errorf("CSP %q", resp.Header.Get("Content-Security-Policy"))
			}
		})
	}
}

func TestRedirectKeepsQuery(t *testing.T) {
	h := newTestHandler(t, Config{ClientID: "console"})
	resp := get(t, h, "GET", "/api/console?namespace=demo", nil)
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/api/console/?namespace=demo" ||
		resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("got %d Location %q CSP %q", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Content-Security-Policy"))
	}
}

func TestPageCachingAndETag(t *testing.T) {
	h := newTestHandler(t, Config{ClientID: "console"})
	// The page's URL carries the authorization code after sign-in; it must not be stored.
	if cc := get(t, h, "GET", "/api/console/", nil).Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("page Cache-Control %q", cc)
	}
	resp := get(t, h, "GET", "/api/console/assets/app.js", nil)
	etag := resp.Header.Get("ETag")
	if resp.Header.Get("Cache-Control") != "no-cache" || !regexp.MustCompile(`^"[0-9a-f]{16}"$`).MatchString(etag) {
		t.Fatalf("asset Cache-Control %q ETag %q", resp.Header.Get("Cache-Control"), etag)
	}
	if again := get(t, h, "GET", "/api/console/assets/app.js", http.Header{"If-None-Match": {etag}}); again.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the ETag: %d, want 304", again.StatusCode)
	}
	if other := get(t, h, "GET", "/api/console/assets/app.js", http.Header{"If-None-Match": {`"0000000000000000"`}}); other.StatusCode != http.StatusOK {
		t.Errorf("If-None-Match with another ETag: %d, want 200", other.StatusCode)
	}
}

func TestContentSecurityPolicy(t *testing.T) {
	h := newTestHandler(t, Config{ClientID: "console", BlobURL: "http://127.0.0.1:10000/devstoreaccount1"})
	page := get(t, h, "GET", "/api/console/", nil).Header.Get("Content-Security-Policy")
	want := "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self' https://login.example.com http://127.0.0.1:10000; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	if page != want {
		t.Errorf("page CSP\n got %s\nwant %s", page, want)
	}
	// No inline script or style anywhere: the policy would block it.
	body, _ := io.ReadAll(get(t, h, "GET", "/api/console/", nil).Body)
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]|style=|<style`).Match(body) {
		t.Errorf("index.html has inline script or style")
	}
	for name, a := range h.assets {
		if strings.HasSuffix(name, ".js") && regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|eval\(|new Function`).Match(a.body) {
			t.Errorf("%s builds markup from strings or evaluates code", name)
		}
	}
	// Issuer down: the page still loads, with a policy that names no token endpoint.
	down := newTestHandler(t, Config{ClientID: "console", Endpoints: func(context.Context) (auth.Endpoints, error) {
		return auth.Endpoints{}, errors.New("down")
	}})
	if csp := get(t, down, "GET", "/api/console/", nil).Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self';") {
		t.Errorf("CSP with the issuer down: %s", csp)
	}
}

func TestConfig(t *testing.T) {
	decode := func(t *testing.T, resp *http.Response) pageConfig {
		t.Helper()
		var c pageConfig
		dec := json.NewDecoder(resp.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("ready", func(t *testing.T) {
		h := newTestHandler(t, Config{IssuerURL: "https://login.example.com/t/v2.0", ClientID: "console", Scopes: "openid profile api://x/access",
			DefaultNamespace: "demo", Version: "v1"})
		resp := get(t, h, "GET", "/api/console/config.json", nil)
		c := decode(t, resp)
		want := pageConfig{Issuer: "https://login.example.com/t/v2.0", AuthorizationEndpoint: "https://login.example.com/t/oauth2/v2.0/authorize",
			TokenEndpoint: "https://login.example.com/t/oauth2/v2.0/token", ClientID: "console", Scopes: "openid profile api://x/access",
			DefaultNamespace: "demo", API: "/api/v1", Version: "v1"}
		if c != want || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("got %+v (Cache-Control %q)\nwant %+v", c, resp.Header.Get("Cache-Control"), want)
		}
	})
	t.Run("no client id", func(t *testing.T) {
		resp := get(t, newTestHandler(t, Config{}), "GET", "/api/console/config.json", nil)
		c := decode(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(c.Problem, "CONSOLE_CLIENT_ID") || c.AuthorizationEndpoint != "" {
			t.Errorf("got %d %+v", resp.StatusCode, c)
		}
	})
	t.Run("issuer unreachable", func(t *testing.T) {
		h := newTestHandler(t, Config{ClientID: "console", Endpoints: func(context.Context) (auth.Endpoints, error) {
			return auth.Endpoints{}, errors.New("dial tcp: connection refused")
		}})
		resp := get(t, h, "GET", "/api/console/config.json", nil)
		c := decode(t, resp)
		// A sentence for the user; the cause goes to the log.
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(c.Problem, "cannot be reached") || strings.Contains(c.Problem, "dial") {
			t.Errorf("got %d %+v", resp.StatusCode, c)
		}
	})
}

func TestOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://acct.blob.core.windows.net/":     "https://acct.blob.core.windows.net",
		"http://127.0.0.1:10000/devstoreaccount1": "http://127.0.0.1:10000",
		"":          "",
		"not a url": "",
	} {
		if got := origin(in); got != want {
			t.Errorf("origin(%q) = %q, want %q", in, got, want)
		}
	}
}
