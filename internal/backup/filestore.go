package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// An environment's file store holds its file documents once, as immutable objects that its snapshots
// share; each snapshot's manifest names the object of every file it holds (docs/snapshot-layout.md).
// A backup copies into the store only the files whose object is not there yet, and the collector
// (collector.go) deletes the objects that no live snapshot names any more.

// StoreObject is one object of an environment's file store.
type StoreObject struct {
	// Name is the object's name within the environment's store, as ObjectName makes it.
	Name         string
	Size         int64
	MD5          []byte // its Content-MD5 as listed, nil when it has none
	LastModified time.Time
}

// SourceFile is a file document's blob in the environment's container, as a listing shows it: the
// properties that decide which store object holds its bytes.
type SourceFile struct {
	UUID string
	Size int64
	// MD5 is the blob's Content-MD5, nil when it has none.
	MD5 []byte
	// ETag is the blob's ETag (changed by every write of the blob).
	ETag string
}

// ObjectName is the store object that holds the bytes of f: the same name exactly when the file
// document is the same UUID with the same content, so that a backup may reference an object instead of
// copying the file. Content is decided from the listing, never assumed: by size and Content-MD5 when
// the blob has one (Storage computes it for single-shot uploads and clears it when a block list is
// committed without one), otherwise by size and ETag, which changes with every write (a rewrite with
// the same bytes is then stored again: wasteful, never wrong).
//
//	<uuid>/<size>-md5-<32 hex>     the blob has a Content-MD5
//	<uuid>/<size>-etag-<32 hex>    it has none: the first 16 bytes of SHA-256(ETag)
func ObjectName(f SourceFile) string {
	if len(f.MD5) > 0 {
		return fmt.Sprintf("%s/%d-md5-%s", f.UUID, f.Size, hex.EncodeToString(f.MD5))
	}
	sum := sha256.Sum256([]byte(strings.Trim(f.ETag, `"`)))
	return fmt.Sprintf("%s/%d-etag-%s", f.UUID, f.Size, hex.EncodeToString(sum[:16]))
}

