package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// The collector deletes the store objects that no live snapshot names (docs/snapshot-layout.md,
// "Collecting"). Live: Finished and not being deleted (restorable, downloadable), or Processing (its
// job may be naming objects right now). One run for one environment:
//
//  1. read the state; skip when the snapshot records are as the last complete run left them;
//  2. read every live manifest, list the store: the candidates are the objects no manifest names that
//     are older than the grace period, plus what an interrupted run left in Deleting;
//  3. claim: publish the candidates in Deleting with a lease (an ETag-guarded write);
//  4. read the live manifests again, and delete only the candidates they still do not name, stopping
//     before the lease ends;
//  5. release the claim, keeping in Deleting what is left.
//
// A backup reads the state before it lists the store and again after its manifest is written
// (StoreFiles). If its manifest came too late for step 4's reading, its second read sees the claim (and
// waits for it to end), or a later generation (and lists the store again): either way it copies again
// whatever it lost before it can finish. A claim made after its manifest was written reads that
// manifest in step 4. Deleting only objects older than the grace period means a backup's fresh copies
// are not even candidates until long after it ended.

// maxDeletesPerClaim bounds one claim's Deleting list (and so the state blob).
const maxDeletesPerClaim = 5000

// CollectReport says what one collector run did for one environment.
type CollectReport struct {
	Skipped    bool // nothing changed since the last complete run
	Busy       bool // another run holds the claim
	Objects    int  // objects in the store after the run
	StoreBytes int64
	Referenced int // distinct objects the live manifests name
	Deleted    int
	Young      int // unreferenced objects kept: younger than the grace period
	Left       int // unreferenced objects left for the next run (the lease ran out, or a deletion failed)
}

