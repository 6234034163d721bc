package api

import (
	"net/url"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

func TestArchiveAnswers(t *testing.T) {
	f := newFixture(t)
	base := "/api/v1/namespaces/ns-a/environments/" + envA + "/snapshots/" + snapA + "/archives"
	resp, body := f.do(t, manager, "GET", base+"/"+archA, "")
	if resp.StatusCode != 200 || body["state"] != "completed" || body["url_expires_at"] != "2026-11-20T16:00:00Z" || body["size_bytes"] != float64(1234) {
		t.Fatalf("completed archive: %d %v", resp.StatusCode, body)
	}
	link, err := url.Parse(body["url"].(string))
	if err != nil || link.Query().Get("rscd") != "files_and_database-2d1e5a77-202611200800.tar.gz" || link.Query().Get("sp") != "r" {
		t.Errorf("url %v: want the link the service minted for the archive's blob and file name", body["url"])
	}
	// A new request reuses the kept archive: completed at once, with its own link.
	resp, body = f.do(t, manager, "POST", base, `{}`)
	if resp.StatusCode != 202 || body["state"] != "completed" || body["url"] == nil || !strings.HasSuffix(resp.Header.Get("Location"), "/archives/"+body["archive_id"].(string)) {
		t.Fatalf("reuse: %d %v %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = f.do(t, manager, "POST", base, `{"data_type":"database_only"}`)
	if resp.StatusCode != 202 || body["state"] != "queued" || body["url"] != nil || body["file_name"] != "database-2d1e5a77-202611200800.backup" {
		t.Fatalf("a database-only download: %d %v", resp.StatusCode, body)
	}
	resp, body = f.do(t, manager, "GET", base, "")
	if list, _ := body["archives"].([]any); resp.StatusCode != 200 || len(list) != 3 {
		t.Fatalf("list: %d %v", resp.StatusCode, body)
	}
	for _, bad := range []string{`{"data_type":"files_only"}`, `{"kind":"full"}`, `[]`} {
		resp, body = f.do(t, manager, "POST", base, bad)
		wantProblem(t, resp, body, 400, backup.CodeInvalidParameters)
	}
	resp, body = f.do(t, manager, "GET", base+"/11111111-2222-3333-4444-555555555555", "")
	wantProblem(t, resp, body, 404, backup.CodeNotFound)
}

func TestUploadAnswers(t *testing.T) {
	f := newFixture(t)
	base := "/api/v1/namespaces/ns-a/environments/" + envA + "/uploads"
	resp, body := f.do(t, manager, "POST", base, `{"file_name":"cloud backup.tar.gz"}`)
	if resp.StatusCode != 201 || body["expires_at"] != "2026-11-21T08:00:00Z" || body["max_size_bytes"] != float64(1<<30) {
		t.Fatalf("upload link: %d %v", resp.StatusCode, body)
	}
	if u := body["upload_url"].(string); !strings.Contains(u, "sp=cw") {
		t.Errorf("upload_url %q is not the write-only link", u)
	}
	id := body["upload_id"].(string)
	complete := body["complete_url"].(string)
	if complete != base+"/"+id+"/complete" {
		t.Errorf("complete_url %q", complete)
	}
	resp, body = f.do(t, manager, "POST", complete, `{}`)
	wantProblem(t, resp, body, 409, backup.CodeInvalidState)
	if !strings.Contains(body["detail"].(string), "nothing was uploaded") {
		t.Errorf("detail %q does not say what to do", body["detail"])
	}
	// The seeded upload has its archive: complete makes an uploaded snapshot, twice the same one.
	resp, first := f.do(t, manager, "POST", base+"/"+uplA+"/complete", `{"comment":"from Mendix Cloud"}`)
	if resp.StatusCode != 202 || first["kind"] != "uploaded" || first["status"] != "Processing" || first["comment"] != "from Mendix Cloud" {
		t.Fatalf("complete: %d %v", resp.StatusCode, first)
	}
	resp, again := f.do(t, manager, "POST", base+"/"+uplA+"/complete", `{}`)
	if resp.StatusCode != 202 || again["snapshot_id"] != first["snapshot_id"] {
		t.Fatalf("second complete: %d %v, want snapshot %v", resp.StatusCode, again, first["snapshot_id"])
	}
	for _, bad := range []string{`{"file_name":"a\u0000b"}`, `{"name":"x"}`, `{"file_name":"` + strings.Repeat("a", 256) + `"}`} {
		resp, body = f.do(t, manager, "POST", base, bad)
		wantProblem(t, resp, body, 400, backup.CodeInvalidParameters)
	}
	resp, body = f.do(t, manager, "POST", base+"/11111111-2222-3333-4444-555555555555/complete", `{}`)
	wantProblem(t, resp, body, 404, backup.CodeNotFound)
}
