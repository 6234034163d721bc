package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

// rootMux is the handler's root mux as handler/app.go builds it: a ServeMux in front of the API, wrapped
// in RefuseUncleanPaths.
func rootMux(f *fixture) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/api/health", f.srv)
	mux.Handle("/api/", f.srv)
	return f.srv.RefuseUncleanPaths(mux)
}

// TestUncleanPathsAreRefusedNotRedirected: a dot segment or an empty segment in the path is a 400
// problem, both from the API server alone and behind a ServeMux (which would answer 307 to the cleaned
// path).
func TestUncleanPathsAreRefusedNotRedirected(t *testing.T) {
	f := newFixture(t)
	paths := []string{
		"/api/v1/namespaces/ns-a/../ns-b/environments",
		"/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots/..",
		"/api/v1/namespaces/ns-a/./environments",
		"/api/v1//namespaces/ns-a/environments",
		"/api/../api/health",
		"/api/v1/namespaces/ns-a/environments/..",
	}
	for _, h := range []struct {
		name    string
		handler http.Handler
	}{{"api server", f.srv}, {"root mux", rootMux(f)}} {
		for _, p := range paths {
			req := httptest.NewRequest("GET", "http://h"+p, nil)
			req.Header.Set("Authorization", "Bearer "+manager)
			rec := httptest.NewRecorder()
			h.handler.ServeHTTP(rec, req)
			if rec.Code != 400 || rec.Header().Get("Content-Type") != "application/problem+json" ||
				!strings.Contains(rec.Body.String(), `"code":"INVALID_PARAMETERS"`) || rec.Header().Get("Location") != "" {
				t.Errorf("%s: GET %s: %d %v %s, want a 400 problem", h.name, p, rec.Code, rec.Header(), rec.Body)
			}
		}
	}
	// A trailing slash is not unclean: it is an unknown route.
	req := httptest.NewRequest("GET", "/api/v1/namespaces/ns-a/environments/", nil)
	req.Header.Set("Authorization", "Bearer "+manager)
	rec := httptest.NewRecorder()
	rootMux(f).ServeHTTP(rec, req)
	if rec.Code != 404 {
		t.Errorf("trailing slash: %d, want 404", rec.Code)
	}
}

// TestWrongMethodIs405WithAllow: a known path with a method it does not serve answers 405 problem+json
// with an Allow header listing exactly the methods of the route table.
func TestWrongMethodIs405WithAllow(t *testing.T) {
	f := newFixture(t)
	allowed := map[string][]string{}
	for _, rt := range f.srv.routes() {
		allowed[rt.pattern] = append(allowed[rt.pattern], rt.method)
	}
	for pattern, methods := range allowed {
		p := concretePath(pattern)
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
			if strings.Contains(","+strings.Join(methods, ",")+",", ","+m+",") {
				continue
			}
			for _, principal := range []string{manager, ""} { // 405 comes before authentication
				resp, body := f.do(t, principal, m, p, "")
				wantProblem(t, resp, body, 405, backup.CodeMethodNotAllowed)
				if got, want := resp.Header.Get("Allow"), strings.Join(methods, ", "); got != want {
					t.Errorf("%s %s: Allow %q, want %q", m, p, got, want)
				}
			}
		}
	}
}

// TestBearerChallenge: RFC 6750 section 3.1: no error code without credentials, invalid_token for a
// token that was sent and refused.
func TestBearerChallenge(t *testing.T) {
	f := newFixture(t)
	tests := []struct{ header, want string }{
		{"", `Bearer realm="backups"`},
		{"Basic dXNlcjpwYXNz", `Bearer realm="backups"`},
		{"Bearer", `Bearer realm="backups"`},
		{"Bearer " + refused, `Bearer realm="backups", error="invalid_token"`},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "/api/v1/namespaces/ns-a/environments", nil)
		if tt.header != "" {
			req.Header.Set("Authorization", tt.header)
		}
		rec := httptest.NewRecorder()
		f.srv.ServeHTTP(rec, req)
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != tt.want {
			t.Errorf("Authorization %q: %d WWW-Authenticate %q, want 401 %q", tt.header, rec.Code, rec.Header().Get("WWW-Authenticate"), tt.want)
		}
	}
}
