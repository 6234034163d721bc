package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

const (
	stderrTailBytes = 8 << 10          // how much of pg_dump's stderr is kept for error messages
	closeTimeout    = 10 * time.Second // bound on ending the snapshot transaction
)

// Dump is one running dump started by Dumper.Start. Reader, Wait and Abort may be called from different
// goroutines; Files, DatabaseSize and Warnings are fixed when Start returns.
//
// The server session behind pg_dump ends when pg_dump's connection closes; if pg_dump is killed while
// its session waits for a table lock, the server notices only when that wait ends, which
// LockWaitTimeout bounds. Should the worker process die instead, pg_dump fails on its next write to
// the closed pipe and the server ends both sessions.
type Dump struct {
	conn     Conn
	log      zerolog.Logger
	lockWait time.Duration
	closeCtx context.Context // Start's context without its cancellation, for closing the snapshot

	db       *pgx.Conn
	tx       pgx.Tx
	snapshot string
	dbSize   int64
	files    []File
	warnings []string

	client        Client // whose pg_dump runs
	pgDumpVersion string // its version: "17.10"
	serverVersion string // the server's server_version: "17.10", "16.4 (Debian 16.4-1)"
	head          []byte // the first bytes of the output, up to the archive version

	cmd     *exec.Cmd
	out     *os.File // read end of pg_dump's stdout
	stderr  *tailBuffer
	started time.Time
	read    atomic.Int64 // bytes handed out by Reader

	exited  chan struct{} // closed once pg_dump has been reaped; exitErr is set before
	exitErr error

	mu       sync.Mutex
	abortErr error // why the dump was aborted (ErrAborted or the context's error); nil if it was not

	endOnce sync.Once
	ended   chan struct{} // closed once the snapshot is closed and result is final
	result  error
}

// Files lists the file documents in the snapshot: rows of system$filedocument with hascontents = true
// and deleteafterdownload = false and a valid UUID, ordered by UUID, each UUID once. Empty when the table
// does not exist.
func (dump *Dump) Files() []File { return dump.files }

// DatabaseSize is pg_database_size of the database when the snapshot was taken.
func (dump *Dump) DatabaseSize() int64 { return dump.dbSize }

// Warnings are problems that do not stop the dump (file rows without a valid UUID, repeated UUIDs),
// at most about 50 of them followed by a count of the rest.
func (dump *Dump) Warnings() []string { return dump.warnings }

// PgDumpVersion is the version of the pg_dump that makes the dump ("15.18"), chosen by the server's.
func (dump *Dump) PgDumpVersion() string { return dump.pgDumpVersion }

// ServerVersion is the database server's server_version ("17.10").
func (dump *Dump) ServerVersion() string { return dump.serverVersion }

// archiveHeaderLen is how much of a custom-format dump holds its archive version: "PGDMP" and one
// byte each for major, minor and revision.
const archiveHeaderLen = 8

// ArchiveVersion is the archive version of the dump's header ("1.14"), read as it streamed past;
// "" until Reader has handed out the header. Call it after reading Reader, from the same goroutine
// or after synchronising with it.
func (dump *Dump) ArchiveVersion() string { return archiveOf(dump.head) }

// MendixWarning is a warning for the snapshot when the dump's archive version is newer than 1.14,
// the newest Mendix Cloud is documented to accept (pg_dump 16 and later write newer ones, and a
// server of PostgreSQL 16 or later needs them): the archive restores here, but an upload of it to
// Mendix Cloud may be refused. "" otherwise, and before the header has streamed past.
func (dump *Dump) MendixWarning() string {
	v := dump.ArchiveVersion()
	if !newerThanMendix(v) {
		return ""
	}
	return fmt.Sprintf("the dump was made by pg_dump %d (archive version %s) because the database server runs PostgreSQL %s: "+
		"Mendix Cloud may refuse to import it, as it accepts archive version 1.14 (pg_dump 15 and earlier)",
		dump.client.Major, v, majorOf(dump.serverVersion))
}

// majorOf is the leading number of a version string: "17" of "17.10 (Debian)".
func majorOf(version string) string {
	end := 0
	for end < len(version) && version[end] >= '0' && version[end] <= '9' {
		end++
	}
	if end == 0 {
		return version
	}
	return version[:end]
}

