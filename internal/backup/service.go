package backup

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/schedule"
)

// Stores groups the stores the service needs.
type Stores struct {
	Environments EnvironmentStore
	Grants       GrantStore
	Settings     SettingsStore
	Activity     ActivityStore
	Rejected     RejectedEventStore
	Snapshots    SnapshotStore
	Operations   OperationStore
	Restores     RestoreStore
	Archives     ArchiveStore
	Uploads      UploadStore
	Schedule     ScheduleStore
}

// RejectedEventStore keeps inbound events that could not be applied, for operators to inspect.
type RejectedEventStore interface {
	AddRejectedEvent(ctx context.Context, r RejectedEvent) error
}

// RejectedEvent is an inbound message that was acknowledged without effect because it can never be
// applied (malformed, unknown type).
type RejectedEvent struct {
	Time      time.Time
	MessageID string
	Reason    string
	Body      string // truncated to maxRejectedBody
}

const maxRejectedBody = 16 << 10

// Service is the domain's entry point: the HTTP API and the trigger functions call it.
type Service struct {
	stores      Stores
	publisher   Publisher
	snapshotter Snapshotter
	archives    ArchiveBlobs
	layout      Layout
	fileStore   FileStore
	manifests   Manifests
	now         func() time.Time
	log         zerolog.Logger
	// kinds are the operation kinds the job pipeline runs, by kind.
	kinds            map[OperationKind]JobKind
	stallTimeout     time.Duration
	progressInterval time.Duration
	databaseHosts    HostAllowList
	collectorGrace   time.Duration
	restorer         RestoreWorker
	restoreUndo      time.Duration
	downloads        DownloadMaker
	ingester         Ingester
	links            Links
	uploads          UploadBlobs
	uploadLinkTTL    time.Duration
	uploadMaxBytes   int64
	plan             schedule.Plan
	calendar         schedule.Calendar
	keepLastGood     bool
}

// Deps are the service's dependencies. Now is time.Now in production, a fixed clock in tests.
type Deps struct {
	Stores      Stores
	Publisher   Publisher
	Snapshotter Snapshotter
	Archives    ArchiveBlobs
	Layout      Layout
	// FileStore and Manifests hold the environments' file stores and the snapshots' manifests.
	FileStore FileStore
	Manifests Manifests
	Now       func() time.Time
	Log       zerolog.Logger
	// StallTimeout is how long a job may go without progress before its attempt is abandoned
	// (default DefaultStallTimeout); ProgressInterval how often progress is written (default
	// DefaultProgressInterval; tests make it short).
	StallTimeout     time.Duration
	ProgressInterval time.Duration
	// DatabaseHosts are the database servers environment events may name (PG_ALLOWED_HOSTS); the zero
	// list checks nothing.
	DatabaseHosts HostAllowList
	// CollectorGrace is how old an unreferenced store object must be before the collector deletes it
	// (default DefaultCollectorGrace).
	CollectorGrace time.Duration
	// Restorer does the restores' work; RestoreUndo is how long a completed restore can be undone
	// (default DefaultRestoreUndo).
	Restorer    RestoreWorker
	RestoreUndo time.Duration
	// Downloads makes download blobs, Ingester stores uploads as snapshots, Links mints the links to
	// them and Uploads manages the uploads container. UploadLinkTTL is how long an upload link is valid
	// (default DefaultUploadLinkTTL); UploadMaxBytes the largest archive accepted (0: no limit here,
	// the Ingester's own limits still apply).
	Downloads      DownloadMaker
	Ingester       Ingester
	Links          Links
	Uploads        UploadBlobs
	UploadLinkTTL  time.Duration
	UploadMaxBytes int64
	// Plan is the schedule of automatic backups (timers, SCHEDULE_TIME_ZONE, SCHEDULE_SPREAD); its
	// calendar also decides every snapshot's expiry. The zero Plan is UTC with no timers known (the next
	// automatic backup is then not shown). KeepLastGood is KEEP_LAST_GOOD_SNAPSHOT.
	Plan         schedule.Plan
	KeepLastGood bool
}

