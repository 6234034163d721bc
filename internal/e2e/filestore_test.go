package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/dev/devstack/stack"
)

// testEnv is an environment of its own namespace, made for one test the way the demo is seeded
// (events on environment-events, the settings API): its file store starts empty, so a test can count
// exactly what each backup copies into it.
type testEnv struct {
	ns, id    string
	db        string // its database
	container string // the container of its file documents, under prefix
	prefix    string
	path      string            // its snapshots in the API
	docs      map[string][]byte // file documents with a blob now, by UUID
	rows      map[string]int    // their rows' ids
	nextRow   int
	labels    []string // rows of e2e$marker, one written before each backup
}

const testModelVersion = "2.0.0.7"

func newTestEnv(t *testing.T, name string) *testEnv {
	t.Helper()
	suffix := randomHex(t)[:6]
	e := &testEnv{ns: "e2e-" + name + "-" + suffix}
	e.make(t, name, suffix)
	now := time.Now().UTC()
	permissions, _ := json.Marshal(map[string]any{"type": "namespace.permissions", "event_id": e.ns + "-permissions",
		"occurred_at": now, "namespace": e.ns, "principal_id": stack.DemoUserID, "permissions": []string{"ManageAppsBackups", "StopApps"}})
	publishEvent(t, string(permissions))
	e.waitListed(t)
	if status, body := call(t, tok, "PUT", "/api/v1/namespaces/"+e.ns+"/settings", `{"backups_enabled":true}`); status != http.StatusOK {
		t.Fatalf("enable backups: %d %v", status, body)
	}
	return e
}

// sibling makes another environment in e's namespace (to restore into).
func (e *testEnv) sibling(t *testing.T, name string) *testEnv {
	t.Helper()
	s := &testEnv{ns: e.ns}
	s.make(t, name, randomHex(t)[:6])
	s.waitListed(t)
	return s
}

// make creates the environment's database (owned by the demo's role, with the tables every test
// environment has), its container, and tells the service about it, Stopped.
func (e *testEnv) make(t *testing.T, name, suffix string) {
	t.Helper()
	ctx := context.Background()
	e.id, e.db = uuid.NewString(), "e2e_"+strings.ReplaceAll(name, "-", "_")+"_"+suffix
	e.container, e.prefix, e.docs, e.rows, e.nextRow = "e2e-"+name+"-"+suffix, "docs/", map[string][]byte{}, map[string]int{}, 1
	e.path = "/api/v1/namespaces/" + e.ns + "/environments/" + e.id + "/snapshots"
	if err := env.Postgres.CreateDatabase(ctx, e.db, "demo_app_role"); err != nil {
		t.Fatal(err)
	}
	e.exec(t, `SET ROLE demo_app_role;
CREATE TABLE "system$filedocument" (id bigint PRIMARY KEY, __uuid__ varchar(36), name varchar(400), size bigint,
  hascontents boolean, deleteafterdownload boolean, changeddate timestamp DEFAULT now());
CREATE TABLE "e2e$marker" (id serial PRIMARY KEY, label text NOT NULL);
CREATE TABLE "mendixsystem$version" (versionnumber varchar(50), lastsyncdate timestamp);
INSERT INTO "mendixsystem$version" VALUES ('`+testModelVersion+`', now());`)
	if _, err := blobClient(t).CreateContainer(ctx, e.container, nil); err != nil {
		t.Fatal(err)
	}
	e.sendState(t, "Stopped")
}

// sendState tells the service the environment's state, as the portal's services do.
func (e *testEnv) sendState(t *testing.T, state string) {
	t.Helper()
	environment, _ := json.Marshal(map[string]any{"type": "environment.updated", "event_id": e.id + "-" + state + "-" + randomHex(t)[:8],
		"occurred_at": time.Now().UTC(), "namespace": e.ns, "environment_id": e.id, "app_id": "e2e-app", "name": e.container,
		"state": state, "deployed": true, "deployment_package": "E2E_" + testModelVersion + ".mda", "model_version": testModelVersion,
		"database": map[string]any{"host": env.Postgres.Host, "port": env.Postgres.Port, "name": e.db, "role": "demo_app_role"},
		"files":    map[string]any{"container": e.container, "prefix": e.prefix}})
	publishEvent(t, string(environment))
}

