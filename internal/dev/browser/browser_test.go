package browser

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// strictCSP is the console's kind of policy: the tests prove the harness works under it.
const strictCSP = "default-src 'none'; script-src 'self'; style-src 'self'"

func newBrowser(t *testing.T, opts Options) *Browser {
	t.Helper()
	if testing.Short() {
		t.Skip("browser tests need Chromium; not in -short")
	}
	opts.Logf = t.Logf
	b, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// serve answers each path with its HTML under the strict policy.
func serve(t *testing.T, pages map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Security-Policy", strictCSP)
		if strings.HasSuffix(r.URL.Path, ".js") {
			w.Header().Set("Content-Type", "text/javascript")
		} else {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
		}
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func navigate(t *testing.T, b *Browser, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate %s: %v", url, err)
	}
}

func TestAxeUnderStrictCSP(t *testing.T) {
	b := newBrowser(t, Options{})
	srv := serve(t, map[string]string{
		"/bad": `<!doctype html><html><head><title>bad</title></head><body><main><h1>Bad</h1>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><button></button></main></body></html>`,
		"/good": `<!doctype html><html lang="en"><head><title>good</title></head><body><main><h1>Good</h1>
<img alt="a pixel" src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><button type="button">Save</button></main></body></html>`,
	})
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()

	navigate(t, b, srv.URL+"/bad")
	vs, err := b.Axe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, v := range Serious(vs) {
		ids[v.ID] = true
	}
	for _, want := range []string{"image-alt", "button-name"} {
		if !ids[want] {
			t.Errorf("axe on the bad page: no serious %s among %s", want, Violations(vs))
		}
	}

	navigate(t, b, srv.URL+"/good")
	vs, err = b.Axe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := Serious(vs); len(s) > 0 {
		t.Errorf("axe on the good page: %s", s)
	}
}

func TestConsoleErrorsAreRecorded(t *testing.T) {
	b := newBrowser(t, Options{})
	srv := serve(t, map[string]string{
		"/": `<!doctype html><html lang="en"><head><title>p</title><script src="/app.js"></script></head><body></body></html>`,
		"/app.js": `console.error("broken on purpose"); console.log("not an error");
setTimeout(() => { throw new Error("thrown on purpose"); }, 0);
fetch("http://127.0.0.1:9/elsewhere").catch(() => {});`,
	})
	navigate(t, b, srv.URL+"/")
	deadline := time.Now().Add(10 * time.Second)
	for len(b.ConsoleErrors()) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	got := strings.Join(b.ConsoleErrors(), "\n")
	// The fetch to another origin breaks the policy's connect-src ('none' by default-src).
	if !strings.Contains(got, "broken on purpose") || !strings.Contains(got, "thrown on purpose") ||
		!strings.Contains(got, "Content Security Policy") || strings.Contains(got, "not an error") {
		t.Errorf("console errors:\n%s", got)
	}
}

func TestScreenshotIsPNG(t *testing.T) {
	b := newBrowser(t, Options{Width: 800, Height: 600})
	srv := serve(t, map[string]string{"/": `<!doctype html><html lang="en"><head><title>s</title></head><body><h1>Hello</h1></body></html>`})
	navigate(t, b, srv.URL+"/")
	path, err := b.Screenshot("harness test/../shot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	dir, _ := ScreenshotDir()
	if !strings.HasPrefix(path, dir+"/") || !strings.HasSuffix(path, ".png") {
		t.Errorf("saved at %s, want a .png under %s", path, dir)
	}
	png, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("%s is not a PNG (%v)", path, err)
	}
}

func TestDownloadFromAnotherOrigin(t *testing.T) {
	dir := t.TempDir()
	b := newBrowser(t, Options{DownloadDir: dir})
	content := bytes.Repeat([]byte("archive bytes "), 5000)
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Content-Disposition", `attachment; filename="backup-1.tar.gz"`)
		_, _ = w.Write(content)
	}))
	t.Cleanup(files.Close)
	srv := serve(t, map[string]string{"/": `<!doctype html><html lang="en"><head><title>d</title></head><body>
<a id="get" href="` + files.URL + `/x?sig=1">Download</a></body></html>`})
	navigate(t, b, srv.URL+"/")
	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#get"))); err != nil {
		t.Fatal(err)
	}
	d, err := b.WaitDownload(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(d.Path)
	if err != nil || d.SuggestedName != "backup-1.tar.gz" || !bytes.Equal(got, content) {
		t.Errorf("download %+v: %d bytes (%v), want %d bytes named backup-1.tar.gz", d, len(got), err, len(content))
	}
}

func TestSetViewport(t *testing.T) {
	b := newBrowser(t, Options{})
	srv := serve(t, map[string]string{"/": `<!doctype html><html lang="en"><head><meta name="viewport" content="width=device-width, initial-scale=1"><title>v</title></head><body></body></html>`})
	navigate(t, b, srv.URL+"/")
	width := func() int {
		ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
		defer cancel()
		w, err := chromedp.Run(ctx, chromedp.Evaluate[int]("window.innerWidth"))
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	if w := width(); w != 1280 {
		t.Errorf("default width %d, want 1280", w)
	}
	if err := b.SetViewport(390, 844); err != nil {
		t.Fatal(err)
	}
	if w := width(); w != 390 {
		t.Errorf("width after SetViewport(390): %d", w)
	}
}

func TestWaitTextSaysWhatItSaw(t *testing.T) {
	b := newBrowser(t, Options{})
	srv := serve(t, map[string]string{"/": `<!doctype html><html lang="en"><head><title>w</title></head><body><p id="s">Processing</p></body></html>`})
	navigate(t, b, srv.URL+"/")
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	if err := b.WaitText(ctx, "#s", "Process", time.Second); err != nil {
		t.Errorf("text present: %v", err)
	}
	err := b.WaitText(ctx, "#s", "Finished", 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `"Processing"`) {
		t.Errorf("text absent: got %v, want an error quoting what the element shows", err)
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{"a b.png": "a-b.png", "../../etc/passwd": "passwd", "": "download", "..": "download"} {
		if got := safeName(in); got != want {
			t.Errorf("safeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExecutableMissing(t *testing.T) {
	t.Setenv("CHROMIUM", "/nonexistent/chromium")
	if _, err := Executable(); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("got %v, want an error pointing at make deps", err)
	}
}
