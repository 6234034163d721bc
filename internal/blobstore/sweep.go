package blobstore

import (
	"context"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/mxazure/backups/internal/backup"
)

// ParseSnapshotArchive is the inverse of SnapshotArchive: the snapshot a blob path belongs to. ok is
// false for a path the layout does not make (such blobs are never touched by the sweeper).
func (Layout) ParseSnapshotArchive(path string) (namespace, envID, snapshotID string, ok bool) {
	parts := strings.Split(path, "/")
	if len(parts) != 4 || !strings.HasPrefix(parts[3], "attempt-") || !strings.HasSuffix(parts[3], ".tar.gz") {
		return "", "", "", false
	}
	if backup.ValidateNamespace(parts[0]) != nil {
		return "", "", "", false
	}
	if _, err := backup.ValidateUUID("environment id", parts[1]); err != nil {
		return "", "", "", false
	}
	if _, err := backup.ValidateUUID("snapshot id", parts[2]); err != nil {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// ListSnapshotBlobs returns the paths of every blob under the snapshot's prefix.
func (s *Store) ListSnapshotBlobs(ctx context.Context, namespace, envID, snapshotID string) ([]string, error) {
	var out []string
	err := s.walk(ctx, s.snapshots, Layout{}.SnapshotPrefix(namespace, envID, snapshotID), func(item *container.BlobItem) error {
		out = append(out, *item.Name)
		return nil
	})
	return out, err
}

// WalkArchives calls fn for every archive blob of the snapshots container, in name order, so the
// blobs of one snapshot come together. Blobs the layout does not know are skipped.
func (s *Store) WalkArchives(ctx context.Context, fn func(backup.ArchiveBlob) error) error {
	return s.walk(ctx, s.snapshots, "", func(item *container.BlobItem) error {
		ns, env, snap, ok := Layout{}.ParseSnapshotArchive(*item.Name)
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
