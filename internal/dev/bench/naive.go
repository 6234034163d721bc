package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// Naive is the baseline an operator would script without this service: pg_dump -Fc (default
// compression) to a file, the file blobs downloaded to a folder tree, `tar czf` of both (GNU tar and
// gzip), and the .tar.gz uploaded as one blob.
type Naive struct {
	BinDir           string // holds pg_dump
	DSN              string // the database, as a superuser
	Blobs            *azblob.Client
	FilesContainer   string // the environment's file blobs
	ArchiveContainer string // where the .tar.gz is uploaded
	WorkDir          string // parent of each run's scratch folder ("" for the system temp dir)
	Downloads        int    // concurrent blob downloads
	Uploads          int    // concurrent block uploads of the archive
	// Keep keeps the scratch folder (the dump as db.backup and the files under tree/) and names it in
	// the result's Dir; the caller removes it.
	Keep bool
	// KeepArchive leaves the uploaded .tar.gz in ArchiveContainer (for the restore baseline, see
	// NaiveRestore) and names it in the result's Archive; the caller deletes it.
	KeepArchive bool
}

// NaiveResult is one run of the naive pipeline.
type NaiveResult struct {
	Dump, Download, Tar, Upload, Total time.Duration
	DumpBytes, ArchiveBytes            int64
	Files                              int
	Dir                                string // the scratch folder, when kept (Naive.Keep)
	Archive                            string // the uploaded archive's blob name, when kept (Naive.KeepArchive)
}

// Run runs the pipeline once, timing each step; the scratch folder and the uploaded blob are removed
// afterwards (not timed), unless kept.
func (n Naive) Run(ctx context.Context, name string) (res NaiveResult, err error) {
	dir, err := os.MkdirTemp(n.WorkDir, "bench-naive-")
	if err != nil {
		return res, err
	}
	defer func() {
		if n.Keep && err == nil {
			res.Dir = dir
		} else {
			os.RemoveAll(dir)
		}
	}()
	if _, err := n.Blobs.CreateContainer(ctx, n.ArchiveContainer, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return res, fmt.Errorf("create container %s: %w", n.ArchiveContainer, err)
	}
	dump, archive := filepath.Join(dir, "db.backup"), filepath.Join(dir, name+".tar.gz")
	start := time.Now()
	t := start
	if err := command(ctx, "", filepath.Join(n.BinDir, "pg_dump"), "-Fc", "-f", dump, "-d", n.DSN); err != nil {
		return res, fmt.Errorf("naive pg_dump: %w", err)
	}
	res.Dump, t = time.Since(t), time.Now()
	if res.Files, err = n.download(ctx, filepath.Join(dir, "tree")); err != nil {
		return res, fmt.Errorf("naive download: %w", err)
	}
	res.Download, t = time.Since(t), time.Now()
	if err := command(ctx, dir, "tar", "-czf", archive, "db.backup", "tree"); err != nil {
		return res, fmt.Errorf("naive tar: %w", err)
	}
	res.Tar, t = time.Since(t), time.Now()
	if err := n.upload(ctx, archive, name+".tar.gz"); err != nil {
		return res, fmt.Errorf("naive upload: %w", err)
	}
	res.Upload, res.Total = time.Since(t), time.Since(start)
	if res.DumpBytes, err = fileSize(dump); err != nil {
		return res, err
	}
	if res.ArchiveBytes, err = fileSize(archive); err != nil {
		return res, err
	}
	if err := os.Remove(archive); err != nil { // a kept folder holds the archive's content, not the archive
		return res, err
	}
	if n.KeepArchive {
		res.Archive = name + ".tar.gz"
		return res, nil
	}
	if _, err := n.Blobs.DeleteBlob(ctx, n.ArchiveContainer, name+".tar.gz", nil); err != nil {
		return res, fmt.Errorf("delete the naive archive: %w", err)
	}
	return res, nil
}

func (n Naive) upload(ctx context.Context, path, blob string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = n.Blobs.UploadFile(ctx, n.ArchiveContainer, blob, f, &azblob.UploadFileOptions{BlockSize: 8 << 20, Concurrency: uint16(max(1, n.Uploads))})
	return err
}

// download lists the files container and downloads every blob to root/xx/yy/<name>, n.Downloads at
// a time (what `az storage blob download-batch` does).
func (n Naive) download(ctx context.Context, root string) (int, error) {
	names := make(chan string, 256)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range max(1, n.Downloads) {
		wg.Go(func() {
			for name := range names {
				if err := n.downloadOne(ctx, root, name); err != nil {
					cancel(err)
					for range names { // drain so the lister never blocks
					}
					return
				}
			}
		})
	}
	count := 0
	pager := n.Blobs.NewListBlobsFlatPager(n.FilesContainer, nil)
	for pager.More() && ctx.Err() == nil {
		page, err := pager.NextPage(ctx)
		if err != nil {
			cancel(fmt.Errorf("list %s: %w", n.FilesContainer, err))
			break
		}
		for _, b := range page.Segment.BlobItems {
			names <- *b.Name
			count++
		}
	}
	close(names)
	wg.Wait()
	return count, context.Cause(ctx)
}

func (n Naive) downloadOne(ctx context.Context, root, name string) error {
	if len(name) < 4 {
		return fmt.Errorf("unexpected blob name %q", name)
	}
	dir := filepath.Join(root, name[0:2], name[2:4])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	resp, err := n.Blobs.DownloadStream(ctx, n.FilesContainer, name, nil)
	if err != nil {
		return fmt.Errorf("download %s: %w", name, err)
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("download %s: %w", name, err)
	}
	return f.Close()
}

// command runs a program in dir, returning its output in the error when it fails.
func command(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(name), err, tail(string(out), 400))
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
