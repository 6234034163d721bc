// Package snapshotter makes snapshots in the incremental layout (docs/snapshot-layout.md): pg_dump of
// the environment's database compressed in parallel into the dump blob, staged as blocks and committed
// only when everything succeeded, and concurrently the file documents copied server-side into the
// environment's file store (only those it lacks) and listed in the manifest; then the dump is read back
// and verified. It also assembles a snapshot's Mendix archive on demand from those parts (assemble.go).
// It implements backup.Snapshotter by composing internal/pg, internal/archive and internal/blobstore.
package snapshotter

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/pg"
)

// Snapshotter makes snapshots and assembles their archives. Its zero value is not usable; fill every
// field but the optional ones.
type Snapshotter struct {
	Dumper *pg.Dumper
	Blobs  *blobstore.Store
	// Files reaches the environments' file-document containers and the file store; default Blobs.
	// Tests wrap it to inject failures.
	Files FileSource
	// Conn returns how to reach an environment's database (credentials come from configuration: managed
	// identity tokens in Azure, a password locally).
	Conn func(env backup.Environment) pg.Conn
	// FileWorkers is how many file copies (server-side, into the store) or reads (assembling an
	// archive) run at once (default 16): file documents are small, so latency bounds a sequential copy.
	FileWorkers int
	// RetryDelay is the pause before a file or a blob is tried again after a transient failure,
	// doubled for each further try (default 1 s).
	RetryDelay time.Duration
	// Archive tunes compression and block sizes.
	Archive archive.Options
	// Uploads reads uploaded archives for Ingest; default Blobs.
	Uploads UploadSource
	// UploadLimits bound what Ingest reads of an uploaded archive; zero fields take
	// archive.DefaultLimits.
	UploadLimits archive.Limits
	// Now is the clock collector leases are read with (default time.Now).
	Now func() time.Time
	Log zerolog.Logger
}

var _ backup.Snapshotter = (*Snapshotter)(nil)

// FileSource is the blob storage the snapshotter reads and copies files with (blobstore.Store).
// Failures that a retry may fix are *backup.Error with backup.CodeTransient (blobstore classifies them).
type FileSource interface {
	// CheckFileContainer fails, permanently and naming it, when the container does not exist.
	CheckFileContainer(ctx context.Context, container string) error
	// ListFiles lists a container's blobs under prefix, in pages.
	ListFiles(ctx context.Context, container, prefix string, fn func(blobstore.FileInfo) error) error
	// CopyFile copies a blob into the file store server-side (see blobstore.Store.CopyFile).
	CopyFile(ctx context.Context, srcContainer, srcName, dstPath string, want blobstore.CopyCheck) (blobstore.CopyResult, error)
	// OpenObject reads a store object.
	OpenObject(ctx context.Context, namespace, envID, name string) (io.ReadCloser, int64, error)
}

func (s *Snapshotter) files() FileSource {
	if s.Files != nil {
		return s.Files
	}
	return s.Blobs
}

