package snapshotter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
)

// progressLog records the progress a call reports.
type progressLog struct {
	mu   sync.Mutex
	seen []backup.Progress
}

func (p *progressLog) report(r backup.Progress) {
	p.mu.Lock()
	p.seen = append(p.seen, r)
	p.mu.Unlock()
}

// phases are the phases reported, in order, each once.
func (p *progressLog) phases() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.seen {
		if len(out) == 0 || out[len(out)-1] != r.Phase {
			out = append(out, r.Phase)
		}
	}
	return strings.Join(out, ",")
}

// in are the reports of one phase.
func (p *progressLog) in(phase string) []backup.Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []backup.Progress
	for _, r := range p.seen {
		if r.Phase == phase {
			out = append(out, r)
		}
	}
	return out
}

// checkVerifying fails unless the verifying phase reported several growing values ending at size.
func checkVerifying(t *testing.T, p *progressLog, size int64) {
	t.Helper()
	var done []int64
	for _, r := range p.in("verifying") {
		done = append(done, r.BytesDone)
	}
	if len(done) < 3 || done[len(done)-1] != size {
		t.Errorf("verification reported %d times (%v), want several, ending at the blob's %d bytes", len(done), done, size)
	}
	for i := 2; i < len(done); i++ { // the first is the phase's start, at 0
		if done[i] <= done[i-1] {
			t.Errorf("verification progress does not grow: %v", done)
			break
		}
	}
}

// TestFirstBackupCopiesEveryFile: the first backup of an environment copies every file into its store
// and writes a manifest naming them and a dump blob that gunzips to a custom-format dump.
func TestFirstBackupCopiesEveryFile(t *testing.T) {
	f := newFixture(t)
	uuids := f.addFiles(t, 8, 20000)
	spy := newSpy(f)
	prog := &progressLog{}
	tk, err := f.tryBackup(t, f.with(spy), prog.report)
	if err != nil {
		t.Fatal(err)
	}
	res := tk.res
	if res.FilesCount != 8 || res.FilesBytes != 8*20000 || res.NewFilesCount != 8 || res.NewFilesBytes != 8*20000 ||
		res.StoreObjects != 8 || res.StoreBytes != 8*20000 || res.SizeBytes != res.DumpSizeBytes+res.FilesBytes ||
		res.DumpSizeBytes == 0 || res.DatabaseSizeBytes == 0 || len(res.SHA256) != 64 || len(res.Warnings) != 0 {
		t.Errorf("result %+v", res)
	}
	copied, calls := spy.copied()
	slices.Sort(uuids)
	if !slices.Equal(copied, uuids) || calls != len(uuids) {
		t.Errorf("%d copies of %v, want one of each of %v", calls, copied, uuids)
	}
	if got, want := f.snapshotBlobs(t, tk.sn.ID), []string{tk.sn.DumpPath, tk.sn.ManifestPath}; !slices.Equal(got, want) {
		t.Errorf("blobs of the snapshot %v, want %v", got, want)
	}
	f.checkManifest(t, tk)
	f.checkDumpBlob(t, tk)
	objects := slices.Sorted(maps.Values(f.objects(t, tk.sn.ManifestPath)))
	if store := f.storeObjects(t); !slices.Equal(store, objects) {
		t.Errorf("the store holds %v, the manifest names %v", store, objects)
	}
	manifestSize, err := f.blobs.BlobSize(t.Context(), tk.sn.ManifestPath)
	if err != nil {
		t.Fatal(err)
	}
	if res.StoredBytes != res.DumpBlobBytes+manifestSize+res.NewFilesBytes {
		t.Errorf("stored %d bytes, want the dump blob's %d + the manifest's %d + the new files' %d", res.StoredBytes, res.DumpBlobBytes, manifestSize, res.NewFilesBytes)
	}

	if got := prog.phases(); got != "dumping,finishing,verifying" {
		t.Errorf("phases %s", got)
	}
	dumping := prog.in("dumping")
	for _, p := range dumping {
		if p.FilesTotal != 8 {
			t.Errorf("progress %+v: want FilesTotal 8", p)
		}
	}
	if last := dumping[len(dumping)-1]; last.FilesDone != 8 {
		t.Errorf("files done %d of 8 at the end of the dump", last.FilesDone)
	}
	checkVerifying(t, prog, res.DumpBlobBytes)
}