func (e *testEnv) waitListed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for e.environment(t, false) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("environment %s of namespace %s was not listed", e.id, e.ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *testEnv) exec(t *testing.T, sql string) {
	t.Helper()
	if err := env.Postgres.Exec(context.Background(), e.db, sql); err != nil {
		t.Fatal(err)
	}
}

// environment is the environment as the API lists it; nil (or a failure, if must) when it is not.
func (e *testEnv) environment(t *testing.T, must bool) map[string]any {
	t.Helper()
	status, body := call(t, tok, "GET", "/api/v1/namespaces/"+e.ns+"/environments", "")
	if status == http.StatusOK {
		envs, _ := body["environments"].([]any)
		for _, x := range envs {
			if m := x.(map[string]any); m["environment_id"] == e.id {
				return m
			}
		}
	}
	if must {
		t.Fatalf("environment %s is not listed: %d %v", e.id, status, body)
	}
	return nil
}

// putFile writes a file document: its blob (one Put Blob, or staged blocks committed as a list) and its
// row (new, or its size updated: the same UUID with new contents).
func (e *testEnv) putFile(t *testing.T, u string, data []byte, blocks bool) {
	t.Helper()
	ctx := context.Background()
	name := e.prefix + u
	if !blocks {
		if _, err := blobClient(t).UploadBuffer(ctx, e.container, name, data, nil); err != nil {
			t.Fatal(err)
		}
	} else {
		bb := blobClient(t).ServiceClient().NewContainerClient(e.container).NewBlockBlobClient(name)
		var ids []string
		for i, part := range [][]byte{data[:len(data)/2], data[len(data)/2:]} {
			id := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("block-%04d", i)))
			if _, err := bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(part)), nil); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if _, err := bb.CommitBlockList(ctx, ids, nil); err != nil {
			t.Fatal(err)
		}
	}
	if row, ok := e.rows[u]; ok {
		e.exec(t, fmt.Sprintf(`UPDATE "system$filedocument" SET size = %d, changeddate = now() WHERE id = %d`, len(data), row))
	} else {
		e.rows[u] = e.nextRow
		e.exec(t, fmt.Sprintf(`INSERT INTO "system$filedocument" (id, __uuid__, name, size, hascontents, deleteafterdownload)
VALUES (%d, '%s', 'doc-%d.bin', %d, true, false)`, e.nextRow, u, e.nextRow, len(data)))
		e.nextRow++
	}
	e.docs[u] = data
}

// removeFile deletes a file document: its row and its blob.
func (e *testEnv) removeFile(t *testing.T, u string) {
	t.Helper()
	e.exec(t, fmt.Sprintf(`DELETE FROM "system$filedocument" WHERE id = %d`, e.rows[u]))
	if _, err := blobClient(t).DeleteBlob(context.Background(), e.container, e.prefix+u, nil); err != nil {
		t.Fatal(err)
	}
	delete(e.rows, u)
	delete(e.docs, u)
}

