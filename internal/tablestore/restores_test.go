package tablestore

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
)

// TestUndoDueWireFormat stands for Azure's typed comparisons, which Azurite does not apply: a filter
// matches only where the property and the literal have the same type, so a string property compared
// with datetime'...' (or a DateTime one with '...') matches nothing on Azure and everything expected on
// Azurite. UndoDue is written as every time of the codec is, an unannotated Edm.String in the
// fixed-width form (text order is time order), and ListUndoDue compares it with string literals of the
// same form; it must read one page of at most limit entities and nothing else.
func TestUndoDueWireFormat(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	cutoff := time.Date(2026, 11, 10, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	committed := backup.Restore{ID: uuid.NewString(), Namespace: "ns", EnvironmentID: "env", State: backup.RestoreCompleted,
		Step: backup.StepCommitted, UndoUntil: cutoff.Add(-1500 * time.Millisecond).Add(7)}
	other := committed
	other.ID, other.EnvironmentID = uuid.NewString(), "env2"
	committing := committed
	committing.ID, committing.Step, committing.State = uuid.NewString(), backup.StepCommitting, backup.RestoreRunning
	for _, r := range []backup.Restore{committed, other, committing} {
		if err := s.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	wantDue := map[string]string{committed.ID: formatTime(committed.UndoUntil), other.ID: formatTime(other.UndoUntil), committing.ID: ""}
	for _, r := range rec.take() {
		if r.Table != s.prefix+tableRestores || r.Method == http.MethodGet {
			continue
		}
		var props map[string]any
		if err := json.Unmarshal(r.Body, &props); err != nil {
			t.Fatal(err)
		}
		id, _ := props["RowKey"].(string)
		if v, ok := props["UndoDue"].(string); !ok || v != wantDue[id] {
			t.Errorf("restore %s: UndoDue sent as %#v, want the string %q", id, props["UndoDue"], wantDue[id])
		}
		if wantDue[id] != "" && !fixedTime.MatchString(wantDue[id]) {
			t.Errorf("UndoDue %q is not in the fixed-width form", wantDue[id])
		}
		if a, ok := props["UndoDue@odata.type"]; ok {
			t.Errorf("UndoDue sent with the annotation %v: the filter's string literals would not match it on Azure", a)
		}
	}

	got, err := s.ListUndoDue(ctx, cutoff, 1)
	if err != nil || len(got) != 1 || (got[0].ID != committed.ID && got[0].ID != other.ID) {
		t.Fatalf("ListUndoDue(limit 1): %+v, %v", got, err)
	}
	reqs := rec.take()
	if n := count(s, reqs, tableRestores); n["query"] != 1 || len(reqs) != 1 {
		t.Errorf("ListUndoDue sent %d requests (%v), want one query of the Restores table", len(reqs), n)
	}
	q := reqs[0].Query
	filter := q.Get("$filter")
	if filter != undoDueFilter(cutoff) || q.Get("$top") != "1" {
		t.Errorf("query $filter=%q $top=%q, want %q and 1", filter, q.Get("$top"), undoDueFilter(cutoff))
	}
	literal := "'" + formatTime(cutoff) + "'"
	if strings.Contains(filter, "datetime") || !strings.Contains(filter, "UndoDue lt "+literal) || !strings.Contains(filter, "UndoDue gt ''") {
		t.Errorf("filter %q: want UndoDue compared with the string %s, and the empty string left out", filter, literal)
	}
	if got, err := s.ListUndoDue(ctx, cutoff, 10); err != nil || len(got) != 2 {
		t.Errorf("ListUndoDue(limit 10): %d restores, %v; want the 2 committed ones", len(got), err)
	}
	if got, err := s.ListUndoDue(ctx, cutoff.Add(-time.Hour), 10); err != nil || len(got) != 0 {
		t.Errorf("before an hour earlier: %d restores, %v; want none", len(got), err)
	}
}

// TestRestoreSizeLimits: the domain bounds a restore's warnings to 50 and 16 KiB of UTF-8, but their
// JSON can be six times that (json.Marshal writes a control character, <, > and & as \u00XX), 12 bytes
// per byte in UTF-16: more than one property holds. The warnings are cut over four properties, so the
// largest restore the domain makes is written and reads back whole; more than four hold is refused
// before anything is sent.
func TestRestoreSizeLimits(t *testing.T) {
	az := azurite.ForTest(t)
	rec := &recorder{}
	s := newStore(t, az, WithPolicy(rec))
	ctx := context.Background()
	const maxWarnings, maxWarningsBytes, maxWarningLength = 50, 16 << 10, 1000 // backup's bounds (text.go)
	var ws []string
	size := 0
	for len(ws) < maxWarnings {
		w := strings.Repeat("\x01<", maxWarningLength/2) // as long as Truncate leaves one whole
		if size+len(w) > maxWarningsBytes {
			w = strings.Repeat("&", maxWarningsBytes-size)
		}
		ws, size = append(ws, w), size+len(w)
		if size == maxWarningsBytes {
			break
		}
	}
	ws = append(ws, "and 1,000,000,000 more warnings")
	b, _ := json.Marshal(ws)
	if units := utf16Len(string(b)); 2*units <= 3*maxPropertyBytes {
		t.Fatalf("the warnings' JSON is %d bytes in UTF-16; the test wants a worst case over three properties", 2*units)
	}
	long := strings.Repeat("\x01", 2000) + "…" // Truncate's bound of a status message
	at := time.Date(2026, 11, 1, 2, 3, 4, 5, time.UTC)
	r := backup.Restore{ID: uuid.NewString(), Namespace: strings.Repeat("n", 63), EnvironmentID: uuid.NewString(),
		SourceEnvironmentID: uuid.NewString(), SourceSnapshotID: uuid.NewString(), State: backup.RestoreFailed,
		Step: backup.StepCommitted, StatusMessage: long, Warnings: ws, Progress: &backup.Progress{Phase: "restoring"},
		CreatedAt: at, UpdatedAt: at, StartedAt: at, FinishedAt: at, CreatedBy: strings.Repeat("u", 256),
		ModelVersion: strings.Repeat("9", 64), DeploymentPackage: strings.Repeat("p", 1024), Database: strings.Repeat("d", 63),
		OperationID: uuid.NewString(), UndoUntil: at, UndoOperationID: uuid.NewString(), UndoState: backup.RestoreFailed,
		UndoMessage: long, UndoneAt: at, UndoneBy: strings.Repeat("v", 256), DiscardedAt: at}
	if err := s.CreateRestore(ctx, r); err != nil {
		t.Fatalf("the largest restore the domain makes: %v", err)
	}
	got, err := s.GetRestore(ctx, r.Namespace, r.EnvironmentID, r.ID)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Errorf("read back: %v, equal %v", err, reflect.DeepEqual(got, r))
	}

	r.ID, r.Warnings = uuid.NewString(), []string{strings.Repeat("\x01", 25_000)} // 150,000 characters of JSON
	rec.take()
	err = s.CreateRestore(ctx, r)
	if backup.CodeOf(err) != backup.CodeInternal || backup.IsRetryable(err) || !strings.Contains(err.Error(), "Restores") ||
		!strings.Contains(err.Error(), "property Warnings4") {
		t.Errorf("warnings over four properties: got %v, want a permanent INTERNAL error naming Restores and Warnings4", err)
	}
	if sent := count(s, rec.take(), tableRestores); sent["write"] != 0 {
		t.Errorf("the refused entity was sent: %v", sent)
	}
}

// TestSplitWarnings: the pieces join back to the text, each within the property limit, and a
// surrogate pair is never cut.
func TestSplitWarnings(t *testing.T) {
	for _, s := range []string{"", `["w"]`, strings.Repeat("𝄞", 40_000), "a" + strings.Repeat("𝄞", 16_384), strings.Repeat("a", 32_768) + "b"} {
		p := splitWarnings(s)
		if strings.Join(p[:], "") != s {
			t.Errorf("%d bytes: the pieces do not join back", len(s))
		}
		for i, piece := range p {
			if 2*utf16Len(piece) > maxPropertyBytes || !utf8.ValidString(piece) {
				t.Errorf("%d bytes: piece %d is %d units (valid UTF-8 %v)", len(s), i, utf16Len(piece), utf8.ValidString(piece))
			}
		}
	}
	if p := splitWarnings(strings.Repeat("a", 32_768) + "b"); len(p[0]) != 32_768 || p[1] != "b" {
		t.Errorf("cut at %d, want the limit", len(p[0]))
	}
}
