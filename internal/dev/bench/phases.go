package bench

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"time"
)

// Phases are the moments, from the start of the backup, at which the handler's snapshotter finished
// each part of a snapshot: where a backup spent its time. They come from its "snapshot written" log
// line: the dump compressed, the files in the file store and the manifest written, the dump blob
// committed, and read back and verified.
type Phases struct {
	DumpDone, FilesDone, Committed, Verified time.Duration
}

// PhasesFromLog finds the "snapshot written" line of snapshotID (its "dump" blob is under the
// snapshot's folder) in a log written by the local host (one JSON object per line, the handler's own
// JSON line in "message") and returns its phases. The handler logs durations as zerolog does by
// default: float milliseconds.
func PhasesFromLog(r io.Reader, snapshotID string) (Phases, bool) {
	var found Phases
	ok := false
	handlerLines(r, func(msg []byte) {
		var line struct {
			Message   string  `json:"message"`
			Dump      string  `json:"dump"`
			DumpDone  float64 `json:"dump_done"`
			FilesDone float64 `json:"files_done"`
			Committed float64 `json:"committed"`
			Verified  float64 `json:"verified"`
		}
		if json.Unmarshal(msg, &line) != nil || line.Message != "snapshot written" ||
			!strings.Contains(line.Dump, "/"+snapshotID+"/") {
			return
		}
		found, ok = Phases{DumpDone: millis(line.DumpDone), FilesDone: millis(line.FilesDone), Committed: millis(line.Committed),
			Verified: millis(line.Verified)}, true
	})
	return found, ok
}

// handlerLines calls fn with the handler's own JSON line (the "message" of the local host's line) for
// every line of a log the local host wrote that came from the handler.
func handlerLines(r io.Reader, fn func(msg []byte)) {
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
		fn([]byte(outer.Message))
	}
}

// millis is a duration the handler logged, as zerolog does by default: float milliseconds.
func millis(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
