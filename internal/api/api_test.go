package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth"
	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/blobstore"
	"github.com/mxazure/backups/internal/memstore"
	"github.com/mxazure/backups/internal/ncrontab"
	"github.com/mxazure/backups/internal/schedule"
)

// tokenAuth is a fake authenticator: "Bearer <principal>" authenticates as that principal. The real
// OIDC authenticator is tested in internal/auth and end to end.
type tokenAuth struct{}

func (tokenAuth) Authenticate(_ context.Context, header string) (auth.Principal, error) {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || tok == "" {
		return auth.Principal{}, backup.Errorf(backup.CodeUnauthenticated, "missing bearer token")
	}
	if tok == refused {
		return auth.Principal{}, backup.Errorf(backup.CodeUnauthenticated, "token expired")
	}
	return auth.Principal{ID: tok}, nil
}

// refused is a token tokenAuth refuses.
const refused = "refused-token"

const (
	nsA     = "ns-a"
	envA    = "0d3e301f-5551-46f8-ad44-8de2be084c95"
	snapA   = "9b2f64e1-7c1d-4f4e-8a9b-3f0c2d1e5a77"
	manager = "manager"  // ManageAppsBackups
	full    = "operator" // ManageAppsBackups + StopApps
	nobody  = "nobody"

	// restA is a completed restore of snapA into envA, undoable (completedRestore).
	restA = "5c8e2a71-3b4d-4e6f-9a1b-2c3d4e5f6a7b"
	// archA is a completed download of snapA; uplA an upload into envA whose archive is in its blob.
	archA = "5e0c6a1d-2b3f-4c7e-9a8d-1f2e3d4c5b6a"
	uplA  = "6f1d7b2e-3c4a-4d8f-8b9e-2a3f4e5d6c7b"
)

type fixture struct {
	srv   *Server
	store *memstore.Store
	now   time.Time
	logs  *syncBuffer // everything the server and the service logged
}

// fixtureOption changes what newFixture builds.
type fixtureOption func(*fixtureConfig)

type fixtureConfig struct {
	stores func(backup.Stores) backup.Stores // replaces some of the memstore stores
	checks []Check
}

func withStores(f func(backup.Stores) backup.Stores) fixtureOption {
	return func(c *fixtureConfig) { c.stores = f }
}

