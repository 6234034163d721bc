package bench

import (
	"context"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/mxazure/backups/internal/blobstore"
)

// The handler's containers in the lab: the stack leaves SNAPSHOTS_CONTAINER and FILE_STORE_CONTAINER
// at their defaults.
const (
	SnapshotsContainer = "snapshots"
	FileStoreContainer = blobstore.DefaultFileStoreContainer
)

// Usage is what a listing found: how many blobs, and their bytes (Content-Length, what Storage bills).
type Usage struct {
	Blobs int
	Bytes int64
}

func (u *Usage) add(n int64) { u.Blobs++; u.Bytes += n }

// EnvStorage is what one environment's snapshots occupy in Blob Storage: in the snapshots container
// under <namespace>/<environment>/ its snapshots' dumps, manifests and any other blob (one-archive
// snapshots, a failed attempt's leftovers), and in the file-store container under the same prefix its
// file store (the objects and the collector's state).
type EnvStorage struct {
	Dumps, Manifests, Other Usage
	Store                   Usage
}

// Snapshots is the snapshots container's part.
func (s EnvStorage) Snapshots() Usage {
	return Usage{Blobs: s.Dumps.Blobs + s.Manifests.Blobs + s.Other.Blobs, Bytes: s.Dumps.Bytes + s.Manifests.Bytes + s.Other.Bytes}
}

// Total is every byte stored for the environment.
func (s EnvStorage) Total() int64 { return s.Snapshots().Bytes + s.Store.Bytes }

// classify adds one blob of the snapshots container by its name's ending (blobstore.Layout's).
func (s *EnvStorage) classify(name string, size int64) {
	switch {
	case strings.HasSuffix(name, ".db.backup.gz"):
		s.Dumps.add(size)
	case strings.HasSuffix(name, ".manifest.gz"):
		s.Manifests.add(size)
	default:
		s.Other.add(size)
	}
}

// Storage lists what envID's snapshots occupy, in both containers.
func (l *Lab) Storage(ctx context.Context, envID string) (EnvStorage, error) {
	return storageOf(ctx, l.Blobs, envID)
}

func storageOf(ctx context.Context, client *azblob.Client, envID string) (EnvStorage, error) {
	var s EnvStorage
	prefix := layout.StorePrefix(Namespace, envID) // also the environment's folder in the snapshots container
	if err := listPrefix(ctx, client, SnapshotsContainer, prefix, s.classify); err != nil {
		return s, err
	}
	err := listPrefix(ctx, client, FileStoreContainer, prefix, func(_ string, n int64) { s.Store.add(n) })
	return s, err
}

func listPrefix(ctx context.Context, client *azblob.Client, container, prefix string, fn func(name string, size int64)) error {
	pager := client.NewListBlobsFlatPager(container, &azblob.ListBlobsFlatOptions{Prefix: &prefix})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %s under %s: %w", container, prefix, err)
		}
		for _, b := range page.Segment.BlobItems {
			var n int64
			if b.Properties != nil && b.Properties.ContentLength != nil {
				n = *b.Properties.ContentLength
			}
			fn(*b.Name, n)
		}
	}
	return nil
}

// NightlyStorage is the storage after `nights` nightly backups of one environment, from after[i], the
// storage listed after backup i+1 of a series. It is measured when the series had that many backups;
// otherwise it is projected from the measured ones: what the first backup stored plus nights-1 times
// the median growth that each later backup measured. how is "measured", "projected" or "" when there is
// too little to project from (no backup after the first).
func NightlyStorage(after []int64, nights int) (bytes int64, how string) {
	switch {
	case nights <= 0 || len(after) == 0:
		return 0, ""
	case len(after) >= nights:
		return after[nights-1], "measured"
	case len(after) == 1:
		return 0, ""
	}
	growth := make([]float64, 0, len(after)-1)
	for i := 1; i < len(after); i++ {
		growth = append(growth, float64(after[i]-after[i-1]))
	}
	return after[0] + int64(float64(nights-1)*Median(growth)), "projected"
}