// sourceMD5 is the Content-MD5 the file document's blob has, nil when it has none.
func (e *testEnv) sourceMD5(t *testing.T, u string) []byte {
	t.Helper()
	props, err := blobClient(t).ServiceClient().NewContainerClient(e.container).NewBlobClient(e.prefix+u).GetProperties(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return props.ContentMD5
}

// taken is a snapshot a test made, with what it must hold.
type taken struct {
	id      string
	api     map[string]any    // the snapshot as the API showed it when it finished
	files   map[string]string // SHA-256 of its file documents, by UUID
	labels  []string          // its e2e$marker rows
	dump    string            // its dump blob
	objects map[string]string // the store object of each file, by UUID, from its manifest
}

// backup writes a marker row, makes a snapshot through the API and waits for it to finish.
func (e *testEnv) backup(t *testing.T, label string) *taken {
	t.Helper()
	e.exec(t, fmt.Sprintf(`INSERT INTO "e2e$marker" (label) VALUES ('%s')`, label))
	e.labels = append(e.labels, label)
	id := createSnapshotAt(t, e.path, label)
	snap := waitSnapshotAt(t, e.path, id, 2*time.Minute)
	if snap["status"] != "Finished" {
		t.Fatalf("snapshot %s: %v", label, snap)
	}
	if w, _ := snap["warnings"].([]any); len(w) != 0 {
		t.Errorf("snapshot %s has warnings %v", label, w)
	}
	s := &taken{id: id, api: snap, files: map[string]string{}, labels: slices.Clone(e.labels), objects: map[string]string{}}
	var filesBytes int64
	for u, data := range e.docs {
		sum := sha256.Sum256(data)
		s.files[u] = hex.EncodeToString(sum[:])
		filesBytes += int64(len(data))
	}
	if num(snap, "files_count") != int64(len(e.docs)) || num(snap, "files_bytes") != filesBytes ||
		num(snap, "size_bytes") != num(snap, "dump_size_bytes")+filesBytes {
		t.Errorf("snapshot %s: files_count %v files_bytes %v size_bytes %v dump_size_bytes %v; want %d files of %d bytes",
			label, snap["files_count"], snap["files_bytes"], snap["size_bytes"], snap["dump_size_bytes"], len(e.docs), filesBytes)
	}
	var manifest string
	s.dump, manifest = snapshotParts(t, e.ns, e.id, id)
	for _, entry := range readManifest(t, manifest) {
		if _, ok := e.docs[entry.UUID]; !ok || entry.Size != int64(len(e.docs[entry.UUID])) {
			t.Errorf("snapshot %s: manifest entry %+v is not a file document of %d bytes", label, entry, len(e.docs[entry.UUID]))
		}
		s.objects[entry.UUID] = entry.Object
	}
	if len(s.objects) != len(e.docs) {
		t.Errorf("snapshot %s: the manifest names %d files, want %d", label, len(s.objects), len(e.docs))
	}
	return s
}

// checkStoredBytes checks the snapshot's stored_bytes: its dump blob, its manifest and the files it copied.
func (e *testEnv) checkStoredBytes(t *testing.T, s *taken) {
	t.Helper()
	blobs := listBlobs(t, snapshotsContainer, blobstore.Layout{}.SnapshotPrefix(e.ns, e.id, s.id))
	if want := totalSize(blobs) + num(s.api, "new_files_bytes"); num(s.api, "stored_bytes") != want || len(blobs) != 2 {
		t.Errorf("snapshot %s: stored_bytes %v, want %d (blobs %v, new files %v bytes)", s.id, s.api["stored_bytes"], want, blobs, s.api["new_files_bytes"])
	}
}

// objectName is how the store names a file's bytes (docs/snapshot-layout.md): by size and Content-MD5
// when its blob has one, else by size and ETag.
var objectName = regexp.MustCompile(`^([0-9a-f-]{36})/([0-9]+)-(md5|etag)-([0-9a-f]{32})$`)

// checkStore checks the environment's store against what its snapshots reference: every object they
// name is there with the file's size in its name, and it holds nothing else. It returns the store.
func (e *testEnv) checkStore(t *testing.T, snaps []*taken) map[string]int64 {
	t.Helper()
	store := storeObjects(t, e.ns, e.id)
	named := map[string]bool{}
	for _, s := range snaps {
		for u, obj := range s.objects {
			named[obj] = true
			m := objectName.FindStringSubmatch(obj)
			if m == nil || m[1] != u || m[2] != strconv.FormatInt(store[obj], 10) {
				t.Errorf("snapshot %s names object %q for file %s; the store has it with %d bytes", s.id, obj, u, store[obj])
			}
			if _, ok := store[obj]; !ok {
				t.Errorf("object %s of snapshot %s is not in the store", obj, s.id)
			}
		}
	}
	if len(store) != len(named) {
		t.Errorf("the store has %d objects, its snapshots name %d: %v", len(store), len(named), slices.Sorted(maps.Keys(store)))
	}
	return store
}

// checkListed checks the environment list's file_store_objects and file_store_bytes against the store.
func (e *testEnv) checkListed(t *testing.T, store map[string]int64) {
	t.Helper()
	m := e.environment(t, true)
	if num(m, "file_store_objects") != int64(len(store)) || num(m, "file_store_bytes") != totalSize(store) {
		t.Errorf("the environment list shows file_store_objects %v file_store_bytes %v; the store has %d objects of %d bytes",
			m["file_store_objects"], m["file_store_bytes"], len(store), totalSize(store))
	}
}

// checkArchive assembles the snapshot's archive and checks it out: GNU tar, Python and pg_restore read
// it, it holds the snapshot's files with the bytes they had when it was taken, its db/db.backup is its
// dump blob's content, and the dump holds the marker rows written before it and none written after.
func (e *testEnv) checkArchive(t *testing.T, s *taken) {
	t.Helper()
	out := checkArchive(t, assembleArchive(t, e.ns, e.id, s.id), wantArchive{Files: s.files,
		Tables: []string{`system$filedocument`, `e2e$marker`}, DumpSize: num(s.api, "dump_size_bytes"), ModelVersion: testModelVersion})
	dumpPath := filepath.Join(out, "db", "db.backup")
	if b := readFile(t, dumpPath); !bytes.Equal(b, gunzip(t, readBlob(t, snapshotsContainer, s.dump))) {
		t.Errorf("snapshot %s: db/db.backup is not its dump blob's content", s.id)
	}
	rows := run(t, out, filepath.Join(env.Postgres.BinDir, "pg_restore"), "--data-only", "--table=e2e$marker", "--file=-", dumpPath)
	for _, l := range e.labels {
		if has, want := strings.Contains(rows, "\t"+l+"\n"), slices.Contains(s.labels, l); has != want {
			t.Errorf("snapshot %s: marker %q in its dump: %v, want %v\n%s", s.id, l, has, want, rows)
		}
	}
}

func num(m map[string]any, key string) int64 {
	f, ok := m[key].(float64)
	if !ok {
		return -1
	}
	return int64(f)
}

func content(label string, n int) []byte {
	return bytes.Repeat([]byte(label+" line\n"), n)
}

// TestBackupsCopyOnlyNewFiles: a backup copies into its environment's file store only the files the
// store lacks. The first copies every file; a second with no file changes copies none (new_files_count
// 0, the store does not grow), nor does one after a file was rewritten with the same bytes (its object
// is named by Content-MD5); after one file's bytes change under the same UUID and one file is added,
// the next copies exactly those 2. The environment list shows the store's size after each; every
// snapshot's archive assembles and checks out with the files as they were when it was taken.
func TestBackupsCopyOnlyNewFiles(t *testing.T) {
	e := newTestEnv(t, "incremental")
	var files []string
	for i := range 5 {
		u := uuid.NewString()
		files = append(files, u)
		// One is uploaded in blocks: its blob has no Content-MD5, so its object is named by its ETag.
		e.putFile(t, u, content(fmt.Sprintf("file %d", i), 100*(i+1)), i == 4)
	}
	for i, u := range files {
		if md5 := e.sourceMD5(t, u); (len(md5) == 0) != (i == 4) {
			t.Fatalf("file %d: Content-MD5 %x; want one for a single Put Blob and none for a block list", i, md5)
		}
	}
	var total int64
	for _, d := range e.docs {
		total += int64(len(d))
	}

	first := e.backup(t, "first")
	if num(first.api, "new_files_count") != 5 || num(first.api, "new_files_bytes") != total {
		t.Errorf("first backup: new_files_count %v new_files_bytes %v, want 5 and %d", first.api["new_files_count"], first.api["new_files_bytes"], total)
	}
	for i, u := range files {
		kind := "-md5-" + hex.EncodeToString(e.sourceMD5(t, u))
		if i == 4 {
			kind = "-etag-"
		}
		if obj := first.objects[u]; !strings.HasPrefix(obj, u+"/"+strconv.Itoa(len(e.docs[u]))+kind) {
			t.Errorf("file %d: object %q, want %s/%d%s...", i, obj, u, len(e.docs[u]), kind)
		}
	}
	e.checkStoredBytes(t, first)
	store := e.checkStore(t, []*taken{first})
	if len(store) != 5 || totalSize(store) != total {
		t.Errorf("the store has %d objects of %d bytes, want 5 of %d", len(store), totalSize(store), total)
	}
	e.checkListed(t, store)

	// No file changed: nothing is copied, the store does not grow, the same objects are named.
	second := e.backup(t, "unchanged")
	if num(second.api, "new_files_count") != 0 || num(second.api, "new_files_bytes") != 0 {
		t.Errorf("second backup: new_files_count %v new_files_bytes %v, want 0", second.api["new_files_count"], second.api["new_files_bytes"])
	}
	e.checkStoredBytes(t, second)
	if after := storeObjects(t, e.ns, e.id); !maps.Equal(after, store) {
		t.Errorf("the store changed: %d objects, before %d", len(after), len(store))
	}
	if !maps.Equal(second.objects, first.objects) {
		t.Errorf("the second snapshot names other objects:\n%v\n%v", second.objects, first.objects)
	}
	e.checkListed(t, store)

	// A file rewritten with the same bytes in one Put Blob has the same Content-MD5: the same object.
	e.putFile(t, files[0], e.docs[files[0]], false)
	rewritten := e.backup(t, "rewritten")
	if num(rewritten.api, "new_files_count") != 0 || !maps.Equal(rewritten.objects, first.objects) {
		t.Errorf("after a same-bytes rewrite: new_files_count %v, objects %v", rewritten.api["new_files_count"], rewritten.objects)
	}

	// One file's bytes change under its UUID, one file is added: exactly those 2 are copied.
	changed, added := content("file 0, second version", 150), content("file 5", 70)
	e.putFile(t, files[0], changed, false)
	files = append(files, uuid.NewString())
	e.putFile(t, files[5], added, false)
	third := e.backup(t, "changed")
	if num(third.api, "new_files_count") != 2 || num(third.api, "new_files_bytes") != int64(len(changed)+len(added)) {
		t.Errorf("after a change and an addition: new_files_count %v new_files_bytes %v, want 2 and %d",
			third.api["new_files_count"], third.api["new_files_bytes"], len(changed)+len(added))
	}
	if third.objects[files[0]] == first.objects[files[0]] {
		t.Errorf("the changed file is named by its old object %s", third.objects[files[0]])
	}
	for _, u := range files[1:5] {
		if third.objects[u] != first.objects[u] {
			t.Errorf("unchanged file %s: object %s, before %s", u, third.objects[u], first.objects[u])
		}
	}
	e.checkStoredBytes(t, third)
	store = e.checkStore(t, []*taken{first, second, rewritten, third})
	if len(store) != 7 {
		t.Errorf("the store has %d objects, want 7", len(store))
	}
	e.checkListed(t, store)

	for _, s := range []*taken{first, second, rewritten, third} {
		e.checkArchive(t, s)
	}
}

// TestDeletedSnapshotsFilesAreCollected: snapshots deleted through the API (a middle one, the oldest,
// then the last) leave their files in the store to the collector. The CollectFileStores timer, fired on
// demand through the local host, keeps the objects no snapshot names any more, since they are younger
// than its grace period (12 h), and reports them in its state and the environment list. A collector
// run past the grace period (in-process, over the same storage, with the service's CollectorGrace set
// to 1 ns) deletes exactly those. After each deletion every remaining snapshot still assembles and
// checks out.
func TestDeletedSnapshotsFilesAreCollected(t *testing.T) {
	e := newTestEnv(t, "collect")
	var f []string
	for i := range 4 {
		f = append(f, uuid.NewString())
		e.putFile(t, f[i], content(fmt.Sprintf("document %d", i), 50*(i+1)), false)
	}
	a := e.backup(t, "A") // f0, f1, f2, f3
	e.putFile(t, f[0], content("document 0, B", 80), false)
	e.removeFile(t, f[1])
	f = append(f, uuid.NewString())
	e.putFile(t, f[4], content("document 4", 90), false)
	b := e.backup(t, "B") // f0', f2, f3, f4
	e.putFile(t, f[4], content("document 4, C", 95), false)
	c := e.backup(t, "C") // f0', f2, f3, f4'
	for _, s := range []*taken{a, b, c} {
		e.checkStoredBytes(t, s)
	}
	if n := num(a.api, "new_files_count") + num(b.api, "new_files_count") + num(c.api, "new_files_count"); n != 7 {
		t.Errorf("new_files_count %v + %v + %v, want 4 + 2 + 1", a.api["new_files_count"], b.api["new_files_count"], c.api["new_files_count"])
	}
	store := e.checkStore(t, []*taken{a, b, c})
	if len(store) != 7 {
		t.Fatalf("the store has %d objects, want 7", len(store))
	}

	live := []*taken{a, b, c}
	for _, victim := range []*taken{b, a, c} {
		label := victim.labels[len(victim.labels)-1]
		if status, body := call(t, tok, "DELETE", e.path+"/"+victim.id, ""); status != http.StatusNoContent {
			t.Fatalf("delete %s: %d %v", label, status, body)
		}
		if status, _ := call(t, tok, "GET", e.path+"/"+victim.id, ""); status != http.StatusNotFound {
			t.Errorf("get %s after delete: %d", label, status)
		}
		if blobs := snapshotBlobsIn(t, e.ns, e.id, victim.id); len(blobs) != 0 {
			t.Errorf("blobs of %s left after delete: %v", label, blobs)
		}
		live = slices.DeleteFunc(live, func(s *taken) bool { return s == victim })
		referenced := map[string]bool{}
		for _, s := range live {
			for _, obj := range s.objects {
				referenced[obj] = true
			}
		}
		unreferenced := len(store) - len(referenced)
		if unreferenced <= 0 {
			t.Fatalf("after deleting %s no object is unreferenced: the test deletes nothing", label)
		}

		// The hourly timer, on demand: the unreferenced objects are young, so they are kept and reported.
		since := time.Now()
		fireTimer(t, "CollectFileStores")
		if after := storeObjects(t, e.ns, e.id); !maps.Equal(after, store) {
			t.Errorf("after deleting %s, the timer's collector changed the store: %d objects, before %d", label, len(after), len(store))
		}
		st := collectorState(t, e)
		if st.Young != unreferenced || st.Objects != len(store) || st.StoreBytes != totalSize(store) || st.Owner != "" ||
			st.LastRun.Before(since.Add(-time.Second)) || len(st.Deleting) != 0 {
			t.Errorf("after deleting %s, the collector's state %+v; want %d young of %d objects (%d bytes), run since %s",
				label, st, unreferenced, len(store), totalSize(store), since)
		}
		e.checkListed(t, store)

		// Past the grace period, exactly the unreferenced objects are deleted.
		rep := collectPastGrace(t, e)
		if rep.Deleted != unreferenced || rep.Objects != len(referenced) || rep.Referenced != len(referenced) || rep.Young != 0 || rep.Left != 0 {
			t.Errorf("after deleting %s, the collector past the grace period: %+v; want %d deleted, %d left in the store", label, rep, unreferenced, len(referenced))
		}
		store = e.checkStore(t, live)
		if len(store) != len(referenced) {
			t.Errorf("after deleting %s: the store has %d objects, the live snapshots name %d", label, len(store), len(referenced))
		}
		e.checkListed(t, store)
		for _, s := range live {
			e.checkArchive(t, s)
		}
	}
	if len(store) != 0 {
		t.Errorf("with no snapshot left the store holds %v", store)
	}
	// With nothing changed since, the timer has nothing to do and keeps the (empty) store.
	fireTimer(t, "CollectFileStores")
	if st := collectorState(t, e); st.Objects != 0 || st.Young != 0 || len(st.Deleting) != 0 {
		t.Errorf("the collector's state at the end: %+v", st)
	}
}

// fireTimer runs a timer function on demand through the local host and waits for it to succeed.
func fireTimer(t *testing.T, function string) {
	t.Helper()
	since := time.Now()
	resp, err := http.Post(env.URL+"/admin/functions/"+function, "application/json", strings.NewReader(`{"input":""}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /admin/functions/%s: %d", function, resp.StatusCode)
	}
	waitInvocation(t, function, "Succeeded", since)
}

func collectorState(t *testing.T, e *testEnv) backup.CollectorState {
	t.Helper()
	_, blobs := storage(t)
	st, etag, err := blobs.ReadCollectorState(context.Background(), e.ns, e.id)
	if err != nil || etag == "" {
		t.Fatalf("the collector's state of %s: %q %v", e.id, etag, err)
	}
	return st
}

// collectPastGrace runs the collector for the environment as the handler does, over the same storage,
// but with a grace period of 1 ns: every unreferenced object is old enough to be deleted. (The
// handler's is 12 h, and Azurite's clock cannot be moved.) Only this test's environment is collected.
func collectPastGrace(t *testing.T, e *testEnv) backup.CollectReport {
	t.Helper()
	tables, blobs := storage(t)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	svc := backup.NewService(backup.Deps{Stores: tables.Stores(), Archives: blobs, Layout: blobstore.Layout{},
		FileStore: blobs, Manifests: blobs, Log: log, CollectorGrace: time.Nanosecond})
	deadline := time.Now().Add(time.Minute)
	for {
		rep, err := svc.CollectFiles(context.Background(), e.ns, e.id, log)
		if err != nil {
			t.Fatalf("collect: %v", err)
		}
		if !rep.Busy {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatal("the collector's claim stayed busy")
		}
		time.Sleep(time.Second) // the scheduled run of the handler's timer holds it
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
