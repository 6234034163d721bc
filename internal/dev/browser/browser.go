// Package browser runs real headless Chromium for the web console's tests, driven with chromedp: it
// starts Debian's chromium with the flags this project's machines need, records what the page logs,
// takes screenshots into build/screenshots, receives downloads, and runs axe-core (pinned in the
// repository's package-lock.json) on the page. Development only; nothing here is deployed.
package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// DefaultExecutable is where Debian's chromium package installs the browser.
const DefaultExecutable = "/usr/bin/chromium"

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

// Options configure New.
type Options struct {
	Width, Height int // the window; default 1280 x 900
	// DownloadDir receives downloads (AllowDownloads can set it later); empty means none are allowed.
	DownloadDir string
	// Logf receives what the page logs and Chromium's own problems; nil logs nothing.
	Logf func(format string, args ...any)
}

// Browser is one running Chromium with one tab.
type Browser struct {
	ctx         context.Context
	cancelTab   context.CancelFunc
	cancelAlloc context.CancelFunc
	userDir     string
	logf        func(format string, args ...any)

	mu        sync.Mutex
	errors    []string            // console errors, uncaught exceptions
	downloads chan Download       // finished downloads
	names     map[string]Download // in progress, by GUID
	dir       string
}

// Download is a finished download.
type Download struct {
	SuggestedName string // the name the server suggested (Content-Disposition)
	Path          string // where the file is now: <dir>/<SuggestedName>
	URL           string
}

// New starts Chromium. Close stops it.
func New(ctx context.Context, opts Options) (*Browser, error) {
	exe, err := Executable()
	if err != nil {
		return nil, err
	}
	if opts.Width == 0 || opts.Height == 0 {
		opts.Width, opts.Height = 1280, 900
	}
	userDir, err := os.MkdirTemp("", "chromium-profile-")
	if err != nil {
		return nil, fmt.Errorf("chromium profile: %w", err)
	}
	b := &Browser{userDir: userDir, logf: opts.Logf, downloads: make(chan Download, 16), names: map[string]Download{}}
	if b.logf == nil {
		b.logf = func(string, ...any) {}
	}
	flags := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(userDir),
		chromedp.Flag("headless", "new"),
		// These machines run tests as root, where Chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// The network is closed beyond the test's own servers: no background fetches, updates, sync or QUIC.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(opts.Width, opts.Height),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(ctx), flags...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(format string, args ...any) {
		b.logf("chromedp: "+format, args...)
	}))
	b.ctx, b.cancelTab, b.cancelAlloc = tabCtx, cancelTab, cancelAlloc
	// The first command starts the browser, with the tab's context: a timeout on it would stop the
	// browser when it passed.
	if err := chromedp.Listen(tabCtx, b.onTargetEvent); err != nil {
		b.Close()
		return nil, fmt.Errorf("start chromium (%s): %w", exe, err)
	}
	if err := chromedp.ListenBrowser(tabCtx, b.onBrowserEvent); err != nil {
		b.Close()
		return nil, fmt.Errorf("listen to chromium: %w", err)
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

// Context is the tab's context, for chromedp.Run.
func (b *Browser) Context() context.Context { return b.ctx }

// Close stops Chromium and removes its profile.
func (b *Browser) Close() {
	b.cancelTab()
	b.cancelAlloc()
	_ = os.RemoveAll(b.userDir)
}

// SetViewport resizes the page's viewport, e.g. to a 390 px phone screen.
func (b *Browser) SetViewport(width, height int) error {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	_, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
		Width: int64(width), Height: int64(height), DeviceScaleFactor: 1, Mobile: width < 600})
	if err != nil {
		return fmt.Errorf("set viewport %dx%d: %w", width, height, err)
	}
	return nil
}

func (b *Browser) onTargetEvent(ev any) {
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if e.Type != runtime.ConsoleAPICalledTypeError && e.Type != runtime.ConsoleAPICalledTypeWarning {
			return
		}
		var parts []string
		for _, a := range e.Args {
			if a.Description != "" {
				parts = append(parts, a.Description)
			} else {
				parts = append(parts, strings.Trim(string(a.Value), `"`))
			}
		}
		msg := fmt.Sprintf("console.%s: %s", e.Type, strings.Join(parts, " "))
		b.logf("page: %s", msg)
		if e.Type == runtime.ConsoleAPICalledTypeError {
			b.record(msg)
		}
	case *cdplog.EventEntryAdded:
		// The browser's own log: blocked loads and connections (CSP violations) and failed requests.
		if e.Entry == nil || e.Entry.Level != cdplog.EntryLevelError {
			return
		}
		msg := fmt.Sprintf("browser log (%s): %s", e.Entry.Source, e.Entry.Text)
		if e.Entry.URL != "" {
			msg += " [" + e.Entry.URL + "]"
		}
		b.logf("page: %s", msg)
		b.record(msg)
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		msg := "uncaught exception: " + d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		b.logf("page: %s", msg)
		b.record(msg)
	}
}

