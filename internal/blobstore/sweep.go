package blobstore

import (
	"context"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/mxazure/backups/internal/backup"
)

// ListSnapshotBlobs returns the paths of every blob under the snapshot's prefix.
func (s *Store) ListSnapshotBlobs(ctx context.Context, namespace, envID, snapshotID string) ([]string, error) {
	var out []string
	err := s.walk(ctx, s.snapshots, Layout{}.SnapshotPrefix(namespace, envID, snapshotID), func(item *container.BlobItem) error {
		out = append(out, *item.Name)
		return nil
	})
	return out, err
}

// WalkArchives calls fn for every blob of a snapshot in the snapshots container (its archive, or its
// dump and manifest: Layout.ParseSnapshotBlob), in name order, so the blobs of one snapshot come
// together. Blobs the layout does not make are skipped.
func (s *Store) WalkArchives(ctx context.Context, fn func(backup.ArchiveBlob) error) error {
	return s.walk(ctx, s.snapshots, "", func(item *container.BlobItem) error {
		ns, env, snap, ok := Layout{}.ParseSnapshotBlob(*item.Name)
		if !ok {
			return nil
		}
		b := backup.ArchiveBlob{Path: *item.Name, Namespace: ns, EnvironmentID: env, SnapshotID: snap}
		if item.Properties != nil && item.Properties.LastModified != nil {
			b.LastModified = *item.Properties.LastModified
		}
		return fn(b)
	})
}
