package tablestore

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/google/uuid"

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
	storetest.RunRestores(t, newStores)
	storetest.RunTransfers(t, newStores)
	// Pages of 3 entities: the walk and the expiry index's reads cross pages with the suite's few dozen.
	storetest.RunSchedule(t, func(t *testing.T) backup.Stores {
		s := newStore(t, az)
		s.pageSize = 3
		return s.Stores()
	})
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

// TestListReadsWhatGetReads: a list asks for no OData metadata (no ETags, no type annotations) and must
// still read every record exactly as a point read does, integers past 2^53 and records written the old
// way (bare numbers) included; the operation index's reads keep their ETags.
func TestListReadsWhatGetReads(t *testing.T) {
	az := azurite.ForTest(t)
	s := newStore(t, az)
	ctx := context.Background()
	env := "e-" + uuid.NewString()
	at := time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC)
	sn := backup.Snapshot{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: env, Status: backup.SnapshotProcessing,
		Kind: backup.KindManual, Comment: `"quoted" é 𝄞`, CreatedAt: at, UpdatedAt: at.Add(time.Nanosecond), ExpiresAt: at.AddDate(0, 1, 0),
		SizeBytes: 1<<62 + 3, DatabaseSizeBytes: 1<<53 + 1, DumpSizeBytes: 3_000_000_000, FilesBytes: -1, FilesCount: 1<<31 + 1,
		Fence: 1<<53 + 1, Warnings: []string{"w"}, Readers: []string{env + "/op"}, Progress: &backup.Progress{Phase: "dumping", BytesDone: 1<<53 + 1}}
	if err := s.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	old := `{"PartitionKey":"ns|` + env + `","RowKey":"old","Status":"Finished","SizeBytes":3000000000,"FilesCount":5,
		"CreatedAt":"2026-11-01T02:03:04.5Z","FinishedAt":"","Warnings":"[\"w\"]"}`
	if _, err := s.table(tableSnapshots).AddEntity(ctx, []byte(old), nil); err != nil {
		t.Fatal(err)
	}
	list, total, err := s.ListSnapshots(ctx, "ns", env, 0, 10)
	if err != nil || total != 2 {
		t.Fatalf("list: %d, %v", total, err)
	}
	for _, got := range list {
		want, err := s.GetSnapshot(ctx, "ns", env, got.ID)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("listed:\n %+v\nread: %+v %v", got, want, err)
		}
		if got.ID == sn.ID && !reflect.DeepEqual(got, sn) {
			t.Errorf("listed:\n %+v\nwritten: %+v", got, sn)
		}
	}

	// What each kind of page holds.
	filter := "PartitionKey eq " + odataString(envPartition("ns", env))
	for _, etags := range []bool{false, true} {
		err := pages(ctx, s.table(tableSnapshots), filter, 0, "snapshots", etags, func(raw []byte) (bool, error) {
			var e snapshotEntity
			etag, err := decodeEntityETag(raw, &e)
			if err != nil {
				return false, err
			}
			if hasMeta := strings.Contains(string(raw), "odata."); hasMeta != etags {
				t.Errorf("etags %v: %s", etags, raw)
			}
			if etags {
				resp, err := s.table(tableSnapshots).GetEntity(ctx, e.PartitionKey, e.RowKey, nil)
				if err != nil || etag == "" || azcore.ETag(etag) != resp.ETag {
					t.Errorf("ETag %q, the entity's %q (%v)", etag, resp.ETag, err)
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
