// Package api owns the service's HTTP API (spec/api.md): the route table, authentication and
// authorisation of each call, request decoding, and the mapping of domain errors to problem+json.
// Handlers return errors; one adapter turns them into responses.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"path"

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
}

// Deps are what the API needs.
type Deps struct {
	Log           zerolog.Logger
	Version       string
	Checks        []Check
	Authenticator auth.Authenticator
	Service       *backup.Service
}

// New builds the server and registers its routes.
func New(d Deps) *Server {
	s := &Server{log: d.Log, version: d.Version, checks: d.Checks, authn: d.Authenticator, svc: d.Service, mux: http.NewServeMux()}
	for _, rt := range s.routes() {
		h := rt.handler
		if rt.public {
			s.mux.HandleFunc(rt.method+" "+rt.pattern, func(w http.ResponseWriter, r *http.Request) { h(w, r, backup.Principal{}) })
		} else {
			s.mux.HandleFunc(rt.method+" "+rt.pattern, s.authenticated(h))
		}
	}
	s.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, s.log, backup.Errorf(backup.CodeNotFound, "no API route %s %s", r.Method, r.URL.Path))
	})
	return s
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
	}
}

// handle adapts a handlerFunc: errors become problem responses.
func (s *Server) handle(f handlerFunc) func(http.ResponseWriter, *http.Request, backup.Principal) {
	return func(w http.ResponseWriter, r *http.Request, p backup.Principal) {
		if err := f(w, r, p); err != nil {
			writeProblem(w, loggerFrom(r.Context(), s.log), err)
		}
	}
}

// authenticated checks the bearer token before calling h.
func (s *Server) authenticated(h func(http.ResponseWriter, *http.Request, backup.Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		log := loggerFrom(r.Context(), s.log)
		ap, err := s.authn.Authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			if backup.CodeOf(err) == backup.CodeUnauthenticated {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			writeProblem(w, log, err)
			return
		}
		log = log.With().Str("principal", ap.ID).Logger()
		r = r.WithContext(withLogger(r.Context(), log))
		h(w, r, backup.Principal{ID: ap.ID, Name: ap.Name})
	}
}

// ServeHTTP serves the API, giving each request an id and a logger.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("X-Azure-Functions-InvocationId")
	if id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	w.Header().Set("X-Request-Id", id)
	log := s.log.With().Str("invocation", id).Str("method", r.Method).Str("path", r.URL.Path).Logger()
	// Refuse dot segments and doubled slashes instead of redirecting: API clients do not follow a
	// redirect to a path they did not mean.
	if p := r.URL.EscapedPath(); path.Clean(p) != p {
		writeProblem(w, log, backup.Errorf(backup.CodeInvalidParameters, "the request path is not canonical (dot segments or empty segments)"))
		return
	}
	s.mux.ServeHTTP(w, r.WithContext(withLogger(r.Context(), log)))
}

type loggerKey struct{}

func withLogger(ctx context.Context, log zerolog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

func loggerFrom(ctx context.Context, fallback zerolog.Logger) zerolog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(zerolog.Logger); ok {
		return l
	}
	return fallback
}
