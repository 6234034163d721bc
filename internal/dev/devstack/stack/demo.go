package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/dev/funchost"
)

// The demo namespace, environment and user that `make run` seeds. Fixed, so the README can name them.
const (
	DemoNamespace     = "demo"
	DemoEnvironmentID = "7a1c5e62-3f0b-4c55-9d0e-2b8f6a4d1c01"
	DemoUserID        = "5d0e1a2b-0000-4000-8000-00000000d001"
	DemoUserName      = "Demo User"
	demoDatabase      = "demo_app"
	demoRole          = "demo_app_role"
	demoContainer     = "demo-app-files"
	// A second environment of the namespace ("test"), with its own database, role and files and an
	// older model, to restore the demo's snapshots into.
	DemoTestEnvironmentID = "7a1c5e62-3f0b-4c55-9d0e-2b8f6a4d1c02"
	demoTestDatabase      = "demo_app_test"
	demoTestRole          = "demo_test_role"
	demoTestContainer     = "demo-test-files"
	demoTestCustomers     = 20
)

// DemoFile is one file document of the demo environment.
type DemoFile struct {
	UUID   string
	Name   string
	SHA256 string
	Size   int
}

// Demo describes what SeedDemo created.
type Demo struct {
	Namespace     string
	EnvironmentID string
	Database      string
	Container     string
	Files         []DemoFile // with a blob
	MissingFiles  []string   // rows whose blob is deliberately absent
	Customers     int
	// The second environment ("test"): its database, container, customers and file blobs.
	TestEnvironmentID string
	TestDatabase      string
	TestContainer     string
	TestCustomers     int
	TestFiles         []DemoFile
}

// SeedDemo creates the demo environment and a second one ("test") to restore into: a small Mendix-like database (tables with data, an index, a
// sequence, system$filedocument rows) and its file blobs in Azurite, then tells the service about it the
// way a real deployment does: namespace.permissions and environment.updated events on the
// environment-events queue, and the settings API to enable backups. It waits until the service lists
// the environment.
func (st *Stack) SeedDemo(ctx context.Context) (*Demo, error) {
	d := &Demo{Namespace: DemoNamespace, EnvironmentID: DemoEnvironmentID, Database: demoDatabase, Container: demoContainer, Customers: 250,
		TestEnvironmentID: DemoTestEnvironmentID, TestDatabase: demoTestDatabase, TestContainer: demoTestContainer, TestCustomers: demoTestCustomers}
	for _, e := range []struct{ role, db string }{{demoRole, demoDatabase}, {demoTestRole, demoTestDatabase}} {
		if err := st.Postgres.CreateRole(ctx, e.role, "demo-role-password"); err != nil {
			return nil, err
		}
		if err := st.Postgres.CreateDatabase(ctx, e.db, e.role); err != nil {
			return nil, err
		}
		// The service reaches each environment's objects through membership in its role.
		if err := st.Postgres.Exec(ctx, "postgres", fmt.Sprintf("GRANT %s TO %s", e.role, serviceRole)); err != nil {
			return nil, fmt.Errorf("grant %s to the service role: %w", e.role, err)
		}
	}
	blobs, err := azblob.NewClientFromConnectionString(st.Azurite.ConnectionString(), nil)
	if err != nil {
		return nil, err
	}
	// The demo environment: 12 file rows, one of them without its blob (the snapshot warns about it).
	if d.Files, d.MissingFiles, err = seedEnvironment(ctx, st, blobs, demoSpec{db: demoDatabase, role: demoRole,
		container: demoContainer, label: "demo", files: 12, missing: 1, customers: d.Customers, model: "1.0.0.40"}); err != nil {
		return nil, err
	}
	// The test environment: fewer customers and other files, an older model: restoring the demo's
	// snapshot into it shows the model-version warning and visibly changes it.
	if d.TestFiles, _, err = seedEnvironment(ctx, st, blobs, demoSpec{db: demoTestDatabase, role: demoTestRole,
		container: demoTestContainer, label: "test", files: 3, customers: demoTestCustomers, model: "1.0.0.38"}); err != nil {
		return nil, err
	}

	now := time.Now().UTC()
	permissions, _ := json.Marshal(map[string]any{"type": "namespace.permissions", "event_id": "demo-permissions-1",
		"occurred_at": now, "namespace": DemoNamespace, "principal_id": DemoUserID, "permissions": []string{"ManageAppsBackups", "StopApps"}})
	msgs := []funchost.PublishMessage{{Body: string(permissions), MessageID: "demo-permissions-1", ContentType: "application/json"}}
	for _, e := range demoEnvironments {
		msgs = append(msgs, st.demoEnvironmentEvent(e, "Stopped", "demo-environment-"+e.name, now))
	}
	if _, err := st.Host.Publish("environment-events", msgs); err != nil {
		return nil, fmt.Errorf("publish demo events: %w", err)
	}
	token, err := st.Token(DemoUserID, DemoUserName)
	if err != nil {
		return nil, err
	}
	if err := st.waitForEnvironments(ctx, token, DemoEnvironmentID, DemoTestEnvironmentID); err != nil {
		return nil, err
	}
	status, body, err := st.Call(ctx, token, "PUT", "/api/v1/namespaces/"+DemoNamespace+"/settings", `{"backups_enabled":true}`)
	if err != nil || status != http.StatusOK {
		return nil, fmt.Errorf("enable backups: %d %s %v", status, body, err)
	}
	return d, nil
}

