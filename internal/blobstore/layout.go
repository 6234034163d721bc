package blobstore

import (
	"fmt"
	"strings"

	"github.com/mxazure/backups/internal/backup"
)

// Layout is the one place that knows blob paths. In the snapshots container, every blob of a snapshot
// is under the snapshot's folder, and each is written by one claim (fence n, two digits at least) of
// the backup job:
//
//	<namespace>/<environment>/<snapshot>/attempt-<n>.tar.gz         the archive of a one-archive snapshot (before incremental snapshots)
//	<namespace>/<environment>/<snapshot>/attempt-<n>.db.backup.gz   the database dump of an incremental snapshot
//	<namespace>/<environment>/<snapshot>/attempt-<n>.manifest.gz    its manifest (Manifests)
//
// Restores keep their plan and the bytes they replaced in the snapshots container too, under a folder
// whose leading dot no namespace has, so that nothing that parses snapshot blobs (ParseSnapshotBlob,
// WalkArchives, the sweeper) ever takes them for a snapshot's:
//
//	.restores/<namespace>/<environment>/<restore>/plan.json.gz       the restore's file plan (RestorePlan)
//	.restores/<namespace>/<environment>/<restore>/undo/<blob name>   a target blob saved before it was overwritten
//
// Downloads are kept apart the same way, one blob per download made (its first request's id), so that
// a link stays valid its hours whatever happens to the snapshot after:
//
//	.downloads/<namespace>/<environment>/<snapshot>/<archive>/attempt-<n>.tar.gz   a files-and-database download
//	.downloads/<namespace>/<environment>/<snapshot>/<archive>/attempt-<n>.backup   a database-only download
//
// In the uploads container, each upload is one blob that the user writes through its link:
//
//	<namespace>/<environment>/<upload>.tar.gz
//
// In the file-store container, each environment's file store is its folder:
//
//	<namespace>/<environment>/<object>           a store object; <object> is backup.ObjectName's, "<uuid>/<size>-<kind>-<hex>"
//	<namespace>/<environment>/.collector.json    the environment's collector state
//
// Each claim writes its own blobs, so a worker that lost its claim can never interleave blocks with the
// current one; the snapshot record names the blobs that finished, and settling (or the sweeper)
// removes the others. Store objects are shared by the snapshots of their environment and immutable.
type Layout struct{}

var _ backup.Layout = Layout{}

// The endings of the blobs of a snapshot, after "attempt-<n>".
const (
	archiveSuffix  = ".tar.gz"
	dumpSuffix     = ".db.backup.gz"
	manifestSuffix = ".manifest.gz"
)

// collectorStateName is the collector state's name in an environment's store folder; no object name
// can be it (they start with a UUID).
const collectorStateName = ".collector.json"

// SnapshotPrefix is the folder of every blob of one snapshot.
func (Layout) SnapshotPrefix(namespace, envID, snapshotID string) string {
	return namespace + "/" + envID + "/" + snapshotID + "/"
}

func (l Layout) attempt(namespace, envID, snapshotID string, fence int, suffix string) string {
	return fmt.Sprintf("%sattempt-%02d%s", l.SnapshotPrefix(namespace, envID, snapshotID), fence, suffix)
}

// SnapshotArchive is the archive blob of a one-archive snapshot written under one claim (fence) of
// the backup job.
func (l Layout) SnapshotArchive(namespace, envID, snapshotID string, fence int) string {
	return l.attempt(namespace, envID, snapshotID, fence, archiveSuffix)
}

// SnapshotDump is the database dump of an incremental snapshot written under one claim (fence).
func (l Layout) SnapshotDump(namespace, envID, snapshotID string, fence int) string {
	return l.attempt(namespace, envID, snapshotID, fence, dumpSuffix)
}

// SnapshotManifest is the manifest of an incremental snapshot written under one claim (fence).
func (l Layout) SnapshotManifest(namespace, envID, snapshotID string, fence int) string {
	return l.attempt(namespace, envID, snapshotID, fence, manifestSuffix)
}

// IsManifest reports whether path is a manifest as SnapshotManifest makes them.
func (l Layout) IsManifest(path string) bool {
	_, _, _, suffix, ok := parseSnapshotBlob(path)
	return ok && suffix == manifestSuffix
}

// ParseSnapshotBlob is the inverse of SnapshotArchive, SnapshotDump and SnapshotManifest: the snapshot
// a blob path belongs to. ok is false for any other path, the layout's only if its namespace is a
// namespace and its ids are lowercase canonical UUIDs (such blobs are never touched by the sweeper).
func (Layout) ParseSnapshotBlob(path string) (namespace, envID, snapshotID string, ok bool) {
	namespace, envID, snapshotID, _, ok = parseSnapshotBlob(path)
	return namespace, envID, snapshotID, ok
}

