package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/mxazure/backups/internal/dev/funchost"
)

// ResetPeakRSS resets the peak resident set size (VmHWM) of process pid to its current RSS, by writing
// 5 to /proc/<pid>/clear_refs (Linux 4.0+; needs the same user or root).
func ResetPeakRSS(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak rss of %d: %w", pid, err)
	}
	return nil
}

// ReadRSS returns the current (VmRSS) and peak (VmHWM) resident set size of process pid, in bytes.
func ReadRSS(pid int) (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read rss of %d: %w", pid, err)
	}
	return parseStatus(string(b))
}

// parseStatus reads VmRSS and VmHWM ("VmHWM:	   91234 kB") from the text of /proc/<pid>/status.
func parseStatus(status string) (rss, peak int64, err error) {
	found := 0
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("unexpected %s line %q", key, sc.Text())
		}
		if key == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("status has no VmRSS and VmHWM lines")
	}
	return rss, peak, nil
}

// handlerWatch measures the handler's memory during one action through the API: its peak RSS is reset
// when the watch starts and read when it ends, which also fails if the handler restarted meanwhile.
type handlerWatch struct {
	l      *Lab
	before funchost.HostStatus
}

// watchHandler starts a watch and returns the handler's RSS at its start.
func (l *Lab) watchHandler() (*handlerWatch, int64, error) {
	before := l.Stack.Host.Status()
	if before.HandlerPID == 0 {
		return nil, 0, fmt.Errorf("the handler is not running (host %s)", before.State)
	}
	if err := ResetPeakRSS(before.HandlerPID); err != nil {
		return nil, 0, err
	}
	rss, _, err := ReadRSS(before.HandlerPID)
	return &handlerWatch{l: l, before: before}, rss, err
}

// peak is the handler's peak RSS since the watch started; what names the action for the error of a
// restart.
func (w *handlerWatch) peak(what string) (int64, error) {
	_, peak, err := ReadRSS(w.before.HandlerPID)
	if after := w.l.Stack.Host.Status(); after.HandlerPID != w.before.HandlerPID || after.Restarts != w.before.Restarts {
		return 0, fmt.Errorf("the handler restarted during the %s (pid %d -> %d)", what, w.before.HandlerPID, after.HandlerPID)
	}
	return peak, err
}
