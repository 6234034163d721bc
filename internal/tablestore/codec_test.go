package tablestore

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

var fixedTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$`)

// int32Properties are the properties deliberately sent as bare numbers: Azure infers Edm.Int32 from them.
var int32Properties = []string{"DBPort"}

// TestPayloads stands for Azure's typing of JSON properties, which Azurite does not apply: Azure
// stores a bare JSON number as Edm.Int32 or, above 2^31, as Edm.Double (exact only up to 2^53; refused
// where the property is typed Int64 already), so every 64-bit integer must travel as a string annotated
// "Edm.Int64". It captures the bodies the SDK actually sends (after aztables re-encodes them) for every
// kind of record and checks that each int64 property is annotated and a decimal string, that no other
// property is a bare number, and that every time is in the fixed-width form that sorts as text.
func TestPayloads(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	at := time.Date(2026, 11, 1, 2, 3, 4, 0, time.UTC) // no fraction: the form must still have nine digits
	env := uuid.NewString()
	sn := backup.Snapshot{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: env, Status: backup.SnapshotFinished,
		Kind: backup.KindManual, CreatedAt: at, UpdatedAt: at.Add(500 * time.Millisecond), FinishedAt: at, ExpiresAt: at,
		SizeBytes: 3_000_000_000, DatabaseSizeBytes: 1<<53 + 1, DumpSizeBytes: 1, FilesBytes: 2, FilesCount: 3, Fence: 4,
		DeletedAt: at}
	op := backup.Operation{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: env, Kind: backup.OpBackup, Phase: backup.OpQueued,
		Fence: 1 << 40, Attempt: 2, Enqueues: 3, EnqueuedAt: at, LeaseUntil: at, CreatedAt: at, UpdatedAt: at, StartedAt: at}
	rs := backup.Restore{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: env, State: backup.RestoreCompleted,
		Step: backup.StepCommitted, CreatedAt: at, UpdatedAt: at, StartedAt: at, FinishedAt: at, UndoUntil: at, UndoneAt: at,
		DiscardedAt: at, DatabaseBytes: 1<<53 + 1, Tables: 1, Rows: 2, FilesCount: 3, FilesBytes: 4, FilesAdded: 5,
		FilesReplaced: 6, FilesUnchanged: 7, Fence: 8, UndoFence: 9}
	ar := backup.Archive{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: env, State: backup.ArchiveCompleted, CreatedAt: at,
		UpdatedAt: at, FinishedAt: at, BlobPath: "b", SizeBytes: 1<<53 + 1, URLExpiresAt: at, Fence: 2, KeepUntil: at, RemovedAt: at}
	ar.OwnerID = ar.ID
	up := backup.Upload{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: env, CreatedAt: at, UpdatedAt: at, ExpiresAt: at,
		CompletedAt: at, SizeBytes: 1<<53 + 1, RemovedAt: at}
	steps := []error{
		s.CreateSnapshot(ctx, sn),
		s.CreateRestore(ctx, rs),
		s.CreateArchive(ctx, ar),
		s.CreateUpload(ctx, up),
		s.CreateOperation(ctx, op),
		func() error {
			_, _, err := s.UpdateOperation(ctx, "ns", env, op.ID, func(o backup.Operation, _ bool) (backup.Operation, bool, error) {
				o.Phase, o.Settled, o.FinishedAt = backup.OpSucceeded, true, at
				return o, true, nil
			})
			return err
		}(),
		func() error {
			_, _, err := s.UpdateLock(ctx, "ns", env, func(backup.Lock, bool) (backup.Lock, bool, error) {
				return backup.Lock{OperationID: op.ID, Kind: backup.OpBackup, Since: at}, true, nil
			})
			return err
		}(),
		func() error {
			_, _, err := s.UpdateEnvironment(ctx, "ns", env, func(backup.Environment, bool) (backup.Environment, bool, error) {
				return backup.Environment{Name: "n", Database: backup.DatabaseLocation{Port: 5432}, EventTime: at, UpdatedAt: at}, true, nil
			})
			return err
		}(),
		func() error {
			_, _, err := s.UpdateGrant(ctx, "ns", "p", func(g backup.Grant, _ bool) (backup.Grant, bool, error) {
				g.EventTime = at
				return g, true, nil
			})
			return err
		}(),
		s.PutSettings(ctx, backup.Settings{Namespace: "ns", UpdatedAt: at}),
		s.AddActivity(ctx, backup.ActivityEntry{ID: "x", Namespace: "ns", EnvironmentID: env, Time: at}),
		s.AddRejectedEvent(ctx, backup.RejectedEvent{Time: at}),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}

	wantInt64 := map[string][]string{
		tableSnapshots:  {"SizeBytes", "DatabaseSizeBytes", "DumpSizeBytes", "FilesBytes", "FilesCount", "Fence"},
		tableOperations: {"Fence", "Attempt", "Enqueues"},
		tableRestores: {"DatabaseBytes", "Tables", "Rows", "FilesCount", "FilesBytes", "FilesAdded", "FilesReplaced",
			"FilesUnchanged", "Fence", "UndoFence"},
		tableArchives: {"SizeBytes", "Fence"},
		tableUploads:  {"SizeBytes"},
	}
	wantTimes := map[string][]string{
		tableSnapshots:      {"CreatedAt", "UpdatedAt", "FinishedAt", "ExpiresAt", "DeletedAt"},
		tableOperations:     {"LeaseUntil", "EnqueuedAt", "CreatedAt", "UpdatedAt", "StartedAt", "FinishedAt"},
		tableEnvironments:   {"EventTime", "UpdatedAt"},
		tablePermissions:    {"EventTime"},
		tableSettings:       {"UpdatedAt"},
		tableActivity:       {"Time"},
		tableRejected:       {"Time"},
		tableOperationIndex: {"IndexedAt"},
		tableRestores:       {"CreatedAt", "UpdatedAt", "StartedAt", "FinishedAt", "UndoUntil", "UndoneAt", "DiscardedAt", "UndoDue"},
		tableArchives:       {"CreatedAt", "UpdatedAt", "FinishedAt", "URLExpiresAt", "KeepUntil", "RemovedAt", "RemoveDue"},
		tableUploads:        {"CreatedAt", "UpdatedAt", "ExpiresAt", "CompletedAt", "RemovedAt", "RemoveDue"},
	}
	seen := map[string]bool{}
	for _, r := range rec.take() {
		if len(r.Body) == 0 || r.Method == http.MethodGet || !strings.HasPrefix(r.Table, s.prefix) {
			continue
		}
		tbl := strings.TrimPrefix(r.Table, s.prefix)
		var props map[string]any
		if err := json.Unmarshal(r.Body, &props); err != nil {
			t.Fatalf("%s body: %v", tbl, err)
		}
		seen[tbl] = true
		for name, v := range props {
			if base, ok := strings.CutSuffix(name, "@odata.type"); ok {
				if v != "Edm.Int64" {
					t.Errorf("%s: %s is %v; only Edm.Int64 is annotated", tbl, name, v)
				}
				if str, ok := props[base].(string); !ok {
					t.Errorf("%s: %s is %#v, want a string", tbl, base, props[base])
				} else if _, err := strconv.ParseInt(str, 10, 64); err != nil {
					t.Errorf("%s: %s = %q is not a decimal int64", tbl, base, str)
				}
				continue
			}
			if _, isNumber := v.(float64); isNumber && !slices.Contains(int32Properties, name) {
				t.Errorf("%s: %s = %v is a bare number: Azure would store it as Int32 or Double", tbl, name, v)
			}
			if str, ok := v.(string); ok {
				if _, err := time.Parse(time.RFC3339Nano, str); err == nil && !fixedTime.MatchString(str) {
					t.Errorf("%s: %s = %q is a time not in the fixed-width form", tbl, name, str)
				}
			}
		}
		for _, name := range wantInt64[tbl] {
			if props["RowKey"] == lockRowKey {
				break // the lock, in the Operations table, has no integers
			}
			if props[name+"@odata.type"] != "Edm.Int64" {
				t.Errorf("%s: %s sent without the Edm.Int64 annotation: %v", tbl, name, props[name])
			}
		}
		for _, name := range wantTimes[tbl] {
			if str, _ := props[name].(string); str != "" && !fixedTime.MatchString(str) {
				t.Errorf("%s: time %s = %#v, want 2006-01-02T15:04:05.000000000Z", tbl, name, props[name])
			}
		}
		if port, ok := props["DBPort"]; ok && port != float64(5432) {
			t.Errorf("%s: DBPort = %#v, want the bare number 5432 (Edm.Int32)", tbl, port)
		}
	}
	for tbl := range wantTimes {
		if !seen[tbl] {
			t.Errorf("no write to %s was captured", tbl)
		}
	}
	// And what was sent reads back exactly (Azurite keeps the annotated strings as Int64).
	got, err := s.GetSnapshot(ctx, "ns", env, sn.ID)
	if err != nil || got.DatabaseSizeBytes != 1<<53+1 || got.SizeBytes != 3_000_000_000 || !got.UpdatedAt.Equal(sn.UpdatedAt) {
		t.Errorf("read back: %+v, %v", got, err)
	}
}

// TestTimesSortAsText: the stored form of times must sort as text in time order, with and without
// fractions, so that range filters and key order on times are right. time.RFC3339Nano does not:
// "…05Z" sorts after "…05.5Z".
func TestTimesSortAsText(t *testing.T) {
	base := time.Date(2026, 11, 1, 2, 3, 5, 0, time.UTC)
	times := []time.Time{
		base.Add(-time.Nanosecond), base, base.Add(time.Nanosecond), base.Add(100 * time.Millisecond),
		base.Add(500 * time.Millisecond), base.Add(time.Second), base.Add(10 * time.Second), base.AddDate(1, 0, 0),
		time.Date(2026, 11, 1, 3, 3, 5, 0, time.FixedZone("CET", 3600)).Add(time.Millisecond), // 02:03:05.001 UTC
	}
	slices.SortFunc(times, time.Time.Compare)
	var texts []string
	for _, tm := range times {
		s := formatTime(tm)
		if !fixedTime.MatchString(s) {
			t.Errorf("formatTime(%v) = %q, want the fixed-width UTC form", tm, s)
		}
		texts = append(texts, s)
	}
	if !slices.IsSorted(texts) {
		t.Errorf("not sorted as text in time order:\n%s", strings.Join(texts, "\n"))
	}
	if formatTime(time.Time{}) != "" {
		t.Errorf("zero time: got %q, want \"\"", formatTime(time.Time{}))
	}
	// Both forms read: the fixed-width one and RFC 3339 with a trimmed fraction (records written before).
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"2026-11-01T02:03:05.500000000Z", base.Add(500 * time.Millisecond)},
		{"2026-11-01T02:03:05.5Z", base.Add(500 * time.Millisecond)},
		{"2026-11-01T02:03:05Z", base},
		{"2026-11-01T02:03:05.000000001Z", base.Add(time.Nanosecond)},
	} {
		got, err := parseTime(c.in)
		if err != nil || !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("parseTime(%q) = %v, %v; want %v UTC", c.in, got, err, c.want)
		}
	}
	for _, tm := range times {
		if got, err := parseTime(formatTime(tm)); err != nil || !got.Equal(tm) {
			t.Errorf("round trip of %v: got %v, %v", tm, got, err)
		}
	}
}

// TestOlderFormsRead: records written before the Edm.Int64 annotation and the fixed-width times (bare
// numbers, RFC 3339 with a trimmed fraction) still read, exactly.
func TestOlderFormsRead(t *testing.T) {
	var e snapshotEntity
	old := `{"PartitionKey":"ns|env","RowKey":"id","odata.etag":"W/\"x\"","Timestamp":"2026-11-01T00:00:00.1234567Z",
		"SizeBytes":9007199254740993,"FilesCount":12,"DumpSizeBytes":3000000000.0,"Fence":"7","Fence@odata.type":"Edm.Int64",
		"CreatedAt":"2026-11-01T02:03:04.5Z","UpdatedAt":"2026-11-01T02:03:04Z","Comment":"c"}`
	if err := decodeEntity([]byte(old), &e); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 1, 2, 3, 4, 0, time.UTC)
	if e.SizeBytes != 1<<53+1 || e.FilesCount != 12 || e.DumpSizeBytes != 3_000_000_000 || e.Fence != 7 ||
		!e.CreatedAt.Equal(base.Add(500*time.Millisecond)) || !e.UpdatedAt.Equal(base) || e.Comment != "c" {
		t.Errorf("decoded %+v", e)
	}
	for _, bad := range []string{`{"SizeBytes":"x"}`, `{"SizeBytes":1.5}`, `{"CreatedAt":"yesterday"}`, `{"Comment":3}`} {
		if err := decodeEntity([]byte(bad), &snapshotEntity{}); err == nil {
			t.Errorf("%s decoded without an error", bad)
		}
	}

	// The same through Azurite: an entity written the old way (bare numbers, which Azurite keeps) reads
	// through the store.
	az := azurite.ForTest(t)
	s := newStore(t, az)
	raw := `{"PartitionKey":"ns|env","RowKey":"old","Status":"Finished","SizeBytes":3000000000,"FilesCount":5,
		"CreatedAt":"2026-11-01T02:03:04.5Z","FinishedAt":"","Warnings":"[\"w\"]"}`
	if _, err := s.table(tableSnapshots).AddEntity(context.Background(), []byte(raw), nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSnapshot(context.Background(), "ns", "env", "old")
	if err != nil || got.SizeBytes != 3_000_000_000 || got.FilesCount != 5 || !got.CreatedAt.Equal(base.Add(500*time.Millisecond)) ||
		!got.FinishedAt.IsZero() || !slices.Equal(got.Warnings, []string{"w"}) {
		t.Errorf("old record: %+v, %v", got, err)
	}
}

// TestSizeLimits stands for Azure's limits, which Azurite does not always enforce: a property of at most
// 64 KiB, strings counted in UTF-16 (so 32 K ASCII characters, which are half that in UTF-8), and an
// entity of at most 1 MiB. The store refuses such an entity before sending it, with a permanent error
// that names the table and the property.
func TestSizeLimits(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	sn := backup.Snapshot{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: "env", Status: backup.SnapshotProcessing,
		Comment: strings.Repeat("a", 40_000)} // 40,000 bytes in UTF-8, 80,000 in UTF-16
	rec.take()
	err := s.CreateSnapshot(ctx, sn)
	var be *backup.Error
	if !errors.As(err, &be) || be.Code != backup.CodeInternal || !strings.Contains(be.Message, "Snapshots") ||
		!strings.Contains(be.Message, "Comment") || backup.IsRetryable(err) {
		t.Fatalf("40,000-character comment: got %v, want a permanent INTERNAL error naming Snapshots and Comment", err)
	}
	if sent := count(s, rec.take(), tableSnapshots); sent["write"] != 0 {
		t.Errorf("the refused entity was sent: %v", sent)
	}
	sn.Comment = strings.Repeat("a", 32_768) // exactly 64 KiB in UTF-16
	if err := s.CreateSnapshot(ctx, sn); err != nil {
		t.Errorf("a 64 KiB property must be accepted: %v", err)
	}

	type wide struct {
		PartitionKey, RowKey string
		Text                 string
		A, B, C, D, E, F, G  string
		H, I, J, K, L, M, N  string
		O, P, Q              string
	}
	for _, c := range []struct {
		name  string
		value func(*wide)
		field string // in the message, or "" for the entity's size
	}{
		{"surrogate pairs count twice", func(w *wide) { w.Text = strings.Repeat("𝄞", 16_385) }, "Text"}, // 32,770 units
		{"entity over 1 MiB", func(w *wide) {
			for _, p := range []*string{&w.A, &w.B, &w.C, &w.D, &w.E, &w.F, &w.G, &w.H, &w.I, &w.J, &w.K, &w.L, &w.M, &w.N, &w.O, &w.P, &w.Q} {
				*p = strings.Repeat("é", 31_000) // 62,000 bytes each: under the property limit, 17 of them over 1 MiB
			}
		}, ""},
	} {
		w := &wide{PartitionKey: "p", RowKey: "r"}
		c.value(w)
		_, err := encodeEntity("Wide", w)
		if backup.CodeOf(err) != backup.CodeInternal || !strings.Contains(err.Error(), "Wide") ||
			(c.field != "" && !strings.Contains(err.Error(), "property "+c.field)) || (c.field == "" && !strings.Contains(err.Error(), "1048576")) {
			t.Errorf("%s: got %v", c.name, err)
		}
	}
	w := &wide{PartitionKey: "p", RowKey: "r", Text: strings.Repeat("𝄞", 16_384)} // 32,768 units: the limit
	if _, err := encodeEntity("Wide", w); err != nil {
		t.Errorf("exactly 64 KiB of surrogate pairs: %v", err)
	}
}

// TestCodecRefusesUndeclaredTypes: an entity field of a type the codec has no deliberate form for (int,
// float) is an error, not a guess.
func TestCodecRefusesUndeclaredTypes(t *testing.T) {
	if _, err := encodeEntity("T", &struct {
		PartitionKey, RowKey string
		N                    int
	}{}); err == nil {
		t.Error("an int field was encoded")
	}
}
