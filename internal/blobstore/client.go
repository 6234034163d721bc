// Package blobstore owns Azure Blob Storage for the service: the snapshots container with the archives,
// database dumps and manifests of snapshots, the file-store container with the environments' file
// stores and their collector state (paths decided by Layout only), block staging for one-pass archive
// uploads, read access to the environments' file-document containers (streamed, listed in pages, or
// copied server-side into the file store), and SAS links for downloads and uploads.
package blobstore

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// The SDK's retry policy for every request of the Store, set explicitly rather than left to the SDK's
// defaults (which have no per-try timeout, so one hung call could hold a job until the function timeout).
const (
	// MaxRetries: 5 tries in all, with pauses of about 1, 3, 7 and 15 s (RetryDelay grown exponentially
	// with jitter, capped by MaxRetryDelay; Retry-After wins when Storage throttles), so half a minute
	// of throttling or a failover does not fail a backup.
	MaxRetries    = 4
	RetryDelay    = time.Second
	MaxRetryDelay = 30 * time.Second
	// TryTimeout bounds one try, its response body included: a 4 MiB block staged, or one range of a
	// read (DefaultRangeSize), still fits at 140 KB/s, and a hung call gives up after its 5 tries,
	// about 10 minutes, not hours.
	TryTimeout = 2 * time.Minute
	// DefaultRangeSize is the most one GET of a streamed read asks for: TryTimeout bounds a whole
	// response, so a blob of many GB is read as consecutive ranges.
	DefaultRangeSize = 16 << 20
)

// DefaultFileStoreContainer is the container of the environments' file stores unless
// Options.FileStoreContainer names another. It is not the snapshots container, so that listing the
// snapshots container (the sweeper walks it daily) never pages through millions of store objects.
const DefaultFileStoreContainer = "snapshot-files"

// DefaultUploadsContainer is the container of the archives users upload through their links unless
// Options.UploadsContainer names another. It is a container of its own, so that an upload link, which
// names its container, can never be turned on a snapshot's or a file store's blobs.
const DefaultUploadsContainer = "snapshot-uploads"

// Options tune a Store. The zero value is the service's configuration (the constants above); tests
// shorten the retry policy and the ranges.
type Options struct {
	// Retry replaces the retry policy; zero fields take MaxRetries, TryTimeout, RetryDelay and
	// MaxRetryDelay.
	Retry policy.RetryOptions
	// RangeSize is the most one GET of a streamed read asks for; default DefaultRangeSize.
	RangeSize int64
	// Transport sends the requests (tests); default the SDK's HTTP client.
	Transport policy.Transporter
	// ListPageSize is the most blobs (or folders) one List Blobs request asks for (ListFiles,
	// WalkArchives, WalkStores, WalkObjects, ListSnapshotBlobs); default DefaultListPageSize.
	ListPageSize int32
	// SyncCopyLimit: CopyFile copies sources of up to this many bytes with the synchronous Copy Blob
	// From URL, larger ones with the asynchronous Copy Blob; default DefaultSyncCopyLimit.
	SyncCopyLimit int64
	// CopyPollMin and CopyPollMax are the first and the longest pause between two status reads of an
	// asynchronous copy; defaults DefaultCopyPollMin and DefaultCopyPollMax.
	CopyPollMin, CopyPollMax time.Duration
	// AsyncCopyTimeout bounds one asynchronous copy, and the source authorisation it gets; default
	// DefaultAsyncCopyTimeout.
	AsyncCopyTimeout time.Duration
	// FileStoreContainer holds the environments' file stores and their collector state; default
	// DefaultFileStoreContainer. It must not be the snapshots container.
	FileStoreContainer string
	// UploadsContainer holds the archives users upload (UploadLink); default DefaultUploadsContainer.
	// It must be neither the snapshots container nor the file-store container.
	UploadsContainer string
}

func (o Options) withDefaults() Options {
	if o.Retry.MaxRetries == 0 {
		o.Retry.MaxRetries = MaxRetries
	}
	if o.Retry.TryTimeout == 0 {
		o.Retry.TryTimeout = TryTimeout
	}
	if o.Retry.RetryDelay == 0 {
		o.Retry.RetryDelay = RetryDelay
	}
	if o.Retry.MaxRetryDelay == 0 {
		o.Retry.MaxRetryDelay = MaxRetryDelay
	}
	if o.RangeSize <= 0 {
		o.RangeSize = DefaultRangeSize
	}
	if o.ListPageSize <= 0 {
		o.ListPageSize = DefaultListPageSize
	}
	if o.SyncCopyLimit <= 0 {
		o.SyncCopyLimit = DefaultSyncCopyLimit
	}
	if o.CopyPollMin <= 0 {
		o.CopyPollMin = DefaultCopyPollMin
	}
	if o.CopyPollMax <= 0 {
		o.CopyPollMax = DefaultCopyPollMax
	}
	o.CopyPollMax = max(o.CopyPollMax, o.CopyPollMin)
	if o.AsyncCopyTimeout <= 0 {
		o.AsyncCopyTimeout = DefaultAsyncCopyTimeout
	}
	if o.FileStoreContainer == "" {
		o.FileStoreContainer = DefaultFileStoreContainer
	}
	if o.UploadsContainer == "" {
		o.UploadsContainer = DefaultUploadsContainer
	}
	return o
}

