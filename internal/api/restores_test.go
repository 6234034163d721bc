package api

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
)

const (
	envB = "6f1d2c3b-4a59-4e68-8b7a-9c0d1e2f3a4b" // a second environment of ns-a, stopped, another model
	// restores of envA: the base path of its restores.
	restoresA = "/api/v1/namespaces/ns-a/environments/" + envA + "/restores"
	restoresB = "/api/v1/namespaces/ns-a/environments/" + envB + "/restores"
)

var eventSeq int

// setEnvironment applies an environment.updated event for env in ns-a, newer than the fixture's.
func (f *fixture) setEnvironment(t *testing.T, env, name string, state backup.EnvironmentState, model string) {
	t.Helper()
	eventSeq++
	ev := fmt.Sprintf(`{"type":"environment.updated","event_id":"ev-%d","occurred_at":%q,"namespace":"ns-a","environment_id":%q,`+
		`"app_id":"app","name":%q,"state":%q,"deployed":true,"deployment_package":"p-%s.mda","model_version":%q,`+
		`"database":{"host":"h","port":5432,"name":"db_%s","role":"r"},"files":{"container":"files-%s","prefix":""}}`,
		eventSeq, f.now.Add(time.Duration(eventSeq)*time.Second).Format(time.RFC3339), env, name, state, model, model, name, name)
	if err := f.srv.svc.HandleEnvironmentEvent(context.Background(), "m", []byte(ev), zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
}

// addSnapshot stores a snapshot of env made with model; status Finished unless given.
func (f *fixture) addSnapshot(t *testing.T, env, id, model string, status backup.SnapshotStatus) {
	t.Helper()
	if err := f.store.CreateSnapshot(context.Background(), backup.Snapshot{ID: id, Namespace: nsA, EnvironmentID: env, Status: status,
		Kind: backup.KindManual, CreatedAt: f.now, UpdatedAt: f.now, ExpiresAt: f.now.AddDate(0, 0, 14), ModelVersion: model,
		DeploymentPackage: "p-" + model + ".mda", DumpPath: env + "/" + id + "/db.backup.gz", ManifestPath: env + "/" + id + "/manifest.json"}); err != nil {
		t.Fatal(err)
	}
}

// TestCreateRestore: 202 with the queued restore and its Location; every field present, none of the
// record's bookkeeping; the restore is then listed and can be read.
func TestCreateRestore(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, full, "POST", restoresA, `{"source_snapshot_id":"`+snapA+`"}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	id, _ := body["restore_id"].(string)
	if loc := resp.Header.Get("Location"); loc != restoresA+"/"+id || id == "" {
		t.Errorf("Location %q, restore_id %q", loc, id)
	}
	want := map[string]any{
		"source_snapshot_id": snapA, "source_environment_id": envA, "target_environment_id": envA, "state": "queued",
		"status_message": "", "warnings": []any{}, "created_at": "2026-11-20T08:00:00Z", "updated_at": "2026-11-20T08:00:00Z",
		"started_at": nil, "finished_at": nil, "created_by": full, "model_version": "1.0.0.1", "deployment_package": "p.mda",
		"undo_until": nil, "undo_available": false, "undone_at": nil, "undo_state": nil, "undo_status_message": "",
		"tables": float64(0), "rows": float64(0), "database_bytes": float64(0), "files_count": float64(0), "files_bytes": float64(0),
		"files_added": float64(0), "files_replaced": float64(0), "files_unchanged": float64(0),
		"progress": map[string]any{"phase": "queued", "bytes_done": float64(0), "files_done": float64(0), "files_total": float64(0)},
	}
	for k, v := range want {
		if got, ok := body[k]; !ok || fmt.Sprint(got) != fmt.Sprint(v) {
			t.Errorf("%s = %#v (present %v), want %#v", k, got, ok, v)
		}
	}
	if got, wantKeys := slices.Sorted(maps.Keys(body)), slices.Sorted(slices.Values(append(slices.Collect(maps.Keys(want)), "restore_id"))); !slices.Equal(got, wantKeys) {
		t.Errorf("keys %v, want %v", got, wantKeys)
	}
	code, got := f.getRaw(t, restoresA+"/"+id)
	if code != 200 || !strings.Contains(got, `"restore_id":"`+id+`"`) || !strings.Contains(got, `"state":"queued"`) {
		t.Errorf("GET: %d %s", code, got)
	}
	for _, leak := range []string{"operation", "fence", "step", `"database"`, "db_", "discarded"} {
		if strings.Contains(strings.ToLower(got), leak) {
			t.Errorf("the restore exposes %q: %s", leak, got)
		}
	}
	_, list := f.do(t, manager, "GET", restoresA, "")
	if list["total"] != float64(2) || list["restores"].([]any)[0].(map[string]any)["restore_id"] != id {
		t.Errorf("list after create: %v", list)
	}
}

// TestRestoreJSONGolden: a restore carries every field in every state: null times until they happen,
// undo_state null until an undo is asked for, progress only while the restore or its undo is active.
func TestRestoreJSONGolden(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ids := func(n int) string { return fmt.Sprintf("22222222-0000-4000-8000-%012d", n) }
	recs := []backup.Restore{
		{ID: ids(1), State: backup.RestoreRunning, Step: backup.StepRestoring, StatusMessage: "restoring", StartedAt: f.now,
			Progress: &backup.Progress{Phase: "restoring", BytesDone: 10, FilesDone: 1, FilesTotal: 2}, FilesCount: 2, FilesBytes: 300},
		{ID: ids(2), State: backup.RestoreFailed, Step: backup.StepRolledBack, StatusMessage: "the dump is damaged", StartedAt: f.now,
			FinishedAt: f.now, Progress: &backup.Progress{Phase: "rolling back"}, Warnings: []string{"MODEL_VERSION_MISMATCH: x"}},
		{ID: ids(3), State: backup.RestoreCompleted, Step: backup.StepUndone, StartedAt: f.now, FinishedAt: f.now,
			UndoUntil: f.now.Add(time.Hour), UndoState: backup.RestoreCompleted, UndoneAt: f.now, UndoneBy: full, Tables: 1, Rows: 2},
		{ID: ids(4), State: backup.RestoreCompleted, Step: backup.StepCommitted, StartedAt: f.now, FinishedAt: f.now,
			UndoUntil: f.now.Add(time.Hour), UndoState: backup.RestoreRunning, UndoMessage: "putting the environment back", UndoOperationID: "x", UndoFence: 3},
		{ID: ids(5), State: backup.RestoreCompleted, Step: backup.StepDiscarded, StartedAt: f.now, FinishedAt: f.now,
			UndoUntil: f.now.Add(-time.Hour), DiscardedAt: f.now},
	}
	for _, r := range recs {
		r.Namespace, r.EnvironmentID, r.SourceEnvironmentID, r.SourceSnapshotID = nsA, envA, envA, snapA
		r.CreatedAt, r.UpdatedAt, r.CreatedBy, r.ModelVersion, r.DeploymentPackage = f.now.Add(-time.Hour), f.now, full, "1.0.0.1", "p.mda"
		r.OperationID, r.Fence, r.Database = "01939a4c-0000-7000-8000-0000000000bb", 2, "db"
		if err := f.store.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	head := func(id string) string {
		return `{"restore_id":"` + id + `","source_snapshot_id":"` + snapA + `","source_environment_id":"` + envA + `","target_environment_id":"` + envA + `",`
	}
	const times = `"created_at":"2026-11-20T07:00:00Z","updated_at":"2026-11-20T08:00:00Z","started_at":"2026-11-20T08:00:00Z",`
	const who = `"created_by":"operator","model_version":"1.0.0.1","deployment_package":"p.mda",`
	want := map[string]string{
		restA: `{"restore_id":"` + restA + `","source_snapshot_id":"` + snapA + `","source_environment_id":"` + envA + `","target_environment_id":"` + envA + `",` +
			`"state":"completed","status_message":"","warnings":[],"created_at":"2026-11-20T07:00:00Z","updated_at":"2026-11-20T08:00:00Z",` +
			`"started_at":"2026-11-20T07:00:00Z","finished_at":"2026-11-20T08:00:00Z","progress":null,` + who +
			`"undo_until":"2026-11-21T08:00:00Z","undo_available":true,"undone_at":null,"undo_state":null,"undo_status_message":"",` +
			`"tables":3,"rows":42,"database_bytes":4096,"files_count":2,"files_bytes":300,"files_added":1,"files_replaced":0,"files_unchanged":1}`,
		ids(1): head(ids(1)) + `"state":"running","status_message":"restoring","warnings":[],` + times + `"finished_at":null,` +
			`"progress":{"phase":"restoring","bytes_done":10,"files_done":1,"files_total":2},` + who +
			`"undo_until":null,"undo_available":false,"undone_at":null,"undo_state":null,"undo_status_message":"",` +
			`"tables":0,"rows":0,"database_bytes":0,"files_count":2,"files_bytes":300,"files_added":0,"files_replaced":0,"files_unchanged":0}`,
		ids(2): head(ids(2)) + `"state":"failed","status_message":"the dump is damaged","warnings":["MODEL_VERSION_MISMATCH: x"],` + times +
			`"finished_at":"2026-11-20T08:00:00Z","progress":null,` + who +
			`"undo_until":null,"undo_available":false,"undone_at":null,"undo_state":null,"undo_status_message":"",` +
			`"tables":0,"rows":0,"database_bytes":0,"files_count":0,"files_bytes":0,"files_added":0,"files_replaced":0,"files_unchanged":0}`,
		ids(3): head(ids(3)) + `"state":"completed","status_message":"","warnings":[],` + times + `"finished_at":"2026-11-20T08:00:00Z","progress":null,` + who +
			`"undo_until":"2026-11-20T09:00:00Z","undo_available":false,"undone_at":"2026-11-20T08:00:00Z","undo_state":"completed","undo_status_message":"",` +
			`"tables":1,"rows":2,"database_bytes":0,"files_count":0,"files_bytes":0,"files_added":0,"files_replaced":0,"files_unchanged":0}`,
		ids(4): head(ids(4)) + `"state":"completed","status_message":"","warnings":[],` + times + `"finished_at":"2026-11-20T08:00:00Z",` +
			`"progress":{"phase":"undo queued","bytes_done":0,"files_done":0,"files_total":0},` + who +
			`"undo_until":"2026-11-20T09:00:00Z","undo_available":false,"undone_at":null,"undo_state":"running","undo_status_message":"putting the environment back",` +
			`"tables":0,"rows":0,"database_bytes":0,"files_count":0,"files_bytes":0,"files_added":0,"files_replaced":0,"files_unchanged":0}`,
		ids(5): head(ids(5)) + `"state":"completed","status_message":"","warnings":[],` + times + `"finished_at":"2026-11-20T08:00:00Z","progress":null,` + who +
			`"undo_until":"2026-11-20T07:00:00Z","undo_available":false,"undone_at":null,"undo_state":null,"undo_status_message":"",` +
			`"tables":0,"rows":0,"database_bytes":0,"files_count":0,"files_bytes":0,"files_added":0,"files_replaced":0,"files_unchanged":0}`,
	}
	for id, w := range want {
		if code, got := f.getRaw(t, restoresA+"/"+id); code != 200 || got != w {
			t.Errorf("GET %s: %d\n got %s\nwant %s", id, code, got, w)
		}
	}
	_, list := f.getRaw(t, restoresA+"?limit=1000")
	for _, w := range want {
		if !strings.Contains(list, w) {
			t.Errorf("list lacks %s\nlist: %s", w, list)
		}
	}
}

// TestRestoreListPages: newest first, offset and limit with the snapshot list's defaults and bounds.
func TestRestoreListPages(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := range 4 {
		r := completedRestore(fmt.Sprintf("33333333-0000-4000-8000-%012d", i), f.now.Add(time.Duration(i+1)*time.Minute))
		if err := f.store.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// restA was created an hour before now; the others after it, the last one newest.
	restoreIDs := func(body map[string]any) []string {
		var out []string
		for _, r := range body["restores"].([]any) {
			out = append(out, r.(map[string]any)["restore_id"].(string))
		}
		return out
	}
	_, body := f.do(t, manager, "GET", restoresA, "")
	if body["total"] != float64(5) || body["offset"] != float64(0) || body["limit"] != float64(100) {
		t.Errorf("defaults: %v", body)
	}
	if got := restoreIDs(body); len(got) != 5 || got[0] != "33333333-0000-4000-8000-000000000003" || got[4] != restA {
		t.Errorf("order: %v", got)
	}
	_, body = f.do(t, manager, "GET", restoresA+"?offset=1&limit=2", "")
	if got := restoreIDs(body); body["total"] != float64(5) || body["limit"] != float64(2) || body["offset"] != float64(1) ||
		!slices.Equal(got, []string{"33333333-0000-4000-8000-000000000002", "33333333-0000-4000-8000-000000000001"}) {
		t.Errorf("page: %v", body)
	}
	if code, got := f.getRaw(t, restoresA+"?offset=10"); code != 200 || got != `{"limit":100,"offset":10,"restores":[],"total":5}` {
		t.Errorf("past the end: %d %s", code, got)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?offset=-1"} {
		resp, body := f.do(t, manager, "GET", restoresA+q, "")
		wantProblem(t, resp, body, 400, backup.CodeInvalidParameters)
	}
	// Another environment's restores are not listed.
	f.setEnvironment(t, envB, "test", backup.StateStopped, "1.0.0.1")
	if code, got := f.getRaw(t, restoresB); code != 200 || got != `{"limit":100,"offset":0,"restores":[],"total":0}` {
		t.Errorf("envB: %d %s", code, got)
	}
}

// TestRestoreRefusals: each reason CreateRestore refuses for, as the problem the API answers.
func TestRestoreRefusals(t *testing.T) {
	const processing = "44444444-0000-4000-8000-000000000001"
	const unknown = "11111111-2222-3333-4444-555555555555"
	tests := []struct {
		name      string
		principal string
		setup     func(*testing.T, *fixture)
		path      string
		body      string
		status    int
		code      backup.Code
		detail    string
	}{
		{name: "without StopApps", principal: manager, body: `{"source_snapshot_id":"` + snapA + `"}`, status: 403, code: backup.CodeNoAccess, detail: `"StopApps"`},
		{name: "target running", setup: func(t *testing.T, f *fixture) {
			f.setEnvironment(t, envA, "acceptance", backup.StateRunning, "1.0.0.1")
		},
			body: `{"source_snapshot_id":"` + snapA + `"}`, status: 409, code: backup.CodeInvalidState, detail: "stop the app first"},
		{name: "target deploying", setup: func(t *testing.T, f *fixture) {
			f.setEnvironment(t, envA, "acceptance", backup.StateDeploying, "1.0.0.1")
		},
			body: `{"source_snapshot_id":"` + snapA + `"}`, status: 409, code: backup.CodeInvalidState, detail: "stop the app first"},
		{name: "processing snapshot", setup: func(t *testing.T, f *fixture) {
			f.addSnapshot(t, envA, processing, "1.0.0.1", backup.SnapshotProcessing)
		},
			body: `{"source_snapshot_id":"` + processing + `"}`, status: 409, code: backup.CodeSnapshotNotReady, detail: "Processing"},
		{name: "other namespace", body: `{"source_snapshot_id":"` + snapA + `","source_namespace":"ns-b"}`, status: 400, code: backup.CodeCrossNamespace, detail: "ns-b"},
		{name: "unknown snapshot", body: `{"source_snapshot_id":"` + unknown + `"}`, status: 404, code: backup.CodeNotFound, detail: unknown},
		{name: "unknown source environment", body: `{"source_snapshot_id":"` + snapA + `","source_environment_id":"` + unknown + `"}`,
			status: 404, code: backup.CodeEnvironmentNotFound, detail: unknown},
		{name: "snapshot id not a uuid", body: `{"source_snapshot_id":"latest"}`, status: 400, code: backup.CodeInvalidParameters, detail: "source_snapshot_id"},
		{name: "snapshot id missing", body: `{"source_environment_id":"` + envA + `"}`, status: 400, code: backup.CodeInvalidParameters, detail: "field source_snapshot_id is required"},
		{name: "unknown field", body: `{"source_snapshot_id":"` + snapA + `","target_database":"x"}`, status: 400, code: backup.CodeInvalidParameters, detail: `unknown field "target_database"`},
		{name: "wrong type", body: `{"source_snapshot_id":42}`, status: 400, code: backup.CodeInvalidParameters, detail: "field source_snapshot_id must be a string"},
		{name: "backups not enabled", setup: func(t *testing.T, f *fixture) {
			if resp, _ := f.do(t, manager, "PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":false}`); resp.StatusCode != 200 {
				t.Fatal(resp.StatusCode)
			}
		}, body: `{"source_snapshot_id":"` + snapA + `"}`, status: 409, code: backup.CodeBackupsNotEnabled, detail: "Try new Backup and Restore"},
		{name: "busy", setup: func(t *testing.T, f *fixture) {
			if resp, body := f.do(t, full, "POST", restoresA, `{"source_snapshot_id":"`+snapA+`"}`); resp.StatusCode != 202 {
				t.Fatalf("first restore: %d %v", resp.StatusCode, body)
			}
		}, body: `{"source_snapshot_id":"` + snapA + `"}`, status: 409, code: backup.CodeEnvironmentBusy, detail: "restore is running"},
		{name: "busy with a backup", setup: func(t *testing.T, f *fixture) {
			if resp, body := f.do(t, full, "POST", "/api/v1/namespaces/ns-a/environments/"+envA+"/snapshots", `{}`); resp.StatusCode != 202 {
				t.Fatalf("backup: %d %v", resp.StatusCode, body)
			}
		}, body: `{"source_snapshot_id":"` + snapA + `"}`, status: 409, code: backup.CodeEnvironmentBusy, detail: "backup is running"},
		{name: "unknown target", path: "/api/v1/namespaces/ns-a/environments/" + unknown + "/restores", body: `{"source_snapshot_id":"` + snapA + `"}`,
			status: 404, code: backup.CodeEnvironmentNotFound, detail: unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(t, f)
			}
			principal, path := cmpOr(tt.principal, full), cmpOr(tt.path, restoresA)
			resp, body := f.do(t, principal, "POST", path, tt.body)
			wantProblem(t, resp, body, tt.status, tt.code)
			if d, _ := body["detail"].(string); !strings.Contains(d, tt.detail) {
				t.Errorf("detail %q does not mention %q", d, tt.detail)
			}
		})
	}
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// TestRestoreFromAnotherEnvironment: a snapshot of another environment of the namespace, made with
// another model version, is restored with the MODEL_VERSION_MISMATCH warning.
func TestRestoreFromAnotherEnvironment(t *testing.T) {
	f := newFixture(t)
	f.setEnvironment(t, envB, "test", backup.StateStopped, "2.0.0.7")
	resp, body := f.do(t, full, "POST", restoresB, `{"source_snapshot_id":"`+snapA+`","source_environment_id":"`+envA+`","source_namespace":"ns-a"}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	if body["source_environment_id"] != envA || body["target_environment_id"] != envB || body["model_version"] != "1.0.0.1" || body["deployment_package"] != "p.mda" {
		t.Errorf("restore: %v", body)
	}
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, restoresB+"/") {
		t.Errorf("Location %q", loc)
	}
	warnings, _ := body["warnings"].([]any)
	if len(warnings) != 1 {
		t.Fatalf("warnings %v, want one", body["warnings"])
	}
	w := warnings[0].(string)
	if !strings.HasPrefix(w, backup.WarningModelVersionMismatch) || !strings.Contains(w, "1.0.0.1") || !strings.Contains(w, "2.0.0.7") {
		t.Errorf("warning %q", w)
	}
	// The source environment is not locked by a restore into another one, and its own list is unchanged.
	if resp, body := f.do(t, full, "POST", restoresA, `{"source_snapshot_id":"`+snapA+`"}`); resp.StatusCode != 202 || len(body["warnings"].([]any)) != 0 {
		t.Errorf("restore into the source meanwhile: %d %v", resp.StatusCode, body)
	}
}

// TestDeleteSnapshotARestoreReads: a snapshot a queued restore reads cannot be deleted.
func TestDeleteSnapshotARestoreReads(t *testing.T) {
	f := newFixture(t)
	if resp, body := f.do(t, full, "POST", restoresA, `{"source_snapshot_id":"`+snapA+`"}`); resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	resp, body := f.do(t, manager, "DELETE", "/api/v1/namespaces/ns-a/environments/"+envA+"/snapshots/"+snapA, "")
	wantProblem(t, resp, body, 409, backup.CodeSnapshotInUse)
	if d, _ := body["detail"].(string); !strings.Contains(d, "restore") {
		t.Errorf("detail %q does not say a restore reads it", d)
	}
	if resp, _ := f.do(t, manager, "GET", "/api/v1/namespaces/ns-a/environments/"+envA+"/snapshots/"+snapA, ""); resp.StatusCode != 200 {
		t.Errorf("the snapshot is gone: %d", resp.StatusCode)
	}
}

func TestGetRestore(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, manager, "GET", restoresA+"/11111111-2222-3333-4444-555555555555", "")
	wantProblem(t, resp, body, 404, backup.CodeNotFound)
	resp, body = f.do(t, manager, "GET", restoresA+"/latest", "")
	wantProblem(t, resp, body, 400, backup.CodeInvalidParameters)
	// A restore is found under its target only.
	f.setEnvironment(t, envB, "test", backup.StateStopped, "1.0.0.1")
	resp, body = f.do(t, manager, "GET", restoresB+"/"+restA, "")
	wantProblem(t, resp, body, 404, backup.CodeNotFound)
	resp, body = f.do(t, manager, "GET", restoresA+"/"+restA, "")
	if resp.StatusCode != 200 || body["restore_id"] != restA || body["undo_available"] != true {
		t.Errorf("GET: %d %v", resp.StatusCode, body)
	}
}

// TestUndoRestore: an undo of the completed restore answers 202 with the undo queued; what refuses one.
func TestUndoRestore(t *testing.T) {
	undo := restoresA + "/" + restA + "/undo"
	t.Run("accepted", func(t *testing.T) {
		for _, reqBody := range []string{"", `{}`} {
			f := newFixture(t)
			resp, body := f.do(t, full, "POST", undo, reqBody)
			if resp.StatusCode != 202 || body["undo_state"] != "queued" || body["undo_available"] != false || body["state"] != "completed" {
				t.Fatalf("undo %q: %d %v", reqBody, resp.StatusCode, body)
			}
			if p, _ := body["progress"].(map[string]any); p["phase"] != "undo queued" {
				t.Errorf("progress %v", body["progress"])
			}
			if loc := resp.Header.Get("Location"); loc != restoresA+"/"+restA {
				t.Errorf("Location %q", loc)
			}
			// Undoing again while it is queued is refused, and so is a restore (the lock).
			resp, body = f.do(t, full, "POST", undo, "")
			wantProblem(t, resp, body, 409, backup.CodeInvalidState)
			resp, body = f.do(t, full, "POST", restoresA, `{"source_snapshot_id":"`+snapA+`"}`)
			wantProblem(t, resp, body, 409, backup.CodeEnvironmentBusy)
		}
	})
	ctx := context.Background()
	setRestA := func(t *testing.T, f *fixture, change func(*backup.Restore)) {
		t.Helper()
		if _, _, err := f.store.UpdateRestore(ctx, nsA, envA, restA, func(r backup.Restore, _ bool) (backup.Restore, bool, error) {
			change(&r)
			return r, true, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name      string
		principal string
		setup     func(*testing.T, *fixture) string // the path to undo; "" for restA's
		body      string
		status    int
		code      backup.Code
		detail    string
	}{
		{name: "without StopApps", principal: manager, status: 403, code: backup.CodeNoAccess, detail: `"StopApps"`},
		{name: "failed restore", setup: func(t *testing.T, f *fixture) string {
			const id = "55555555-0000-4000-8000-000000000001"
			if err := f.store.CreateRestore(ctx, backup.Restore{ID: id, Namespace: nsA, EnvironmentID: envA, SourceEnvironmentID: envA,
				SourceSnapshotID: snapA, State: backup.RestoreFailed, Step: backup.StepRolledBack, CreatedAt: f.now, UpdatedAt: f.now}); err != nil {
				t.Fatal(err)
			}
			return restoresA + "/" + id + "/undo"
		}, status: 409, code: backup.CodeInvalidState, detail: "only a completed restore"},
		{name: "queued restore", setup: func(t *testing.T, f *fixture) string {
			resp, body := f.do(t, full, "POST", restoresA, `{"source_snapshot_id":"`+snapA+`"}`)
			if resp.StatusCode != 202 {
				t.Fatalf("create: %d %v", resp.StatusCode, body)
			}
			return restoresA + "/" + body["restore_id"].(string) + "/undo"
		}, status: 409, code: backup.CodeInvalidState, detail: "only a completed restore"},
		{name: "target running", setup: func(t *testing.T, f *fixture) string {
			f.setEnvironment(t, envA, "acceptance", backup.StateRunning, "1.0.0.1")
			return ""
		}, status: 409, code: backup.CodeInvalidState, detail: "stop the app first"},
		{name: "grace period over", setup: func(t *testing.T, f *fixture) string {
			setRestA(t, f, func(r *backup.Restore) { r.UndoUntil = f.now.Add(-time.Minute) })
			return ""
		}, status: 409, code: backup.CodeInvalidState, detail: "grace period"},
		{name: "undone already", setup: func(t *testing.T, f *fixture) string {
			setRestA(t, f, func(r *backup.Restore) {
				r.Step, r.UndoState, r.UndoneAt = backup.StepUndone, backup.RestoreCompleted, f.now
			})
			return ""
		}, status: 409, code: backup.CodeInvalidState, detail: "undone already"},
		{name: "not the latest", setup: func(t *testing.T, f *fixture) string {
			if err := f.store.CreateRestore(ctx, completedRestore("55555555-0000-4000-8000-000000000002", f.now.Add(30*time.Minute))); err != nil {
				t.Fatal(err)
			}
			return ""
		}, status: 409, code: backup.CodeInvalidState, detail: "only the latest restore can be undone"},
		{name: "busy", setup: func(t *testing.T, f *fixture) string {
			if resp, body := f.do(t, full, "POST", "/api/v1/namespaces/ns-a/environments/"+envA+"/snapshots", `{}`); resp.StatusCode != 202 {
				t.Fatalf("backup: %d %v", resp.StatusCode, body)
			}
			return ""
		}, status: 409, code: backup.CodeEnvironmentBusy, detail: "backup is running"},
		{name: "backups not enabled", setup: func(t *testing.T, f *fixture) string {
			if resp, _ := f.do(t, manager, "PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":false}`); resp.StatusCode != 200 {
				t.Fatal(resp.StatusCode)
			}
			return ""
		}, status: 409, code: backup.CodeBackupsNotEnabled, detail: "Try new Backup and Restore"},
		{name: "unknown restore", setup: func(*testing.T, *fixture) string {
			return restoresA + "/11111111-2222-3333-4444-555555555555/undo"
		}, status: 404, code: backup.CodeNotFound, detail: "not found"},
		{name: "unknown field", body: `{"force":true}`, status: 400, code: backup.CodeInvalidParameters, detail: `unknown field "force"`},
		{name: "not an object", body: `[]`, status: 400, code: backup.CodeInvalidParameters, detail: "must be a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			path := undo
			if tt.setup != nil {
				path = cmpOr(tt.setup(t, f), undo)
			}
			resp, body := f.do(t, cmpOr(tt.principal, full), "POST", path, tt.body)
			wantProblem(t, resp, body, tt.status, tt.code)
			if d, _ := body["detail"].(string); !strings.Contains(d, tt.detail) {
				t.Errorf("detail %q does not mention %q", d, tt.detail)
			}
		})
	}
}
