package snapshotter

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// TestAssembledArchiveReadsEverywhere: the archive assembled from a snapshot's parts, with small chunks
// so that the dump is spliced from several blocks and a large file streams into blocks of its own,
// reads with GNU tar, Python's tarfile and pg_restore, with every file's bytes; so does one without
// files.
func TestAssembledArchiveReadsEverywhere(t *testing.T) {
	f := newFixture(t)
	f.snap.Archive.ChunkSize = 64 << 10
	f.exec(t, `INSERT INTO data SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 4) FROM generate_series(5001, 9000) g`)

	t.Run("no files", func(t *testing.T) {
		tk := f.backup(t, nil)
		f.assemble(t, nil, tk)
	})

	f.addFiles(t, 5, 3000)
	f.addFiles(t, 1, 150<<10) // above ChunkSize/4: its own blocks
	f.addFiles(t, 1, 0)
	noMD5 := f.addFiles(t, 1, 5000)[0]
	f.rewrite(t, noMD5, f.content(5000), false)
	tk := f.backup(t, nil)
	if tk.res.DumpBlobBytes < 2*64<<10 {
		t.Fatalf("the dump blob has %d bytes: too few to be spliced from several blocks", tk.res.DumpBlobBytes)
	}

	t.Run("files", func(t *testing.T) {
		prog := &progressLog{}
		a, err := f.snap.Assemble(t.Context(), tk.sn, downloadPath(tk.sn), prog.report)
		if err != nil {
			t.Fatal(err)
		}
		f.checkArchive(t, tk, a)
		if got := prog.phases(); got != "assembling,finishing,verifying" {
			t.Errorf("phases %s", got)
		}
		checkVerifying(t, prog, a.SizeBytes)
	})

	t.Run("a snapshot not finished", func(t *testing.T) {
		sn := tk.sn
		sn.Status = backup.SnapshotProcessing
		dst := downloadPath(sn)
		_, err := f.snap.Assemble(t.Context(), sn, dst, nil)
		errorIs(t, err, backup.CodeSnapshotNotReady, sn.ID)
		if f.committed(t, dst) {
			t.Errorf("an archive was committed")
		}
	})
}

// TestAssembleRefusesDamagedParts: a store object that is missing or whose bytes are not the
// manifest's, and a dump blob damaged anywhere, make Assemble fail with a CodeInternal error saying
// what is wrong, and nothing is committed at the destination.
func TestAssembleRefusesDamagedParts(t *testing.T) {
	f := newFixture(t)
	f.addFiles(t, 6, 4000)
	refused := func(t *testing.T, tk taken, parts ...string) {
		t.Helper()
		dst := downloadPath(tk.sn)
		_, err := f.snap.Assemble(t.Context(), tk.sn, dst, nil)
		be := errorIs(t, err, backup.CodeInternal, parts...)
		t.Logf("message: %s", be.Message)
		if f.committed(t, dst) {
			t.Errorf("an archive was committed at %s", dst)
		}
	}
	// entry gives the manifest entry of a file of tk, and the path of its object in the file store.
	entry := func(t *testing.T, tk taken, i int) (backup.ManifestEntry, string) {
		_, entries := f.manifest(t, tk.sn.ManifestPath)
		e := entries[i]
		return e, layout.StoreObject(f.env.Namespace, f.env.ID, e.Object)
	}
	putObject := func(t *testing.T, path string, data []byte) {
		t.Helper()
		if _, err := f.blobs.Client().UploadBuffer(t.Context(), f.blobs.FileStoreContainer(), path, data, nil); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("a missing store object", func(t *testing.T) {
		tk := f.backup(t, nil)
		e, _ := entry(t, tk, 2)
		if err := f.blobs.DeleteObject(t.Context(), f.env.Namespace, f.env.ID, e.Object); err != nil {
			t.Fatal(err)
		}
		refused(t, tk, e.UUID, "missing")
	})

	t.Run("a store object with other bytes", func(t *testing.T) {
		tk := f.backup(t, nil)
		e, path := entry(t, tk, 4)
		if e.MD5 == nil {
			t.Fatal("the entry has no MD5: the test's premise does not hold")
		}
		putObject(t, path, f.content(int(e.Size)))
		t.Cleanup(func() { f.blobs.DeleteObject(context.Background(), f.env.Namespace, f.env.ID, e.Object) })
		refused(t, tk, e.UUID, "MD5")
	})

	t.Run("a store object of another size", func(t *testing.T) {
		tk := f.backup(t, nil)
		e, path := entry(t, tk, 1)
		putObject(t, path, f.content(int(e.Size)+1))
		t.Cleanup(func() { f.blobs.DeleteObject(context.Background(), f.env.Namespace, f.env.ID, e.Object) })
		refused(t, tk, e.UUID, "bytes")
	})

	for _, tt := range []struct {
		name   string
		damage func(blob []byte)
	}{
		{"a dump blob whose gzip header is damaged", func(b []byte) { b[3] = 0x08 }}, // FNAME: a file name would follow
		{"a dump blob whose last deflate block is damaged", func(b []byte) { b[len(b)-10] = 0x01 }},
		{"a dump blob whose trailer's CRC-32 is damaged", func(b []byte) { b[len(b)-7] ^= 0x40 }},
		{"a dump blob whose trailer's length is damaged", func(b []byte) { b[len(b)-3] ^= 0x01 }},
		{"a dump blob damaged in its deflate data", func(b []byte) { b[len(b)/2] ^= 0x01 }},
		{"a dump blob cut short", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tk := f.backup(t, nil)
			blob := f.download(t, tk.sn.DumpPath)
			if tt.damage == nil {
				blob = blob[:len(blob)-1000]
			} else {
				tt.damage(blob)
			}
			f.upload(t, tk.sn.DumpPath, blob)
			refused(t, tk, "database dump of snapshot "+tk.sn.ID+" is damaged")
		})
	}

	t.Run("the parts are intact", func(t *testing.T) { // what the cases above damaged, one at a time
		f.assemble(t, nil, f.backup(t, nil))
	})
}

