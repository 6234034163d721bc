package snapshotter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/pg"
)

// Ingesting an upload: a Mendix archive a user uploaded becomes a snapshot in the incremental layout
// (docs/snapshot-layout.md) in one streaming pass over it. archive.Inspect checks it against
// docs/archive-format.md ("Accepting an upload") and hands on db/db.backup and each file as they
// stream past: the dump goes through pg.CheckDump (pg_restore --list and a walk of its blocks) into a
// DumpWriter, the same dump blob a backup writes, and each file into the environment's file store
// (ingest_files.go), while the rest of the archive is still being read.

var _ backup.Ingester = (*Snapshotter)(nil)

// UploadSource reads upload blobs (blobstore.Store).
type UploadSource interface {
	// OpenUpload streams the upload blob at path as it was completed, every range conditional on its
	// ETag etag, and gives its size. A blob changed or removed since is a CodeInvalidParameters error,
	// from OpenUpload or from any Read.
	OpenUpload(ctx context.Context, path, etag string) (io.ReadCloser, int64, error)
}

var _ UploadSource = (*blobstore.Store)(nil)

func (s *Snapshotter) uploads() UploadSource {
	if s.Uploads != nil {
		return s.Uploads
	}
	return s.Blobs
}

// dumpHeadBytes is how much of db/db.backup is read before the dump writer starts: enough for the
// custom-format header, which says whether the dump's data is compressed already and which pg_restore
// reads its archive version.
const dumpHeadBytes = 4096

// compressedDumpLevel is the gzip level of the dump blob of a dump whose data pg_dump compressed
// already (its default). Recompressing zlib output is wasted work: on a pg_dump -Z6 dump klauspost's
// level 1 runs at about 330 MB/s a core and writes stored blocks for all but 0.01%, where level 6
// runs at 65 MB/s for 7% less. (Stored blocks alone would run at 6 GB/s, but archive.Options has no
// level for them.) Any deflate segments ending byte-aligned splice, so Assemble reads the blob as it
// does a backup's.
const compressedDumpLevel = 1

// Ingest reads the upload blob once and stores it as the parts of snapshot req.SnapshotID (see
// backup.Ingester). Nothing is committed at req.DumpPath and no manifest is left on any error; store
// objects written before the error are young objects no manifest names, which the collector deletes
// after its grace period.
func (s *Snapshotter) Ingest(ctx context.Context, req backup.IngestRequest) (backup.IngestResult, error) {
	start := time.Now()
	defer debug.FreeOSMemory() // as after a backup: the buffers are garbage once it ends
	body, size, err := s.uploads().OpenUpload(ctx, req.UploadPath, req.UploadETag)
	if err != nil {
		return backup.IngestResult{}, err
	}
	defer body.Close()
	if err := s.UploadLimits.CheckArchiveSize(size); err != nil {
		return backup.IngestResult{}, err
	}

	prog := &progress{report: req.Progress, cur: backup.Progress{Phase: "validating"}}
	g, gctx := errgroup.WithContext(ctx)
	in := &ingest{s: s, req: req, ctx: gctx, g: g, prog: prog, start: start}
	in.files = newFileIngest(s, req, gctx, g, prog)
	defer in.abort()
	g.Go(in.files.begin)
	var m archive.Manifest
	g.Go(func() error {
		read := &countingReader{r: body, report: func(n int64) { prog.update(func(p *backup.Progress) { p.BytesDone = n }) }}
		var err error
		m, err = archive.Inspect(gctx, read, s.UploadLimits, in.visit)
		return err
	})
	err = g.Wait()
	read := time.Since(start)
	var stored storedFiles
	if err == nil {
		prog.phase("finishing")
		stored, err = in.files.finish(ctx)
	}
	if err != nil {
		if in.committed {
			s.deleteQuietly(req.DumpPath)
			s.deleteQuietly(req.ManifestPath)
		}
		return backup.IngestResult{}, err
	}
	dump, verified := in.written, in.verified

	res := backup.IngestResult{
		SnapshotResult: backup.SnapshotResult{
			SizeBytes: dump.RawSize + stored.FilesBytes, SHA256: verified.SHA256,
			DumpSizeBytes: dump.RawSize, DumpBlobBytes: verified.Size, FilesBytes: stored.FilesBytes, FilesCount: len(stored.Entries),
			NewFilesCount: stored.NewFiles, NewFilesBytes: stored.NewBytes,
			StoredBytes:  verified.Size + stored.ManifestBytes + stored.NewBytes,
			StoreObjects: stored.StoreObjects, StoreBytes: stored.StoreBytes,
			Warnings: boundedWarnings(m.Warnings),
		},
		ArchiveBytes: m.CompressedSize, ArchiveSHA256: m.SHA256, DumpVersion: m.DumpVersion,
	}
	if md := m.Metadata; md != nil {
		res.ModelVersion = clip(md.ModelVersion)
		if n, err := strconv.ParseInt(md.DatabaseSize, 10, 64); err == nil && n >= 0 {
			res.DatabaseSizeBytes = n
		}
	}
	s.Log.Info().Str("dump", req.DumpPath).Int64("archive", m.CompressedSize).Int64("dump_blob", verified.Size).
		Int64("dump_size", dump.RawSize).Str("dump_version", m.DumpVersion).Int("dump_level", in.level).
		Int("dump_tables", in.listed.Tables).Int("files", len(stored.Entries)).Int("new_files", stored.NewFiles).
		Int64("new_bytes", stored.NewBytes).Dur("dump_read", in.dumpRead.Sub(start)).Dur("read", read).Dur("done", time.Since(start)).Msg("upload stored as a snapshot")
	return res, nil
}

