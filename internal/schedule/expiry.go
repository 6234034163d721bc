package schedule

import "time"

// Retained is what the expiry rule needs to know of one snapshot.
type Retained struct {
	ID         string
	Finished   bool // Finished, so restorable
	Processing bool // still being made: its job owns it
	CreatedAt  time.Time
	ExpiresAt  time.Time
}

// Due returns the ids of the snapshots of one environment that the expiry deletes at now, in the order
// given: those whose ExpiresAt is not after now and that are not being made. With keepLastGood
// (KEEP_LAST_GOOD_SNAPSHOT) the newest Finished snapshot is kept while no newer Finished one exists, so
// a run of failing nightlies cannot leave the environment without any backup; kept is its id when that
// rule kept one that was due ("" otherwise). all must hold every live snapshot of the environment, not
// only the due ones: the newest Finished one is decided among all of them.
func Due(all []Retained, now time.Time, keepLastGood bool) (due []string, kept string) {
	newest := -1
	if keepLastGood {
		for i, s := range all {
			if !s.Finished {
				continue
			}
			if newest < 0 || s.CreatedAt.After(all[newest].CreatedAt) ||
				(s.CreatedAt.Equal(all[newest].CreatedAt) && s.ID > all[newest].ID) {
				newest = i
			}
		}
	}
	for i, s := range all {
		if s.Processing || s.ExpiresAt.IsZero() || s.ExpiresAt.After(now) {
			continue
		}
		if i == newest {
			kept = s.ID
			continue
		}
		due = append(due, s.ID)
	}
	return due, kept
}
