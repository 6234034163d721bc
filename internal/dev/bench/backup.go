package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/tablestore"
)

// pollInterval is how often a running snapshot is polled: the resolution of the measured wall time.
const pollInterval = 100 * time.Millisecond

// BackupResult is one snapshot made by the service.
type BackupResult struct {
	SnapshotID string
	Wall       time.Duration // from the POST to the first GET that shows Finished
	SizeBytes  int64         // the snapshot's size_bytes: its dump plus its files, uncompressed
	PeakRSS    int64         // the handler's VmHWM during the backup, bytes
	StartRSS   int64         // the handler's VmRSS when the backup was asked for
	FilesCount int
	FilesBytes int64
	DumpBytes  int64 // dump_size_bytes: db/db.backup, uncompressed
	// NewFiles and NewFilesBytes are the files the backup copied into the file store (new_files_count,
	// new_files_bytes); StoredBytes what it added to storage in all (stored_bytes).
	NewFiles      int
	NewFilesBytes int64
	StoredBytes   int64
	Level         int
	Phases        *Phases // from the handler's log, when found
}

type snapshotView struct {
	SnapshotID    string `json:"snapshot_id"`
	Status        string `json:"status"`
	StatusMessage string `json:"status_message"`
	SizeBytes     int64  `json:"size_bytes"`
	FilesCount    int    `json:"files_count"`
	FilesBytes    int64  `json:"files_bytes"`
	DumpSizeBytes int64  `json:"dump_size_bytes"`
	NewFilesCount int    `json:"new_files_count"`
	NewFilesBytes int64  `json:"new_files_bytes"`
	StoredBytes   int64  `json:"stored_bytes"`
}

// poll reads path through the API every pollInterval while running says so, each answer decoded into
// dst (which running looks at).
func (l *Lab) poll(ctx context.Context, path, what string, dst any, running func() bool) error {
	for running() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
		status, body, err := l.Stack.Call(ctx, l.Token, "GET", path, "")
		if err != nil || status != http.StatusOK {
			return fmt.Errorf("get %s: %d %s %v", what, status, tail(body, 300), err)
		}
		if err := json.Unmarshal([]byte(body), dst); err != nil {
			return fmt.Errorf("get %s: %w", what, err)
		}
	}
	return nil
}

func snapshotsPath(envID string) string {
	return "/api/v1/namespaces/" + Namespace + "/environments/" + envID + "/snapshots"
}

// Backup takes one snapshot of the environment through the API and measures it: the handler's peak
// RSS is reset just before the POST and read once the snapshot is Finished. Unless keep, the snapshot
// is deleted afterwards (not timed), so that dumps do not pile up in Azurite (the files it copied into
// the environment's file store stay until the collector's grace period has passed). A Failed snapshot,
// or a handler that restarted meanwhile, is an error.
func (l *Lab) Backup(ctx context.Context, envID string, level int, keep bool) (BackupResult, error) {
	res := BackupResult{Level: level}
	st := l.Stack
	watch, startRSS, err := l.watchHandler()
	if err != nil {
		return res, err
	}
	res.StartRSS = startRSS
	start := time.Now()
	status, body, err := st.Call(ctx, l.Token, "POST", snapshotsPath(envID), `{"comment":"benchmark"}`)
	if err != nil || status != http.StatusAccepted {
		return res, fmt.Errorf("create snapshot: %d %s %v", status, tail(body, 300), err)
	}
	var snap snapshotView
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		return res, fmt.Errorf("create snapshot: %w", err)
	}
	id := snap.SnapshotID
	res.SnapshotID = id
	if err := l.poll(ctx, snapshotsPath(envID)+"/"+id, "snapshot "+id, &snap, func() bool { return snap.Status == "Processing" }); err != nil {
		return res, err
	}
	res.Wall = time.Since(start)
	if res.PeakRSS, err = watch.peak("backup"); err != nil {
		return res, err
	}
	if snap.Status != "Finished" {
		return res, fmt.Errorf("snapshot %s ended %s: %s", id, snap.Status, snap.StatusMessage)
	}
	res.SizeBytes, res.FilesCount, res.FilesBytes, res.DumpBytes = snap.SizeBytes, snap.FilesCount, snap.FilesBytes, snap.DumpSizeBytes
	res.NewFiles, res.NewFilesBytes, res.StoredBytes = snap.NewFilesCount, snap.NewFilesBytes, snap.StoredBytes
	if keep {
		return res, nil
	}
	status, body, err = st.Call(ctx, l.Token, "DELETE", snapshotsPath(envID)+"/"+id, "")
	if err != nil || status != http.StatusNoContent {
		return res, fmt.Errorf("delete snapshot %s: %d %s %v", id, status, tail(body, 300), err)
	}
	return res, nil
}

