package tablestore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
	"github.com/mxazure/backups/internal/storetest"
)

// writeBatch adds entities to table tbl in transactions of 100 of one partition: far fewer requests
// than one write each, and nothing of the store's own bookkeeping (no index entries).
func writeBatch(t *testing.T, s *Store, tbl string, entities ...keyed) {
	t.Helper()
	byPartition := map[string][]aztables.TransactionAction{}
	var order []string
	for _, v := range entities {
		b, err := encodeEntity(tbl, v)
		if err != nil {
			t.Fatal(err)
		}
		pk, _ := v.keys()
		if _, ok := byPartition[pk]; !ok {
			order = append(order, pk)
		}
		byPartition[pk] = append(byPartition[pk], aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: b})
	}
	for _, pk := range order {
		for chunk := range slices.Chunk(byPartition[pk], 100) {
			if _, err := s.table(tbl).SubmitTransaction(context.Background(), chunk, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func snapshotAt(ns, env string, expires time.Time) backup.Snapshot {
	return backup.Snapshot{ID: uuid.NewString(), Namespace: ns, EnvironmentID: env, Status: backup.SnapshotFinished,
		Kind: backup.KindNightly, CreatedAt: expires.AddDate(0, 0, -14), ExpiresAt: expires, AutomaticDay: "2026-11-01"}
}

// expiryRows returns the RowKeys of the expiry partition.
func expiryRows(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := query[indexEntity](context.Background(), s.table(tableSnapshotExpiry), "PartitionKey eq 'expiry'", 0, "expiry index")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.RowKey)
	}
	return keys
}

// TestWalkEnvironmentsPages: the schedule walks every environment (10,000 of them in production) at
// Azure's page size of 1,000: 1,200 environments come in order over 2 pages, and a walk resumed in the
// first namespace reads the rest of it, then the 1,100 of the later ones over 2 pages.
func TestWalkEnvironmentsPages(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	var envs []keyed
	var want []string
	for i := range 1200 {
		ns := []string{"ns-b", "ns-c"}[i%2]
		if i < 100 {
			ns = "ns-a"
		}
		e := backup.Environment{ID: uuid.NewString(), Namespace: ns, Name: fmt.Sprint(i), State: backup.StateRunning}
		envs = append(envs, environmentFromDomain(e))
		want = append(want, backup.EnvironmentKey(ns, e.ID))
	}
	slices.Sort(want) // the namespaces are of one length: text order is (namespace, id) order here
	writeBatch(t, s, tableEnvironments, envs...)
	rec.take()
	walked := func(after string) []string {
		var got []string
		err := s.WalkEnvironments(context.Background(), after, func(e backup.Environment) (bool, error) {
			got = append(got, backup.EnvironmentKey(e.Namespace, e.ID))
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := walked(""); !slices.Equal(got, want) {
		t.Errorf("walk: %d environments, want %d in key order", len(got), len(want))
	}
	if q := count(s, rec.take(), tableEnvironments)["query"]; q != 2 {
		t.Errorf("walk: %d pages, want 2 of at most 1,000", q)
	}
	if got := walked(want[50]); !slices.Equal(got, want[51:]) {
		t.Errorf("walk after the 51st: %d environments, want %d in key order", len(got), len(want)-51)
	}
	if q := count(s, rec.take(), tableEnvironments)["query"]; q != 3 {
		t.Errorf("walk after the 51st: %d pages, want 3 (the rest of ns-a, then 2 pages)", q)
	}
}

// TestSnapshotsDueDropsStaleEntries: entries a crash or an update left are not listed, and are removed
// once older than a minute: an entry without its snapshot, and an entry of a time the snapshot no longer
// has. Younger ones stay (the snapshot's insert or update may be on its way).
func TestSnapshotsDueDropsStaleEntries(t *testing.T) {
	az := azurite.ForTest(t)
	s := newStore(t, az)
	ctx := context.Background()
	cutoff := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	sn := snapshotAt("ns", "env", cutoff.Add(-time.Hour))
	if err := s.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	old, young := time.Now().Add(-2*time.Minute), time.Now()
	orphanOld := expiryKey("ns", "env", uuid.NewString(), cutoff.Add(-3*time.Hour))
	orphanYoung := expiryKey("ns", "env", uuid.NewString(), cutoff.Add(-3*time.Hour))
	movedOld := expiryKey("ns", "env", sn.ID, cutoff.Add(-2*time.Hour))
	movedYoung := expiryKey("ns", "env", sn.ID, cutoff.Add(-4*time.Hour))
	for _, e := range []indexEntity{
		{PartitionKey: expiryPartition, RowKey: orphanOld, IndexedAt: old},
		{PartitionKey: expiryPartition, RowKey: orphanYoung, IndexedAt: young},
		{PartitionKey: expiryPartition, RowKey: movedOld, IndexedAt: old},
		{PartitionKey: expiryPartition, RowKey: movedYoung, IndexedAt: young},
	} {
		if err := upsert(ctx, s.table(tableSnapshotExpiry), &e); err != nil {
			t.Fatal(err)
		}
	}
	due, err := storetest.DueSnapshots(ctx, s, cutoff, 10)
	if err != nil || len(due) != 1 || due[0].ID != sn.ID {
		t.Fatalf("due: %+v, %v; want only %s, once", due, err, sn.ID)
	}
	want := []string{expiryKey("ns", "env", sn.ID, sn.ExpiresAt), orphanYoung, movedYoung}
	slices.Sort(want)
	if got := expiryRows(t, s); !slices.Equal(got, want) {
		t.Errorf("index after listing:\n got %q\nwant %q", got, want)
	}
}

// TestSnapshotsDueBackfill: snapshots written before the index existed have no entry; the first listing
// gives every one with an ExpiresAt its entry (250 here: several transactions) and lists the due ones,
// then marks the backfill done, so later listings read the index only. Deleting the marker runs it
// again.
func TestSnapshotsDueBackfill(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	cutoff := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	var records []keyed
	var due []string
	for i := range 250 {
		sn := snapshotAt("ns", fmt.Sprintf("env-%d", i%5), cutoff.Add(time.Duration(i-200)*time.Minute))
		if i < 200 {
			due = append(due, sn.ID)
		}
		records = append(records, snapshotFromDomain(sn))
	}
	never := snapshotAt("ns", "env-0", time.Time{})
	records = append(records, snapshotFromDomain(never))
	writeBatch(t, s, tableSnapshots, records...)
	if rows := expiryRows(t, s); len(rows) != 0 {
		t.Fatalf("index before the backfill: %d entries", len(rows))
	}
	rec.take()

	list := func(before time.Time) []string {
		t.Helper()
		got, err := storetest.DueSnapshots(ctx, s, before, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, sn := range got {
			ids = append(ids, sn.ID)
		}
		return ids
	}
	if got := list(cutoff); !slices.Equal(got, due) {
		t.Errorf("first listing: %d snapshots, want the %d due, earliest first", len(got), len(due))
	}
	if snaps := count(s, rec.take(), tableSnapshots); snaps["query"] != 1 {
		t.Errorf("first listing: Snapshots table %v, want one scan", snaps)
	}
	if rows := expiryRows(t, s); len(rows) != 250 {
		t.Errorf("index after the backfill: %d entries, want 250 (none for the snapshot without ExpiresAt)", len(rows))
	}

	late := snapshotAt("ns", "env-0", cutoff.Add(-time.Hour))
	if err := insert(ctx, s.table(tableSnapshots), snapshotFromDomain(late)); err != nil { // as an older version wrote it
		t.Fatal(err)
	}
	rec.take()
	if got := list(cutoff); !slices.Equal(got, due) {
		t.Errorf("second listing: %d snapshots, want the %d of the index", len(got), len(due))
	}
	if snaps := count(s, rec.take(), tableSnapshots); snaps["query"] != 0 || snaps["point read"] != len(due) {
		t.Errorf("second listing: Snapshots table %v, want a point read per snapshot due and no scan", snaps)
	}
	if err := remove(ctx, s.table(tableSnapshotExpiry), metaPartition, backfilledRow, ""); err != nil {
		t.Fatal(err)
	}
	if got := list(cutoff); len(got) != len(due)+1 || !slices.Contains(got, late.ID) {
		t.Errorf("after the marker's deletion: %d snapshots, want %d with the one written without entry", len(got), len(due)+1)
	}
}

// TestSnapshotsDueDoesNotScan: the expiry runs over 10,000 environments of about 40 snapshots each.
// With 300 snapshots not due and 3 due, a listing reads the marker, one page of the index, and the 3
// snapshots by point reads: no query of the Snapshots table.
func TestSnapshotsDueDoesNotScan(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	if _, err := storetest.DueSnapshots(ctx, s, time.Now(), 1); err != nil { // the backfill of the empty table
		t.Fatal(err)
	}
	cutoff := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	var records, entries []keyed
	var want []string
	for i := range 303 {
		expires := cutoff.Add(time.Duration(i+1) * time.Hour)
		if i >= 300 {
			expires = cutoff.Add(-time.Duration(303-i) * time.Hour)
		}
		sn := snapshotAt("ns", fmt.Sprintf("env-%d", i%10), expires)
		if i >= 300 {
			want = append(want, sn.ID)
		}
		records = append(records, snapshotFromDomain(sn))
		entries = append(entries, &indexEntity{PartitionKey: expiryPartition, RowKey: expiryKey(sn.Namespace, sn.EnvironmentID, sn.ID, expires), IndexedAt: time.Now()})
	}
	writeBatch(t, s, tableSnapshots, records...)
	writeBatch(t, s, tableSnapshotExpiry, entries...)
	rec.take()
	got, err := storetest.DueSnapshots(ctx, s, cutoff, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sn := range got {
		ids = append(ids, sn.ID)
	}
	if !slices.Equal(ids, want) {
		t.Errorf("due: %q, want %q", ids, want)
	}
	reqs := rec.take()
	snaps, index := count(s, reqs, tableSnapshots), count(s, reqs, tableSnapshotExpiry)
	if snaps["query"] != 0 || snaps["point read"] != 3 || snaps["write"] != 0 || index["query"] != 1 || index["point read"] != 1 || index["write"] != 0 || len(reqs) != 5 {
		t.Errorf("listing: %d requests: Snapshots %v, SnapshotExpiry %v; want 3 point reads of snapshots, the marker and one index page", len(reqs), snaps, index)
	}
}

// TestExpiryKeySortsAsText: Azure compares RowKeys as text, so the index's range query is right only if
// text order is time order: across years, fractions and whole seconds, time zones; and "RowKey lt
// formatTime(before)" must leave out an entry of before itself (strictly before).
func TestExpiryKeySortsAsText(t *testing.T) {
	times := []time.Time{
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 1, 1, 30, 0, 0, time.FixedZone("CET", 3600)), // 00:30 UTC
		time.Date(2026, 11, 1, 0, 59, 59, 500000000, time.UTC),
		time.Date(2026, 11, 1, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 1, 1, 0, 0, 1, time.UTC),
		time.Date(2026, 11, 1, 1, 0, 0, 10, time.UTC),
		time.Date(2026, 11, 1, 1, 0, 1, 0, time.UTC),
		time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var keys []string
	for i, at := range times {
		keys = append(keys, expiryKey(fmt.Sprintf("ns-%d", len(times)-i), "env", "id", at)) // ids against time
	}
	if !slices.IsSorted(keys) {
		t.Fatalf("keys in time order do not sort as text:\n%s", strings.Join(keys, "\n"))
	}
	az := azurite.ForTest(t)
	s := newStore(t, az)
	ctx := context.Background()
	shuffled := slices.Clone(keys)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, k := range shuffled {
		if err := upsert(ctx, s.table(tableSnapshotExpiry), &indexEntity{PartitionKey: expiryPartition, RowKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	for i, before := range times {
		filter := "PartitionKey eq 'expiry' and RowKey lt " + odataString(formatTime(before))
		got, err := query[indexEntity](ctx, s.table(tableSnapshotExpiry), filter, 0, "expiry index")
		if err != nil {
			t.Fatal(err)
		}
		var rows []string
		for _, e := range got {
			rows = append(rows, e.RowKey)
		}
		if !slices.Equal(rows, keys[:i]) {
			t.Errorf("before %v:\n got %q\nwant %q", before, rows, keys[:i])
		}
	}
}

// TestExpiryIndexWriteOrder: the order that keeps the index a superset of the snapshots with an
// ExpiresAt whatever crashes: the entry before the record on creation and on a change of ExpiresAt (and
// no index write when it stays); on deletion the record, then its entry, both read first.
func TestExpiryIndexWriteOrder(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	sn := snapshotAt("ns", "env", time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC))
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"create", func() error { return s.CreateSnapshot(ctx, sn) },
			[]string{"PUT SnapshotExpiry", "POST Snapshots"}},
		{"update, same ExpiresAt", func() error { return setSnapshot(ctx, s, sn, func(x *backup.Snapshot) { x.Comment = "c" }) },
			[]string{"GET Snapshots", "PUT Snapshots"}},
		{"update, new ExpiresAt", func() error {
			return setSnapshot(ctx, s, sn, func(x *backup.Snapshot) { x.ExpiresAt = x.ExpiresAt.Add(time.Hour) })
		}, []string{"GET Snapshots", "PUT SnapshotExpiry", "PUT Snapshots"}},
		{"delete", func() error { return s.DeleteSnapshot(ctx, sn.Namespace, sn.EnvironmentID, sn.ID) },
			[]string{"GET Snapshots", "GET SnapshotExpiry", "DELETE Snapshots", "DELETE SnapshotExpiry"}},
		{"delete again", func() error { return s.DeleteSnapshot(ctx, sn.Namespace, sn.EnvironmentID, sn.ID) },
			[]string{"GET Snapshots"}},
	}
	rec.take()
	for _, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		var got []string
		for _, r := range rec.take() {
			got = append(got, r.Method+" "+strings.TrimPrefix(r.Table, s.prefix))
		}
		if !slices.Equal(got, step.want) {
			t.Errorf("%s: requests\n got %q\nwant %q", step.name, got, step.want)
		}
	}
	// Left: the stale entry of the first ExpiresAt, which a listing drops once it is a minute old.
	if rows := expiryRows(t, s); !slices.Equal(rows, []string{expiryKey("ns", "env", sn.ID, sn.ExpiresAt)}) {
		t.Errorf("index after the deletion: %q, want only the stale entry of the first ExpiresAt", rows)
	}
}

func setSnapshot(ctx context.Context, s *Store, sn backup.Snapshot, change func(*backup.Snapshot)) error {
	_, _, err := s.UpdateSnapshot(ctx, sn.Namespace, sn.EnvironmentID, sn.ID, func(cur backup.Snapshot, _ bool) (backup.Snapshot, bool, error) {
		change(&cur)
		return cur, true, nil
	})
	return err
}
