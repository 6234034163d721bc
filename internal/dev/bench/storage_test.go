package bench

import (
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

func TestStorageListing(t *testing.T) {
	az := azurite.ForTest(t)
	client, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const env, other = "b7e0c001-0000-4000-8000-0000000000e1", "b7e0c001-0000-4000-8000-0000000000e2"
	put := func(container, name string, n int) {
		t.Helper()
		if _, err := client.UploadBuffer(ctx, container, name, make([]byte, n), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{SnapshotsContainer, FileStoreContainer} {
		if _, err := client.CreateContainer(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	snap := "01a20cbb-128c-71f6-b4ed-ef487c66b548"
	put(SnapshotsContainer, layout.SnapshotDump(Namespace, env, snap, 1), 1000)
	put(SnapshotsContainer, layout.SnapshotManifest(Namespace, env, snap, 1), 30)
	put(SnapshotsContainer, layout.SnapshotArchive(Namespace, env, snap, 2), 7)
	put(SnapshotsContainer, layout.SnapshotDump(Namespace, other, snap, 1), 5000) // another environment
	put(SnapshotsContainer, "bench-assembled/"+snap+".tar.gz", 9000)              // an assembled archive
	put(FileStoreContainer, layout.StoreObject(Namespace, env, "u/20-md5-x"), 20) // the names need not parse
	put(FileStoreContainer, layout.StoreObject(Namespace, env, "v/25-md5-y"), 25)
	put(FileStoreContainer, layout.CollectorState(Namespace, env), 3)               // the collector's state
	put(FileStoreContainer, layout.StoreObject(Namespace, other, "w/40-md5-z"), 40) // another environment
	got, err := storageOf(ctx, client, env)
	if err != nil {
		t.Fatal(err)
	}
	want := EnvStorage{Dumps: Usage{1, 1000}, Manifests: Usage{1, 30}, Other: Usage{1, 7}, Store: Usage{3, 48}}
	if got != want || got.Total() != 1085 {
		t.Errorf("got %+v (total %d), want %+v", got, got.Total(), want)
	}
}
