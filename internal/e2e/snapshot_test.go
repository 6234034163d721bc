package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// createSnapshot asks for a snapshot of the demo environment and returns its id.
func createSnapshot(t *testing.T, comment string) string {
	t.Helper()
	return createSnapshotAt(t, snapshotsPath, comment)
}

// createSnapshotAt asks for a snapshot at the snapshots path of an environment and returns its id.
func createSnapshotAt(t *testing.T, path, comment string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"comment": comment})
	// A previous test's snapshot ends (the record) a few milliseconds before its operation does (which
	// frees the environment): ENVIRONMENT_BUSY is possible in between, and is retried briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, snap := call(t, tok, "POST", path, string(body))
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

// waitSnapshot polls until the demo environment's snapshot leaves Processing.
func waitSnapshot(t *testing.T, id string, timeout time.Duration) map[string]any {
	t.Helper()
	return waitSnapshotAt(t, snapshotsPath, id, timeout)
}

// waitSnapshotAt polls until the snapshot at the snapshots path of an environment leaves Processing.
func waitSnapshotAt(t *testing.T, path, id string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		status, snap := call(t, tok, "GET", path+"/"+id, "")
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

// snapshotBlobs lists the blobs of a demo snapshot in the snapshots container, sorted.
func snapshotBlobs(t *testing.T, id string) []string {
	t.Helper()
	return snapshotBlobsIn(t, "demo", stack.DemoEnvironmentID, id)
}

// snapshotBlobsIn lists the blobs of a snapshot in the snapshots container, sorted.
func snapshotBlobsIn(t *testing.T, namespace, envID, id string) []string {
	t.Helper()
	prefix := namespace + "/" + envID + "/" + id + "/"
	pager := blobClient(t).NewListBlobsFlatPager(snapshotsContainer, &container.ListBlobsFlatOptions{Prefix: &prefix})
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
	sort.Strings(names)
	return names
}

// snapshotParts returns the dump and the manifest blob of a Finished snapshot, failing unless they
// are its only blobs and were written by the same claim.
func snapshotParts(t *testing.T, namespace, envID, id string) (dump, manifest string) {
	t.Helper()
	blobs := snapshotBlobsIn(t, namespace, envID, id)
	if len(blobs) != 2 {
		t.Fatalf("blobs of snapshot %s: %v, want its dump and its manifest", id, blobs)
	}
	dump, manifest = blobs[0], blobs[1]
	base, ok := strings.CutSuffix(dump, ".db.backup.gz")
	if !ok || manifest != base+".manifest.gz" || !strings.Contains(base, "/attempt-") {
		t.Fatalf("blobs of snapshot %s: %v, want attempt-NN.db.backup.gz and attempt-NN.manifest.gz", id, blobs)
	}
	return dump, manifest
}

// waitBlobs waits until the snapshot's blobs are want (sorted): settling, which removes what the
// snapshot does not keep, ends a moment after the record does.
func waitBlobs(t *testing.T, namespace, envID, id string, want ...string) {
	t.Helper()
	sort.Strings(want)
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := snapshotBlobsIn(t, namespace, envID, id)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blobs of snapshot %s: %v, want %v", id, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
	storeBefore := storeObjects(t, "demo", stack.DemoEnvironmentID)
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

	// The snapshot is its parts: a dump blob and a manifest, written by one claim.
	dumpBlob, manifestBlob := snapshotParts(t, "demo", stack.DemoEnvironmentID, id)
	dir := t.TempDir()
	dumpGz := filepath.Join(dir, "dump.gz")
	n, dumpSum := downloadBlob(t, snapshotsContainer, dumpBlob, dumpGz)
	if dumpSum != snap["sha256"] {
		t.Errorf("dump blob sha256 %s (%d bytes), snapshot says %v", dumpSum, n, snap["sha256"])
	}
	// The dump blob is a plain .gz of db.backup: gzip reads it.
	run(t, dir, "gzip", "-t", dumpGz)
	dump := gunzip(t, readBlob(t, snapshotsContainer, dumpBlob))
	var filesBytes int64
	for _, f := range demo.Files {
		filesBytes += int64(f.Size)
	}
	if float64(len(dump)) != snap["dump_size_bytes"] || float64(filesBytes) != snap["files_bytes"] ||
		float64(int64(len(dump))+filesBytes) != snap["size_bytes"] {
		t.Errorf("dump_size_bytes %v files_bytes %v size_bytes %v; the dump has %d bytes, the files %d",
			snap["dump_size_bytes"], snap["files_bytes"], snap["size_bytes"], len(dump), filesBytes)
	}
	// The manifest names a store object for every file document, and each is in the store with its size.
	// The backup copied what the store lacked, and counted it.
	objects := storeObjects(t, "demo", stack.DemoEnvironmentID)
	newFiles, newBytes := len(objects)-len(storeBefore), totalSize(objects)-totalSize(storeBefore)
	if snap["new_files_count"] != float64(newFiles) || snap["new_files_bytes"] != float64(newBytes) {
		t.Errorf("new_files_count %v new_files_bytes %v; the store grew by %d objects of %d bytes",
			snap["new_files_count"], snap["new_files_bytes"], newFiles, newBytes)
	}
	// The environment list shows the store's size as the backup measured it.
	_, list := call(t, tok, "GET", "/api/v1/namespaces/demo/environments", "")
	if e := listed(list, stack.DemoEnvironmentID); e == nil || num(e, "file_store_objects") != int64(len(objects)) ||
		num(e, "file_store_bytes") != totalSize(objects) {
		t.Errorf("environments %v; the store has %d objects of %d bytes", list, len(objects), totalSize(objects))
	}
	manifestSize := listBlobs(t, snapshotsContainer, manifestBlob)[""]
	if stored := n + manifestSize + newBytes; snap["stored_bytes"] != float64(stored) {
		t.Errorf("stored_bytes %v, want dump blob %d + manifest %d + new files %d", snap["stored_bytes"], n, manifestSize, newBytes)
	}
	entries := readManifest(t, manifestBlob)
	if len(entries) != len(demo.Files) {
		t.Errorf("the manifest has %d entries, want %d", len(entries), len(demo.Files))
	}
	for _, e := range entries {
		if size, ok := objects[e.Object]; !ok || size != e.Size || !strings.HasPrefix(e.Object, e.UUID+"/") {
			t.Errorf("manifest entry %+v: the store has %q with %d bytes (%v)", e, e.Object, size, ok)
		}
	}

	// The archive assembled from the parts reads with GNU tar, pg_restore and Python's tarfile, holds
	// every file document and exactly the dump blob's db.backup.
	out := checkArchive(t, assembleArchive(t, "demo", stack.DemoEnvironmentID, id), demoArchive(snap))
	if b, _ := os.ReadFile(filepath.Join(out, "db", "db.backup")); !bytes.Equal(b, dump) {
		t.Errorf("db/db.backup (%d bytes) is not the dump blob's content (%d bytes)", len(b), len(dump))
	}
	if left := snapshotBlobs(t, id); !slices.Equal(left, []string{dumpBlob, manifestBlob}) {
		t.Errorf("blobs after assembling: %v", left)
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

// demoArchive is what the archive of a Finished demo snapshot holds: every demo file with a blob.
func demoArchive(snap map[string]any) wantArchive {
	want := wantArchive{Files: map[string]string{}, Tables: []string{`myfirstmodule$customer`, `system$filedocument`},
		DumpSize: int64(snap["dump_size_bytes"].(float64)), ModelVersion: "1.0.0.40"}
	for _, f := range demo.Files {
		want.Files[f.UUID] = f.SHA256
	}
	return want
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
	snapshotParts(t, "demo", stack.DemoEnvironmentID, id) // its dump and manifest
	objects := storeObjects(t, "demo", stack.DemoEnvironmentID)
	if status, _ := call(t, tok, "DELETE", snapshotsPath+"/"+id, ""); status != http.StatusNoContent {
		t.Fatalf("delete: %d", status)
	}
	if blobs := snapshotBlobs(t, id); len(blobs) != 0 {
		t.Errorf("blobs left after delete: %v", blobs)
	}
	// Its files are shared with the other snapshots: only the collector removes store objects.
	if after := storeObjects(t, "demo", stack.DemoEnvironmentID); !maps.Equal(after, objects) {
		t.Errorf("the delete changed the file store: %d objects, before %d", len(after), len(objects))
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
		if e := listed(body, stack.DemoEnvironmentID); e != nil && e["state"] == state {
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
	e := listed(list, stack.DemoEnvironmentID)
	if e == nil || e["can_create_backup"] != false || !strings.Contains(e["reason"].(string), "deployed") {
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
	// The attempt may have written its manifest before the dump failed: settling removes it.
	waitBlobs(t, "demo", stack.DemoEnvironmentID, id)
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
	// Only the second attempt's dump and manifest are kept (the first may have written its manifest
	// before it was killed).
	prefix := "demo/" + stack.DemoEnvironmentID + "/" + id + "/"
	waitBlobs(t, "demo", stack.DemoEnvironmentID, id, prefix+"attempt-02.db.backup.gz", prefix+"attempt-02.manifest.gz")
	// The second attempt's parts make a complete archive.
	checkArchive(t, assembleArchive(t, "demo", stack.DemoEnvironmentID, id), demoArchive(snap))
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
	parts := snapshotBlobs(t, id)
	objects := storeObjects(t, "demo", stack.DemoEnvironmentID)
	since := time.Now()
	if _, err := env.Host.Publish("backup-jobs", []funchost.PublishMessage{{Body: body, MessageID: "replay-" + id,
		SessionID: stack.DemoEnvironmentID, ContentType: "application/json"}}); err != nil {
		t.Fatal(err)
	}
	waitInvocation(t, "BackupJobs", "Succeeded", since)
	again := waitSnapshot(t, id, time.Minute)
	if again["sha256"] != first["sha256"] || again["finished_at"] != first["finished_at"] || len(parts) != 2 ||
		!slices.Equal(snapshotBlobs(t, id), parts) {
		t.Errorf("a duplicate delivery changed the snapshot:\n%v\n%v\n(blobs %v, before %v)", first, again, snapshotBlobs(t, id), parts)
	}
	if after := storeObjects(t, "demo", stack.DemoEnvironmentID); !maps.Equal(after, objects) {
		t.Errorf("a duplicate delivery changed the file store: %d objects, before %d", len(after), len(objects))
	}
}
