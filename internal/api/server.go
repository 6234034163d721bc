// Package api owns the service's HTTP API (docs/api.md): the route table, authentication and
// authorisation of each call, request decoding, and the mapping of domain errors to problem+json.
// Handlers return errors; one adapter turns them into responses.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth"
	"github.com/mxazure/backups/internal/backup"
)

// Server serves /api/health and /api/v1. Build it with New.
type Server struct {
	log     zerolog.Logger
	version string
	checks  []Check
	authn   auth.Authenticator
	svc     *backup.Service
	mux     *http.ServeMux
	health  healthCache
	now     func() time.Time
}

// Deps are what the API needs.
type Deps struct {
	Log           zerolog.Logger
	Version       string
	Checks        []Check
	Authenticator auth.Authenticator
	Service       *backup.Service
	// Now is the clock of the service (whether a restore can still be undone); time.Now when nil.
	Now func() time.Time
}

// New builds the server and registers its routes.
func New(d Deps) *Server {
	s := &Server{log: d.Log, version: d.Version, checks: d.Checks, authn: d.Authenticator, svc: d.Service, mux: http.NewServeMux()}
	s.health = healthCache{ttl: healthCacheTTL, now: time.Now}
	s.now = d.Now
	if s.now == nil {
		s.now = time.Now
	}
	var patterns []string
	byPattern := map[string][]route{}
	for _, rt := range s.routes() {
		if byPattern[rt.pattern] == nil {
			patterns = append(patterns, rt.pattern)
		}
		byPattern[rt.pattern] = append(byPattern[rt.pattern], rt)
	}
	for _, p := range patterns {
		s.mux.Handle(p, s.byMethod(byPattern[p]))
	}
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, backup.Errorf(backup.CodeNotFound, "there is no API route %s", r.URL.Path))
	})
	return s
}

// byMethod serves one path pattern: the route of the request's method, else 405 with an Allow header
// (before authentication: which methods a path has is public, in the OpenAPI document).
func (s *Server) byMethod(rts []route) http.HandlerFunc {
	handlers := map[string]http.HandlerFunc{}
	var allow []string
	for _, rt := range rts {
		h := rt.handler
		if rt.public {
			handlers[rt.method] = func(w http.ResponseWriter, r *http.Request) { h(w, r, backup.Principal{}) }
		} else {
			handlers[rt.method] = s.authenticated(h)
		}
		allow = append(allow, rt.method)
	}
	allowed := strings.Join(allow, ", ")
	return func(w http.ResponseWriter, r *http.Request) {
		if h, ok := handlers[r.Method]; ok {
			h(w, r)
			return
		}
		w.Header().Set("Allow", allowed)
		writeProblem(w, r, backup.Errorf(backup.CodeMethodNotAllowed, "method %s is not allowed here; allowed: %s", r.Method, allowed))
	}
}

// handlerFunc is an API handler: it writes its success response itself and returns errors.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p backup.Principal) error

type route struct {
	method  string
	pattern string // net/http pattern; {name} segments match the OpenAPI path parameters
	public  bool   // no bearer token needed
	handler func(w http.ResponseWriter, r *http.Request, p backup.Principal)
}

