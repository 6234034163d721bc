// Package tablestore keeps the service's records in Azure Table Storage (aztables): environments,
// permissions, namespace settings, snapshots and their expiry index, operations and their index,
// restores, activity, rejected events, the schedule's runs. It implements the domain's store
// interfaces; optimistic concurrency uses the entities' ETags. Entities are encoded in codec.go
// (Edm.Int64 integers, times that sort as text, Azure's size limits).
package tablestore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Table names, without the configured prefix.
const (
	tableEnvironments   = "Environments"
	tablePermissions    = "Permissions"
	tableSettings       = "NamespaceSettings"
	tableSnapshots      = "Snapshots"
	tableOperations     = "Operations"
	tableOperationIndex = "OperationIndex"
	tableActivity       = "Activity"
	tableRejected       = "RejectedEvents"
	tableRestores       = "Restores"
	tableArchives       = "Archives"
	tableUploads        = "Uploads"
	tableSnapshotExpiry = "SnapshotExpiry"
	tableScheduleRuns   = "ScheduleRuns"
)

var allTables = []string{tableEnvironments, tablePermissions, tableSettings, tableSnapshots, tableOperations,
	tableOperationIndex, tableActivity, tableRejected, tableRestores, tableArchives, tableUploads,
	tableSnapshotExpiry, tableScheduleRuns}

// Tables lists the tables EnsureTables creates, without the prefix (for infra/consistency_test.go).
func Tables() []string { return append([]string(nil), allTables...) }

// The SDK's retry policy for every Table Storage call, set explicitly rather than left to azcore's
// defaults, which have no TryTimeout: a try on a connection that hangs would wait as long as its
// caller's context allows, and a worker's may allow hours. A table call is small (a point read or write
// of at most 1 MiB, a page of at most 1,000 entities), so 30 s bounds a hung try generously. The worst
// case of one call is 4 tries of 30 s plus at most about 7 s of backoff (0.5 s, 1.5 s, 3.5 s, with up to
// 30 % jitter, each capped at 4 s): about two minutes, after which the caller gets a transient error it
// can retry at its own level (a redelivery, a recovery run). The statuses retried are azcore's: 408,
// 429, 500, 502, 503, 504.
const (
	MaxRetries    = 3
	TryTimeout    = 30 * time.Second
	RetryDelay    = 500 * time.Millisecond
	MaxRetryDelay = 4 * time.Second
)

// RetryOptions is the retry policy a Store uses unless WithRetryOptions changes it.
func RetryOptions() policy.RetryOptions {
	return policy.RetryOptions{MaxRetries: MaxRetries, TryTimeout: TryTimeout, RetryDelay: RetryDelay, MaxRetryDelay: MaxRetryDelay}
}

// Option changes how a Store talks to Table Storage. Production uses none; tests shorten the retry
// delays and watch the requests.
type Option func(*azcore.ClientOptions)

// WithRetryOptions replaces the retry policy (RetryOptions).
func WithRetryOptions(r policy.RetryOptions) Option {
	return func(o *azcore.ClientOptions) { o.Retry = r }
}

// WithPolicy adds p to the pipeline after the retry policy, so it sees every try.
func WithPolicy(p policy.Policy) Option {
	return func(o *azcore.ClientOptions) { o.PerRetryPolicies = append(o.PerRetryPolicies, p) }
}

func clientOptions(opts []Option) *aztables.ClientOptions {
	o := &aztables.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: RetryOptions()}}
	for _, opt := range opts {
		opt(&o.ClientOptions)
	}
	return o
}

// Store is the Table Storage adapter. Create it with New or NewFromConnectionString, then call
// EnsureTables once at start.
type Store struct {
	svc     *aztables.ServiceClient
	prefix  string
	options *aztables.ClientOptions // as built, for tests
	// pageSize is the page size of the reads the schedule and the expiry make (the walk over every
	// environment, the enabled namespaces, the schedule's runs, the expiry index and its backfill); 0 is
	// 1,000, Azure's most. Tests lower it to cross pages with a few entities.
	pageSize int
}

// NewFromConnectionString uses a storage connection string (Azurite locally).
func NewFromConnectionString(connectionString, prefix string, opts ...Option) (*Store, error) {
	o := clientOptions(opts)
	svc, err := aztables.NewServiceClientFromConnectionString(connectionString, o)
	if err != nil {
		return nil, fmt.Errorf("table service client: %w", err)
	}
	return &Store{svc: svc, prefix: prefix, options: o}, nil
}

// New uses an account URL (https://<account>.table.core.windows.net) and an Entra ID credential.
func New(serviceURL string, cred azcore.TokenCredential, prefix string, opts ...Option) (*Store, error) {
	o := clientOptions(opts)
	svc, err := aztables.NewServiceClient(serviceURL, cred, o)
	if err != nil {
		return nil, fmt.Errorf("table service client for %s: %w", serviceURL, err)
	}
	return &Store{svc: svc, prefix: prefix, options: o}, nil
}

// table is one table's client with the table's name (without the prefix), for messages.
type table struct {
	*aztables.Client
	name string
}

func (s *Store) table(name string) table { return table{s.svc.NewClient(s.prefix + name), name} }

// EnsureTables creates every table the service uses; existing tables are left alone.
func (s *Store) EnsureTables(ctx context.Context) error {
	for _, name := range allTables {
		_, err := s.svc.CreateTable(ctx, s.prefix+name, nil)
		if err != nil && !hasCode(err, string(aztables.TableAlreadyExists)) {
			return fmt.Errorf("create table %s%s: %w", s.prefix, name, err)
		}
	}
	return nil
}

// Ping reads one entity of the settings table: it needs the account reachable, the credential accepted
// and the tables created.
func (s *Store) Ping(ctx context.Context) error {
	top := int32(1)
	pager := s.table(tableSettings).NewListEntitiesPager(&aztables.ListEntitiesOptions{Top: &top})
	if _, err := pager.NextPage(ctx); err != nil {
		return fmt.Errorf("table storage: %w", err)
	}
	return nil
}

// hasCode reports whether err is an Azure response error with the given error code.
func hasCode(err error, code string) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.ErrorCode == code
}

// statusOf returns the HTTP status of an Azure response error, or 0.
func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func isNotFound(err error) bool { return statusOf(err) == http.StatusNotFound }

func isPreconditionFailed(err error) bool {
	s := statusOf(err)
	return s == http.StatusPreconditionFailed || s == http.StatusConflict
}
