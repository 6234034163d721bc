package tablestore

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/mxazure/backups/internal/backup"
)

// fakeTables answers every request with handler and counts the requests.
func fakeTables(t *testing.T, handler http.HandlerFunc) (connectionString string, requests *atomic.Int64) {
	t.Helper()
	requests = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	// Azurite's well-known development key: the fake does not check signatures.
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
		"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
		"TableEndpoint=" + srv.URL + "/devstoreaccount1;", requests
}

// fast is the production retry policy with delays short enough for a test.
func fast() policy.RetryOptions {
	r := RetryOptions()
	r.RetryDelay, r.MaxRetryDelay = time.Millisecond, 2*time.Millisecond
	return r
}

// TestRetryPolicyIsExplicit: the constructors set the retry policy themselves instead of azcore's
// defaults, which have no TryTimeout (a hung try would wait for as long as its context, unbounded for a
// worker).
func TestRetryPolicyIsExplicit(t *testing.T) {
	cs, _ := fakeTables(t, func(http.ResponseWriter, *http.Request) {})
	s, err := NewFromConnectionString(cs, "p")
	if err != nil {
		t.Fatal(err)
	}
	want := policy.RetryOptions{MaxRetries: 3, TryTimeout: 30 * time.Second, RetryDelay: 500 * time.Millisecond, MaxRetryDelay: 4 * time.Second}
	if got := s.options.Retry; got.MaxRetries != want.MaxRetries || got.TryTimeout != want.TryTimeout ||
		got.RetryDelay != want.RetryDelay || got.MaxRetryDelay != want.MaxRetryDelay || got.StatusCodes != nil {
		t.Errorf("retry options: got %+v, want %+v", got, want)
	}
	if s2, _ := New("https://account.table.core.windows.net", nil, "p"); s2.options.Retry.TryTimeout != TryTimeout {
		t.Errorf("New: retry options %+v", s2.options.Retry)
	}
}

// TestRetriesTransientAnswers: a 503 is tried MaxRetries+1 times, then reported as transient; a 404 is
// an answer, not retried.
func TestRetriesTransientAnswers(t *testing.T) {
	cs, tries := fakeTables(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"odata.error":{"code":"ServerBusy","message":{"value":"busy"}}}`))
	})
	s, err := NewFromConnectionString(cs, "p", WithRetryOptions(fast()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.GetSnapshot(context.Background(), "ns", "env", "id")
	if backup.CodeOf(err) != backup.CodeTransient {
		t.Errorf("got %v, want TEMPORARILY_UNAVAILABLE", err)
	}
	if got := tries.Load(); got != MaxRetries+1 {
		t.Errorf("503: %d tries, want %d", got, MaxRetries+1)
	}

	cs, tries = fakeTables(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"odata.error":{"code":"ResourceNotFound","message":{"value":"no"}}}`))
	})
	s, _ = NewFromConnectionString(cs, "p", WithRetryOptions(fast()))
	if _, err := s.GetSnapshot(context.Background(), "ns", "env", "id"); backup.CodeOf(err) != backup.CodeNotFound || tries.Load() != 1 {
		t.Errorf("404: got %v after %d tries, want NOT_FOUND after 1", err, tries.Load())
	}
}

// TestTryTimeoutCutsAHungTry: a try that gets no answer is abandoned after TryTimeout and tried again,
// instead of hanging the caller.
func TestTryTimeoutCutsAHungTry(t *testing.T) {
	release := make(chan struct{})
	cs, tries := fakeTables(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	r := fast()
	r.TryTimeout = 50 * time.Millisecond
	s, err := NewFromConnectionString(cs, "p", WithRetryOptions(r))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.GetSnapshot(context.Background(), "ns", "env", "id")
	if backup.CodeOf(err) != backup.CodeTransient || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %v, want TEMPORARILY_UNAVAILABLE within 4 tries of 50 ms", err, time.Since(start))
	}
	if got := tries.Load(); got != MaxRetries+1 {
		t.Errorf("%d tries, want %d", got, MaxRetries+1)
	}
}
