package backup

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/rs/zerolog"
)

// SweepGrace is how old an archive blob must be before the sweeper may remove it: a worker commits its
// blob before it records it, and a worker that lost its claim may still be committing one.
const SweepGrace = 24 * time.Hour

// SweepReport says what one sweep did.
type SweepReport struct {
	Blobs     int // archive blobs looked at
	Deleted   int // orphan blobs removed
	Failed    int // orphan blobs that could not be removed (left for the next sweep)
	Finished  int // interrupted snapshot deletions finished
	KeptYoung int // orphans younger than SweepGrace, left for a later sweep
}

// SweepArchives removes archive blobs that no snapshot record points to, once older than SweepGrace,
// and finishes snapshot deletions that stopped half-way (a marked record whose blobs could not all be
// deleted). A blob is kept while its snapshot is Processing (its job owns it) or while the snapshot's
// record names it. Blobs the layout does not know are never touched. Run by a timer; idempotent.
func (s *Service) SweepArchives(ctx context.Context, log zerolog.Logger) (SweepReport, error) {
	var rep SweepReport
	now := s.now()
	type seen struct {
		snap   Snapshot
		found  bool
		orphan bool // a blob of this snapshot could not be deleted, or is too young
	}
	var cur *seen
	var curKey string
	flush := func() error {
		if cur == nil || !cur.found || !cur.snap.Deleted() || cur.orphan {
			return nil
		}
		// Every blob of a marked snapshot is gone: finish its deletion.
		if err := s.stores.Snapshots.DeleteSnapshot(ctx, cur.snap.Namespace, cur.snap.EnvironmentID, cur.snap.ID); err != nil {
			return err
		}
		rep.Finished++
		return nil
	}
	err := s.archives.WalkArchives(ctx, func(b ArchiveBlob) error {
		rep.Blobs++
		if key := b.Namespace + "/" + b.EnvironmentID + "/" + b.SnapshotID; key != curKey {
			if err := flush(); err != nil {
				return err
			}
			sn, err := s.stores.Snapshots.GetSnapshot(ctx, b.Namespace, b.EnvironmentID, b.SnapshotID)
			if err != nil && !IsNotFound(err) {
				return err
			}
			cur, curKey = &seen{snap: sn, found: err == nil}, key
		}
		if cur.found && !cur.snap.Deleted() && (cur.snap.Status == SnapshotProcessing || slices.Contains(cur.snap.Blobs(), b.Path)) {
			return nil // in use
		}
		if now.Sub(b.LastModified) < SweepGrace {
			rep.KeptYoung++
			cur.orphan = true
			return nil
		}
		if err := s.archives.DeleteBlob(ctx, b.Path); err != nil {
			log.Warn().Err(err).Str("blob", b.Path).Msg("could not delete an orphan archive blob; the next sweep tries again")
			rep.Failed++
			cur.orphan = true
			return nil
		}
		log.Info().Str("blob", b.Path).Time("last_modified", b.LastModified).Msg("orphan archive blob deleted")
		rep.Deleted++
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return rep, err
	}
	log.Info().Int("blobs", rep.Blobs).Int("deleted", rep.Deleted).Int("failed", rep.Failed).
		Int("deletions_finished", rep.Finished).Int("kept_young", rep.KeptYoung).Msg("archive sweep done")
	return rep, err
}