func (s *Snapshotter) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Create dumps req.Environment's database into the dump blob and, concurrently, puts its file
// documents into the environment's file store (copying only what the store lacks, server-side) and
// writes the manifest; then it reads the dump back to verify it.
func (s *Snapshotter) Create(ctx context.Context, req backup.SnapshotRequest) (backup.SnapshotResult, error) {
	start := time.Now()
	// The build's buffers (tens of MiB) are garbage once it ends, and a worker is idle most of the day:
	// give the memory back to the OS now rather than when the runtime's scavenger gets to it.
	defer debug.FreeOSMemory()
	env := req.Environment
	dump, err := s.Dumper.Start(ctx, s.Conn(env))
	if err != nil {
		return backup.SnapshotResult{}, err
	}
	defer dump.Abort() // no-op once Wait returned
	files := dump.Files()
	// A container that does not exist is one clear error, not a warning for each of its files.
	if len(files) > 0 {
		if err := s.files().CheckFileContainer(ctx, env.Files.Container); err != nil {
			return backup.SnapshotResult{}, err
		}
	}

	prog := &progress{report: req.Progress, cur: backup.Progress{Phase: "dumping", FilesTotal: len(files)}}
	opts := s.Archive
	opts.Progress = prog.archived
	writer := archive.NewDumpWriter(ctx, stagedSink{s.Blobs.NewBlockSink(req.DumpPath), prog.staged}, opts)
	defer writer.Abort() // no-op once committed

	// Phase ends, logged at the end: where a slow backup spent its time.
	var dumpEnded, filesEnded time.Duration
	var stored backup.StoreFilesResult
	var filesErr error
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if _, err := writer.ReadFrom(dump.Reader()); err != nil {
			return fmt.Errorf("compress the database dump: %w", err)
		}
		err := dump.Wait()
		dumpEnded = time.Since(start)
		return err
	})
	g.Go(func() error {
		stored, filesErr = s.storeFiles(gctx, req, files, prog)
		filesEnded = time.Since(start)
		if filesErr != nil {
			writer.Abort() // stops the dump's goroutine at its next chunk; pg_dump is killed on return
		}
		return filesErr
	})
	if err := g.Wait(); err != nil {
		if filesErr != nil {
			err = filesErr // the cause, not the abort it made the dump's goroutine return
		}
		return backup.SnapshotResult{}, err
	}

	prog.phase("finishing")
	res, err := writer.Finish()
	if err != nil {
		return backup.SnapshotResult{}, fmt.Errorf("write the dump blob: %w", err)
	}
	committed := time.Since(start)
	verified, err := s.verify(ctx, req.DumpPath, res.Blocks, res.Size, prog)
	if err != nil {
		s.deleteQuietly(req.DumpPath)
		return backup.SnapshotResult{}, err
	}
	manifestSize, err := s.Blobs.BlobSize(ctx, req.ManifestPath)
	if err != nil {
		return backup.SnapshotResult{}, err
	}
	missing := &missingBlobs{}
	for _, u := range stored.Missing {
		missing.add(u)
	}
	// A dump of a PostgreSQL 16 or later server is made by a pg_dump whose archive Mendix Cloud may
	// refuse: that comes first, before the warnings about file document rows.
	dumpWarnings := dump.Warnings()
	if w := dump.MendixWarning(); w != "" {
		dumpWarnings = append([]string{w}, dumpWarnings...)
	}
	s.Log.Info().Str("dump", req.DumpPath).Int64("dump_blob", verified.Size).Int64("dump_size", res.RawSize).
		Int("files", len(stored.Entries)).Int("new_files", stored.NewFiles).Int64("new_bytes", stored.NewBytes).
		Int("store_objects", stored.StoreObjects).Dur("dump_done", dumpEnded).Dur("files_done", filesEnded).
		Dur("committed", committed).Dur("verified", time.Since(start)).Str("pg_dump", dump.PgDumpVersion()).
		Str("archive_version", dump.ArchiveVersion()).Msg("snapshot written")
	return backup.SnapshotResult{
		SizeBytes: res.RawSize + stored.FilesBytes, SHA256: verified.SHA256, DatabaseSizeBytes: dump.DatabaseSize(),
		DumpSizeBytes: res.RawSize, DumpBlobBytes: verified.Size, FilesBytes: stored.FilesBytes, FilesCount: len(stored.Entries),
		NewFilesCount: stored.NewFiles, NewFilesBytes: stored.NewBytes, StoredBytes: verified.Size + manifestSize + stored.NewBytes,
		StoreObjects: stored.StoreObjects, StoreBytes: stored.StoreBytes,
		Warnings: warnings(dumpWarnings, missing, env.Files.Container),
	}, nil
}

// verifyTries is how often the archive is read back when reading fails (a blob that differs from what
// was written is not read again: the next attempt writes a new one).
const verifyTries = 3

