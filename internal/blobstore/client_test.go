package blobstore

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/mxazure/backups/internal/backup"
)

// fakeStorage is an HTTP server standing in for Blob Storage; it counts requests.
type fakeStorage struct {
	*httptest.Server
	requests atomic.Int64
}

func newFakeStorage(t *testing.T, tls bool, h http.HandlerFunc) *fakeStorage {
	f := &fakeStorage{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		h(w, r)
	})
	if tls {
		f.Server = httptest.NewTLSServer(handler)
	} else {
		f.Server = httptest.NewServer(handler)
	}
	t.Cleanup(f.Close)
	return f
}

func (f *fakeStorage) connectionString() string {
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=" + f.URL + "/devstoreaccount1;"
}

func answer503(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-error-code", "ServerBusy")
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, `<?xml version="1.0"?><Error><Code>ServerBusy</Code><Message>The server is busy. RequestId:1 Time:2026-11-24T01:00:00Z</Message></Error>`)
}

// fastRetries keeps the SDK's default count of tries but not its pauses.
var fastRetries = policy.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond}

// TestConstructorsSetTheRetryPolicy: both constructors give requests MaxRetries retries (MaxRetries+1
// tries against a server that always answers 503), and the error is transient with a message for users
// that names neither the URL nor the response.
func TestConstructorsSetTheRetryPolicy(t *testing.T) {
	plain := newFakeStorage(t, false, answer503)
	fromConn, err := NewFromConnectionString(plain.connectionString(), "snapshots", Options{Retry: fastRetries})
	if err != nil {
		t.Fatal(err)
	}
	tls := newFakeStorage(t, true, answer503)
	withCred, err := New(tls.URL+"/devstoreaccount1", fakeCredential{}, "snapshots", Options{Retry: fastRetries, Transport: tls.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if want := (policy.RetryOptions{MaxRetries: MaxRetries, TryTimeout: TryTimeout, RetryDelay: RetryDelay, MaxRetryDelay: MaxRetryDelay}); !equalRetry(options(nil).Retry, want) {
		t.Errorf("default retry options %+v, want %+v", options(nil).Retry, want)
	}
	for name, c := range map[string]struct {
		s   *Store
		srv *fakeStorage
	}{"NewFromConnectionString": {fromConn, plain}, "New": {withCred, tls}} {
		_, _, _, err := c.s.OpenFile(t.Context(), "app-files", "docs/a")
		if got := c.srv.requests.Load(); got != MaxRetries+1 {
			t.Errorf("%s: %d tries, want %d", name, got, MaxRetries+1)
		}
		var be *backup.Error
		if !errors.As(err, &be) || be.Code != backup.CodeTransient {
			t.Fatalf("%s: got %v, want a transient *backup.Error", name, err)
		}
		if strings.Contains(be.Message, "http") || strings.Contains(be.Message, "127.0.0.1") || strings.Contains(be.Message, "RequestId") {
			t.Errorf("%s: the message for users shows the request or the response: %q", name, be.Message)
		}
		if !strings.Contains(be.Message, "503 ServerBusy") || !strings.Contains(be.Message, "docs/a") {
			t.Errorf("%s: the message does not say what failed and how: %q", name, be.Message)
		}
		var re *azcore.ResponseError
		if !errors.As(err, &re) {
			t.Errorf("%s: the SDK's error is not the cause: %v", name, err)
		}
	}
}

func equalRetry(a, b policy.RetryOptions) bool {
	return a.MaxRetries == b.MaxRetries && a.TryTimeout == b.TryTimeout && a.RetryDelay == b.RetryDelay && a.MaxRetryDelay == b.MaxRetryDelay
}

type fakeCredential struct{}

func (fakeCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "t", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// TestTryTimeoutBoundsAHungCall: a server that never answers fails the call after the tries' timeouts,
// as a transient error, instead of holding it.
func TestTryTimeoutBoundsAHungCall(t *testing.T) {
	srv := newFakeStorage(t, false, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	const try = 150 * time.Millisecond
	s, err := NewFromConnectionString(srv.connectionString(), "snapshots",
		Options{Retry: policy.RetryOptions{MaxRetries: 1, TryTimeout: try, RetryDelay: time.Millisecond, MaxRetryDelay: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // without a try timeout: fail, do not hang
	defer cancel()
	start := time.Now()
	err = s.Ping(ctx)
	took := time.Since(start)
	if backup.CodeOf(err) != backup.CodeTransient {
		t.Errorf("got %v, want a transient error", err)
	}
	if took < 2*try || took > 2*try+2*time.Second {
		t.Errorf("the call took %s; want about 2 tries of %s", took, try)
	}
	if got := srv.requests.Load(); got != 2 {
		t.Errorf("%d tries, want 2", got)
	}
}

// TestCancelAbortsAHungRead: with the default per-try timeout (minutes), cancelling the context ends
// a read whose server stopped sending half-way.
func TestCancelAbortsAHungRead(t *testing.T) {
	srv := newFakeStorage(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-999/1000")
		w.Header().Set("Content-Length", "1000")
		w.Header().Set("ETag", `"1"`)
		w.WriteHeader(http.StatusPartialContent)
		w.Write(make([]byte, 100))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	s, err := NewFromConnectionString(srv.connectionString(), "snapshots")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r, size, found, err := s.OpenFile(ctx, "app-files", "docs/a")
	if err != nil || !found || size != 1000 {
		t.Fatalf("got size %d, found %v, err %v", size, found, err)
	}
	defer r.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err = io.ReadAll(r)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %s, want context.Canceled at once", err, time.Since(start))
	}
}

// TestRefusedAccessIsPermanent: a 403 is not retried and says, without the URL, that the service may
// not do what it tried.
func TestRefusedAccessIsPermanent(t *testing.T) {
	srv := newFakeStorage(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-ms-error-code", "AuthorizationPermissionMismatch")
		w.WriteHeader(http.StatusForbidden)
	})
	s, err := NewFromConnectionString(srv.connectionString(), "snapshots", Options{Retry: fastRetries})
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = s.OpenFile(t.Context(), "app-files", "docs/a")
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeInvalidState || backup.IsRetryable(err) {
		t.Fatalf("got %v, want a permanent *backup.Error", err)
	}
	if !strings.Contains(be.Message, "403 AuthorizationPermissionMismatch") || strings.Contains(be.Message, "http") {
		t.Errorf("message %q", be.Message)
	}
	if got := srv.requests.Load(); got != 1 {
		t.Errorf("a 403 was tried %d times", got)
	}
}

func TestTransientClassifies(t *testing.T) {
	tests := []struct {
		err  error
		want backup.Code
	}{
		{errors.New("dial tcp: connection refused"), backup.CodeTransient},
		{context.DeadlineExceeded, backup.CodeTransient},
		{&azcore.ResponseError{StatusCode: 500, ErrorCode: "InternalError"}, backup.CodeTransient},
		{&azcore.ResponseError{StatusCode: 429}, backup.CodeTransient},
		{&azcore.ResponseError{StatusCode: 400, ErrorCode: "Md5Mismatch"}, backup.CodeTransient},
		{&azcore.ResponseError{StatusCode: 403, ErrorCode: "AuthorizationFailure"}, backup.CodeInvalidState},
		{&azcore.ResponseError{StatusCode: 409, ErrorCode: "LeaseIdMissing"}, backup.CodeInternal},
	}
	for _, tt := range tests {
		err := transient(tt.err, "read blob %s", "x")
		var be *backup.Error
		if !errors.As(err, &be) || be.Code != tt.want || !strings.HasPrefix(be.Message, "could not read blob x: ") || !errors.Is(err, tt.err) {
			t.Errorf("%v: got %#v, want code %s", tt.err, err, tt.want)
		}
	}
}
