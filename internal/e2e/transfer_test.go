package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// download asks for a download of one of e's snapshots and waits until it ended.
func (e *testEnv) download(t *testing.T, snapshotID, dataType string) map[string]any {
	t.Helper()
	path := e.path + "/" + snapshotID + "/archives"
	status, a := call(t, tok, "POST", path, fmt.Sprintf(`{"data_type":%q}`, dataType))
	if status != http.StatusAccepted {
		t.Fatalf("ask for a download: %d %v", status, a)
	}
	id := a["archive_id"].(string)
	var out map[string]any
	waitFor(t, "the download to be made", func() bool {
		status, out = call(t, tok, "GET", path+"/"+id, "")
		return status == http.StatusOK && (out["state"] == "completed" || out["state"] == "failed")
	})
	if out["state"] != "completed" {
		t.Fatalf("download: %v", out)
	}
	return out
}

// fetch reads a completed download through its link, as a browser or curl would, and checks what the
// link promises: the Mendix file name, the size and the SHA-256.
func fetch(t *testing.T, a map[string]any) []byte {
	t.Helper()
	resp, err := http.Get(a["url"].(string))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the download link: %d %v %.300s", resp.StatusCode, err, data)
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename="`+a["file_name"].(string)+`"` {
		t.Errorf("Content-Disposition %q, want the file name %v", cd, a["file_name"])
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != num(a, "size_bytes") || resp.ContentLength != int64(len(data)) || hex.EncodeToString(sum[:]) != a["sha256"] {
		t.Errorf("downloaded %d bytes (Content-Length %d) with SHA-256 %x; the archive says %v bytes, %v", len(data), resp.ContentLength, sum, a["size_bytes"], a["sha256"])
	}
	return data
}

// upload puts data into a new upload of e, with one Put Blob or (blocks) with Put Block and Put Block
// List as az storage blob upload and azcopy do, completes it and waits until its snapshot ended.
func (e *testEnv) upload(t *testing.T, data []byte, blocks bool) map[string]any {
	t.Helper()
	base := "/api/v1/namespaces/" + e.ns + "/environments/" + e.id + "/uploads"
	status, link := call(t, tok, "POST", base, `{"file_name":"from-mendix-cloud.tar.gz"}`)
	if status != http.StatusCreated {
		t.Fatalf("ask for an upload link: %d %v", status, link)
	}
	uploadURL := link["upload_url"].(string)
	if blocks {
		bb, err := blockblob.NewClientWithNoCredential(uploadURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i := 0; len(data) > 0; i++ {
			n := min(len(data), 64<<10)
			id := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "block-%06d", i))
			if _, err := bb.StageBlock(context.Background(), id, streamOf(data[:n]), nil); err != nil {
				t.Fatalf("Put Block through the upload link: %v", err)
			}
			ids, data = append(ids, id), data[n:]
		}
		if _, err := bb.CommitBlockList(context.Background(), ids, nil); err != nil {
			t.Fatalf("Put Block List through the upload link: %v", err)
		}
	} else {
		req, _ := http.NewRequest(http.MethodPut, uploadURL, bytes.NewReader(data))
		req.Header.Set("x-ms-blob-type", "BlockBlob")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("Put Blob through the upload link: %d", resp.StatusCode)
		}
	}
	status, sn := call(t, tok, "POST", link["complete_url"].(string), `{"comment":"uploaded by a test"}`)
	if status != http.StatusAccepted || sn["kind"] != "uploaded" {
		t.Fatalf("complete the upload: %d %v", status, sn)
	}
	if status, again := call(t, tok, "POST", link["complete_url"].(string), `{}`); status != http.StatusAccepted || again["snapshot_id"] != sn["snapshot_id"] {
		t.Errorf("a second complete: %d %v, want the same snapshot", status, again)
	}
	done := waitSnapshotAt(t, e.path, sn["snapshot_id"].(string), 2*time.Minute)
	// Validated or refused, the uploaded archive itself is removed once its job settled.
	_, blob, _ := strings.Cut(strings.SplitN(uploadURL, "?", 2)[0], "/snapshot-uploads/")
	waitFor(t, "the uploaded archive to be removed", func() bool { return len(listBlobs(t, "snapshot-uploads", blob)) == 0 })
	return done
}

type readSeekNopCloser struct{ *bytes.Reader }

func (readSeekNopCloser) Close() error { return nil }

func streamOf(b []byte) readSeekNopCloser { return readSeekNopCloser{bytes.NewReader(b)} }

var mendixFileName = regexp.MustCompile(`^files_and_database-[0-9a-f]{8}-[0-9]{12}\.tar\.gz$`)

// TestDownloadUploadAndRestoreRoundTrip: a snapshot downloaded as a Mendix archive, uploaded into
// another environment and restored there gives the same rows and file bytes as the source had when
// the snapshot was made.
func TestDownloadUploadAndRestoreRoundTrip(t *testing.T) {
	f := newRestoreFixture(t, "transfer", 7)
	a := f.src.download(t, f.snap.id, "files_and_database")
	if !mendixFileName.MatchString(a["file_name"].(string)) {
		t.Errorf("file name %v is not the Mendix form", a["file_name"])
	}
	archive := fetch(t, a)
	// The link reads; it does not write.
	req, _ := http.NewRequest(http.MethodPut, a["url"].(string), strings.NewReader("overwritten"))
	req.Header.Set("x-ms-blob-type", "BlockBlob")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 == 2 {
		t.Errorf("a PUT through the download link: %v %v; want it refused", resp, err)
	}
	// A second request while the first link is valid gets the same archive at once.
	status, again := call(t, tok, "POST", f.src.path+"/"+f.snap.id+"/archives", `{}`)
	if status != http.StatusAccepted || again["state"] != "completed" || again["sha256"] != a["sha256"] {
		t.Errorf("second request: %d %v", status, again)
	}

	target := f.src.sibling(t, "transfer-into")
	up := target.upload(t, archive, true)
	sum := sha256.Sum256(archive)
	if up["status"] != "Finished" || up["model_version"] != testModelVersion || num(up, "files_count") != 7 ||
		up["upload_sha256"] != hex.EncodeToString(sum[:]) || num(up, "dump_size_bytes") != num(f.snap.api, "dump_size_bytes") {
		t.Fatalf("uploaded snapshot: %v", up)
	}
	r := target.startRestore(t, target, up["snapshot_id"].(string))
	done := target.waitRestore(t, r["restore_id"].(string), false, 2*time.Minute)
	if done["state"] != "completed" || num(done, "files_added") != 7 {
		t.Fatalf("restore of the uploaded snapshot: %v", done)
	}
	want := f.atSnap
	want.databases = []string{target.db, target.db + "_pre_restore_" + shortID(done)}
	want.blobs = maps.Clone(f.atSnap.blobs)
	target.state(t).same(t, "the target after restoring the uploaded snapshot", want)

	_, act := call(t, tok, "GET", "/api/v1/namespaces/"+target.ns+"/environments/"+target.id+"/activity", "")
	if id := up["snapshot_id"].(string); !hasActivity(act, id, "upload", "STARTED") || !hasActivity(act, id, "upload", "FINISHED") {
		t.Errorf("upload activity: %v", act)
	}
	_, act = call(t, tok, "GET", "/api/v1/namespaces/"+f.src.ns+"/environments/"+f.src.id+"/activity", "")
	if !hasActivity(act, f.snap.id, "download", "STARTED") || !hasActivity(act, f.snap.id, "download", "FINISHED") {
		t.Errorf("download activity: %v", act)
	}
}

// TestDatabaseOnlyDownloadRestoresWithPlainPgRestore: the database-only download is the bare
// custom-format dump: plain pg_restore -O -x into an empty database gives the snapshot's rows.
func TestDatabaseOnlyDownloadRestoresWithPlainPgRestore(t *testing.T) {
	f := newRestoreFixture(t, "dbonly", 2)
	a := f.src.download(t, f.snap.id, "database_only")
	if name := a["file_name"].(string); !regexp.MustCompile(`^database-[0-9a-f]{8}-[0-9]{12}\.backup$`).MatchString(name) {
		t.Errorf("file name %q is not the Mendix form", name)
	}
	dump := fetch(t, a)
	if !bytes.HasPrefix(dump, []byte("PGDMP")) {
		t.Fatalf("the download is not a custom-format dump: %q", dump[:min(len(dump), 16)])
	}
	file := filepath.Join(t.TempDir(), a["file_name"].(string))
	if err := os.WriteFile(file, dump, 0o600); err != nil {
		t.Fatal(err)
	}
	db := f.src.db + "_by_hand"
	if err := env.Postgres.CreateDatabase(context.Background(), db, "demo_app_role"); err != nil {
		t.Fatal(err)
	}
	bin, err := pgcluster.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "pg_restore"), "-O", "-x", "--role=demo_app_role", "-d", env.Postgres.DSN(db), file).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	byHand := &testEnv{db: db}
	got := byHand.tablesOnly(t)
	for name, rows := range f.atSnap.tables {
		if got[name] != rows {
			t.Errorf("table %s restored by hand differs from the snapshot", name)
		}
	}
	if len(got) != len(f.atSnap.tables) {
		t.Errorf("tables restored by hand: %d, want %d", len(got), len(f.atSnap.tables))
	}
}

// tablesOnly is every table's rows of e's database, as state reads them.
func (e *testEnv) tablesOnly(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	db := connectDB(t, e.db)
	defer db.Close(ctx)
	rows, err := db.Query(ctx, `SELECT schemaname || '.' || tablename, quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for rows.Next() {
		var name, q string
		if err := rows.Scan(&name, &q); err != nil {
			t.Fatal(err)
		}
		names[name] = q
	}
	rows.Close()
	out := map[string]string{}
	for name, q := range names {
		var text string
		if err := db.QueryRow(ctx, `SELECT coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '') FROM `+q+` t`).Scan(&text); err != nil {
			t.Fatal(err)
		}
		out[name] = text
	}
	return out
}

