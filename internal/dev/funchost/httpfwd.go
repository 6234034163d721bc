package funchost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// httpRoute is one HTTP-triggered function with its parsed route and allowed methods (nil: all).
type httpRoute struct {
	fn      *Function
	tmpl    *routeTemplate
	methods map[string]bool
}

// httpFront serves the app's HTTP functions: it matches /<routePrefix>/<route> and forwards the
// original request to the handler, as the real host does with enableForwardingHttpRequest.
type httpFront struct {
	prefix  []string // lower-cased route prefix segments
	routes  []httpRoute
	forward bool
	inv     *invoker
	log     zerolog.Logger
}

func newHTTPFront(app *App, inv *invoker, log zerolog.Logger) (*httpFront, error) {
	h := &httpFront{forward: app.Host.ForwardHTTP, inv: inv, log: log}
	for _, s := range splitPath(app.Host.RoutePrefix) {
		h.prefix = append(h.prefix, strings.ToLower(s))
	}
	for _, fn := range app.Functions {
		if fn.Trigger != TriggerHTTP {
			continue
		}
		tmpl, err := parseRoute(fn.Route())
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", fn.Name, err)
		}
		r := httpRoute{fn: fn, tmpl: tmpl}
		if ms := fn.TriggerBinding.Methods; len(ms) > 0 {
			r.methods = map[string]bool{}
			for _, m := range ms {
				r.methods[strings.ToUpper(m)] = true
			}
		}
		h.routes = append(h.routes, r)
	}
	return h, nil
}

// match returns the most specific function whose route and methods match the request, or nil.
func (h *httpFront) match(method, path string) *httpRoute {
	segs := splitPath(path)
	if len(segs) < len(h.prefix) {
		return nil
	}
	for i, p := range h.prefix {
		if strings.ToLower(segs[i]) != p {
			return nil
		}
	}
	rest := segs[len(h.prefix):]
	var best *httpRoute
	for i := range h.routes {
		r := &h.routes[i]
		if r.methods != nil && !r.methods[method] {
			continue
		}
		if r.tmpl.match(rest) && (best == nil || best.tmpl.lessSpecific(r.tmpl)) {
			best = r
		}
	}
	return best
}

func (h *httpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := h.match(r.Method, r.URL.Path)
	if route == nil {
		http.Error(w, "no function matches "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	if !h.forward || !route.fn.IsHTTPForwardable() {
		http.Error(w, fmt.Sprintf("function %s: the local host only forwards HTTP functions whose bindings are one "+
			"httpTrigger and one http output, with customHandler.enableForwardingHttpRequest true", route.fn.Name),
			http.StatusNotImplemented)
		return
	}
	h.forwardRequest(w, r, route.fn)
}

// hopHeaders are connection-level headers a proxy does not forward.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func copyHeaders(dst, src http.Header) {
	drop := map[string]bool{}
	for _, h := range hopHeaders {
		drop[h] = true
	}
	for _, v := range src["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			drop[textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(f))] = true
		}
	}
	for k, vs := range src {
		if !drop[k] {
			dst[k] = append([]string(nil), vs...)
		}
	}
}

// forwardRequest streams the request to the handler and its response back, without buffering bodies.
func (h *httpFront) forwardRequest(w http.ResponseWriter, r *http.Request, fn *Function) {
	defer h.inv.begin()()
	id := newInvocationID()
	log := h.log.With().Str("function", fn.Name).Str("invocation", id).Logger()
	log.Info().Str("method", r.Method).Str("path", r.URL.Path).Msgf("Executing 'Functions.%s' (Id=%s)", fn.Name, id)
	inv := Invocation{ID: id, Function: fn.Name, Trigger: "httpTrigger", StartedAt: time.Now().UTC()}
	status, err := h.roundTrip(w, r, id)
	inv.DurationMS = time.Since(inv.StartedAt).Milliseconds()
	inv.HTTPStatus, inv.Status = status, StatusSucceeded
	if err != nil {
		inv.Status, inv.Error = StatusFailed, err.Error()
	}
	h.inv.record(inv, log)
}

func (h *httpFront) roundTrip(w http.ResponseWriter, r *http.Request, id string) (int, error) {
	ctx := r.Context()
	// The handler may answer before it has read the whole request body (an upload it rejects).
	_ = http.NewResponseController(w).EnableFullDuplex()
	g, err := h.inv.proc.current(ctx)
	if err != nil {
		http.Error(w, "handler unavailable", http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable, fmt.Errorf("wait for handler: %w", err)
	}
	if h.inv.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.inv.timeout)
		defer cancel()
	}
	out, err := http.NewRequestWithContext(ctx, r.Method, g.baseURL+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return http.StatusBadRequest, fmt.Errorf("build request: %w", err)
	}
	if r.ContentLength == 0 {
		out.Body = nil
	}
	out.ContentLength = r.ContentLength
	copyHeaders(out.Header, r.Header)
	out.Host = r.Host
	out.Header.Set("X-Azure-Functions-InvocationId", id)
	out.Header.Set("X-Azure-Functions-HostVersion", hostVersion)
	resp, err := h.inv.client.Transport.RoundTrip(out)
	if err != nil {
		err = h.failure(ctx, g, err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return http.StatusInternalServerError, err
	}
	defer resp.Body.Close()
	copyHeaders(w.Header(), resp.Header)
	w.Header().Set("X-Azure-Functions-InvocationId", id)
	w.WriteHeader(resp.StatusCode)
	if err := copyFlushing(w, resp.Body); err != nil {
		return resp.StatusCode, h.failure(ctx, g, err)
	}
	return resp.StatusCode, nil
}

// failure explains a failed exchange, restarting the handler when the function timeout passed.
func (h *httpFront) failure(ctx context.Context, g *procGen, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		h.inv.proc.kill(g, "function timeout")
		g.awaitExit()
		return fmt.Errorf("timeout value of %s exceeded by function", h.inv.timeout)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("client went away: %w", err)
	}
	return fmt.Errorf("forward to handler: %w", err)
}

// copyFlushing copies the body, flushing after every chunk so streams reach the caller as they come.
func copyFlushing(w http.ResponseWriter, body io.Reader) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 64<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return fmt.Errorf("write response: %w", werr)
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read handler response: %w", err)
		}
	}
}
