// Package blobstore owns Azure Blob Storage for the service: the snapshots container with the archives
// (paths decided by Layout only), block staging for one-pass archive uploads, read access to the
// environments' file-document containers, and SAS links for downloads and uploads.
package blobstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// Store is the Blob Storage adapter.
type Store struct {
	client    *azblob.Client
	snapshots string // container holding snapshot archives
}

// NewFromConnectionString uses a storage connection string (Azurite locally).
func NewFromConnectionString(connectionString, snapshotsContainer string) (*Store, error) {
	c, err := azblob.NewClientFromConnectionString(connectionString, nil)
	if err != nil {
		return nil, fmt.Errorf("blob client: %w", err)
	}
	return &Store{client: c, snapshots: snapshotsContainer}, nil
}

// New uses an account URL (https://<account>.blob.core.windows.net) and an Entra ID credential.
func New(serviceURL string, cred azcore.TokenCredential, snapshotsContainer string) (*Store, error) {
	c, err := azblob.NewClient(serviceURL, cred, nil)
	if err != nil {
		return nil, fmt.Errorf("blob client for %s: %w", serviceURL, err)
	}
	return &Store{client: c, snapshots: snapshotsContainer}, nil
}

// Client exposes the underlying client to the adapter's own files and tests.
func (s *Store) Client() *azblob.Client { return s.client }

// EnsureContainers creates the snapshots container if missing (private access).
func (s *Store) EnsureContainers(ctx context.Context) error {
	_, err := s.client.CreateContainer(ctx, s.snapshots, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("create container %s: %w", s.snapshots, err)
	}
	return nil
}

// Ping reads the snapshots container's properties.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.client.ServiceClient().NewContainerClient(s.snapshots).GetProperties(ctx, nil); err != nil {
		return fmt.Errorf("blob storage: %w", err)
	}
	return nil
}

// statusOf returns the HTTP status of an Azure response error, or 0 for errors without a response.
func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}
