package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// naiveFixture starts PostgreSQL and Azurite with a small generated database "app" and nfiles blobs
// in container "files", and returns a Naive pipeline over them.
func naiveFixture(t *testing.T, nfiles int) (Naive, []File) {
	t.Helper()
	n, files, _ := naiveCluster(t, nfiles)
	return n, files
}

// naiveCluster is naiveFixture that also returns the PostgreSQL cluster.
func naiveCluster(t *testing.T, nfiles int) (Naive, []File, *pgcluster.Cluster) {
	t.Helper()
	pg := pgcluster.ForTest(t)
	az := azurite.ForTest(t)
	blobs, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	files := Files(nfiles)
	if err := UploadFiles(t.Context(), blobs, "files", files, 8); err != nil {
		t.Fatal(err)
	}
	if err := pg.CreateRole(t.Context(), "bench_owner", ""); err != nil {
		t.Fatal(err)
	}
	generate(t, pg, "app", 1000, files)
	return Naive{BinDir: pg.BinDir, DSN: pg.DSN("app"), Blobs: blobs, FilesContainer: "files", ArchiveContainer: "naive",
		WorkDir: t.TempDir(), Downloads: 4, Uploads: 2}, files, pg
}

func TestNaivePipeline(t *testing.T) {
	n, files := naiveFixture(t, 40)
	ctx, blobs, work := t.Context(), n.Blobs, n.WorkDir
	res, err := n.Run(ctx, "run1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != len(files) {
		t.Errorf("downloaded %d files, want %d", res.Files, len(files))
	}
	if res.DumpBytes <= 0 || res.ArchiveBytes <= res.DumpBytes {
		t.Errorf("dump %d bytes, archive %d: want a non-empty dump inside a larger archive", res.DumpBytes, res.ArchiveBytes)
	}
	if sum := res.Dump + res.Download + res.Tar + res.Upload; res.Total < sum {
		t.Errorf("total %v is less than its steps %v", res.Total, sum)
	}
	// The archive was uploaded, then removed with the scratch folder.
	pager := blobs.NewListBlobsFlatPager("naive", nil)
	page, err := pager.NextPage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Segment.BlobItems) != 0 {
		t.Errorf("naive container still holds %d blobs", len(page.Segment.BlobItems))
	}
	if out, _ := exec.Command("find", work, "-mindepth", "1").Output(); len(out) != 0 {
		t.Errorf("scratch left behind:\n%s", out)
	}
}

func TestNaiveDownloadTree(t *testing.T) {
	n, files := naiveFixture(t, 12)
	ctx := t.Context()
	dir := t.TempDir()
	count, err := n.download(ctx, dir)
	if err != nil || count != len(files) {
		t.Fatalf("download: %d files, %v; want %d", count, err, len(files))
	}
	out, err := exec.Command("find", dir, "-type", "f", "-printf", "%P %s\n").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	var want []string
	for _, f := range files {
		want = append(want, f.UUID[0:2]+"/"+f.UUID[2:4]+"/"+f.UUID+" "+strconv.Itoa(f.Size))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("downloaded tree\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNaiveKeptFolderAndReference(t *testing.T) {
	n, files := naiveFixture(t, 12)
	n.Keep = true
	res, err := n.Run(t.Context(), "kept")
	if err != nil {
		t.Fatal(err)
	}
	if res.Dir == "" {
		t.Fatal("kept run names no folder")
	}
	defer os.RemoveAll(res.Dir)
	changed := Change(files, []int{2, 7})
	if err := ApplyChanges(res.Dir, changed); err != nil {
		t.Fatal(err)
	}
	f := changed[0]
	got, err := os.ReadFile(filepath.Join(res.Dir, "tree", f.UUID[0:2], f.UUID[2:4], f.UUID))
	if err != nil || !bytes.Equal(got, f.Content()) {
		t.Fatalf("changed file on disk: %v; equal to revision 1: %v", err, bytes.Equal(got, f.Content()))
	}
	if err := ApplyChanges(res.Dir, []File{{UUID: "00000000-0000-4000-8000-000000000000"}}); err == nil {
		t.Error("a change of a file the folder does not hold succeeded")
	}
	ref, err := TarReference(t.Context(), res.Dir, ArchiveMetadata(res.DumpBytes, 1, TotalSize(files), "9.24.0"))
	if err != nil {
		t.Fatal(err)
	}
	// .metadata, db/db.backup and the files; tree/, tree/xx/ and tree/xx/yy/ directories.
	if ref.Entries.Files != len(files)+2 || ref.Entries.Dirs < 3 || ref.SizeBytes <= res.DumpBytes || ref.Tar <= 0 {
		t.Errorf("reference %+v: want %d files and some directories, larger than the dump (%d bytes)", ref, len(files)+2, res.DumpBytes)
	}
	out, err := exec.Command("find", res.Dir, "-maxdepth", "2", "-not", "-path", "*/tree/*").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), ".tar.gz") || !strings.Contains(string(out), "db/db.backup") {
		t.Errorf("kept folder after the reference (want db/db.backup, no archive):\n%s", out)
	}
}