// TestUploadOfAnArchiveMadeWithGNUTar: an archive this project did not write (pg_dump -Z6, GNU tar,
// flat tree/ names with ./ prefixes, files before the dump, no .metadata) becomes a snapshot that
// restores the source's rows and files.
func TestUploadOfAnArchiveMadeWithGNUTar(t *testing.T) {
	f := newRestoreFixture(t, "gnutar", 3)
	dir := t.TempDir()
	bin, err := pgcluster.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot's moment: the fixture's rows, as the backup saw them (no change since).
	if err := os.MkdirAll(filepath.Join(dir, "db"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(bin, "pg_dump"), "-Fc", "-Z6", "-O", "-x", "-f", filepath.Join(dir, "db", "db.backup"), env.Postgres.DSN(f.src.db)).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tree"), 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for u, data := range f.src.docs {
		if err := os.WriteFile(filepath.Join(dir, "tree", u), data, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, "./tree/"+u)
	}
	archive := filepath.Join(t.TempDir(), "cloud.tar.gz")
	args := append([]string{"-czf", archive, "-C", dir}, names...)
	args = append(args, "./db/db.backup")
	if out, err := exec.Command("tar", args...).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	target := f.src.sibling(t, "gnutar-into")
	up := target.upload(t, data, false)
	if up["status"] != "Finished" || num(up, "files_count") != 3 || up["model_version"] != "" {
		t.Fatalf("uploaded snapshot: %v", up)
	}
	if w, _ := up["warnings"].([]any); len(w) == 0 {
		t.Errorf("an archive without .metadata: no warning that its model version is unknown")
	}
	r := target.startRestore(t, target, up["snapshot_id"].(string))
	done := target.waitRestore(t, r["restore_id"].(string), false, 2*time.Minute)
	if done["state"] != "completed" {
		t.Fatalf("restore: %v", done)
	}
	got := target.state(t)
	for name, rows := range f.atSnap.tables {
		if got.tables[name] != rows {
			t.Errorf("table %s differs from the source's", name)
		}
	}
	if !maps.Equal(got.blobs, f.atSnap.blobs) {
		t.Errorf("blobs %v, want %v", got.blobs, f.atSnap.blobs)
	}
}

