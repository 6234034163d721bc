package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/chromedp/chromedp"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// Violation is one axe-core rule the page breaks.
type Violation struct {
	ID      string   `json:"id"`
	Impact  string   `json:"impact"` // minor, moderate, serious, critical
	Help    string   `json:"help"`
	HelpURL string   `json:"helpUrl"`
	Targets []string `json:"targets"` // CSS selectors of the offending elements
}

func (v Violation) String() string {
	return fmt.Sprintf("%s (%s): %s, at %s", v.ID, v.Impact, v.Help, strings.Join(v.Targets, ", "))
}

// Violations lists violations one per line, for a test's failure message.
type Violations []Violation

func (vs Violations) String() string {
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

// axeSource reads node_modules/axe-core/axe.min.js, running `npm ci` first when it is missing (a fresh
// clone), under the same lock as Azurite's install.
func axeSource(ctx context.Context) (string, error) {
	root, err := azurite.FindRepoRoot(".")
	if err != nil {
		return "", err
	}
	path := filepath.Join(root, "node_modules", "axe-core", "axe.min.js")
	if _, err := os.Stat(path); err != nil {
		unlock, err := azurite.LockInstall(ctx, root)
		if err != nil {
			return "", err
		}
		defer unlock()
		if _, err := os.Stat(path); err != nil {
			cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("npm ci (for axe-core): %w: %s", err, out)
			}
		}
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("axe-core: %w", err)
	}
	return string(src), nil
}

// Axe runs axe-core on the current page and returns its violations. The script is evaluated through
// the DevTools protocol, which the page's Content-Security-Policy does not govern, so a strict policy
// (script-src 'self') is checked as it is, not loosened for the test.
func (b *Browser) Axe(ctx context.Context) ([]Violation, error) {
	src, err := axeSource(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](src)); err != nil {
		return nil, fmt.Errorf("inject axe-core: %w", err)
	}
	const run = `axe.run(document, {resultTypes: ["violations"]}).then((r) => JSON.stringify(r.violations.map((v) => ({
		id: v.id, impact: v.impact || "", help: v.help, helpUrl: v.helpUrl,
		targets: v.nodes.map((n) => n.target.join(" "))}))))`
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](run, chromedp.EvalAwaitPromise))
	if err != nil {
		return nil, fmt.Errorf("run axe-core: %w", err)
	}
	var vs []Violation
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		return nil, fmt.Errorf("read axe-core's result: %w", err)
	}
	return vs, nil
}
