package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/mxazure/backups/internal/dev/devstack/stack"
	"github.com/mxazure/backups/internal/dev/funchost"
)

var snapshotsPath = "/api/v1/namespaces/demo/environments/" + stack.DemoEnvironmentID + "/snapshots"

// createSnapshot asks for a snapshot and returns its id.
func createSnapshot(t *testing.T, comment string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"comment": comment})
	// A previous test's snapshot ends (the record) a few milliseconds before its operation does (which
	// frees the environment): ENVIRONMENT_BUSY is possible in between, and is retried briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, snap := call(t, tok, "POST", snapshotsPath, string(body))
		if status == http.StatusConflict && snap["code"] == "ENVIRONMENT_BUSY" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if status != http.StatusAccepted || snap["status"] != "Processing" {
			t.Fatalf("create snapshot: %d %v", status, snap)
		}
		return snap["snapshot_id"].(string)
	}
}

// waitSnapshot polls until the snapshot leaves Processing.
func waitSnapshot(t *testing.T, id string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		status, snap := call(t, tok, "GET", snapshotsPath+"/"+id, "")
		switch {
		case status >= 500 && time.Now().Before(deadline):
			// The handler is restarting (a test killed it): the host answers 5xx meanwhile.
			time.Sleep(200 * time.Millisecond)
			continue
		case status != http.StatusOK:
			t.Fatalf("get snapshot: %d %v", status, snap)
		}
		if snap["status"] != "Processing" {
			return snap
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot still Processing after %s: %v", timeout, snap)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func blobClient(t *testing.T) *azblob.Client {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(env.Azurite.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// snapshotBlobs lists the blobs of a snapshot in the snapshots container.
func snapshotBlobs(t *testing.T, id string) []string {
	t.Helper()
	prefix := "demo/" + stack.DemoEnvironmentID + "/" + id + "/"
	pager := blobClient(t).NewListBlobsFlatPager("snapshots", &container.ListBlobsFlatOptions{Prefix: &prefix})
	var names []string
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	return names
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func TestSnapshotArchiveReadsWithIndependentTools(t *testing.T) {
	started := time.Now()
	id := createSnapshot(t, "before the upgrade")
	snap := waitSnapshot(t, id, 2*time.Minute)
	if snap["status"] != "Finished" {
		t.Fatalf("snapshot: %v", snap)
	}
	// Details the portal shows, plus the additions.
	if snap["comment"] != "before the upgrade" || snap["kind"] != "manual" || snap["deployment_package"] != "DemoApp_1.0.0.40.mda" ||
		snap["model_version"] != "1.0.0.40" || snap["finished_at"] == nil {
		t.Errorf("details: %v", snap)
	}
	created, _ := time.Parse(time.RFC3339Nano, snap["created_at"].(string))
	expires, _ := time.Parse(time.RFC3339Nano, snap["expires_at"].(string))
	if !expires.Equal(created.AddDate(0, 0, 14)) || created.Before(started.Add(-time.Minute)) {
		t.Errorf("created_at %v, expires_at %v: want 14 days apart", created, expires)
	}
	if int(snap["files_count"].(float64)) != len(demo.Files) {
		t.Errorf("files_count %v, want %d", snap["files_count"], len(demo.Files))
	}
	warnings, _ := json.Marshal(snap["warnings"])
	if !strings.Contains(string(warnings), demo.MissingFiles[0]) {
		t.Errorf("warnings %s do not name the file row without a blob %s", warnings, demo.MissingFiles[0])
	}

	// Exactly one blob: the archive.
	blobs := snapshotBlobs(t, id)
	if len(blobs) != 1 {
		t.Fatalf("blobs of the snapshot: %v", blobs)
	}
	dir := t.TempDir()
	archivePath := filepath.Join(dir, "snapshot.tar.gz")
	resp, err := blobClient(t).DownloadStream(context.Background(), "snapshots", blobs[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Create(archivePath)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	resp.Body.Close()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(h.Sum(nil)) != snap["sha256"] || float64(n) != snap["size_bytes"] {
		t.Errorf("blob sha256 %x size %d, snapshot says %v %v", h.Sum(nil), n, snap["sha256"], snap["size_bytes"])
	}

	// GNU tar lists exactly the expected entries.
	want := []string{".metadata", "db/db.backup"}
	for _, f := range demo.Files {
		want = append(want, "tree/"+f.UUID[0:2]+"/"+f.UUID[2:4]+"/"+f.UUID)
	}
	got := strings.Fields(run(t, dir, "tar", "-tzf", archivePath))
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tar -t lists\n%v\nwant\n%v", got, want)
	}
	out := filepath.Join(dir, "x")
	_ = os.Mkdir(out, 0o755)
	run(t, dir, "tar", "-xzf", archivePath, "-C", out)

	// db/db.backup: custom format, archive version 1.14, readable by pg_restore.
	header := make([]byte, 8)
	df, _ := os.Open(filepath.Join(out, "db", "db.backup"))
	_, _ = io.ReadFull(df, header)
	df.Close()
	if string(header[:5]) != "PGDMP" || header[5] != 1 || header[6] != 14 {
		t.Errorf("dump header % x: want PGDMP 1.14", header)
	}
	listing := run(t, dir, filepath.Join(env.Postgres.BinDir, "pg_restore"), "--list", filepath.Join(out, "db", "db.backup"))
	for _, table := range []string{`myfirstmodule$customer`, `system$filedocument`} {
		if !strings.Contains(listing, table) {
			t.Errorf("pg_restore --list does not mention %s", table)
		}
	}
	// Every file's bytes match its blob.
	for _, f := range demo.Files {
		b, err := os.ReadFile(filepath.Join(out, "tree", f.UUID[0:2], f.UUID[2:4], f.UUID))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != f.SHA256 {
			t.Errorf("file %s differs from its blob", f.UUID)
		}
	}
	// .metadata: the five fields, every value a string.
	var meta map[string]any
	raw, _ := os.ReadFile(filepath.Join(out, ".metadata"))
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatalf(".metadata: %v", err)
	}
	for _, k := range []string{"duration", "dumpSize", "modelVersion", "databaseSize", "filesSize"} {
		if _, ok := meta[k].(string); !ok {
			t.Errorf(".metadata %s = %#v, want a string", k, meta[k])
		}
	}
	st, _ := os.Stat(filepath.Join(out, "db", "db.backup"))
	if meta["dumpSize"] != strconv.FormatInt(st.Size(), 10) || meta["modelVersion"] != "1.0.0.40" {
		t.Errorf(".metadata %v (dump is %d bytes)", meta, st.Size())
	}
	// Python's tarfile reads it too.
	py := `import sys, tarfile
t = tarfile.open(sys.argv[1], "r:gz")
n = 0
for m in t.getmembers():
    assert m.isfile(), m.name
    data = t.extractfile(m).read()
    assert len(data) == m.size, m.name
    n += 1
print(n)`
	if got := strings.TrimSpace(run(t, dir, "python3", "-c", py, archivePath)); got != strconv.Itoa(len(want)) {
		t.Errorf("python tarfile read %s members, want %d", got, len(want))
	}

	// Activity and the outbound event.
	_, act := call(t, tok, "GET", "/api/v1/namespaces/demo/environments/"+stack.DemoEnvironmentID+"/activity?limit=50", "")
	if !hasActivity(act, id, "backup", "STARTED") || !hasActivity(act, id, "backup", "FINISHED") {
		t.Errorf("activity lacks STARTED/FINISHED for %s: %v", id, act)
	}
	if !published(t, "backup-events", `"snapshot.finished"`, id) {
		t.Error("no snapshot.finished event on backup-events")
	}
}

func hasActivity(act map[string]any, snapshotID, action, status string) bool {
	entries, _ := act["entries"].([]any)
	for _, e := range entries {
		m := e.(map[string]any)
		if m["snapshot_id"] == snapshotID && m["action"] == action && m["status"] == status {
			return true
		}
	}
	return false
}

// published reports whether a message holding every part is published to entity within 10 s. The
// worker records the snapshot before it publishes the event, so a test that has just seen the record
// end may look a moment too early.
func published(t *testing.T, entity string, parts ...string) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if msgs, ok := env.Host.Messages(entity); ok {
			for _, m := range msgs.Published {
				match := true
				for _, p := range parts {
					match = match && strings.Contains(m.Body, p)
				}
				if match {
					return true
				}
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSnapshotListCommentAndDelete(t *testing.T) {
	id := createSnapshot(t, "to be deleted")
	if snap := waitSnapshot(t, id, 2*time.Minute); snap["status"] != "Finished" {
		t.Fatalf("snapshot: %v", snap)
	}
	status, page := call(t, tok, "GET", snapshotsPath+"?limit=1", "")
	if status != 200 || page["limit"] != float64(1) || page["total"].(float64) < 1 {
		t.Fatalf("list: %d %v", status, page)
	}
	if first := page["snapshots"].([]any)[0].(map[string]any); first["snapshot_id"] != id {
		t.Errorf("newest first: got %v first, want %s", first["snapshot_id"], id)
	}
	status, snap := call(t, tok, "PATCH", snapshotsPath+"/"+id, `{"comment":"kept for audit"}`)
	if status != 200 || snap["comment"] != "kept for audit" || snap["status"] != "Finished" {
		t.Errorf("patch: %d %v", status, snap)
	}
	if status, p := call(t, tok, "PATCH", snapshotsPath+"/"+id, `{"comment":"x","status":"Failed"}`); status != 400 || p["code"] != "INVALID_PARAMETERS" {
		t.Errorf("patch of another field: %d %v, want 400", status, p)
	}
	if len(snapshotBlobs(t, id)) != 1 {
		t.Fatal("no archive blob before delete")
	}
	if status, _ := call(t, tok, "DELETE", snapshotsPath+"/"+id, ""); status != http.StatusNoContent {
		t.Fatalf("delete: %d", status)
	}
	if blobs := snapshotBlobs(t, id); len(blobs) != 0 {
		t.Errorf("blobs left after delete: %v", blobs)
	}
	if status, p := call(t, tok, "GET", snapshotsPath+"/"+id, ""); status != 404 || p["code"] != "NOT_FOUND" {
		t.Errorf("get after delete: %d %v", status, p)
	}
}

// sendEnvironmentState publishes an environment.updated event moving the demo environment to state.
func sendEnvironmentState(t *testing.T, state string) {
	t.Helper()
	ev, _ := json.Marshal(map[string]any{"type": "environment.updated", "event_id": "e2e-" + state + strconv.FormatInt(time.Now().UnixNano(), 10),
		"occurred_at": time.Now().UTC(), "namespace": "demo", "environment_id": stack.DemoEnvironmentID, "app_id": "demo-app",
		"name": "acceptance", "state": state, "deployed": true, "deployment_package": "DemoApp_1.0.0.40.mda", "model_version": "1.0.0.40",
		"database": map[string]any{"host": env.Postgres.Host, "port": env.Postgres.Port, "name": demo.Database, "role": "demo_app_role"},
		"files":    map[string]any{"container": demo.Container, "prefix": ""}})
	publishEvent(t, string(ev))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, body := call(t, tok, "GET", "/api/v1/namespaces/demo/environments", "")
		if envs, _ := body["environments"].([]any); len(envs) == 1 && envs[0].(map[string]any)["state"] == state {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("environment did not reach %s", state)
}

func TestSnapshotRefusedWhileDeploying(t *testing.T) {
	sendEnvironmentState(t, "Deploying")
	defer sendEnvironmentState(t, "Stopped")
	status, p := call(t, tok, "POST", snapshotsPath, `{"comment":"x"}`)
	if status != 409 || p["code"] != "INVALID_STATE" {
		t.Fatalf("got %d %v, want 409 INVALID_STATE", status, p)
	}
	_, list := call(t, tok, "GET", "/api/v1/namespaces/demo/environments", "")
	e := list["environments"].([]any)[0].(map[string]any)
	if e["can_create_backup"] != false || !strings.Contains(e["reason"].(string), "deployed") {
		t.Errorf("environment: %v", e)
	}
}

func TestPgDumpFailingHalfWayLeavesNoBlob(t *testing.T) {
	setDumpMode(t, "fail-half")
	id := createSnapshot(t, "doomed")
	snap := waitSnapshot(t, id, 2*time.Minute)
	// The message is a sentence for users; pg_dump's stderr stays in the log.
	if msg := snap["status_message"].(string); snap["status"] != "Failed" || !strings.Contains(msg, "the database dump failed") || strings.Contains(msg, "simulated failure") {
		t.Fatalf("snapshot: %v", snap)
	}
	if blobs := snapshotBlobs(t, id); len(blobs) != 0 {
		t.Errorf("a failed backup left blobs: %v", blobs)
	}
	if !published(t, "backup-events", `"snapshot.failed"`, id) {
		t.Error("no snapshot.failed event")
	}
	// The environment is not left locked.
	setDumpMode(t, "normal")
	next := createSnapshot(t, "after the failure")
	if snap := waitSnapshot(t, next, 2*time.Minute); snap["status"] != "Finished" {
		t.Errorf("next snapshot: %v", snap)
	}
}

func TestHandlerKilledMidBackupRecovers(t *testing.T) {
	setDumpMode(t, "stall-once")
	id := createSnapshot(t, "survives a crash")
	// Wait until the worker is inside pg_dump (the stalled wrapper), then kill the handler process.
	deadline := time.Now().Add(time.Minute)
	for {
		if mode, _ := os.ReadFile(dumpControl); strings.TrimSpace(string(mode)) == "normal" {
			break // the wrapper consumed stall-once: the dump is running and stalled
		}
		if time.Now().After(deadline) {
			t.Fatal("the backup never reached pg_dump")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	pid := env.Host.Status().HandlerPID
	if pid == 0 {
		t.Fatal("no handler pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The host restarts the handler and redelivers; the second attempt finishes.
	snap := waitSnapshot(t, id, 2*time.Minute)
	if snap["status"] != "Finished" {
		t.Fatalf("after the crash: %v", snap)
	}
	blobs := snapshotBlobs(t, id)
	if len(blobs) != 1 || !strings.HasSuffix(blobs[0], "attempt-02.tar.gz") {
		t.Errorf("blobs %v: want only the second attempt's archive", blobs)
	}
	if env.Host.Status().HandlerPID == pid {
		t.Error("handler was not restarted")
	}
}

// publishEvent sends an event to the environment-events queue, as other services do.
func publishEvent(t *testing.T, body string) {
	t.Helper()
	if _, err := env.Host.Publish("environment-events", []funchost.PublishMessage{{Body: body, ContentType: "application/json"}}); err != nil {
		t.Fatal(err)
	}
}

func TestDuplicateJobMessageDoesNothing(t *testing.T) {
	id := createSnapshot(t, "delivered twice")
	first := waitSnapshot(t, id, 2*time.Minute)
	if first["status"] != "Finished" {
		t.Fatalf("snapshot: %v", first)
	}
	// The job message the API sent, sent again (with another MessageId, so duplicate detection does not
	// drop it): a redelivery after the work is done.
	msgs, _ := env.Host.Messages("backup-jobs")
	var body string
	for _, m := range msgs.Published {
		if strings.Contains(m.Body, `"environment_id":"`+stack.DemoEnvironmentID+`"`) {
			body = m.Body // the newest is last
		}
	}
	if body == "" {
		t.Fatal("no job message found")
	}
	since := time.Now()
	if _, err := env.Host.Publish("backup-jobs", []funchost.PublishMessage{{Body: body, MessageID: "replay-" + id,
		SessionID: stack.DemoEnvironmentID, ContentType: "application/json"}}); err != nil {
		t.Fatal(err)
	}
	waitInvocation(t, "BackupJobs", "Succeeded", since)
	again := waitSnapshot(t, id, time.Minute)
	if again["sha256"] != first["sha256"] || again["finished_at"] != first["finished_at"] || len(snapshotBlobs(t, id)) != 1 {
		t.Errorf("a duplicate delivery changed the snapshot:\n%v\n%v", first, again)
	}
}
