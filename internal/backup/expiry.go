package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/schedule"
)

// ExpiryStats counts what one expiry run did.
type ExpiryStats struct {
	Expired int // deleted (or their deletion finished)
	Kept    int // due but kept as their environment's last good snapshot (KEEP_LAST_GOOD_SNAPSHOT)
	Busy    int // due but being made or read: tried again next run
	Left    int // marked, but a blob could not be deleted (an immutability policy, say): tried again next run
}

// ExpireSnapshots deletes the snapshots whose retention ended by now (the invocation's time): each is
// marked (hidden from users, no longer restorable), told about (activity expire, event
// snapshot.expired), then its blobs are deleted, then its record. A snapshot that a restore or download
// is reading, or that is being made, waits for the next run; with KEEP_LAST_GOOD_SNAPSHOT the newest
// Finished snapshot of an environment that is not deleted is kept while no newer one exists. A run that
// stopped half-way (marked, or blobs gone and record left) is finished by the next: the store's expiry
// index keeps listing the snapshot until its record is deleted. Run by an hourly timer.
func (s *Service) ExpireSnapshots(ctx context.Context, now time.Time, log zerolog.Logger) (ExpiryStats, error) {
	var stats ExpiryStats
	var errs []error
	dueByEnv := map[string]map[string]bool{} // the environment's due snapshots, decided once per run
	err := s.stores.Snapshots.WalkSnapshotsDue(ctx, now, func(sn Snapshot) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		l := log.With().Str("namespace", sn.Namespace).Str("environment", sn.EnvironmentID).Str("snapshot", sn.ID).Logger()
		if !sn.Deleted() {
			key := EnvironmentKey(sn.Namespace, sn.EnvironmentID)
			due, ok := dueByEnv[key]
			if !ok {
				var err error
				if due, err = s.dueSnapshots(ctx, sn.Namespace, sn.EnvironmentID, now); err != nil {
					errs = append(errs, err)
					return true, nil
				}
				dueByEnv[key] = due
			}
			if !due[sn.ID] {
				if sn.Status == SnapshotProcessing {
					stats.Busy++
				} else {
					stats.Kept++
					l.Debug().Msg("expired snapshot kept: it is the environment's last good one")
				}
				return true, nil
			}
			marked, _, err := s.markDeleted(ctx, sn.Namespace, sn.EnvironmentID, sn.ID, true)
			if err != nil { // CodeOf(nil) is CodeInternal: the codes are decided only for an error
				switch CodeOf(err) {
				case CodeSnapshotInUse, CodeSnapshotNotReady, CodeConflict:
					stats.Busy++
					l.Info().Err(err).Msg("expired snapshot in use; it is deleted once that has ended")
				case CodeNotFound:
				default:
					errs = append(errs, err)
				}
				return true, nil
			}
			sn = marked
		}
		switch gone, err := s.finishExpiry(ctx, sn, l); {
		case err != nil:
			errs = append(errs, err)
		case gone:
			stats.Expired++
		default:
			stats.Left++
		}
		return true, nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	log.Info().Int("expired", stats.Expired).Int("kept_last_good", stats.Kept).Int("busy", stats.Busy).Int("blobs_left", stats.Left).Msg("snapshot expiry done")
	return stats, errors.Join(errs...)
}

// dueSnapshots decides which of an environment's snapshots expire at now (schedule.Due). The last good
// snapshot is kept only for environments that still exist: a deleted environment's snapshots expire
// on schedule.
func (s *Service) dueSnapshots(ctx context.Context, namespace, envID string, now time.Time) (map[string]bool, error) {
	keep := s.keepLastGood
	env, err := s.stores.Environments.GetEnvironment(ctx, namespace, envID)
	switch {
	case IsNotFound(err):
		keep = false
	case err != nil:
		return nil, err
	case env.State == StateDeleted:
		keep = false
	}
	live, _, err := s.stores.Snapshots.ListSnapshots(ctx, namespace, envID, 0, maxSnapshotsPerEnvironment)
	if err != nil {
		return nil, err
	}
	retained := make([]schedule.Retained, len(live))
	for i, sn := range live {
		retained[i] = schedule.Retained{ID: sn.ID, Finished: sn.Status == SnapshotFinished, Processing: sn.Status == SnapshotProcessing,
			CreatedAt: sn.CreatedAt, ExpiresAt: sn.ExpiresAt}
	}
	ids, _ := schedule.Due(retained, now, keep)
	due := make(map[string]bool, len(ids))
	for _, id := range ids {
		due[id] = true
	}
	return due, nil
}

// maxSnapshotsPerEnvironment bounds the snapshots read to decide an environment's expiry; retention
// keeps tens.
const maxSnapshotsPerEnvironment = 100_000

// finishExpiry reports whether the record is gone. It tells about a snapshot the expiry marked (again, after a crash: the activity entry and
// the event have fixed identities) and deletes its blobs and then its record. A deletion a user started
// is only finished. The event is sent before anything is deleted, so a failure leaves the marked
// snapshot for the next run, which sends it again.
func (s *Service) finishExpiry(ctx context.Context, sn Snapshot, log zerolog.Logger) (bool, error) {
	if sn.Expired {
		msg := fmt.Sprintf("%s snapshot expired: it was kept until %s", sn.Kind, sn.ExpiresAt.In(s.calendar.Location()).Format("2 January 2006 15:04 MST"))
		s.activity(ctx, ActivityEntry{ID: "expire:" + sn.ID, Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, Time: sn.DeletedAt,
			Action: ActionExpire, Status: ActivityFinished, Actor: ActorSystem, SnapshotID: sn.ID, Message: msg})
		ev := OutboundEvent{Type: EventSnapshotExpired, EventID: sn.ID + ":" + EventSnapshotExpired, OccurredAt: sn.DeletedAt,
			Namespace: sn.Namespace, EnvironmentID: sn.EnvironmentID, SnapshotID: sn.ID}
		if err := s.publishEvent(ctx, ev); err != nil {
			return false, Wrap(CodeTransient, err, "tell that snapshot %s expired", sn.ID)
		}
	}
	gone, err := s.finishDeletionDone(ctx, sn.Namespace, sn.EnvironmentID, sn.ID, log)
	if err != nil || !gone {
		return gone, err
	}
	log.Info().Str("kind", string(sn.Kind)).Time("expires_at", sn.ExpiresAt).Msg("snapshot expired and deleted")
	return true, nil
}
