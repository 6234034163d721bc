package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/funchost"
)

// envState is everything of an environment a restore may change: every table's rows (as text, in
// order), the owner of every table, its sequences' values, its databases by name, and its container's
// blobs (SHA-256 by name).
type envState struct {
	tables    map[string]string
	owners    map[string]string
	sequences map[string]string
	databases []string
	blobs     map[string]string
}

func (e *testEnv) state(t *testing.T) envState {
	t.Helper()
	ctx := context.Background()
	st := envState{tables: map[string]string{}, owners: map[string]string{}, sequences: map[string]string{}, blobs: map[string]string{}}
	db := connectDB(t, e.db)
	defer db.Close(ctx)
	rows, err := db.Query(ctx, `SELECT schemaname, tablename, tableowner FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatal(err)
	}
	type table struct{ schema, name, owner string }
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var x table
		return x, r.Scan(&x.schema, &x.name, &x.owner)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		q := pgx.Identifier{tb.schema, tb.name}.Sanitize()
		var text string
		if err := db.QueryRow(ctx, `SELECT coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '') FROM `+q+` t`).Scan(&text); err != nil {
			t.Fatal(err)
		}
		st.tables[tb.schema+"."+tb.name], st.owners[tb.schema+"."+tb.name] = text, tb.owner
	}
	seqs, err := db.Query(ctx, `SELECT schemaname || '.' || sequencename, coalesce(last_value, 0)::text FROM pg_sequences`)
	if err != nil {
		t.Fatal(err)
	}
	for seqs.Next() {
		var name, v string
		if err := seqs.Scan(&name, &v); err != nil {
			t.Fatal(err)
		}
		st.sequences[name] = v
	}
	if err := seqs.Err(); err != nil {
		t.Fatal(err)
	}
	dbs, err := db.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1`, e.db+"%")
	if err != nil {
		t.Fatal(err)
	}
	if st.databases, err = pgx.CollectRows(dbs, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	for name := range listBlobs(t, e.container, "") {
		sum := sha256.Sum256(readBlob(t, e.container, name))
		st.blobs[name] = hex.EncodeToString(sum[:])
	}
	return st
}

