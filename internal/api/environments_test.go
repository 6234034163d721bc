package api

import (
	"context"
	"testing"
	"time"

	"github.com/mxazure/backups/internal/backup"
)

// TestCanCreateBackupFollowsTheLock: an environment whose lock is held by a running backup or restore
// cannot be backed up, and says which; a stale lock (finished holder, or a missing one taken over a
// minute ago) does not block.
func TestCanCreateBackupFollowsTheLock(t *testing.T) {
	tests := []struct {
		name   string
		op     *backup.Operation // the lock holder's record; nil: none written
		since  time.Duration     // lock age
		can    bool
		reason string
	}{
		{"running backup", &backup.Operation{Kind: backup.OpBackup, Phase: backup.OpRunning}, time.Hour, false, "a backup is running"},
		{"queued backup", &backup.Operation{Kind: backup.OpBackup, Phase: backup.OpQueued}, time.Second, false, "a backup is running"},
		{"running restore", &backup.Operation{Kind: "restore", Phase: backup.OpRunning}, time.Hour, false, "a restore is running"},
		{"finished holder is stale", &backup.Operation{Kind: backup.OpBackup, Phase: backup.OpSucceeded}, time.Second, true, ""},
		{"failed holder is stale", &backup.Operation{Kind: backup.OpBackup, Phase: backup.OpFailed}, time.Second, true, ""},
		{"young lock without record", nil, 10 * time.Second, false, "a backup is running"},
		{"old lock without record is stale", nil, 2 * time.Minute, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			const opID = "01939a4c-0000-7000-8000-000000000001"
			if tt.op != nil {
				op := *tt.op
				op.ID, op.Namespace, op.EnvironmentID, op.CreatedAt = opID, nsA, envA, f.now
				if err := f.store.CreateOperation(ctx, op); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := f.store.UpdateLock(ctx, nsA, envA, func(backup.Lock, bool) (backup.Lock, bool, error) {
				return backup.Lock{OperationID: opID, Kind: backup.OpBackup, Since: f.now.Add(-tt.since)}, true, nil
			}); err != nil {
				t.Fatal(err)
			}
			env := onlyEnvironment(t, f)
			if env["can_create_backup"] != tt.can || env["reason"] != tt.reason {
				t.Errorf("can_create_backup %v reason %q, want %v %q", env["can_create_backup"], env["reason"], tt.can, tt.reason)
			}
		})
	}
}

// TestCanCreateBackupWhileASnapshotIsMade: right after POST .../snapshots the list says a backup runs.
func TestCanCreateBackupWhileASnapshotIsMade(t *testing.T) {
	f := newFixture(t)
	if env := onlyEnvironment(t, f); env["can_create_backup"] != true {
		t.Fatalf("before: %v", env)
	}
	resp, body := f.do(t, manager, "POST", "/api/v1/namespaces/ns-a/environments/"+envA+"/snapshots", `{}`)
	if resp.StatusCode != 202 {
		t.Fatalf("create: %d %v", resp.StatusCode, body)
	}
	if env := onlyEnvironment(t, f); env["can_create_backup"] != false || env["reason"] != "a backup is running" {
		t.Errorf("while the backup runs: %v", env)
	}
}

func onlyEnvironment(t *testing.T, f *fixture) map[string]any {
	t.Helper()
	resp, body := f.do(t, manager, "GET", "/api/v1/namespaces/ns-a/environments", "")
	if resp.StatusCode != 200 {
		t.Fatalf("list: %d %v", resp.StatusCode, body)
	}
	envs, _ := body["environments"].([]any)
	if len(envs) != 1 {
		t.Fatalf("got %d environments, want 1", len(envs))
	}
	return envs[0].(map[string]any)
}
