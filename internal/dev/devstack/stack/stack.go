// Package stack starts the whole service locally, the way `make run` and the end-to-end tests need it:
// Azurite, a throw-away PostgreSQL cluster, a local OIDC issuer and the project's local Functions host
// running the real handler binary from an app folder laid out as Azure deploys it. Demo seeding (demo.go)
// goes through the same events and API calls a real deployment uses.
package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth/localissuer"
	"github.com/mxazure/backups/internal/config"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
	"github.com/mxazure/backups/internal/dev/funchost"
)

// Audience is the token audience the local service accepts.
const Audience = "api://mendix-backups"

// ConsoleClientID is the web console's client at the local issuer (CONSOLE_CLIENT_ID).
const ConsoleClientID = "mendix-backups-console"

// Service role on the PostgreSQL cluster: what the handler connects as (PG_USER).
const (
	serviceRole     = "backups_service"
	serviceRolePass = "local-dev-only"
)

// Options configure Start.
type Options struct {
	// AppDir holds host.json, the function folders and the handler binary (make package's dist/).
	AppDir string
	// Listen is the local host's address ("127.0.0.1:7071"; "127.0.0.1:0" in tests).
	Listen string
	// StateDir keeps the issuer key and the run's description (for `make token`); default a temp dir.
	StateDir string
	// Env is added to the handler's settings (overrides).
	Env map[string]string
	// HandlerBlobURL, when set, gives the blob endpoint the handler uses instead of Azurite's own
	// (tests put a fault-injecting proxy in between); tests' own clients still reach Azurite directly.
	HandlerBlobURL func(azuriteBlobURL string) (string, error)
	Logger         zerolog.Logger
	// HandlerLogger receives the local host's and the handler's logs (default Logger).
	HandlerLogger *zerolog.Logger
	// Clock is the local host's clock (default the real one): the time it sends in envelopes, and that
	// times its timers and Service Bus (a funchost.OffsetClock runs the stack as of another day). It is
	// kept across RestartHost.
	Clock funchost.Clock
}

// Stack is a running local service.
type Stack struct {
	Azurite  *azurite.Azurite
	Postgres *pgcluster.Cluster
	Issuer   *localissuer.Issuer
	Host     *funchost.Host

	IssuerURL string
	URL       string // the local Functions host: http://127.0.0.1:7071
	StateDir  string

	cancel  context.CancelFunc
	appDir  string
	listen  string
	hostLog zerolog.Logger
	env     map[string]string // the handler's settings
	clock   funchost.Clock    // the host's; nil for the real one

	consoleClient localissuer.Client // as registered at the issuer
}

