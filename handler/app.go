package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/api"
	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/auth"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/bus"
	"github.com/mxazure/backups/internal/config"
	"github.com/mxazure/backups/internal/console"
	"github.com/mxazure/backups/internal/envelope"
	"github.com/mxazure/backups/internal/pg"
	"github.com/mxazure/backups/internal/restorer"
	"github.com/mxazure/backups/internal/snapshotter"
	"github.com/mxazure/backups/internal/tablestore"
	"github.com/mxazure/backups/internal/triggers"
)

// app holds the wired service.
type app struct {
	log       zerolog.Logger
	tables    *tablestore.Store
	blobs     *blobstore.Store
	publisher backup.Publisher
	api       *api.Server
	console   *console.Handler
	triggers  *triggers.Dispatcher
	ready     chan struct{} // closed once storage is initialised (tables and containers exist)
}

func newApp(ctx context.Context, cfg config.Config, log zerolog.Logger) (*app, error) {
	a := &app{log: log, ready: make(chan struct{})}
	// The credential is made on first use (only Azure deployments need one) and shared; jobs may ask for
	// database tokens concurrently.
	credential := sync.OnceValues(func() (azcore.TokenCredential, error) {
		var cred azcore.TokenCredential
		var err error
		if cfg.ManagedIdentityClientID != "" { // a user-assigned managed identity
			cred, err = azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
				ID: azidentity.ClientID(cfg.ManagedIdentityClientID)})
		} else { // system-assigned identity in Azure, developer credentials elsewhere
			cred, err = azidentity.NewDefaultAzureCredential(nil)
		}
		if err != nil {
			return nil, fmt.Errorf("azure credential: %w", err)
		}
		return cred, nil
	})

	var err error
	blobOpts := blobstore.Options{FileStoreContainer: cfg.FileStoreContainer, UploadsContainer: cfg.UploadsContainer}
	if cfg.StorageConnectionString != "" {
		if a.tables, err = tablestore.NewFromConnectionString(cfg.StorageConnectionString.Value(), cfg.TablePrefix); err != nil {
			return nil, err
		}
		if a.blobs, err = blobstore.NewFromConnectionString(cfg.StorageConnectionString.Value(), cfg.SnapshotsContainer, blobOpts); err != nil {
			return nil, err
		}
	} else {
		c, err := credential()
		if err != nil {
			return nil, err
		}
		if a.tables, err = tablestore.New(cfg.StorageTableURL, c, cfg.TablePrefix); err != nil {
			return nil, err
		}
		if a.blobs, err = blobstore.New(cfg.StorageBlobURL, c, cfg.SnapshotsContainer, blobOpts); err != nil {
			return nil, err
		}
	}

	switch {
	case cfg.LocalServiceBusURL != "":
		a.publisher = bus.NewLocal(cfg.LocalServiceBusURL)
	case cfg.ServiceBusConnectionString != "":
		if a.publisher, err = bus.NewServiceBusFromConnectionString(cfg.ServiceBusConnectionString.Value()); err != nil {
			return nil, err
		}
	default:
		c, err := credential()
		if err != nil {
			return nil, err
		}
		if a.publisher, err = bus.NewServiceBus(cfg.ServiceBusNamespace, c); err != nil {
			return nil, err
		}
	}

	authn, err := auth.NewOIDC(ctx, auth.Config{IssuerURL: cfg.AuthIssuerURL, Audience: cfg.AuthAudience, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("authentication: %w", err)
	}

	snap := &snapshotter.Snapshotter{
		Dumper:      &pg.Dumper{Clients: cfg.PGBinDirs, LockWaitTimeout: cfg.PGLockWaitTimeout, Logger: log},
		Blobs:       a.blobs,
		Conn:        databaseConn(cfg, credential),
		FileWorkers: cfg.FileWorkers,
		Archive:     archive.Options{Level: cfg.ArchiveCompressionLevel},
		Uploads:     a.blobs,
		UploadLimits: archive.Limits{MaxArchiveBytes: cfg.UploadMaxBytes, MaxEntryBytes: cfg.UploadMaxBytes,
			MaxUnpackedBytes: cfg.UploadMaxUnpackedBytes},
		Log: log,
	}
	restores := &restorer.Restorer{
		DB:    &pg.Restorer{Clients: cfg.PGBinDirs, Logger: log},
		Blobs: a.blobs,
		Files: &restorer.Files{Blobs: a.blobs, Workers: cfg.FileWorkers, Log: log},
		Conn:  snap.Conn,
		Log:   log,
	}
	svc := backup.NewService(backup.Deps{Stores: a.tables.Stores(), Publisher: a.publisher, Snapshotter: snap,
		Archives: a.blobs, Layout: blobstore.Layout{}, FileStore: a.blobs, Manifests: a.blobs, Now: time.Now, Log: log,
		StallTimeout: cfg.JobStallTimeout, DatabaseHosts: cfg.PGAllowedHosts,
		Restorer: restores, RestoreUndo: time.Duration(cfg.RestoreUndoHours) * time.Hour,
		Downloads: snap, Ingester: snap, Links: a.blobs, Uploads: a.blobs,
		UploadLinkTTL: time.Duration(cfg.UploadLinkHours) * time.Hour, UploadMaxBytes: cfg.UploadMaxBytes,
		Plan: cfg.SchedulePlan(), KeepLastGood: cfg.KeepLastGoodSnapshot})
	a.api = api.New(api.Deps{
		Log: log, Version: cfg.Version, Authenticator: authn, Service: svc,
		Checks: []api.Check{
			{Name: "table_storage", Pinger: a.tables},
			{Name: "blob_storage", Pinger: a.blobs},
			{Name: "service_bus", Pinger: a.publisher},
		},
	})

	// The web console: static files and its sign-in settings; everything it shows comes from the API.
	if a.console, err = console.New(console.Config{IssuerURL: cfg.AuthIssuerURL, ClientID: cfg.ConsoleClientID,
		Scopes: cfg.ConsoleScopes, DefaultNamespace: cfg.ConsoleNamespace, Version: cfg.Version,
		Endpoints: authn.Endpoints, BlobURL: a.blobs.Client().URL(), Log: log}); err != nil {
		return nil, err
	}

	a.triggers = triggers.NewDispatcher(log)
	// Inbound environment and permission events from other services (queue environment-events).
	a.triggers.Register("EnvironmentEvents", triggers.ServiceBus("msg",
		func(ctx context.Context, m envelope.ServiceBusMessage, log zerolog.Logger) error {
			return svc.HandleEnvironmentEvent(ctx, m.MessageID, m.Body, log)
		}))
	// Jobs (queue backup-jobs, sessions by environment): one message per operation, of any kind.
	a.triggers.Register("BackupJobs", triggers.ServiceBus("msg",
		func(ctx context.Context, m envelope.ServiceBusMessage, log zerolog.Logger) error {
			return svc.HandleJob(ctx, m.Body, m.MessageID+"/"+strconv.FormatInt(m.DeliveryCount, 10)+"/"+m.Sys.RandGuid, log)
		}))
	// Every 5 minutes: re-send, take over and fail, or settle operations whose message was lost, whose
	// worker died or whose settling stopped half-way; prune old ones. Resume the schedule's fan-outs that
	// stopped half-way and send again the automatic backups that were lost.
	a.triggers.Register("RecoverOperations", triggers.Timer("timer",
		func(ctx context.Context, t envelope.Timer, log zerolog.Logger) error {
			return errors.Join(svc.RecoverOperations(ctx, log), svc.RecoverSchedule(ctx, invocationTime(t.Sys), log))
		}))
	// The schedule's timers (NIGHTLY_SCHEDULE, WEEKLY_SCHEDULE, MONTHLY_SCHEDULE): each starts the day's
	// run of automatic backups; the day, not the timer, decides the kind, and a day has one run.
	for _, name := range []string{"NightlyBackups", "WeeklyBackups", "MonthlyBackups"} {
		a.triggers.Register(name, triggers.Timer("timer",
			func(ctx context.Context, t envelope.Timer, log zerolog.Logger) error {
				return svc.RunSchedule(ctx, name, invocationTime(t.Sys), log)
			}))
	}
	// One try of one environment's automatic backup (queue automatic-backups, no sessions).
	a.triggers.Register("AutomaticBackups", triggers.ServiceBus("msg",
		func(ctx context.Context, m envelope.ServiceBusMessage, log zerolog.Logger) error {
			return svc.HandleAutomaticBackup(ctx, m.Body, invocationTime(m.Sys), log)
		}))
	// Hourly: delete the snapshots whose retention ended (before the collector's run frees their files).
	a.triggers.Register("ExpireSnapshots", triggers.Timer("timer",
		func(ctx context.Context, t envelope.Timer, log zerolog.Logger) error {
			_, err := svc.ExpireSnapshots(ctx, invocationTime(t.Sys), log)
			return err
		}))
	// Hourly: delete the file-store objects that no live snapshot names any more (after the grace
	// period), so that deletions and expiries free their files within the hour.
	a.triggers.Register("CollectFileStores", triggers.Timer("timer",
		func(ctx context.Context, _ envelope.Timer, log zerolog.Logger) error {
			_, err := svc.CollectAllFiles(ctx, log)
			return err
		}))
	// Hourly: drop the previous database and the saved files of restores whose undo period ended.
	a.triggers.Register("DiscardRestoreUndo", triggers.Timer("timer",
		func(ctx context.Context, _ envelope.Timer, log zerolog.Logger) error {
			_, err := svc.DiscardRestoreUndo(ctx, log)
			return err
		}))
	// Hourly: remove download blobs whose last link expired, and uploads never completed or left behind.
	a.triggers.Register("RemoveExpiredTransfers", triggers.Timer("timer",
		func(ctx context.Context, _ envelope.Timer, log zerolog.Logger) error {
			return svc.RemoveExpiredTransfers(ctx)
		}))
	// Daily: remove snapshot blobs no snapshot record points to, and finish deletions that stopped half-way.
	a.triggers.Register("SweepArchives", triggers.Timer("timer",
		func(ctx context.Context, _ envelope.Timer, log zerolog.Logger) error {
			_, err := svc.SweepArchives(ctx, log)
			return err
		}))
	return a, nil
}

