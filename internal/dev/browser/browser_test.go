package browser

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
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

// serve answers each path with its body under the strict policy.
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

func eval[T any](t *testing.T, b *Browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func TestAxeUnderStrictCSP(t *testing.T) {
	b := newBrowser(t, Options{})
	// Each page runs its own script (allowed: 'self') and tries an inline one (blocked), which shows
	// that the policy is in force while axe-core runs.
	const scripts = `<script src="/app.js"></script><script>document.documentElement.dataset.inline = "ran";</script>`
	srv := serve(t, map[string]string{
		"/app.js": `document.documentElement.dataset.own = "ran";`,
		"/bad": `<!doctype html><html><head><title>bad</title>` + scripts + `</head><body><main><h1>Bad</h1>
<img src="/pixel.gif"><button></button></main></body></html>`,
		"/good": `<!doctype html><html lang="en"><head><title>good</title>` + scripts + `</head><body><main><h1>Good</h1>
<img alt="a pixel" src="/pixel.gif"><button type="button">Save</button></main></body></html>`,
	})
	// A plain context works too: Axe runs on the tab until it ends.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	navigate(t, b, srv.URL+"/bad")
	if own, inline := eval[string](t, b, `document.documentElement.dataset.own || ""`),
		eval[string](t, b, `document.documentElement.dataset.inline || ""`); own != "ran" || inline != "" {
		t.Fatalf("the page's own script ran: %q, its inline script ran: %q; want only its own (the policy in force)", own, inline)
	}
	vs, err := b.Axe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, v := range Serious(vs) {
		ids[v.ID] = true
	}
	for _, want := range []string{"image-alt", "button-name", "html-has-lang"} {
		if !ids[want] {
			t.Errorf("axe on the bad page: no serious %s among\n%s", want, vs)
		}
	}
	// A second run on the same page reuses the injected script and finds the same.
	again, err := b.Axe(ctx)
	if err != nil || len(again) != len(vs) {
		t.Errorf("axe again on the bad page: %v\n%s", err, again)
	}

	navigate(t, b, srv.URL+"/good")
	vs, err = b.Axe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) > 0 {
		t.Errorf("axe on the good page:\n%s", vs)
	}
}

func TestConsoleErrorsAreRecorded(t *testing.T) {
	b := newBrowser(t, Options{})
	srv := serve(t, map[string]string{
		"/": `<!doctype html><html lang="en"><head><title>p</title><script src="/app.js"></script></head><body></body></html>`,
		"/app.js": `console.error("broken", "on purpose", 42); console.log("not an error"); console.warn("only a warning");
setTimeout(() => { throw new Error("thrown on purpose"); }, 0);
fetch("http://127.0.0.1:9/elsewhere").catch(() => {});`,
	})
	if got := b.ConsoleErrors(); len(got) > 0 {
		t.Fatalf("errors before any page: %q", got)
	}
	navigate(t, b, srv.URL+"/")
	deadline := time.Now().Add(10 * time.Second)
	for len(b.ConsoleErrors()) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	got := strings.Join(b.ConsoleErrors(), "\n")
	// The fetch to another origin breaks the policy's connect-src ('none' by default-src).
	for _, want := range []string{"console.error: broken on purpose 42 (" + srv.URL + "/app.js:1)", "thrown on purpose", "Content Security Policy"} {
		if !strings.Contains(got, want) {
			t.Errorf("console errors lack %q:\n%s", want, got)
		}
	}
	for _, not := range []string{"not an error", "only a warning"} {
		if strings.Contains(got, not) {
			t.Errorf("console errors include %q:\n%s", not, got)
		}
	}
}

func TestScreenshotIsFullPagePNG(t *testing.T) {
	b := newBrowser(t, Options{Width: 800, Height: 600})
	srv := serve(t, map[string]string{"/": `<!doctype html><html lang="en"><head><title>s</title></head><body>
<h1>Hello</h1><p>` + strings.Repeat("A line of text.<br>", 150) + `</p></body></html>`})
	navigate(t, b, srv.URL+"/")
	path, err := b.Screenshot("harness test/../shot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
	dir, _ := ScreenshotDir()
	if path != filepath.Join(dir, "shot.png") {
		t.Errorf("saved at %s, want %s", path, filepath.Join(dir, "shot.png"))
	}
	data, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("%s is not a PNG (%v)", path, err)
	}
	img, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	// The text is ~150 lines tall: a full-page shot is much taller than the 600 px viewport. It is the
	// page's width, without the vertical scrollbar's 15 px.
	if img.Width < 780 || img.Width > 800 || img.Height < 1500 {
		t.Errorf("screenshot is %dx%d, want about 800 wide and the whole page tall", img.Width, img.Height)
	}
}

func TestDownloadFromAnotherOrigin(t *testing.T) {
	dir := t.TempDir()
	b := newBrowser(t, Options{})
	content := bytes.Repeat([]byte("archive bytes "), 50000)
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
	if _, err := b.WaitDownload(ctx, time.Second); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("WaitDownload before AllowDownloads: %v, want an error saying downloads are not allowed", err)
	}
	if err := b.AllowDownloads(dir); err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "backup-1.tar.gz"), filepath.Join(dir, "backup-1-2.tar.gz")}
	for i, path := range want {
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#get"))); err != nil {
			t.Fatal(err)
		}
		d, err := b.WaitDownload(ctx, 30*time.Second)
		if err != nil {
			t.Fatalf("download %d: %v", i+1, err)
		}
		got, err := os.ReadFile(d.Path)
		if err != nil || d.SuggestedName != "backup-1.tar.gz" || d.Path != path || !bytes.Equal(got, content) {
			t.Errorf("download %d: %+v: %d bytes (%v), want %d bytes at %s", i+1, d, len(got), err, len(content), path)
		}
		if d.URL != files.URL+"/x?sig=1" || d.GUID == "" {
			t.Errorf("download %d: URL %q, GUID %q", i+1, d.URL, d.GUID)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != len(want) {
		t.Errorf("the download dir holds %d files, want %d (no GUID-named leftovers)", len(entries), len(want))
	}
	if _, err := b.WaitDownload(ctx, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "none started") {
		t.Errorf("WaitDownload with nothing to come: %v", err)
	}
}

