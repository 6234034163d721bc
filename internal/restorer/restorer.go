package restorer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/pg"
)

// Restorer implements backup.RestoreWorker: the database half here, the files half in Files.
type Restorer struct {
	// DB creates, fills, swaps and drops the databases.
	DB *pg.Restorer
	// Blobs reads the snapshot's dump and lists the target's container.
	Blobs *blobstore.Store
	Files *Files
	// Conn returns how to reach an environment's database server (as for backups).
	Conn func(env backup.Environment) pg.Conn
	Log  zerolog.Logger
}

var _ backup.RestoreWorker = (*Restorer)(nil)

// names are the databases of one restore.
type names struct {
	current, staging, previous string
}

func (r *Restorer) names(w backup.RestoreWork) (pg.Conn, names, error) {
	conn := r.Conn(w.Target)
	// The database the restore began with: the record's, not whatever the environment names now.
	conn.Database = w.Restore.Database
	staging, err := pg.StagingName(conn.Database, w.Restore.ShortID())
	if err != nil {
		return conn, names{}, err
	}
	previous, err := pg.PreviousName(conn.Database, w.Restore.ShortID())
	if err != nil {
		return conn, names{}, err
	}
	return conn, names{current: conn.Database, staging: staging, previous: previous}, nil
}

// Restore restores the dump into a fresh staging database and, at the same time, the files into the
// target's container; then verifies both.
func (r *Restorer) Restore(ctx context.Context, w backup.RestoreWork) (backup.RestoreOutcome, error) {
	defer debug.FreeOSMemory() // the restore's buffers are garbage once it ends; a worker idles most of the day
	conn, n, err := r.names(w)
	if err != nil {
		return backup.RestoreOutcome{}, err
	}
	log := r.Log.With().Str("restore", w.Restore.ID).Str("staging", n.staging).Logger()
	// What an earlier attempt left in the staging database cannot be trusted: start it anew.
	if err := r.DB.DropDatabase(ctx, conn, n.staging); err != nil {
		return backup.RestoreOutcome{}, err
	}
	if err := r.DB.CreateStaging(ctx, conn, n.staging); err != nil {
		return backup.RestoreOutcome{}, err
	}
	prog := &progress{report: w.Progress, total: w.Snapshot.FilesCount}
	var (
		db    databaseResult
		files FilesOutcome
	)
	start := time.Now()
	var dbTook, filesTook time.Duration
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		db, err = r.restoreDatabase(gctx, conn, n.staging, w.Snapshot, prog)
		dbTook = time.Since(start)
		return err
	})
	g.Go(func() error {
		var err error
		files, err = r.Files.Place(gctx, w, prog.files)
		filesTook = time.Since(start)
		return err
	})
	if err := g.Wait(); err != nil {
		return backup.RestoreOutcome{}, err
	}
	prog.phase("verifying")
	out := backup.RestoreOutcome{DatabaseBytes: db.bytes, FilesAdded: files.Added, FilesReplaced: files.Replaced, FilesUnchanged: files.Unchanged}
	// The two checks read different servers (PostgreSQL, Blob Storage): at the same time.
	var warnings []string
	v, vctx := errgroup.WithContext(ctx)
	v.Go(func() error {
		var err error
		out.Tables, out.Rows, err = r.checkRows(vctx, conn, n.staging, db.counts)
		return err
	})
	v.Go(func() error {
		var err error
		warnings, err = r.checkFiles(vctx, conn, n.staging, w)
		return err
	})
	if err := v.Wait(); err != nil {
		return backup.RestoreOutcome{}, err
	}
	out.Warnings = append(db.warnings, warnings...)
	log.Info().Int64("dump_bytes", db.bytes).Int("tables", out.Tables).Int64("rows", out.Rows).
		Int("added", files.Added).Int("replaced", files.Replaced).Int("unchanged", files.Unchanged).
		Dur("database", dbTook).Dur("files", filesTook).Dur("total", time.Since(start)).Msg("restore verified")
	return out, nil
}

// databaseResult is what restoring the dump gave.
type databaseResult struct {
	bytes    int64
	counts   []pg.TableRows
	warnings []string
}