// TestUnchangedBackupCopiesNothing: a backup after one with the same files copies none of them and
// names the same objects.
func TestUnchangedBackupCopiesNothing(t *testing.T) {
	f := newFixture(t)
	f.addFiles(t, 6, 3000)
	first := f.backup(t, nil)
	spy := newSpy(f)
	second := f.backup(t, f.with(spy))
	if copied, calls := spy.copied(); calls != 0 {
		t.Errorf("%d copies (%v) of unchanged files", calls, copied)
	}
	res := second.res
	if res.NewFilesCount != 0 || res.NewFilesBytes != 0 || res.FilesCount != 6 || res.StoreObjects != 6 || res.StoreBytes != 6*3000 {
		t.Errorf("result %+v", res)
	}
	manifestSize, err := f.blobs.BlobSize(t.Context(), second.sn.ManifestPath)
	if err != nil {
		t.Fatal(err)
	}
	if res.StoredBytes != res.DumpBlobBytes+manifestSize {
		t.Errorf("stored %d bytes, want only the dump blob's %d and the manifest's %d", res.StoredBytes, res.DumpBlobBytes, manifestSize)
	}
	if a, b := f.objects(t, first.sn.ManifestPath), f.objects(t, second.sn.ManifestPath); !maps.Equal(a, b) {
		t.Errorf("the manifests name different objects:\n%v\n%v", a, b)
	}
	f.checkManifest(t, second)
	if n := len(f.storeObjects(t)); n != 6 {
		t.Errorf("the store holds %d objects, want 6", n)
	}
}

// TestChangedFilesAreCopied: after 1% of 100 files changed, two were added and two deleted (and one
// rewritten with the same bytes), the next backup copies exactly the changed and the added ones.
func TestChangedFilesAreCopied(t *testing.T) {
	f := newFixture(t)
	uuids := f.addFiles(t, 100, 512)
	first := f.backup(t, nil)

	changed, deleted, same := uuids[17], uuids[40:42], uuids[63]
	f.rewrite(t, changed, f.content(512), true) // same size: the MD5 tells
	f.rewrite(t, same, f.files[same], true)     // a new ETag, the same MD5: the same object
	f.removeFiles(t, deleted...)
	added := f.addFiles(t, 2, 700)
	want := append([]string{changed}, added...)
	slices.Sort(want)

	spy := newSpy(f)
	second := f.backup(t, f.with(spy))
	copied, calls := spy.copied()
	if !slices.Equal(copied, want) || calls != len(want) {
		t.Errorf("%d copies of %v, want one of each of %v", calls, copied, want)
	}
	if res := second.res; res.NewFilesCount != 3 || res.NewFilesBytes != 512+2*700 || res.FilesCount != 100 || res.StoreObjects != 103 {
		t.Errorf("result %+v", res)
	}
	before, after := f.objects(t, first.sn.ManifestPath), f.objects(t, second.sn.ManifestPath)
	for _, u := range uuids {
		switch {
		case slices.Contains(deleted, u):
			if _, ok := after[u]; ok {
				t.Errorf("deleted file %s is in the manifest", u)
			}
		case u == changed:
			if after[u] == before[u] {
				t.Errorf("changed file %s keeps its object %s", u, before[u])
			}
		case after[u] != before[u]:
			t.Errorf("unchanged file %s: object %s, was %s", u, after[u], before[u])
		}
	}
	f.checkManifest(t, second)
}

// TestRewrittenFileGetsANewObject: a file whose bytes changed under the same UUID and size is copied
// to a new object, never taken for the old one: by its Content-MD5 when its blob has one, by its ETag
// when it has none (a blob committed as a block list). Both snapshots keep their own bytes.
func TestRewrittenFileGetsANewObject(t *testing.T) {
	for _, tt := range []struct {
		name    string
		withMD5 bool
		kind    string
	}{
		{"with Content-MD5", true, "-md5-"},
		{"without Content-MD5, by ETag", false, "-etag-"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			uuids := f.addFiles(t, 3, 4000)
			u := uuids[1]
			f.rewrite(t, u, f.content(4000), tt.withMD5)
			if src := f.sources(t)[u]; (src.MD5 != nil) != tt.withMD5 {
				t.Fatalf("the blob's Content-MD5 is %x: the test's premise does not hold", src.MD5)
			}
			first := f.backup(t, nil)
			old := f.objects(t, first.sn.ManifestPath)[u]

			f.rewrite(t, u, f.content(4000), tt.withMD5)
			spy := newSpy(f)
			second := f.backup(t, f.with(spy))
			if copied, calls := spy.copied(); !slices.Equal(copied, []string{u}) || calls != 1 {
				t.Errorf("%d copies of %v, want one of %s", calls, copied, u)
			}
			obj := f.objects(t, second.sn.ManifestPath)[u]
			if obj == old || !strings.Contains(obj, tt.kind) {
				t.Errorf("object %s, was %s: want a new %s object", obj, old, strings.Trim(tt.kind, "-"))
			}
			if !bytes.Equal(f.readObject(t, old), first.files[u]) || !bytes.Equal(f.readObject(t, obj), second.files[u]) {
				t.Errorf("the store objects do not hold the bytes of their snapshots")
			}
			f.checkManifest(t, second)
			f.assemble(t, nil, first)
			f.assemble(t, nil, second)
		})
	}
}

