package tablestore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// TestListActiveOperationsDoesNotScan: recovery runs every 5 minutes over a table that keeps every
// operation until it is pruned. With 1,000 settled operations and 3 unsettled ones, listing must read
// the index's active partition and make exactly 3 point reads of operations: no query of the Operations
// table (the filter on Phase it used to run reads every entity of every partition).
func TestListActiveOperationsDoesNotScan(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	ended := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	const settled = 1000
	start := time.Now()
	writeSettled(t, s, settled, ended)
	t.Logf("%d settled operations written in %v (%d requests)", settled, time.Since(start).Round(time.Millisecond), len(rec.take()))
	var want []string
	for _, phase := range []backup.OperationPhase{backup.OpQueued, backup.OpRunning, backup.OpFailed} { // the last ended, unsettled
		op := sampleOp("env-1", phase)
		if err := s.CreateOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
		want = append(want, op.ID)
	}
	slices.Sort(want)
	rec.take()

	active, err := s.ListActiveOperations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range active {
		got = append(got, op.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("active: got %v, want %v", got, want)
	}
	reqs := rec.take()
	ops, index := count(s, reqs, tableOperations), count(s, reqs, tableOperationIndex)
	t.Logf("listing: %d requests: Operations %v, OperationIndex %v", len(reqs), ops, index)
	if ops["query"] != 0 || ops["point read"] != 3 || ops["write"] != 0 {
		t.Errorf("Operations table: %v, want 3 point reads and nothing else", ops)
	}
	if index["query"] != 1 || index["write"] != 0 || len(reqs) != 4 {
		t.Errorf("OperationIndex: %v of %d requests, want one page of the active partition", index, len(reqs))
	}
	if all, err := query[operationEntity](ctx, s.table(tableOperations), "", 0, "operations"); err != nil || len(all) != settled+3 {
		t.Errorf("the Operations table holds %d entities (%v), want %d", len(all), err, settled+3)
	}
}

// writeSettled writes n settled operations (over 10 environments) and their ended index entries as
// CreateOperation and UpdateOperation leave them, in transactions of 100 entities: far fewer requests
// than n creations.
func writeSettled(t *testing.T, s *Store, n int, finished time.Time) {
	t.Helper()
	ctx := context.Background()
	batches := map[string][]aztables.TransactionAction{}
	add := func(tbl string, v keyed) {
		b, err := encodeEntity(tbl, v)
		if err != nil {
			t.Fatal(err)
		}
		pk, _ := v.keys()
		batches[tbl+"/"+pk] = append(batches[tbl+"/"+pk], aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: b})
	}
	for i := 0; i < n; i++ {
		op := sampleOp(fmt.Sprintf("env-%d", i%10), backup.OpSucceeded)
		op.Settled, op.FinishedAt = true, finished
		add(tableOperations, operationFromDomain(op))
		pk, rk := endedKeys(op)
		add(tableOperationIndex, &indexEntity{PartitionKey: pk, RowKey: rk})
	}
	for key, actions := range batches {
		tbl, _, _ := strings.Cut(key, "/")
		for chunk := range slices.Chunk(actions, 100) {
			if _, err := s.table(tbl).SubmitTransaction(ctx, chunk, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func sampleOp(env string, phase backup.OperationPhase) backup.Operation {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	op := backup.Operation{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: env, Kind: backup.OpBackup,
		SubjectID: uuid.NewString(), Phase: phase, CreatedAt: now, UpdatedAt: now}
	if phase.Done() {
		op.FinishedAt = now
	}
	return op
}

// TestIndexRepairs: what a crash leaves in the index is repaired and never listed. An active entry
// without its operation (a crash between the index write and the operation write of CreateOperation)
// is dropped once older than a minute, and kept while younger (the operation may be on its way); an
// active entry of a settled operation (a crash between the settling write and the index move) is moved
// to its ended day, where pruning finds the operation; an ended entry whose operation is gone is dropped
// by pruning without being counted.
func TestIndexRepairs(t *testing.T) {
	az := azurite.ForTest(t)
	s := newStore(t, az)
	ctx := context.Background()
	idx := s.table(tableOperationIndex)
	orphanOld := indexKey("ns", "env", uuid.NewString())
	orphanNew := indexKey("ns", "env", uuid.NewString())
	gone := sampleOp("env", backup.OpSucceeded) // pruned, but a crash left its ended entry
	gone.FinishedAt = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	_, goneKey := endedKeys(gone)
	for _, e := range []indexEntity{
		{PartitionKey: activePartition, RowKey: orphanOld, IndexedAt: time.Now().Add(-2 * time.Minute)},
		{PartitionKey: activePartition, RowKey: orphanNew, IndexedAt: time.Now()},
		{PartitionKey: endedPartition(gone.FinishedAt), RowKey: goneKey},
	} {
		if err := upsert(ctx, idx, &e); err != nil {
			t.Fatal(err)
		}
	}
	running := sampleOp("env", backup.OpRunning)
	settled := sampleOp("env", backup.OpSucceeded)
	settled.Settled = true
	for _, op := range []backup.Operation{running, settled} {
		if err := s.CreateOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	// The crash after the settling write: the active entry is still there.
	if err := s.indexActive(ctx, "ns", "env", settled.ID); err != nil {
		t.Fatal(err)
	}

	active, err := s.ListActiveOperations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || active[0].ID != running.ID {
		t.Errorf("active: got %+v, want only the running operation", active)
	}
	entries, err := query[indexEntity](ctx, idx, "PartitionKey eq 'active'", 0, "index")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.RowKey)
	}
	want := []string{indexKey("ns", "env", running.ID), orphanNew}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("active partition after listing: %v, want the running operation's entry and the young orphan", keys)
	}
	var moved indexEntity
	pk, rk := endedKeys(settled)
	if _, found, err := get(ctx, idx, pk, rk, &moved); err != nil || !found {
		t.Errorf("the settled operation's entry was not moved to its ended day (%s/%s): found %v, %v", pk, rk, found, err)
	}

	n, err := s.PruneOperations(ctx, settled.FinishedAt.AddDate(0, 0, 1), 10)
	if err != nil || n != 1 {
		t.Errorf("prune: %d, %v; want the settled operation only", n, err)
	}
	if _, err := s.GetOperation(ctx, "ns", "env", settled.ID); backup.CodeOf(err) != backup.CodeNotFound {
		t.Errorf("settled operation after pruning: %v", err)
	}
	left, err := query[indexEntity](ctx, idx, "PartitionKey ge 'ended-'", 0, "index")
	if err != nil || len(left) != 0 {
		t.Errorf("ended entries after pruning: %+v, %v; want none", left, err)
	}
}

// TestPruneReadsOnlyWhatItDeletes: recovery prunes every run (every 5 minutes) with a cutoff that moves
// through a day of ended operations. Pruning must read only the entries that ended before the cutoff,
// not the rest of the cutoff's day: with 500 operations that ended on that day after the cutoff and 2
// before it, one run reads one page of the index, 2 operations, and deletes 2 operations and 2 entries.
func TestPruneReadsOnlyWhatItDeletes(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	cutoff := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	writeSettled(t, s, 500, cutoff.Add(time.Hour))
	writeSettled(t, s, 2, cutoff.Add(-time.Nanosecond))
	rec.take()
	n, err := s.PruneOperations(ctx, cutoff, 1000)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d, %v; want 2", n, err)
	}
	reqs := rec.take()
	ops, index := count(s, reqs, tableOperations), count(s, reqs, tableOperationIndex)
	t.Logf("pruning: %d requests: Operations %v, OperationIndex %v", len(reqs), ops, index)
	if ops["point read"] != 2 || ops["write"] != 2 || ops["query"] != 0 || index["query"] != 1 || index["write"] != 2 || len(reqs) != 7 {
		t.Errorf("Operations %v, OperationIndex %v: want 2 reads and 2 deletes of operations, one index page and 2 index deletes", ops, index)
	}
	start := time.Now()
	if n, err := s.PruneOperations(ctx, cutoff.Add(time.Hour+time.Nanosecond), 1000); err != nil || n != 500 {
		t.Errorf("with the cutoff past the rest: pruned %d, %v; want 500", n, err)
	}
	t.Logf("pruning 500 operations: %v, %d requests", time.Since(start).Round(time.Millisecond), len(rec.take()))
}

// TestIndexWriteOrder: the order that keeps the active partition a superset of the unsettled operations
// whatever crashes: the active entry before the operation on creation; on settling, the operation, then
// the ended entry, then the active entry's deletion.
func TestIndexWriteOrder(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	op := sampleOp("env", backup.OpQueued)
	rec.take()
	if err := s.CreateOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.UpdateOperation(ctx, "ns", "env", op.ID, func(o backup.Operation, _ bool) (backup.Operation, bool, error) {
		o.Phase, o.FinishedAt, o.Settled = backup.OpSucceeded, time.Now(), true
		return o, true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rec.take() {
		got = append(got, r.Method+" "+strings.TrimPrefix(r.Table, s.prefix))
	}
	want := []string{
		"PUT OperationIndex",    // active entry (insert or replace)
		"POST Operations",       // the operation
		"GET Operations",        // UpdateOperation reads
		"PUT Operations",        // and writes it settled
		"PUT OperationIndex",    // ended entry
		"DELETE OperationIndex", // active entry
	}
	if !slices.Equal(got, want) {
		t.Errorf("requests:\n got %q\nwant %q", got, want)
	}
}