// NewService builds the service.
func NewService(d Deps) *Service {
	now := d.Now
	if now == nil {
		now = time.Now
	}
	s := &Service{stores: d.Stores, publisher: d.Publisher, snapshotter: d.Snapshotter, archives: d.Archives,
		layout: d.Layout, log: d.Log, now: func() time.Time { return now().UTC() },
		stallTimeout: cmp.Or(d.StallTimeout, DefaultStallTimeout), progressInterval: cmp.Or(d.ProgressInterval, DefaultProgressInterval),
		databaseHosts: d.DatabaseHosts, fileStore: d.FileStore, manifests: d.Manifests,
		collectorGrace: cmp.Or(d.CollectorGrace, DefaultCollectorGrace),
		restorer:       d.Restorer, restoreUndo: cmp.Or(d.RestoreUndo, DefaultRestoreUndo),
		downloads: d.Downloads, ingester: d.Ingester, links: d.Links, uploads: d.Uploads,
		uploadLinkTTL: cmp.Or(d.UploadLinkTTL, DefaultUploadLinkTTL), uploadMaxBytes: d.UploadMaxBytes,
		plan: d.Plan, calendar: d.Plan.Calendar, keepLastGood: d.KeepLastGood}
	s.kinds = map[OperationKind]JobKind{OpBackup: backupJob{s}, OpRestore: restoreJob{s}, OpUndo: undoJob{s},
		OpDownload: downloadJob{s}, OpUpload: uploadJob{backupJob{s}}}
	return s
}

// Principal is an authenticated caller.
type Principal struct {
	ID   string
	Name string
}

// Authorize returns nil when p holds every permission in need on namespace, else a NO_ACCESS error
// naming what is missing. This is the one place permissions are decided.
func (s *Service) Authorize(ctx context.Context, p Principal, namespace string, need ...Permission) error {
	if err := ValidateNamespace(namespace); err != nil {
		return err
	}
	g, err := s.stores.Grants.GetGrant(ctx, namespace, p.ID)
	if err != nil {
		return err
	}
	for _, perm := range need {
		if !g.Has(perm) {
			return Errorf(CodeNoAccess, "you need the %q permission on namespace %q", perm, namespace)
		}
	}
	return nil
}

// HandleEnvironmentEvent applies one inbound event. A malformed event is recorded in the rejected-events
// store and nil is returned (acknowledged: redelivery cannot fix it); a storage failure is returned as is
// so the message is redelivered.
func (s *Service) HandleEnvironmentEvent(ctx context.Context, messageID string, body []byte, log zerolog.Logger) error {
	ev, err := ParseEvent(body, WithDatabaseHosts(s.databaseHosts))
	if err != nil {
		log.Error().Err(err).Str("message_id", messageID).Msg("malformed environment event rejected")
		rec := RejectedEvent{Time: s.now(), MessageID: messageID, Reason: err.Error(), Body: string(body)}
		if len(rec.Body) > maxRejectedBody {
			rec.Body = rec.Body[:maxRejectedBody]
		}
		if err := s.stores.Rejected.AddRejectedEvent(ctx, rec); err != nil {
			return err
		}
		return nil
	}
	log = log.With().Str("event", ev.EventID).Str("type", ev.Type).Str("namespace", ev.Namespace).Logger()
	var applied bool
	switch ev.Type {
	case EventEnvironmentUpdated, EventEnvironmentDeleted:
		_, applied, err = s.stores.Environments.UpdateEnvironment(ctx, ev.Namespace, ev.EnvironmentID,
			func(cur Environment, exists bool) (Environment, bool, error) {
				if exists && !newer(ev.OccurredAt, ev.EventID, cur.EventTime, cur.EventID) {
					return cur, false, nil
				}
				return environmentFromEvent(ev, cur, exists, s.now()), true, nil
			})
	case EventNamespacePermissions:
		_, applied, err = s.stores.Grants.UpdateGrant(ctx, ev.Namespace, ev.PrincipalID,
			func(cur Grant, exists bool) (Grant, bool, error) {
				if exists && !newer(ev.OccurredAt, ev.EventID, cur.EventTime, cur.EventID) {
					return cur, false, nil
				}
				perms := slices.Clone(*ev.Permissions)
				slices.Sort(perms)
				return Grant{Namespace: ev.Namespace, PrincipalID: ev.PrincipalID, Permissions: slices.Compact(perms),
					EventTime: ev.OccurredAt, EventID: ev.EventID}, true, nil
			})
	}
	if err != nil {
		return err
	}
	if applied {
		log.Info().Msg("environment event applied")
	} else {
		log.Info().Msg("environment event older than the stored state; ignored")
	}
	return nil
}