// restoreDatabase streams the dump blob through one decompression into pg_restore, counting the rows
// of each table on the way and hashing the blob, which must be the one recorded when it was made.
func (r *Restorer) restoreDatabase(ctx context.Context, conn pg.Conn, staging string, snap backup.Snapshot, prog *progress) (databaseResult, error) {
	blob, _, err := r.Blobs.OpenArchive(ctx, snap.DumpPath)
	if err != nil {
		return databaseResult{}, err
	}
	defer blob.Close()
	sum := sha256.New()
	gz, err := gzip.NewReader(io.TeeReader(blob, sum))
	if err != nil {
		return databaseResult{}, damaged(snap, err)
	}
	counter := pg.NewRowCounter()
	defer func() { _, _ = counter.Counts() }() // ends its goroutine on every path
	dump := &dumpReader{r: io.TeeReader(gz, counter), prog: prog}
	res, err := r.DB.Restore(ctx, conn, staging, dump)
	if err != nil {
		if errors.Is(err, pg.ErrNoClient) {
			return databaseResult{}, err // no pg_restore fits the server or the dump; none started
		}
		if dump.err != nil && !isTransient(dump.err) {
			return databaseResult{}, damaged(snap, dump.err) // the stream broke, not pg_restore
		}
		if ctx.Err() == nil {
			// pg_restore may have choked on damaged bytes (running out of memory on a garbage
			// length, say) before gzip noticed: a damaged blob is the better explanation, when the
			// rest of it tells so; a damaged blob must not be retried as if it were a passing fault.
			if derr := verifyRest(dump, sum, snap); derr != nil && !isTransient(derr) {
				return databaseResult{}, derr
			}
		}
		return databaseResult{}, err
	}
	// pg_restore stops at the archive's last block: read the rest, so the gzip trailer's CRC and
	// length are checked and the hash covers the whole blob.
	if err := verifyRest(dump, sum, snap); err != nil {
		return databaseResult{}, err
	}
	counts, err := counter.Counts()
	var warnings []string
	if err != nil {
		warnings = append(warnings, "the dump's row counts could not be read ("+err.Error()+"), so they were not compared with the restored tables")
	}
	if res.Messages != "" {
		r.Log.Info().Str("messages", res.Messages).Msg("pg_restore printed messages")
	}
	return databaseResult{bytes: res.Bytes, counts: counts, warnings: warnings}, nil
}