// TestMissingBlobBecomesAWarning: a file document without a blob is a warning naming it; it counts as
// done and is not in the manifest.
func TestMissingBlobBecomesAWarning(t *testing.T) {
	f := newFixture(t)
	uuids := f.addFiles(t, 8, 1000)
	f.deleteSourceBlob(t, uuids[2])
	prog := &progressLog{}
	tk, err := f.tryBackup(t, nil, prog.report)
	if err != nil {
		t.Fatal(err)
	}
	if tk.res.FilesCount != 7 || len(tk.res.Warnings) != 1 || !strings.Contains(tk.res.Warnings[0], uuids[2]) {
		t.Errorf("got %d files, warnings %q", tk.res.FilesCount, tk.res.Warnings)
	}
	if dumping := prog.in("dumping"); dumping[len(dumping)-1].FilesDone != 8 {
		t.Errorf("files done %d of 8: a missing blob counts as done", dumping[len(dumping)-1].FilesDone)
	}
	f.checkManifest(t, tk)
}

// TestFilesThatChangeDuringTheBackup: a blob deleted between the listing and its copy is a warning; one
// rewritten in between is listed again and copied under its new object.
func TestFilesThatChangeDuringTheBackup(t *testing.T) {
	f := newFixture(t)
	uuids := f.addFiles(t, 6, 2000)
	vanishing, rewritten := uuids[1], uuids[4]
	newContent := f.content(2500)
	spy := newSpy(f)
	spy.onCopy = func(ctx context.Context, u string, n int) error { // (on a copy worker)
		var err error
		switch name := f.env.Files.Prefix + u; {
		case u == vanishing:
			_, err = f.blobs.Client().DeleteBlob(ctx, f.env.Files.Container, name, nil)
		case u == rewritten && n == 1:
			_, err = f.blobs.Client().UploadBuffer(ctx, f.env.Files.Container, name, newContent, nil)
		}
		return err
	}
	tk := f.backup(t, f.with(spy))
	for _, files := range []map[string][]byte{f.files, tk.files} {
		delete(files, vanishing)
		files[rewritten] = newContent
	}
	if len(tk.res.Warnings) != 1 || !strings.Contains(tk.res.Warnings[0], vanishing) || tk.res.FilesCount != 5 {
		t.Errorf("%d files, warnings %q; want 5 and one naming %s", tk.res.FilesCount, tk.res.Warnings, vanishing)
	}
	if n := spy.copiesOf(rewritten); n != 2 {
		t.Errorf("the rewritten file was copied %d times, want 2 (its listed version, then its new one)", n)
	}
	f.checkManifest(t, tk) // the rewritten file's entry and object are its new version
	f.assemble(t, nil, tk)
}

