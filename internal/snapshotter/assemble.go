package snapshotter

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"runtime/debug"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
)

// Assembled describes an archive Assemble wrote and verified.
type Assembled struct {
	Path       string
	SizeBytes  int64
	SHA256     string
	FilesCount int
	FilesBytes int64
}

// Assemble writes the Mendix archive (.metadata, db/db.backup, tree/xx/yy/<uuid>; docs/archive-format.md)
// of a Finished incremental snapshot to dstPath in the snapshots container, in one pass with the
// archive builder: the dump's compressed blocks are staged as they are (no inflating, no recompressing)
// and the files are read from the store and compressed, each checked against its manifest entry (size,
// and MD5 when the source had one). It then reads the archive back to verify it and returns its size
// and SHA-256. progress, if not nil, is called as it advances. Nothing is committed on error.
func (s *Snapshotter) Assemble(ctx context.Context, sn backup.Snapshot, dstPath string, report func(backup.Progress)) (Assembled, error) {
	defer debug.FreeOSMemory()
	if sn.Status != backup.SnapshotFinished || !sn.Incremental() {
		return Assembled{}, backup.Errorf(backup.CodeSnapshotNotReady, "snapshot %s has no parts to assemble an archive from", sn.ID)
	}
	dump, err := s.openDump(ctx, sn)
	if err != nil {
		return Assembled{}, err
	}
	defer dump.body.Close()

	prog := &progress{report: report, cur: backup.Progress{Phase: "assembling", FilesTotal: sn.FilesCount}}
	opts := s.Archive
	opts.Progress = prog.archived
	opts.ModTime = sn.CreatedAt
	builder := archive.NewBuilder(ctx, stagedSink{s.Blobs.NewBlockSink(dstPath), prog.staged}, opts)
	defer builder.Abort() // no-op once committed

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if _, err := builder.WriteCompressedDatabase(dump.hashedBody(), dump.bodySize, sn.DumpSizeBytes, dump.crc); err != nil {
			return err
		}
		// The splice trusts the bytes it stages: check that they are the blob the backup verified.
		if got := dump.sum(); got != sn.SHA256 {
			return dumpDamaged(sn, fmt.Sprintf("its SHA-256 is %s, the backup recorded %s", got, sn.SHA256))
		}
		return nil
	})
	g.Go(func() error { return s.addFiles(gctx, sn, builder) })
	if err := g.Wait(); err != nil {
		return Assembled{}, err
	}

	prog.phase("finishing")
	meta := archive.Metadata{
		Duration:     strconv.FormatInt(int64(sn.FinishedAt.Sub(sn.CreatedAt).Round(time.Second)/time.Second), 10),
		ModelVersion: sn.ModelVersion,
		DatabaseSize: strconv.FormatInt(sn.DatabaseSizeBytes, 10),
	}
	res, err := builder.Finish(meta)
	if err != nil {
		return Assembled{}, fmt.Errorf("write the archive: %w", err)
	}
	if res.Files != sn.FilesCount || res.FilesSize != sn.FilesBytes {
		s.deleteQuietly(dstPath)
		return Assembled{}, backup.Errorf(backup.CodeInternal, "the archive of snapshot %s holds %s of %d bytes, its record %s of %d bytes",
			sn.ID, backup.Count(res.Files, "file"), res.FilesSize, backup.Count(sn.FilesCount, "file"), sn.FilesBytes)
	}
	verified, err := s.verify(ctx, dstPath, res.Blocks, res.Size, prog)
	if err != nil {
		s.deleteQuietly(dstPath)
		return Assembled{}, err
	}
	return Assembled{Path: dstPath, SizeBytes: verified.Size, SHA256: verified.SHA256, FilesCount: res.Files, FilesBytes: res.FilesSize}, nil
}

// dumpParts is a dump blob opened for splicing: its deflate segments, and its head and tail, which are
// hashed with the body to check the blob against the SHA-256 its backup recorded.
type dumpParts struct {
	head, tail []byte
	body       io.ReadCloser
	bodySize   int64
	crc        uint32
	digest     hash.Hash
}

// hashedBody reads the body into the digest, after the head.
func (d *dumpParts) hashedBody() io.Reader {
	d.digest = sha256.New()
	d.digest.Write(d.head)
	return io.TeeReader(d.body, d.digest)
}

// sum is the blob's SHA-256, once the body has been read.
func (d *dumpParts) sum() string {
	d.digest.Write(d.tail)
	return hex.EncodeToString(d.digest.Sum(nil))
}

