package e2e

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// blobProxy sits between the handler and Azurite's blob endpoint, so that tests can make Blob Storage
// fail or hang on the copies of a restore, which the handler makes server-side: requests that carry
// x-ms-copy-source naming a blob of the file store (Copy Blob From URL, Copy Blob).
type blobProxy struct {
	target *url.URL
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	mode    string        // "", "fail" or "stall"
	after   int64         // copies let through before the mode applies
	release chan struct{} // closed to let stalled copies go on
	copies  atomic.Int64  // store copies seen since the mode was set
	stalled atomic.Int64  // copies being held
}

func startBlobProxy(azuriteBlobURL string) (string, *blobProxy, error) {
	u, err := url.Parse(azuriteBlobURL)
	if err != nil {
		return "", nil, err
	}
	p := &blobProxy{target: &url.URL{Scheme: u.Scheme, Host: u.Host}, release: make(chan struct{})}
	p.rp = httputil.NewSingleHostReverseProxy(p.target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() { _ = http.Serve(ln, p) }()
	return "http://" + ln.Addr().String() + u.Path, p, nil
}

func (p *blobProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if src := r.Header.Get("x-ms-copy-source"); r.Method == http.MethodPut && strings.Contains(src, "/"+fileStoreContainer+"/") {
		p.mu.Lock()
		mode, after, release := p.mode, p.after, p.release
		p.mu.Unlock()
		if n := p.copies.Add(1); mode != "" && n > after {
			switch mode {
			case "fail":
				// What Azure answers when the identity lost its role on the container: permanent.
				w.Header().Set("x-ms-error-code", "AuthorizationPermissionMismatch")
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				_, _ = w.Write([]byte(`<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch</Code>` +
					`<Message>This request is not authorized to perform this operation using this permission.</Message></Error>`))
				return
			case "stall":
				p.stalled.Add(1)
				select {
				case <-release:
				case <-r.Context().Done():
					p.stalled.Add(-1)
					return
				}
				p.stalled.Add(-1)
			}
		}
	}
	p.rp.ServeHTTP(w, r)
}

// set makes store copies after the first `after` fail or stall until the test ends.
func (p *blobProxy) set(t *testing.T, mode string, after int64) {
	t.Helper()
	p.mu.Lock()
	p.mode, p.after, p.release = mode, after, make(chan struct{})
	p.copies.Store(0)
	p.mu.Unlock()
	t.Cleanup(p.reset)
}

func (p *blobProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == "stall" {
		close(p.release)
	}
	p.mode = ""
}
