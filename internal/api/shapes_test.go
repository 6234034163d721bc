package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/schedule"
)

// getRaw returns the status and the exact body of an authenticated GET.
func (f *fixture) getRaw(t *testing.T, path string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "Bearer "+manager)
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	raw, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, strings.TrimSpace(string(raw))
}

// TestSnapshotJSONGolden: a snapshot carries every field of docs/api.md in every status, with null
// (finished_at, sha256, progress) or empty values rather than leaving some out.
func TestSnapshotJSONGolden(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	created := f.now.Add(-time.Hour)
	snaps := []backup.Snapshot{
		{ID: "11111111-0000-4000-8000-000000000001", Status: backup.SnapshotProcessing, Kind: backup.KindManual,
			Progress: &backup.Progress{Phase: "dumping", BytesDone: 1024, FilesDone: 3, FilesTotal: 10}},
		{ID: "11111111-0000-4000-8000-000000000002", Status: backup.SnapshotProcessing, Kind: backup.KindNightly}, // no progress written yet
		{ID: "11111111-0000-4000-8000-000000000003", Status: backup.SnapshotFinished, Kind: backup.KindManual, Comment: "before the upgrade",
			FinishedAt: f.now, SizeBytes: 2048, DatabaseSizeBytes: 4096, DumpSizeBytes: 1500, FilesBytes: 548, FilesCount: 12,
			NewFilesCount: 2, NewFilesBytes: 100, StoredBytes: 700, SHA256: "ab12", Warnings: []string{"file 7 has no blob"},
			Progress: &backup.Progress{Phase: "finishing"}}, // a leftover progress is not shown
		{ID: "11111111-0000-4000-8000-000000000004", Status: backup.SnapshotFailed, Kind: backup.KindManual, FinishedAt: f.now,
			StatusMessage: "the database could not be reached"},
	}
	for _, sn := range snaps {
		sn.Namespace, sn.EnvironmentID, sn.CreatedAt, sn.UpdatedAt, sn.ExpiresAt = nsA, envA, created, f.now, created.AddDate(0, 0, 14)
		sn.DeploymentPackage, sn.ModelVersion = "p.mda", "1.0.0.1"
		if err := f.store.CreateSnapshot(ctx, sn); err != nil {
			t.Fatal(err)
		}
	}
	common := `"namespace":"ns-a","environment_id":"` + envA + `",%s,"created_at":"2026-11-20T07:00:00Z","updated_at":"2026-11-20T08:00:00Z",%s,` +
		`"expires_at":"2026-12-04T07:00:00Z","deployment_package":"p.mda","model_version":"1.0.0.1",%s,"upload_sha256":null}`
	want := map[string]string{
		snaps[0].ID: `{"snapshot_id":"` + snaps[0].ID + `",` + fmt.Sprintf(common, `"status":"Processing","kind":"manual","comment":""`, `"finished_at":null`,
			`"size_bytes":0,"database_size_bytes":0,"dump_size_bytes":0,"files_bytes":0,"files_count":0,"new_files_count":0,"new_files_bytes":0,"stored_bytes":0,"sha256":null,"status_message":"","warnings":[],"progress":{"phase":"dumping","bytes_done":1024,"files_done":3,"files_total":10}`),
		snaps[1].ID: `{"snapshot_id":"` + snaps[1].ID + `",` + fmt.Sprintf(common, `"status":"Processing","kind":"nightly","comment":""`, `"finished_at":null`,
			`"size_bytes":0,"database_size_bytes":0,"dump_size_bytes":0,"files_bytes":0,"files_count":0,"new_files_count":0,"new_files_bytes":0,"stored_bytes":0,"sha256":null,"status_message":"","warnings":[],"progress":{"phase":"queued","bytes_done":0,"files_done":0,"files_total":0}`),
		snaps[2].ID: `{"snapshot_id":"` + snaps[2].ID + `",` + fmt.Sprintf(common, `"status":"Finished","kind":"manual","comment":"before the upgrade"`, `"finished_at":"2026-11-20T08:00:00Z"`,
			`"size_bytes":2048,"database_size_bytes":4096,"dump_size_bytes":1500,"files_bytes":548,"files_count":12,"new_files_count":2,"new_files_bytes":100,"stored_bytes":700,"sha256":"ab12","status_message":"","warnings":["file 7 has no blob"],"progress":null`),
		snaps[3].ID: `{"snapshot_id":"` + snaps[3].ID + `",` + fmt.Sprintf(common, `"status":"Failed","kind":"manual","comment":""`, `"finished_at":"2026-11-20T08:00:00Z"`,
			`"size_bytes":0,"database_size_bytes":0,"dump_size_bytes":0,"files_bytes":0,"files_count":0,"new_files_count":0,"new_files_bytes":0,"stored_bytes":0,"sha256":null,"status_message":"the database could not be reached","warnings":[],"progress":null`),
	}
	base := "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots"
	for id, w := range want {
		if code, got := f.getRaw(t, base+"/"+id); code != 200 || got != w {
			t.Errorf("GET %s: %d\n got %s\nwant %s", id, code, got, w)
		}
	}
	// The list shows the same objects.
	_, list := f.getRaw(t, base+"?limit=1000")
	for _, w := range want {
		if !strings.Contains(list, w) {
			t.Errorf("list lacks %s\nlist: %s", w, list)
		}
	}
}

