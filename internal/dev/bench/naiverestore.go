package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/jackc/pgx/v5"

	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// RestoreFileWorkers is how many file blobs the restore baseline uploads at once: the handler's
// BACKUP_FILE_WORKERS default, which is how many server-side copies a restore runs at once (the lab
// leaves it unset).
const RestoreFileWorkers = 16

// NaiveRestore is the restore an operator would script without this service, from the archive the
// naive backup pipeline uploaded (Naive with KeepArchive): download the .tar.gz to local disk, `tar
// xzf` it, `pg_restore -j2 --no-owner --no-acl --role=<Owner>` of its db.backup (at the archive's root,
// as Naive writes it) into an empty database owned by Owner, and upload
// its tree/ files into an empty container, each as blob <name> (the layout the app reads),
// Uploads at a time.
type NaiveRestore struct {
	Postgres         *pgcluster.Cluster // the database server; pg_restore connects as its superuser
	Owner            string             // owner of the empty database, as the app's role owns its own
	Blobs            *azblob.Client
	ArchiveContainer string // holds the naive archive
	Archive          string // the naive archive's blob name
	WorkDir          string // parent of each run's scratch folder ("" for the system temp dir)
	Downloads        int    // concurrent range downloads of the archive
	Uploads          int    // concurrent file uploads
	// Verify, when set, is called after the timed part with the run's database and container, before
	// they are dropped (the tests check what was restored with it).
	Verify func(ctx context.Context, db, container string) error
}

// NaiveRestoreResult is one run of the naive restore.
type NaiveRestoreResult struct {
	Download, Extract, PgRestore, Upload, Total time.Duration
	ArchiveBytes                                int64
	Files                                       int
	FilesBytes                                  int64
	Workers                                     int // the uploads' parallelism
}

// Run restores the archive once into a new empty database and a new empty container, both named after
// name (made and dropped around the timed part, with the scratch folder), timing each step.
func (n NaiveRestore) Run(ctx context.Context, name string) (res NaiveRestoreResult, err error) {
	res.Workers = max(1, n.Uploads)
	db, container := naiveRestoreNames(name)
	dir, err := os.MkdirTemp(n.WorkDir, "bench-naive-restore-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	if err := n.Postgres.CreateDatabase(ctx, db, n.Owner); err != nil {
		return res, err
	}
	defer func() {
		if derr := n.Postgres.Exec(context.WithoutCancel(ctx), "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); derr != nil {
			err = errors.Join(err, fmt.Errorf("drop the baseline's database: %w", derr))
		}
	}()
	if _, err := n.Blobs.CreateContainer(ctx, container, nil); err != nil {
		return res, fmt.Errorf("create container %s: %w", container, err)
	}
	defer func() {
		if _, derr := n.Blobs.DeleteContainer(context.WithoutCancel(ctx), container, nil); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete the baseline's container: %w", derr))
		}
	}()

	archive := filepath.Join(dir, "archive.tar.gz")
	start := time.Now()
	t := start
	if res.ArchiveBytes, err = n.download(ctx, archive); err != nil {
		return res, fmt.Errorf("naive restore download: %w", err)
	}
	res.Download, t = time.Since(t), time.Now()
	if err := command(ctx, dir, "tar", "-xzf", archive); err != nil {
		return res, fmt.Errorf("naive restore tar: %w", err)
	}
	res.Extract, t = time.Since(t), time.Now()
	args := []string{"-j2", "--no-owner", "--no-acl", "-d", n.Postgres.DSN(db)}
	if n.Owner != "" {
		args = append(args, "--role="+n.Owner) // the restored objects belong to the app's role
	}
	if err := command(ctx, dir, filepath.Join(n.Postgres.BinDir, "pg_restore"), append(args, "db.backup")...); err != nil {
		return res, fmt.Errorf("naive restore pg_restore: %w", err)
	}
	res.PgRestore, t = time.Since(t), time.Now()
	if res.Files, res.FilesBytes, err = uploadTree(ctx, n.Blobs, container, filepath.Join(dir, "tree"), res.Workers); err != nil {
		return res, fmt.Errorf("naive restore upload: %w", err)
	}
	res.Upload, res.Total = time.Since(t), time.Since(start)
	if n.Verify != nil {
		if err := n.Verify(ctx, db, container); err != nil {
			return res, err
		}
	}
	return res, nil
}

// naiveRestoreNames are the database and the container of the baseline run name: PostgreSQL wants
// no hyphens unquoted, Blob Storage no underscores.
func naiveRestoreNames(name string) (db, container string) {
	name = strings.ToLower(name)
	return strings.ReplaceAll(name, "-", "_"), strings.ReplaceAll(name, "_", "-")
}

func (n NaiveRestore) download(ctx context.Context, path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	size, err := n.Blobs.DownloadFile(ctx, n.ArchiveContainer, n.Archive, f,
		&azblob.DownloadFileOptions{BlockSize: 8 << 20, Concurrency: uint16(max(1, n.Downloads))})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return size, err
}

// uploadTree uploads every regular file under root to container as blob <its base name>, workers at
// a time (what `az storage blob upload-batch` does, with the app's flat names). It stops at the first
// error and returns how many files and bytes it uploaded.
func uploadTree(ctx context.Context, client *azblob.Client, container, root string, workers int) (int, int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	paths := make(chan string, 256)
	var (
		mu    sync.Mutex
		count int
		bytes int64
		wg    sync.WaitGroup
	)
	for range max(1, workers) {
		wg.Go(func() {
			for p := range paths {
				if ctx.Err() != nil {
					continue // drain so the walker never blocks
				}
				n, err := uploadOne(ctx, client, container, p)
				if err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				count, bytes = count+1, bytes+n
				mu.Unlock()
			}
		})
	}
	walkErr := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if d.Type().IsRegular() {
			paths <- p
		}
		return nil
	})
	close(paths)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return count, bytes, err
	}
	return count, bytes, walkErr
}

func uploadOne(ctx context.Context, client *azblob.Client, container, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	name := filepath.Base(path)
	if _, err := client.UploadFile(ctx, container, name, f, nil); err != nil {
		return 0, fmt.Errorf("upload %s: %w", name, err)
	}
	return st.Size(), nil
}

// DeleteArchive deletes the naive archive a kept naive run left (Naive.KeepArchive); one already gone
// is no error.
func DeleteArchive(ctx context.Context, client *azblob.Client, container, name string) error {
	if name == "" {
		return nil
	}
	if _, err := client.DeleteBlob(ctx, container, name, nil); err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
		return fmt.Errorf("delete the naive archive %s: %w", name, err)
	}
	return nil
}
