// Package browser runs real headless Chromium for the web console's tests, driven with chromedp: it
// starts Debian's chromium with the flags this project's machines need, records what the page logs,
// takes screenshots into build/screenshots, receives downloads, and runs axe-core (pinned in the
// repository's package-lock.json) on the page. Development only; nothing here is deployed.
//
// One Browser is one Chromium process with one tab. Run chromedp actions on Context() (or a context
// made from it); the methods that take a context accept any context and run on the tab until that
// context ends.
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultExecutable is where Debian's chromium package installs the browser.
const DefaultExecutable = "/usr/bin/chromium"

const (
	// startTimeout bounds New when its context has no earlier deadline: a cold start on two busy
	// cores takes a few seconds, a hung one never ends.
	startTimeout = time.Minute
	callTimeout  = 30 * time.Second // one protocol call made by a method without a context
	outputTail   = 4 << 10          // bytes of Chromium's output kept for the start error
	maxShownText = 500              // characters of an element's text quoted by WaitText
)

// Executable returns the Chromium to run: $CHROMIUM, else DefaultExecutable.
func Executable() (string, error) {
	path := os.Getenv("CHROMIUM")
	if path == "" {
		path = DefaultExecutable
	}
	if info, err := os.Stat(path); err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		return "", fmt.Errorf("chromium not found at %s: run `make deps`, which installs Debian's chromium package (or set CHROMIUM to a Chromium binary)", path)
	}
	return path, nil
}

// Options configure New. The zero value is a valid configuration.
type Options struct {
	Width, Height int // the window and viewport; default 1280 x 900
	// DownloadDir receives downloads (AllowDownloads can set it later); empty means none are allowed.
	DownloadDir string
	// Logf receives what the page logs (errors and warnings) and chromedp's problems; nil logs nothing.
	Logf func(format string, args ...any)
}

// Browser is one running Chromium with one tab.
type Browser struct {
	ctx         context.Context // the tab
	cancelTab   context.CancelFunc
	cancelAlloc context.CancelFunc
	logf        func(format string, args ...any)

	mu     sync.Mutex
	errors []string // console errors, uncaught exceptions, the browser's own errors
	dl     downloads
}

// New starts Chromium and opens its tab. ctx bounds the start only (a minute at most): the browser
// runs until Close.
func New(ctx context.Context, opts Options) (*Browser, error) {
	exe, err := Executable()
	if err != nil {
		return nil, err
	}
	if opts.Width <= 0 || opts.Height <= 0 {
		opts.Width, opts.Height = 1280, 900
	}
	b := &Browser{logf: opts.Logf, dl: newDownloads()}
	if b.logf == nil {
		b.logf = func(string, ...any) {}
	}
	output := &tailWriter{max: outputTail}
	flags := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		// No UserDataDir: chromedp makes a fresh temporary profile, and removes it (after killing
		// Chromium's leftover children) when the browser stops.
		chromedp.Flag("headless", "new"),
		// These machines run tests as root, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// The network is closed beyond the test's own servers: no background fetches, updates, sync or
		// QUIC. Debian's wrapper would add disable-background-networking itself, but not while its
		// /etc/chromium.d enables remote extensions, as it does.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// The wrapper's /dev/shm size check breaks when /dev/shm is mounted twice, as it is here.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(opts.Width, opts.Height),
		chromedp.CombinedOutput(output),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(ctx), flags...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(format string, args ...any) {
		b.logf("chromedp: "+format, args...)
	}))
	b.ctx, b.cancelTab, b.cancelAlloc = tabCtx, cancelTab, cancelAlloc
	if err := b.start(ctx); err != nil {
		b.Close()
		err = fmt.Errorf("start chromium (%s): %w", exe, err)
		if out := strings.TrimSpace(output.String()); out != "" {
			err = fmt.Errorf("%w\nchromium's output:\n%s", err, out)
		}
		return nil, err
	}
	if err := b.SetViewport(opts.Width, opts.Height); err != nil {
		b.Close()
		return nil, err
	}
	if opts.DownloadDir != "" {
		if err := b.AllowDownloads(opts.DownloadDir); err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}

// start launches Chromium and subscribes to the tab's and the browser's events. The first call on the
// tab's context starts the browser with that context (a deadline on it would stop the browser when it
// passed), so ctx's end is applied from outside: it cancels the tab, which kills Chromium.
func (b *Browser) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		err := chromedp.Listen(b.ctx, b.onTargetEvent)
		if err == nil {
			err = chromedp.ListenBrowser(b.ctx, b.onBrowserEvent)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		b.cancelTab()
		<-done
		return fmt.Errorf("not ready: %w", ctx.Err())
	}
}

// Context is the tab's context, for chromedp.Run.
func (b *Browser) Context() context.Context { return b.ctx }

// Close stops Chromium; chromedp removes its profile. Calling it again does nothing.
func (b *Browser) Close() {
	b.cancelTab()
	b.cancelAlloc()
}

