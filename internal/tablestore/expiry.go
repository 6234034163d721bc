package tablestore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/mxazure/backups/internal/backup"
)

// The expiry index, table SnapshotExpiry: one small row per snapshot with an ExpiresAt, so that the
// expiry finds the snapshots due without reading the Snapshots table whole (10,000 environments of
// about 40 snapshots each).
//
//	PartitionKey "expiry", RowKey "<ExpiresAt>|<namespace>|<environment>|<snapshot id>": ExpiresAt in
//	    the fixed-width form (formatTime), which sorts as text in time order, so "RowKey lt <before>"
//	    is a range query of the snapshots due, earliest first. Written (insert or replace) before the
//	    record that has that ExpiresAt: by CreateSnapshot, and by UpdateSnapshot when ExpiresAt changes.
//	PartitionKey "meta", RowKey "backfilled": the marker of the one-time backfill (backfillExpiry).
//
// A crash leaves an entry too many, never one too few. ListSnapshotsDue reads each entry's snapshot
// and drops the stale entries: one whose snapshot does not exist (a crash between the entry and the
// insert, or a deletion whose entry removal failed) and one whose snapshot's ExpiresAt is another (the
// time before an update; the update wrote the new entry). It drops them only once older than
// indexGrace, and only while unchanged (ETag): a younger entry may belong to a write on its way, the
// insert of its snapshot or an update that sets its time again.
const (
	expiryPartition = "expiry"
	metaPartition   = "meta"
	backfilledRow   = "backfilled"
)

// expiryKey is the RowKey of a snapshot's expiry entry; "" when the snapshot has no ExpiresAt.
func expiryKey(namespace, envID, id string, expiresAt time.Time) string {
	if expiresAt.IsZero() {
		return ""
	}
	return formatTime(expiresAt) + "|" + indexKey(namespace, envID, id)
}

// parseExpiryKey splits a RowKey written by expiryKey (formatTime's form holds no "|").
func parseExpiryKey(rk string) (at, namespace, envID, id string, ok bool) {
	at, rest, ok := strings.Cut(rk, "|")
	if !ok {
		return "", "", "", "", false
	}
	namespace, envID, id, ok = parseIndexKey(rest)
	return at, namespace, envID, id, ok
}

// indexExpiry writes the expiry entry of a snapshot expiring at expiresAt (nothing when zero).
func (s *Store) indexExpiry(ctx context.Context, namespace, envID, id string, expiresAt time.Time) error {
	rk := expiryKey(namespace, envID, id, expiresAt)
	if rk == "" {
		return nil
	}
	return upsert(ctx, s.table(tableSnapshotExpiry), &indexEntity{PartitionKey: expiryPartition, RowKey: rk, IndexedAt: time.Now()})
}

// WalkSnapshotsDue reads the expiry entries before before, earliest first (a range query of the index's
// small rows, page by page), point-reads their snapshots indexConcurrency at a time, and calls fn with
// each due one in entry order. A snapshot is given from the entry of its own ExpiresAt only, so once;
// stale entries are dropped as they are met (see the top of this file). Ties are in the order of the
// keys' text: by "<namespace>|<environment>|<id>". fn may delete what it is given: the range is read
// on by its continuation key, which a deleted entry does not move.
func (s *Store) WalkSnapshotsDue(ctx context.Context, before time.Time, fn func(backup.Snapshot) (bool, error)) error {
	if err := s.backfillExpiry(ctx); err != nil {
		return err
	}
	filter := "PartitionKey eq " + odataString(expiryPartition) + " and RowKey lt " + odataString(formatTime(before))
	var batch []indexEntry
	more := true
	flush := func() error {
		found := make([]*backup.Snapshot, len(batch))
		err := forEach(ctx, len(batch), indexConcurrency, func(ctx context.Context, i int) error {
			sn, ok, err := s.dueSnapshot(ctx, batch[i], before)
			if ok {
				found[i] = &sn
			}
			return err
		})
		batch = batch[:0]
		if err != nil {
			return err
		}
		for _, sn := range found {
			if sn == nil {
				continue
			}
			if more, err = fn(*sn); err != nil || !more {
				return err
			}
		}
		return nil
	}
	err := s.readEntries(ctx, tableSnapshotExpiry, filter, s.pageSize, func(e indexEntry) (bool, error) {
		if batch = append(batch, e); len(batch) >= indexConcurrency {
			if err := flush(); err != nil {
				return false, err
			}
		}
		return more, nil
	})
	if err == nil && more && len(batch) > 0 {
		err = flush()
	}
	return err
}