func environmentFromEvent(ev InboundEvent, cur Environment, exists bool, now time.Time) Environment {
	if ev.Type == EventEnvironmentDeleted {
		if !exists {
			cur = Environment{ID: ev.EnvironmentID, Namespace: ev.Namespace}
		}
		cur.State = StateDeleted
		cur.EventTime, cur.EventID, cur.UpdatedAt = ev.OccurredAt, ev.EventID, now
		return cur
	}
	return Environment{
		ID: ev.EnvironmentID, Namespace: ev.Namespace, AppID: ev.AppID, Name: ev.Name, State: ev.State,
		Deployed: *ev.Deployed, DeploymentPackage: ev.DeploymentPackage, ModelVersion: ev.ModelVersion,
		Database: *ev.Database, Files: *ev.Files, EventTime: ev.OccurredAt, EventID: ev.EventID, UpdatedAt: now,
		FileStore: cur.FileStore, // the service's own measurement, not the event's
	}
}

// EnvironmentSummary is an environment with whether a snapshot can be made now and, if not, why, when
// its next automatic backup runs (nil when none will: backups off, nothing deployed, no timer), and
// when its newest Finished snapshot was made (zero when it has none).
type EnvironmentSummary struct {
	Environment
	CanCreateBackup bool
	Reason          string
	NextAutomatic   *schedule.Run
	LastFinishedAt  time.Time
}

// ListEnvironments returns the namespace's environments that are not deleted.
func (s *Service) ListEnvironments(ctx context.Context, p Principal, namespace string) ([]EnvironmentSummary, error) {
	if err := s.Authorize(ctx, p, namespace, PermManageAppsBackups); err != nil {
		return nil, err
	}
	all, err := s.stores.Environments.ListEnvironments(ctx, namespace)
	if err != nil {
		return nil, err
	}
	set, err := s.stores.Settings.GetSettings(ctx, namespace)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]EnvironmentSummary, 0, len(all))
	for _, e := range all {
		if e.State == StateDeleted {
			continue
		}
		reason := e.BackupBlocker()
		if reason == "" && !set.BackupsEnabled {
			reason = "backups are not enabled for this namespace"
		}
		if reason == "" {
			if reason, err = s.lockBlocker(ctx, namespace, e.ID); err != nil {
				return nil, err
			}
		}
		sum := EnvironmentSummary{Environment: e, CanCreateBackup: reason == "", Reason: reason}
		if set.BackupsEnabled && eligibleForRun(e) {
			if run, ok := s.plan.NextRun(e.ID, now); ok {
				sum.NextAutomatic = &run
			}
		}
		if sum.LastFinishedAt, err = s.lastFinished(ctx, namespace, e.ID); err != nil {
			return nil, err
		}
		out = append(out, sum)
	}
	return out, nil
}

// lastFinished is when the environment's newest Finished snapshot was made (zero when none is).
func (s *Service) lastFinished(ctx context.Context, namespace, envID string) (time.Time, error) {
	snaps, _, err := s.stores.Snapshots.ListSnapshots(ctx, namespace, envID, 0, maxSnapshotsPerEnvironment)
	if err != nil {
		return time.Time{}, err
	}
	for _, sn := range snaps { // newest first
		if sn.Status == SnapshotFinished {
			return sn.CreatedAt, nil
		}
	}
	return time.Time{}, nil
}

// Environment returns one environment the caller may manage; Deleted ones are not found.
func (s *Service) Environment(ctx context.Context, p Principal, namespace, id string, need ...Permission) (Environment, error) {
	if err := s.Authorize(ctx, p, namespace, append([]Permission{PermManageAppsBackups}, need...)...); err != nil {
		return Environment{}, err
	}
	id, err := ValidateUUID("environment id", id)
	if err != nil {
		return Environment{}, err
	}
	env, err := s.stores.Environments.GetEnvironment(ctx, namespace, id)
	if err != nil {
		return Environment{}, err
	}
	if env.State == StateDeleted {
		return Environment{}, Errorf(CodeEnvironmentNotFound, "environment %s not found in namespace %s", id, namespace)
	}
	return env, nil
}