// verify reads a committed blob back and checks it is, byte for byte, the blocks that were compressed
// (archive.VerifyBlob). This also yields the SHA-256, which cannot be computed while writing since the
// blocks are produced out of order. A mismatch is transient: the next attempt writes a new blob.
func (s *Snapshotter) verify(ctx context.Context, path string, blocks []archive.Block, size int64, prog *progress) (archive.Verified, error) {
	delay := s.retryDelay()
	for try := 1; ; try++ {
		v, err := s.verifyOnce(ctx, path, blocks, size, prog)
		if err == nil || try == verifyTries || ctx.Err() != nil || backup.CodeOf(err) != backup.CodeTransient ||
			errors.As(err, new(*archive.BlobMismatchError)) {
			return v, err
		}
		s.Log.Warn().Err(err).Str("blob", path).Int("try", try).Msg("reading the blob back failed; reading it again")
		if err := backup.Sleep(ctx, delay); err != nil {
			return v, err
		}
		delay *= 2
	}
}

func (s *Snapshotter) verifyOnce(ctx context.Context, path string, blocks []archive.Block, size int64, prog *progress) (archive.Verified, error) {
	prog.phase("verifying")
	rc, _, err := s.Blobs.OpenArchive(ctx, path)
	if err != nil {
		return archive.Verified{}, err
	}
	defer rc.Close()
	v, err := archive.VerifyBlob(ctx, &countingReader{r: rc, report: prog.verified}, blocks)
	var mismatch *archive.BlobMismatchError
	switch {
	case errors.As(err, &mismatch):
		return v, backup.Wrap(backup.CodeTransient, err, "the written blob did not verify: it is not what was written")
	case err != nil:
		return v, err // the read's own error (blobstore's, already classified) or ctx's
	case v.Size != size:
		return v, backup.Errorf(backup.CodeTransient, "the written blob did not verify: it has %d bytes, %d were written", v.Size, size)
	}
	return v, nil
}

func (s *Snapshotter) deleteQuietly(path string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Blobs.DeleteBlob(ctx, path); err != nil && !errors.Is(err, context.Canceled) {
		s.Log.Warn().Err(err).Str("blob", path).Msg("could not delete a blob that did not verify")
	}
}

// progress tells req.Progress how the work advances, so that the caller's watchdog, which counts any
// change as an advance, sees a healthy job advance in every phase: while dumping (or assembling),
// BytesDone is the uncompressed bytes compressed or archived and FilesDone the files decided (referenced,
// copied or found missing) or archived; while finishing (the last blocks staged, the commit), BytesDone
// is the compressed bytes staged; while verifying, the bytes read back. Calls are serialised, so values
// reach the caller in order.
type progress struct {
	report func(backup.Progress) // nil: nobody listens

	mu          sync.Mutex
	cur         backup.Progress
	stagedBytes int64 // compressed bytes staged
}

func (p *progress) update(f func(*backup.Progress)) {
	if p.report == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.cur)
	p.report(p.cur)
}

func (p *progress) phase(name string) {
	p.update(func(c *backup.Progress) {
		c.Phase, c.BytesDone = name, 0
		if name == "finishing" {
			c.BytesDone = p.stagedBytes
		}
	})
}

// archived is the dump writer's and the builder's Progress callback.
func (p *progress) archived(a archive.Progress) {
	p.update(func(c *backup.Progress) {
		c.BytesDone = a.DumpBytes + a.FilesBytes
		if a.Files > 0 {
			c.FilesDone = a.Files
		}
	})
}

// filesDecided is StoreFiles's Progress callback.
func (p *progress) filesDecided(n int) {
	p.update(func(c *backup.Progress) { c.FilesDone = n })
}

func (p *progress) staged(n int) {
	p.update(func(c *backup.Progress) {
		p.stagedBytes += int64(n)
		if c.Phase == "finishing" {
			c.BytesDone = p.stagedBytes
		}
	})
}

func (p *progress) verified(n int64) {
	p.update(func(c *backup.Progress) { c.BytesDone = n })
}

// stagedSink reports each block staged, which is all that advances while Finish stages the last ones.
type stagedSink struct {
	archive.BlockSink
	onStaged func(n int)
}

func (s stagedSink) StageBlock(ctx context.Context, id string, data []byte, contentMD5 [md5.Size]byte) error {
	if err := s.BlockSink.StageBlock(ctx, id, data, contentMD5); err != nil {
		return err
	}
	s.onStaged(len(data))
	return nil
}

// countingReader reports the bytes read so far after each read.
type countingReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.n += int64(n)
		c.report(c.n)
	}
	return n, err
}