// CollectFiles runs the collector for one environment. It is safe to run concurrently with backups,
// with other runs and after a crash of any of them; an error leaves everything as safe as before.
func (s *Service) CollectFiles(ctx context.Context, namespace, envID string, log zerolog.Logger) (CollectReport, error) {
	log = log.With().Str("namespace", namespace).Str("environment", envID).Logger()
	var rep CollectReport
	st, etag, err := s.fileStore.ReadCollectorState(ctx, namespace, envID)
	if err != nil {
		return rep, err
	}
	if collectorClaimActive(st, s.now()) {
		rep.Busy = true
		return rep, nil
	}
	refs := &references{s: s, namespace: namespace, envID: envID, finished: map[string][]string{}}
	fingerprint, err := refs.read(ctx)
	if err != nil {
		return rep, err
	}
	if fingerprint == st.Fingerprint && st.Young == 0 && len(st.Deleting) == 0 {
		rep.Skipped, rep.Objects, rep.StoreBytes = true, st.Objects, st.StoreBytes
		return rep, nil
	}

	objects := map[string]int64{}
	var candidates []string
	now := s.now()
	err = s.fileStore.WalkObjects(ctx, namespace, envID, func(o StoreObject) error {
		objects[o.Name] = o.Size
		if _, _, ok := ParseObjectName(o.Name); !ok || refs.names[o.Name] {
			return nil // a name the layout does not make is never deleted
		}
		if now.Sub(o.LastModified) < s.collectorGrace {
			rep.Young++
			return nil
		}
		candidates = append(candidates, o.Name)
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("list the file store: %w", err)
	}
	for _, name := range st.Deleting {
		if _, ok := objects[name]; ok && !slices.Contains(candidates, name) && !refs.names[name] {
			candidates = append(candidates, name)
		}
	}
	slices.Sort(candidates)
	if len(candidates) > maxDeletesPerClaim {
		rep.Left += len(candidates) - maxDeletesPerClaim
		candidates = candidates[:maxDeletesPerClaim]
	}
	rep.Referenced = len(refs.names)

	if len(candidates) == 0 {
		rep.Objects, rep.StoreBytes = sizes(objects)
		done := st
		done.Deleting, done.Fingerprint, done.Young, done.Objects, done.StoreBytes, done.LastRun = nil, fingerprint, rep.Young, rep.Objects, rep.StoreBytes, now
		if rep.Left > 0 {
			done.Fingerprint = ""
		}
		if _, err := s.fileStore.WriteCollectorState(ctx, namespace, envID, done, etag); err != nil && !IsConflict(err) {
			return rep, err
		}
		s.recordStoreSize(ctx, namespace, envID, rep.Objects, rep.StoreBytes, now)
		return rep, nil
	}

	claim := st
	claim.Generation++
	claim.Owner = uuid.NewString()
	claim.LeaseUntil = now.Add(CollectorLease)
	claim.Deleting = candidates
	claimETag, err := s.fileStore.WriteCollectorState(ctx, namespace, envID, claim, etag)
	if IsConflict(err) {
		rep.Busy = true
		return rep, nil
	} else if err != nil {
		return rep, err
	}

	// The claim is published: every manifest written from now on is seen by writers' confirmations;
	// read the manifests again so that none written before is missed.
	fingerprint, err = refs.read(ctx)
	if err != nil {
		s.releaseClaim(ctx, namespace, envID, claim, claimETag, candidates, log)
		return rep, err
	}
	rep.Referenced = len(refs.names)
	deadline := claim.LeaseUntil.Add(-collectorMargin)
	var left []string
	for i, name := range candidates {
		if refs.names[name] {
			continue
		}
		remaining := deadline.Sub(s.now())
		if remaining <= 0 || ctx.Err() != nil {
			left = append(left, candidates[i:]...)
			break
		}
		if err := s.deleteObject(ctx, namespace, envID, name, remaining); err != nil {
			log.Warn().Err(err).Str("object", name).Msg("could not delete an unreferenced store object; the next run tries again")
			left = append(left, name)
			continue
		}
		delete(objects, name)
		rep.Deleted++
	}
	rep.Left += len(left)
	rep.Objects, rep.StoreBytes = sizes(objects)

	done := claim
	done.Owner, done.LeaseUntil, done.Deleting = "", time.Time{}, left
	done.Fingerprint, done.Young, done.Objects, done.StoreBytes, done.LastRun = fingerprint, rep.Young, rep.Objects, rep.StoreBytes, s.now()
	if rep.Left > 0 {
		done.Fingerprint = ""
	}
	if _, err := s.fileStore.WriteCollectorState(ctx, namespace, envID, done, claimETag); err != nil {
		// A run that took over after the lease ended owns the state now; it checks what is left again.
		log.Warn().Err(err).Msg("could not release the collector claim; it ends with its lease")
	}
	s.recordStoreSize(ctx, namespace, envID, rep.Objects, rep.StoreBytes, done.LastRun)
	log.Info().Int("deleted", rep.Deleted).Int("left", rep.Left).Int("young", rep.Young).Int("referenced", rep.Referenced).
		Int("objects", rep.Objects).Int64("store_bytes", rep.StoreBytes).Msg("file store collected")
	return rep, nil
}

// recordStoreSize keeps the size of an environment's file store on its record, for the environment
// list. Best effort: a measurement older than the recorded one changes nothing, and a failure is only
// logged (the next backup or collector run measures again).
func (s *Service) recordStoreSize(ctx context.Context, namespace, envID string, objects int, bytes int64, at time.Time) {
	_, _, err := s.stores.Environments.UpdateEnvironment(ctx, namespace, envID, func(e Environment, ok bool) (Environment, bool, error) {
		if !ok || e.FileStore.MeasuredAt.After(at) {
			return e, false, nil
		}
		e.FileStore = FileStoreUsage{Objects: objects, Bytes: bytes, MeasuredAt: at}
		return e, true, nil
	})
	if err != nil {
		s.log.Warn().Err(err).Str("namespace", namespace).Str("environment", envID).Msg("could not record the file store's size")
	}
}

// deleteObject deletes one object within the claim's remaining time, so that no deletion of a void
// claim can reach Storage after the lease ends.
func (s *Service) deleteObject(ctx context.Context, namespace, envID, name string, remaining time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, remaining)
	defer cancel()
	return s.fileStore.DeleteObject(ctx, namespace, envID, name)
}

// releaseClaim ends a claim that deleted nothing, best effort (it ends with its lease otherwise).
func (s *Service) releaseClaim(ctx context.Context, namespace, envID string, claim CollectorState, etag string, left []string, log zerolog.Logger) {
	claim.Owner, claim.LeaseUntil, claim.Deleting, claim.Fingerprint = "", time.Time{}, left, ""
	if _, err := s.fileStore.WriteCollectorState(ctx, namespace, envID, claim, etag); err != nil {
		log.Warn().Err(err).Msg("could not release the collector claim; it ends with its lease")
	}
}

func sizes(objects map[string]int64) (int, int64) {
	var total int64
	for _, n := range objects {
		total += n
	}
	return len(objects), total
}

// references are the objects an environment's live manifests name. A Finished snapshot's manifest
// never changes, so a second read takes it from the first; a Processing one's may be rewritten.
type references struct {
	s                *Service
	namespace, envID string
	finished         map[string][]string // objects of a Finished snapshot's manifest, by path
	names            map[string]bool
}

