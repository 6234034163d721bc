package browser

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/chromedp/chromedp"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// ScreenshotDir is where Screenshot saves: <repository root>/build/screenshots.
func ScreenshotDir() (string, error) {
	root, err := azurite.FindRepoRoot(".")
	if err != nil {
		return "", fmt.Errorf("screenshot dir: %w", err)
	}
	return filepath.Join(root, "build", "screenshots"), nil
}

// Screenshot saves the whole page (beyond the viewport too) as build/screenshots/<name>.png, name made
// safe for a file name, and returns the path. A screenshot of the same name is replaced.
func (b *Browser) Screenshot(name string) (string, error) {
	dir, err := ScreenshotDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("screenshot dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 means PNG
	if err != nil {
		return "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	path := filepath.Join(dir, safeName(strings.TrimSuffix(name, ".png"))+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	return path, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// safeName keeps the last element of name, with each run of other characters than letters, digits,
// '.', '_' and '-' made one '-'.
func safeName(name string) string {
	name = unsafeChars.ReplaceAllString(filepath.Base(name), "-")
	if name == "" || name == "." || name == ".." {
		return "download"
	}
	return name
}