// dueSnapshot reads the snapshot of an expiry entry and reports whether it is due by that entry; a stale
// entry older than indexGrace is removed (best effort: the next listing tries again).
func (s *Store) dueSnapshot(ctx context.Context, e indexEntry, before time.Time) (backup.Snapshot, bool, error) {
	at, ns, env, id, ok := parseExpiryKey(e.RowKey)
	if !ok {
		return backup.Snapshot{}, false, nil // not written by expiryKey
	}
	var se snapshotEntity
	_, found, err := get(ctx, s.table(tableSnapshots), envPartition(ns, env), id, &se)
	if err != nil {
		return backup.Snapshot{}, false, err
	}
	if !found || formatTime(se.ExpiresAt) != at {
		if time.Since(e.IndexedAt) > indexGrace {
			_ = remove(ctx, s.table(tableSnapshotExpiry), e.PartitionKey, e.RowKey, e.etag)
		}
		return backup.Snapshot{}, false, nil
	}
	sn := se.toDomain()
	return sn, sn.ExpiresAt.Before(before), nil // always before: the query reads only such entries
}

// backfillExpiry gives an entry to every snapshot written before the index existed, once per store: it
// reads the Snapshots table whole (keys and ExpiresAt only, page by page), writes the entries (insert or
// replace, in transactions of 100 rows of the one partition), and then the marker; until the marker is
// written every ListSnapshotsDue runs it again, so an interrupted backfill is finished by the next one.
// Two at once write the same entries. Snapshots written since the index exists have their entries
// already; the backfill may write an entry too many for one deleted or changed meanwhile, which
// ListSnapshotsDue drops as stale. Deleting the marker runs the backfill again.
func (s *Store) backfillExpiry(ctx context.Context) error {
	idx := s.table(tableSnapshotExpiry)
	var marker indexEntity
	if _, found, err := get(ctx, idx, metaPartition, backfilledRow, &marker); err != nil || found {
		return err
	}
	start := time.Now()
	var actions []aztables.TransactionAction
	submit := func() error {
		chunks := slices.Collect(slices.Chunk(actions, 100)) // Azure's most per transaction
		err := forEach(ctx, len(chunks), indexConcurrency, func(ctx context.Context, i int) error {
			if _, err := idx.SubmitTransaction(ctx, chunks[i], nil); err != nil {
				return transient(err, "write %d %s entries of the backfill", len(chunks[i]), tableSnapshotExpiry)
			}
			return nil
		})
		actions = actions[:0]
		return err
	}
	q := listQuery{sel: "PartitionKey,RowKey,ExpiresAt", top: s.pageSize}
	err := list(ctx, s.table(tableSnapshots), q, "snapshots for the expiry index", func(raw []byte) (bool, error) {
		var e struct {
			PartitionKey string
			RowKey       string
			ExpiresAt    time.Time
		}
		if err := decodeEntity(raw, &e); err != nil {
			return false, fmt.Errorf("table storage: decode a snapshot for the expiry index: %w", err)
		}
		ns, env := splitPartition(e.PartitionKey)
		rk := expiryKey(ns, env, e.RowKey, e.ExpiresAt)
		if rk == "" {
			return true, nil
		}
		b, err := encodeEntity(tableSnapshotExpiry, &indexEntity{PartitionKey: expiryPartition, RowKey: rk, IndexedAt: start})
		if err != nil {
			return false, err
		}
		actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeInsertReplace, Entity: b})
		if len(actions) >= 1000 {
			return true, submit()
		}
		return true, nil
	})
	if err == nil && len(actions) > 0 {
		err = submit()
	}
	if err != nil {
		return err
	}
	return upsert(ctx, idx, &indexEntity{PartitionKey: metaPartition, RowKey: backfilledRow, IndexedAt: time.Now()})
}
