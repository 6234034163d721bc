package storetest

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
)

// RunTransfers runs the downloads and uploads part of the suite.
func RunTransfers(t *testing.T, newStores func(t *testing.T) backup.Stores) {
	t.Run("archive round trip", func(t *testing.T) { testArchiveRoundTrip(t, newStores(t)) })
	t.Run("archives listed per snapshot", func(t *testing.T) { testArchivesPerSnapshot(t, newStores(t)) })
	t.Run("archives due for removal", func(t *testing.T) { testArchivesDue(t, newStores(t)) })
	t.Run("upload round trip", func(t *testing.T) { testUploadRoundTrip(t, newStores(t)) })
	t.Run("uploads due for removal", func(t *testing.T) { testUploadsDue(t, newStores(t)) })
}

// sampleArchive is an owner archive with every field set but URL (never stored).
func sampleArchive(ns, env, snap string, created time.Time) backup.Archive {
	id := uuid.NewString()
	return backup.Archive{ID: id, Namespace: ns, EnvironmentID: env, SnapshotID: snap, DataType: backup.DataDatabaseOnly,
		State: backup.ArchiveCompleted, StatusMessage: "it's \"quoted\" | é 𝄞 <b>&",
		Progress:  &backup.Progress{Phase: "preparing", BytesDone: 1<<53 + 1, FilesDone: 1<<31 + 2, FilesTotal: 1<<31 + 3},
		CreatedAt: created, UpdatedAt: created.Add(1500 * time.Millisecond), FinishedAt: created.Add(time.Minute + 9),
		CreatedBy: "u", OwnerID: id, FileName: "database-0a1b2c3d-202611010203.backup", BlobPath: ".downloads/x/attempt-01.backup",
		SizeBytes: 1<<53 + 7, SHA256: "ab", URLExpiresAt: created.Add(8*time.Hour + 5), OperationID: uuid.NewString(),
		Fence: 1<<53 + 3, KeepUntil: created.Add(9*time.Hour + 11), RemovedAt: created.Add(10*time.Hour + 13)}
}

func withoutURL(a backup.Archive) backup.Archive {
	a.URL = "-"
	return a
}

