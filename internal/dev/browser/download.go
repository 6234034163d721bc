package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// Download is a finished download.
type Download struct {
	SuggestedName string // the name the server suggested (Content-Disposition), as Chromium read it
	// Path is the finished file: <dir>/<SuggestedName> made safe, with "-2", "-3"… before the
	// extension when that name is taken; <dir>/<GUID> if it could not be renamed.
	Path string
	GUID string // Chromium's id of the download, the file's name while it downloads
	URL  string
}

// downloads is the state of the browser's downloads, under Browser.mu.
type downloads struct {
	dir      string              // where Chromium saves them; "" while not allowed
	started  map[string]Download // in progress, by GUID
	finished []finishedDownload  // not yet returned by WaitDownload, oldest first
	notify   chan struct{}       // one slot: something was added to finished
}

type finishedDownload struct {
	Download
	dir      string
	canceled bool
}

func newDownloads() downloads {
	return downloads{started: map[string]Download{}, notify: make(chan struct{}, 1)}
}

// AllowDownloads lets the page download into dir (created if missing), also from other origins.
func (b *Browser) AllowDownloads(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("download dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("download dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	defer cancel()
	// allowAndName saves each download as <dir>/<GUID> and WaitDownload renames it to the suggested
	// name once complete, so two downloads of one name never write the same file.
	events := true
	_, err = chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: &events})
	if err != nil {
		return fmt.Errorf("allow downloads into %s: %w", dir, err)
	}
	b.mu.Lock()
	b.dl.dir = dir
	b.mu.Unlock()
	return nil
}

// onBrowserEvent runs in chromedp's read loop: it must not block or call the browser, so it only
// records; WaitDownload moves the files.
func (b *Browser) onBrowserEvent(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *browser.EventDownloadWillBegin:
		b.dl.started[e.GUID] = Download{SuggestedName: e.SuggestedFilename, GUID: e.GUID, URL: e.URL}
	case *browser.EventDownloadProgress:
		if e.State != browser.DownloadProgressStateCompleted && e.State != browser.DownloadProgressStateCanceled {
			return
		}
		d, ok := b.dl.started[e.GUID]
		if !ok {
			d = Download{GUID: e.GUID}
		}
		delete(b.dl.started, e.GUID)
		b.dl.finished = append(b.dl.finished, finishedDownload{Download: d, dir: b.dl.dir,
			canceled: e.State == browser.DownloadProgressStateCanceled})
		select {
		case b.dl.notify <- struct{}{}:
		default: // a signal is pending already
		}
	}
}

// WaitDownload waits until the next download finishes (one that finished earlier and was not returned
// yet counts) and returns it, its file renamed to the suggested name. It waits until ctx ends or the
// timeout passes, whichever is first.
func (b *Browser) WaitDownload(ctx context.Context, timeout time.Duration) (Download, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		b.mu.Lock()
		allowed, inProgress := b.dl.dir != "", names(b.dl.started)
		var f *finishedDownload
		if len(b.dl.finished) > 0 {
			f = &b.dl.finished[0]
			b.dl.finished = b.dl.finished[1:]
		}
		b.mu.Unlock()
		switch {
		case f != nil:
			return f.place()
		case !allowed:
			return Download{}, errNoDownloads
		}
		select {
		case <-b.dl.notify:
		case <-timer.C:
			if len(inProgress) == 0 {
				return Download{}, fmt.Errorf("no download finished within %s, and none started", timeout)
			}
			return Download{}, fmt.Errorf("no download finished within %s (in progress: %s)", timeout, strings.Join(inProgress, ", "))
		case <-ctx.Done():
			return Download{}, fmt.Errorf("wait for a download: %w", ctx.Err())
		}
	}
}

var errNoDownloads = errors.New("wait for a download: downloads are not allowed: set Options.DownloadDir or call AllowDownloads")

// place renames the finished file from its GUID to a free name made from the suggested one.
func (f finishedDownload) place() (Download, error) {
	d := f.Download
	if f.canceled {
		return d, fmt.Errorf("the download of %q from %s was cancelled", d.SuggestedName, d.URL)
	}
	from := filepath.Join(f.dir, d.GUID)
	d.Path = from
	if d.SuggestedName == "" {
		return d, nil
	}
	to, err := freeName(f.dir, safeName(d.SuggestedName))
	if err == nil {
		err = os.Rename(from, to)
	}
	if err != nil {
		return d, fmt.Errorf("download %q: %w", d.SuggestedName, err)
	}
	d.Path = to
	return d, nil
}

// freeName is dir/name, or dir/base-N.ext with the first N from 2 that no file has.
func freeName(dir, name string) (string, error) {
	ext := filepath.Ext(name)
	if strings.HasSuffix(name, ".tar"+ext) {
		ext = ".tar" + ext // backup-1.tar.gz becomes backup-1-2.tar.gz, not backup-1.tar-2.gz
	}
	base := strings.TrimSuffix(name, ext)
	for n := 1; n < 1000; n++ {
		path := filepath.Join(dir, name)
		if n > 1 {
			path = filepath.Join(dir, fmt.Sprintf("%s-%d%s", base, n, ext))
		}
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return path, nil
		} else if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("no free name like %s in %s", name, dir)
}

func names(started map[string]Download) []string {
	out := make([]string, 0, len(started))
	for _, d := range started {
		out = append(out, d.SuggestedName)
	}
	sort.Strings(out)
	return out
}