// TestCopyFailures: what a file's failing copies do to a backup. Failures that a retry may fix are
// tried again; others fail the backup at once with their own message; a failed or cancelled backup
// leaves no blob of its snapshot.
func TestCopyFailures(t *testing.T) {
	f := newFixture(t)
	uuids := f.addFiles(t, 8, 5000)
	target := uuids[3]
	transientErr := backup.Wrap(backup.CodeTransient, errConnectionReset, "could not copy blob docs/x of container app-files: Blob Storage could not be reached or did not answer in time")
	refusedErr := backup.Wrap(backup.CodeInvalidState, errors.New("403 AuthorizationPermissionMismatch"),
		"could not copy blob docs/x of container app-files: the service's identity lacks permission (Blob Storage answered 403 AuthorizationPermissionMismatch)")
	// Each case starts with the target missing from the store, so that its backup copies it.
	failing := func(times int, err error) *spyFiles {
		f.dropObject(t, target)
		spy := newSpy(f)
		spy.onCopy = func(ctx context.Context, u string, n int) error {
			if u == target && n <= times {
				return err
			}
			return nil
		}
		return spy
	}
	nothingLeft := func(t *testing.T, tk taken) {
		t.Helper()
		if names := f.snapshotBlobs(t, tk.sn.ID); len(names) != 0 {
			t.Errorf("a failed backup left blobs: %v", names)
		}
	}

	t.Run("a transient failure is retried", func(t *testing.T) {
		spy := failing(1, transientErr)
		tk := f.backup(t, f.with(spy))
		if n := spy.copiesOf(target); n != 2 {
			t.Errorf("the file was copied %d times, want 2", n)
		}
		f.checkManifest(t, tk)
	})

	t.Run("repeated transient failures are a transient error", func(t *testing.T) {
		spy := failing(100, transientErr)
		tk, err := f.tryBackup(t, f.with(spy), nil)
		if backup.CodeOf(err) != backup.CodeTransient || !errors.Is(err, errConnectionReset) {
			t.Errorf("got %v, want a transient error", err)
		}
		if n := spy.copiesOf(target); n != fileTries {
			t.Errorf("the file was copied %d times, want %d", n, fileTries)
		}
		nothingLeft(t, tk)
	})

	t.Run("a refusal fails the backup at once with its sentence", func(t *testing.T) {
		spy := failing(100, refusedErr)
		tk, err := f.tryBackup(t, f.with(spy), nil)
		be := errorIs(t, err, backup.CodeInvalidState)
		if be.Message != refusedErr.Message || backup.IsRetryable(err) {
			t.Errorf("message %q, want the refusal's %q", be.Message, refusedErr.Message)
		}
		if n := spy.copiesOf(target); n != 1 {
			t.Errorf("a permanent failure was tried %d times", n)
		}
		nothingLeft(t, tk)
	})

	t.Run("an unclassified failure is not retried", func(t *testing.T) {
		spy := failing(100, errConnectionReset)
		tk, err := f.tryBackup(t, f.with(spy), nil)
		if !errors.Is(err, errConnectionReset) || spy.copiesOf(target) != 1 {
			t.Errorf("got %v after %d copies, want the failure after 1", err, spy.copiesOf(target))
		}
		nothingLeft(t, tk)
	})

	t.Run("a hung copy ends when the context is cancelled", func(t *testing.T) {
		f.dropObject(t, target)
		spy := newSpy(f)
		spy.onCopy = func(ctx context.Context, u string, n int) error {
			if u == target {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(500*time.Millisecond, cancel)
		start := time.Now()
		tk, err := f.create(ctx, f.with(spy), nil)
		if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
			t.Errorf("got %v after %s, want context.Canceled soon after the cancel", err, time.Since(start))
		}
		nothingLeft(t, tk)
	})

	t.Run("a backup cancelled at its first copy commits nothing", func(t *testing.T) {
		spy := newSpy(f)
		ctx, cancel := context.WithCancel(t.Context())
		spy.onCopy = func(context.Context, string, int) error { cancel(); return nil }
		f.dropObject(t, target)
		tk, err := f.create(ctx, f.with(spy), nil)
		if err == nil {
			t.Fatal("a cancelled backup succeeded")
		}
		if _, calls := spy.copied(); calls != 1 {
			t.Errorf("%d copies, want the one that cancelled", calls)
		}
		nothingLeft(t, tk)
	})

	t.Run("a missing file container is one permanent error", func(t *testing.T) {
		spy := newSpy(f)
		s := f.with(spy)
		env := f.env
		env.Files.Container = "no-such-container"
		req := f.request(newID())
		req.Environment = env
		_, err := s.Create(t.Context(), req)
		errorIs(t, err, backup.CodeInvalidState, "no-such-container")
		if backup.IsRetryable(err) {
			t.Errorf("%v is retryable", err)
		}
		if _, calls := spy.copied(); calls != 0 {
			t.Errorf("%d copies from a container that does not exist", calls)
		}
		nothingLeft(t, taken{sn: backup.Snapshot{ID: req.SnapshotID}})
	})
}

// TestNoFilesNeedNoContainer: an environment without file documents is backed up even when its file
// container does not exist (nothing is listed).
func TestNoFilesNeedNoContainer(t *testing.T) {
	f := newFixture(t)
	s := *f.snap
	f.env.Files.Container = "no-such-container"
	tk := f.backup(t, &s)
	if tk.res.FilesCount != 0 || len(tk.res.Warnings) != 0 {
		t.Errorf("result %+v", tk.res)
	}
	f.checkManifest(t, tk)
	f.checkDumpBlob(t, tk)
}

// TestStorageErrorsReadAsSentences: a Blob Storage refusal met while writing the snapshot reaches the
// caller as a *backup.Error whose message says what failed, without the request's URL or the response.
func TestStorageErrorsReadAsSentences(t *testing.T) {
	f := newFixture(t)
	f.addFiles(t, 2, 1000)
	blobs, err := blobstore.NewFromConnectionString(f.az.ConnectionString(), "no-such-snapshots")
	if err != nil {
		t.Fatal(err)
	}
	s := *f.snap
	s.Blobs, s.Files = blobs, f.blobs
	_, err = f.tryBackup(t, &s, nil)
	var be *backup.Error
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a *backup.Error", err)
	}
	t.Logf("code %s, message %q", be.Code, be.Message)
	if !strings.HasPrefix(be.Message, "could not ") && !strings.HasPrefix(be.Message, "the service's container no-such-snapshots does not exist") ||
		!strings.Contains(be.Message, "no-such-snapshots") && !strings.Contains(be.Message, "the snapshot's") ||
		strings.Contains(be.Message, "http") || strings.Contains(be.Message, "127.0.0.1") || strings.Contains(be.Message, "RequestId") {
		t.Errorf("message %q", be.Message)
	}
	if !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("the SDK's error, with the URL for the logs, is not the cause: %v", err)
	}
}

