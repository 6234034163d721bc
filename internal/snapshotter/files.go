package snapshotter

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/pg"
)

// fileTries is how often one file blob is read before the build gives up on it. The SDK has already
// retried each request (blobstore's retry policy); these tries also cover what it cannot, a connection
// that fails while the body is being read.
const fileTries = 3

// copyFiles streams every listed file blob into the archive with FileWorkers downloads in flight. A
// row whose blob is missing goes to missing (a warning, spec/archive.md), never a silent omission.
func (s *Snapshotter) copyFiles(ctx context.Context, env backup.Environment, files []pg.File, b *archive.Builder, missing func(uuid string)) error {
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
				if err := s.copyFile(gctx, env, f, b, missing); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// copyFile adds one file document, reading its blob again from the first byte after a failure a retry
// can fix (a transient *backup.Error from the FileSource, at open or half-way through), up to fileTries
// times with growing pauses. Restarting needs no buffer here: archive.Builder.AddFile leaves a file
// whose reader failed out of the archive entirely and the build goes on (files up to ChunkSize/4 are
// read whole before they enter the tar stream; larger ones stream into blocks of their own, dropped on
// failure). A failure of the build itself (Builder.Err) or of ctx is not retried.
func (s *Snapshotter) copyFile(ctx context.Context, env backup.Environment, f pg.File, b *archive.Builder, missing func(string)) error {
	delay := s.retryDelay()
	for try := 1; ; try++ {
		err := s.addFile(ctx, env, f.UUID, b, missing)
		if err == nil || try == fileTries || b.Err() != nil || ctx.Err() != nil || backup.CodeOf(err) != backup.CodeTransient {
			return err
		}
		s.Log.Warn().Err(err).Str("file", f.UUID).Int("try", try).Msg("reading a file blob failed; reading it again")
		if err := sleep(ctx, delay); err != nil {
			return err
		}
		delay *= 2
	}
}

func (s *Snapshotter) addFile(ctx context.Context, env backup.Environment, uuid string, b *archive.Builder, missing func(string)) error {
	r, size, found, err := s.files().OpenFile(ctx, env.Files.Container, env.Files.Prefix+uuid)
	if err != nil {
		return fmt.Errorf("file document %s: %w", uuid, err)
	}
	if !found {
		missing(uuid)
		return nil
	}
	defer r.Close()
	if err := b.AddFile(uuid, size, r); err != nil {
		return fmt.Errorf("archive file document %s: %w", uuid, err)
	}
	return nil
}

func (s *Snapshotter) retryDelay() time.Duration {
	if s.RetryDelay > 0 {
		return s.RetryDelay
	}
	return time.Second
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
