package azurite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// FindRepoRoot walks up from dir to the first directory that holds go.mod.
func FindRepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("find repo root: no go.mod in %s or its parents", dir)
		}
	}
}

// ensureInstalled returns the path of node_modules/.bin/azurite under root, running
// `npm ci` first when Azurite is missing or is not the version package-lock.json pins.
// Concurrent callers (test packages run in parallel) serialise on a lock file so that only one runs npm.
func ensureInstalled(ctx context.Context, root string, log zerolog.Logger) (string, error) {
	want, err := lockedVersion(root)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "node_modules", ".bin", "azurite")
	if installed(root, bin, want) {
		return bin, nil
	}
	unlock, err := lockInstall(ctx, root)
	if err != nil {
		return "", err
	}
	defer unlock()
	if installed(root, bin, want) { // another process installed it while we waited
		return bin, nil
	}
	log.Info().Str("version", want).Str("dir", root).Msg("installing azurite with npm ci")
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	log.Debug().Str("component", "npm").Msg(string(out))
	if err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", root, err, tail(string(out), 30))
	}
	if !installed(root, bin, want) {
		return "", fmt.Errorf("npm ci in %s did not install azurite %s", root, want)
	}
	return bin, nil
}

// lockedVersion reads the Azurite version pinned in root/package-lock.json.
func lockedVersion(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("azurite pin: %w", err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return "", fmt.Errorf("azurite pin: package-lock.json: %w", err)
	}
	v := lock.Packages["node_modules/azurite"].Version
	if v == "" {
		return "", errors.New("azurite pin: package-lock.json has no node_modules/azurite")
	}
	return v, nil
}

// installed reports whether bin exists and node_modules/azurite is version want.
func installed(root, bin, want string) bool {
	if _, err := os.Stat(bin); err != nil {
		return false
	}
	b, err := os.ReadFile(filepath.Join(root, "node_modules", "azurite", "package.json"))
	if err != nil {
		return false
	}
	var pkg struct {
		Version string `json:"version"`
	}
	return json.Unmarshal(b, &pkg) == nil && pkg.Version == want
}

// lockInstall takes an exclusive flock shared by every process installing into root. The lock file
// lives in the temp dir (not in the repository, and not in node_modules, which npm ci deletes).
func lockInstall(ctx context.Context, root string) (unlock func(), err error) {
	sum := sha256.Sum256([]byte(root))
	path := filepath.Join(os.TempDir(), "devstack-npm-"+hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("install lock: %w", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("install lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("install lock %s: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
