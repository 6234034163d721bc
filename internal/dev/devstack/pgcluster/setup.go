package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/mxazure/backups/internal/dev/devstack/proc"
)

// defaultBinDir is where Debian and Ubuntu install PostgreSQL 15.
const defaultBinDir = "/usr/lib/postgresql/15/bin"

// wantMajor is the PostgreSQL major version looked for when no BinDir is given: the service's pg_dump
// must be 15 so its archives are format 1.14.
const wantMajor = 15

// maxSocketPath is the longest Unix socket path Linux accepts (sun_path is 108 bytes with its NUL).
const maxSocketPath = 107

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(\.\d+)?`)

// resolveBinDir returns the directory to use and its server version string. An explicit dir is used
// whatever its version; otherwise the first PostgreSQL 15 among the default locations wins.
func resolveBinDir(ctx context.Context, binDir string) (dir, version string, err error) {
	if binDir != "" {
		version, _, err := serverVersion(ctx, binDir)
		if err != nil {
			return "", "", err
		}
		return binDir, version, nil
	}
	candidates := []string{defaultBinDir}
	if out, err := exec.CommandContext(ctx, "pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	var problems []string
	for _, dir := range candidates {
		version, major, err := serverVersion(ctx, dir)
		switch {
		case err != nil:
			problems = append(problems, err.Error())
		case major != wantMajor:
			problems = append(problems, fmt.Sprintf("%s is PostgreSQL %s", dir, version))
		default:
			return dir, version, nil
		}
	}
	return "", "", fmt.Errorf("no PostgreSQL %d found (set Options.BinDir): %s", wantMajor, strings.Join(problems, "; "))
}

// serverVersion runs `postgres --version` from dir after checking initdb is there too.
func serverVersion(ctx context.Context, dir string) (version string, major int, err error) {
	if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
		return "", 0, fmt.Errorf("initdb in %s: %w", dir, err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "postgres"), "--version").Output()
	if err != nil {
		return "", 0, fmt.Errorf("%s/postgres --version: %w", dir, err)
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return "", 0, fmt.Errorf("%s/postgres --version: unexpected output %q", dir, out)
	}
	major, _ = strconv.Atoi(m[1])
	return m[1] + m[2], major, nil
}

// owner is the user that runs initdb and the server; cred is nil when that is the current user.
type owner struct {
	uid, gid int
	name     string
	cred     *syscall.Credential
}

func lookupOwner() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{uid: os.Getuid(), gid: os.Getgid(), name: "current user"}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return owner{}, fmt.Errorf("running as root needs the postgres system user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return owner{}, fmt.Errorf("postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return owner{}, fmt.Errorf("postgres gid %q: %w", u.Gid, err)
	}
	// No supplementary groups: the server must not keep root's.
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return owner{uid: uid, gid: gid, name: "postgres", cred: cred}, nil
}

// makeDirs creates (or adopts) the cluster directory with data/ and run/ owned by the server's user.
func (c *Cluster) makeDirs(dir string, o owner) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "pgcluster-")
		if err != nil {
			return fmt.Errorf("cluster dir: %w", err)
		}
		dir, c.removeDir = d, true
	} else {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return fmt.Errorf("cluster dir: %w", err)
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return fmt.Errorf("cluster dir: %w", err)
		}
		dir = abs
	}
	c.Dir, c.DataDir, c.SocketDir = dir, filepath.Join(dir, "data"), filepath.Join(dir, "run")
	err := c.makeOwnedDirs(o)
	if err != nil && c.removeDir {
		_ = os.RemoveAll(dir)
	}
	return err
}

func (c *Cluster) makeOwnedDirs(o owner) error {
	if len(c.SocketDir)+len("/.s.PGSQL.65535.lock") > maxSocketPath {
		return fmt.Errorf("cluster dir %s: too long for a Unix socket path, use a shorter Dir", c.Dir)
	}
	if o.cred != nil {
		// The server's user must traverse the directory Start created (MkdirTemp makes it 0700).
		if err := os.Chmod(c.Dir, 0o755); err != nil {
			return fmt.Errorf("cluster dir: %w", err)
		}
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{c.DataDir, 0o700}, {c.SocketDir, 0o755}} {
		if err := os.Mkdir(d.path, d.mode); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cluster dir: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("cluster dir: %w", err)
		}
		if o.cred != nil {
			if err := os.Chown(d.path, o.uid, o.gid); err != nil {
				return fmt.Errorf("cluster dir: %w", err)
			}
		}
	}
	return nil
}

// initdb creates the cluster: UTF8, C locale, trust on the Unix socket, SCRAM over TCP, superuser
// postgres with the password passed through a file that is removed afterwards.
func (c *Cluster) initdb(ctx context.Context, o owner) error {
	pwfile := filepath.Join(c.SocketDir, "initdb.pw")
	if err := os.WriteFile(pwfile, []byte(c.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("initdb password file: %w", err)
	}
	defer os.Remove(pwfile)
	if o.cred != nil {
		if err := os.Chown(pwfile, o.uid, o.gid); err != nil {
			return fmt.Errorf("initdb password file: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "initdb"),
		"-D", c.DataDir,
		"--username="+Superuser,
		"--pwfile="+pwfile,
		"--encoding=UTF8",
		"--locale=C",
		"--auth-local=trust",
		"--auth-host=scram-sha-256",
		"--no-sync",
		"--no-instructions",
	)
	cmd.Dir = c.DataDir
	cmd.SysProcAttr = proc.SysProcAttr(o.cred)
	out, err := cmd.CombinedOutput()
	c.log.Debug().Str("component", "initdb").Msg(string(out))
	if err != nil {
		return fmt.Errorf("initdb as %s (it must be able to traverse every parent of %s): %w\n%s",
			o.name, c.Dir, err, tail(string(out), logTailLines))
	}
	return nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// DefaultBinDir returns the PostgreSQL 15 binaries Start would use by default, for tools that must run
// the same pg_dump and pg_restore.
func DefaultBinDir() (string, error) {
	dir, _, err := resolveBinDir(context.Background(), "")
	return dir, err
}
