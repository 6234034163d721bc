package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/chromedp/chromedp"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

const axePackage = "axe-core"

// Violation is one axe-core rule the page breaks.
type Violation struct {
	ID      string   `json:"id"`
	Impact  string   `json:"impact"` // minor, moderate, serious, critical
	Help    string   `json:"help"`
	HelpURL string   `json:"helpUrl"`
	Targets []string `json:"targets"` // CSS selectors of the offending elements
}

func (v Violation) String() string {
	s := fmt.Sprintf("%s (%s): %s, at %s", v.ID, v.Impact, v.Help, strings.Join(v.Targets, ", "))
	if v.HelpURL != "" {
		s += "; see " + v.HelpURL
	}
	return s
}

// Violations lists violations one per line, for a test's failure message.
type Violations []Violation

func (vs Violations) String() string {
	if len(vs) == 0 {
		return "  (none)"
	}
	lines := make([]string, len(vs))
	for i, v := range vs {
		lines[i] = "  " + v.String()
	}
	return strings.Join(lines, "\n")
}

// Serious keeps the serious and critical violations.
func Serious(vs []Violation) Violations {
	var out Violations
	for _, v := range vs {
		if v.Impact == "serious" || v.Impact == "critical" {
			out = append(out, v)
		}
	}
	return out
}

// axeRun runs axe-core on the whole document and returns its violations as JSON, the targets of each
// node joined into one selector (a node in a frame or a shadow root has one per level).
const axeRun = `axe.run(document, {resultTypes: ["violations"]}).then((r) => JSON.stringify(r.violations.map((v) => ({
	id: v.id, impact: v.impact || "", help: v.help, helpUrl: v.helpUrl,
	targets: v.nodes.map((n) => n.target.map(String).join(" >>> "))}))))`

// Axe runs axe-core on the current page and returns its violations. The script is evaluated through
// the DevTools protocol, which the page's Content-Security-Policy does not govern, so a strict policy
// (script-src 'self') is checked as it is, not loosened for the test.
func (b *Browser) Axe(ctx context.Context) (Violations, error) {
	ctx, cancel := b.tab(ctx)
	defer cancel()
	loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof window.axe === "object"`))
	if err != nil {
		return nil, fmt.Errorf("axe-core: %w", err)
	}
	if !loaded { // a new page
		src, err := axeSource(ctx)
		if err != nil {
			return nil, err
		}
		// void 0: the script's own last value is not sent back.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](src+"\n;void 0")); err != nil {
			return nil, fmt.Errorf("inject axe-core: %w", err)
		}
	}
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](axeRun, chromedp.EvalAwaitPromise))
	if err != nil {
		return nil, fmt.Errorf("run axe-core: %w", err)
	}
	var vs Violations
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		return nil, fmt.Errorf("read axe-core's result: %w", err)
	}
	return vs, nil
}

// axeCache holds axe.min.js once read: every Axe call of a test binary injects the same file.
var axeCache struct {
	sync.Mutex
	src string
}

// axeSource returns node_modules/axe-core/axe.min.js, running `npm ci` first when axe-core is missing
// or not the version package-lock.json pins (a fresh clone, a changed lock), under the lock that
// Azurite's installer and pgcluster's take too.
func axeSource(ctx context.Context) (string, error) {
	axeCache.Lock()
	defer axeCache.Unlock()
	if axeCache.src != "" {
		return axeCache.src, nil
	}
	root, err := azurite.FindRepoRoot(".")
	if err != nil {
		return "", fmt.Errorf("axe-core: %w", err)
	}
	want, err := lockedVersion(root, axePackage)
	if err != nil {
		return "", err
	}
	if installedVersion(root, axePackage) != want {
		unlock, err := azurite.LockInstall(ctx, root)
		if err != nil {
			return "", fmt.Errorf("axe-core: %w", err)
		}
		defer unlock()
		if installedVersion(root, axePackage) != want { // not installed by another process meanwhile
			cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("npm ci in %s (for axe-core %s): %w\n%s", root, want, err, out)
			}
			if got := installedVersion(root, axePackage); got != want {
				return "", fmt.Errorf("npm ci in %s installed axe-core %q, package-lock.json pins %s", root, got, want)
			}
		}
	}
	src, err := os.ReadFile(filepath.Join(root, "node_modules", axePackage, "axe.min.js"))
	if err != nil {
		return "", fmt.Errorf("axe-core: %w", err)
	}
	axeCache.src = string(src)
	return axeCache.src, nil
}

// lockedVersion is the version of the npm package name that root/package-lock.json pins.
func lockedVersion(root, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("%s pin: %w", name, err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return "", fmt.Errorf("%s pin: package-lock.json: %w", name, err)
	}
	v := lock.Packages["node_modules/"+name].Version
	if v == "" {
		return "", fmt.Errorf("%s pin: package-lock.json has no node_modules/%s", name, name)
	}
	return v, nil
}

// installedVersion is the version of root/node_modules/name, or "" when it is missing.
func installedVersion(root, name string) string {
	b, err := os.ReadFile(filepath.Join(root, "node_modules", name, "package.json"))
	if err != nil {
		return ""
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &pkg) != nil {
		return ""
	}
	return pkg.Version
}
