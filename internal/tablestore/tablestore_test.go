package tablestore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
	"github.com/mxazure/backups/internal/storetest"
)

// TestConformance runs the domain's store suite against real Table Storage (Azurite): the same tests
// the in-memory fake passes. Each subtest gets its own table prefix, so they are isolated.
func TestConformance(t *testing.T) {
	az := azurite.ForTest(t)
	newStores := func(t *testing.T) backup.Stores {
		s := newStore(t, az)
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s.Stores()
	}
	storetest.Run(t, newStores)
	storetest.RunSnapshots(t, newStores)
}

func TestODataQuoting(t *testing.T) {
	if got := odataString("a'b"); got != "'a''b'" {
		t.Errorf("got %s", got)
	}
}

var prefixes atomic.Int64

// newStore returns a store on az with tables of its own (a fresh prefix), created.
func newStore(t *testing.T, az *azurite.Azurite, opts ...Option) *Store {
	t.Helper()
	s, err := NewFromConnectionString(az.ConnectionString(), fmt.Sprintf("t%d", prefixes.Add(1)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureTables(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// recorder is a pipeline policy that keeps every try the SDK sends.
type recorder struct {
	mu   sync.Mutex
	reqs []request
}

type request struct {
	Method string
	Table  string // the last path segment up to "(": "<prefix><table>", or "Tables"
	Point  bool   // addressed to one entity: (PartitionKey='...',RowKey='...')
	Query  url.Values
	Body   []byte
}

func (r *recorder) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	rec := request{Method: raw.Method, Query: raw.URL.Query()}
	seg := raw.URL.Path[strings.LastIndex(raw.URL.Path, "/")+1:]
	rec.Table, _, _ = strings.Cut(seg, "(")
	rec.Point = strings.Contains(seg, "PartitionKey=")
	if b := req.Body(); b != nil {
		rec.Body, _ = io.ReadAll(b)
		if err := req.RewindBody(); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	return req.Next()
}

// take returns the requests recorded since the last take.
func (r *recorder) take() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reqs
	r.reqs = nil
	return out
}

// count tallies requests to one table of s by kind: "point read", "query", "write".
func count(s *Store, reqs []request, table string) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		if r.Table != s.prefix+table {
			continue
		}
		switch {
		case r.Method == http.MethodGet && r.Point:
			out["point read"]++
		case r.Method == http.MethodGet:
			out["query"]++
		default:
			out["write"]++
		}
	}
	return out
}
