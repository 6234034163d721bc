package tablestore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/mxazure/backups/internal/backup"
)

// The operations index, table OperationIndex: one small row per operation, so that recovery finds the
// unsettled operations, and pruning the old settled ones, without reading the Operations table whole (a
// filter on Phase there is a scan of every operation ever written).
//
//	PartitionKey "active", RowKey "<namespace>|<environment>|<operation id>": an operation that may be
//	    unsettled. Written (insert or replace) before the operation, so the partition always holds every
//	    unsettled operation.
//	PartitionKey "ended-<YYYY-MM-DD>", RowKey "<FinishedAt>|<namespace>|<environment>|<operation id>": a
//	    settled operation, by the UTC day and the time it finished (the fixed-width form, which sorts as
//	    text, so pruning reads only what ended before its cutoff, even on the cutoff's day). Written after
//	    the operation was written settled; the active entry is deleted after it.
//
// A crash leaves an entry too many, never one too few: an active entry without its operation (a crash
// between the two writes of CreateOperation) is dropped by ListActiveOperations once it is older than
// indexGrace; an active entry of a settled operation (a crash after the settling write) is moved to its
// ended partition by ListActiveOperations; an ended entry whose operation is gone is dropped by
// PruneOperations.
const (
	activePartition = "active"
	endedPrefix     = "ended-"
	// indexGrace is how long an active entry may wait for its operation: CreateOperation writes the
	// operation right after the entry, so an entry older than this without one was left by a crash.
	indexGrace = time.Minute
	// indexConcurrency bounds the point reads (and repairs) that listing and pruning run at a time.
	indexConcurrency = 16
)

type indexEntity struct {
	PartitionKey string
	RowKey       string
	IndexedAt    time.Time // when the entry was written, by this process's clock
}

func (e *indexEntity) keys() (string, string) { return e.PartitionKey, e.RowKey }

// indexEntry is an index row as listed, with its ETag.
type indexEntry struct {
	indexEntity
	etag azcore.ETag
}

func indexKey(namespace, envID, id string) string { return namespace + "|" + envID + "|" + id }

// parseIndexKey splits a RowKey written by indexKey (namespaces, environment and operation ids hold no
// "|").
func parseIndexKey(rk string) (namespace, envID, id string, ok bool) {
	namespace, rest, ok1 := strings.Cut(rk, "|")
	envID, id, ok2 := strings.Cut(rest, "|")
	return namespace, envID, id, ok1 && ok2
}

func endedPartition(t time.Time) string { return endedPrefix + t.UTC().Format("2006-01-02") }

// endedKeys are the keys of a settled operation's ended entry.
func endedKeys(op backup.Operation) (pk, rk string) {
	return endedPartition(op.FinishedAt), formatTime(op.FinishedAt) + "|" + indexKey(op.Namespace, op.EnvironmentID, op.ID)
}

// parseEndedKey splits a RowKey written by endedKeys.
func parseEndedKey(rk string) (namespace, envID, id string, ok bool) {
	_, rest, ok := strings.Cut(rk, "|")
	if !ok {
		return "", "", "", false
	}
	return parseIndexKey(rest)
}

// indexActive writes the operation's active entry.
func (s *Store) indexActive(ctx context.Context, namespace, envID, id string) error {
	return upsert(ctx, s.table(tableOperationIndex),
		&indexEntity{PartitionKey: activePartition, RowKey: indexKey(namespace, envID, id), IndexedAt: time.Now()})
}

// indexSettled moves a settled operation's entry from the active partition to its ended day: the ended
// entry first, then the active one is deleted (while its ETag is still activeETag, if given). It is best
// effort: the operation is already written, and a failure leaves the active entry, which the next
// ListActiveOperations moves.
func (s *Store) indexSettled(ctx context.Context, op backup.Operation, activeETag azcore.ETag) {
	idx := s.table(tableOperationIndex)
	pk, rk := endedKeys(op)
	if err := upsert(ctx, idx, &indexEntity{PartitionKey: pk, RowKey: rk, IndexedAt: time.Now()}); err != nil {
		return
	}
	// A conflict: written again since, by a creation.
	_ = remove(ctx, idx, activePartition, indexKey(op.Namespace, op.EnvironmentID, op.ID), activeETag)
}

// readIndex lists the entries of the operation index matching filter; fn returns false to stop.
func (s *Store) readIndex(ctx context.Context, filter string, fn func(indexEntry) (bool, error)) error {
	return s.readEntries(ctx, tableOperationIndex, filter, 0, fn)
}

// readEntries lists the entries (indexEntity rows, with their ETags) of an index table matching filter,
// in pages of top (0: 1,000); fn returns false to stop.
func (s *Store) readEntries(ctx context.Context, tbl, filter string, top int, fn func(indexEntry) (bool, error)) error {
	return pages(ctx, s.table(tbl), filter, top, tbl, true, func(raw []byte) (bool, error) {
		var e indexEntity
		etag, err := decodeEntityETag(raw, &e)
		if err != nil {
			return false, fmt.Errorf("table storage: decode %s entry: %w", tbl, err)
		}
		return fn(indexEntry{e, azcore.ETag(etag)})
	})
}