// TestActivityPages: the activity log honours offset and limit and says total, offset and limit like
// the other lists; every entry has every field, ids null when there is none.
func TestActivityPages(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := range 5 {
		e := backup.ActivityEntry{Namespace: nsA, EnvironmentID: envA, Time: f.now.Add(time.Duration(i) * time.Minute),
			Action: backup.ActionBackup, Status: backup.ActivityStarted, Actor: manager, Message: fmt.Sprintf("entry %d", i)}
		if i == 4 {
			e.Action, e.Status, e.Actor, e.SnapshotID, e.Message = backup.ActionDelete, backup.ActivityFinished, backup.ActorSystem, snapA, ""
		}
		if err := f.store.AddActivity(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	path := "/api/v1/namespaces/ns-a/environments/" + envA + "/activity"
	code, got := f.getRaw(t, path+"?offset=0&limit=1")
	want := `{"entries":[{"time":"2026-11-20T08:04:00Z","action":"delete","status":"FINISHED","actor":"system","snapshot_id":"` + snapA +
		`","restore_id":null,"message":""}],"limit":1,"offset":0,"total":5}`
	if code != 200 || got != want {
		t.Errorf("first page: %d\n got %s\nwant %s", code, got, want)
	}
	code, got = f.getRaw(t, path+"?offset=2&limit=2")
	want = `{"entries":[{"time":"2026-11-20T08:02:00Z","action":"backup","status":"STARTED","actor":"manager","snapshot_id":null,"restore_id":null,"message":"entry 2"},` +
		`{"time":"2026-11-20T08:01:00Z","action":"backup","status":"STARTED","actor":"manager","snapshot_id":null,"restore_id":null,"message":"entry 1"}],"limit":2,"offset":2,"total":5}`
	if code != 200 || got != want {
		t.Errorf("offset 2: %d\n got %s\nwant %s", code, got, want)
	}
	code, got = f.getRaw(t, path+"?offset=10")
	if want := `{"entries":[],"limit":100,"offset":10,"total":5}`; code != 200 || got != want {
		t.Errorf("past the end: %d %s, want %s", code, got, want)
	}
}

// TestSettingsAndEnvironmentJSONGolden: settings and environments carry every field, null when unknown.
func TestSettingsAndEnvironmentJSONGolden(t *testing.T) {
	f := newFixture(t)
	if code, got := f.getRaw(t, "/api/v1/namespaces/ns-a/settings"); code != 200 ||
		got != `{"backups_enabled":true,"updated_at":null,"updated_by":null}` {
		t.Errorf("settings never changed through the API: %d %s", code, got)
	}
	resp, _ := f.do(t, manager, "PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":true}`)
	if resp.StatusCode != 200 {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	if code, got := f.getRaw(t, "/api/v1/namespaces/ns-a/settings"); code != 200 ||
		got != `{"backups_enabled":true,"updated_at":"2026-11-20T08:00:00Z","updated_by":"manager"}` {
		t.Errorf("settings: %d %s", code, got)
	}
	// The fixture's clock is Friday 2026-11-20 08:00 UTC: the next run is Saturday's nightly at 01:00 UTC,
	// plus the environment's offset in the 2-hour spread.
	nextAt := time.Date(2026, 11, 21, 1, 0, 0, 0, time.UTC).Add(schedule.Offset(envA, 2*time.Hour)).Format(time.RFC3339)
	want := `{"environments":[{"environment_id":"` + envA + `","namespace":"ns-a","app_id":"app","name":"acceptance","state":"Stopped",` +
		`"deployed":true,"deployment_package":"p.mda","model_version":"1.0.0.1","can_create_backup":true,"reason":"",` +
		`"file_store_objects":0,"file_store_bytes":0,"next_automatic_backup":{"at":"` + nextAt + `","day":"2026-11-21","kind":"nightly"},` +
		`"last_finished_snapshot_at":"2026-11-20T08:00:00Z"}]}`
	if code, got := f.getRaw(t, "/api/v1/namespaces/ns-a/environments"); code != 200 || got != want {
		t.Errorf("environments: %d\n got %s\nwant %s", code, got, want)
	}
}

// TestProblemJSONGolden: a problem carries exactly type, title, status, detail and code.
func TestProblemJSONGolden(t *testing.T) {
	f := newFixture(t)
	code, got := f.getRaw(t, "/api/v1/namespaces/ns-a/environments/11111111-2222-3333-4444-555555555555/activity")
	var p map[string]any
	if err := json.Unmarshal([]byte(got), &p); err != nil || code != 404 {
		t.Fatalf("%d %s", code, got)
	}
	want := `{"type":"https://backups.mendix-azure.invalid/problems/environment-not-found","title":"Environment not found","status":404,` +
		`"detail":"environment 11111111-2222-3333-4444-555555555555 not found in namespace ns-a","code":"ENVIRONMENT_NOT_FOUND"}`
	if got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
}