func (o Options) client() *azblob.ClientOptions {
	return &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Retry: o.Retry, Transport: o.Transport}}
}

// Store is the Blob Storage adapter.
type Store struct {
	client    *azblob.Client
	snapshots string // container holding snapshot archives, dumps and manifests
	files     string // container holding the file stores (Options.FileStoreContainer)
	uploads   string // container holding the users' uploads (Options.UploadsContainer)
	opts      Options
	source    sourceAuthorizer // lets Storage read the source of a server-side copy
	links     linkSigner       // signs the download and upload links users get
}

// NewFromConnectionString uses a storage connection string (Azurite locally). At most one Options.
func NewFromConnectionString(connectionString, snapshotsContainer string, opts ...Options) (*Store, error) {
	o := options(opts)
	if err := checkContainers(snapshotsContainer, o); err != nil {
		return nil, err
	}
	c, err := azblob.NewClientFromConnectionString(connectionString, o.client())
	if err != nil {
		return nil, fmt.Errorf("blob client: %w", err)
	}
	return &Store{client: c, snapshots: snapshotsContainer, files: o.FileStoreContainer, uploads: o.UploadsContainer, opts: o,
		source: sharedKeySAS{}, links: newSharedKeyLinks(connectionString)}, nil
}

// New uses an account URL (https://<account>.blob.core.windows.net) and an Entra ID credential. At most
// one Options.
func New(serviceURL string, cred azcore.TokenCredential, snapshotsContainer string, opts ...Options) (*Store, error) {
	o := options(opts)
	if err := checkContainers(snapshotsContainer, o); err != nil {
		return nil, err
	}
	c, err := azblob.NewClient(serviceURL, cred, o.client())
	if err != nil {
		return nil, fmt.Errorf("blob client for %s: %w", serviceURL, err)
	}
	return &Store{client: c, snapshots: snapshotsContainer, files: o.FileStoreContainer, uploads: o.UploadsContainer, opts: o,
		source: identity{cred: cred, service: c.ServiceClient()}, links: newDelegationLinks(c.ServiceClient())}, nil
}

// checkContainers refuses a file-store container that is the snapshots container: the sweeper's walk
// of the snapshots container would page through every store object. It refuses an uploads container
// that is either of them too: users write there, and the removal of expired uploads deletes there.
func checkContainers(snapshotsContainer string, o Options) error {
	switch {
	case snapshotsContainer == o.FileStoreContainer:
		return fmt.Errorf("blob storage: the file-store container must not be the snapshots container %q", snapshotsContainer)
	case o.UploadsContainer == snapshotsContainer || o.UploadsContainer == o.FileStoreContainer:
		return fmt.Errorf("blob storage: the uploads container %q must be neither the snapshots container nor the file-store container", o.UploadsContainer)
	}
	return nil
}

func options(opts []Options) Options {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	return o.withDefaults()
}

// Client exposes the underlying client to the adapter's own files and tests.
func (s *Store) Client() *azblob.Client { return s.client }

// SnapshotsContainer is the name of the container of the snapshots' archives, dumps and manifests.
func (s *Store) SnapshotsContainer() string { return s.snapshots }

// FileStoreContainer is the name of the container of the environments' file stores.
func (s *Store) FileStoreContainer() string { return s.files }

// UploadsContainer is the name of the container of the archives users upload.
func (s *Store) UploadsContainer() string { return s.uploads }

// EnsureContainers creates the snapshots container, the file-store container and the uploads
// container if missing (private access).
func (s *Store) EnsureContainers(ctx context.Context) error {
	for _, name := range []string{s.snapshots, s.files, s.uploads} {
		// Looked at before it is created: in Azure the containers come from infra and the identity's
		// roles are scoped to each container, where creating one may be refused (403) even when it
		// exists; reading its properties is allowed.
		_, err := s.client.ServiceClient().NewContainerClient(name).GetProperties(ctx, nil)
		if err == nil {
			continue
		}
		if !bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return transient(err, "read the properties of container %s", name)
		}
		_, err = s.client.CreateContainer(ctx, name, nil)
		if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
			return transient(err, "create container %s", name)
		}
	}
	return nil
}

// Ping reads the properties of the snapshots container, then of the file-store container and of the
// uploads container.
func (s *Store) Ping(ctx context.Context) error {
	for _, name := range []string{s.snapshots, s.files, s.uploads} {
		if _, err := s.client.ServiceClient().NewContainerClient(name).GetProperties(ctx, nil); err != nil {
			return transient(err, "read the properties of container %s", name)
		}
	}
	return nil
}
