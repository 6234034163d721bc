// Package consoletest drives the web console in real headless Chromium against the stack `make run`
// starts (Azurite, a throw-away PostgreSQL, the local issuer and the local Functions host running the
// real handler), as a user would: sign in, turn backups on, create, inspect, download, upload, restore,
// undo and delete backups, renew an expired session, and be refused without permission. Screenshots of
// the main states land in build/screenshots.
package consoletest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth/localissuer"
	"github.com/mxazure/backups/internal/dev/browser"
	"github.com/mxazure/backups/internal/dev/devstack/stack"
)

// startStack starts what `make run` starts, seeded with the same demo.
func startStack(t *testing.T) (*stack.Stack, *stack.Demo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, file, _, _ := runtime.Caller(0)
	app, err := stack.BuildApp(ctx, filepath.Join(filepath.Dir(file), "..", ".."))
	if err != nil {
		t.Fatalf("build the app: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(app) })
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stdout, NoColor: true, TimeFormat: time.TimeOnly}).With().Timestamp().Logger().Level(zerolog.WarnLevel)
	st, err := stack.Start(ctx, stack.Options{AppDir: app, Listen: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatalf("start the stack: %v", err)
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = st.Stop(stopCtx)
	})
	demo, err := st.SeedDemo(ctx)
	if err != nil {
		t.Fatalf("seed the demo: %v", err)
	}
	return st, demo
}

// page is the browser with the helpers the steps share.
type page struct {
	t *testing.T
	b *browser.Browser
}

func (p *page) run(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.b.Context(), time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.shot("failure")
		p.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into out (nil: ignore it).
func (p *page) eval(expr string, out any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.b.Context(), time.Minute)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err == nil && out != nil {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		p.shot("failure")
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
}

// waitFor polls a JavaScript condition until it is true.
func (p *page) waitFor(what, cond string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(p.b.Context(), 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf("Boolean(%s)", cond)))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			text, _ := chromedp.Run(p.b.Context(), chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 3000) : ""`))
			p.shot("failure")
			p.t.Fatalf("waiting for %s (%s): not after %s (err %v). The page shows:\n%s", what, cond, timeout, err, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *page) text(selector string) string {
	p.t.Helper()
	var s string
	p.eval(fmt.Sprintf(`(document.querySelector(%q) || {innerText: ""}).innerText`, selector), &s)
	return s
}

func (p *page) click(selector string) {
	p.t.Helper()
	p.waitFor("clickable "+selector, fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e && !e.disabled && e.offsetParent !== null; })()`, selector), 30*time.Second)
	p.run(chromedp.Click(chromedp.CSS(selector)))
}

// clickText clicks the visible, enabled button (or link) inside scope whose text is text.
func (p *page) clickText(scope, text string) {
	p.t.Helper()
	find := fmt.Sprintf(`[...document.querySelectorAll(%q)].find((e) => e.innerText.trim() === %q && !e.disabled && e.offsetParent !== null)`,
		scope+" button, "+scope+" a", text)
	p.waitFor(fmt.Sprintf("%q in %s", text, scope), find, 30*time.Second)
	// Mark it, then click it with real input events (a popup needs a user gesture).
	p.eval(fmt.Sprintf(`(() => { document.querySelectorAll("[data-test-target]").forEach((e) => e.removeAttribute("data-test-target")); %s.setAttribute("data-test-target", "1"); return true; })()`, find), nil)
	p.run(chromedp.Click(chromedp.CSS(`[data-test-target="1"]`)))
}

// snapshotOption opens a snapshot's More Options menu and picks item.
func (p *page) snapshotOption(id, item string) {
	p.t.Helper()
	p.click(fmt.Sprintf(`tr[data-snapshot-id=%q] button[aria-haspopup="menu"]`, id))
	p.clickText(fmt.Sprintf(`tr[data-snapshot-id=%q] [role="menu"]`, id), item)
}