// read lists the environment's snapshot records and reads the manifests of the live ones. It returns
// the fingerprint of the records. Any manifest that cannot be read fails the run: the collector must
// never take an unreadable manifest for one that names nothing.
func (r *references) read(ctx context.Context) (string, error) {
	snaps, err := r.s.allSnapshots(ctx, r.namespace, r.envID)
	if err != nil {
		return "", err
	}
	r.names = map[string]bool{}
	sum := sha256.New()
	for _, sn := range snaps {
		fmt.Fprintf(sum, "%s|%s|%s|%s\n", sn.ID, sn.Status, sn.ManifestPath, sn.OperationID)
		switch {
		case sn.Status == SnapshotFinished && sn.Incremental():
			if err := r.finishedManifest(ctx, sn); err != nil {
				return "", err
			}
		case sn.Status == SnapshotProcessing:
			if err := r.processingManifests(ctx, sn); err != nil {
				return "", err
			}
		}
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

func (r *references) finishedManifest(ctx context.Context, sn Snapshot) error {
	objs, ok := r.finished[sn.ManifestPath]
	if !ok {
		var err error
		objs, err = r.manifest(ctx, sn.ManifestPath)
		if IsNotFound(err) && r.gone(ctx, sn) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", sn.ID, err)
		}
		r.finished[sn.ManifestPath] = objs
	}
	for _, o := range objs {
		r.names[o] = true
	}
	return nil
}

// processingManifests reads every manifest of a snapshot still being made: each attempt writes its own.
func (r *references) processingManifests(ctx context.Context, sn Snapshot) error {
	paths, err := r.s.archives.ListSnapshotBlobs(ctx, r.namespace, r.envID, sn.ID)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", sn.ID, err)
	}
	for _, p := range paths {
		if !r.s.layout.IsManifest(p) {
			continue
		}
		objs, err := r.manifest(ctx, p)
		if IsNotFound(err) {
			continue // an ended attempt's, removed by settling: its snapshot no longer needs it
		}
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", sn.ID, err)
		}
		for _, o := range objs {
			r.names[o] = true
		}
	}
	return nil
}

func (r *references) manifest(ctx context.Context, path string) ([]string, error) {
	var objs []string
	_, err := r.s.manifests.ReadManifest(ctx, path, func(e ManifestEntry) error {
		objs = append(objs, e.Object)
		return nil
	})
	return objs, err
}

// gone reports whether a snapshot whose manifest is missing has been deleted (or marked) since it was
// listed.
func (r *references) gone(ctx context.Context, sn Snapshot) bool {
	cur, err := r.s.stores.Snapshots.GetSnapshot(ctx, sn.Namespace, sn.EnvironmentID, sn.ID)
	return IsNotFound(err) || (err == nil && (cur.Deleted() || cur.ManifestPath != sn.ManifestPath))
}

// allSnapshots returns every snapshot record of an environment that is not marked for deletion.
func (s *Service) allSnapshots(ctx context.Context, namespace, envID string) ([]Snapshot, error) {
	const page = 1000
	var all []Snapshot
	for offset := 0; ; offset += page {
		snaps, total, err := s.stores.Snapshots.ListSnapshots(ctx, namespace, envID, offset, page)
		if err != nil {
			return nil, err
		}
		all = append(all, snaps...)
		if offset+page >= total || len(snaps) == 0 {
			break
		}
	}
	// Pages of a list that changes between requests may overlap: each record counts once.
	slices.SortFunc(all, func(a, b Snapshot) int { return strings.Compare(a.ID, b.ID) })
	return slices.CompactFunc(all, func(a, b Snapshot) bool { return a.ID == b.ID }), nil
}

// CollectTotals sums the collector runs over every environment.
type CollectTotals struct {
	Environments int
	Skipped      int
	Busy         int
	Failed       int
	Deleted      int
	Left         int
}

// CollectAllFiles runs the collector for every environment that has a store. An environment whose run
// fails is logged and counted, and the others go on; the first error is returned at the end.
func (s *Service) CollectAllFiles(ctx context.Context, log zerolog.Logger) (CollectTotals, error) {
	var tot CollectTotals
	var first error
	err := s.fileStore.WalkStores(ctx, func(namespace, envID string) error {
		tot.Environments++
		rep, err := s.CollectFiles(ctx, namespace, envID, log)
		switch {
		case errors.Is(err, context.Canceled) || ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			tot.Failed++
			log.Error().Err(err).Str("namespace", namespace).Str("environment", envID).Msg("collecting the file store failed; the next run tries again")
			if first == nil {
				first = err
			}
		case rep.Skipped:
			tot.Skipped++
		case rep.Busy:
			tot.Busy++
		}
		tot.Deleted += rep.Deleted
		tot.Left += rep.Left
		return nil
	})
	if err != nil {
		return tot, err
	}
	log.Info().Int("environments", tot.Environments).Int("skipped", tot.Skipped).Int("busy", tot.Busy).Int("failed", tot.Failed).
		Int("deleted", tot.Deleted).Int("left", tot.Left).Msg("file stores collected")
	return tot, first
}