// tamperingTransport sends requests to Azurite, and changes the responses to GETs of one blob: the
// first failBodies bodies fail with a reset connection after 100 bytes, the others have a byte
// flipped when flip is set.
type tamperingTransport struct {
	path       string // the end of the blob's URL path
	failBodies int
	flip       bool
	gets       atomic.Int64
}

func (tr *tamperingTransport) Do(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, tr.path) {
		return resp, err
	}
	n := tr.gets.Add(1)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	switch {
	case int(n) <= tr.failBodies:
		resp.Body = &brokenReader{inner: io.NopCloser(bytes.NewReader(body)), left: 100, err: errConnectionReset}
		return resp, nil
	case tr.flip && len(body) > 200:
		body[200] ^= 0x55
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

var _ policy.Transporter = (*tamperingTransport)(nil)

// TestDumpBlobIsVerified: the dump blob is read back after its commit; one that is not what was
// written is deleted and the backup fails with a transient error, without reading it again, while a
// read that fails half-way is tried again.
func TestDumpBlobIsVerified(t *testing.T) {
	f := newFixture(t)
	f.addFiles(t, 2, 1000)
	tampered := func(tr *tamperingTransport) (*Snapshotter, backup.SnapshotRequest) {
		req := f.request(newID())
		tr.path = req.DumpPath
		blobs, err := blobstore.NewFromConnectionString(f.az.ConnectionString(), snapshotsContainer, blobstore.Options{Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		s := *f.snap
		s.Blobs = blobs
		return &s, req
	}

	t.Run("a blob that reads back different", func(t *testing.T) {
		tr := &tamperingTransport{flip: true}
		s, req := tampered(tr)
		_, err := s.Create(t.Context(), req)
		errorIs(t, err, backup.CodeTransient, "did not verify")
		if n := tr.gets.Load(); n != 1 {
			t.Errorf("the blob was read %d times, want once", n)
		}
		if f.committed(t, req.DumpPath) {
			t.Errorf("the dump blob that did not verify is still there")
		}
	})

	t.Run("a read that fails half-way", func(t *testing.T) {
		tr := &tamperingTransport{failBodies: 1}
		s, req := tampered(tr)
		prog := &progressLog{}
		req.Progress = prog.report
		res, err := s.Create(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if n := tr.gets.Load(); n != 2 {
			t.Errorf("the blob was read %d times, want twice", n)
		}
		if !f.committed(t, req.DumpPath) || res.DumpBlobBytes == 0 {
			t.Errorf("the verified dump blob is not there: %+v", res)
		}
		if got := prog.phases(); got != "dumping,finishing,verifying" {
			t.Errorf("phases %s", got)
		}
	})
}