func (p *page) waitSnapshot(id, status string, timeout time.Duration) {
	p.t.Helper()
	p.waitFor("snapshot "+id+" "+status, fmt.Sprintf(`(document.querySelector('tr[data-snapshot-id=%q]') || {dataset: {}}).dataset.status === %q`, id, status), timeout)
}

func (p *page) closeDialog() {
	p.t.Helper()
	p.clickText("#dialog .actions", "Close")
	p.waitFor("the dialog to close", `!document.getElementById("dialog").open`, 10*time.Second)
}

func (p *page) shot(name string) {
	if path, err := p.b.Screenshot(name); err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
	} else {
		p.t.Logf("screenshot %s", path)
	}
}

// accessible runs axe-core on the page as it is and fails on serious or critical violations.
func (p *page) accessible(state string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.b.Context(), time.Minute)
	defer cancel()
	vs, err := p.b.Axe(ctx)
	if err != nil {
		p.t.Fatalf("axe on %s: %v", state, err)
	}
	if serious := browser.Serious(vs); len(serious) > 0 {
		p.t.Errorf("axe on %s: serious violations:\n%s", state, serious)
	} else if len(vs) > 0 {
		p.t.Logf("axe on %s: no serious violation; these others:\n%s", state, browser.Violations(vs))
	} else {
		p.t.Logf("axe on %s: no violation", state)
	}
}

