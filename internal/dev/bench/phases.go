package bench

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"time"
)

// Phases are the moments, from the start of the build, at which the handler's snapshotter finished each
// part of an archive: where a backup spent its time. They come from its "archive written" log line.
type Phases struct {
	DumpDone, FilesDone, Committed, Verified time.Duration
}

// PhasesFromLog finds the "archive written" line of snapshotID in a log written by the local host
// (one JSON object per line, the handler's own JSON line in "message") and returns its phases. The
// handler logs durations as zerolog does by default: float milliseconds.
func PhasesFromLog(r io.Reader, snapshotID string) (Phases, bool) {
	var found Phases
	ok := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var outer struct {
			Source  string `json:"source"`
			Message string `json:"message"`
		}
		if json.Unmarshal(sc.Bytes(), &outer) != nil || outer.Source != "handler" {
			continue
		}
		var line struct {
			Message   string  `json:"message"`
			Blob      string  `json:"blob"`
			DumpDone  float64 `json:"dump_done"`
			FilesDone float64 `json:"files_done"`
			Committed float64 `json:"committed"`
			Verified  float64 `json:"verified"`
		}
		if json.Unmarshal([]byte(outer.Message), &line) != nil || line.Message != "archive written" ||
			!strings.Contains(line.Blob, "/"+snapshotID+"/") {
			continue
		}
		ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
		found, ok = Phases{DumpDone: ms(line.DumpDone), FilesDone: ms(line.FilesDone), Committed: ms(line.Committed),
			Verified: ms(line.Verified)}, true
	}
	return found, ok
}