// ListActiveOperations reads the active partition of the index and each operation it names (point reads,
// indexConcurrency at a time), and returns the unsettled ones, ordered by id. It repairs what a crash
// left: the entry of a settled operation moves to its ended day, an entry whose operation does not exist
// is dropped once older than indexGrace.
func (s *Store) ListActiveOperations(ctx context.Context) ([]backup.Operation, error) {
	var entries []indexEntry
	err := s.readIndex(ctx, "PartitionKey eq "+odataString(activePartition), func(e indexEntry) (bool, error) {
		entries = append(entries, e)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	found := make([]*backup.Operation, len(entries))
	err = forEach(ctx, len(entries), indexConcurrency, func(ctx context.Context, i int) error {
		e := entries[i]
		ns, env, id, ok := parseIndexKey(e.RowKey)
		if !ok {
			return nil // not written by indexKey
		}
		op, _, exists, err := s.readOperation(ctx, ns, env, id)
		switch {
		case err != nil:
			return err
		case !exists:
			if time.Since(e.IndexedAt) > indexGrace {
				_ = remove(ctx, s.table(tableOperationIndex), activePartition, e.RowKey, e.etag) // best effort, as below
			}
		case op.Settled:
			s.indexSettled(ctx, op, e.etag)
		default:
			found[i] = &op
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []backup.Operation
	for _, op := range found {
		if op != nil {
			out = append(out, *op)
		}
	}
	slices.SortFunc(out, func(a, b backup.Operation) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// PruneOperations reads the ended entries of operations that finished before endedBefore, oldest first
// (a range query over the index's keys: the ended days before endedBefore's, and its own day up to its
// time; it reads the index's small rows only, not the Operations table), and deletes each operation,
// then its entry, at most limit operations. Entries that ended after endedBefore are not read at all, so
// a run every few minutes costs what it deletes.
func (s *Store) PruneOperations(ctx context.Context, endedBefore time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, ctx.Err()
	}
	day := odataString(endedPartition(endedBefore))
	filter := "(PartitionKey ge " + odataString(endedPrefix) + " and PartitionKey lt " + day + ") or (PartitionKey eq " + day +
		" and RowKey lt " + odataString(formatTime(endedBefore)) + ")"
	var deleted atomic.Int64
	var batch []indexEntry
	flush := func() error {
		err := forEach(ctx, len(batch), indexConcurrency, func(ctx context.Context, i int) error {
			pruned, err := s.pruneEntry(ctx, batch[i], endedBefore)
			if pruned {
				deleted.Add(1)
			}
			return err
		})
		batch = batch[:0]
		return err
	}
	err := s.readIndex(ctx, filter, func(e indexEntry) (bool, error) {
		batch = append(batch, e)
		// A batch never holds more entries than operations may still be deleted: each deletes at most one.
		if len(batch) >= min(indexConcurrency, limit-int(deleted.Load())) {
			if err := flush(); err != nil {
				return false, err
			}
		}
		return int(deleted.Load()) < limit, nil
	})
	if err == nil && len(batch) > 0 {
		err = flush()
	}
	return int(deleted.Load()), err
}

// pruneEntry handles one ended entry and reports whether it deleted its operation.
func (s *Store) pruneEntry(ctx context.Context, e indexEntry, endedBefore time.Time) (bool, error) {
	idx := s.table(tableOperationIndex)
	ns, env, id, ok := parseEndedKey(e.RowKey)
	if !ok {
		return false, nil // not written by endedKeys
	}
	op, etag, exists, err := s.readOperation(ctx, ns, env, id)
	if err != nil {
		return false, err
	}
	pk, rk := endedKeys(op)
	switch {
	case !exists || !op.Settled:
		// Deleted already (a crash before its entry was), or unsettled again (which writes the active entry
		// first): the entry is stale.
		return false, ignoreConflict(remove(ctx, idx, e.PartitionKey, e.RowKey, e.etag))
	case pk != e.PartitionKey || rk != e.RowKey:
		// FinishedAt changed after the entry was written: the entry moves to its time.
		if err := upsert(ctx, idx, &indexEntity{PartitionKey: pk, RowKey: rk, IndexedAt: time.Now()}); err != nil {
			return false, err
		}
		return false, ignoreConflict(remove(ctx, idx, e.PartitionKey, e.RowKey, e.etag))
	case !op.FinishedAt.Before(endedBefore):
		return false, nil // cannot be: the query reads only entries that ended before
	}
	if err := remove(ctx, s.table(tableOperations), envPartition(ns, env), id, etag); err == errConflict {
		return false, nil // written since it was read: left for the next run
	} else if err != nil {
		return false, err
	}
	return true, ignoreConflict(remove(ctx, idx, e.PartitionKey, e.RowKey, e.etag))
}

func ignoreConflict(err error) error {
	if err == errConflict {
		return nil
	}
	return err
}

// forEach runs fn for 0 <= i < n, at most limit at a time, and returns the first error (the calls not
// started yet are skipped then).
func forEach(parent context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	sem := make(chan struct{}, limit)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = parent.Err()
	}
	return first
}
