// Package tablestore keeps the service's records in Azure Table Storage (aztables): environments,
// permissions, namespace settings, snapshots, operations, activity. It implements the domain's store
// interfaces; optimistic concurrency uses the entities' ETags.
package tablestore

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Table names, without the configured prefix.
const (
	tableEnvironments = "Environments"
	tablePermissions  = "Permissions"
	tableSettings     = "NamespaceSettings"
	tableSnapshots    = "Snapshots"
	tableOperations   = "Operations"
	tableActivity     = "Activity"
	tableRejected     = "RejectedEvents"
)

var allTables = []string{tableEnvironments, tablePermissions, tableSettings, tableSnapshots, tableOperations, tableActivity, tableRejected}

// Store is the Table Storage adapter. Create it with New or NewFromConnectionString, then call
// EnsureTables once at start.
type Store struct {
	svc    *aztables.ServiceClient
	prefix string
}

// NewFromConnectionString uses a storage connection string (Azurite locally).
func NewFromConnectionString(connectionString, prefix string) (*Store, error) {
	svc, err := aztables.NewServiceClientFromConnectionString(connectionString, nil)
	if err != nil {
		return nil, fmt.Errorf("table service client: %w", err)
	}
	return &Store{svc: svc, prefix: prefix}, nil
}

// New uses an account URL (https://<account>.table.core.windows.net) and an Entra ID credential.
func New(serviceURL string, cred azcore.TokenCredential, prefix string) (*Store, error) {
	svc, err := aztables.NewServiceClient(serviceURL, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("table service client for %s: %w", serviceURL, err)
	}
	return &Store{svc: svc, prefix: prefix}, nil
}

func (s *Store) table(name string) *aztables.Client { return s.svc.NewClient(s.prefix + name) }

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
