package azurite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/rs/zerolog"
)

// orphanHelperEnv makes the test binary start an Azurite, report it and wait to be killed, for
// TestKilledParentTakesAzuriteDown.
const orphanHelperEnv = "AZURITE_ORPHAN_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(orphanHelperEnv) == "1" {
		os.Exit(runOrphanHelper())
	}
	os.Exit(m.Run())
}

func runOrphanHelper() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := Start(ctx, Options{InMemory: true})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", a.proc.Pid(), a.BlobPort, a.QueuePort, a.TablePort, a.Dir)
	select {} // until killed
}

func TestBlobRoundTrip(t *testing.T) {
	t.Parallel()
	a := ForTest(t)
	want := bytes.Repeat([]byte("backup bytes "), 10000)
	uploadBlob(t, a, "snapshots", "env1/files.bin", want)
	if got := downloadBlob(t, a, "snapshots", "env1/files.bin"); !bytes.Equal(got, want) {
		t.Errorf("got %d bytes back, want the %d uploaded", len(got), len(want))
	}
}

func TestTableEntity(t *testing.T) {
	t.Parallel()
	a := ForTest(t)
	ctx := testContext(t)
	svc, err := aztables.NewServiceClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateTable(ctx, "operations", nil); err != nil {
		t.Fatalf("create table: %v", err)
	}
	table := svc.NewClient("operations")
	entity, err := json.Marshal(map[string]any{"PartitionKey": "env1", "RowKey": "op1", "Phase": "running"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := table.AddEntity(ctx, entity, nil); err != nil {
		t.Fatalf("add entity: %v", err)
	}
	resp, err := table.GetEntity(ctx, "env1", "op1", nil)
	if err != nil {
		t.Fatalf("get entity: %v", err)
	}
	var got struct{ Phase string }
	if err := json.Unmarshal(resp.Value, &got); err != nil {
		t.Fatal(err)
	}
	if got.Phase != "running" {
		t.Errorf("got Phase %q, want %q", got.Phase, "running")
	}
}

func TestServicesAnswerAsPinnedAzurite(t *testing.T) {
	t.Parallel()
	a := ForTest(t)
	root, err := FindRepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	versions, err := lockedVersions(root)
	if err != nil {
		t.Fatal(err)
	}
	version := versions[azuritePackage]
	tests := []struct{ name, url, wantServer string }{
		{"blob", a.BlobURL, "Azurite-Blob/" + version},
		{"queue", a.QueueURL, "Azurite-Queue/" + version},
		{"table", a.TableURL, "Azurite-Table/" + version},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, tt.url+"?comp=list", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Server"); got != tt.wantServer {
				t.Errorf("got Server %q, want %q", got, tt.wantServer)
			}
		})
	}
}

func TestStopClosesPortsAndRemovesDir(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	ctx := testContext(t)
	a, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Stop is idempotent: this cleanup only matters if the test fails early.
	t.Cleanup(func() { stop(t, a) })
	uploadBlob(t, a, "stop-test", "b", []byte("x"))
	if entries, err := os.ReadDir(a.Dir); err != nil || len(entries) == 0 {
		t.Fatalf("got %d entries in %s (error %v), want Azurite's files", len(entries), a.Dir, err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	assertPortsClosed(t, a.BlobPort, a.QueuePort, a.TablePort)
	if _, err := os.Stat(a.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got stat %s error %v, want not exist", a.Dir, err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Errorf("second stop: got %v, want nil", err)
	}
}

func TestGivenDirPersistsAcrossRestarts(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	ctx := testContext(t)
	dir := filepath.Join(t.TempDir(), "azurite")
	first, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, first) })
	uploadBlob(t, first, "keep", "blob.txt", []byte("still here"))
	if err := first.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	second, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, second) })
	if got := string(downloadBlob(t, second, "keep", "blob.txt")); got != "still here" {
		t.Errorf("got %q after restart, want %q", got, "still here")
	}
}

func TestInMemoryWritesNothing(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	ctx := testContext(t)
	dir := t.TempDir()
	a, err := Start(ctx, Options{Dir: dir, InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, a) })
	uploadBlob(t, a, "mem", "blob.txt", []byte("in memory"))
	if got := string(downloadBlob(t, a, "mem", "blob.txt")); got != "in memory" {
		t.Errorf("got %q, want %q", got, "in memory")
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("got %d entries in %s (first %q), want none", len(entries), dir, entries[0].Name())
	}
}

