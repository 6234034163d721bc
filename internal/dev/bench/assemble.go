package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/mxazure/backups/internal/archive"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/snapshotter"
	"github.com/mxazure/backups/internal/tablestore"
)

// AssemblyResult is the Mendix archive of one snapshot assembled on demand, as a download asks for it.
type AssemblyResult struct {
	SnapshotID string
	Wall       time.Duration // Assemble, its read-back verification included
	SizeBytes  int64
	FilesCount int
	// PeakRSS is the benchmark process's VmHWM during Assemble (it runs there, not in the handler).
	PeakRSS int64
	Entries TarEntries // what tar -tzf lists in the assembled archive
}

// TarEntries counts what `tar -tzf` lists: regular files (and other non-directories), and directories
// (names ending in "/").
type TarEntries struct {
	Files, Dirs int
}

// ReferenceResult is the naive counterpart of an assembled archive: `tar czf` of the same content
// already on local disk (.metadata, db/db.backup and tree/).
type ReferenceResult struct {
	Tar       time.Duration
	SizeBytes int64
	Entries   TarEntries
}

// Assemble assembles the archive of Finished snapshot snapshotID of envID in this process, as the
// service would for a download (snapshotter.Assemble with a blobstore.Store on the lab's Azurite, gzip
// level level), and times it; after timeout it gives up (the benchmark must end even if assembling
// hangs). Untimed afterwards, the archive is downloaded into workDir, listed with `tar -tzf`, and
// deleted from Storage and disk.
func (l *Lab) Assemble(ctx context.Context, envID, snapshotID string, level int, workDir string, timeout time.Duration) (AssemblyResult, error) {
	res := AssemblyResult{SnapshotID: snapshotID}
	conn := l.Stack.Azurite.ConnectionString()
	tables, err := tablestore.NewFromConnectionString(conn, "")
	if err != nil {
		return res, err
	}
	sn, err := tables.GetSnapshot(ctx, Namespace, envID, snapshotID)
	if err != nil {
		return res, fmt.Errorf("read snapshot %s: %w", snapshotID, err)
	}
	blobs, err := blobstore.NewFromConnectionString(conn, SnapshotsContainer, blobstore.Options{FileStoreContainer: FileStoreContainer})
	if err != nil {
		return res, err
	}
	s := &snapshotter.Snapshotter{Blobs: blobs, Archive: archive.Options{Level: level}, Log: l.hostLog}
	// Outside the environment's folder, so that Storage never counts it.
	dst := "bench-assembled/" + snapshotID + ".tar.gz"
	pid := os.Getpid()
	if err := ResetPeakRSS(pid); err != nil {
		return res, err
	}
	start := time.Now()
	a, err := assembleWithin(ctx, s, sn, dst, timeout)
	res.Wall = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("assemble the archive of snapshot %s: %w", snapshotID, err)
	}
	if _, res.PeakRSS, err = ReadRSS(pid); err != nil {
		return res, err
	}
	res.SizeBytes, res.FilesCount = a.SizeBytes, a.FilesCount
	defer func() { _ = blobs.DeleteBlob(context.WithoutCancel(ctx), dst) }() // a leftover would only be in the lab's Azurite
	local := filepath.Join(workDir, "assembled.tar.gz")
	f, err := os.Create(local)
	if err != nil {
		return res, err
	}
	defer os.Remove(local)
	_, err = l.Blobs.DownloadFile(ctx, SnapshotsContainer, dst, f, &azblob.DownloadFileOptions{Concurrency: 8})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return res, fmt.Errorf("download the assembled archive: %w", err)
	}
	if res.Entries, err = ListTar(ctx, local); err != nil {
		return res, fmt.Errorf("the assembled archive: %w", err)
	}
	return res, nil
}