// The event handler runs in chromedp's read loop: downloads nobody waits for must not stall it.
func TestDownloadEventsNeverBlock(t *testing.T) {
	dir := t.TempDir()
	b := &Browser{dl: newDownloads()}
	b.dl.dir = dir
	const n = 100
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			guid := fmt.Sprintf("guid-%d", i)
			if err := os.WriteFile(filepath.Join(dir, guid), []byte{byte(i)}, 0o644); err != nil {
				t.Error(err)
			}
			b.onBrowserEvent(&browser.EventDownloadWillBegin{GUID: guid, SuggestedFilename: "same.bin"})
			b.onBrowserEvent(&browser.EventDownloadProgress{GUID: guid, State: browser.DownloadProgressStateCompleted})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the event handler blocked with downloads nobody waited for")
	}
	for i := range n {
		d, err := b.WaitDownload(context.Background(), time.Second)
		if err != nil {
			t.Fatalf("download %d: %v", i, err)
		}
		if got, err := os.ReadFile(d.Path); err != nil || !bytes.Equal(got, []byte{byte(i)}) {
			t.Fatalf("download %d at %s: %v %v, want the file of guid-%d (in order)", i, d.Path, got, err, i)
		}
	}
}

func TestSetViewport(t *testing.T) {
	b := newBrowser(t, Options{})
	srv := serve(t, map[string]string{"/": `<!doctype html><html lang="en"><head><meta name="viewport" content="width=device-width, initial-scale=1"><title>v</title></head><body></body></html>`})
	navigate(t, b, srv.URL+"/")
	if w := eval[int](t, b, "window.innerWidth"); w != 1280 {
		t.Errorf("default width %d, want 1280", w)
	}
	if err := b.SetViewport(390, 844); err != nil {
		t.Fatal(err)
	}
	if w := eval[int](t, b, "window.innerWidth"); w != 390 {
		t.Errorf("width after SetViewport(390): %d", w)
	}
}

func TestWaitTextSaysWhatItSaw(t *testing.T) {
	b := newBrowser(t, Options{})
	srv := serve(t, map[string]string{
		"/":       `<!doctype html><html lang="en"><head><title>w</title><script src="/app.js"></script></head><body><p id="s" data-é="1">Processing</p></body></html>`,
		"/app.js": `setTimeout(() => { document.getElementById("s").textContent = "Processing… done"; }, 300);`,
	})
	navigate(t, b, srv.URL+"/")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The selector has quotes and a non-ASCII character: it must reach the page as written.
	if err := b.WaitText(ctx, `p[data-é="1"]`, "… done", 5*time.Second); err != nil {
		t.Errorf("text that appears: %v", err)
	}
	err := b.WaitText(ctx, "#s", "Finished", 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `it shows "Processing… done"`) {
		t.Errorf("text absent: got %v, want an error quoting what the element shows", err)
	}
	err = b.WaitText(ctx, "#missing", "x", 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no element matches") {
		t.Errorf("element absent: got %v, want an error saying no element matches", err)
	}
	gone, stop := context.WithCancel(ctx)
	stop()
	if err := b.WaitText(gone, "#missing", "x", time.Minute); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("cancelled context: got %v", err)
	}
}

// fakeChromium installs a shell script as $CHROMIUM.
func fakeChromium(t *testing.T, script string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chromium")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHROMIUM", path)
}

func TestStartFailureShowsChromiumOutput(t *testing.T) {
	fakeChromium(t, `echo "chromium: cannot start on purpose" >&2; exit 1`)
	b, err := New(context.Background(), Options{})
	if err == nil {
		b.Close()
		t.Fatal("New succeeded with a Chromium that exits at once")
	}
	if !strings.Contains(err.Error(), "cannot start on purpose") {
		t.Errorf("got %v, want Chromium's output in the error", err)
	}
}

func TestStartEndsWithItsContext(t *testing.T) {
	fakeChromium(t, `exec sleep 60`)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	b, err := New(ctx, Options{})
	if err == nil {
		b.Close()
		t.Fatal("New succeeded with a Chromium that never answers")
	}
	if took := time.Since(start); took > 10*time.Second || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("after %s: %v, want a deadline error soon after 500ms", took, err)
	}
}

func TestViolationsString(t *testing.T) {
	vs := Violations{
		{ID: "image-alt", Impact: "critical", Help: "Images must have alternate text", HelpURL: "https://example.test/image-alt", Targets: []string{"img"}},
		{ID: "region", Impact: "moderate", Help: "All page content should be contained by landmarks", Targets: []string{"p", "div"}},
	}
	if s := Serious(vs); len(s) != 1 || s[0].ID != "image-alt" {
		t.Errorf("Serious = %v", s)
	}
	want := "  image-alt (critical): Images must have alternate text, at img; see https://example.test/image-alt\n" +
		"  region (moderate): All page content should be contained by landmarks, at p, div"
	if got := vs.String(); got != want {
		t.Errorf("String:\n%s\nwant:\n%s", got, want)
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
