// Package snapshotter makes a snapshot archive in one streaming pass: pg_dump of the environment's
// database and its file-document blobs, concurrently, into the Mendix archive format, staged as blocks
// of one blob and committed only when everything succeeded; then the blob is read back and verified.
// It implements backup.Snapshotter by composing internal/pg, internal/archive and internal/blobstore.
package snapshotter

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/pg"
)

// Snapshotter builds archives. Its zero value is not usable; fill every field but the optional ones.
type Snapshotter struct {
	Dumper *pg.Dumper
	Blobs  *blobstore.Store
	// Files reads file-document blobs; default Blobs. Tests wrap it to inject failures.
	Files FileSource
	// Conn returns how to reach an environment's database (credentials come from configuration: managed
	// identity tokens in Azure, a password locally).
	Conn func(env backup.Environment) pg.Conn
	// FileWorkers is how many file blobs are downloaded at once (default 16): file documents are small,
	// so latency, not bandwidth, bounds a sequential copy.
	FileWorkers int
	// RetryDelay is the pause before reading a file blob or the archive again after a transient
	// failure, doubled for each further try (default 1 s).
	RetryDelay time.Duration
	// Archive tunes compression and block sizes.
	Archive archive.Options
	Log     zerolog.Logger
}

var _ backup.Snapshotter = (*Snapshotter)(nil)

// FileSource reads an environment's file-document blobs. Failures that a retry may fix, from either
// call or from the reader, are *backup.Error with backup.CodeTransient (blobstore classifies them).
type FileSource interface {
	// CheckFileContainer fails, permanently and naming it, when the container does not exist.
	CheckFileContainer(ctx context.Context, container string) error
	// OpenFile opens a blob; found is false when it does not exist.
	OpenFile(ctx context.Context, container, name string) (r io.ReadCloser, size int64, found bool, err error)
}

func (s *Snapshotter) files() FileSource {
	if s.Files != nil {
		return s.Files
	}
	return s.Blobs
}

// Create writes and verifies the archive of req.Environment at req.BlobPath.
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
	builder := archive.NewBuilder(ctx, stagedSink{s.Blobs.NewBlockSink(req.BlobPath), prog.staged}, opts)
	missing := &missingBlobs{}

	// Phase ends, logged at the end: where a slow backup spent its time.
	var dumpEnded, filesEnded time.Duration
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if _, err := builder.WriteDatabase(dump.Reader()); err != nil {
			return fmt.Errorf("archive the database dump: %w", err)
		}
		err := dump.Wait()
		dumpEnded = time.Since(start)
		return err
	})
	g.Go(func() error {
		err := s.copyFiles(gctx, env, files, builder, func(uuid string) {
			missing.add(uuid)
			prog.missing()
		})
		filesEnded = time.Since(start)
		return err
	})
	if err := g.Wait(); err != nil {
		builder.Abort()
		return backup.SnapshotResult{}, err
	}

	prog.phase("finishing")
	meta := archive.Metadata{
		Duration:     strconv.FormatInt(int64(time.Since(start).Seconds()), 10),
		ModelVersion: env.ModelVersion,
		DatabaseSize: strconv.FormatInt(dump.DatabaseSize(), 10),
	}
	res, err := builder.Finish(meta)
	if err != nil {
		return backup.SnapshotResult{}, fmt.Errorf("write the archive: %w", err)
	}

	committed := time.Since(start)

	verified, err := s.verify(ctx, req.BlobPath, res, prog)
	if err != nil {
		s.deleteQuietly(req.BlobPath)
		return backup.SnapshotResult{}, err
	}
	s.Log.Info().Str("blob", req.BlobPath).Int64("size", verified.Size).Int64("dump_size", res.DumpSize).
		Int("files", res.Files).Int64("files_size", res.FilesSize).Int("blocks", len(res.Blocks)).
		Dur("dump_done", dumpEnded).Dur("files_done", filesEnded).Dur("committed", committed).
		Dur("verified", time.Since(start)).Msg("archive written")
	return backup.SnapshotResult{
		SizeBytes: verified.Size, SHA256: verified.SHA256, DatabaseSizeBytes: dump.DatabaseSize(),
		DumpSizeBytes: res.DumpSize, FilesBytes: res.FilesSize, FilesCount: res.Files,
		Warnings: warnings(dump.Warnings(), missing, env.Files.Container),
	}, nil
}

