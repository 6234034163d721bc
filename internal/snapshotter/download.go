package snapshotter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/klauspost/compress/gzip"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
)

var _ backup.DownloadMaker = (*Snapshotter)(nil)

// MakeDownload writes a download of a Finished snapshot: the Mendix archive, assembled in one pass
// (Assemble), or the bare db.backup, the dump blob inflated into a blob of its own. Either is read back
// and checked before it is reported.
func (s *Snapshotter) MakeDownload(ctx context.Context, req backup.DownloadRequest) (backup.DownloadResult, error) {
	if req.DataType == backup.DataDatabaseOnly {
		return s.writeDumpDownload(ctx, req)
	}
	a, err := s.Assemble(ctx, req.Snapshot, req.Path, req.Progress)
	if err != nil {
		return backup.DownloadResult{}, err
	}
	return backup.DownloadResult{SizeBytes: a.SizeBytes, SHA256: a.SHA256}, nil
}

// writeDumpDownload streams the dump blob through one gunzip into a new blob: the dump's bytes are
// hashed on the way in, against the SHA-256 its backup recorded, and the result is read back and
// compared with what was written.
func (s *Snapshotter) writeDumpDownload(ctx context.Context, req backup.DownloadRequest) (backup.DownloadResult, error) {
	defer debug.FreeOSMemory()
	sn := req.Snapshot
	if sn.Status != backup.SnapshotFinished || !sn.Incremental() {
		return backup.DownloadResult{}, backup.Errorf(backup.CodeSnapshotNotReady, "snapshot %s has no database dump to download", sn.ID)
	}
	size, err := s.Blobs.BlobSize(ctx, sn.DumpPath)
	if err != nil {
		return backup.DownloadResult{}, err
	}
	body, err := s.Blobs.OpenRange(ctx, sn.DumpPath, 0, size)
	if err != nil {
		return backup.DownloadResult{}, err
	}
	defer body.Close()
	stored := sha256.New()
	zr, err := gzip.NewReader(io.TeeReader(body, stored))
	if err != nil {
		return backup.DownloadResult{}, dumpDamaged(sn, err.Error())
	}
	prog := &progress{report: req.Progress, cur: backup.Progress{Phase: "writing the database dump"}}
	counted := &countingReader{r: zr, report: func(n int64) { prog.update(func(p *backup.Progress) { p.BytesDone = n }) }}
	// The checks run when the stream ends, before WriteStream commits: a damaged dump commits nothing.
	checked := &endCheck{r: counted, check: func() error {
		if got := hex.EncodeToString(stored.Sum(nil)); got != sn.SHA256 {
			return dumpDamaged(sn, fmt.Sprintf("its SHA-256 is %s, the backup recorded %s", got, sn.SHA256))
		}
		if counted.n != sn.DumpSizeBytes {
			return dumpDamaged(sn, fmt.Sprintf("it inflates to %d bytes, the backup recorded %d", counted.n, sn.DumpSizeBytes))
		}
		return nil
	}}
	res, err := s.Blobs.WriteStream(ctx, req.Path, checked, blobstore.StreamHeaders{
		ContentType: "application/octet-stream", ContentDisposition: `attachment; filename="` + req.FileName + `"`})
	if checked.err != nil {
		return backup.DownloadResult{}, checked.err
	}
	if err != nil {
		return backup.DownloadResult{}, fmt.Errorf("write the database download: %w", err)
	}
	prog.phase("verifying")
	if err := s.checkBlob(ctx, req.Path, res.Size, res.SHA256); err != nil {
		s.deleteQuietly(req.Path)
		return backup.DownloadResult{}, err
	}
	return backup.DownloadResult{SizeBytes: res.Size, SHA256: res.SHA256}, nil
}

// checkBlob reads a committed blob back and compares its size and SHA-256 with what was written.
func (s *Snapshotter) checkBlob(ctx context.Context, path string, size int64, sum string) error {
	rc, err := s.Blobs.OpenRange(ctx, path, 0, size)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return backup.Wrap(backup.CodeTransient, err, "read the download back to verify it")
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != size || got != sum {
		return backup.Errorf(backup.CodeTransient, "the download read back as %d bytes with SHA-256 %s, not the %d bytes written (%s); it is made again", n, got, size, sum)
	}
	return nil
}

// endCheck runs check when r ends (io.EOF) and, if it fails, returns its error instead of io.EOF, so
// that a writer that commits at the end of its stream does not.
type endCheck struct {
	r     io.Reader
	check func() error
	err   error
}

func (e *endCheck) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.Read(p)
	if err == io.EOF {
		if e.err = e.check(); e.err != nil {
			return n, e.err
		}
	}
	return n, err
}
