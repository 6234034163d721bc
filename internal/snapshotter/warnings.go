package snapshotter

import (
	"fmt"
	"slices"
	"sync"

	"github.com/mxazure/backups/internal/backup"
)

// Bounds of a snapshot's warnings, far inside Table Storage's limits (64 KiB a property, 1 MiB an
// entity) and inside the domain's own bound (50 warnings), whatever the environment: 10,000 missing
// blobs give 21 lines, not 10,000.
const (
	maxWarningsBytes = 8 << 10 // all warnings together
	maxWarningLength = 256     // one warning, before backup.Truncate's ellipsis
	maxListedMissing = 20      // missing blobs named one by one; the rest are counted
	maxDumpWarnings  = 25      // lines kept of the dump's warnings
)

// missingBlobs collects the file documents whose blob is missing: a count, and the maxListedMissing
// smallest UUIDs, so the list does not depend on which download worker got there first.
type missingBlobs struct {
	mu     sync.Mutex
	count  int
	listed []string // sorted
}

func (m *missingBlobs) add(uuid string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.count++
	if i, _ := slices.BinarySearch(m.listed, uuid); i < maxListedMissing {
		m.listed = slices.Insert(m.listed, i, uuid)
		m.listed = m.listed[:min(len(m.listed), maxListedMissing)]
	}
}

// warnings is the snapshot's list: the dump's warnings, then the missing blobs, within the bounds above.
func warnings(dump []string, m *missingBlobs, container string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var missing []string
	for _, u := range m.listed {
		missing = append(missing, clip(fmt.Sprintf("file document %s has no blob in container %s; it is not in the snapshot", u, container)))
	}
	if rest := m.count - len(m.listed); rest > 0 {
		missing = append(missing, clip(fmt.Sprintf("and %s without a blob in container %s", backup.Count(rest, "more file document"), container)))
	}
	out := append(headAndTail(dump, maxWarningsBytes-size(missing)), missing...)
	if len(out) == 0 {
		return nil
	}
	return out
}

// headAndTail keeps lines within budget bytes and maxDumpWarnings lines: all of them if they fit, else
// the first ones, a line counting those left out, and the last one, which pg.Dump.Warnings makes the
// count of what it left out itself when its list is long.
func headAndTail(lines []string, budget int) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = clip(l)
	}
	if len(out) <= maxDumpWarnings && size(out) <= budget {
		return out
	}
	last := out[len(out)-1]
	used := len(last) + 100 // the line counting what is left out is shorter than 100 bytes
	var head []string
	for _, l := range out[:len(out)-1] {
		if len(head) == maxDumpWarnings-2 || used+len(l) > budget {
			break
		}
		head = append(head, l)
		used += len(l)
	}
	left := len(out) - 1 - len(head)
	return append(head, fmt.Sprintf("%s about file document rows not listed", backup.Count(left, "more warning")), last)
}

func clip(s string) string { return backup.Truncate(s, maxWarningLength) }

func size(lines []string) int {
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	return n
}
