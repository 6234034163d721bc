package blobstore

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/mxazure/backups/internal/backup"
)

// send makes one request with plain net/http, as a user's curl or browser would with a link.
func send(t *testing.T, method, rawURL string, body []byte, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, rawURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// listURL is the List Blobs request of the container of the blob link u, with u's SAS.
func listURL(t *testing.T, u string) string {
	t.Helper()
	p := mustParse(t, u)
	p.Path, p.RawPath = p.Path[:strings.Index(p.Path[len("/devstoreaccount1/"):], "/")+len("/devstoreaccount1/")], ""
	q := p.Query()
	q.Set("restype", "container")
	q.Set("comp", "list")
	p.RawQuery = q.Encode()
	return p.String()
}

const downloadPath = ".downloads/ns1/env/snap/arch/attempt-01.tar.gz"

// TestDownloadLinkReadsOnlyItsBlob: a download link is what Azure makes of a read-only service SAS on
// one blob: a GET with it is the blob, served with the Content-Disposition and Content-Type the link
// asks for (response-header overrides, rscd and rsct), and it writes, deletes, reads another blob and
// lists nothing. Azurite enforces the permissions, the resource and the signature like Azure; the
// query is checked too, as it is what Azure judges.
func TestDownloadLinkReadsOnlyItsBlob(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	data := pattern(5000)
	other := strings.Replace(downloadPath, "attempt-01", "attempt-02", 1)
	for _, p := range []string{downloadPath, other} {
		if _, err := s.Client().UploadBuffer(ctx, s.SnapshotsContainer(), p, data, nil); err != nil {
			t.Fatal(err)
		}
	}
	until := time.Now().Add(8 * time.Hour).UTC()
	u, err := s.DownloadLink(ctx, downloadPath, "app_2026-12-01.tar.gz", until)
	if err != nil {
		t.Fatal(err)
	}

	resp, got := send(t, http.MethodGet, u, nil, nil)
	if resp.StatusCode != 200 || !bytes.Equal(got, data) {
		t.Fatalf("GET with the link: %d, %d bytes", resp.StatusCode, len(got))
	}
	for h, want := range map[string]string{
		"Content-Disposition": `attachment; filename="app_2026-12-01.tar.gz"`,
		"Content-Type":        "application/gzip",
		"Content-Length":      strconv.Itoa(len(data)),
	} {
		if resp.Header.Get(h) != want {
			t.Errorf("%s: %q, want %q", h, resp.Header.Get(h), want)
		}
	}
	for _, c := range []struct{ method, url, what string }{
		{http.MethodPut, u, "PUT of the blob"},
		{http.MethodDelete, u, "DELETE of the blob"},
		{http.MethodGet, strings.Replace(u, "attempt-01", "attempt-02", 1), "GET of another blob"},
		{http.MethodGet, listURL(t, u), "listing the container"},
	} {
		if resp, _ := send(t, c.method, c.url, []byte("new bytes"), map[string]string{"x-ms-blob-type": "BlockBlob"}); resp.StatusCode != 403 {
			t.Errorf("%s with the link: %d, want 403", c.what, resp.StatusCode)
		}
	}
	if b, err := s.Client().DownloadStream(ctx, s.SnapshotsContainer(), downloadPath, nil); err != nil {
		t.Error(err)
	} else if got, _ := io.ReadAll(b.Body); !bytes.Equal(got, data) {
		t.Error("the blob changed")
	}

	q := mustParse(t, u).Query()
	for k, want := range map[string]string{
		"sp": "r", "sr": "b", "se": until.Format(sas.TimeFormat), "spr": "https,http", // Azurite is plain HTTP
		"rscd": `attachment; filename="app_2026-12-01.tar.gz"`, "rsct": "application/gzip",
	} {
		if q.Get(k) != want {
			t.Errorf("%s=%q, want %q", k, q.Get(k), want)
		}
	}
	st, err := time.Parse(sas.TimeFormat, q.Get("st"))
	if skew := time.Since(st); err != nil || skew < sasSkew-time.Minute || skew > sasSkew+time.Minute {
		t.Errorf("st=%q, want about %s ago", q.Get("st"), sasSkew)
	}
}

// TestDownloadLinkFileNames: a file name goes into a response header, so only plain names make a
// link; a name not of a .tar.gz is served as application/octet-stream.
func TestDownloadLinkFileNames(t *testing.T) {
	s := newStoreFor(t, "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;")
	until := time.Now().Add(time.Hour)
	for _, name := range []string{"", `a".tar.gz`, "a\r\nSet-Cookie: x", "a b", "a;b", "../a", "ä.backup", strings.Repeat("a", 201)} {
		if _, err := s.DownloadLink(t.Context(), downloadPath, name, until); backup.CodeOf(err) != backup.CodeInternal {
			t.Errorf("%q: got %v, want refused", name, err)
		}
	}
	u, err := s.DownloadLink(t.Context(), downloadPath, strings.Repeat("a", 193)+".backup", until)
	if err != nil {
		t.Fatal(err)
	}
	if q := mustParse(t, u).Query(); q.Get("rsct") != "application/octet-stream" || q.Get("rscd") != `attachment; filename="`+strings.Repeat("a", 193)+`.backup"` {
		t.Errorf("rsct=%q rscd=%q", q.Get("rsct"), q.Get("rscd"))
	}
}

// newStoreFor is a Store of a connection string whose endpoint need not answer: links are made
// without a request.
func newStoreFor(t *testing.T, connectionString string) *Store {
	t.Helper()
	s, err := NewFromConnectionString(connectionString, "snapshots", Options{Retry: fastRetries})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLinksNeedAnAccountKeyAndATimeAhead: a connection string with a SAS has no key to sign links
// with, and a link that would have expired already is not made.
func TestLinksNeedAnAccountKeyAndATimeAhead(t *testing.T) {
	s := newStoreFor(t, "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;SharedAccessSignature=sv=2025-11-05&sig=x")
	if _, err := s.UploadLink(t.Context(), "ns1/env/up.tar.gz", time.Now().Add(time.Hour)); backup.CodeOf(err) != backup.CodeInternal {
		t.Errorf("without an account key: got %v, want refused", err)
	}
	s = newStoreFor(t, "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;")
	if _, err := s.DownloadLink(t.Context(), downloadPath, "a.tar.gz", time.Now().Add(-time.Second)); backup.CodeOf(err) != backup.CodeInternal {
		t.Errorf("expired: got %v, want refused", err)
	}
}

// TestExpiredDownloadLinkIsRefused: past its se, Azure refuses a SAS (403); so does Azurite.
func TestExpiredDownloadLinkIsRefused(t *testing.T) {
	s := newStore(t)
	if _, err := s.Client().UploadBuffer(t.Context(), s.SnapshotsContainer(), downloadPath, pattern(10), nil); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(2 * time.Second)
	u, err := s.DownloadLink(t.Context(), downloadPath, "a.tar.gz", until)
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := send(t, http.MethodGet, u, nil, nil); resp.StatusCode != 200 {
		t.Fatalf("GET before expiry: %d", resp.StatusCode)
	}
	time.Sleep(time.Until(until) + time.Second)
	if resp, _ := send(t, http.MethodGet, u, nil, nil); resp.StatusCode != 403 {
		t.Errorf("GET after expiry: %d, want 403", resp.StatusCode)
	}
}

const uploadPath = "ns1/env/0a4c8f0e-7d3c-4d8e-9f2c-000000000001.tar.gz"

// TestUploadLinkWritesOnlyItsBlob: an upload link is what Azure makes of a create-and-write service
// SAS on one blob of the uploads container: Put Blob (curl) works, and so do Put Block and Put Block
// List (az storage blob upload, azcopy, for large files); reading the blob back, deleting it, listing
// the container, writing another blob or the same name in another container are refused (403). Azurite
// enforces these like Azure; the query is checked too.
func TestUploadLinkWritesOnlyItsBlob(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	until := time.Now().Add(24 * time.Hour).UTC()
	u, err := s.UploadLink(ctx, uploadPath, until)
	if err != nil {
		t.Fatal(err)
	}
	if p := mustParse(t, u).Path; p != "/devstoreaccount1/"+DefaultUploadsContainer+"/"+uploadPath {
		t.Errorf("link to %s, want the blob in the uploads container", p)
	}

	data := pattern(3000)
	if resp, b := send(t, http.MethodPut, u, data, map[string]string{"x-ms-blob-type": "BlockBlob"}); resp.StatusCode != 201 {
		t.Fatalf("Put Blob with the link: %d %s", resp.StatusCode, b)
	}
	if got, err := s.UploadProperties(ctx, uploadPath); err != nil || !got.Found || got.Size != 3000 {
		t.Errorf("after Put Blob: %+v, %v", got, err)
	}

	// Put Block twice, then Put Block List: the blob is the blocks, replacing the first upload.
	ids := []string{base64.StdEncoding.EncodeToString([]byte("block-1")), base64.StdEncoding.EncodeToString([]byte("block-2"))}
	for i, id := range ids {
		if resp, b := send(t, http.MethodPut, u+"&comp=block&blockid="+id, data[i*1500:(i+1)*1500], nil); resp.StatusCode != 201 {
			t.Fatalf("Put Block with the link: %d %s", resp.StatusCode, b)
		}
	}
	list := []byte(`<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>` + ids[1] + `</Latest><Latest>` + ids[0] + `</Latest></BlockList>`)
	if resp, b := send(t, http.MethodPut, u+"&comp=blocklist", list, nil); resp.StatusCode != 201 {
		t.Fatalf("Put Block List with the link: %d %s", resp.StatusCode, b)
	}
	r, err := s.Client().DownloadStream(ctx, s.UploadsContainer(), uploadPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r.Body)
	if want := append(append([]byte{}, data[1500:]...), data[:1500]...); !bytes.Equal(got, want) {
		t.Errorf("the blob is %d bytes unlike its blocks", len(got))
	}

	otherContainer := strings.Replace(u, "/"+DefaultUploadsContainer+"/", "/"+s.SnapshotsContainer()+"/", 1)
	for _, c := range []struct{ method, url, what string }{
		{http.MethodGet, u, "GET of the blob"},
		{http.MethodHead, u, "HEAD of the blob"},
		{http.MethodDelete, u, "DELETE of the blob"},
		{http.MethodGet, u + "&comp=blocklist", "Get Block List"},
		{http.MethodGet, listURL(t, u), "listing the container"},
		{http.MethodPut, strings.Replace(u, "000000000001", "000000000002", 1), "Put Blob of another blob"},
		{http.MethodPut, otherContainer, "Put Blob in the snapshots container"},
	} {
		if resp, _ := send(t, c.method, c.url, data, map[string]string{"x-ms-blob-type": "BlockBlob"}); resp.StatusCode != 403 {
			t.Errorf("%s with the link: %d, want 403", c.what, resp.StatusCode)
		}
	}
	if got, err := s.UploadProperties(ctx, uploadPath); err != nil || !got.Found {
		t.Errorf("after the refused DELETE: %+v, %v", got, err)
	}

	q := mustParse(t, u).Query()
	for k, want := range map[string]string{"sp": "cw", "sr": "b", "se": until.Format(sas.TimeFormat), "spr": "https,http", "rscd": "", "rsct": ""} {
		if q.Get(k) != want {
			t.Errorf("%s=%q, want %q", k, q.Get(k), want)
		}
	}
}

// keyRequests are the Get User Delegation Key requests the fake service received, with the expiry each
// asked for.
func keyRequests(t *testing.T, f *fakeCopyService) []time.Time {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, r := range f.reqs {
		if r.url.Query().Get("comp") != "userdelegationkey" {
			continue
		}
		var info struct{ Start, Expiry string }
		if err := xml.Unmarshal([]byte(r.body), &info); err != nil {
			t.Fatalf("key request %q: %v", r.body, err)
		}
		exp, err := time.Parse(sas.TimeFormat, info.Expiry)
		if err != nil || r.header.Get("Authorization") != "Bearer token-1" {
			t.Fatalf("key request %q, %v: want one authorised by the identity", r.body, r.header)
		}
		out = append(out, exp)
	}
	return out
}

// TestDelegationLinksShareAKey: with an Entra credential, links are user-delegation SASs (skoid, sktid,
// skt, ske, sks, skv: Azure checks the signature against the key they name), HTTPS only, from a
// delegation key that is fetched once and kept while it covers the links asked for, and fetched anew
// for a link it does not cover. (Azure only; checked against a fake server, Azurite issues no
// delegation keys.)
func TestDelegationLinksShareAKey(t *testing.T) {
	s, f, _ := newIdentityStore(t, 0, nil)
	ctx := t.Context()
	now := time.Now().UTC()
	d, err := s.DownloadLink(ctx, downloadPath, "a.tar.gz", now.Add(8*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	up, err := s.UploadLink(ctx, uploadPath, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	keys := keyRequests(t, f)
	if len(keys) != 1 {
		t.Fatalf("%d key requests for two links, want 1", len(keys))
	}
	if life := keys[0].Sub(now); life < maxKeyLifetime-sasSkew-time.Minute || life > maxKeyLifetime {
		t.Errorf("the key lasts %s, want about %s", life, maxKeyLifetime-sasSkew)
	}
	for link, want := range map[string]map[string]string{
		d:  {"sp": "r", "rscd": `attachment; filename="a.tar.gz"`, "rsct": "application/gzip"},
		up: {"sp": "cw", "rscd": "", "rsct": ""},
	} {
		u := mustParse(t, link)
		if u.Scheme != "https" {
			t.Errorf("link scheme %s", u.Scheme)
		}
		q := u.Query()
		for k, v := range map[string]string{"sr": "b", "spr": "https", "skoid": "oid-1", "sktid": "tid-1", "sks": "b", "skv": "2025-11-05",
			"skt": "2026-12-01T00:00:00Z", "ske": "2026-12-02T00:00:00Z"} {
			want[k] = v
		}
		for k, v := range want {
			if q.Get(k) != v {
				t.Errorf("%s: %s=%q, want %q", u.Path, k, q.Get(k), v)
			}
		}
		if q.Get("sig") == "" || strings.Contains(link, "a2V5LWtleS1rZXkta2V5") {
			t.Errorf("%s: signature %q, or the key in the link", u.Path, q.Get("sig"))
		}
	}
	if d := mustParse(t, d).Path; d != "/devstoreaccount1/snapshots/"+downloadPath {
		t.Errorf("download link to %s", d)
	}

	// Beyond the key: a new key, that lasts until the link does.
	long := now.Add(maxKeyLifetime - time.Minute).Truncate(time.Second)
	if _, err := s.UploadLink(ctx, uploadPath, long); err != nil {
		t.Fatal(err)
	}
	if keys = keyRequests(t, f); len(keys) != 2 || !keys[1].Equal(long) {
		t.Errorf("key requests until %v, want a second one until %s", keys, long)
	}
	// Longer than Azure lets a key last: refused, and no key asked for.
	if _, err := s.UploadLink(ctx, uploadPath, now.Add(maxKeyLifetime+time.Hour)); backup.CodeOf(err) != backup.CodeInternal {
		t.Errorf("a link for more than 7 days: %v, want refused", err)
	}
	if keys = keyRequests(t, f); len(keys) != 2 {
		t.Errorf("%d key requests, want still 2", len(keys))
	}
}

// TestDelegationLinksAskedTogetherShareOneFetch: links asked for at once wait for the one key request.
func TestDelegationLinksAskedTogetherShareOneFetch(t *testing.T) {
	s, f, _ := newIdentityStore(t, 0, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := s.DownloadLink(t.Context(), downloadPath, "a.tar.gz", time.Now().Add(time.Hour))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if keys := keyRequests(t, f); len(keys) != 1 {
		t.Errorf("%d key requests, want 1", len(keys))
	}
}

// TestDelegationLinkKeyFailureIsTransient: a key Azure does not give (503 here) is a transient error, and
// the next link asks again.
func TestDelegationLinkKeyFailureIsTransient(t *testing.T) {
	srv := newFakeStorage(t, true, answer503)
	s, err := New(srv.URL+"/devstoreaccount1", &scopeCredential{}, "snapshots", Options{Retry: fastRetries, Transport: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.DownloadLink(t.Context(), downloadPath, "a.tar.gz", time.Now().Add(time.Hour))
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeTransient || !strings.Contains(be.Message, "user delegation key") {
		t.Fatalf("got %v, want a transient error about the key", err)
	}
	before := srv.requests.Load()
	if _, err := s.UploadLink(t.Context(), uploadPath, time.Now().Add(time.Hour)); err == nil || srv.requests.Load() == before {
		t.Errorf("after a failed fetch: %v, %d requests; want another try", err, srv.requests.Load()-before)
	}
}
