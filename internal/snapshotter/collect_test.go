package snapshotter

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/memstore"
)

// clock is a test's time, advanced by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// history makes four snapshots of an environment whose files change between them in every way that
// decides what the snapshots share: files rewritten with and without a Content-MD5, one written back to
// its earlier bytes (so the first and third snapshots share an object the second does not name), one
// rewritten with the same bytes and no MD5 (a new object of the same bytes), files deleted and added.
func history(t *testing.T, f *fixture) []taken {
	t.Helper()
	u := f.addFiles(t, 8, 1500)
	for _, v := range u[5:] {
		f.rewrite(t, v, f.content(2000), false)
	}
	var out []taken
	out = append(out, f.backup(t, nil))

	original := f.files[u[0]]
	f.rewrite(t, u[0], f.content(1500), true)
	f.rewrite(t, u[5], f.content(2000), false)
	f.removeFiles(t, u[2])
	added := f.addFiles(t, 2, 1800)
	out = append(out, f.backup(t, nil))

	f.rewrite(t, u[0], original, true)
	f.removeFiles(t, u[3])
	f.rewrite(t, added[0], f.content(900), true)
	f.addFiles(t, 1, 2200)
	out = append(out, f.backup(t, nil))

	f.rewrite(t, u[6], f.files[u[6]], false)
	f.removeFiles(t, u[0])
	f.addFiles(t, 1, 1200)
	out = append(out, f.backup(t, nil))

	if a, c := f.objects(t, out[0].sn.ManifestPath)[u[0]], f.objects(t, out[2].sn.ManifestPath)[u[0]]; a != c {
		t.Fatalf("the file written back to its bytes has object %s in the third snapshot, %s in the first: the test's premise does not hold", c, a)
	}
	return out
}

// TestDeletionsNeverBreakARemainingSnapshot: whatever the order in which snapshots are deleted (their
// blobs removed and their records deleted, or left marked as expiry does until the sweeper ends), the
// real collector, run after each deletion, deletes exactly the objects no remaining snapshot names, and
// every remaining snapshot still assembles into an archive with all its bytes. Once every snapshot is
// gone, the store is empty.
func TestDeletionsNeverBreakARemainingSnapshot(t *testing.T) {
	for _, order := range [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}, {2, 0, 3, 1}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			ctx := t.Context()
			f := newFixture(t)
			clk := &clock{now: time.Now().UTC()}
			f.snap.Now = clk.Now
			snaps := history(t, f)
			records := memstore.New()
			for _, tk := range snaps {
				if err := records.CreateSnapshot(ctx, tk.sn); err != nil {
					t.Fatal(err)
				}
			}
			svc := backup.NewService(backup.Deps{Stores: records.Stores(), Archives: f.blobs, FileStore: f.blobs, Manifests: f.blobs,
				Layout: layout, Now: clk.Now, Log: zerolog.Nop(), CollectorGrace: backup.DefaultCollectorGrace})
			collect := func(t *testing.T) backup.CollectReport {
				t.Helper()
				clk.advance(backup.DefaultCollectorGrace + backup.CollectorLease + backup.CollectorClockSkew + time.Minute)
				rep, err := svc.CollectFiles(ctx, f.env.Namespace, f.env.ID, zerolog.Nop())
				if err != nil {
					t.Fatalf("collect: %v", err)
				}
				if rep.Busy || rep.Left != 0 || rep.Young != 0 {
					t.Errorf("collector report %+v", rep)
				}
				return rep
			}
			// named is what the remaining snapshots' manifests name.
			named := func(live []taken) []string {
				set := map[string]bool{}
				for _, tk := range live {
					for _, o := range f.objects(t, tk.sn.ManifestPath) {
						set[o] = true
					}
				}
				return slices.Sorted(maps.Keys(set))
			}

			live := slices.Clone(snaps)
			if rep := collect(t); rep.Deleted != 0 {
				t.Fatalf("the collector deleted %d objects that live snapshots name", rep.Deleted)
			}
			before := f.storeObjects(t)
			if !slices.Equal(before, named(live)) {
				t.Fatalf("the store holds %v, the snapshots name %v", before, named(live))
			}
			for i, k := range order {
				tk := snaps[k]
				live = slices.DeleteFunc(live, func(x taken) bool { return x.sn.ID == tk.sn.ID })
				f.deleteSnapshot(t, records, tk, i%2 == 0)
				want := named(live)
				rep := collect(t)
				got := f.storeObjects(t)
				if !slices.Equal(got, want) {
					t.Errorf("after deleting snapshot %d, the store holds %d objects, the remaining snapshots name %d:\n%v\n%v", k, len(got), len(want), got, want)
				}
				if rep.Deleted != len(before)-len(want) || rep.Referenced != len(want) {
					t.Errorf("after deleting snapshot %d: %+v, want %d deleted and %d referenced", k, rep, len(before)-len(want), len(want))
				}
				before = got
				for _, r := range live {
					f.assemble(t, nil, r)
				}
			}
			collect(t)
			collect(t)
			if got := f.storeObjects(t); len(got) != 0 {
				t.Errorf("with every snapshot deleted the store still holds %v", got)
			}
		})
	}
}

// deleteSnapshot deletes a snapshot as the service does: its record is marked, its blobs deleted, and
// then, when dropRecord, its record deleted (a marked record is what expiry leaves until the sweeper
// finishes).
func (f *fixture) deleteSnapshot(t *testing.T, records *memstore.Store, tk taken, dropRecord bool) {
	t.Helper()
	ctx := t.Context()
	_, _, err := records.UpdateSnapshot(ctx, tk.sn.Namespace, tk.sn.EnvironmentID, tk.sn.ID, func(sn backup.Snapshot, ok bool) (backup.Snapshot, bool, error) {
		sn.DeletedAt = time.Now().UTC()
		return sn, ok, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tk.sn.Blobs() {
		if err := f.blobs.DeleteBlob(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if dropRecord {
		if err := records.DeleteSnapshot(ctx, tk.sn.Namespace, tk.sn.EnvironmentID, tk.sn.ID); err != nil {
			t.Fatal(err)
		}
	}
}