// openDump checks the dump blob's gzip header and trailer and opens its deflate segments.
func (s *Snapshotter) openDump(ctx context.Context, sn backup.Snapshot) (*dumpParts, error) {
	size, err := s.Blobs.BlobSize(ctx, sn.DumpPath)
	if err != nil {
		return nil, err
	}
	if size < archive.GzipHeaderSize+archive.GzipTrailerSize {
		return nil, dumpDamaged(sn, fmt.Sprintf("it has only %d bytes", size))
	}
	d := &dumpParts{bodySize: size - archive.GzipHeaderSize - archive.GzipTrailerSize}
	if d.head, err = s.readRange(ctx, sn.DumpPath, 0, archive.GzipHeaderSize); err != nil {
		return nil, err
	}
	if err := archive.CheckGzipHeader(d.head); err != nil {
		return nil, dumpDamaged(sn, err.Error())
	}
	if d.tail, err = s.readRange(ctx, sn.DumpPath, size-archive.GzipTrailerSize, archive.GzipTrailerSize); err != nil {
		return nil, err
	}
	crc, isize, err := archive.ParseGzipTrailer(d.tail)
	if err != nil {
		return nil, dumpDamaged(sn, err.Error())
	}
	if isize != uint32(sn.DumpSizeBytes) {
		return nil, dumpDamaged(sn, fmt.Sprintf("its length mod 2^32 is %d, the record's dump has %d bytes", isize, sn.DumpSizeBytes))
	}
	d.crc = crc
	if d.body, err = s.Blobs.OpenRange(ctx, sn.DumpPath, archive.GzipHeaderSize, d.bodySize); err != nil {
		return nil, err
	}
	return d, nil
}

func dumpDamaged(sn backup.Snapshot, why string) error {
	return backup.Errorf(backup.CodeInternal, "the database dump of snapshot %s is damaged: %s", sn.ID, why)
}

func (s *Snapshotter) readRange(ctx context.Context, path string, off, n int64) ([]byte, error) {
	rc, err := s.Blobs.OpenRange(ctx, path, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// addFiles reads the manifest and adds every file from the store, FileWorkers at a time.
func (s *Snapshotter) addFiles(ctx context.Context, sn backup.Snapshot, b *archive.Builder) error {
	workers := s.FileWorkers
	if workers <= 0 {
		workers = 16
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	_, err := s.Blobs.ReadManifest(gctx, sn.ManifestPath, func(e backup.ManifestEntry) error {
		if gctx.Err() != nil {
			return context.Cause(gctx)
		}
		g.Go(func() error { return s.addFile(gctx, sn, e, b) })
		return nil
	})
	if werr := g.Wait(); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("read the manifest of snapshot %s: %w", sn.ID, err)
	}
	return nil
}

// addFile adds one file from the store, reading it again after a failure a retry can fix (the builder
// leaves a file whose reader failed out entirely, so a retry starts clean).
func (s *Snapshotter) addFile(ctx context.Context, sn backup.Snapshot, e backup.ManifestEntry, b *archive.Builder) error {
	return s.retry(ctx, "reading a file document from the store", e.UUID, func() error {
		if err := b.Err(); err != nil {
			return err
		}
		rc, size, err := s.files().OpenObject(ctx, sn.Namespace, sn.EnvironmentID, e.Object)
		if backup.IsNotFound(err) {
			return backup.Wrap(backup.CodeInternal, err, "file document %s of snapshot %s is missing from the file store", e.UUID, sn.ID)
		} else if err != nil {
			return fmt.Errorf("file document %s: %w", e.UUID, err)
		}
		defer rc.Close()
		if size != e.Size {
			return backup.Errorf(backup.CodeInternal, "file document %s of snapshot %s has %d bytes in the store, its manifest says %d", e.UUID, sn.ID, size, e.Size)
		}
		var r io.Reader = rc
		var digest hash.Hash
		if e.MD5 != nil {
			digest = md5.New()
			r = io.TeeReader(rc, digest)
		}
		if err := b.AddFile(e.UUID, e.Size, r); err != nil {
			return fmt.Errorf("archive file document %s: %w", e.UUID, err)
		}
		if digest != nil && !bytes.Equal(digest.Sum(nil), e.MD5) {
			return backup.Errorf(backup.CodeInternal, "file document %s of snapshot %s in the store does not have the MD5 its manifest records", e.UUID, sn.ID)
		}
		return nil
	})
}