func TestTwoAtOnce(t *testing.T) {
	t.Parallel()
	a, b := ForTest(t), ForTest(t)
	if a.BlobPort == b.BlobPort || a.TablePort == b.TablePort || a.QueuePort == b.QueuePort {
		t.Fatalf("got shared ports: a %d/%d/%d, b %d/%d/%d",
			a.BlobPort, a.QueuePort, a.TablePort, b.BlobPort, b.QueuePort, b.TablePort)
	}
	uploadBlob(t, a, "only-in-a", "x", []byte("a"))
	client, err := azblob.NewClientFromConnectionString(b.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.DownloadStream(testContext(t), "only-in-a", "x", nil)
	if err == nil || !strings.Contains(err.Error(), "ContainerNotFound") {
		t.Errorf("got %v downloading a's blob from b, want ContainerNotFound", err)
	}
}

func TestConnectionString(t *testing.T) {
	t.Parallel()
	a := &Azurite{
		AccountName: DevAccountName, AccountKey: DevAccountKey,
		BlobURL:  "http://127.0.0.1:1001/devstoreaccount1",
		QueueURL: "http://127.0.0.1:1002/devstoreaccount1",
		TableURL: "http://127.0.0.1:1003/devstoreaccount1",
	}
	cs := a.ConnectionString()
	if !strings.HasSuffix(cs, ";") {
		t.Errorf("got %q, want a trailing ';'", cs)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(cs, ";"), ";") {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	tests := []struct{ key, want string }{
		{"DefaultEndpointsProtocol", "http"},
		{"AccountName", "devstoreaccount1"},
		{"AccountKey", DevAccountKey},
		{"BlobEndpoint", a.BlobURL},
		{"QueueEndpoint", a.QueueURL},
		{"TableEndpoint", a.TableURL},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got[tt.key] != tt.want {
				t.Errorf("got %s=%q, want %q", tt.key, got[tt.key], tt.want)
			}
		})
	}
	if len(got) != len(tests) {
		t.Errorf("got %d keys in %q, want %d", len(got), cs, len(tests))
	}
}

func TestFindRepoRoot(t *testing.T) {
	t.Parallel()
	top := t.TempDir()
	nested := filepath.Join(top, "repo", "internal", "pkg")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(top, "repo", "go.mod"), "module example.com/x\n")
	tests := []struct {
		name, from, want string
		wantErr          bool
	}{
		{"from nested dir", nested, filepath.Join(top, "repo"), false},
		{"from the root itself", filepath.Join(top, "repo"), filepath.Join(top, "repo"), false},
		{"no go.mod above", top, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FindRepoRoot(tt.from)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPinIsExactAndMatchesLock(t *testing.T) {
	t.Parallel()
	root, err := FindRepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		DevDependencies map[string]string `json:"devDependencies"`
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(root, "package.json")), &pkg); err != nil {
		t.Fatal(err)
	}
	locked, err := lockedVersions(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{azuritePackage, nodePackage} {
		if got := pkg.DevDependencies[name]; got != locked[name] {
			t.Errorf("got package.json %s %q, want exactly the locked %q", name, got, locked[name])
		}
	}
}

func TestInstalled(t *testing.T) {
	t.Parallel()
	want := map[string]string{azuritePackage: "3.36.0", nodePackage: "22.23.3"}
	tests := []struct {
		name          string
		node, script  bool
		azurite, rt   string
		wantInstalled bool
	}{
		{"pinned versions", true, true, "3.36.0", "22.23.3", true},
		{"other azurite", true, true, "3.35.0", "22.23.3", false},
		{"other node", true, true, "3.36.0", "20.19.0", false},
		{"no node binary", false, true, "3.36.0", "22.23.3", false},
		{"no azurite script", true, false, "3.36.0", "22.23.3", false},
		{"no azurite package", true, true, "", "22.23.3", false},
		{"no node package", true, true, "3.36.0", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			l := launcherIn(root)
			if tt.node {
				writeFile(t, l.Node, "#!/bin/sh\n")
			}
			if tt.script {
				writeFile(t, l.Script, "// azurite\n")
			}
			for name, version := range map[string]string{azuritePackage: tt.azurite, nodePackage: tt.rt} {
				if version != "" {
					writeFile(t, filepath.Join(root, "node_modules", name, "package.json"),
						`{"name":"`+name+`","version":"`+version+`"}`)
				}
			}
			if got := installed(root, l, want); got != tt.wantInstalled {
				t.Errorf("got installed %v, want %v", got, tt.wantInstalled)
			}
		})
	}
}