func parseSnapshotBlob(path string) (namespace, envID, snapshotID, suffix string, ok bool) {
	parts := strings.Split(path, "/")
	if len(parts) != 4 || !validNamespace(parts[0]) || !canonicalUUID(parts[1]) || !canonicalUUID(parts[2]) {
		return "", "", "", "", false
	}
	name, found := strings.CutPrefix(parts[3], "attempt-")
	if !found {
		return "", "", "", "", false
	}
	for _, s := range []string{archiveSuffix, dumpSuffix, manifestSuffix} {
		if fence, found := strings.CutSuffix(name, s); found && len(fence) >= 2 && allDigits(fence) {
			return parts[0], parts[1], parts[2], s, true
		}
	}
	return "", "", "", "", false
}

// describe names a blob of the snapshots container for messages, which never show paths: by its
// ending, as BlockSink and DeleteBlob may be given paths the layout did not make.
func describe(path string) string {
	switch {
	case strings.HasSuffix(path, dumpSuffix):
		return "the snapshot's database dump"
	case strings.HasSuffix(path, manifestSuffix):
		return "the snapshot's manifest"
	case strings.HasPrefix(path, downloadsFolder):
		return "the download"
	}
	return "the archive"
}

// restoresFolder is the folder of every restore area in the snapshots container.
const restoresFolder = ".restores/"

// RestorePrefix is the folder of a restore's area (its plan and undo blobs) in the snapshots
// container; envID is the restore's target.
func (Layout) RestorePrefix(namespace, envID, restoreID string) string {
	return restoresFolder + namespace + "/" + envID + "/" + restoreID + "/"
}

// RestorePlan is the path of a restore's file plan in the snapshots container.
func (l Layout) RestorePlan(namespace, envID, restoreID string) string {
	return l.RestorePrefix(namespace, envID, restoreID) + "plan.json.gz"
}

// RestoreUndoPrefix is the folder of the target blobs a restore saved before overwriting them.
func (l Layout) RestoreUndoPrefix(namespace, envID, restoreID string) string {
	return l.RestorePrefix(namespace, envID, restoreID) + "undo/"
}

// RestoreUndo is where a restore saves the target's blob name (as named in its container) before
// overwriting it.
func (l Layout) RestoreUndo(namespace, envID, restoreID, name string) string {
	return l.RestoreUndoPrefix(namespace, envID, restoreID) + name
}

// downloadsFolder is the folder of every download blob in the snapshots container.
const downloadsFolder = ".downloads/"

// DownloadPrefix is the folder of the blobs the claims of one download wrote.
func (Layout) DownloadPrefix(namespace, envID, snapshotID, archiveID string) string {
	return downloadsFolder + namespace + "/" + envID + "/" + snapshotID + "/" + archiveID + "/"
}

// Download is the blob of the download archiveID of a snapshot, of its data type, written by the claim
// with that fence.
func (l Layout) Download(namespace, envID, snapshotID, archiveID string, fence int, dataType backup.ArchiveDataType) string {
	ext := ".tar.gz"
	if dataType == backup.DataDatabaseOnly {
		ext = ".backup"
	}
	return fmt.Sprintf("%sattempt-%02d%s", l.DownloadPrefix(namespace, envID, snapshotID, archiveID), fence, ext)
}

// Upload is the blob of an upload in the uploads container.
func (Layout) Upload(namespace, envID, uploadID string) string {
	return namespace + "/" + envID + "/" + uploadID + ".tar.gz"
}

// StorePrefix is the folder of an environment's file store in the file-store container.
func (Layout) StorePrefix(namespace, envID string) string {
	return namespace + "/" + envID + "/"
}

// StoreObject is the path of the store object name (backup.ObjectName) in the file-store container.
func (l Layout) StoreObject(namespace, envID, name string) string {
	return l.StorePrefix(namespace, envID) + name
}

// CollectorState is the path of the environment's collector state in the file-store container.
func (l Layout) CollectorState(namespace, envID string) string {
	return l.StorePrefix(namespace, envID) + collectorStateName
}

// validNamespace and canonicalUUID accept the names the layout makes: a namespace, and a UUID in the
// lowercase canonical form that the service's ids have (an uppercase one is another blob name).
func validNamespace(s string) bool { return backup.ValidateNamespace(s) == nil }

func canonicalUUID(s string) bool {
	c, err := backup.ValidateUUID("id", s)
	return err == nil && c == s
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