// routes is the one route table of the API. The OpenAPI document must list exactly these (tested).
func (s *Server) routes() []route {
	h := s.handle
	const env = "/api/v1/namespaces/{ns}/environments/{env}"
	return []route{
		// Load balancers, the Functions host's probes and operators: dependency checks.
		{method: "GET", pattern: "/api/health", public: true, handler: func(w http.ResponseWriter, r *http.Request, _ backup.Principal) { s.handleHealth(w, r) }},
		// API clients and documentation tools.
		{method: "GET", pattern: "/api/v1/openapi.json", public: true, handler: func(w http.ResponseWriter, r *http.Request, _ backup.Principal) { serveOpenAPI(w) }},
		// Portal: the environments of a namespace, with whether a backup can be made now.
		{method: "GET", pattern: "/api/v1/namespaces/{ns}/environments", handler: h(s.listEnvironments)},
		// Portal: the namespace's "Try new Backup and Restore" switch.
		{method: "GET", pattern: "/api/v1/namespaces/{ns}/settings", handler: h(s.getSettings)},
		{method: "PUT", pattern: "/api/v1/namespaces/{ns}/settings", handler: h(s.putSettings)},
		// Portal: an environment's activity log.
		{method: "GET", pattern: env + "/activity", handler: h(s.listActivity)},
		// Portal: snapshots of an environment: list (newest first), create on demand, details, comment, delete.
		{method: "GET", pattern: env + "/snapshots", handler: h(s.listSnapshots)},
		{method: "POST", pattern: env + "/snapshots", handler: h(s.createSnapshot)},
		{method: "GET", pattern: env + "/snapshots/{id}", handler: h(s.getSnapshot)},
		{method: "PATCH", pattern: env + "/snapshots/{id}", handler: h(s.patchSnapshot)},
		{method: "DELETE", pattern: env + "/snapshots/{id}", handler: h(s.deleteSnapshot)},
		// Portal: restores into an environment (the target): list (newest first), start one, details, undo.
		{method: "GET", pattern: env + "/restores", handler: h(s.listRestores)},
		{method: "POST", pattern: env + "/restores", handler: h(s.createRestore)},
		{method: "GET", pattern: env + "/restores/{restore_id}", handler: h(s.getRestore)},
		{method: "POST", pattern: env + "/restores/{restore_id}/undo", handler: h(s.undoRestore)},
		// Portal: downloads of a snapshot (a link once prepared) and uploads of archives as new snapshots.
		{method: "GET", pattern: env + "/snapshots/{id}/archives", handler: h(s.listArchives)},
		{method: "POST", pattern: env + "/snapshots/{id}/archives", handler: h(s.createArchive)},
		{method: "GET", pattern: env + "/snapshots/{id}/archives/{archive_id}", handler: h(s.getArchive)},
		{method: "POST", pattern: env + "/uploads", handler: h(s.createUpload)},
		{method: "POST", pattern: env + "/uploads/{upload_id}/complete", handler: h(s.completeUpload)},
	}
}

// handle adapts a handlerFunc: errors become problem responses.
func (s *Server) handle(f handlerFunc) func(http.ResponseWriter, *http.Request, backup.Principal) {
	return func(w http.ResponseWriter, r *http.Request, p backup.Principal) {
		if err := f(w, r, p); err != nil {
			writeProblem(w, r, err)
		}
	}
}

// realm is the protection space named in WWW-Authenticate challenges.
const realm = "backups"

// authenticated checks the bearer token before calling h.
func (s *Server) authenticated(h func(http.ResponseWriter, *http.Request, backup.Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		ap, err := s.authn.Authenticate(r.Context(), header)
		if err != nil {
			if backup.CodeOf(err) == backup.CodeUnauthenticated {
				w.Header().Set("WWW-Authenticate", auth.Challenge(realm, header))
			}
			writeProblem(w, r, err)
			return
		}
		rc := requestFrom(r.Context(), s.log)
		rc.log = rc.log.With().Str("principal", ap.ID).Logger()
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, rc))
		h(w, r, backup.Principal{ID: ap.ID, Name: ap.Name})
	}
}

// ServeHTTP serves the API, giving each request an id and a logger.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.RefuseUncleanPaths(s.mux).ServeHTTP(w, r)
}

// RefuseUncleanPaths gives each request an id (the Functions invocation id, else a random one) and a
// logger, and answers a path with dot segments or empty segments with a 400 problem instead of passing
// it on. A ServeMux would redirect such a path to its cleaned form before any handler runs, and API
// clients do not follow a redirect to a path they did not mean: the handler's root mux must be wrapped
// in this.
func (s *Server) RefuseUncleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Value(requestKey{}).(request); ok {
			next.ServeHTTP(w, r) // already done by an outer wrapper
			return
		}
		id := r.Header.Get("X-Azure-Functions-InvocationId")
		if id == "" {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		log := s.log.With().Str("invocation", id).Str("method", r.Method).Str("path", r.URL.Path).Logger()
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, request{id: id, log: log}))
		if !cleanPath(r.URL.EscapedPath()) {
			writeProblem(w, r, backup.Errorf(backup.CodeInvalidParameters, "the request path must not contain dot segments (. or ..) or empty segments (//)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath reports whether p is what a ServeMux would not redirect: path.Clean leaves it alone, apart
// from a trailing slash.
func cleanPath(p string) bool {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// request is what the API knows of the request being served: its id (the reference quoted in internal
// errors) and its logger.
type request struct {
	id  string
	log zerolog.Logger
}

type requestKey struct{}

// requestFrom returns the request's id and logger; outside RefuseUncleanPaths (tests calling a handler
// directly) a request without id and the fallback logger.
func requestFrom(ctx context.Context, fallback zerolog.Logger) request {
	if rc, ok := ctx.Value(requestKey{}).(request); ok {
		return rc
	}
	return request{log: fallback}
}