// Start brings everything up. On error, whatever started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	st := &Stack{}
	// The cleanup holds its own pointer: a `return nil, err` sets the named result, not st.
	defer func() {
		if err != nil {
			_ = st.Stop(context.WithoutCancel(ctx))
		}
	}()
	if opts.StateDir == "" {
		if opts.StateDir, err = os.MkdirTemp("", "backups-state-"); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	st.StateDir = opts.StateDir
	log := opts.Logger

	log.Info().Msg("starting Azurite")
	if st.Azurite, err = azurite.Start(ctx, azurite.Options{Logger: log}); err != nil {
		return nil, fmt.Errorf("azurite: %w", err)
	}
	log.Info().Msg("starting a throw-away PostgreSQL 15 cluster")
	if st.Postgres, err = pgcluster.Start(ctx, pgcluster.Options{Logger: log}); err != nil {
		return nil, fmt.Errorf("postgresql: %w", err)
	}
	if err := st.Postgres.Exec(ctx, "postgres", fmt.Sprintf(
		// As on Azure Database for PostgreSQL: no superuser; CREATEDB for the restore's databases, and
		// membership in each environment's role (granted as environments are made, see SeedDemo).
		`CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'`, serviceRole, serviceRolePass)); err != nil {
		return nil, fmt.Errorf("create the service role: %w", err)
	}

	if st.Issuer, err = localissuer.New(localissuer.Options{KeyFile: filepath.Join(opts.StateDir, "issuer-key.pem")}); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	issuerCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st.cancel = cancel
	if st.IssuerURL, err = st.Issuer.Serve(issuerCtx, "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}

	conn := st.Azurite.ConnectionString()
	if opts.HandlerBlobURL != nil {
		u, err := opts.HandlerBlobURL(st.Azurite.BlobURL)
		if err != nil {
			return nil, fmt.Errorf("the handler's blob endpoint: %w", err)
		}
		conn = strings.Replace(conn, "BlobEndpoint="+st.Azurite.BlobURL+";", "BlobEndpoint="+u+";", 1)
	}
	env := map[string]string{
		"STORAGE_CONNECTION_STRING": conn,
		"AUTH_ISSUER_URL":           st.IssuerURL,
		"AUTH_AUDIENCE":             Audience,
		"CONSOLE_CLIENT_ID":         ConsoleClientID,
		"CONSOLE_DEFAULT_NAMESPACE": DemoNamespace,
		"PG_USER":                   serviceRole,
		"PG_PASSWORD":               serviceRolePass,
		"PG_SSLMODE":                "disable",
		"PG_ALLOWED_HOSTS":          "127.0.0.1,localhost",
		"PG_BIN_DIR":                st.Postgres.BinDir,
		// The timers' schedules are app settings (%NIGHTLY_SCHEDULE% in function.json), which the host
		// must resolve; in Azure, infra sets them.
		"NIGHTLY_SCHEDULE": config.DefaultNightlySchedule,
		"WEEKLY_SCHEDULE":  config.DefaultWeeklySchedule,
		"MONTHLY_SCHEDULE": config.DefaultMonthlySchedule,
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	st.hostLog = log
	if opts.HandlerLogger != nil {
		st.hostLog = *opts.HandlerLogger
	}
	st.listen = opts.Listen
	if st.listen == "" {
		st.listen = "127.0.0.1:0"
	}
	st.appDir, st.env, st.clock = opts.AppDir, env, opts.Clock
	log.Info().Str("app", opts.AppDir).Msg("starting the local Functions host and the handler")
	if err := st.startHost(ctx, env); err != nil {
		return nil, err
	}
	return st, nil
}

func (st *Stack) startHost(ctx context.Context, env map[string]string) error {
	h, err := funchost.New(funchost.Options{AppRoot: st.appDir, Listen: st.listen, Env: env, Logger: st.hostLog, Clock: st.clock})
	if err != nil {
		return fmt.Errorf("local functions host: %w", err)
	}
	if err := h.Start(ctx); err != nil {
		return fmt.Errorf("local functions host: %w", err)
	}
	st.Host, st.URL = h, h.URL()
	return st.enableConsole(ctx)
}

// RestartHost replaces the local Functions host (and so the handler) by one whose handler settings are
// the stack's with extra on top, on the same clock. Azurite, PostgreSQL and the issuer keep running with
// their data; the host's in-memory Service Bus starts empty.
func (st *Stack) RestartHost(ctx context.Context, extra map[string]string) error {
	if st.Host != nil {
		stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := st.Host.Stop(stopCtx); err != nil {
			return fmt.Errorf("stop the local functions host: %w", err)
		}
		st.Host = nil
	}
	env := make(map[string]string, len(st.env)+len(extra))
	for k, v := range st.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	return st.startHost(ctx, env)
}

// BuildApp lays out an app folder as `make package` does: host.json, one folder per function and the
// handler binary built from the source tree at root. The caller removes it.
func BuildApp(ctx context.Context, root string) (string, error) {
	dir, err := os.MkdirTemp("", "backups-app-")
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(dir)
		return "", err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "handler"), "./handler")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("go build ./handler: %w: %s", err, out))
	}
	entries := []string{filepath.Join(root, "host.json")}
	fns, _ := filepath.Glob(filepath.Join(root, "functions", "*"))
	for _, src := range append(entries, fns...) {
		if out, err := exec.CommandContext(ctx, "cp", "-r", src, dir).CombinedOutput(); err != nil {
			return fail(fmt.Errorf("copy %s: %w: %s", src, err, out))
		}
	}
	return dir, nil
}

// Token mints a bearer token for principal (its oid) with the given name.
func (st *Stack) Token(principal, name string) (string, error) {
	return st.Issuer.Token(localissuer.TokenRequest{Subject: principal, ObjectID: principal, Name: name, Audience: Audience})
}

// Stop stops everything that was started, in reverse order.
func (st *Stack) Stop(ctx context.Context) error {
	var errs []error
	if st.Host != nil {
		errs = append(errs, st.Host.Stop(ctx))
	}
	if st.cancel != nil {
		st.cancel()
	}
	if st.Postgres != nil {
		errs = append(errs, st.Postgres.Stop(ctx))
	}
	if st.Azurite != nil {
		errs = append(errs, st.Azurite.Stop(ctx))
	}
	return errors.Join(errs...)
}
