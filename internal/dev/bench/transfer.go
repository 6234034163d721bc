package bench

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"
)

// Targets of the downloads and uploads issue.
const (
	// UploadTimeTarget: accepting an upload (validating and storing it) takes at most 2 × reading the
	// same archive with `gzip -dc | tar -t`.
	UploadTimeTarget = 2.0
)

// UploadArchive is an archive made for the upload measurement: a Mendix archive of a real pg_dump and
// generated file documents, on local disk.
type UploadArchive struct {
	Path       string
	Bytes      int64
	Files      int
	FilesBytes int64
	DumpBytes  int64
}

// uploadSeed seeds the upload archive's file documents (their sizes and bytes).
const uploadSeed = 0x75706c6f6164 // "upload"

// BuildUploadArchive writes a Mendix archive of about target compressed bytes into dir: .metadata,
// db/db.backup (pg_dump -Fc of dsn with pg_dump's default compression, as Mendix Cloud makes it) and
// tree/xx/yy/<uuid> file documents of 256 KiB to 4 MiB, four in five already-compressed-like bytes and
// one in five text-like, until the archive reaches target. It is not timed.
func BuildUploadArchive(ctx context.Context, binDir, dsn, dir string, target int64) (UploadArchive, error) {
	res := UploadArchive{Path: filepath.Join(dir, "upload.tar.gz")}
	dump := filepath.Join(dir, "upload-db.backup")
	if out, err := exec.CommandContext(ctx, filepath.Join(binDir, "pg_dump"), "-Fc", "-O", "-x", "-f", dump, dsn).CombinedOutput(); err != nil {
		return res, fmt.Errorf("pg_dump for the upload archive: %v: %s", err, tail(string(out), 300))
	}
	defer os.Remove(dump)
	f, err := os.Create(res.Path)
	if err != nil {
		return res, err
	}
	defer f.Close()
	counted := &countingWriter{w: bufio.NewWriterSize(f, 1<<20)}
	zw, err := gzip.NewWriterLevel(counted, gzip.BestSpeed)
	if err != nil {
		return res, err
	}
	tw := tar.NewWriter(zw)
	d, err := os.Open(dump)
	if err != nil {
		return res, err
	}
	defer d.Close()
	st, err := d.Stat()
	if err != nil {
		return res, err
	}
	res.DumpBytes = st.Size()
	meta, _ := json.Marshal(map[string]string{"duration": "0", "dumpSize": strconv.FormatInt(res.DumpBytes, 10),
		"modelVersion": "1.0.0.1", "databaseSize": "0", "filesSize": "0"})
	now := time.Now()
	if err := writeEntry(tw, ".metadata", int64(len(meta)), now, strings.NewReader(string(meta))); err != nil {
		return res, err
	}
	if err := writeEntry(tw, "db/db.backup", res.DumpBytes, now, d); err != nil {
		return res, err
	}
	rng := rand.New(rand.NewPCG(uploadSeed, 1))
	for i := 0; counted.n < target; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		f := File{ID: int64(1_000_000 + i), Size: 256<<10 + rng.IntN(4<<20-256<<10), Text: i%5 == 0}
		u := uuid.NewSHA1(uuid.NameSpaceOID, []byte("bench-upload-file-"+strconv.Itoa(i))).String()
		data := f.Content()
		if err := writeEntry(tw, "tree/"+u[0:2]+"/"+u[2:4]+"/"+u, int64(len(data)), now, strings.NewReader(string(data))); err != nil {
			return res, err
		}
		res.Files++
		res.FilesBytes += int64(len(data))
		if err := zw.Flush(); err != nil { // so that counted.n follows the compressed size
			return res, err
		}
	}
	if err := tw.Close(); err != nil {
		return res, err
	}
	if err := zw.Close(); err != nil {
		return res, err
	}
	if err := counted.w.(*bufio.Writer).Flush(); err != nil {
		return res, err
	}
	res.Bytes = counted.n
	return res, f.Close()
}

