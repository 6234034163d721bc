// Package snapshotter makes a snapshot archive in one streaming pass: pg_dump of the environment's
// database and its file-document blobs, concurrently, into the Mendix archive format, staged as blocks
// of one blob and committed only when everything succeeded; then the blob is read back and verified.
// It implements backup.Snapshotter by composing internal/pg, internal/archive and internal/blobstore.
package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
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
	// Archive tunes compression and block sizes.
	Archive archive.Options
	Log     zerolog.Logger
}

var _ backup.Snapshotter = (*Snapshotter)(nil)

// FileSource opens an environment's file-document blob; found is false when it does not exist.
type FileSource interface {
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

	var dumpBytes, filesDone atomic.Int64
	report := func(phase string) {
		if req.Progress != nil {
			req.Progress(backup.Progress{Phase: phase, BytesDone: dumpBytes.Load(), FilesDone: int(filesDone.Load()), FilesTotal: len(files)})
		}
	}
	opts := s.Archive
	opts.Progress = func(p archive.Progress) {
		dumpBytes.Store(p.DumpBytes + p.FilesBytes)
		filesDone.Store(int64(p.Files))
		report("dumping")
	}
	builder := archive.NewBuilder(ctx, s.Blobs.NewBlockSink(req.BlobPath), opts)

	var warnMu sync.Mutex
	warnings := append([]string(nil), dump.Warnings()...)
	warn := func(w string) {
		warnMu.Lock()
		defer warnMu.Unlock()
		warnings = append(warnings, w)
	}

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
		err := s.copyFiles(gctx, env, files, builder, warn)
		filesEnded = time.Since(start)
		return err
	})
	if err := g.Wait(); err != nil {
		builder.Abort()
		return backup.SnapshotResult{}, err
	}

	report("finishing")
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

	report("verifying")
	verified, err := s.verify(ctx, req.BlobPath, res)
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
		DumpSizeBytes: res.DumpSize, FilesBytes: res.FilesSize, FilesCount: res.Files, Warnings: warnings,
	}, nil
}

// copyFiles streams every listed file blob into the archive with FileWorkers downloads in flight. A
// row whose blob is missing becomes a warning (docs/archive-format.md), never a silent omission.
func (s *Snapshotter) copyFiles(ctx context.Context, env backup.Environment, files []pg.File, b *archive.Builder, warn func(string)) error {
	workers := s.FileWorkers
	if workers <= 0 {
		workers = 16
	}
	next := make(chan pg.File)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for _, f := range files {
			select {
			case next <- f:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for i := 0; i < workers; i++ {
		g.Go(func() error {
			for f := range next {
				if err := s.copyFile(gctx, env, f, b, warn); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func (s *Snapshotter) copyFile(ctx context.Context, env backup.Environment, f pg.File, b *archive.Builder, warn func(string)) error {
	r, size, found, err := s.files().OpenFile(ctx, env.Files.Container, env.Files.Prefix+f.UUID)
	if err != nil {
		return err
	}
	if !found {
		warn(fmt.Sprintf("file document %s has no blob in container %s; it is not in the snapshot", f.UUID, env.Files.Container))
		return nil
	}
	defer r.Close()
	if err := b.AddFile(f.UUID, size, r); err != nil {
		return fmt.Errorf("archive file %s: %w", f.UUID, err)
	}
	return nil
}

// verify reads the committed blob back and checks it is, byte for byte, the blocks the builder
// compressed (archive.VerifyBlob). This also yields the SHA-256, which cannot be computed while writing
// since the blocks are produced out of order. A mismatch is transient: the next attempt writes a new blob.
func (s *Snapshotter) verify(ctx context.Context, path string, want archive.Result) (archive.Verified, error) {
	rc, _, err := s.Blobs.OpenArchive(ctx, path)
	if err != nil {
		return archive.Verified{}, err
	}
	defer rc.Close()
	v, err := archive.VerifyBlob(ctx, rc, want.Blocks)
	if err != nil {
		return v, backup.Wrap(backup.CodeTransient, err, "the written archive did not verify")
	}
	if v.Size != want.Size {
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