func connectDB(t *testing.T, name string) *pgx.Conn {
	t.Helper()
	db, err := pgx.Connect(context.Background(), env.Postgres.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// same fails unless got equals want in every part; what names the moment.
func (st envState) same(t *testing.T, what string, want envState) {
	t.Helper()
	for name, rows := range want.tables {
		if got, ok := st.tables[name]; !ok || got != rows {
			t.Errorf("%s: table %s differs:\n got  %.300q\n want %.300q", what, name, got, rows)
		}
	}
	if !slices.Equal(slices.Sorted(maps.Keys(st.tables)), slices.Sorted(maps.Keys(want.tables))) {
		t.Errorf("%s: tables %v, want %v", what, slices.Sorted(maps.Keys(st.tables)), slices.Sorted(maps.Keys(want.tables)))
	}
	if !maps.Equal(st.owners, want.owners) {
		t.Errorf("%s: owners %v, want %v", what, st.owners, want.owners)
	}
	if !maps.Equal(st.sequences, want.sequences) {
		t.Errorf("%s: sequences %v, want %v", what, st.sequences, want.sequences)
	}
	if !slices.Equal(st.databases, want.databases) {
		t.Errorf("%s: databases %v, want %v", what, st.databases, want.databases)
	}
	if !maps.Equal(st.blobs, want.blobs) {
		t.Errorf("%s: blobs differ:\n got  %v\n want %v", what, st.blobs, want.blobs)
	}
}

// restorePath is the restores of an environment in the API.
func (e *testEnv) restorePath() string {
	return "/api/v1/namespaces/" + e.ns + "/environments/" + e.id + "/restores"
}

// startRestore asks for a restore of snapshot (of source) into e.
func (e *testEnv) startRestore(t *testing.T, source *testEnv, snapshot string) map[string]any {
	t.Helper()
	status, r := call(t, tok, "POST", e.restorePath(), fmt.Sprintf(`{"source_snapshot_id":%q,"source_environment_id":%q}`, snapshot, source.id))
	if status != http.StatusAccepted {
		t.Fatalf("restore: %d %v", status, r)
	}
	return r
}

// waitRestore waits until the restore (or its undo, when undo) ended.
func (e *testEnv) waitRestore(t *testing.T, id string, undo bool, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		status, r := call(t, tok, "GET", e.restorePath()+"/"+id, "")
		if status >= 500 && time.Now().Before(deadline) { // the handler is being restarted after a kill
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if status != http.StatusOK {
			t.Fatalf("get restore: %d %v", status, r)
		}
		st := r["state"]
		if undo {
			st = r["undo_state"]
		}
		if st == "completed" || st == "failed" {
			// The lock is released when the operation settles, just after.
			e.waitUnlocked(t)
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("restore %s did not end within %s: %v", id, timeout, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitUnlocked waits until the environment can be backed up again (its lock released).
func (e *testEnv) waitUnlocked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := e.environment(t, true)
		if m["can_create_backup"] == true {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("environment still locked: %v", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// restoreFixture is an environment with tables, rows and files, a snapshot of it, and what it held then.
type restoreFixture struct {
	src      *testEnv
	snap     *taken
	atSnap   envState
	replaced string // a file whose bytes change after the snapshot
}

func newRestoreFixture(t *testing.T, name string, files int) *restoreFixture {
	t.Helper()
	return newRestoreFixtureWith(t, name, files, "")
}

// newRestoreFixtureWith runs superuserSQL in the environment's database before its snapshot.
func newRestoreFixtureWith(t *testing.T, name string, files int, superuserSQL string) *restoreFixture {
	t.Helper()
	e := newTestEnv(t, name)
	e.exec(t, `SET ROLE demo_app_role;
CREATE SCHEMA sales;
CREATE TABLE sales."order" (id bigserial PRIMARY KEY, customer text NOT NULL, note text, total numeric(12,2));
CREATE INDEX order_customer ON sales."order" (customer);
INSERT INTO sales."order" (customer, note, total)
  SELECT 'customer ' || g, E'line one\nline two\\with a backslash\ttab', g * 1.5 FROM generate_series(1, 3000) g;
CREATE TABLE "empty$table" (id int PRIMARY KEY);`)
	if superuserSQL != "" {
		if err := env.Postgres.Exec(context.Background(), e.db, superuserSQL); err != nil {
			t.Fatal(err)
		}
	}
	f := &restoreFixture{src: e}
	for i := 0; i < files; i++ {
		u := uuidFor(name, i)
		e.putFile(t, u, content(fmt.Sprintf("%s file %d", name, i), 50+i), i%3 == 0)
		if i == 1 {
			f.replaced = u
		}
	}
	f.snap = e.backup(t, "at snapshot time")
	f.atSnap = e.state(t)
	return f
}

func uuidFor(label string, i int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s-%d", label, i)))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:32]
}

// change makes the environment differ from its snapshot in every way a restore must undo: rows
// added, changed and deleted, a file's bytes replaced, a file added, a file deleted.
func (f *restoreFixture) change(t *testing.T) {
	t.Helper()
	e := f.src
	e.exec(t, `SET ROLE demo_app_role;
INSERT INTO sales."order" (customer, total) VALUES ('after the snapshot', 1);
UPDATE sales."order" SET note = 'changed' WHERE id < 10;
DELETE FROM sales."order" WHERE id BETWEEN 100 AND 120;
INSERT INTO "e2e$marker" (label) VALUES ('after the snapshot');`)
	e.putFile(t, f.replaced, []byte("other bytes under the same UUID"), false)
	e.putFile(t, uuidFor("new", 0), []byte("a file made after the snapshot"), false)
	for u := range e.docs {
		if u != f.replaced && u != uuidFor("new", 0) {
			e.removeFile(t, u)
			break
		}
	}
}

// TestRestoreIntoTheSameEnvironmentAndUndo: a restore gives back every table's rows and every file's
// bytes as they were at snapshot time (files made since stay; their rows are gone), owned by the
// environment's role; the previous database is kept; an undo gives back exactly what was there before.
func TestRestoreIntoTheSameEnvironmentAndUndo(t *testing.T) {
	f := newRestoreFixture(t, "restore-same", 12)
	f.change(t)
	before := f.src.state(t)
	r := f.src.startRestore(t, f.src, f.snap.id)
	done := f.src.waitRestore(t, r["restore_id"].(string), false, 2*time.Minute)
	// Added: the file deleted since; replaced: the one changed since, and those whose blob has no
	// Content-MD5 (block uploads: their bytes cannot be compared without reading them).
	if done["state"] != "completed" || done["undo_available"] != true || num(done, "files_replaced") < 1 || num(done, "files_added") != 1 ||
		num(done, "files_added")+num(done, "files_replaced")+num(done, "files_unchanged") != 12 || num(done, "tables") != 5 {
		t.Fatalf("restore: %v", done)
	}
	after := f.src.state(t)
	want := f.atSnap
	want.databases = []string{f.src.db, f.src.db + "_pre_restore_" + shortID(done)}
	want.blobs = maps.Clone(f.atSnap.blobs)
	want.blobs["docs/"+uuidFor("new", 0)] = before.blobs["docs/"+uuidFor("new", 0)] // not in the snapshot: left alone
	after.same(t, "after the restore", want)

	status, u := call(t, tok, "POST", f.src.restorePath()+"/"+done["restore_id"].(string)+"/undo", "")
	if status != http.StatusAccepted {
		t.Fatalf("undo: %d %v", status, u)
	}
	undone := f.src.waitRestore(t, done["restore_id"].(string), true, 2*time.Minute)
	if undone["undo_state"] != "completed" || undone["undone_at"] == nil {
		t.Fatalf("undo: %v", undone)
	}
	f.src.state(t).same(t, "after the undo", before)
	f.src.noRestoreArea(t, undone)
	_, act := call(t, tok, "GET", "/api/v1/namespaces/"+f.src.ns+"/environments/"+f.src.id+"/activity", "")
	for _, want := range [][2]string{{"restore", "STARTED"}, {"restore", "FINISHED"}, {"undo", "STARTED"}, {"undo", "FINISHED"}} {
		if !hasRestoreActivity(act, done["restore_id"].(string), want[0], want[1]) {
			t.Errorf("no %s %s activity entry: %v", want[0], want[1], act)
		}
	}
	if !published(t, "backup-events", "restore.finished", done["restore_id"].(string)) {
		t.Error("no restore.finished event")
	}
}

// noRestoreArea fails when the restore's plan or undo blobs are left (they go once it was reverted),
// after the settling that removes them.
func (e *testEnv) noRestoreArea(t *testing.T, r map[string]any) {
	t.Helper()
	prefix := ".restores/" + e.ns + "/" + e.id + "/" + r["restore_id"].(string) + "/"
	waitFor(t, "the restore area to go", func() bool { return len(listBlobs(t, snapshotsContainer, prefix)) == 0 })
}

func shortID(r map[string]any) string {
	id := strings.ReplaceAll(r["restore_id"].(string), "-", "")
	return id[len(id)-12:]
}

func hasRestoreActivity(act map[string]any, restoreID, action, status string) bool {
	entries, _ := act["entries"].([]any)
	for _, x := range entries {
		if e := x.(map[string]any); e["restore_id"] == restoreID && e["action"] == action && e["status"] == status {
			return true
		}
	}
	return false
}

// TestRestoreIntoAnotherEnvironment: a snapshot of one environment restored into another of the same
// namespace (production into acceptance): the target's tables become the source's at snapshot time,
// owned by the target's role, and its container gets the snapshot's files.
func TestRestoreIntoAnotherEnvironment(t *testing.T) {
	f := newRestoreFixture(t, "restore-other", 8)
	target := f.src.sibling(t, "restore-into")
	target.putFile(t, uuidFor("target-own", 0), []byte("the target's own file"), false)
	before := target.state(t)
	r := target.startRestore(t, f.src, f.snap.id)
	done := target.waitRestore(t, r["restore_id"].(string), false, 2*time.Minute)
	if done["state"] != "completed" || done["source_environment_id"] != f.src.id || num(done, "files_added") != 8 {
		t.Fatalf("restore: %v", done)
	}
	want := f.atSnap
	want.databases = []string{target.db, target.db + "_pre_restore_" + shortID(done)}
	want.blobs = maps.Clone(f.atSnap.blobs)
	maps.Copy(want.blobs, before.blobs)
	target.state(t).same(t, "the target after the restore", want)
	// The source is untouched.
	f.src.state(t).same(t, "the source", f.atSnap)
}

// TestRestoreOfTheDemoIntoItsTestEnvironment is what the README shows a newcomer: the demo's snapshot
// restored into the demo's second environment, with the model-version warning.
func TestRestoreOfTheDemoIntoItsTestEnvironment(t *testing.T) {
	id := createSnapshot(t, "to restore into test")
	if snap := waitSnapshot(t, id, 2*time.Minute); snap["status"] != "Finished" {
		t.Fatalf("snapshot: %v", snap)
	}
	demoEnv := &testEnv{ns: "demo", id: demo.EnvironmentID, db: demo.Database, container: demo.Container}
	test := &testEnv{ns: "demo", id: demo.TestEnvironmentID, db: demo.TestDatabase, container: demo.TestContainer}
	source := demoEnv.state(t)
	r := test.startRestore(t, demoEnv, id)
	if w, _ := r["warnings"].([]any); len(w) != 1 || !strings.HasPrefix(w[0].(string), "MODEL_VERSION_MISMATCH") {
		t.Errorf("warnings: %v", r["warnings"])
	}
	done := test.waitRestore(t, r["restore_id"].(string), false, 2*time.Minute)
	if done["state"] != "completed" || done["model_version"] != "1.0.0.40" {
		t.Fatalf("restore: %v", done)
	}
	got := test.state(t)
	for name, rows := range source.tables {
		if got.tables[name] != rows {
			t.Errorf("table %s of the test environment is not the demo's", name)
		}
		if got.owners[name] != "demo_test_role" {
			t.Errorf("table %s is owned by %s, want the test environment's role", name, got.owners[name])
		}
	}
	for name, sum := range source.blobs {
		if got.blobs[name] != sum {
			t.Errorf("file %s is not the demo's in the test environment", name)
		}
	}
	// The environment list shows the target's own model, unchanged: the user deploys the matching one.
	_, list := call(t, tok, "GET", "/api/v1/namespaces/demo/environments", "")
	if e := listed(list, demo.TestEnvironmentID); e == nil || e["model_version"] != "1.0.0.38" {
		t.Errorf("test environment after the restore: %v", e)
	}
	// Put the test environment back for other tests.
	if status, u := call(t, tok, "POST", test.restorePath()+"/"+done["restore_id"].(string)+"/undo", ""); status != http.StatusAccepted {
		t.Fatalf("undo: %d %v", status, u)
	}
	test.waitRestore(t, done["restore_id"].(string), true, 2*time.Minute)
}

// restoreFails changes f.src, restores its snapshot into it and expects the restore to fail with the
// target exactly as before; it returns the failed restore.
func (f *restoreFixture) restoreFails(t *testing.T, wantMessage string) map[string]any {
	t.Helper()
	f.change(t)
	before := f.src.state(t)
	r := f.src.startRestore(t, f.src, f.snap.id)
	done := f.src.waitRestore(t, r["restore_id"].(string), false, 4*time.Minute)
	if done["state"] != "failed" || !strings.Contains(fmt.Sprint(done["status_message"]), wantMessage) ||
		!strings.Contains(fmt.Sprint(done["status_message"]), "as they were before the restore") {
		t.Fatalf("restore: %v, want failed with %q", done, wantMessage)
	}
	f.src.state(t).same(t, "after the failed restore", before)
	f.src.noRestoreArea(t, done)
	if !published(t, "backup-events", "restore.failed", done["restore_id"].(string)) {
		t.Error("no restore.failed event")
	}
	_, act := call(t, tok, "GET", "/api/v1/namespaces/"+f.src.ns+"/environments/"+f.src.id+"/activity", "")
	if !hasRestoreActivity(act, done["restore_id"].(string), "restore", "FAILED") {
		t.Errorf("no FAILED activity entry: %v", act)
	}
	return done
}

// TestRestoreOfACorruptDumpLeavesTheTargetAsBefore: the dump blob damaged in its middle is found out
// half-way through pg_restore (or by the hash at its end): nothing of the target changes.
func TestRestoreOfACorruptDumpLeavesTheTargetAsBefore(t *testing.T) {
	f := newRestoreFixture(t, "restore-corrupt", 4)
	blob := readBlob(t, snapshotsContainer, f.snap.dump)
	for i := len(blob) / 2; i < len(blob)/2+64; i++ {
		blob[i] ^= 0x5a
	}
	if _, err := blobClient(t).UploadBuffer(context.Background(), snapshotsContainer, f.snap.dump, blob, nil); err != nil {
		t.Fatal(err)
	}
	f.restoreFails(t, "damaged")
}

// TestRestoreFailingOnTheLastObjectLeavesTheTargetAsBefore: an event trigger (which only a superuser may
// create, as on Azure) is the last object pg_restore makes: every table is restored, then it fails.
func TestRestoreFailingOnTheLastObjectLeavesTheTargetAsBefore(t *testing.T) {
	f := newRestoreFixtureWith(t, "restore-last", 3, `
CREATE FUNCTION public.e2e_note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER e2e_note_ddl ON ddl_command_end EXECUTE FUNCTION public.e2e_note_ddl();`)
	f.restoreFails(t, "e2e_note_ddl")
}

// TestBlobStorageFailingDuringTheFileCopy: Blob Storage refuses the copies half-way (as Azure does when
// the identity lost its role): the restore fails, and the files it had written are removed and the
// ones it had replaced put back.
func TestBlobStorageFailingDuringTheFileCopy(t *testing.T) {
	f := newRestoreFixture(t, "restore-blobfail", 30)
	proxy.set(t, "fail", 10)
	f.restoreFails(t, "copy")
	if proxy.copies.Load() <= 10 {
		t.Errorf("the restore made %d copies from the store; the fault came after 10", proxy.copies.Load())
	}
}

// TestHandlerKilledDuringRestoreResumes kills the handler (SIGKILL) while pg_restore runs, while the
// files are copied, and between the two renames of the commit; each time the next delivery resumes and
// the restore completes with every row and file right, and nothing left behind.
func TestHandlerKilledDuringRestoreResumes(t *testing.T) {
	for _, point := range []string{"pg_restore", "file copy", "between the renames"} {
		t.Run(point, func(t *testing.T) {
			f := newRestoreFixture(t, map[string]string{"pg_restore": "kill-restore", "file copy": "kill-files", "between the renames": "kill-rename"}[point], 20)
			f.change(t)
			before := f.src.state(t)
			switch point {
			case "pg_restore":
				n := setRestoreMode(t, "stall-once")
				r := f.src.startRestore(t, f.src, f.snap.id)
				waitFor(t, "pg_restore to start", func() bool { return restoreStarts(t) > n })
				f.finishAfterKill(t, r, before)
			case "file copy":
				proxy.set(t, "stall", 5)
				r := f.src.startRestore(t, f.src, f.snap.id)
				waitFor(t, "a file copy to hang", func() bool { return proxy.stalled.Load() > 0 })
				f.kill(t)
				proxy.reset()
				f.finishAfter(t, r, before)
			case "between the renames":
				r := f.src.startRestore(t, f.src, f.snap.id)
				staging := f.src.db + "_restore_" + shortID(r)
				release := holdRename(t, staging)
				// The swap's first rename is done, its second waits for our lock: that is where it dies.
				waitFor(t, "the swap to wait between its renames", func() bool { return renameWaiting(t, staging) })
				f.kill(t)
				release()
				f.finishAfter(t, r, before)
			}
		})
	}
}

// TestHandlerKilledInEveryAttemptRollsBack: a restore whose worker is killed during pg_restore in every
// attempt ends failed, once its attempts are used up, with the target exactly as before.
func TestHandlerKilledInEveryAttemptRollsBack(t *testing.T) {
	f := newRestoreFixture(t, "kill-always", 10)
	f.change(t)
	before := f.src.state(t)
	n := setRestoreMode(t, "stall")
	r := f.src.startRestore(t, f.src, f.snap.id)
	for attempt := 1; attempt <= 3; attempt++ {
		waitFor(t, fmt.Sprintf("pg_restore of attempt %d", attempt), func() bool { return restoreStarts(t) >= n+attempt })
		time.Sleep(200 * time.Millisecond)
		f.kill(t)
	}
	done := f.src.waitRestore(t, r["restore_id"].(string), false, 4*time.Minute)
	if done["state"] != "failed" || !strings.Contains(fmt.Sprint(done["status_message"]), "as they were before the restore") {
		t.Fatalf("restore killed in every attempt: %v", done)
	}
	f.src.state(t).same(t, "after the restore killed in every attempt", before)
	f.src.noRestoreArea(t, done)
}

// kill sends SIGKILL to the handler; the host starts a new one and redelivers.
func (f *restoreFixture) kill(t *testing.T) {
	t.Helper()
	pid := env.Host.Status().HandlerPID
	if pid == 0 {
		t.Fatal("no handler pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

func (f *restoreFixture) finishAfterKill(t *testing.T, r map[string]any, before envState) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	f.kill(t)
	f.finishAfter(t, r, before)
}

// finishAfter waits for the restore to complete after a crash and checks the target holds the snapshot.
func (f *restoreFixture) finishAfter(t *testing.T, r map[string]any, before envState) {
	t.Helper()
	done := f.src.waitRestore(t, r["restore_id"].(string), false, 4*time.Minute)
	if done["state"] != "completed" {
		t.Fatalf("restore after the crash: %v", done)
	}
	want := f.atSnap
	want.databases = []string{f.src.db, f.src.db + "_pre_restore_" + shortID(done)}
	want.blobs = maps.Clone(f.atSnap.blobs)
	want.blobs["docs/"+uuidFor("new", 0)] = before.blobs["docs/"+uuidFor("new", 0)]
	f.src.state(t).same(t, "after the crash and the resumed restore", want)
}

// holdRename takes a lock on database name that ALTER DATABASE ... RENAME must wait for (COMMENT ON
// DATABASE holds the database object's lock until its transaction ends), from a superuser session on
// another database. The returned func releases it.
func holdRename(t *testing.T, name string) func() {
	t.Helper()
	ctx := context.Background()
	waitFor(t, "the staging database", func() bool {
		db := connectDB(t, "postgres")
		defer db.Close(ctx)
		var n int
		_ = db.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n)
		return n == 1
	})
	db := connectDB(t, "postgres")
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "COMMENT ON DATABASE "+pgx.Identifier{name}.Sanitize()+" IS 'held by the test'"); err != nil {
		t.Fatal(err)
	}
	var once bool
	release := func() {
		if !once {
			once = true
			_ = tx.Rollback(ctx)
			_ = db.Close(ctx)
		}
	}
	t.Cleanup(release)
	return release
}

// renameWaiting reports whether a session waits for a lock in ALTER DATABASE name RENAME.
func renameWaiting(t *testing.T, name string) bool {
	t.Helper()
	ctx := context.Background()
	db := connectDB(t, "postgres")
	defer db.Close(ctx)
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
		AND query ILIKE '%ALTER DATABASE%' || $1 || '%RENAME%'`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 2 minutes for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSecondDeliveryOfARestoreDoesNothing: the restore's job message delivered again after it completed
// changes neither the record nor the target.
func TestSecondDeliveryOfARestoreDoesNothing(t *testing.T) {
	f := newRestoreFixture(t, "restore-twice", 3)
	r := f.src.startRestore(t, f.src, f.snap.id)
	done := f.src.waitRestore(t, r["restore_id"].(string), false, 2*time.Minute)
	after := f.src.state(t)
	msgs, _ := env.Host.Messages("backup-jobs")
	var body string
	for _, m := range msgs.Published {
		if strings.Contains(m.Body, f.src.id) {
			body = m.Body
		}
	}
	since := time.Now()
	if _, err := env.Host.Publish("backup-jobs", []funchost.PublishMessage{{Body: body, MessageID: "replay-" + done["restore_id"].(string),
		SessionID: f.src.id, ContentType: "application/json"}}); err != nil {
		t.Fatal(err)
	}
	waitInvocation(t, "BackupJobs", "Succeeded", since)
	_, again := call(t, tok, "GET", f.src.restorePath()+"/"+done["restore_id"].(string), "")
	if again["updated_at"] != done["updated_at"] || again["state"] != "completed" {
		t.Errorf("a second delivery changed the restore:\n%v\n%v", done, again)
	}
	f.src.state(t).same(t, "after a second delivery", after)
}

// TestRestoreRefusals: the calls a restore refuses, each with its code.
func TestRestoreRefusals(t *testing.T) {
	f := newRestoreFixture(t, "restore-refused", 1)
	try := func(what, path, body string, wantStatus int, wantCode, wantDetail string) {
		t.Helper()
		status, p := call(t, tok, "POST", path, body)
		if status != wantStatus || p["code"] != wantCode || !strings.Contains(fmt.Sprint(p["detail"]), wantDetail) {
			t.Errorf("%s: %d %v, want %d %s mentioning %q", what, status, p, wantStatus, wantCode, wantDetail)
		}
	}
	body := fmt.Sprintf(`{"source_snapshot_id":%q}`, f.snap.id)
	f.src.sendState(t, "Running")
	waitFor(t, "the environment to run", func() bool { return f.src.environment(t, true)["state"] == "Running" })
	try("target running", f.src.restorePath(), body, 409, "INVALID_STATE", "stop the app first")
	f.src.sendState(t, "Stopped")
	waitFor(t, "the environment to stop", func() bool { return f.src.environment(t, true)["state"] == "Stopped" })
	try("across namespaces", f.src.restorePath(), fmt.Sprintf(`{"source_snapshot_id":%q,"source_namespace":"demo"}`, f.snap.id),
		400, "CROSS_NAMESPACE_NOT_SUPPORTED", "namespace")
	try("unknown field", f.src.restorePath(), fmt.Sprintf(`{"source_snapshot_id":%q,"force":true}`, f.snap.id), 400, "INVALID_PARAMETERS", "force")

	// Without StopApps.
	noStop := "5d0e1a2b-0000-4000-8000-00000000d0ff"
	permissions := fmt.Sprintf(`{"type":"namespace.permissions","event_id":"%s-nostop","occurred_at":%q,"namespace":%q,"principal_id":%q,"permissions":["ManageAppsBackups"]}`,
		f.src.ns, time.Now().UTC().Format(time.RFC3339Nano), f.src.ns, noStop)
	publishEvent(t, permissions)
	other := mustToken(t, noStop)
	waitFor(t, "the grant", func() bool {
		s, _ := call(t, other, "GET", "/api/v1/namespaces/"+f.src.ns+"/environments", "")
		return s == http.StatusOK
	})
	status, p := call(t, other, "POST", f.src.restorePath(), body)
	if status != 403 || p["code"] != "NO_ACCESS" || !strings.Contains(fmt.Sprint(p["detail"]), "StopApps") {
		t.Errorf("without StopApps: %d %v", status, p)
	}

	// From a snapshot still being made (its record as a running backup leaves it).
	tables, _ := storage(t)
	processing := backup.Snapshot{ID: uuid.NewString(), Namespace: f.src.ns, EnvironmentID: f.src.id, Status: backup.SnapshotProcessing,
		Kind: backup.KindManual, CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(), ExpiresAt: time.Now().Add(time.Hour).UTC()}
	if err := tables.CreateSnapshot(context.Background(), processing); err != nil {
		t.Fatal(err)
	}
	try("processing snapshot", f.src.restorePath(), fmt.Sprintf(`{"source_snapshot_id":%q}`, processing.ID), 409, "SNAPSHOT_NOT_READY", "Processing")
	_ = tables.DeleteSnapshot(context.Background(), f.src.ns, f.src.id, processing.ID)

	// From a Failed snapshot.
	setDumpMode(t, "fail-half")
	failed := createSnapshotAt(t, f.src.path, "fails")
	if s := waitSnapshotAt(t, f.src.path, failed, 2*time.Minute); s["status"] != "Failed" {
		t.Fatalf("snapshot: %v", s)
	}
	try("failed snapshot", f.src.restorePath(), fmt.Sprintf(`{"source_snapshot_id":%q}`, failed), 409, "SNAPSHOT_NOT_READY", "Failed")
}

// TestUndoAfterTheGracePeriod: once undo_until has passed an undo is refused, and the hourly timer drops
// the previous database and the undo area.
func TestUndoAfterTheGracePeriod(t *testing.T) {
	f := newRestoreFixture(t, "restore-grace", 3)
	f.change(t)
	r := f.src.startRestore(t, f.src, f.snap.id)
	done := f.src.waitRestore(t, r["restore_id"].(string), false, 2*time.Minute)
	id := done["restore_id"].(string)
	// The grace period is hours; move this restore's end of it into the past, as time would.
	tables, _ := storage(t)
	if _, _, err := tables.UpdateRestore(context.Background(), f.src.ns, f.src.id, id, func(cur backup.Restore, ok bool) (backup.Restore, bool, error) {
		cur.UndoUntil = time.Now().Add(-time.Minute)
		return cur, ok, nil
	}); err != nil {
		t.Fatal(err)
	}
	status, p := call(t, tok, "POST", f.src.restorePath()+"/"+id+"/undo", "")
	if status != 409 || p["code"] != "INVALID_STATE" || !strings.Contains(fmt.Sprint(p["detail"]), "grace period") {
		t.Errorf("undo after the grace period: %d %v", status, p)
	}
	fireTimer(t, "DiscardRestoreUndo")
	waitFor(t, "the previous database to be dropped", func() bool {
		return slices.Equal(f.src.state(t).databases, []string{f.src.db})
	})
	if blobs := listBlobs(t, snapshotsContainer, ".restores/"+f.src.ns+"/"+f.src.id+"/"+id+"/"); len(blobs) != 0 {
		t.Errorf("the undo area is left: %v", blobs)
	}
	if _, got := call(t, tok, "GET", f.src.restorePath()+"/"+id, ""); got["undo_available"] != false {
		t.Errorf("after the grace period: %v", got)
	}
}