// ParseObjectName returns the UUID and size an object name records; ok is false for a name ObjectName
// cannot make (such objects are never deleted by the collector).
func ParseObjectName(name string) (uuid string, size int64, ok bool) {
	u, rest, found := strings.Cut(name, "/")
	if !found {
		return "", 0, false
	}
	if c, ok := CanonicalUUID(u); !ok || c != u {
		return "", 0, false
	}
	sz, digest, found := strings.Cut(rest, "-")
	if !found {
		return "", 0, false
	}
	n, err := strconv.ParseInt(sz, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != sz {
		return "", 0, false
	}
	kind, hexPart, found := strings.Cut(digest, "-")
	if !found || (kind != "md5" && kind != "etag") || len(hexPart) != 32 {
		return "", 0, false
	}
	if _, err := hex.DecodeString(hexPart); err != nil || strings.ToLower(hexPart) != hexPart {
		return "", 0, false
	}
	return u, n, true
}

// ManifestFormat names the manifest format; ManifestVersion is its version.
const (
	ManifestFormat  = "mxbackup-manifest"
	ManifestVersion = 1
)

// ManifestHeader opens a snapshot's manifest.
type ManifestHeader struct {
	Format        string    `json:"format"`
	Version       int       `json:"version"`
	Namespace     string    `json:"namespace"`
	EnvironmentID string    `json:"environment_id"`
	SnapshotID    string    `json:"snapshot_id"`
	CreatedAt     time.Time `json:"created_at"`
	Files         int       `json:"files"`       // entries that follow
	FilesBytes    int64     `json:"files_bytes"` // the sum of their sizes
}

// ManifestEntry is one file document of a snapshot: its UUID, size and digest, and the store object
// that holds its bytes.
type ManifestEntry struct {
	UUID   string `json:"uuid"`
	Size   int64  `json:"size"`
	MD5    []byte `json:"md5,omitempty"` // the source blob's Content-MD5 when it had one
	Object string `json:"object"`
}

// Manifests reads and writes snapshot manifests (blobstore implements it; paths come from Layout).
type Manifests interface {
	// WriteManifest stores the manifest at path, replacing one already there (a backup that had to
	// copy files again rewrites its own). entries are in UUID order.
	WriteManifest(ctx context.Context, path string, h ManifestHeader, entries []ManifestEntry) error
	// ReadManifest calls fn for each entry, in the order written, and returns the header. A manifest
	// that is missing is CodeNotFound; one that is truncated or malformed, or whose entries disagree
	// with its header, is an error: the collector must never read a damaged manifest as "fewer files".
	ReadManifest(ctx context.Context, path string, fn func(ManifestEntry) error) (ManifestHeader, error)
}

// FileStore is the environments' file stores and the collector's state (blobstore implements it).
type FileStore interface {
	// WalkStores calls fn once for each environment that has a store (or collector state).
	WalkStores(ctx context.Context, fn func(namespace, envID string) error) error
	// WalkObjects calls fn for every object of the environment's store, in name order.
	WalkObjects(ctx context.Context, namespace, envID string, fn func(StoreObject) error) error
	// DeleteObject deletes one object; a missing object is fine.
	DeleteObject(ctx context.Context, namespace, envID, name string) error
	// ReadCollectorState returns the environment's collector state and its ETag; the zero state and
	// "" when there is none yet.
	ReadCollectorState(ctx context.Context, namespace, envID string) (CollectorState, string, error)
	// WriteCollectorState replaces the state if its ETag is still etag ("": only if there is none) and
	// returns the new ETag; CodeConflict if another writer came first.
	WriteCollectorState(ctx context.Context, namespace, envID string, st CollectorState, etag string) (string, error)
}

// CollectorState is one environment's collector record. A collector run that deletes objects first
// publishes them here under a claim (Owner, LeaseUntil), then reads the manifests again and deletes
// only what they still do not name. Writers of references (backups, uploads) read it before they list
// the store and again after their manifest is written (BeginReferences, ConfirmReferences): that order
// is what makes a concurrent run safe (docs/snapshot-layout.md, "Collecting").
type CollectorState struct {
	// Generation grows with every claim.
	Generation int64 `json:"generation"`
	// Owner names the run holding the claim, "" when there is none. A claim is void after LeaseUntil;
	// its owner makes no deletion after LeaseUntil-collectorMargin.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Deleting is what the claim may delete; a run that stopped half-way leaves the rest here, and the
	// next run checks it against the manifests again before deleting any of it.
	Deleting []string `json:"deleting,omitempty"`
	// Fingerprint is of the snapshot records the last complete run saw; Young counts the unreferenced
	// objects it kept because they were younger than the grace period. A run that finds the same
	// fingerprint, nothing young and nothing left to delete has nothing to do.
	Fingerprint string    `json:"fingerprint,omitempty"`
	Young       int       `json:"young,omitempty"`
	Objects     int       `json:"objects"`
	StoreBytes  int64     `json:"store_bytes"`
	LastRun     time.Time `json:"last_run,omitzero"`
}

// collectorClaimActive reports whether a claim may still delete objects at now. skew covers clocks
// that disagree between the collector's worker and the one asking.
func collectorClaimActive(st CollectorState, now time.Time) bool {
	return st.Owner != "" && now.Before(st.LeaseUntil.Add(CollectorClockSkew))
}

// Collector timing.
const (
	// CollectorLease is how long one claim lasts; a run deletes for at most this less collectorMargin,
	// then leaves the rest to the next run. A backup may wait this long for a claim to end, so it is
	// well below the stall timeout.
	CollectorLease = 2 * time.Minute
	// collectorMargin: a run stops deleting this long before its lease ends, and bounds each deletion
	// by it, so that no deletion of a void claim can reach Storage.
	collectorMargin = 30 * time.Second
	// CollectorClockSkew is how far apart the workers' clocks may be.
	CollectorClockSkew = 30 * time.Second
	// DefaultCollectorGrace is how old an unreferenced object must be before it is deleted: a backup
	// writes its manifest after its copies, so a young object may be one that a backup is about to
	// name.
	DefaultCollectorGrace = 12 * time.Hour
)

// ReferenceStamp is what a writer of references learnt of the collector before it listed the store.
type ReferenceStamp struct {
	Generation int64
	// Active: a claim was active, so the listing taken after the stamp may already be outdated.
	Active bool
}

// BeginReferences is called by a backup (or an upload) before it lists the store to decide which
// objects to reference rather than copy.
func BeginReferences(ctx context.Context, fs FileStore, namespace, envID string, now time.Time) (ReferenceStamp, error) {
	st, _, err := fs.ReadCollectorState(ctx, namespace, envID)
	if err != nil {
		return ReferenceStamp{}, err
	}
	return ReferenceStamp{Generation: st.Generation, Active: collectorClaimActive(st, now)}, nil
}

// ConfirmReferences is called after the writer's manifest is written (so that any collector claim made
// from now on sees it). ok means no claim was active or made since stamp: every object the listing
// after stamp showed still exists, and none can be deleted while the manifest names it. Otherwise it
// waits, polling every poll, until no claim is active and returns a new stamp: the caller lists the
// store again, copies what went missing, rewrites its manifest if that changed it, and confirms again
// with the new stamp.
func ConfirmReferences(ctx context.Context, fs FileStore, namespace, envID string, stamp ReferenceStamp, now func() time.Time, poll time.Duration) (ok bool, next ReferenceStamp, err error) {
	for {
		st, _, err := fs.ReadCollectorState(ctx, namespace, envID)
		if err != nil {
			return false, ReferenceStamp{}, err
		}
		active := collectorClaimActive(st, now())
		if !active {
			if !stamp.Active && st.Generation == stamp.Generation {
				return true, stamp, nil
			}
			return false, ReferenceStamp{Generation: st.Generation}, nil
		}
		if err := Sleep(ctx, poll); err != nil {
			return false, ReferenceStamp{}, err
		}
	}
}

// Sleep waits d, or until ctx ends (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
