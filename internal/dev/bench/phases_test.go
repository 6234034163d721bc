package bench

import (
	"strings"
	"testing"
	"time"
)

// A line as the local host writes it to .local/bench-handler.log, around the handler's own JSON line.
const snapshotLine = `{"level":"info","source":"handler","stream":"stdout","time":"2026-11-24T09:12:14Z","message":"{\"level\":\"info\",\"service\":\"backups\",\"dump\":\"bench/b7e0c001/01a20cbb-128c-71f6-b4ed-ef487c66b548/attempt-01.db.backup.gz\",\"dump_blob\":212513982,\"dump_size\":640000000,\"files\":20000,\"new_files\":200,\"new_bytes\":4000000,\"store_objects\":20200,\"dump_done\":11337.613148,\"files_done\":24945.080844,\"committed\":25013.066864,\"verified\":27322.559406,\"message\":\"snapshot written\"}"}`

func TestPhasesFromLog(t *testing.T) {
	log := strings.Join([]string{
		`{"level":"info","source":"host","message":"Executing 'Functions.BackupJobs'"}`,
		`not json at all`,
		strings.Replace(snapshotLine, "01a20cbb-128c-71f6-b4ed-ef487c66b548", "01a20cbb-0000-0000-0000-000000000000", 1),
		snapshotLine,
		strings.NewReplacer("snapshot written", "archive written", "11337", "99999").Replace(snapshotLine), // another message
		`{"level":"info","source":"handler","stream":"stdout","message":"{\"message\":\"backup finished\"}"}`,
	}, "\n")
	got, ok := PhasesFromLog(strings.NewReader(log), "01a20cbb-128c-71f6-b4ed-ef487c66b548")
	want := Phases{DumpDone: 11337613148 * time.Nanosecond, FilesDone: 24945080844 * time.Nanosecond,
		Committed: 25013066864 * time.Nanosecond, Verified: 27322559406 * time.Nanosecond}
	if !ok || got.DumpDone.Round(time.Millisecond) != want.DumpDone.Round(time.Millisecond) ||
		got.FilesDone.Round(time.Millisecond) != want.FilesDone.Round(time.Millisecond) ||
		got.Committed.Round(time.Millisecond) != want.Committed.Round(time.Millisecond) ||
		got.Verified.Round(time.Millisecond) != want.Verified.Round(time.Millisecond) {
		t.Errorf("got %+v %v, want %+v", got, ok, want)
	}
	if _, ok := PhasesFromLog(strings.NewReader(log), "01a20cbb-1111-0000-0000-000000000000"); ok {
		t.Error("found phases of a snapshot that has no line")
	}
}
