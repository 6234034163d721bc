package backup_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

// fakeDownloads makes download blobs in fakeBlobs.
type fakeDownloads struct {
	mu    sync.Mutex
	calls []backup.DownloadRequest
	errs  []error
	blobs *fakeBlobs
}

func (d *fakeDownloads) MakeDownload(_ context.Context, req backup.DownloadRequest) (backup.DownloadResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, req)
	if len(d.errs) > 0 {
		err := d.errs[0]
		d.errs = d.errs[1:]
		if err != nil {
			return backup.DownloadResult{}, err
		}
	}
	req.Progress(backup.Progress{Phase: "assembling", BytesDone: 5})
	d.blobs.put(req.Path)
	return backup.DownloadResult{SizeBytes: 4321, SHA256: "sha-of-" + req.Path}, nil
}

// fakeIngester stores an upload as a snapshot's parts, or refuses it.
type fakeIngester struct {
	mu    sync.Mutex
	calls []backup.IngestRequest
	err   error
	blobs *fakeBlobs
}

func (g *fakeIngester) Ingest(_ context.Context, req backup.IngestRequest) (backup.IngestResult, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, req)
	if g.err != nil {
		return backup.IngestResult{}, g.err
	}
	g.blobs.put(req.DumpPath)
	g.blobs.put(req.ManifestPath)
	return backup.IngestResult{SnapshotResult: backup.SnapshotResult{SizeBytes: 999, SHA256: "sha-of-" + req.DumpPath, FilesCount: 2,
		DumpSizeBytes: 900, FilesBytes: 99}, ModelVersion: "1.0.0.7", ArchiveBytes: 500, ArchiveSHA256: "archive-sha"}, nil
}

// fakeTransferBlobs mints fake links and keeps upload blobs.
type fakeTransferBlobs struct {
	mu      sync.Mutex
	uploads map[string]backup.UploadBlob
	links   []string
}

func (b *fakeTransferBlobs) DownloadLink(_ context.Context, path, fileName string, until time.Time) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := fmt.Sprintf("https://blobs/%s?se=%s&rscd=%s", path, until.UTC().Format(time.RFC3339), fileName)
	b.links = append(b.links, u)
	return u, nil
}

func (b *fakeTransferBlobs) UploadLink(_ context.Context, path string, until time.Time) (string, error) {
	return "https://uploads/" + path + "?sp=cw&se=" + until.UTC().Format(time.RFC3339), nil
}

func (b *fakeTransferBlobs) UploadProperties(_ context.Context, path string) (backup.UploadBlob, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.uploads[path], nil
}

func (b *fakeTransferBlobs) DeleteUpload(_ context.Context, path string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.uploads, path)
	return nil
}

func (b *fakeTransferBlobs) upload(path string, size int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.uploads[path] = backup.UploadBlob{Found: true, Size: size, ETag: fmt.Sprintf("etag-%d", size)}
}

type transferFixture struct {
	*jobFixture
	downloads *fakeDownloads
	ingester  *fakeIngester
	tb        *fakeTransferBlobs
}

// newTransferFixture has a Finished snapshot of envID.
func newTransferFixture(t *testing.T) (*transferFixture, backup.Snapshot) {
	t.Helper()
	f := &transferFixture{jobFixture: newJobFixture(t), tb: &fakeTransferBlobs{uploads: map[string]backup.UploadBlob{}}}
	f.downloads = &fakeDownloads{blobs: f.blobs}
	f.ingester = &fakeIngester{blobs: f.blobs}
	f.svc = backup.NewService(backup.Deps{Stores: f.st.Stores(), Publisher: f.pub, Snapshotter: f.snap, Archives: f.blobs,
		Layout: layout{}, Now: func() time.Time { return f.now }, Log: zerolog.Nop(),
		Downloads: f.downloads, Ingester: f.ingester, Links: f.tb, Uploads: f.tb, UploadMaxBytes: 1 << 20})
	snap := f.create(t)
	f.deliverAll(t)
	f.pub.take(backup.TopicBackupEvents)
	return f, f.snapshot(t, snap.ID)
}