func TestEnsureInstalledRunsNpmCiOnceForConcurrentCallers(t *testing.T) {
	t.Parallel()
	repo, err := FindRepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, name := range []string{"package.json", "package-lock.json"} {
		writeFile(t, filepath.Join(root, name), string(readFile(t, filepath.Join(repo, name))))
	}
	var logs syncBuffer
	log := zerolog.New(&logs)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	runs, errs := make([]launcher, 3), make([]error, 3)
	for i := range runs {
		wg.Go(func() { runs[i], errs[i] = ensureInstalled(ctx, root, log) })
	}
	wg.Wait()
	for i := range runs {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if want := launcherIn(root); runs[i] != want {
			t.Errorf("caller %d: got %+v, want %+v", i, runs[i], want)
		}
	}
	if got := strings.Count(logs.String(), "installing azurite with npm ci"); got != 1 {
		t.Errorf("got %d npm ci runs, want 1", got)
	}
	want, _ := lockedVersions(root)
	cmd := runs[0].command("--version")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("azurite --version: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != want[azuritePackage] {
		t.Errorf("got azurite --version %q, want %q", got, want[azuritePackage])
	}
	out, err = exec.CommandContext(ctx, runs[0].Node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != "v"+want[nodePackage] {
		t.Errorf("got node --version %q, want v%s", got, want[nodePackage])
	}
}

func TestStartErrors(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		opts    Options
		wantErr string
	}{
		{"canceled context", canceled, Options{}, context.Canceled.Error()},
		{"root without lock file", testContext(t), Options{RepoRoot: t.TempDir()}, "package-lock.json"},
		{"given port taken", testContext(t), Options{InMemory: true, BlobPort: listen(t)}, "EADDRINUSE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Start(tt.ctx, tt.opts)
			if err == nil {
				stop(t, a)
				t.Fatalf("got no error, want one containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestKilledParentTakesAzuriteDown(t *testing.T) {
	skipIfShort(t)
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), orphanHelperEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := readLineWithin(stdout, 5*time.Minute)
	var pid, blob, queue, table int
	var dir string
	if err == nil {
		_, err = fmt.Sscanf(line, "ready %d %d %d %d %s", &pid, &blob, &queue, &table, &dir)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper said %q: %v", line, err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) }) // a killed helper cannot clean up
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitGone(t, pid, blob, queue, table)
}

// --- helpers ---

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func stop(t *testing.T, a *Azurite) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func uploadBlob(t *testing.T, a *Azurite, container, name string, data []byte) {
	t.Helper()
	ctx := testContext(t)
	client, err := azblob.NewClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateContainer(ctx, container, nil); err != nil {
		t.Fatalf("create container %s: %v", container, err)
	}
	if _, err := client.UploadBuffer(ctx, container, name, data, nil); err != nil {
		t.Fatalf("upload %s/%s: %v", container, name, err)
	}
}

func downloadBlob(t *testing.T, a *Azurite, container, name string) []byte {
	t.Helper()
	ctx := testContext(t)
	client, err := azblob.NewClientFromConnectionString(a.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.DownloadStream(ctx, container, name, nil)
	if err != nil {
		t.Fatalf("download %s/%s: %v", container, name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s/%s: %v", container, name, err)
	}
	return b
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
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

// listen holds a port on 127.0.0.1 until the test ends and returns it.
func listen(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func assertPortsClosed(t *testing.T, ports ...int) {
	t.Helper()
	for _, port := range ports {
		if portOpen(port) {
			t.Errorf("port %d still accepts connections", port)
		}
	}
}

func portOpen(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// waitGone waits until process pid has exited and none of ports accepts connections; it kills pid and
// fails the test if that takes more than 30 s.
func waitGone(t *testing.T, pid int, ports ...int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		open := slices.ContainsFunc(ports, portOpen)
		gone := processGone(pid)
		if gone && !open {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("30s after its parent was killed: got pid %d gone %v, ports %v open %v; want gone, closed",
				pid, gone, ports, open)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readLineWithin(r io.Reader, d time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		done <- result{strings.TrimSpace(line), err}
	}()
	select {
	case r := <-done:
		return r.line, r.err
	case <-time.After(d):
		return "", fmt.Errorf("no line within %s", d)
	}
}

// processGone reports whether pid has exited. A zombie nobody reaped counts as gone, but a zombie
// thread-group leader can still have live threads holding sockets: callers also check the ports.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')') // comm may contain spaces: the state follows the last ')'
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of several loggers.
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

// skipIfShort skips a test that starts a real Azurite: `go test -short` runs the unit tests only.
func skipIfShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: starts a real Azurite; run without -short")
	}
}
