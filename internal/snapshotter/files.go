package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/pg"
)

// fileTries is how often one file is copied or read before the snapshot gives up on it. The SDK has
// already retried each request (blobstore's retry policy); these tries also cover what it cannot, a
// connection that fails while a body is being read.
const fileTries = 3

// storeFiles puts the dump's file documents into the environment's file store and writes the manifest
// (backup.StoreFiles decides; this supplies the listing and the server-side copies).
func (s *Snapshotter) storeFiles(ctx context.Context, req backup.SnapshotRequest, files []pg.File, prog *progress) (backup.StoreFilesResult, error) {
	env := req.Environment
	uuids := make([]string, len(files))
	for i, f := range files {
		uuids[i] = f.UUID
	}
	return backup.StoreFiles(ctx, s.Blobs, s.Blobs, backup.StoreFilesRequest{
		Namespace: env.Namespace, EnvironmentID: env.ID, SnapshotID: req.SnapshotID, ManifestPath: req.ManifestPath,
		Files: uuids,
		Sources: func(ctx context.Context, wanted map[string]bool) (map[string]backup.SourceFile, error) {
			return s.listSources(ctx, env, wanted)
		},
		Source: func(ctx context.Context, uuid string) (backup.SourceFile, bool, error) {
			found, err := s.listSources(ctx, env, map[string]bool{uuid: true}, uuid)
			f, ok := found[uuid]
			return f, ok, err
		},
		Copy: func(ctx context.Context, f backup.SourceFile, object string, readBack bool) (backup.CopyOutcome, error) {
			return s.copyFile(ctx, env, f, object, readBack)
		},
		Workers: s.FileWorkers, Now: s.now, Progress: prog.filesDecided,
	})
}

// listSources lists the environment's container (under its prefix, or under prefix+only[0] to read one
// blob again) in pages, and returns the blobs of the wanted UUIDs.
func (s *Snapshotter) listSources(ctx context.Context, env backup.Environment, wanted map[string]bool, only ...string) (map[string]backup.SourceFile, error) {
	if len(wanted) == 0 {
		return map[string]backup.SourceFile{}, nil // no file documents: the container is not needed
	}
	prefix := env.Files.Prefix
	if len(only) == 1 {
		prefix += only[0]
	}
	out := make(map[string]backup.SourceFile, len(wanted))
	err := s.files().ListFiles(ctx, env.Files.Container, prefix, func(fi blobstore.FileInfo) error {
		u, ok := strings.CutPrefix(fi.Name, env.Files.Prefix)
		if ok && wanted[u] {
			out[u] = backup.SourceFile{UUID: u, Size: fi.Size, MD5: fi.ContentMD5, ETag: string(fi.ETag)}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the file documents of container %s: %w", env.Files.Container, err)
	}
	return out, nil
}

// copyFile copies one file document into the store, server-side, trying again after a failure a retry
// can fix.
func (s *Snapshotter) copyFile(ctx context.Context, env backup.Environment, f backup.SourceFile, object string, readBack bool) (backup.CopyOutcome, error) {
	dst := blobstore.Layout{}.StoreObject(env.Namespace, env.ID, object)
	// Without readBack, StoreFiles checks the copies from one listing of the store afterwards.
	want := blobstore.CopyCheck{ETag: azcore.ETag(f.ETag), Size: f.Size, MD5: f.MD5, VerifyByListing: !readBack}
	var out backup.CopyOutcome
	err := s.retry(ctx, "copying a file document into the store", f.UUID, func() error {
		res, err := s.files().CopyFile(ctx, env.Files.Container, env.Files.Prefix+f.UUID, dst, want)
		switch {
		case errors.Is(err, blobstore.ErrSourceMissing):
			return fmt.Errorf("file document %s: %w", f.UUID, backup.ErrSourceMissing)
		case errors.Is(err, blobstore.ErrSourceChanged):
			return fmt.Errorf("file document %s: %w", f.UUID, backup.ErrSourceChanged)
		case err != nil:
			return err
		}
		out.Existed = res.Existed
		return nil
	})
	return out, err
}

// retry runs try up to fileTries times while it fails with a transient error, with growing pauses.
func (s *Snapshotter) retry(ctx context.Context, what, uuid string, try func() error) error {
	delay := s.retryDelay()
	for n := 1; ; n++ {
		err := try()
		if err == nil || n == fileTries || ctx.Err() != nil || backup.CodeOf(err) != backup.CodeTransient {
			return err
		}
		s.Log.Warn().Err(err).Str("file", uuid).Int("try", n).Msg(what + " failed; trying again")
		if err := backup.Sleep(ctx, delay); err != nil {
			return err
		}
		delay *= 2
	}
}

func (s *Snapshotter) retryDelay() time.Duration {
	if s.RetryDelay > 0 {
		return s.RetryDelay
	}
	return time.Second
}