// Settings returns the namespace's settings.
func (s *Service) Settings(ctx context.Context, p Principal, namespace string) (Settings, error) {
	if err := s.Authorize(ctx, p, namespace, PermManageAppsBackups); err != nil {
		return Settings{}, err
	}
	return s.stores.Settings.GetSettings(ctx, namespace)
}

// UpdateSettings stores the namespace's settings.
func (s *Service) UpdateSettings(ctx context.Context, p Principal, namespace string, backupsEnabled bool) (Settings, error) {
	if err := s.Authorize(ctx, p, namespace, PermManageAppsBackups); err != nil {
		return Settings{}, err
	}
	set := Settings{Namespace: namespace, BackupsEnabled: backupsEnabled, UpdatedAt: s.now(), UpdatedBy: p.ID}
	if err := s.stores.Settings.PutSettings(ctx, set); err != nil {
		return Settings{}, err
	}
	return set, nil
}

// Activity returns a page of an environment's activity log, newest first, and the total count.
func (s *Service) Activity(ctx context.Context, p Principal, namespace, envID string, offset, limit int) ([]ActivityEntry, int, error) {
	env, err := s.Environment(ctx, p, namespace, envID)
	if err != nil {
		return nil, 0, err
	}
	return s.stores.Activity.ListActivity(ctx, namespace, env.ID, offset, limit)
}

// requireBackupsEnabled refuses work in a namespace that has not enabled backups.
func (s *Service) requireBackupsEnabled(ctx context.Context, namespace string) error {
	set, err := s.stores.Settings.GetSettings(ctx, namespace)
	if err != nil {
		return err
	}
	if !set.BackupsEnabled {
		return Errorf(CodeBackupsNotEnabled, "backups are not enabled for namespace %q; enable \"Try new Backup and Restore\" in its settings", namespace)
	}
	return nil
}

// publishEvent sends an outbound event to the backup-events topic; MessageId is the event id so a retry
// does not duplicate it.
func (s *Service) publishEvent(ctx context.Context, ev OutboundEvent) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return errors.Join(errors.New("encode outbound event"), err)
	}
	return s.publisher.Publish(ctx, TopicBackupEvents, Message{ID: ev.EventID, SessionID: ev.EnvironmentID, Body: body, ContentType: "application/json"})
}

// OutboundEvent is a message on the backup-events topic (docs/api.md).
type OutboundEvent struct {
	Type          string    `json:"type"`
	EventID       string    `json:"event_id"`
	OccurredAt    time.Time `json:"occurred_at"`
	Namespace     string    `json:"namespace"`
	EnvironmentID string    `json:"environment_id"`
	SnapshotID    string    `json:"snapshot_id"`
	RestoreID     string    `json:"restore_id,omitempty"`
	StatusMessage string    `json:"status_message,omitempty"`
}

// Outbound event types.
const (
	EventSnapshotFinished = "snapshot.finished"
	EventSnapshotFailed   = "snapshot.failed"
	EventRestoreFinished  = "restore.finished"
	EventRestoreFailed    = "restore.failed"
	EventSnapshotExpired  = "snapshot.expired"
)

// lockBlocker says which running operation holds the environment lock ("a backup is running"), or ""
// when the lock is free or stale. The staleness rule is acquireLock's (a finished holder, or a missing
// one whose lock is older than a minute, does not block); keep the two in step.
func (s *Service) lockBlocker(ctx context.Context, namespace, envID string) (string, error) {
	lock, err := s.stores.Operations.GetLock(ctx, namespace, envID)
	if err != nil {
		return "", err
	}
	kind, blocks, err := s.lockHolder(ctx, namespace, envID, lock)
	if err != nil || !blocks {
		return "", err
	}
	switch kind {
	case OpBackup:
		return "a backup is running", nil
	case OpRestore:
		return "a restore is running", nil
	case OpUndo:
		return "a restore is being undone", nil
	}
	return "another operation is running", nil
}
