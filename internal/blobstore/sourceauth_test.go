package blobstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
)

// TestSharedKeySASReadsOnlyItsBlob: the copy source a connection-string Store sends is a SAS that
// Azurite accepts for reading that one blob, until the time asked, and for nothing else.
func TestSharedKeySASReadsOnlyItsBlob(t *testing.T) {
	s := newStoreWith(t, Options{})
	ctx := t.Context()
	data := pattern(100)
	for _, name := range []string{"docs/a", "docs/b"} {
		if _, err := s.Client().UploadBuffer(ctx, "app-files", name, data, nil); err != nil {
			t.Fatal(err)
		}
	}
	until := time.Now().Add(time.Minute).UTC()
	src := s.Client().ServiceClient().NewContainerClient("app-files").NewBlobClient("docs/a")
	u, auth, err := s.source.copySource(ctx, src, true, until)
	if err != nil || auth != "" {
		t.Fatalf("got %q, %q, %v", u, auth, err)
	}
	do := func(method, rawURL string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, rawURL, strings.NewReader("new bytes"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("x-ms-blob-type", "BlockBlob")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, got := do(http.MethodGet, u); code != 200 || !bytes.Equal(got, data) {
		t.Errorf("GET with the SAS: %d, %d bytes", code, len(got))
	}
	if code, _ := do(http.MethodPut, u); code != 403 {
		t.Errorf("PUT with the SAS: %d, want 403", code)
	}
	if code, _ := do(http.MethodGet, strings.Replace(u, "docs%2Fa", "docs%2Fb", 1)); code != 403 {
		t.Errorf("GET of another blob with the SAS: %d, want 403", code)
	}
	q := mustParse(t, u).Query()
	if q.Get("sp") != "r" || q.Get("sr") != "b" || q.Get("se") != until.Format(sas.TimeFormat) {
		t.Errorf("SAS %v, want read-only on a blob until %s", q, until.Format(sas.TimeFormat))
	}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// recorded is one request the fake copy service received.
type recorded struct {
	method string
	url    *url.URL
	header http.Header
	body   string
}

// fakeCopyService answers what CopyFile sends to Azure, which Azurite cannot stand for with an Entra
// identity: user delegation keys, copies (the synchronous one succeeds, the asynchronous one is pending
// until its first status read) and the destination's properties (size bytes of MD5 sum).
type fakeCopyService struct {
	mu   sync.Mutex
	reqs []recorded
}

func (f *fakeCopyService) handler(size int, sum []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{r.Method, r.URL, r.Header.Clone(), string(body)})
		f.mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.URL.Query().Get("comp") == "userdelegationkey":
			w.Header().Set("Content-Type", "application/xml")
			io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?><UserDelegationKey><SignedOid>oid-1</SignedOid><SignedTid>tid-1</SignedTid>`+
				`<SignedStart>2026-12-01T00:00:00Z</SignedStart><SignedExpiry>2026-12-02T00:00:00Z</SignedExpiry><SignedService>b</SignedService>`+
				`<SignedVersion>2025-11-05</SignedVersion><Value>a2V5LWtleS1rZXkta2V5</Value></UserDelegationKey>`)
		case r.Method == http.MethodPut && r.Header.Get("x-ms-copy-source") != "":
			w.Header().Set("ETag", `"0xD"`)
			w.Header().Set("x-ms-copy-id", "copy-1")
			w.Header().Set("x-ms-copy-status", map[bool]string{true: "success", false: "pending"}[r.Header.Get("x-ms-requires-sync") == "true"])
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodHead:
			w.Header().Set("Content-Length", strconv.Itoa(size))
			w.Header().Set("Content-MD5", base64.StdEncoding.EncodeToString(sum))
			w.Header().Set("ETag", `"0xD"`)
			w.Header().Set("x-ms-copy-id", "copy-1")
			w.Header().Set("x-ms-copy-status", "success")
			w.Header().Set("x-ms-blob-type", "BlockBlob")
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	}
}

// copyRequest is the one request that started a copy.
func (f *fakeCopyService) copyRequest(t *testing.T) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var found []recorded
	for _, r := range f.reqs {
		if r.header.Get("x-ms-copy-source") != "" {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d copy requests, want 1", len(found))
	}
	return found[0]
}

// scopeCredential is an Entra credential that records the scopes it is asked for.
type scopeCredential struct {
	mu     sync.Mutex
	scopes []string
}

func (c *scopeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scopes = append(c.scopes, o.Scopes...)
	return azcore.AccessToken{Token: "token-1", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func newIdentityStore(t *testing.T, size int, sum []byte) (*Store, *fakeCopyService, *scopeCredential) {
	t.Helper()
	f := &fakeCopyService{}
	srv := newFakeStorage(t, true, f.handler(size, sum))
	cred := &scopeCredential{}
	s, err := New(srv.URL+"/devstoreaccount1", cred, "snapshots",
		Options{Retry: fastRetries, Transport: srv.Client(), SyncCopyLimit: 1 << 10, CopyPollMin: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s, f, cred
}

// TestIdentitySyncCopySendsABearerSourceAuthorization: with an Entra credential, Copy Blob From URL
// names the bare source URL and authorises it with the identity's Storage token in
// x-ms-copy-source-authorization, pinned to the listed ETag, for an absent destination. (Azure only;
// checked against a fake server.)
func TestIdentitySyncCopySendsABearerSourceAuthorization(t *testing.T) {
	sum := md5.Sum([]byte("x"))
	s, f, cred := newIdentityStore(t, 100, sum[:])
	res, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", CopyCheck{ETag: "0x1", Size: 100, MD5: sum[:]})
	if err != nil || res.Method != CopySync || res.Size != 100 || !bytes.Equal(res.ContentMD5, sum[:]) {
		t.Fatalf("got %+v, %v", res, err)
	}
	r := f.copyRequest(t)
	if want := "/devstoreaccount1/" + DefaultFileStoreContainer + "/store/a"; r.url.Path != want {
		t.Errorf("copied to %s, want %s in the file-store container", r.url.Path, want)
	}
	for h, want := range map[string]string{
		"x-ms-copy-source":               strings.TrimSuffix(s.Client().URL(), "/") + "/app-files/docs%2Fa",
		"x-ms-copy-source-authorization": "Bearer token-1",
		"x-ms-requires-sync":             "true",
		"x-ms-source-if-match":           `"0x1"`,
		"If-None-Match":                  "*",
		"x-ms-source-content-md5":        base64.StdEncoding.EncodeToString(sum[:]),
	} {
		if got := r.header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	for _, sc := range cred.scopes {
		if sc != storageScope {
			t.Errorf("a token for scope %q", sc)
		}
	}
}

// TestIdentityAsyncCopySendsAUserDelegationSAS: Copy Blob takes no x-ms-copy-source-authorization, so
// with an Entra credential its source carries a read-only user-delegation SAS on that blob, valid for
// AsyncCopyTimeout, from a delegation key that lasts as long. (Azure only; checked against a fake
// server, Azurite issues no delegation keys.)
func TestIdentityAsyncCopySendsAUserDelegationSAS(t *testing.T) {
	s, f, _ := newIdentityStore(t, 4096, md5.New().Sum(nil))
	before := time.Now().UTC()
	res, err := s.CopyFile(t.Context(), "app-files", "docs/a", "store/a", CopyCheck{ETag: `"0x1"`, Size: 4096})
	if err != nil || res.Method != CopyAsync || res.Size != 4096 {
		t.Fatalf("got %+v, %v", res, err)
	}
	r := f.copyRequest(t)
	if r.header.Get("x-ms-copy-source-authorization") != "" || r.header.Get("x-ms-requires-sync") != "" ||
		r.header.Get("x-ms-source-if-match") != `"0x1"` || r.header.Get("If-None-Match") != "*" {
		t.Errorf("copy headers %v", r.header)
	}
	src := mustParse(t, r.header.Get("x-ms-copy-source"))
	q := src.Query()
	if src.Scheme != "https" || src.Path != "/devstoreaccount1/app-files/docs/a" {
		t.Errorf("copy source %s, want the source blob", src.Redacted())
	}
	for k, want := range map[string]string{"sp": "r", "sr": "b", "spr": "https", "skoid": "oid-1", "sktid": "tid-1"} {
		if q.Get(k) != want {
			t.Errorf("SAS %s=%q, want %q", k, q.Get(k), want)
		}
	}
	se, err := time.Parse(sas.TimeFormat, q.Get("se"))
	lifetime := se.Sub(before)
	if err != nil || q.Get("sig") == "" || lifetime < DefaultAsyncCopyTimeout || lifetime > DefaultAsyncCopyTimeout+sasSkew+time.Minute {
		t.Errorf("SAS expiry %q (%s from now), signature %q: want a signed SAS for about %s", q.Get("se"), lifetime, q.Get("sig"), DefaultAsyncCopyTimeout)
	}
	var key *recorded
	for i := range f.reqs {
		if f.reqs[i].url.Query().Get("comp") == "userdelegationkey" {
			key = &f.reqs[i]
		}
	}
	if key == nil || !strings.Contains(key.body, "<Expiry>"+q.Get("se")+"</Expiry>") || key.header.Get("Authorization") != "Bearer token-1" {
		t.Errorf("delegation key request %+v, want one with the SAS's expiry, authorised by the identity", key)
	}
}