// TestStoreReadFailures: what failing reads of a store object do to an assembly. Retries read the
// object again from its first byte, and the archive then holds its bytes intact; other failures fail
// the assembly at once, and a failed or cancelled assembly commits nothing.
func TestStoreReadFailures(t *testing.T) {
	f := newFixture(t)
	smalls := f.addFiles(t, 4, 3000)
	large := f.addFiles(t, 1, 100<<10)[0]
	tk := f.backup(t, nil)
	objects := f.objects(t, tk.sn.ManifestPath)
	small := objects[smalls[0]]
	transientErr := backup.Wrap(backup.CodeTransient, errConnectionReset, "could not read object x of the file store of environment y: Blob Storage could not be reached or did not answer in time")
	refusedErr := backup.Wrap(backup.CodeInvalidState, errors.New("403 AuthorizationPermissionMismatch"),
		"could not read object x of the file store of environment y: the service's identity lacks permission (Blob Storage answered 403 AuthorizationPermissionMismatch)")

	// failOpen fails the first times opens of target with err; failRead gives readers of target that
	// fail with err after 1000 bytes, the first times; hang gives readers that block after 1000 bytes.
	failOpen := func(target string, times int, err error) *spyFiles {
		spy := newSpy(f)
		spy.onOpen = func(_ context.Context, object string, n int) error {
			if object == target && n <= times {
				return err
			}
			return nil
		}
		return spy
	}
	failRead := func(target string, times int, err error) *spyFiles {
		spy := newSpy(f)
		spy.wrap = func(ctx context.Context, object string, n int, rc io.ReadCloser) io.ReadCloser {
			if object == target && n <= times {
				return &brokenReader{inner: rc, left: 1000, err: err, ctx: ctx}
			}
			return rc
		}
		return spy
	}
	assembleWith := func(t *testing.T, ctx context.Context, spy *spyFiles) (string, error) {
		s := f.with(spy)
		s.Archive.ChunkSize = 64 << 10 // the large file streams into blocks of its own
		dst := downloadPath(tk.sn)
		a, err := s.Assemble(ctx, tk.sn, dst, nil)
		if err == nil {
			f.checkArchive(t, tk, a)
		}
		return dst, err
	}

	for _, tt := range []struct {
		name   string
		target string
		spy    *spyFiles
	}{
		{"a transient failure at open is retried", small, failOpen(small, 1, transientErr)},
		{"a transient failure half-way is retried", small, failRead(small, 1, transientErr)},
		{"a transient failure half-way through a large file is retried", objects[large], failRead(objects[large], 1, transientErr)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := assembleWith(t, t.Context(), tt.spy); err != nil {
				t.Fatal(err)
			}
			if n := tt.spy.opensOf(tt.target); n != 2 {
				t.Errorf("the object was opened %d times, want 2", n)
			}
		})
	}

	t.Run("a refusal fails the assembly at once with its sentence", func(t *testing.T) {
		spy := failOpen(small, 100, refusedErr)
		dst, err := assembleWith(t, t.Context(), spy)
		be := errorIs(t, err, backup.CodeInvalidState)
		if be.Message != refusedErr.Message {
			t.Errorf("message %q, want the refusal's %q", be.Message, refusedErr.Message)
		}
		if n := spy.opensOf(small); n != 1 {
			t.Errorf("a permanent failure was tried %d times", n)
		}
		if f.committed(t, dst) {
			t.Errorf("a failed assembly committed an archive")
		}
	})

	t.Run("repeated transient failures are a transient error", func(t *testing.T) {
		spy := failRead(small, 100, transientErr)
		dst, err := assembleWith(t, t.Context(), spy)
		if backup.CodeOf(err) != backup.CodeTransient || !errors.Is(err, errConnectionReset) {
			t.Errorf("got %v, want a transient error", err)
		}
		if n := spy.opensOf(small); n != fileTries {
			t.Errorf("the object was opened %d times, want %d", n, fileTries)
		}
		if f.committed(t, dst) {
			t.Errorf("a failed assembly committed an archive")
		}
	})

	t.Run("a hung read ends when the context is cancelled", func(t *testing.T) {
		spy := failRead(objects[large], 100, nil)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(500*time.Millisecond, cancel)
		start := time.Now()
		dst, err := assembleWith(t, ctx, spy)
		if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
			t.Errorf("got %v after %s, want context.Canceled soon after the cancel", err, time.Since(start))
		}
		if f.committed(t, dst) {
			t.Errorf("a cancelled assembly committed an archive")
		}
	})
}