// initialize creates tables and containers, retrying until it works or ctx ends: the handler must come up
// even when storage is briefly unreachable, and report it through the health function meanwhile.
func (a *app) initialize(ctx context.Context) {
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		err := a.tables.EnsureTables(ctx)
		if err == nil {
			err = a.blobs.EnsureContainers(ctx)
		}
		if err == nil {
			close(a.ready)
			a.log.Info().Msg("storage ready")
			return
		}
		a.log.Warn().Err(err).Dur("retry_in", delay).Msg("storage not ready")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// handler is the root mux: the host's readiness probe, the HTTP API and the trigger envelopes.
func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	// The host polls GET / until any response arrives.
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"listening"}`))
	})
	mux.Handle("/api/health", a.api)
	// The console needs no storage: it serves files, and the API it calls waits for readiness itself.
	mux.Handle("/api/console", a.console)
	mux.Handle("/api/console/", a.console)
	mux.Handle("/api/", a.whenReady(a.api, apiReadyWait, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"type":"about:blank","title":"Temporarily unavailable","status":503,"detail":"the service is starting; storage is not ready yet","code":"TEMPORARILY_UNAVAILABLE"}`))
	}))
	// Envelopes of timer and Service Bus functions. The host redelivers a refused message at once, so
	// refusing while storage initialises would burn deliveries until the message is dead-lettered:
	// invocations wait for readiness instead, and get a 503 only if it does not come.
	mux.Handle("POST /{function}", a.whenReady(a.triggers, triggerReadyWait, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(envelope.Response{Logs: []string{"storage not ready; retry"}}.Marshal())
	}))
	// Go's mux would answer an unclean path (.., //) with a redirect; the API answers it with a problem.
	return a.api.RefuseUncleanPaths(mux)
}

