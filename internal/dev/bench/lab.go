package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/devstack/stack"
	"github.com/mxazure/backups/internal/dev/funchost"
)

// The benchmark's namespace, user and service role.
const (
	Namespace    = "bench"
	UserID       = "5d0e1a2b-0000-4000-8000-0000000be7c1"
	userName     = "Bench User"
	serviceRole  = "bench_service"
	hostStopWait = time.Minute
)

// Lab is the local stack the service is measured on (Azurite, PostgreSQL 15, the local OIDC issuer
// and the local Functions host running the real handler binary), plus what the benchmark needs to
// drive it: a token, a blob client and the handler settings it controls.
type Lab struct {
	Stack *stack.Stack
	Blobs *azblob.Client
	Token string

	app     string
	env     map[string]string // handler settings owned by the benchmark (role, compression level)
	hostLog zerolog.Logger
}

// LabOptions configure StartLab.
type LabOptions struct {
	RepoRoot string // holds go.mod, host.json, functions/ and handler/
	Level    int    // ARCHIVE_COMPRESSION_LEVEL of the first handler
	Logger   zerolog.Logger
	// HostLogger receives the stack's, the host's and the handler's logs (the benchmark passes warn level).
	HostLogger zerolog.Logger
}

// StartLab builds the app folder as `make package` lays it out, starts the stack with it and creates
// the service's PostgreSQL role. Stop undoes everything, also after an error.
func StartLab(ctx context.Context, opts LabOptions) (l *Lab, err error) {
	l = &Lab{hostLog: opts.HostLogger}
	defer func() {
		if err != nil {
			_ = l.Stop(context.WithoutCancel(ctx))
			l = nil
		}
	}()
	if l.app, err = BuildApp(ctx, opts.RepoRoot); err != nil {
		return l, fmt.Errorf("build the app: %w", err)
	}
	pass := make([]byte, 12)
	_, _ = rand.Read(pass)
	l.env = map[string]string{"PG_USER": serviceRole, "PG_PASSWORD": hex.EncodeToString(pass),
		"ARCHIVE_COMPRESSION_LEVEL": strconv.Itoa(opts.Level)}
	st, err := stack.Start(ctx, stack.Options{AppDir: l.app, Listen: "127.0.0.1:0", Logger: opts.HostLogger,
		HandlerLogger: &opts.HostLogger, Env: l.env})
	if err != nil {
		return l, fmt.Errorf("start the stack: %w", err)
	}
	l.Stack = st
	// The handler reaches PostgreSQL only during a backup, so its role can follow its start.
	if err := st.Postgres.Exec(ctx, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s'", serviceRole, l.env["PG_PASSWORD"])); err != nil {
		return l, fmt.Errorf("create the service role: %w", err)
	}
	if l.Blobs, err = azblob.NewClientFromConnectionString(st.Azurite.ConnectionString(), nil); err != nil {
		return l, err
	}
	if l.Token, err = st.Token(UserID, userName); err != nil {
		return l, err
	}
	return l, nil
}

// Stop stops the stack and removes the app folder.
func (l *Lab) Stop(ctx context.Context) error {
	var errs []error
	if l.Stack != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*hostStopWait)
		defer cancel()
		errs = append(errs, l.Stack.Stop(ctx))
	}
	if l.app != "" {
		errs = append(errs, os.RemoveAll(l.app))
	}
	return errors.Join(errs...)
}

// SetCompressionLevel replaces the local Functions host by one whose handler runs with
// ARCHIVE_COMPRESSION_LEVEL=level. Azurite and PostgreSQL keep running, with their data; the host's
// in-memory Service Bus starts empty.
func (l *Lab) SetCompressionLevel(ctx context.Context, level int) error {
	l.env["ARCHIVE_COMPRESSION_LEVEL"] = strconv.Itoa(level)
	return l.Stack.RestartHost(ctx, l.env)
}

// BuildApp lays out an app folder as `make package` does (see stack.BuildApp).
func BuildApp(ctx context.Context, root string) (string, error) { return stack.BuildApp(ctx, root) }

// Environment is one benchmark environment as the platform announces it.
type Environment struct {
	ID        string
	Name      string
	Database  string // "" for an environment that is never backed up (the listing benchmark's)
	Role      string
	Container string
}

// Register makes the environments known to the service the way a real deployment does (and
// stack.SeedDemo): a namespace.permissions event for the benchmark user and an environment.updated
// event per environment on the environment-events queue, then the settings API to enable backups.
func (l *Lab) Register(ctx context.Context, envs []Environment) error {
	st := l.Stack
	now := time.Now().UTC()
	perms, _ := json.Marshal(map[string]any{"type": "namespace.permissions", "event_id": "bench-permissions-1",
		"occurred_at": now, "namespace": Namespace, "principal_id": UserID, "permissions": []string{"ManageAppsBackups", "StopApps"}})
	msgs := []funchost.PublishMessage{{Body: string(perms), MessageID: "bench-permissions-1", ContentType: "application/json"}}
	for _, e := range envs {
		db := e.Database
		if db == "" {
			db = "none"
		}
		body, _ := json.Marshal(map[string]any{"type": "environment.updated", "event_id": "bench-env-" + e.ID,
			"occurred_at": now, "namespace": Namespace, "environment_id": e.ID, "app_id": "bench-app-" + e.Name,
			"name": e.Name, "state": "Stopped", "deployed": true, "deployment_package": "BenchApp_9.24.0.mda",
			"model_version": "9.24.0",
			"database":      map[string]any{"host": st.Postgres.Host, "port": st.Postgres.Port, "name": db, "role": e.Role},
			"files":         map[string]any{"container": e.Container, "prefix": ""}})
		msgs = append(msgs, funchost.PublishMessage{Body: string(body), MessageID: "bench-env-" + e.ID, ContentType: "application/json"})
	}
	if _, err := st.Host.Publish("environment-events", msgs); err != nil {
		return fmt.Errorf("publish environment events: %w", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		status, body, err := st.Call(waitCtx, l.Token, "GET", "/api/v1/namespaces/"+Namespace+"/environments", "")
		if err == nil && status == http.StatusOK && containsAll(body, envs) {
			break
		}
		select {
		case <-waitCtx.Done():
			return fmt.Errorf("the environments did not appear in the API (last: %d %s %v)", status, tail(body, 300), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	status, body, err := st.Call(ctx, l.Token, "PUT", "/api/v1/namespaces/"+Namespace+"/settings", `{"backups_enabled":true}`)
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("enable backups: %d %s %v", status, body, err)
	}
	return nil
}

func containsAll(body string, envs []Environment) bool {
	for _, e := range envs {
		if !strings.Contains(body, e.ID) {
			return false
		}
	}
	return true
}