func testArchiveRoundTrip(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	want := sampleArchive("ns-a", uuid.NewString(), uuid.NewString(), time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC))
	requireEveryField(t, withoutURL(want))
	if err := s.Archives.CreateArchive(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := s.Archives.CreateArchive(ctx, want); err != nil {
		t.Fatalf("the same insert again: %v", err)
	}
	other := want
	other.State = backup.ArchiveFailed
	if err := s.Archives.CreateArchive(ctx, other); backup.CodeOf(err) != backup.CodeConflict {
		t.Fatalf("another record with the same id: got %v, want CONFLICT", err)
	}
	got, err := s.Archives.GetArchive(ctx, want.Namespace, want.EnvironmentID, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	next, wrote, err := s.Archives.UpdateArchive(ctx, want.Namespace, want.EnvironmentID, want.ID, func(a backup.Archive, ok bool) (backup.Archive, bool, error) {
		if !ok {
			t.Fatal("update: record not found")
		}
		a.KeepUntil = a.KeepUntil.Add(time.Hour)
		return a, true, nil
	})
	if err != nil || !wrote || !next.KeepUntil.Equal(want.KeepUntil.Add(time.Hour)) {
		t.Fatalf("update: %+v %v %v", next, wrote, err)
	}
	if _, err := s.Archives.GetArchive(ctx, want.Namespace, want.EnvironmentID, uuid.NewString()); backup.CodeOf(err) != backup.CodeNotFound {
		t.Fatalf("missing archive: got %v, want NOT_FOUND", err)
	}
}

func testArchivesPerSnapshot(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	env, snapA, snapB := uuid.NewString(), uuid.NewString(), uuid.NewString()
	at := time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC)
	var wantA []string
	for i := range 3 {
		a := sampleArchive("ns-a", env, snapA, at.Add(time.Duration(i)*time.Second))
		wantA = append(wantA, a.ID)
		if err := s.Archives.CreateArchive(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []backup.Archive{sampleArchive("ns-a", env, snapB, at), sampleArchive("ns-b", env, snapA, at), sampleArchive("ns-a", uuid.NewString(), snapA, at)} {
		if err := s.Archives.CreateArchive(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Archives.ListArchives(ctx, "ns-a", env, snapA)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range got {
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	slices.Sort(wantA)
	if !slices.Equal(ids, wantA) {
		t.Fatalf("archives of the snapshot: got %v, want %v", ids, wantA)
	}
	if none, err := s.Archives.ListArchives(ctx, "ns-a", env, uuid.NewString()); err != nil || len(none) != 0 {
		t.Fatalf("a snapshot without archives: %v %v", none, err)
	}
}

func testArchivesDue(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	cutoff := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	created := cutoff.Add(-24 * time.Hour)
	add := func(keep time.Time, change func(*backup.Archive)) backup.Archive {
		t.Helper()
		a := sampleArchive("ns-a", uuid.NewString(), uuid.NewString(), created)
		a.KeepUntil, a.RemovedAt = keep, time.Time{}
		if change != nil {
			change(&a)
		}
		if err := s.Archives.CreateArchive(ctx, a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	due := []string{
		add(cutoff.Add(-time.Nanosecond), nil).ID,
		add(cutoff.Add(-time.Hour), func(a *backup.Archive) { a.Namespace = "ns-b" }).ID,
		// A removal that began (RemovedAt) is due whatever KeepUntil says: it must be finished.
		add(cutoff.Add(time.Hour), func(a *backup.Archive) { a.RemovedAt = cutoff.Add(-time.Minute) }).ID,
	}
	add(cutoff, nil)                                                                      // not before the cutoff
	add(cutoff.Add(time.Hour), nil)                                                       // kept for a newer link
	add(cutoff.Add(-time.Hour), func(a *backup.Archive) { a.BlobPath = "" })              // removed already
	add(cutoff.Add(-time.Hour), func(a *backup.Archive) { a.OwnerID = uuid.NewString() }) // links to another's blob
	got, err := s.Archives.ListArchivesDue(ctx, cutoff, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range got {
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	slices.Sort(due)
	if !slices.Equal(ids, due) {
		t.Fatalf("due: got %v, want %v", ids, due)
	}
	if two, err := s.Archives.ListArchivesDue(ctx, cutoff, 2); err != nil || len(two) != 2 {
		t.Fatalf("limit 2: got %d, %v", len(two), err)
	}
}

func sampleUpload(ns, env string, created time.Time) backup.Upload {
	return backup.Upload{ID: uuid.NewString(), Namespace: ns, EnvironmentID: env, FileName: "mendix cloud é.tar.gz",
		BlobPath: ns + "/" + env + "/x.tar.gz", CreatedAt: created, UpdatedAt: created.Add(time.Second + 3),
		ExpiresAt: created.Add(24*time.Hour + 5), CreatedBy: "u", SnapshotID: uuid.NewString(), CompletedAt: created.Add(time.Hour + 7),
		SizeBytes: 1<<53 + 9, ETag: "\"0x8D\"", RemovedAt: created.Add(2*time.Hour + 11)}
}

func testUploadRoundTrip(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	want := sampleUpload("ns-a", uuid.NewString(), time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC))
	requireEveryField(t, want)
	if err := s.Uploads.CreateUpload(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Uploads.GetUpload(ctx, want.Namespace, want.EnvironmentID, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	// The conditional write that makes a second complete do nothing new.
	for i, expect := range []bool{true, false} {
		_, wrote, err := s.Uploads.UpdateUpload(ctx, want.Namespace, want.EnvironmentID, want.ID, func(u backup.Upload, ok bool) (backup.Upload, bool, error) {
			if !ok {
				t.Fatal("upload not found")
			}
			if u.ETag == "done" {
				return u, false, nil
			}
			u.ETag = "done"
			return u, true, nil
		})
		if err != nil || wrote != expect {
			t.Fatalf("update %d: wrote %v, want %v (%v)", i, wrote, expect, err)
		}
	}
	if _, err := s.Uploads.GetUpload(ctx, want.Namespace, want.EnvironmentID, uuid.NewString()); backup.CodeOf(err) != backup.CodeNotFound {
		t.Fatalf("missing upload: got %v, want NOT_FOUND", err)
	}
}

func testUploadsDue(t *testing.T, s backup.Stores) {
	ctx := context.Background()
	cutoff := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	add := func(change func(*backup.Upload)) string {
		t.Helper()
		u := sampleUpload("ns-a", uuid.NewString(), cutoff.AddDate(0, 0, -30))
		u.SnapshotID, u.CompletedAt, u.RemovedAt = "", time.Time{}, time.Time{}
		change(&u)
		if err := s.Uploads.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u.ID
	}
	due := []string{
		add(func(u *backup.Upload) { u.ExpiresAt = cutoff.Add(-time.Nanosecond) }), // never completed, link expired
		add(func(u *backup.Upload) { // completed, its job could not remove the blob, past the backstop
			u.ExpiresAt, u.SnapshotID, u.CompletedAt = cutoff.Add(-time.Hour), uuid.NewString(), cutoff.AddDate(0, 0, -8)
		}),
	}
	add(func(u *backup.Upload) { u.ExpiresAt = cutoff.Add(time.Hour) }) // link still valid
	add(func(u *backup.Upload) {                                        // completed recently: its job removes it
		u.ExpiresAt, u.SnapshotID, u.CompletedAt = cutoff.Add(-time.Hour), uuid.NewString(), cutoff.Add(-2*time.Hour)
	})
	add(func(u *backup.Upload) { u.ExpiresAt, u.RemovedAt = cutoff.Add(-time.Hour), cutoff.Add(-time.Minute) }) // removed
	got, err := s.Uploads.ListUploadsDue(ctx, cutoff, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range got {
		ids = append(ids, u.ID)
	}
	slices.Sort(ids)
	slices.Sort(due)
	if !slices.Equal(ids, due) {
		t.Fatalf("due: got %v, want %v", ids, due)
	}
}