// ingest is the state of one Ingest call.
type ingest struct {
	s    *Snapshotter
	req  backup.IngestRequest
	ctx  context.Context // the reading's: it ends when anything fails
	g    *errgroup.Group
	prog *progress

	files  *fileIngest
	dump   *archive.DumpWriter // nil until db/db.backup is met
	check  *pg.DumpCheck
	level  int
	listed pg.DumpList
	// The dump blob, committed and verified while the files still stream past (Mendix puts them after
	// the dump): set when committed is.
	committed bool
	written   archive.CompressedResult
	verified  archive.Verified
	// Phase ends, logged at the end: where a slow ingest spent its time.
	start, dumpRead time.Time
}

// visit is Inspect's callback, in archive order.
func (in *ingest) visit(e archive.Entry, r io.Reader) error {
	switch e.Kind {
	case archive.EntryDatabase:
		return in.writeDump(r, e.Size)
	case archive.EntryFile:
		return in.files.add(e, r)
	}
	return nil
}

// writeDump streams db/db.backup into the dump writer and, on the way, into the check; the check's
// refusal stops the stream as soon as pg_restore has given it.
func (in *ingest) writeDump(r io.Reader, size int64) error {
	head := make([]byte, dumpHeadBytes)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) { // a dump shorter than the head
		return err
	}
	head = head[:n]
	opts := in.s.Archive
	if compressed, ok := pg.DumpCompressed(head); ok && compressed {
		opts.Level = compressedDumpLevel
	}
	in.level = opts.Level
	if in.check, err = in.s.Dumper.CheckDump(in.ctx, archive.DumpName, head); err != nil {
		return err
	}
	in.dump = archive.NewDumpWriter(in.ctx, stagedSink{in.s.Blobs.NewBlockSink(in.req.DumpPath), in.prog.staged}, opts)
	src := io.TeeReader(&checkedReader{r: io.MultiReader(bytes.NewReader(head), r), check: in.check}, in.check)
	if _, err := in.dump.ReadFrom(src); err != nil {
		if refused := in.check.Err(); refused != nil {
			return refused
		}
		return fmt.Errorf("store the database dump: %w", err)
	}
	if in.listed, err = in.check.Wait(); err != nil {
		return err
	}
	in.dumpRead = time.Now()
	in.g.Go(func() error { return in.finishDump(size) })
	return nil
}

// finishDump commits the dump blob and reads it back to verify it (see Snapshotter.verify), while
// the rest of the archive is read; its progress is not reported, the reading's is.
func (in *ingest) finishDump(size int64) error {
	res, err := in.dump.Finish()
	if err != nil {
		return fmt.Errorf("write the dump blob: %w", err)
	}
	in.committed, in.written = true, res
	if res.RawSize != size {
		return backup.Errorf(backup.CodeInternal, "the dump blob holds %d bytes where %s has %d", res.RawSize, archive.DumpName, size)
	}
	in.verified, err = in.s.verify(in.ctx, in.req.DumpPath, res.Blocks, res.Size, &progress{})
	return err
}

// checkedReader fails the stream once the check has refused the dump.
type checkedReader struct {
	r     io.Reader
	check *pg.DumpCheck
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if err := c.check.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// abort stops whatever is still running; after a successful Ingest it does nothing.
func (in *ingest) abort() {
	if in.check != nil {
		in.check.Abort()
	}
	if in.dump != nil {
		in.dump.Abort()
	}
}

// boundedWarnings keeps the archive's warnings (Inspect already counts those beyond its own bound)
// within the bounds of a snapshot's.
func boundedWarnings(ws []string) []string {
	var out []string
	used := 0
	for i, w := range ws {
		w = clip(w)
		if used+len(w) > maxWarningsBytes-100 {
			return append(out, backup.Count(len(ws)-i, "more warning")+" about the archive not shown")
		}
		out = append(out, w)
		used += len(w)
	}
	return out
}