// demoEnvironment is one environment of the demo namespace, as its environment.updated events say.
type demoEnvironment struct{ id, name, model, db, role, container string }

var demoEnvironments = []demoEnvironment{
	{DemoEnvironmentID, "acceptance", "1.0.0.40", demoDatabase, demoRole, demoContainer},
	{DemoTestEnvironmentID, "test", "1.0.0.38", demoTestDatabase, demoTestRole, demoTestContainer},
}

func (st *Stack) demoEnvironmentEvent(e demoEnvironment, state, eventID string, at time.Time) funchost.PublishMessage {
	environment, _ := json.Marshal(map[string]any{"type": "environment.updated", "event_id": eventID,
		"occurred_at": at, "namespace": DemoNamespace, "environment_id": e.id, "app_id": "demo-app",
		"name": e.name, "state": state, "deployed": true, "deployment_package": "DemoApp_" + e.model + ".mda",
		"model_version": e.model,
		"database":      map[string]any{"host": st.Postgres.Host, "port": st.Postgres.Port, "name": e.db, "role": e.role},
		"files":         map[string]any{"container": e.container, "prefix": ""}})
	return funchost.PublishMessage{Body: string(environment), MessageID: eventID, ContentType: "application/json"}
}

// SetDemoState tells the service, as the platform would, that a demo environment is now in state
// (Running, Stopped, Deploying, ...), and waits until the API lists it so.
func (st *Stack) SetDemoState(ctx context.Context, environmentID, state string) error {
	i := slices.IndexFunc(demoEnvironments, func(e demoEnvironment) bool { return e.id == environmentID })
	if i < 0 {
		return fmt.Errorf("no demo environment %s", environmentID)
	}
	now := time.Now().UTC()
	eventID := fmt.Sprintf("demo-environment-%s-%s-%d", demoEnvironments[i].name, state, now.UnixNano())
	if _, err := st.Host.Publish("environment-events", []funchost.PublishMessage{st.demoEnvironmentEvent(demoEnvironments[i], state, eventID, now)}); err != nil {
		return fmt.Errorf("publish the state of %s: %w", demoEnvironments[i].name, err)
	}
	token, err := st.Token(DemoUserID, DemoUserName)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		status, body, err := st.Call(ctx, token, "GET", "/api/v1/namespaces/"+DemoNamespace+"/environments", "")
		if err == nil && status == http.StatusOK {
			type listed struct {
				ID    string `json:"environment_id"`
				State string `json:"state"`
			}
			var list struct {
				Environments []listed `json:"environments"`
			}
			if json.Unmarshal([]byte(body), &list) == nil &&
				slices.Contains(list.Environments, listed{ID: environmentID, State: state}) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("environment %s is not %s in the API (last: %d %s %v)", environmentID, state, status, body, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// demoSpec describes one seeded environment.
type demoSpec struct {
	db, role, container, label, model string
	files, missing, customers         int
}

// seedEnvironment fills an environment's database (a small Mendix-like schema: system$filedocument,
// a table with an index and a sequence, mendixsystem$version) and its container, and returns the file
// documents with a blob and the UUIDs of the last spec.missing rows, which have none.
func seedEnvironment(ctx context.Context, st *Stack, blobs *azblob.Client, spec demoSpec) ([]DemoFile, []string, error) {
	if _, err := blobs.CreateContainer(ctx, spec.container, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil, nil, fmt.Errorf("create %s: %w", spec.container, err)
	}
	var (
		rows    []string
		files   []DemoFile
		missing []string
	)
	for i := 0; i < spec.files; i++ {
		u := uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprintf("%s-file-%d", spec.label, i))).String()
		if spec.label == "demo" { // the demo's UUIDs as before this seed had a second environment
			u = uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprintf("demo-file-%d", i))).String()
		}
		content := bytes.Repeat([]byte(fmt.Sprintf("%s document %d line\n", spec.label, i)), 200*(i+1))
		if i >= spec.files-spec.missing { // a row whose blob was lost: a snapshot reports it as a warning
			missing = append(missing, u)
		} else {
			if _, err := blobs.UploadBuffer(ctx, spec.container, u, content, nil); err != nil {
				return nil, nil, fmt.Errorf("upload a %s file: %w", spec.label, err)
			}
			sum := sha256.Sum256(content)
			files = append(files, DemoFile{UUID: u, Name: fmt.Sprintf("document-%02d.txt", i), SHA256: fmt.Sprintf("%x", sum), Size: len(content)})
		}
		rows = append(rows, fmt.Sprintf("(%d, '%s', 'document-%02d.txt', %d, true, false)", i+1, u, i, len(content)))
	}
	// Rows that are not part of a snapshot by the rules: no contents, or delete-after-download.
	rows = append(rows, fmt.Sprintf("(100, '%s', 'empty.txt', 0, false, false)", uuid.NewString()),
		fmt.Sprintf("(101, '%s', 'temp.txt', 10, true, true)", uuid.NewString()))
	schema := fmt.Sprintf(`
SET ROLE %[1]s;
CREATE TABLE "system$filedocument" (id bigint PRIMARY KEY, __uuid__ varchar(36), name varchar(400), size bigint,
  hascontents boolean, deleteafterdownload boolean, changeddate timestamp DEFAULT now());
INSERT INTO "system$filedocument" (id, __uuid__, name, size, hascontents, deleteafterdownload) VALUES %[2]s;
CREATE SEQUENCE "myfirstmodule$customer_seq";
CREATE TABLE "myfirstmodule$customer" (id bigint PRIMARY KEY DEFAULT nextval('"myfirstmodule$customer_seq"'),
  name varchar(200) NOT NULL, email varchar(200), notes text, createddate timestamp DEFAULT now());
CREATE INDEX "idx_myfirstmodule$customer_name" ON "myfirstmodule$customer" (name);
INSERT INTO "myfirstmodule$customer" (name, email, notes)
  SELECT 'Customer ' || g, 'customer' || g || '@example.com', repeat('Notes about customer ' || g || '. ', 20)
  FROM generate_series(1, %[3]d) g;
CREATE TABLE "mendixsystem$version" (versionnumber varchar(50), lastsyncdate timestamp);
INSERT INTO "mendixsystem$version" VALUES ('%[4]s', now());`, spec.role, strings.Join(rows, ",\n  "), spec.customers, spec.model)
	if err := st.Postgres.Exec(ctx, spec.db, schema); err != nil {
		return nil, nil, fmt.Errorf("seed database %s: %w", spec.db, err)
	}
	return files, missing, nil
}

func (st *Stack) waitForEnvironments(ctx context.Context, token string, ids ...string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		status, body, err := st.Call(ctx, token, "GET", "/api/v1/namespaces/"+DemoNamespace+"/environments", "")
		if err == nil && status == http.StatusOK && containsAll(body, ids) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the demo environment did not appear in the API (last: %d %s %v)", status, body, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// Call makes an API call to the local host with a bearer token and returns status and body.
func (st *Stack) Call(ctx context.Context, token, method, path, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, st.URL+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