// verifyTries is how often the archive is read back when reading fails (a blob that differs from what
// was written is not read again: the next attempt writes a new one).
const verifyTries = 3

// verify reads the committed blob back and checks it is, byte for byte, the blocks the builder
// compressed (archive.VerifyBlob). This also yields the SHA-256, which cannot be computed while writing
// since the blocks are produced out of order. A mismatch is transient: the next attempt writes a new blob.
func (s *Snapshotter) verify(ctx context.Context, path string, want archive.Result, prog *progress) (archive.Verified, error) {
	delay := s.retryDelay()
	for try := 1; ; try++ {
		v, err := s.verifyOnce(ctx, path, want, prog)
		if err == nil || try == verifyTries || ctx.Err() != nil || backup.CodeOf(err) != backup.CodeTransient ||
			errors.As(err, new(*archive.BlobMismatchError)) {
			return v, err
		}
		s.Log.Warn().Err(err).Str("blob", path).Int("try", try).Msg("reading the archive back failed; reading it again")
		if err := sleep(ctx, delay); err != nil {
			return v, err
		}
		delay *= 2
	}
}

func (s *Snapshotter) verifyOnce(ctx context.Context, path string, want archive.Result, prog *progress) (archive.Verified, error) {
	prog.phase("verifying")
	rc, _, err := s.Blobs.OpenArchive(ctx, path)
	if err != nil {
		return archive.Verified{}, err
	}
	defer rc.Close()
	v, err := archive.VerifyBlob(ctx, &countingReader{r: rc, report: prog.verified}, want.Blocks)
	var mismatch *archive.BlobMismatchError
	switch {
	case errors.As(err, &mismatch):
		return v, backup.Wrap(backup.CodeTransient, err, "the written archive did not verify: it is not what was written")
	case err != nil:
		return v, err // the read's own error (blobstore's, already classified) or ctx's
	case v.Size != want.Size:
		return v, backup.Errorf(backup.CodeTransient, "the written archive did not verify: it has %d bytes, %d were written", v.Size, want.Size)
	}
	return v, nil
}

func (s *Snapshotter) deleteQuietly(path string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Blobs.DeleteBlob(ctx, path); err != nil && !errors.Is(err, context.Canceled) {
		s.Log.Warn().Err(err).Str("blob", path).Msg("could not delete an archive that did not verify")
	}
}

// progress tells req.Progress how the build advances, so that the caller's watchdog, which counts any
// change as an advance, sees a healthy build advance in every phase: while dumping, BytesDone is the
// uncompressed bytes archived and FilesDone the files added or found missing; while finishing (the last
// blocks staged, the commit), BytesDone is the compressed bytes staged; while verifying, the bytes read
// back. Calls are serialised, so values reach the caller in order.
type progress struct {
	report func(backup.Progress) // nil: nobody listens

	mu          sync.Mutex
	cur         backup.Progress
	added       int   // files in the archive
	lost        int   // files without a blob
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

// archived is the builder's Progress callback.
func (p *progress) archived(a archive.Progress) {
	p.update(func(c *backup.Progress) {
		p.added = a.Files
		c.BytesDone, c.FilesDone = a.DumpBytes+a.FilesBytes, p.added+p.lost
	})
}

func (p *progress) missing() {
	p.update(func(c *backup.Progress) {
		p.lost++
		c.FilesDone = p.added + p.lost
	})
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