// tab returns a context for calls on the tab that ends with ctx: ctx itself when it already is a
// chromedp context (the tab's, or a tab made from it), else the tab's context, ended with ctx.
func (b *Browser) tab(ctx context.Context) (context.Context, context.CancelFunc) {
	if chromedp.FromContext(ctx) != nil {
		return ctx, func() {}
	}
	c, cancel := context.WithCancel(b.ctx)
	if deadline, ok := ctx.Deadline(); ok {
		var cancelDeadline context.CancelFunc
		c, cancelDeadline = context.WithDeadline(c, deadline) // keeps DeadlineExceeded as the error
		prev := cancel
		cancel = func() { cancelDeadline(); prev() }
	}
	stop := context.AfterFunc(ctx, cancel)
	return c, func() { stop(); cancel() }
}

// SetViewport resizes the page's viewport, e.g. to a 390 px phone screen. Below 600 px it emulates a
// mobile device, so a page with <meta name="viewport" content="width=device-width"> lays out at
// exactly width CSS pixels.
func (b *Browser) SetViewport(width, height int) error {
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	defer cancel()
	_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
		Width: int64(width), Height: int64(height), DeviceScaleFactor: 1, Mobile: width < 600})
	if err != nil {
		return fmt.Errorf("set viewport %dx%d: %w", width, height, err)
	}
	return nil
}

// onTargetEvent runs in chromedp's read loop: it must not block or call the browser.
func (b *Browser) onTargetEvent(ev any) {
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError && e.Type != runtime.ConsoleAPICalledTypeWarning {
			return
		}
		parts := make([]string, 0, len(e.Args))
		for _, a := range e.Args {
			parts = append(parts, describe(a))
		}
		msg := fmt.Sprintf("console.%s: %s%s", e.Type, strings.Join(parts, " "), stackPlace(e.StackTrace))
		b.logf("page: %s", msg)
		if e.Type == runtime.ConsoleAPICalledTypeError {
			b.record(msg)
		}
	case *cdplog.EventEntryAdded:
		// The browser's own log: blocked loads and connections (Content-Security-Policy violations)
		// and failed requests.
		if e.Entry == nil || (e.Entry.Level != cdplog.EntryLevelError && e.Entry.Level != cdplog.EntryLevelWarning) {
			return
		}
		msg := fmt.Sprintf("browser log (%s): %s", e.Entry.Source, e.Entry.Text)
		if e.Entry.URL != "" {
			msg += " [" + e.Entry.URL + "]"
		}
		b.logf("page: %s", msg)
		if e.Entry.Level == cdplog.EntryLevelError {
			b.record(msg)
		}
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		if d == nil {
			return
		}
		msg := "uncaught exception: " + d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		b.logf("page: %s", msg)
		b.record(msg)
	}
}

// describe renders one argument of a console call as the page's console would.
func describe(a *runtime.RemoteObject) string {
	if a == nil {
		return ""
	}
	if a.Type == runtime.RemoteObjectTypeString {
		var s string
		if json.Unmarshal(a.Value, &s) == nil {
			return s
		}
	}
	switch {
	case a.Description != "":
		return a.Description // errors (with their stack), objects, functions
	case len(a.Value) > 0:
		return string(a.Value) // numbers, booleans, null
	default:
		return string(a.Type) // undefined
	}
}

// stackPlace is " (url:line)" of a console call's caller, or "".
func stackPlace(st *runtime.StackTrace) string {
	if st == nil || len(st.CallFrames) == 0 || st.CallFrames[0].URL == "" {
		return ""
	}
	f := st.CallFrames[0]
	return fmt.Sprintf(" (%s:%d)", f.URL, f.LineNumber+1)
}

func (b *Browser) record(msg string) {
	b.mu.Lock()
	b.errors = append(b.errors, msg)
	b.mu.Unlock()
}

// ConsoleErrors returns what the page logged as errors, its uncaught exceptions and the browser's
// errors about it (Content-Security-Policy violations, failed requests), so far. Warnings only go to
// Options.Logf.
func (b *Browser) ConsoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// WaitText waits until the first element that the CSS selector matches contains text (in its
// innerText). At the timeout the error says what the element showed, or that none matched.
func (b *Browser) WaitText(ctx context.Context, selector, text string, timeout time.Duration) error {
	outer, cancel := b.tab(ctx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(outer, timeout)
	defer cancelTimeout()
	sel, err := json.Marshal(selector) // a JavaScript string literal
	if err != nil {
		return fmt.Errorf("wait for text: selector: %w", err)
	}
	expr := `(() => { const e = document.querySelector(` + string(sel) + `); return e ? e.innerText : null; })()`
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		shown   *string
		lastErr error
	)
	for {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[*string](expr))
		switch {
		case err == nil && got != nil && strings.Contains(*got, text):
			return nil
		case err == nil:
			shown, lastErr = got, nil
		case ctx.Err() == nil:
			lastErr = err // a navigation in progress, say, or a bad selector: keep trying until the timeout
		}
		select {
		case <-ctx.Done():
			if err := outer.Err(); err != nil {
				return fmt.Errorf("wait for %q in %s: %w", text, selector, err)
			}
			saw := "no element matches it"
			if shown != nil {
				saw = fmt.Sprintf("it shows %q", truncate(*shown, maxShownText))
			}
			if lastErr != nil {
				saw += fmt.Sprintf(" (last error: %v)", lastErr)
			}
			return fmt.Errorf("wait for %q in %s: not there after %s; %s", text, selector, timeout, saw)
		case <-tick.C:
		}
	}
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// tailWriter keeps the last max bytes written to it (Chromium's output, for the start error).
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