// TestHostileUploadIsRefusedAndLeavesNothing: an archive with an entry that leaves the archive root is
// refused with a message naming the entry; nothing of it can be restored.
func TestHostileUploadIsRefusedAndLeavesNothing(t *testing.T) {
	e := newTestEnv(t, "hostile")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, entry := range []struct{ name, body string }{{"../../etc/cron.d/evil", "* * * * * root sh"}, {"db/db.backup", "PGDMP\x01\x0e\x00"}} {
		if err := tw.WriteHeader(&tar.Header{Name: entry.name, Mode: 0o644, Size: int64(len(entry.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(entry.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	up := e.upload(t, buf.Bytes(), false)
	if up["status"] != "Failed" || !strings.Contains(up["status_message"].(string), "../../etc/cron.d/evil") {
		t.Fatalf("hostile upload: %v", up)
	}
	id := up["snapshot_id"].(string)
	waitFor(t, "the refused upload's blobs to go", func() bool { return len(snapshotBlobsIn(t, e.ns, e.id, id)) == 0 })
	status, r := call(t, tok, "POST", e.restorePath(), fmt.Sprintf(`{"source_snapshot_id":%q}`, id))
	if status != http.StatusConflict || r["code"] != "SNAPSHOT_NOT_READY" {
		t.Errorf("restore of the refused upload: %d %v", status, r)
	}
}

// TestRemovalTimerKeepsWhatIsStillLinked: the hourly removal runs through the host and leaves a
// download whose link is valid (and its link working) in place.
func TestRemovalTimerKeepsWhatIsStillLinked(t *testing.T) {
	f := newRestoreFixture(t, "removal", 1)
	a := f.src.download(t, f.snap.id, "database_only")
	fireTimer(t, "RemoveExpiredTransfers")
	status, again := call(t, tok, "GET", f.src.path+"/"+f.snap.id+"/archives/"+a["archive_id"].(string), "")
	if status != http.StatusOK || again["url"] == nil {
		t.Fatalf("after the removal timer: %d %v", status, again)
	}
	fetch(t, again)
}