func (f *transferFixture) deliverAll(t *testing.T) {
	t.Helper()
	for _, err := range f.deliver(t) {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (f *transferFixture) archive(t *testing.T, snap backup.Snapshot, id string) backup.Archive {
	t.Helper()
	a, err := f.svc.Archive(context.Background(), f.user, "ns-a", envID, snap.ID, id)
	if err != nil {
		t.Fatalf("Archive: %v", err)
	}
	return a
}

func (f *transferFixture) ask(t *testing.T, snap backup.Snapshot, dt backup.ArchiveDataType) backup.Archive {
	t.Helper()
	a, err := f.svc.CreateArchive(context.Background(), f.user, "ns-a", envID, snap.ID, dt)
	if err != nil {
		t.Fatalf("CreateArchive: %v", err)
	}
	return a
}

func TestDownloadIsMadeOnceAndReusedWhileALinkIsValid(t *testing.T) {
	f, snap := newTransferFixture(t)
	ctx := context.Background()
	first := f.ask(t, snap, backup.DataFilesAndDatabase)
	if first.State != backup.ArchiveQueued || first.URL != "" || !first.Owner() {
		t.Fatalf("first request: %+v", first)
	}
	if want := backup.DownloadFileName(snap, backup.DataFilesAndDatabase); first.FileName != want ||
		!strings.HasPrefix(want, "files_and_database-") || !strings.HasSuffix(want, "-"+snap.CreatedAt.UTC().Format("200601021504")+".tar.gz") {
		t.Errorf("file name %q, want %q in the Mendix form", first.FileName, want)
	}
	// While it is being made the snapshot cannot be deleted, and a second request joins the job.
	if err := f.svc.DeleteSnapshot(ctx, f.user, "ns-a", envID, snap.ID); backup.CodeOf(err) != backup.CodeSnapshotInUse {
		t.Errorf("delete while the download is prepared: got %v, want SNAPSHOT_IN_USE", err)
	}
	joined := f.ask(t, snap, backup.DataFilesAndDatabase)
	if joined.Owner() || joined.OwnerID != first.ID || joined.Ended() {
		t.Fatalf("second request while the first runs: %+v", joined)
	}
	f.deliverAll(t)
	if len(f.downloads.calls) != 1 {
		t.Fatalf("the archive was made %d times, want once", len(f.downloads.calls))
	}
	done := f.archive(t, snap, first.ID)
	if done.State != backup.ArchiveCompleted || done.URL == "" || done.SizeBytes != 4321 || !done.URLExpiresAt.Equal(f.now.Add(8*time.Hour)) {
		t.Fatalf("completed: %+v", done)
	}
	if j := f.archive(t, snap, joined.ID); j.State != backup.ArchiveCompleted || j.URL != done.URL || j.BlobPath != done.BlobPath {
		t.Fatalf("the joined request: %+v, want the owner's link", j)
	}
	// Two hours later a new request reuses the blob at once, with a link of its own, and keeps the blob longer.
	f.now = f.now.Add(2 * time.Hour)
	reused := f.ask(t, snap, backup.DataFilesAndDatabase)
	if reused.State != backup.ArchiveCompleted || reused.URL == "" || !reused.URLExpiresAt.Equal(f.now.Add(8*time.Hour)) || len(f.downloads.calls) != 1 {
		t.Fatalf("reuse: %+v (made %d times)", reused, len(f.downloads.calls))
	}
	// Another data type is another archive.
	db := f.ask(t, snap, backup.DataDatabaseOnly)
	if db.State != backup.ArchiveQueued || !strings.HasPrefix(db.FileName, "database-") || !strings.HasSuffix(db.FileName, ".backup") {
		t.Fatalf("database only: %+v", db)
	}
	f.deliverAll(t)
	list, err := f.svc.ListArchives(ctx, f.user, "ns-a", envID, snap.ID)
	if err != nil || len(list) != 4 || list[0].ID != db.ID || list[3].ID != first.ID {
		t.Fatalf("list: %d archives, %v", len(list), err)
	}
	// The removal timer keeps the blob while any link is valid and removes it after the last one.
	f.now = f.now.Add(7 * time.Hour) // the first link expired, the reused one not
	if err := f.svc.RemoveExpiredTransfers(ctx); err != nil {
		t.Fatal(err)
	}
	if !f.blobs.has(done.BlobPath) {
		t.Fatal("the blob was removed while a link to it was valid")
	}
	f.now = f.now.Add(2 * time.Hour)
	if err := f.svc.RemoveExpiredTransfers(ctx); err != nil {
		t.Fatal(err)
	}
	if f.blobs.has(done.BlobPath) {
		t.Fatal("the blob outlived its last link")
	}
	if a := f.archive(t, snap, reused.ID); a.URL != "" {
		t.Errorf("an expired archive still has a link: %+v", a)
	}
	// A new request after that makes the archive again.
	again := f.ask(t, snap, backup.DataFilesAndDatabase)
	if again.State != backup.ArchiveQueued || !again.Owner() {
		t.Fatalf("request after removal: %+v", again)
	}
	acts, _, _ := f.st.ListActivity(ctx, "ns-a", envID, 0, 100)
	var downloads []string
	for _, a := range acts {
		if a.Action == backup.ActionDownload {
			downloads = append(downloads, string(a.Status))
		}
	}
	if strings.Join(downloads, " ") != "STARTED FINISHED STARTED FINISHED FINISHED STARTED" {
		t.Errorf("download activity (newest first): %v", downloads)
	}
}

func TestFailedDownloadIsReportedToEveryRequestAndMadeAgainOnTheNext(t *testing.T) {
	f, snap := newTransferFixture(t)
	f.downloads.errs = []error{backup.Errorf(backup.CodeInternal, "the database dump of snapshot %s is damaged", snap.ID)}
	first := f.ask(t, snap, backup.DataDatabaseOnly)
	joined := f.ask(t, snap, backup.DataDatabaseOnly)
	f.deliverAll(t)
	for _, id := range []string{first.ID, joined.ID} {
		// An internal error is told as a reference to the log, never as its detail.
		if a := f.archive(t, snap, id); a.State != backup.ArchiveFailed || !strings.Contains(a.StatusMessage, "reference") || a.URL != "" {
			t.Errorf("archive %s: %+v", id, a)
		}
	}
	next := f.ask(t, snap, backup.DataDatabaseOnly)
	if !next.Owner() || next.State != backup.ArchiveQueued {
		t.Fatalf("the request after a failure: %+v, want a new job", next)
	}
	f.deliverAll(t)
	if a := f.archive(t, snap, next.ID); a.State != backup.ArchiveCompleted || len(f.downloads.calls) != 2 {
		t.Fatalf("made again: %+v after %d calls", a, len(f.downloads.calls))
	}
	if err := f.svc.DeleteSnapshot(context.Background(), f.user, "ns-a", envID, snap.ID); err != nil {
		t.Fatalf("the snapshot stays deletable after a failed download: %v", err)
	}
}

func TestDownloadRefusals(t *testing.T) {
	f, snap := newTransferFixture(t)
	ctx := context.Background()
	if _, err := f.svc.CreateArchive(ctx, backup.Principal{ID: "stranger"}, "ns-a", envID, snap.ID, backup.DataFilesAndDatabase); backup.CodeOf(err) != backup.CodeNoAccess {
		t.Errorf("stranger: %v", err)
	}
	if _, err := backup.ParseDataType("files_only"); backup.CodeOf(err) != backup.CodeInvalidParameters {
		t.Errorf("files_only: %v", err)
	}
	processing := f.create(t)
	if _, err := f.svc.CreateArchive(ctx, f.user, "ns-a", envID, processing.ID, backup.DataFilesAndDatabase); backup.CodeOf(err) != backup.CodeSnapshotNotReady {
		t.Errorf("a Processing snapshot: %v", err)
	}
	if _, err := f.svc.UpdateSettings(ctx, f.user, "ns-a", false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateArchive(ctx, f.user, "ns-a", envID, snap.ID, backup.DataFilesAndDatabase); backup.CodeOf(err) != backup.CodeBackupsNotEnabled {
		t.Errorf("backups disabled: %v", err)
	}
}

func TestUploadBecomesASnapshotOnceAndItsBlobIsRemoved(t *testing.T) {
	f, _ := newTransferFixture(t)
	ctx := context.Background()
	link, err := f.svc.CreateUpload(ctx, f.user, "ns-a", envID, "from-mendix-cloud.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(link.URL, "sp=cw") || !link.Upload.ExpiresAt.Equal(f.now.Add(24*time.Hour)) || link.MaxBytes != 1<<20 {
		t.Fatalf("link: %+v", link)
	}
	if _, err := f.svc.CompleteUpload(ctx, f.user, "ns-a", envID, link.Upload.ID, ""); backup.CodeOf(err) != backup.CodeInvalidState {
		t.Errorf("complete before anything was uploaded: %v", err)
	}
	f.tb.upload(link.Upload.BlobPath, 2<<20)
	if _, err := f.svc.CompleteUpload(ctx, f.user, "ns-a", envID, link.Upload.ID, ""); backup.CodeOf(err) != backup.CodePayloadTooLarge {
		t.Errorf("complete of an archive above the limit: %v", err)
	}
	f.tb.upload(link.Upload.BlobPath, 500)
	sn, err := f.svc.CompleteUpload(ctx, f.user, "ns-a", envID, link.Upload.ID, "from Mendix Cloud")
	if err != nil {
		t.Fatal(err)
	}
	if sn.Kind != backup.KindUploaded || sn.Status != backup.SnapshotProcessing || sn.Comment != "from Mendix Cloud" {
		t.Fatalf("uploaded snapshot: %+v", sn)
	}
	again, err := f.svc.CompleteUpload(ctx, f.user, "ns-a", envID, link.Upload.ID, "again")
	if err != nil || again.ID != sn.ID {
		t.Fatalf("second complete: %+v, %v; want the same snapshot", again, err)
	}
	msgs := f.pub.msgs[backup.QueueJobs]
	if len(msgs) != 1 || msgs[0].SessionID == envID {
		t.Fatalf("job messages: %+v; want one, in a session of its own (not the environment's)", msgs)
	}
	f.deliverAll(t)
	if len(f.ingester.calls) != 1 || f.ingester.calls[0].UploadETag != "etag-500" || f.ingester.calls[0].UploadPath != link.Upload.BlobPath {
		t.Fatalf("ingest calls: %+v", f.ingester.calls)
	}
	got := f.snapshot(t, sn.ID)
	if got.Status != backup.SnapshotFinished || got.ModelVersion != "1.0.0.7" || got.UploadSHA256 != "archive-sha" || got.FilesCount != 2 || got.DumpPath == "" || len(got.Warnings) != 0 {
		t.Fatalf("finished upload: %+v", got)
	}
	if b, _ := f.tb.UploadProperties(ctx, link.Upload.BlobPath); b.Found {
		t.Error("the uploaded archive was kept after its validation")
	}
	if evs := f.pub.take(backup.TopicBackupEvents); len(evs) != 1 || !strings.Contains(string(evs[0].Body), "snapshot.finished") {
		t.Errorf("events: %+v", evs)
	}
	acts, _, _ := f.st.ListActivity(ctx, "ns-a", envID, 0, 10)
	if acts[0].Action != backup.ActionUpload || acts[0].Status != backup.ActivityFinished || acts[1].Action != backup.ActionUpload || acts[1].Status != backup.ActivityStarted {
		t.Errorf("activity: %+v", acts[:2])
	}
}

func TestRefusedUploadEndsFailedWithItsReasonAndLeavesNothing(t *testing.T) {
	f, _ := newTransferFixture(t)
	ctx := context.Background()
	f.ingester.err = backup.Errorf(backup.CodeInvalidParameters, `entry "../etc/passwd" leaves the archive root`)
	link, err := f.svc.CreateUpload(ctx, f.user, "ns-a", envID, "")
	if err != nil {
		t.Fatal(err)
	}
	f.tb.upload(link.Upload.BlobPath, 100)
	sn, err := f.svc.CompleteUpload(ctx, f.user, "ns-a", envID, link.Upload.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	f.deliverAll(t)
	if len(f.ingester.calls) != 1 {
		t.Errorf("a refused archive was read %d times; a refusal is final", len(f.ingester.calls))
	}
	got := f.snapshot(t, sn.ID)
	if got.Status != backup.SnapshotFailed || !strings.Contains(got.StatusMessage, "leaves the archive root") || got.DumpPath != "" {
		t.Fatalf("refused upload: %+v", got)
	}
	if paths, _ := f.blobs.ListSnapshotBlobs(ctx, "ns-a", envID, sn.ID); len(paths) != 0 {
		t.Errorf("blobs left: %v", paths)
	}
	if b, _ := f.tb.UploadProperties(ctx, link.Upload.BlobPath); b.Found {
		t.Error("the refused archive was kept")
	}
	if _, err := f.svc.CreateRestore(ctx, f.user, "ns-a", envID, backup.RestoreRequest{SnapshotID: sn.ID}); err == nil {
		t.Error("a refused upload could be restored")
	}
}

func TestUploadsNeverCompletedAreRemovedAfterTheirLinkExpired(t *testing.T) {
	f, _ := newTransferFixture(t)
	ctx := context.Background()
	link, err := f.svc.CreateUpload(ctx, f.user, "ns-a", envID, "")
	if err != nil {
		t.Fatal(err)
	}
	f.tb.upload(link.Upload.BlobPath, 100)
	f.now = f.now.Add(23 * time.Hour)
	if err := f.svc.RemoveExpiredTransfers(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := f.tb.UploadProperties(ctx, link.Upload.BlobPath); !b.Found {
		t.Fatal("removed while the link was valid")
	}
	f.now = f.now.Add(2 * time.Hour)
	if err := f.svc.RemoveExpiredTransfers(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := f.tb.UploadProperties(ctx, link.Upload.BlobPath); b.Found {
		t.Fatal("kept after the link expired")
	}
	if _, err := f.svc.CompleteUpload(ctx, f.user, "ns-a", envID, link.Upload.ID, ""); backup.CodeOf(err) != backup.CodeInvalidState {
		t.Errorf("complete after the link expired: %v", err)
	}
	if _, err := f.svc.CreateUpload(ctx, f.user, "ns-a", envID, "bad\x00name"); backup.CodeOf(err) != backup.CodeInvalidParameters {
		t.Errorf("a file name with a NUL: %v", err)
	}
}

// failingArchives fails the update that records a completed archive, once: a worker that dies after
// its blob was committed and before the record says so.
type failingArchives struct {
	backup.ArchiveStore
	mu     sync.Mutex
	failed bool
}

func (f *failingArchives) UpdateArchive(ctx context.Context, ns, env, id string, fn backup.UpdateFunc[backup.Archive]) (backup.Archive, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failed {
		cur, err := f.ArchiveStore.GetArchive(ctx, ns, env, id)
		if err == nil {
			if next, write, _ := fn(cur, true); write && next.State == backup.ArchiveCompleted {
				f.failed = true
				return cur, false, backup.Errorf(backup.CodeTransient, "table storage: 503 server busy")
			}
		}
	}
	return f.ArchiveStore.UpdateArchive(ctx, ns, env, id, fn)
}

func TestDownloadWhoseRecordCouldNotBeWrittenIsMadeAgainAndLeavesOneBlob(t *testing.T) {
	f, snap := newTransferFixture(t)
	stores := f.st.Stores()
	stores.Archives = &failingArchives{ArchiveStore: f.st}
	f.svc = backup.NewService(backup.Deps{Stores: stores, Publisher: f.pub, Snapshotter: f.snap, Archives: f.blobs,
		Layout: layout{}, Now: func() time.Time { return f.now }, Log: zerolog.Nop(),
		Downloads: f.downloads, Ingester: f.ingester, Links: f.tb, Uploads: f.tb})
	a := f.ask(t, snap, backup.DataFilesAndDatabase)
	f.deliver(t) // the first delivery fails when recording; the redelivery (a new claim) makes it again
	done := f.archive(t, snap, a.ID)
	if done.State != backup.ArchiveCompleted || done.Fence != 2 || len(f.downloads.calls) != 2 {
		t.Fatalf("after the redelivery: %+v, made %d times", done, len(f.downloads.calls))
	}
	first := (layout{}).Download("ns-a", envID, snap.ID, a.ID, 1, backup.DataFilesAndDatabase)
	if f.blobs.has(first) || !f.blobs.has(done.BlobPath) || done.BlobPath == first {
		t.Errorf("blobs: the first claim's %v (want gone), the kept %s %v", f.blobs.has(first), done.BlobPath, f.blobs.has(done.BlobPath))
	}
}