func (b *Browser) record(msg string) {
	b.mu.Lock()
	b.errors = append(b.errors, msg)
	b.mu.Unlock()
}

// ConsoleErrors returns what the page logged as errors, its uncaught exceptions and the browser's
// errors about it (Content-Security-Policy violations, failed requests), so far.
func (b *Browser) ConsoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// AllowDownloads lets the page download into dir.
func (b *Browser) AllowDownloads(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("download dir: %w", err)
	}
	b.mu.Lock()
	b.dir = dir
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	// allowAndName saves each download as <dir>/<guid>: the suggested name is renamed to once complete,
	// so two downloads of the same name never clash mid-way.
	events := true
	_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: &events})
	if err != nil {
		return fmt.Errorf("allow downloads: %w", err)
	}
	return nil
}

func (b *Browser) onBrowserEvent(ev any) {
	switch e := ev.(type) {
	case *browser.EventDownloadWillBegin:
		b.mu.Lock()
		b.names[e.GUID] = Download{SuggestedName: e.SuggestedFilename, URL: e.URL}
		b.mu.Unlock()
	case *browser.EventDownloadProgress:
		if e.State != browser.DownloadProgressStateCompleted && e.State != browser.DownloadProgressStateCanceled {
			return
		}
		b.mu.Lock()
		d, dir := b.names[e.GUID], b.dir
		delete(b.names, e.GUID)
		b.mu.Unlock()
		if e.State == browser.DownloadProgressStateCanceled {
			b.logf("download of %s was cancelled", d.SuggestedName)
			d.Path = ""
			b.downloads <- d
			return
		}
		d.Path = filepath.Join(dir, safeName(d.SuggestedName))
		if err := os.Rename(filepath.Join(dir, e.GUID), d.Path); err != nil {
			b.logf("download %s: %v", d.SuggestedName, err)
			d.Path = filepath.Join(dir, e.GUID)
		}
		b.downloads <- d
	}
}

// WaitDownload waits for the next download to finish.
func (b *Browser) WaitDownload(ctx context.Context, timeout time.Duration) (Download, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case d := <-b.downloads:
		if d.Path == "" {
			return d, fmt.Errorf("the download of %s was cancelled", d.SuggestedName)
		}
		return d, nil
	case <-timer.C:
		return Download{}, fmt.Errorf("no download finished within %s", timeout)
	case <-ctx.Done():
		return Download{}, ctx.Err()
	}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(name string) string {
	name = unsafeChars.ReplaceAllString(filepath.Base(name), "-")
	if name == "" || name == "." || name == ".." {
		return "download"
	}
	return name
}

// ScreenshotDir is where Screenshot saves: <repository root>/build/screenshots.
func ScreenshotDir() (string, error) {
	root, err := azurite.FindRepoRoot(".")
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "build", "screenshots"), nil
}

// Screenshot saves the whole page as build/screenshots/<name>.png and returns the path.
func (b *Browser) Screenshot(name string) (string, error) {
	dir, err := ScreenshotDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("screenshot dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	path := filepath.Join(dir, safeName(strings.TrimSuffix(name, ".png"))+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	return path, nil
}

// WaitText waits until the element selector matches contains text.
func (b *Browser) WaitText(ctx context.Context, selector, text string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	expr := fmt.Sprintf(`(document.querySelector(%q) || {innerText: null}).innerText`, selector)
	for {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[*string](expr))
		if err == nil && got != nil && strings.Contains(*got, text) {
			return nil
		}
		if err != nil && errors.Is(err, context.Canceled) {
			return err
		}
		if time.Now().After(deadline) {
			shown := "no such element"
			if got != nil {
				shown = fmt.Sprintf("%q", *got)
			}
			return fmt.Errorf("%s does not contain %q after %s: it shows %s (%v)", selector, text, timeout, shown, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
