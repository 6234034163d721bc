package tablestore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// benchSnapshot is a Finished nightly snapshot like those `make bench` lists.
func benchSnapshot(env string, i int, now time.Time) backup.Snapshot {
	id := uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "bench-listed-%d", i)).String()
	created := now.AddDate(0, 0, -i).Add(-2 * time.Hour)
	finished := created.Add(3 * time.Minute)
	return backup.Snapshot{ID: id, Namespace: "ns", EnvironmentID: env, Status: backup.SnapshotFinished,
		Kind: backup.KindNightly, Comment: fmt.Sprintf("nightly backup %d", i), CreatedAt: created, UpdatedAt: finished,
		FinishedAt: finished, ExpiresAt: backup.KindNightly.ExpiresAt(created), CreatedBy: "system",
		DeploymentPackage: "BenchApp_9.24.0.mda", ModelVersion: "9.24.0", SizeBytes: 400_000_000 + int64(i)*1000,
		DatabaseSizeBytes: 700_000_000, DumpSizeBytes: 650_000_000, FilesBytes: 400_000_000, FilesCount: 20_000,
		SHA256: fmt.Sprintf("%064x", i), OperationID: uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "op-%d", i)).String(),
		BlobPath: fmt.Sprintf("ns/%s/%s/archive.tar.gz", env, id)}
}

// storeWithSnapshots is a store in a fresh Azurite whose one environment holds n snapshots.
func storeWithSnapshots(b *testing.B, n int) (*Store, string) {
	b.Helper()
	az := azurite.ForTest(b)
	s, err := NewFromConnectionString(az.ConnectionString(), fmt.Sprintf("b%d", prefixes.Add(1)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.EnsureTables(ctx); err != nil {
		b.Fatal(err)
	}
	env, now := uuid.NewString(), time.Now().UTC()
	for i := range n {
		if err := s.CreateSnapshot(ctx, benchSnapshot(env, i, now)); err != nil {
			b.Fatal(err)
		}
	}
	return s, env
}

// BenchmarkListSnapshots lists an environment of 1,000 snapshots in Azurite, as the API's list does.
func BenchmarkListSnapshots(b *testing.B) {
	s, env := storeWithSnapshots(b, 1000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		page, total, err := s.ListSnapshots(ctx, "ns", env, 0, 1000)
		if err != nil || total != 1000 || len(page) != 1000 {
			b.Fatalf("%d of %d, %v", len(page), total, err)
		}
	}
}

// BenchmarkListSnapshotsRaw is the same list without the codec: the SDK's round trips only.
func BenchmarkListSnapshotsRaw(b *testing.B) {
	s, env := storeWithSnapshots(b, 1000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		err := pages(ctx, s.table(tableSnapshots), "PartitionKey eq "+odataString(envPartition("ns", env)), 0, "x", false,
			func([]byte) (bool, error) { n++; return true, nil })
		if err != nil || n != 1000 {
			b.Fatal(n, err)
		}
	}
}

// storedSnapshot is a snapshot entity as a query through the SDK hands it over from Azurite: int64
// properties annotated, the ETag and Timestamp among the properties, keys sorted.
const storedSnapshot = `{"BlobPath":"ns/470d1b7e-b0d4-480b-a179-36e3431b3fbd/7a556d31-813f-5b72-b8b3-9a3f6f340e5c/archive.tar.gz","Comment":"nightly backup 7","CreatedAt":"2026-10-25T00:03:04.000000000Z","CreatedBy":"system","DatabaseSizeBytes":"700000000","DatabaseSizeBytes@odata.type":"Edm.Int64","DeletedAt":"","DeploymentPackage":"BenchApp_9.24.0.mda","DumpSizeBytes":"650000000","DumpSizeBytes@odata.type":"Edm.Int64","ExpiresAt":"2026-11-08T00:03:04.000000000Z","Fence":"0","Fence@odata.type":"Edm.Int64","FilesBytes":"400000000","FilesBytes@odata.type":"Edm.Int64","FilesCount":"20000","FilesCount@odata.type":"Edm.Int64","FinishedAt":"2026-10-25T00:06:04.000000000Z","Kind":"nightly","ModelVersion":"9.24.0","OperationID":"69f1337d-7c6d-5c9d-ba16-a4f66cc884a9","PartitionKey":"ns|470d1b7e-b0d4-480b-a179-36e3431b3fbd","Progress":"","RowKey":"7a556d31-813f-5b72-b8b3-9a3f6f340e5c","SHA256":"0000000000000000000000000000000000000000000000000000000000000007","SizeBytes":"400007000","SizeBytes@odata.type":"Edm.Int64","Status":"Finished","StatusMessage":"","Timestamp":"2026-12-01T23:05:06.7986775Z","UpdatedAt":"2026-10-25T00:06:04.000000000Z","Warnings":"","odata.etag":"W/\"datetime'2026-12-01T23%3A05%3A06.7986775Z'\""}`

// BenchmarkDecodeEntity decodes one stored snapshot entity: a list of 1,000 snapshots does this 1,000
// times.
func BenchmarkDecodeEntity(b *testing.B) {
	raw := []byte(storedSnapshot)
	b.ReportAllocs()
	for b.Loop() {
		var e snapshotEntity
		if err := decodeEntity(raw, &e); err != nil || e.SizeBytes != 400_007_000 {
			b.Fatal(e.SizeBytes, err)
		}
	}
}
