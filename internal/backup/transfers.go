package backup

import (
	"context"
	"time"
)

// Contracts of downloads and uploads (snapshots moved out and in as Mendix archives,
// docs/archive-format.md). The domain decides records, permissions and lifetimes; the adapters below
// make the bytes.

// ArchiveDataType is what a download holds.
type ArchiveDataType string

const (
	// DataFilesAndDatabase is the full Mendix archive: .metadata, db/db.backup and tree/.
	DataFilesAndDatabase ArchiveDataType = "files_and_database"
	// DataDatabaseOnly is the bare db.backup (pg_dump custom format).
	DataDatabaseOnly ArchiveDataType = "database_only"
)

// DownloadMaker writes a download of a Finished snapshot into one blob (implemented by
// internal/snapshotter).
type DownloadMaker interface {
	// MakeDownload writes req.Snapshot's archive of req.DataType to req.Path in the snapshots container
	// and verifies it by reading it back; nothing is committed on error. Errors are *Error, CodeTransient
	// when a retry may help.
	MakeDownload(ctx context.Context, req DownloadRequest) (DownloadResult, error)
}

// DownloadRequest is one download to make.
type DownloadRequest struct {
	Snapshot Snapshot
	DataType ArchiveDataType
	// Path is the blob to write (Layout.Download); FileName the name users get it under.
	Path, FileName string
	Progress       func(Progress)
}

// DownloadResult describes a committed and verified download blob.
type DownloadResult struct {
	SizeBytes int64
	SHA256    string
}

// Ingester turns an uploaded archive into the parts of a snapshot (implemented by
// internal/snapshotter).
type Ingester interface {
	// Ingest reads the upload blob once, as a stream, checks it against every rule of
	// docs/archive-format.md ("Accepting an upload") and the configured limits, and in the same pass
	// writes the snapshot's dump to req.DumpPath, its files into the environment's file store and its
	// manifest to req.ManifestPath. A rejected archive is an *Error with CodeInvalidParameters whose
	// message tells the user what is wrong and where; then nothing is committed at req.DumpPath and
	// no manifest is written. A blob that changed since it was completed (its ETag is not
	// req.UploadETag) is rejected too.
	Ingest(ctx context.Context, req IngestRequest) (IngestResult, error)
}

// IngestRequest is one upload to check and store.
type IngestRequest struct {
	Namespace, EnvironmentID, SnapshotID string
	// UploadPath and UploadETag name the upload blob (uploads container) as it was when completed.
	UploadPath, UploadETag string
	// DumpPath and ManifestPath are where the snapshot's parts go (Layout, under the claim's fence).
	DumpPath, ManifestPath string
	Progress               func(Progress)
}

// IngestResult describes an accepted upload stored as a snapshot.
type IngestResult struct {
	SnapshotResult
	// ModelVersion is the .metadata's modelVersion ("" when missing).
	ModelVersion string
	// ArchiveBytes and ArchiveSHA256 are of the uploaded archive as read.
	ArchiveBytes  int64
	ArchiveSHA256 string
	// DumpVersion is the custom-format archive version of db/db.backup ("1.14.0").
	DumpVersion string
}

// Links mints links that let a user read or write one blob without an identity of their own
// (shared-access signatures; implemented by blobstore).
type Links interface {
	// DownloadLink is a read-only link to one blob of the snapshots container, valid until until,
	// served with Content-Disposition naming fileName.
	DownloadLink(ctx context.Context, path, fileName string, until time.Time) (string, error)
	// UploadLink is a write-only link (create and write, no read, no list, no delete) to one blob of
	// the uploads container, valid until until.
	UploadLink(ctx context.Context, path string, until time.Time) (string, error)
}

// UploadBlobs manages the uploads container (implemented by blobstore).
type UploadBlobs interface {
	// UploadProperties reads an upload blob's size and ETag; found is false when nothing was uploaded.
	UploadProperties(ctx context.Context, path string) (UploadBlob, error)
	// DeleteUpload removes an upload blob; a missing blob is fine.
	DeleteUpload(ctx context.Context, path string) error
}

// UploadBlob is what UploadProperties found.
type UploadBlob struct {
	Found bool
	Size  int64
	ETag  string
}