// assembleWithin runs s.Assemble, cancelled after timeout; if it does not return within a minute of
// that, it is left behind and an error returned.
func assembleWithin(ctx context.Context, s *snapshotter.Snapshotter, sn backup.Snapshot, dst string, timeout time.Duration) (snapshotter.Assembled, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		a   snapshotter.Assembled
		err error
	}
	done := make(chan result, 1)
	go func() {
		a, err := s.Assemble(ctx, sn, dst, nil)
		done <- result{a, err}
	}()
	select {
	case r := <-done:
		return r.a, r.err
	case <-ctx.Done():
	}
	select {
	case r := <-done:
		return r.a, r.err
	case <-time.After(time.Minute):
		return snapshotter.Assembled{}, fmt.Errorf("assembling did not return within %s of its cancellation after %s: it hangs", time.Minute, timeout)
	}
}

// ApplyChanges writes the current content of the changed files into a naive folder's tree, where its
// download put them (tree/xx/yy/<uuid>), so that the folder holds what the environment holds now.
func ApplyChanges(dir string, changed []File) error {
	for _, f := range changed {
		path := filepath.Join(dir, "tree", f.UUID[0:2], f.UUID[2:4], f.UUID)
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("changed file %s is not in the folder: %w", f.UUID, err)
		}
		if err := os.WriteFile(path, f.Content(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// TarReference lays out a kept naive folder (db.backup, tree/) as a Mendix archive's content
// (.metadata, db/db.backup, tree/) and times `tar czf` of it, as a naive download would be made; the
// archive is then listed with `tar -tzf` and removed. meta is the .metadata object's fields.
func TarReference(ctx context.Context, dir string, meta map[string]string) (ReferenceResult, error) {
	var res ReferenceResult
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o755); err != nil {
		return res, err
	}
	if _, err := os.Stat(filepath.Join(dir, "db.backup")); err == nil {
		if err := os.Rename(filepath.Join(dir, "db.backup"), filepath.Join(dir, "db", "db.backup")); err != nil {
			return res, err
		}
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(dir, ".metadata"), b, 0o644); err != nil {
		return res, err
	}
	out := filepath.Join(dir, "reference.tar.gz")
	defer os.Remove(out)
	start := time.Now()
	if err := command(ctx, dir, "tar", "-czf", out, ".metadata", "db/db.backup", "tree"); err != nil {
		return res, fmt.Errorf("reference tar: %w", err)
	}
	res.Tar = time.Since(start)
	if res.SizeBytes, err = fileSize(out); err != nil {
		return res, err
	}
	if res.Entries, err = ListTar(ctx, out); err != nil {
		return res, fmt.Errorf("the reference archive: %w", err)
	}
	return res, nil
}

// ArchiveMetadata is the .metadata of an archive (docs/archive-format.md: every value a string).
func ArchiveMetadata(dumpBytes, databaseBytes, filesBytes int64, modelVersion string) map[string]string {
	return map[string]string{"duration": "0", "dumpSize": strconv.FormatInt(dumpBytes, 10), "modelVersion": modelVersion,
		"databaseSize": strconv.FormatInt(databaseBytes, 10), "filesSize": strconv.FormatInt(filesBytes, 10)}
}

// ListTar runs `tar -tzf path` (GNU tar) and counts the entries it lists.
func ListTar(ctx context.Context, path string) (TarEntries, error) {
	cmd := exec.CommandContext(ctx, "tar", "-tzf", path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return TarEntries{}, err
	}
	if err := cmd.Start(); err != nil {
		return TarEntries{}, err
	}
	n, cerr := countEntries(stdout)
	if err := cmd.Wait(); err != nil {
		return n, fmt.Errorf("tar -tzf: %w: %s", err, tail(stderr.String(), 400))
	}
	return n, cerr
}

// countEntries counts the lines of a `tar -t` listing.
func countEntries(r io.Reader) (TarEntries, error) {
	var n TarEntries
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		switch name := sc.Text(); {
		case name == "":
		case strings.HasSuffix(name, "/"):
			n.Dirs++
		default:
			n.Files++
		}
	}
	return n, sc.Err()
}