// Reader streams pg_dump's output: a custom-format archive with uncompressed data. It ends with io.EOF
// only when pg_dump succeeded; when pg_dump failed or the dump was aborted, the final Read returns the
// same error as Wait, so a truncated dump is never mistaken for a complete one. Read it from one
// goroutine.
func (dump *Dump) Reader() io.Reader { return dumpReader{dump} }

type dumpReader struct{ dump *Dump }

func (r dumpReader) Read(p []byte) (int, error) {
	n, err := r.dump.out.Read(p)
	r.dump.read.Add(int64(n))
	if h := r.dump.head; len(h) < archiveHeaderLen {
		r.dump.head = append(h, p[:min(n, archiveHeaderLen-len(h))]...)
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed):
		if failure := r.dump.failure(); failure != nil {
			return n, failure
		}
		return n, err
	default:
		return n, fmt.Errorf("read pg_dump output: %w", err)
	}
}

// Wait waits for pg_dump to exit, closes the snapshot transaction and returns nil when the dump is
// complete. Call it after reading Reader to its end (pg_dump blocks while its output is not read); to
// give up earlier, call Abort. Errors are *backup.Error (see the package comment) carrying the end of
// pg_dump's stderr, or wrap ErrAborted or the context's error. Calling Wait again returns the same.
func (dump *Dump) Wait() error {
	dump.end()
	return dump.result
}

// Abort kills pg_dump (its whole process group) if it is still running, waits for it to exit and
// rolls the snapshot transaction back. It is safe to call at any time, more than once, and after Wait,
// where it does nothing.
func (dump *Dump) Abort() { dump.abort(ErrAborted) }

func (dump *Dump) abort(reason error) {
	dump.mu.Lock()
	select {
	case <-dump.exited:
	default:
		if dump.abortErr == nil {
			dump.abortErr = reason
			// A negative pid addresses the process group pg_dump leads (Setpgid). pg_dump has not been
			// reaped yet (exited is open), so its pid cannot have been reused.
			if err := syscall.Kill(-dump.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				dump.log.Warn().Err(err).Int("pid", dump.cmd.Process.Pid).Msg("could not kill pg_dump")
			}
		}
	}
	dump.mu.Unlock()
	dump.end()
}

// watch aborts the dump when Start's context ends first.
func (dump *Dump) watch(ctx context.Context) {
	select {
	case <-ctx.Done():
		dump.abort(ctx.Err())
	case <-dump.ended:
	}
}

// pgDumpArgs are pg_dump's arguments before the snapshot, lock wait and connection.
//
// No --schema=public: with it pg_dump 15 writes `CREATE SCHEMA public`, which fails in every fresh
// database (pg_restore exits 1), and leaves out extensions, so an index using an extension's operator
// class fails too. Without it, public is dumped as initdb's schema (no CREATE; pg_restore --list shows
// no SCHEMA entry while its owner is pg_database_owner) with all its objects and the extensions; a
// Mendix database has nothing outside public, so the archive still holds schema public only.
// Publications and subscriptions are replication settings of the source server, not the app's data; a
// subscription (or FOR ALL TABLES) needs a superuser to restore.
var pgDumpArgs = []string{
	"--format=custom",
	"--compress=0", // the archive layer compresses once
	"--no-owner",
	"--no-privileges",
	"--no-publications",
	"--no-subscriptions",
	"--no-password", // never prompt
}

// pgDumpCommandArgs are pg_dump's arguments for this dump; the connection, with its sslmode and
// sslrootcert, is in --dbname.
func (dump *Dump) pgDumpCommandArgs() []string {
	return append(slices.Clone(pgDumpArgs),
		"--snapshot="+dump.snapshot,
		"--lock-wait-timeout="+strconv.FormatInt(max(dump.lockWait.Milliseconds(), 1), 10),
		"--dbname="+dump.conn.conninfo(),
	)
}

// toolCommand is pg_dump's or pg_restore's command: the password in its environment, the end of its
// stderr kept, its own process group, and Pdeathsig: if the handler dies (crash, host restart), pg_dump
// must not live on holding ACCESS SHARE locks that make the app's next start time out, nor pg_restore
// on writing into a database nobody will commit.
func toolCommand(bin string, args []string, pw string) (*exec.Cmd, *tailBuffer) {
	cmd := exec.Command(bin, args...)
	cmd.Env = pgDumpEnv(pw)
	stderr := &tailBuffer{max: stderrTailBytes}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, stderr
}