// How long a request waits for storage initialisation before it is refused.
const (
	apiReadyWait     = 10 * time.Second
	triggerReadyWait = 2 * time.Minute
)

func (a *app) whenReady(h http.Handler, wait time.Duration, notReady func(http.ResponseWriter)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-a.ready:
			h.ServeHTTP(w, r)
		case <-timer.C:
			notReady(w)
		case <-r.Context().Done():
			notReady(w)
		}
	})
}

func (a *app) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.publisher.Close(ctx); err != nil && !errors.Is(err, context.Canceled) {
		a.log.Warn().Err(err).Msg("closing the publisher")
	}
}

// invocationTime is the time the host gives an invocation: the schedule's functions run as of it (it
// is the host's clock, which in Azure is the machine's; the local host's tests move it), or the
// machine's time when the host sent none.
func invocationTime(sys envelope.Sys) time.Time {
	if sys.UtcNow.IsZero() {
		return time.Now().UTC()
	}
	return sys.UtcNow.UTC()
}

// entraDatabaseScope is the token audience of Azure Database for PostgreSQL (Entra authentication).
const entraDatabaseScope = "https://ossrdbms-aad.database.windows.net/.default"

// databaseConn tells the snapshotter how to reach an environment's database: the service's own role
// (PG_USER), with a configured password locally or an Entra access token of the managed identity in Azure,
// over TLS as PG_SSLMODE and PG_SSLROOTCERT say, and only on a server of PG_ALLOWED_HOSTS (pg refuses
// others; the token function checks again, so no token is made for another host).
func databaseConn(cfg config.Config, credential func() (azcore.TokenCredential, error)) func(backup.Environment) pg.Conn {
	return func(env backup.Environment) pg.Conn {
		c := pg.Conn{Host: env.Database.Host, Port: env.Database.Port, Database: env.Database.Name,
			User: cfg.PGUser, SSLMode: cfg.PGSSLMode, SSLRootCert: cfg.PGSSLRootCert,
			AllowedHosts: cfg.PGAllowedHosts, Password: cfg.PGPassword.Value()}
		if c.Password == "" {
			c.PasswordFunc = func(ctx context.Context) (string, error) {
				if !cfg.PGAllowedHosts.Allows(c.Host) {
					return "", backup.Wrap(backup.CodeInvalidState,
						fmt.Errorf("no token for host %q: not on PG_ALLOWED_HOSTS %s", c.Host, cfg.PGAllowedHosts),
						"the backup service may not connect to the database server this environment names")
				}
				cred, err := credential()
				if err != nil {
					return "", err
				}
				tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{entraDatabaseScope}})
				return tok.Token, err
			}
		}
		return c
	}
}