// verifyRest reads the rest of the dump, which checks the gzip trailer, and compares the blob's hash
// with the one recorded when the snapshot was made.
func verifyRest(dump io.Reader, sum hash.Hash, snap backup.Snapshot) error {
	if _, err := io.Copy(io.Discard, dump); err != nil {
		if isTransient(err) {
			return err
		}
		return damaged(snap, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); snap.SHA256 != "" && got != snap.SHA256 {
		return backup.Errorf(backup.CodeInvalidState,
			"the snapshot's database dump is damaged: its SHA-256 is %s where %s was recorded when it was made; nothing of the environment was changed", got, snap.SHA256)
	}
	return nil
}

// damaged explains a dump blob that could not be read to its end.
func damaged(snap backup.Snapshot, err error) error {
	return backup.Wrap(backup.CodeInvalidState, err, "the snapshot's database dump is damaged (%s); nothing of the environment was changed", strings.TrimPrefix(err.Error(), "gzip: "))
}

func isTransient(err error) bool {
	e, ok := errors.AsType[*backup.Error](err)
	return ok && e.Code == backup.CodeTransient
}

// dumpReader is the decompressed dump as pg_restore reads it: it reports the bytes read and keeps the
// first read error, which tells a damaged blob from a failing pg_restore.
type dumpReader struct {
	r    io.Reader
	prog *progress
	err  error
}

func (d *dumpReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.prog.bytes(int64(n))
	if err != nil && err != io.EOF && d.err == nil {
		d.err = err
	}
	return n, err
}

// checkRows compares the restored tables' row counts with the dump's.
func (r *Restorer) checkRows(ctx context.Context, conn pg.Conn, staging string, counts []pg.TableRows) (int, int64, error) {
	if counts == nil {
		return 0, 0, nil
	}
	mismatches, err := r.DB.CheckRowCounts(ctx, conn, staging, counts)
	if err != nil {
		return 0, 0, err
	}
	if len(mismatches) > 0 {
		return 0, 0, backup.Errorf(backup.CodeInvalidState, "the restored database does not hold what the dump does: %s", backup.Truncate(strings.Join(mismatches, "; "), 2000))
	}
	var rows int64
	for _, c := range counts {
		rows += c.Rows
	}
	return len(counts), rows, nil
}

// maxNamed bounds the file documents a verification failure names.
const maxNamed = 20

// checkFiles verifies that every file document of the restored database that has contents has its blob
// in the target's container: those of the snapshot's manifest with the right size (Files.Check), and
// none missing but those the snapshot itself lacked (warned about when it was made).
func (r *Restorer) checkFiles(ctx context.Context, conn pg.Conn, staging string, w backup.RestoreWork) ([]string, error) {
	present := map[string]bool{}
	prefix := w.Target.Files.Prefix
	problems, err := r.Files.CheckListed(ctx, w, func(f blobstore.FileInfo) {
		present[strings.ToLower(strings.TrimPrefix(f.Name, prefix))] = true
	})
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, backup.Errorf(backup.CodeInvalidState, "the restored files do not match the snapshot: %s", strings.Join(problems, "; "))
	}
	var missing []string
	n := 0
	if err := r.DB.FileDocuments(ctx, conn, staging, func(uuid string, _ int64) error {
		if !present[strings.ToLower(uuid)] {
			n++
			if len(missing) < maxNamed {
				missing = append(missing, uuid)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	more := ""
	if n > len(missing) {
		more = fmt.Sprintf(" and %d more", n-len(missing))
	}
	// The manifest check passed, so these had no blob when the snapshot was made either.
	return []string{fmt.Sprintf("%s of the restored database had no blob when the snapshot was made and have none now: %s%s",
		backup.Count(n, "file document"), strings.Join(missing, ", "), more)}, nil
}

// Commit swaps the restored database in.
func (r *Restorer) Commit(ctx context.Context, w backup.RestoreWork) error {
	conn, n, err := r.names(w)
	if err != nil {
		return err
	}
	return r.DB.Swap(ctx, conn, n.current, n.staging, n.previous)
}

// Revert puts the target back as it was before the restore: the databases tell whether the swap
// happened (the previous database exists and the staging one does not), the plan which files changed.
func (r *Restorer) Revert(ctx context.Context, w backup.RestoreWork) error {
	conn, n, err := r.names(w)
	if err != nil {
		return err
	}
	state, err := r.DB.Databases(ctx, conn, n.current, n.staging, n.previous)
	if err != nil {
		return err
	}
	if state[n.previous] {
		if state[n.staging] {
			// A swap back that was interrupted after its transaction cannot look like this: refuse to guess.
			return backup.Errorf(backup.CodeInternal, "cannot put the previous database back: both %q and %q exist", n.staging, n.previous)
		}
		// The restored database goes aside under the staging name, the previous one back in place.
		if err := r.DB.SwapBack(ctx, conn, n.current, n.previous, n.staging); err != nil {
			return err
		}
	}
	if err := r.DB.DropDatabase(ctx, conn, n.staging); err != nil {
		return err
	}
	return r.Files.Revert(ctx, w)
}

// Discard drops the previous database and the undo area once an undo can no longer be asked for.
func (r *Restorer) Discard(ctx context.Context, w backup.RestoreWork) error {
	conn, n, err := r.names(w)
	if err != nil {
		return err
	}
	if err := r.DB.DropDatabase(ctx, conn, n.previous); err != nil {
		return err
	}
	return r.Files.Discard(ctx, w)
}

// progress combines the database's and the files' progress into one report.
type progress struct {
	report func(backup.Progress)
	total  int

	mu        sync.Mutex
	name      string
	dumpBytes atomic.Int64
	filesDone int
}

func (p *progress) send() {
	if p.report == nil {
		return
	}
	p.mu.Lock()
	cur := backup.Progress{Phase: p.name, BytesDone: p.dumpBytes.Load(), FilesDone: p.filesDone, FilesTotal: p.total}
	p.mu.Unlock()
	if cur.Phase == "" {
		cur.Phase = "restoring"
	}
	p.report(cur)
}

func (p *progress) bytes(n int64) {
	if n > 0 {
		p.dumpBytes.Add(n)
		p.send()
	}
}

func (p *progress) files(done, total int) {
	p.mu.Lock()
	p.filesDone, p.total = done, total
	p.mu.Unlock()
	p.send()
}

func (p *progress) phase(name string) {
	p.mu.Lock()
	p.name = name
	p.mu.Unlock()
	p.send()
}