// startPgDump starts pg_dump on the exported snapshot with its stdout on a pipe of ours.
func (dump *Dump) startPgDump(bin, pw string) error {
	args := dump.pgDumpCommandArgs()
	r, w, err := os.Pipe()
	if err != nil {
		return backup.Wrap(backup.CodeTransient, fmt.Errorf("create a pipe for pg_dump: %w", err), "the backup service could not start pg_dump")
	}
	cmd, stderr := toolCommand(bin, args, pw)
	cmd.Stdout = w
	dump.stderr = stderr
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return backup.Wrap(backup.CodeInternal, fmt.Errorf("start %s: %w", bin, err), "the backup service could not start pg_dump")
	}
	w.Close() // pg_dump holds the write end now; EOF comes when it exits
	dump.cmd, dump.out, dump.started = cmd, r, time.Now()
	go func() {
		dump.exitErr = cmd.Wait()
		close(dump.exited)
	}()
	return nil
}

// failure is the error the dump ended with, nil on success. It waits for pg_dump to exit.
func (dump *Dump) failure() error {
	<-dump.exited
	dump.mu.Lock()
	reason := dump.abortErr
	dump.mu.Unlock()
	switch {
	case reason != nil:
		return fmt.Errorf("pg_dump of %s: %w", dump.conn, reason)
	case dump.exitErr != nil:
		return classifyDumpFailure(dump.conn, dump.lockWait, dump.exitErr, dump.stderr.String())
	}
	return nil
}

// end waits for pg_dump, fixes the result and closes everything, once.
func (dump *Dump) end() {
	dump.endOnce.Do(func() {
		dump.result = dump.failure()
		dump.out.Close()
		dump.closeSnapshot()
		log := dump.log.With().Str("snapshot", dump.snapshot).Int64("bytes", dump.read.Load()).
			Dur("duration", time.Since(dump.started)).Logger()
		switch {
		case dump.result == nil:
			if tail := dump.stderr.String(); tail != "" {
				log.Warn().Str("stderr", tail).Msg("pg_dump succeeded with messages")
			}
			log.Info().Msg("pg_dump finished")
		case errors.Is(dump.result, ErrAborted), errors.Is(dump.result, context.Canceled),
			errors.Is(dump.result, context.DeadlineExceeded):
			log.Info().Err(dump.result).Msg("pg_dump aborted")
		default:
			log.Warn().Err(dump.result).Msg("pg_dump failed")
		}
		close(dump.ended)
	})
}

// closeSnapshot rolls the snapshot transaction back (it is read-only: nothing is lost) and closes the
// connection. Safe with a nil transaction or connection.
func (dump *Dump) closeSnapshot() {
	ctx := dump.closeCtx
	if ctx == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, closeTimeout)
	defer cancel()
	if dump.tx != nil {
		if err := dump.tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
			dump.log.Debug().Err(err).Msg("roll back the snapshot transaction")
		}
	}
	if dump.db != nil {
		if err := dump.db.Close(ctx); err != nil {
			dump.log.Debug().Err(err).Msg("close the snapshot connection")
		}
	}
}

// queryError classifies a failed query in the snapshot transaction.
func (dump *Dump) queryError(ctx context.Context, err error, what string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s in database %s: %w", what, dump.conn, errors.Join(ctx.Err(), err))
	}
	code := sqlState(err)
	switch code {
	case sqlLockNotAvailable:
		return backup.Wrap(backup.CodeTransient, err,
			"could not lock table system$filedocument within %s: the app holds a conflicting lock; retry when the app is idle", dump.lockWait)
	case sqlInsufficientPriv:
		return backup.Wrap(backup.CodeInvalidState, err, "role %q may not %s in database %q", dump.conn.User, what, dump.conn.Database)
	case sqlUndefinedColumn:
		return backup.Wrap(backup.CodeInvalidState, err,
			"could not %s in database %q: it lacks a column Mendix uses (id, __uuid__, size, hascontents, deleteafterdownload)",
			what, dump.conn.Database)
	}
	return backup.Wrap(backup.CodeTransient, err, "%s in database %s", what, dump.conn)
}