func writeEntry(tw *tar.Writer, name string, size int64, mod time.Time, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Size: size, Mode: 0o644, ModTime: mod, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := io.Copy(tw, r)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadBaseline times `gzip -dc | tar -t` of the archive on local disk: the least any reader of the
// archive does (inflate it, walk its headers). It returns the entries tar listed.
func ReadBaseline(ctx context.Context, path string) (time.Duration, int, error) {
	start := time.Now()
	out, err := exec.CommandContext(ctx, "sh", "-c", `gzip -dc < "$1" | tar -t | wc -l`, "sh", path).Output()
	wall := time.Since(start)
	if err != nil {
		return wall, 0, fmt.Errorf("gzip -dc | tar -t: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	return wall, n, err
}

// UploadResult is one upload accepted by the service: from complete to Finished, against ReadBaseline.
type UploadResult struct {
	Archive    UploadArchive
	Baseline   time.Duration // gzip -dc | tar -t of the same archive
	Entries    int           // what tar -t listed
	Transfer   time.Duration // putting the archive through its upload link (not compared)
	Wall       time.Duration // POST complete until the snapshot is Finished
	PeakRSS    int64
	StartRSS   int64
	SnapshotID string
	FilesCount int
	DumpBytes  int64
}

// Upload uploads the archive into envID through the API as a user would (an upload link, Put Block and
// Put Block List through it, complete) and measures the validation: the handler's peak RSS is reset
// just before complete and read once the snapshot ended. A refused archive is an error.
func (l *Lab) Upload(ctx context.Context, envID string, a UploadArchive) (UploadResult, error) {
	res := UploadResult{Archive: a}
	st := l.Stack
	base := "/api/v1/namespaces/" + Namespace + "/environments/" + envID + "/uploads"
	status, body, err := st.Call(ctx, l.Token, "POST", base, `{"file_name":"bench-upload.tar.gz"}`)
	if err != nil || status != http.StatusCreated {
		return res, fmt.Errorf("ask for an upload link: %d %s %v", status, tail(body, 300), err)
	}
	var link struct {
		UploadURL   string `json:"upload_url"`
		CompleteURL string `json:"complete_url"`
	}
	if err := json.Unmarshal([]byte(body), &link); err != nil {
		return res, err
	}
	bb, err := blockblob.NewClientWithNoCredential(link.UploadURL, nil)
	if err != nil {
		return res, err
	}
	f, err := os.Open(a.Path)
	if err != nil {
		return res, err
	}
	defer f.Close()
	t := time.Now()
	if _, err := bb.UploadFile(ctx, f, &blockblob.UploadFileOptions{BlockSize: 8 << 20, Concurrency: 4}); err != nil {
		return res, fmt.Errorf("upload through the link: %w", err)
	}
	res.Transfer = time.Since(t)
	watch, startRSS, err := l.watchHandler()
	if err != nil {
		return res, err
	}
	res.StartRSS = startRSS
	start := time.Now()
	status, body, err = st.Call(ctx, l.Token, "POST", link.CompleteURL, `{"comment":"benchmark upload"}`)
	if err != nil || status != http.StatusAccepted {
		return res, fmt.Errorf("complete the upload: %d %s %v", status, tail(body, 300), err)
	}
	var snap snapshotView
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		return res, err
	}
	res.SnapshotID = snap.SnapshotID
	if err := l.poll(ctx, snapshotsPath(envID)+"/"+snap.SnapshotID, "uploaded snapshot", &snap, func() bool { return snap.Status == "Processing" }); err != nil {
		return res, err
	}
	res.Wall = time.Since(start)
	if res.PeakRSS, err = watch.peak("upload's validation"); err != nil {
		return res, err
	}
	if snap.Status != "Finished" {
		return res, fmt.Errorf("the upload ended %s: %s", snap.Status, snap.StatusMessage)
	}
	res.FilesCount, res.DumpBytes = snap.FilesCount, snap.DumpSizeBytes
	return res, nil
}

// DownloadResult is one files-and-database download made by the service through the API.
type DownloadResult struct {
	SnapshotID string
	Wall       time.Duration // POST archives until the archive is completed
	SizeBytes  int64
	PeakRSS    int64
	StartRSS   int64
}

// Download asks the service for the files-and-database download of a Finished snapshot and measures
// it until completed, with the handler's peak RSS, as Backup does.
func (l *Lab) Download(ctx context.Context, envID, snapshotID string) (DownloadResult, error) {
	res := DownloadResult{SnapshotID: snapshotID}
	st := l.Stack
	watch, startRSS, err := l.watchHandler()
	if err != nil {
		return res, err
	}
	res.StartRSS = startRSS
	path := snapshotsPath(envID) + "/" + snapshotID + "/archives"
	start := time.Now()
	status, body, err := st.Call(ctx, l.Token, "POST", path, `{"data_type":"files_and_database"}`)
	if err != nil || status != http.StatusAccepted {
		return res, fmt.Errorf("ask for a download: %d %s %v", status, tail(body, 300), err)
	}
	var a struct {
		ArchiveID     string `json:"archive_id"`
		State         string `json:"state"`
		StatusMessage string `json:"status_message"`
		SizeBytes     int64  `json:"size_bytes"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		return res, err
	}
	if err := l.poll(ctx, path+"/"+a.ArchiveID, "download", &a, func() bool { return a.State == "queued" || a.State == "running" }); err != nil {
		return res, err
	}
	res.Wall = time.Since(start)
	if res.PeakRSS, err = watch.peak("download"); err != nil {
		return res, err
	}
	if a.State != "completed" {
		return res, fmt.Errorf("the download ended %s: %s", a.State, a.StatusMessage)
	}
	res.SizeBytes = a.SizeBytes
	return res, nil
}
