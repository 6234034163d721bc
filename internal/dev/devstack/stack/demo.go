package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
}

// SeedDemo creates the demo environment: a small Mendix-like database (tables with data, an index, a
// sequence, system$filedocument rows) and its file blobs in Azurite, then tells the service about it the
// way a real deployment does: namespace.permissions and environment.updated events on the
// environment-events queue, and the settings API to enable backups. It waits until the service lists
// the environment.
func (st *Stack) SeedDemo(ctx context.Context) (*Demo, error) {
	d := &Demo{Namespace: DemoNamespace, EnvironmentID: DemoEnvironmentID, Database: demoDatabase, Container: demoContainer, Customers: 250}
	if err := st.Postgres.CreateRole(ctx, demoRole, "demo-role-password"); err != nil {
		return nil, err
	}
	if err := st.Postgres.CreateDatabase(ctx, demoDatabase, demoRole); err != nil {
		return nil, err
	}
	blobs, err := azblob.NewClientFromConnectionString(st.Azurite.ConnectionString(), nil)
	if err != nil {
		return nil, err
	}
	if _, err := blobs.CreateContainer(ctx, demoContainer, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil, fmt.Errorf("create %s: %w", demoContainer, err)
	}
	var rows []string
	for i := 0; i < 12; i++ {
		u := uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprintf("demo-file-%d", i))).String()
		content := bytes.Repeat([]byte(fmt.Sprintf("demo document %d line\n", i)), 200*(i+1))
		if i == 11 { // a row whose blob was lost: the snapshot reports it as a warning
			d.MissingFiles = append(d.MissingFiles, u)
		} else {
			if _, err := blobs.UploadBuffer(ctx, demoContainer, u, content, nil); err != nil {
				return nil, fmt.Errorf("upload demo file: %w", err)
			}
			sum := sha256.Sum256(content)
			d.Files = append(d.Files, DemoFile{UUID: u, Name: fmt.Sprintf("document-%02d.txt", i), SHA256: fmt.Sprintf("%x", sum), Size: len(content)})
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
INSERT INTO "mendixsystem$version" VALUES ('1.0.0.40', now());`, demoRole, strings.Join(rows, ",\n  "), d.Customers)
	if err := st.Postgres.Exec(ctx, demoDatabase, schema); err != nil {
		return nil, fmt.Errorf("seed the demo database: %w", err)
	}

	now := time.Now().UTC()
	permissions, _ := json.Marshal(map[string]any{"type": "namespace.permissions", "event_id": "demo-permissions-1",
		"occurred_at": now, "namespace": DemoNamespace, "principal_id": DemoUserID, "permissions": []string{"ManageAppsBackups", "StopApps"}})
	environment, _ := json.Marshal(map[string]any{"type": "environment.updated", "event_id": "demo-environment-1",
		"occurred_at": now, "namespace": DemoNamespace, "environment_id": DemoEnvironmentID, "app_id": "demo-app",
		"name": "acceptance", "state": "Stopped", "deployed": true, "deployment_package": "DemoApp_1.0.0.40.mda",
		"model_version": "1.0.0.40",
		"database":      map[string]any{"host": st.Postgres.Host, "port": st.Postgres.Port, "name": demoDatabase, "role": demoRole},
		"files":         map[string]any{"container": demoContainer, "prefix": ""}})
	if _, err := st.Host.Publish("environment-events", []funchost.PublishMessage{
		{Body: string(permissions), MessageID: "demo-permissions-1", ContentType: "application/json"},
		{Body: string(environment), MessageID: "demo-environment-1", ContentType: "application/json"},
	}); err != nil {
		return nil, fmt.Errorf("publish demo events: %w", err)
	}
	token, err := st.Token(DemoUserID, DemoUserName)
	if err != nil {
		return nil, err
	}
	if err := st.waitForEnvironment(ctx, token); err != nil {
		return nil, err
	}
	status, body, err := st.Call(ctx, token, "PUT", "/api/v1/namespaces/"+DemoNamespace+"/settings", `{"backups_enabled":true}`)
	if err != nil || status != http.StatusOK {
		return nil, fmt.Errorf("enable backups: %d %s %v", status, body, err)
	}
	return d, nil
}

func (st *Stack) waitForEnvironment(ctx context.Context, token string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		status, body, err := st.Call(ctx, token, "GET", "/api/v1/namespaces/"+DemoNamespace+"/environments", "")
		if err == nil && status == http.StatusOK && strings.Contains(body, DemoEnvironmentID) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the demo environment did not appear in the API (last: %d %s %v)", status, body, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
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