// ListResult is the latency of listing an environment's snapshots through the API.
type ListResult struct {
	Records, Calls int
	P50, P99, Max  time.Duration
}

// ListLatency writes records Finished snapshot records for envID directly to Table Storage (the
// stack's Azurite, the default empty TABLE_PREFIX) and times calls of GET .../snapshots?limit=records
// through the API, after two untimed warm-up calls. Each answer must hold every record.
func (l *Lab) ListLatency(ctx context.Context, envID string, records, calls int) (ListResult, error) {
	res := ListResult{Records: records, Calls: calls}
	store, err := tablestore.NewFromConnectionString(l.Stack.Azurite.ConnectionString(), "")
	if err != nil {
		return res, err
	}
	if err := writeSnapshots(ctx, store, envID, records); err != nil {
		return res, err
	}
	path := fmt.Sprintf("%s?limit=%d", snapshotsPath(envID), records)
	var times []time.Duration
	for i := range calls + 2 {
		start := time.Now()
		status, body, err := l.Stack.Call(ctx, l.Token, "GET", path, "")
		elapsed := time.Since(start)
		if err != nil || status != http.StatusOK {
			return res, fmt.Errorf("list snapshots: %d %s %v", status, tail(body, 300), err)
		}
		var page struct {
			Snapshots []json.RawMessage `json:"snapshots"`
			Total     int               `json:"total"`
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			return res, fmt.Errorf("list snapshots: %w", err)
		}
		if len(page.Snapshots) != records || page.Total != records {
			return res, fmt.Errorf("list snapshots: got %d of total %d, want %d", len(page.Snapshots), page.Total, records)
		}
		if i >= 2 {
			times = append(times, elapsed)
		}
	}
	res.P50, res.P99 = Percentile(times, 50), Percentile(times, 99)
	res.Max = slices.Max(times)
	return res, nil
}

// writeSnapshots creates n Finished nightly snapshots of envID, one a day back from now, 16 at a time.
func writeSnapshots(ctx context.Context, store *tablestore.Store, envID string, n int) error {
	now := time.Now().UTC().Truncate(time.Second)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := store.CreateSnapshot(ctx, listedSnapshot(envID, i, now)); err != nil {
					cancel(fmt.Errorf("write snapshot record %d: %w", i, err))
					return
				}
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

var layout blobstore.Layout

// listedSnapshot is a nightly incremental snapshot as the service records it.
func listedSnapshot(envID string, i int, now time.Time) backup.Snapshot {
	id := uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "bench-listed-%d", i)).String()
	created := now.AddDate(0, 0, -i).Add(-2 * time.Hour)
	finished := created.Add(3 * time.Minute)
	return backup.Snapshot{ID: id, Namespace: Namespace, EnvironmentID: envID, Status: backup.SnapshotFinished,
		Kind: backup.KindNightly, Comment: fmt.Sprintf("nightly backup %d", i), CreatedAt: created, UpdatedAt: finished,
		FinishedAt: finished, ExpiresAt: backup.KindNightly.ExpiresAt(created), CreatedBy: "system",
		DeploymentPackage: "BenchApp_9.24.0.mda", ModelVersion: "9.24.0", SizeBytes: 1_050_000_000 + int64(i)*1000,
		DatabaseSizeBytes: 700_000_000, DumpSizeBytes: 650_000_000, FilesBytes: 400_000_000, FilesCount: 20_000,
		SHA256:      fmt.Sprintf("%064x", i),
		OperationID: uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "bench-listed-op-%d", i)).String(),
		Fence:       1, DumpPath: layout.SnapshotDump(Namespace, envID, id, 1), ManifestPath: layout.SnapshotManifest(Namespace, envID, id, 1),
		NewFilesCount: 200, NewFilesBytes: 4_000_000, StoredBytes: 250_000_000}
}