func withChecks(checks ...Check) fixtureOption {
	return func(c *fixtureConfig) { c.checks = checks }
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newFixture(t *testing.T, opts ...fixtureOption) *fixture {
	t.Helper()
	var cfg fixtureConfig
	for _, o := range opts {
		o(&cfg)
	}
	st := memstore.New()
	now := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
	stores := st.Stores()
	if cfg.stores != nil {
		stores = cfg.stores(stores)
	}
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	transfers := &fakeTransfers{}
	svc := backup.NewService(backup.Deps{Stores: stores, Now: func() time.Time { return now },
		Publisher: nopPublisher{}, Archives: nopArchives{}, Layout: blobstore.Layout{}, Log: log,
		Links: transfers, Uploads: transfers, UploadMaxBytes: 1 << 30, Plan: testPlan(t)})
	ctx := context.Background()
	events := []string{
		`{"type":"namespace.permissions","event_id":"p1","occurred_at":"2026-11-20T07:00:00Z","namespace":"ns-a","principal_id":"manager","permissions":["ManageAppsBackups"]}`,
		`{"type":"namespace.permissions","event_id":"p2","occurred_at":"2026-11-20T07:00:00Z","namespace":"ns-a","principal_id":"operator","permissions":["ManageAppsBackups","StopApps"]}`,
		`{"type":"environment.updated","event_id":"e1","occurred_at":"2026-11-20T07:00:00Z","namespace":"ns-a","environment_id":"` + envA + `","app_id":"app","name":"acceptance","state":"Stopped","deployed":true,"deployment_package":"p.mda","model_version":"1.0.0.1","database":{"host":"h","port":5432,"name":"db","role":"r"},"files":{"container":"files-a","prefix":""}}`,
	}
	for _, ev := range events {
		if err := svc.HandleEnvironmentEvent(ctx, "m", []byte(ev), zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.PutSettings(ctx, backup.Settings{Namespace: nsA, BackupsEnabled: true}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSnapshot(ctx, backup.Snapshot{ID: snapA, Namespace: nsA, EnvironmentID: envA, Status: backup.SnapshotFinished,
		Kind: backup.KindManual, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.AddDate(0, 0, 14), ModelVersion: "1.0.0.1", DeploymentPackage: "p.mda",
		DumpPath: "ns-a/" + envA + "/" + snapA + "/db.backup.gz", ManifestPath: "ns-a/" + envA + "/" + snapA + "/manifest.json"}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateRestore(ctx, completedRestore(restA, now)); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateArchive(ctx, backup.Archive{ID: archA, Namespace: nsA, EnvironmentID: envA, SnapshotID: snapA,
		DataType: backup.DataFilesAndDatabase, State: backup.ArchiveCompleted, CreatedAt: now.Add(-time.Hour), UpdatedAt: now,
		FinishedAt: now, CreatedBy: full, OwnerID: archA, FileName: "files_and_database-2d1e5a77-202611200800.tar.gz",
		BlobPath: ".downloads/a.tar.gz", SizeBytes: 1234, SHA256: "ab", URLExpiresAt: now.Add(8 * time.Hour),
		OperationID: "01939a4c-0000-7000-8000-0000000000bb", Fence: 1, KeepUntil: now.Add(8 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	upload := backup.Upload{ID: uplA, Namespace: nsA, EnvironmentID: envA, BlobPath: blobstore.Layout{}.Upload(nsA, envA, uplA),
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: full}
	if err := st.CreateUpload(ctx, upload); err != nil {
		t.Fatal(err)
	}
	transfers.uploaded = map[string]bool{upload.BlobPath: true}
	srv := New(Deps{Log: log, Version: "test", Authenticator: tokenAuth{}, Service: svc, Checks: cfg.checks, Now: func() time.Time { return now }})
	return &fixture{srv: srv, store: st, now: now, logs: logs}
}

// completedRestore is a restore of snapA into envA that completed at now and can be undone for a day.
func completedRestore(id string, now time.Time) backup.Restore {
	return backup.Restore{ID: id, Namespace: nsA, EnvironmentID: envA, SourceEnvironmentID: envA, SourceSnapshotID: snapA,
		State: backup.RestoreCompleted, Step: backup.StepCommitted, CreatedAt: now.Add(-time.Hour), UpdatedAt: now,
		StartedAt: now.Add(-time.Hour), FinishedAt: now, CreatedBy: full, ModelVersion: "1.0.0.1", DeploymentPackage: "p.mda",
		Database: "db", Tables: 3, Rows: 42, DatabaseBytes: 4096, FilesCount: 2, FilesBytes: 300, FilesAdded: 1, FilesUnchanged: 1,
		OperationID: "01939a4c-0000-7000-8000-0000000000aa", Fence: 1, UndoUntil: now.Add(backup.DefaultRestoreUndo)}
}

func (f *fixture) do(t *testing.T, principal, method, path, body string) (*http.Response, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if principal != "" {
		req.Header.Set("Authorization", "Bearer "+principal)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	resp := rec.Result()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp, out
}

func wantProblem(t *testing.T, resp *http.Response, body map[string]any, status int, code backup.Code) {
	t.Helper()
	if resp.StatusCode != status || body["code"] != string(code) {
		t.Fatalf("got %d %v, want %d %s", resp.StatusCode, body, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	for _, k := range []string{"type", "title", "status", "detail", "code"} {
		if _, ok := body[k]; !ok {
			t.Errorf("problem lacks %q: %v", k, body)
		}
	}
}

// endpoints lists every authenticated route with a valid request and the permissions it needs.
func endpoints() []struct {
	method, path, body string
	need               []string
} {
	return []struct {
		method, path, body string
		need               []string
	}{
		{"GET", "/api/v1/namespaces/ns-a/environments", "", []string{"ManageAppsBackups"}},
		{"GET", "/api/v1/namespaces/ns-a/settings", "", []string{"ManageAppsBackups"}},
		{"PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":true}`, []string{"ManageAppsBackups"}},
		{"GET", "/api/v1/namespaces/ns-a/environments/" + envA + "/activity", "", []string{"ManageAppsBackups"}},
		{"GET", "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots", "", []string{"ManageAppsBackups"}},
		{"GET", "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots/" + snapA, "", []string{"ManageAppsBackups"}},
		{"PATCH", "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots/" + snapA, `{"comment":"new"}`, []string{"ManageAppsBackups"}},
		{"POST", "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots", `{"comment":"x"}`, []string{"ManageAppsBackups"}},
		{"DELETE", "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots/" + snapA, "", []string{"ManageAppsBackups"}},
		{"GET", "/api/v1/namespaces/ns-a/environments/" + envA + "/restores", "", []string{"ManageAppsBackups"}},
		{"POST", "/api/v1/namespaces/ns-a/environments/" + envA + "/restores", `{"source_snapshot_id":"` + snapA + `"}`, []string{"ManageAppsBackups", "StopApps"}},
		{"GET", "/api/v1/namespaces/ns-a/environments/" + envA + "/restores/" + restA, "", []string{"ManageAppsBackups"}},
		{"POST", "/api/v1/namespaces/ns-a/environments/" + envA + "/restores/" + restA + "/undo", "", []string{"ManageAppsBackups", "StopApps"}},
		{"GET", "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots/" + snapA + "/archives", "", []string{"ManageAppsBackups"}},
		{"POST", "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots/" + snapA + "/archives", `{"data_type":"database_only"}`, []string{"ManageAppsBackups"}},
		{"GET", "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots/" + snapA + "/archives/" + archA, "", []string{"ManageAppsBackups"}},
		{"POST", "/api/v1/namespaces/ns-a/environments/" + envA + "/uploads", `{"file_name":"a.tar.gz"}`, []string{"ManageAppsBackups"}},
		{"POST", "/api/v1/namespaces/ns-a/environments/" + envA + "/uploads/" + uplA + "/complete", `{"comment":"c"}`, []string{"ManageAppsBackups"}},
	}
}

// fakeTransfers mints links and says which upload blobs exist.
type fakeTransfers struct {
	mu       sync.Mutex
	uploaded map[string]bool
}

func (f *fakeTransfers) DownloadLink(_ context.Context, path, fileName string, until time.Time) (string, error) {
	return "https://account.blob.example/snapshots/" + path + "?sp=r&se=" + until.UTC().Format(time.RFC3339) + "&rscd=" + url.QueryEscape(fileName), nil
}

func (f *fakeTransfers) UploadLink(_ context.Context, path string, until time.Time) (string, error) {
	return "https://account.blob.example/snapshot-uploads/" + path + "?sp=cw&se=" + until.UTC().Format(time.RFC3339), nil
}

func (f *fakeTransfers) UploadProperties(_ context.Context, path string) (backup.UploadBlob, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.uploaded[path] {
		return backup.UploadBlob{}, nil
	}
	return backup.UploadBlob{Found: true, Size: 2048, ETag: "0x1"}, nil
}

func (f *fakeTransfers) DeleteUpload(_ context.Context, path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.uploaded, path)
	return nil
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, ...backup.Message) error { return nil }
func (nopPublisher) Ping(context.Context) error                               { return nil }
func (nopPublisher) Close(context.Context) error                              { return nil }

type nopArchives struct{}

func (nopArchives) DeleteBlob(context.Context, string) error { return nil }
func (nopArchives) ListSnapshotBlobs(context.Context, string, string, string) ([]string, error) {
	return nil, nil
}
func (nopArchives) WalkArchives(context.Context, func(backup.ArchiveBlob) error) error { return nil }

func TestEveryEndpointNeedsAToken(t *testing.T) {
	f := newFixture(t)
	for _, ep := range endpoints() {
		resp, body := f.do(t, "", ep.method, ep.path, ep.body)
		wantProblem(t, resp, body, 401, backup.CodeUnauthenticated)
		if resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: no WWW-Authenticate header on 401", ep.method, ep.path)
		}
	}
}

// TestEveryEndpointChecksPermissions: without the permissions an endpoint needs the answer is 403 naming
// the missing one; with all of them, 2xx. Each endpoint gets a fresh fixture (a POST takes the lock).
func TestEveryEndpointChecksPermissions(t *testing.T) {
	for _, ep := range endpoints() {
		t.Run(ep.method+" "+ep.path, func(t *testing.T) {
			f := newFixture(t)
			resp, body := f.do(t, nobody, ep.method, ep.path, ep.body)
			wantProblem(t, resp, body, 403, backup.CodeNoAccess)
			if slices.Contains(ep.need, "StopApps") {
				resp, body = f.do(t, manager, ep.method, ep.path, ep.body)
				wantProblem(t, resp, body, 403, backup.CodeNoAccess)
				if !strings.Contains(body["detail"].(string), `"StopApps"`) {
					t.Errorf("detail %q does not name StopApps", body["detail"])
				}
			}
			// The manager in another namespace has nothing there.
			other := strings.Replace(ep.path, "/ns-a/", "/ns-b/", 1)
			resp, body = f.do(t, manager, ep.method, other, ep.body)
			wantProblem(t, resp, body, 403, backup.CodeNoAccess)
			resp, _ = f.do(t, full, ep.method, ep.path, ep.body)
			if resp.StatusCode/100 != 2 {
				t.Errorf("with every permission: got %d, want 2xx", resp.StatusCode)
			}
		})
	}
}

func TestHostileIDsOnEveryPathParameter(t *testing.T) {
	f := newFixture(t)
	hostile := []string{
		"ns' or PartitionKey ne '", `a"b`, "..", "%2F..%2Fetc", "a%2Fb", "Robert'); DROP TABLE x;--",
		strings.Repeat("a", 5000), "%00", "ns%0Aa", "UPPER", "-ns",
	}
	for _, ep := range endpoints() {
		segments := strings.Split(ep.path, "/")
		for i, seg := range segments {
			if seg != "ns-a" && seg != envA && seg != snapA && seg != restA && seg != archA && seg != uplA {
				continue
			}
			for _, h := range hostile {
				parts := slices.Clone(segments)
				if strings.Contains(h, "%") {
					parts[i] = h // already percent-encoded
				} else {
					parts[i] = url.PathEscape(h)
				}
				path := strings.Join(parts, "/")
				if _, err := url.ParseRequestURI(path); err != nil {
					continue
				}
				resp, body := f.do(t, full, ep.method, path, ep.body)
				if resp.StatusCode != 400 && resp.StatusCode != 404 {
					t.Errorf("%s %s: got %d %v, want 400 or 404", ep.method, path, resp.StatusCode, body)
				}
				if resp.StatusCode == 400 && body["code"] != string(backup.CodeInvalidParameters) {
					t.Errorf("%s %s: got code %v, want INVALID_PARAMETERS", ep.method, path, body["code"])
				}
			}
		}
	}
}

func TestUnknownEnvironment(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, manager, "GET", "/api/v1/namespaces/ns-a/environments/11111111-2222-3333-4444-555555555555/activity", "")
	wantProblem(t, resp, body, 404, backup.CodeEnvironmentNotFound)
}

func TestSettingsBodies(t *testing.T) {
	f := newFixture(t)
	if resp, body := f.do(t, manager, "PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":false}`); resp.StatusCode != 200 {
		t.Fatalf("disable: %d %v", resp.StatusCode, body)
	}
	tests := []struct {
		name, body string
		status     int
		code       backup.Code
	}{
		{"malformed", `{"backups_enabled":`, 400, backup.CodeInvalidParameters},
		{"unknown field", `{"backups_enabled":true,"admin":true}`, 400, backup.CodeInvalidParameters},
		{"wrong type", `{"backups_enabled":"yes"}`, 400, backup.CodeInvalidParameters},
		{"missing field", `{}`, 400, backup.CodeInvalidParameters},
		{"two objects", `{"backups_enabled":true}{}`, 400, backup.CodeInvalidParameters},
		{"array", `[true]`, 400, backup.CodeInvalidParameters},
		{"too large", `{"backups_enabled":true,"x":"` + strings.Repeat("a", 70<<10) + `"}`, 413, backup.CodePayloadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := f.do(t, manager, "PUT", "/api/v1/namespaces/ns-a/settings", tt.body)
			wantProblem(t, resp, body, tt.status, tt.code)
		})
	}
	// Nothing was stored by the failures.
	if set, _ := f.store.GetSettings(context.Background(), nsA); set.BackupsEnabled {
		t.Error("a rejected request changed the settings")
	}
	resp, body := f.do(t, manager, "PUT", "/api/v1/namespaces/ns-a/settings", `{"backups_enabled":true}`)
	if resp.StatusCode != 200 || body["backups_enabled"] != true || body["updated_by"] != manager {
		t.Fatalf("got %d %v", resp.StatusCode, body)
	}
	_, body = f.do(t, manager, "GET", "/api/v1/namespaces/ns-a/settings", "")
	if body["backups_enabled"] != true {
		t.Errorf("GET after PUT: %v", body)
	}
}

func TestWrongContentType(t *testing.T) {
	f := newFixture(t)
	req := httptest.NewRequest("PUT", "/api/v1/namespaces/ns-a/settings", strings.NewReader(`backups_enabled=true`))
	req.Header.Set("Authorization", "Bearer "+manager)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	f.srv.ServeHTTP(rec, req)
	if rec.Code != 415 {
		t.Errorf("got %d, want 415", rec.Code)
	}
}

func TestListEnvironmentsShape(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, manager, "GET", "/api/v1/namespaces/ns-a/environments", "")
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %v", resp.StatusCode, body)
	}
	envs := body["environments"].([]any)
	if len(envs) != 1 {
		t.Fatalf("got %d environments, want 1", len(envs))
	}
	e := envs[0].(map[string]any)
	for _, k := range []string{"environment_id", "namespace", "app_id", "name", "state", "deployed", "deployment_package", "model_version", "can_create_backup", "reason"} {
		if _, ok := e[k]; !ok {
			t.Errorf("environment lacks %q: %v", k, e)
		}
	}
	if _, leaked := e["database"]; leaked {
		t.Error("environment exposes its database location")
	}
}

func TestActivityLimit(t *testing.T) {
	f := newFixture(t)
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?offset=-1"} {
		resp, body := f.do(t, manager, "GET", "/api/v1/namespaces/ns-a/environments/"+envA+"/activity"+q, "")
		wantProblem(t, resp, body, 400, backup.CodeInvalidParameters)
	}
	resp, body := f.do(t, manager, "GET", "/api/v1/namespaces/ns-a/environments/"+envA+"/activity?limit=5", "")
	if resp.StatusCode != 200 || body["entries"] == nil {
		t.Fatalf("got %d %v", resp.StatusCode, body)
	}
}

func TestUnknownRouteIsProblem(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, manager, "GET", "/api/v1/nothing-here", "")
	wantProblem(t, resp, body, 404, backup.CodeNotFound)
}

func TestSnapshotRequests(t *testing.T) {
	f := newFixture(t)
	base := "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots"
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     backup.Code
	}{
		{"comment too long", "POST", base, `{"comment":"` + strings.Repeat("x", 1001) + `"}`, 400, backup.CodeInvalidParameters},
		{"unknown field", "POST", base, `{"comment":"x","kind":"monthly"}`, 400, backup.CodeInvalidParameters},
		{"patch without comment", "PATCH", base + "/" + snapA, `{}`, 400, backup.CodeInvalidParameters},
		{"patch another field", "PATCH", base + "/" + snapA, `{"comment":"x","status":"Failed"}`, 400, backup.CodeInvalidParameters},
		{"unknown snapshot", "GET", base + "/11111111-2222-3333-4444-555555555555", "", 404, backup.CodeNotFound},
		{"snapshot id not a uuid", "GET", base + "/latest", "", 400, backup.CodeInvalidParameters},
		{"bad paging", "GET", base + "?limit=5000", "", 400, backup.CodeInvalidParameters},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := f.do(t, manager, tt.method, tt.path, tt.body)
			wantProblem(t, resp, body, tt.status, tt.code)
		})
	}
	resp, body := f.do(t, manager, "POST", base, `{"comment":"first"}`)
	if resp.StatusCode != 202 || resp.Header.Get("Location") == "" || body["status"] != "Processing" {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	resp, body = f.do(t, manager, "POST", base, `{}`)
	wantProblem(t, resp, body, 409, backup.CodeEnvironmentBusy)
	resp, body = f.do(t, manager, "GET", base+"?limit=1", "")
	if resp.StatusCode != 200 || body["total"] != float64(2) || len(body["snapshots"].([]any)) != 1 {
		t.Errorf("list: %d %v", resp.StatusCode, body)
	}
}

// testPlan is the default schedule: nightly at 01:00 UTC Monday to Saturday, weekly on Sundays other
// than the first, monthly on the first, spread over 2 hours.
func testPlan(t *testing.T) schedule.Plan {
	t.Helper()
	plan := schedule.Plan{Calendar: schedule.UTC, Spread: 2 * time.Hour}
	for _, expr := range []string{"0 0 1 * * 1-6", "0 0 1 8-31 * 0", "0 0 1 1-7 * 0"} {
		s, err := ncrontab.Parse(expr)
		if err != nil {
			t.Fatal(err)
		}
		plan.Timers = append(plan.Timers, s)
	}
	return plan
}