func customers(t *testing.T, st *stack.Stack, db string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, st.Postgres.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM "myfirstmodule$customer"`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// tarEntries lists a .tar.gz's entries.
func tarEntries(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s is not gzip: %v", path, err)
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(h.Name, "./")] = b
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func apiJSON(t *testing.T, st *stack.Stack, method, path, body string) map[string]any {
	t.Helper()
	tok, err := st.Token(stack.DemoUserID, stack.DemoUserName)
	if err != nil {
		t.Fatal(err)
	}
	status, raw, err := st.Call(context.Background(), tok, method, path, body)
	if err != nil || status >= 300 {
		t.Fatalf("%s %s: %d %s %v", method, path, status, raw, err)
	}
	var out map[string]any
	_ = json.Unmarshal([]byte(raw), &out)
	return out
}

func TestConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("the console's browser test needs Chromium, PostgreSQL and Azurite; not in -short")
	}
	st, demo := startStack(t)
	downloads := t.TempDir()
	b, err := browser.New(context.Background(), browser.Options{Width: 1280, Height: 900, DownloadDir: downloads, Logf: t.Logf})
	if err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	t.Cleanup(b.Close)
	p := &page{t: t, b: b}
	ns := "/api/v1/namespaces/" + stack.DemoNamespace
	envAPI := ns + "/environments/" + demo.EnvironmentID

	t.Log("sign in: the console sends the browser to the issuer and back (authorization code with PKCE)")
	p.run(chromedp.Navigate(st.ConsoleURL()))
	p.waitFor("the page after sign-in", `document.getElementById("environment")`, time.Minute)
	if got := p.text("#user-name"); got != "Signed in as "+stack.DemoUserName {
		t.Errorf("user shown %q", got)
	}
	var stored string
	p.eval(`JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie`, &stored)
	if strings.Contains(stored, "eyJ") { // every JWT starts so
		t.Errorf("a token was stored in the browser: %s", stored)
	}
	var href string
	p.eval(`location.href`, &href)
	if strings.Contains(href, "code=") || !strings.Contains(href, "namespace=demo") {
		t.Errorf("after sign-in the page is at %s: the code must be gone, the namespace kept", href)
	}

	t.Log("turn backups off with the switch, after a confirmation")
	p.waitFor("backups on, as the demo is seeded", `document.getElementById("backups-enabled").checked`, 30*time.Second)
	p.click("#backups-enabled")
	p.waitFor("the confirmation", `document.getElementById("backups-off-confirm")`, 10*time.Second)
	if !strings.Contains(p.text("#dialog"), "existing backups are kept") {
		t.Errorf("the confirmation says %q", p.text("#dialog"))
	}
	p.clickText("#dialog .actions", "Cancel")
	p.waitFor("the switch still on after Cancel", `!document.getElementById("dialog").open && document.getElementById("backups-enabled").checked`, 10*time.Second)
	if got := apiJSON(t, st, "GET", ns+"/settings", ""); got["backups_enabled"] != true {
		t.Fatalf("Cancel turned backups off: %v", got)
	}
	p.click("#backups-enabled")
	p.click("#backups-off-confirm")

	t.Log("backups are off: the page offers Try new Backup and Restore, and Create Backup says why not")
	p.waitFor("the offer to turn backups on", `!document.getElementById("enable-backups").hidden`, 30*time.Second)
	if got := apiJSON(t, st, "GET", ns+"/settings", ""); got["backups_enabled"] != false {
		t.Errorf("settings after turning backups off: %v", got)
	}
	p.waitFor("Create Backup disabled", `document.getElementById("create-backup").disabled`, 10*time.Second)
	if reason := p.text("#create-reason"); !strings.Contains(reason, "not enabled") && !strings.Contains(reason, "enable") {
		t.Errorf("reason shown while backups are off: %q", reason)
	}
	p.shot("01-backups-off")
	p.click("#enable-backups-button")
	p.waitFor("backups on", `document.getElementById("enable-backups").hidden && document.getElementById("backups-enabled").checked`, 30*time.Second)
	p.waitFor("Create Backup enabled", `!document.getElementById("create-backup").disabled`, 30*time.Second)
	if got := apiJSON(t, st, "GET", ns+"/settings", ""); got["backups_enabled"] != true || got["updated_by"] != stack.DemoUserID {
		t.Errorf("settings after the switch: %v", got)
	}

	t.Log("create a backup with a comment and watch it finish")
	// Record every status the rows show, to see the list update by itself while the backup runs.
	p.eval(`(() => { window.seenStatuses = [];
		new MutationObserver(() => document.querySelectorAll("#snapshots tbody tr").forEach((tr) => {
			const s = tr.dataset.status + (tr.querySelector("progress") ? "+progress" : "");
			if (window.seenStatuses[window.seenStatuses.length - 1] !== s) window.seenStatuses.push(s);
		})).observe(document.querySelector("#snapshots tbody"), {subtree: true, childList: true, attributes: true});
		return true; })()`, nil)
	p.click("#create-backup")
	p.run(chromedp.SendKeys(chromedp.CSS("#backup-comment"), "before the upgrade"))
	p.click("#create-backup-confirm")
	p.waitFor("the new backup's row", `document.querySelector("#snapshots tbody tr")`, 30*time.Second)
	var manual string
	p.eval(`document.querySelector("#snapshots tbody tr").dataset.snapshotId`, &manual)
	p.waitFor("Create Backup disabled while it runs", `document.getElementById("create-backup").disabled || document.querySelector("#snapshots tbody tr").dataset.status === "Finished"`, 10*time.Second)
	p.waitSnapshot(manual, "Finished", 2*time.Minute)
	p.waitFor("Create Backup enabled again", `!document.getElementById("create-backup").disabled`, 30*time.Second)
	var seen []string
	p.eval(`window.seenStatuses`, &seen)
	if len(seen) < 2 || seen[0] != "Processing+progress" || seen[len(seen)-1] != "Finished" {
		t.Errorf("the row's status went %v, want Processing with its progress, then Finished, without a reload", seen)
	}
	p.shot("02-backups")
	p.accessible("the main page")

	t.Log("details")
	p.snapshotOption(manual, "Details")
	p.waitFor("the details", `document.getElementById("snapshot-details")`, 30*time.Second)
	details := p.text("#snapshot-details")
	snap := apiJSON(t, st, "GET", envAPI+"/snapshots/"+manual, "")
	for _, want := range []string{"Finished", manual, "DemoApp_1.0.0.40.mda", "before the upgrade", "Manual", snap["sha256"].(string), "11 (", "has no blob"} {
		if !strings.Contains(details, want) {
			t.Errorf("details lack %q:\n%s", want, details)
		}
	}
	p.shot("03-details")
	p.accessible("the details dialog")
	p.closeDialog()

	t.Log("download both kinds and check the files")
	p.snapshotOption(manual, "Download")
	var full string
	for _, kind := range []struct{ dataType, label string }{{"files_and_database", "Full snapshot (database and files)"}, {"database_only", "Database only"}} {
		row := "#download-" + kind.dataType
		p.clickText(row, "Start")
		p.waitFor(kind.dataType+" ready", fmt.Sprintf(`document.querySelector(%q)`, row+" a.button"), 2*time.Minute)
		p.clickText(row, "Show URL")
		var shown, link string
		p.eval(fmt.Sprintf(`document.querySelector(%q).value`, row+" input"), &shown)
		p.eval(fmt.Sprintf(`document.querySelector(%q).href`, row+" a.button"), &link)
		if shown != link || !strings.Contains(shown, "sig=") {
			t.Errorf("%s: Show URL shows %q, the link is %q", kind.dataType, shown, link)
		}
		p.clickText(row, "Download")
		ctx, cancel := context.WithTimeout(b.Context(), 2*time.Minute)
		d, err := b.WaitDownload(ctx, 2*time.Minute)
		cancel()
		if err != nil {
			t.Fatalf("%s download: %v", kind.dataType, err)
		}
		archives := apiJSON(t, st, "GET", envAPI+"/snapshots/"+manual+"/archives", "")["archives"].([]any)
		var want map[string]any
		for _, a := range archives {
			if m := a.(map[string]any); m["data_type"] == kind.dataType {
				want = m
			}
		}
		if d.SuggestedName != want["file_name"] || sha256File(t, d.Path) != want["sha256"] {
			t.Errorf("%s: downloaded %s (%s), want %s with SHA-256 %s", kind.dataType, d.SuggestedName, d.Path, want["file_name"], want["sha256"])
		}
		if kind.dataType == "files_and_database" {
			full = d.Path
			entries := tarEntries(t, d.Path)
			if _, ok := entries[".metadata"]; !ok {
				t.Errorf("the full archive has no .metadata")
			}
			if !bytes.HasPrefix(entries["db/db.backup"], []byte("PGDMP")) {
				t.Errorf("the full archive's db/db.backup is not a custom-format dump")
			}
			for _, f := range demo.Files {
				name := "tree/" + f.UUID[0:2] + "/" + f.UUID[2:4] + "/" + f.UUID
				sum := sha256.Sum256(entries[name])
				if hex.EncodeToString(sum[:]) != f.SHA256 {
					t.Errorf("the full archive's %s is not the file document's content", name)
				}
			}
		} else {
			dump, err := os.ReadFile(d.Path)
			if err != nil || !bytes.HasPrefix(dump, []byte("PGDMP")) {
				t.Errorf("the database-only download is not a custom-format dump (%v)", err)
			}
		}
	}
	p.shot("04-download")
	p.closeDialog()

	t.Log("upload the downloaded archive: it becomes a Finished backup")
	uploaded := p.upload(full, "from the download")
	if !strings.Contains(p.text("#upload-result"), "Finished") {
		t.Errorf("upload result: %q", p.text("#upload-result"))
	}
	p.shot("05-upload-finished")
	p.closeDialog()
	p.waitSnapshot(uploaded, "Finished", 30*time.Second)

	t.Log("upload a broken (truncated) archive: it is refused with the reason")
	raw, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(t.TempDir(), "broken.tar.gz")
	if err := os.WriteFile(broken, raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	refused := p.upload(broken, "cut in half")
	if got := p.text("#upload-result"); !strings.Contains(got, "Failed") || !strings.Contains(got, "truncated") {
		t.Errorf("upload of a truncated archive: %q", got)
	}
	p.shot("06-upload-refused")
	p.closeDialog()
	p.waitSnapshot(refused, "Failed", 30*time.Second)

	t.Log("restore into the second environment: the model-version warning, progress, FINISHED")
	before := customers(t, st, demo.TestDatabase)
	p.snapshotOption(manual, "Restore")
	p.run(chromedp.SetValue(chromedp.CSS("#restore-target"), demo.TestEnvironmentID))
	p.eval(`document.getElementById("restore-target").dispatchEvent(new Event("change")), true`, nil)
	p.waitFor("the model-version warning", `document.getElementById("model-warning")`, 10*time.Second)
	if w := p.text("#model-warning"); !strings.Contains(w, "1.0.0.40") || !strings.Contains(w, "1.0.0.38") {
		t.Errorf("model-version warning: %q", w)
	}
	if n := p.text("#restore-notes"); !strings.Contains(n, "Stop the app") {
		t.Errorf("no reminder to stop the app: %q", n)
	}
	p.shot("07-restore")
	p.click("#restore-confirm")
	p.waitFor("the restore's outcome", `document.querySelector("#restore-status .outcome")`, 3*time.Minute)
	if got := p.text("#restore-status"); !strings.Contains(got, "FINISHED") {
		t.Fatalf("restore: %q", got)
	}
	if after := customers(t, st, demo.TestDatabase); after != demo.Customers || after == before {
		t.Errorf("the test environment has %d customers after the restore, want the demo's %d (was %d)", after, demo.Customers, before)
	}
	p.shot("08-restore-finished")

	t.Log("undo it")
	p.clickText("#dialog .actions", "Undo")
	p.waitFor("the undo's outcome", `(document.querySelector("#restore-status .outcome") || {innerText: ""}).innerText.includes("undone") || (document.querySelector("#restore-status .outcome") || {innerText: ""}).innerText.includes("failed")`, 3*time.Minute)
	if got := p.text("#restore-status"); !strings.Contains(got, "FINISHED") {
		t.Fatalf("undo: %q", got)
	}
	if after := customers(t, st, demo.TestDatabase); after != before {
		t.Errorf("the test environment has %d customers after the undo, want %d as before the restore", after, before)
	}
	p.closeDialog()

	t.Log("an error from the API is shown as its title and sentence: a restore into a running app")
	if err := st.SetDemoState(context.Background(), demo.TestEnvironmentID, "Running"); err != nil {
		t.Fatal(err)
	}
	p.run(chromedp.Reload())
	p.waitFor("the page again", fmt.Sprintf(`document.querySelector('tr[data-snapshot-id=%q]')`, manual), time.Minute)
	p.snapshotOption(manual, "Restore")
	p.run(chromedp.SetValue(chromedp.CSS("#restore-target"), demo.TestEnvironmentID))
	p.eval(`document.getElementById("restore-target").dispatchEvent(new Event("change")), true`, nil)
	if n := p.text("#restore-notes"); !strings.Contains(n, "test is Running") {
		t.Errorf("no warning that the target runs: %q", n)
	}
	p.click("#restore-confirm")
	p.waitFor("the refusal", `document.querySelector("#dialog .problem")`, 30*time.Second)
	if got := p.text("#dialog .problem"); !strings.Contains(got, "Invalid state") || !strings.Contains(got, "stop the app first") || strings.ContainsAny(got, "{}") {
		t.Errorf("the refusal shows %q, want the problem's title and detail", got)
	}
	p.shot("09-restore-refused")
	p.clickText("#dialog .actions", "Cancel")
	if err := st.SetDemoState(context.Background(), demo.TestEnvironmentID, "Stopped"); err != nil {
		t.Fatal(err)
	}

	t.Log("the target's activity log shows the restore FINISHED and the undo")
	p.run(chromedp.SetValue(chromedp.CSS("#environment"), demo.TestEnvironmentID))
	p.eval(`document.getElementById("environment").dispatchEvent(new Event("change")), true`, nil)
	p.waitFor("the test environment's activity", `[...document.querySelectorAll("#activity tbody tr")].some((tr) => tr.innerText.includes("Restore") && tr.innerText.includes("FINISHED"))`, 30*time.Second)
	p.waitFor("the undo in its activity", `[...document.querySelectorAll("#activity tbody tr")].some((tr) => tr.innerText.includes("Undo") && tr.innerText.includes("FINISHED"))`, 30*time.Second)
	p.waitFor("the restore in its restore list, undone", `[...document.querySelectorAll("#restores tbody tr")].some((tr) => tr.dataset.undoState === "completed")`, 30*time.Second)
	p.shot("10-activity")
	p.run(chromedp.SetValue(chromedp.CSS("#environment"), demo.EnvironmentID))
	p.eval(`document.getElementById("environment").dispatchEvent(new Event("change")), true`, nil)
	p.waitFor("the demo environment's backups", fmt.Sprintf(`document.querySelector('tr[data-snapshot-id=%q]')`, manual), 30*time.Second)

	t.Log("delete the refused upload, with confirmation")
	p.snapshotOption(refused, "Delete")
	p.waitFor("the confirmation", `document.getElementById("delete-confirm")`, 10*time.Second)
	p.click("#delete-confirm")
	p.waitFor("the row gone", fmt.Sprintf(`!document.querySelector('tr[data-snapshot-id=%q]')`, refused), 30*time.Second)
	status, _, _ := st.Call(context.Background(), mustToken(t, st), "GET", envAPI+"/snapshots/"+refused, "")
	if status != 404 {
		t.Errorf("the deleted snapshot answers %d, want 404", status)
	}

	p.waitFor("two backups listed", `document.querySelectorAll("#snapshots tbody tr").length === 2`, 10*time.Second)
	p.waitFor("the messages gone", `document.querySelectorAll(".toast").length === 0`, 10*time.Second)
	p.shot("11-backups")

	t.Log("an expired session asks to sign in again and keeps the page")
	// A short session: the page renews 5 s before the token's end, so 20 s leave it 15 s to load.
	const short = 20 * time.Second
	st.Issuer.SetAccessTokenTTL(short)
	signedIn := time.Now()
	p.run(chromedp.Reload())
	p.waitFor("the page after a new sign-in", fmt.Sprintf(`document.querySelector('tr[data-snapshot-id=%q]')`, manual), time.Minute)
	st.Issuer.SetAccessTokenTTL(time.Hour)
	time.Sleep(time.Until(signedIn.Add(short + time.Second)))
	p.snapshotOption(uploaded, "Details")
	p.waitFor("the session dialog", `document.getElementById("session-dialog").open`, 30*time.Second)
	p.waitFor("the page still showing its backups", fmt.Sprintf(`document.querySelector('tr[data-snapshot-id=%q]')`, manual), time.Second)
	p.shot("12-session-expired")
	p.clickText("#session-dialog", "Sign in again")
	p.waitFor("the session renewed", `!document.getElementById("session-dialog").open`, time.Minute)
	p.waitFor("the details that waited", `document.getElementById("snapshot-details")`, 30*time.Second)
	if got := p.text("#snapshot-details"); !strings.Contains(got, uploaded) || !strings.Contains(got, "Uploaded") {
		t.Errorf("details after renewing the session: %q", got)
	}
	p.closeDialog()

	t.Log("a narrow screen (390 px)")
	if err := b.SetViewport(390, 844); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the layout at 390 px", `window.innerWidth === 390`, 10*time.Second)
	var overflow int
	p.eval(`document.documentElement.scrollWidth - window.innerWidth`, &overflow)
	if overflow > 0 {
		t.Errorf("at 390 px the page is %d px wider than the screen", overflow)
	}
	p.shot("13-narrow")
	p.accessible("the page at 390 px")
	if err := b.SetViewport(1280, 900); err != nil {
		t.Fatal(err)
	}

	t.Log("an issuer that issues tokens for another audience: the page says so instead of asking to sign in again")
	wrong := st.ConsoleClient()
	wrong.Audience = "api://another-api"
	st.Issuer.RegisterClient(wrong)
	p.run(chromedp.Reload())
	p.waitFor("the refusal of the sign-in", `document.querySelector("#view .page-message")`, time.Minute)
	if got := p.text("#view"); !strings.Contains(got, "does not accept your sign-in") || !strings.Contains(got, "Token audience does not match.") ||
		!strings.Contains(got, "CONSOLE_SCOPES") {
		t.Errorf("with tokens for another audience the page shows %q", got)
	}
	var dialogOpen bool
	p.eval(`document.getElementById("session-dialog").open`, &dialogOpen)
	if dialogOpen {
		t.Errorf("a freshly issued token that the service refuses opened the session dialog")
	}
	p.shot("14-wrong-audience")
	st.Issuer.RegisterClient(st.ConsoleClient())

	t.Log("a user without permission sees a clear no-access page")
	st.Issuer.SetSignInUser(localissuer.User{Subject: "7f000000-0000-4000-8000-0000000000aa", ObjectID: "7f000000-0000-4000-8000-0000000000aa", Name: "Guest User"})
	p.run(chromedp.Reload())
	p.waitFor("the no-access page", `document.getElementById("no-access")`, time.Minute)
	if got := p.text("#no-access"); !strings.Contains(got, "No access") || !strings.Contains(got, "Manage Apps Backups") {
		t.Errorf("no-access page: %q", got)
	}
	p.shot("15-no-access")
	p.accessible("the no-access page")

	for _, e := range b.ConsoleErrors() {
		// The refusals the test caused on purpose (tokens for another audience, no access, a restore into
		// a running app) are logged by Chromium as failed loads; anything else (an exception, a blocked
		// script or connection) is a fault of the page.
		if strings.Contains(e, "status of 401") || strings.Contains(e, "status of 403") || strings.Contains(e, "status of 409") {
			continue
		}
		t.Errorf("the page logged an error: %s", e)
	}
}

func mustToken(t *testing.T, st *stack.Stack) string {
	t.Helper()
	tok, err := st.Token(stack.DemoUserID, stack.DemoUserName)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// upload uploads an archive through the Upload Backup dialog and waits for its outcome; it returns the
// new snapshot's id.
func (p *page) upload(path, comment string) string {
	p.t.Helper()
	var before []string
	p.eval(`[...document.querySelectorAll("#snapshots tbody tr")].map((tr) => tr.dataset.snapshotId)`, &before)
	p.click("#upload-backup")
	p.run(chromedp.SetUploadFiles(chromedp.CSS("#upload-file"), []string{path}))
	p.run(chromedp.SendKeys(chromedp.CSS("#upload-comment"), comment))
	p.click("#upload-confirm")
	p.waitFor("the upload's outcome", `document.getElementById("upload-result")`, 3*time.Minute)
	var id string
	seen, _ := json.Marshal(before)
	p.waitFor("the uploaded backup's row", fmt.Sprintf(`[...document.querySelectorAll("#snapshots tbody tr")].some((tr) => !%s.includes(tr.dataset.snapshotId))`, seen), 30*time.Second)
	p.eval(fmt.Sprintf(`[...document.querySelectorAll("#snapshots tbody tr")].find((tr) => !%s.includes(tr.dataset.snapshotId)).dataset.snapshotId`, seen), &id)
	return id
}
