// Package proc runs the child processes of the devstack packages (PostgreSQL, Azurite): each child is
// tied to the life of the current process with Pdeathsig, gets its own process group so a terminal's
// Ctrl-C reaches only the parent, has its output logged line by line with a tail kept for error
// messages, and is stopped with a polite signal followed by SIGKILL after a bound.
//
// Linux only: it relies on SysProcAttr.Pdeathsig.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// waitDelay bounds how long Wait keeps reading output after the child exited, for grandchildren that
// inherited the output pipe (PostgreSQL backends outliving a killed postmaster).
const waitDelay = 5 * time.Second

// SysProcAttr returns the attributes every devstack child gets: SIGKILL when the thread that started it
// dies (so a killed test binary takes its servers with it), and its own process group.
// cred, when non-nil, runs the child as another user; Go applies Pdeathsig after the credential change,
// so the two combine.
func SysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
}

// Process is a started child process with its exit observed in the background.
type Process struct {
	cmd  *exec.Cmd
	out  *LineWriter
	done chan struct{}
	err  error // set before done is closed
}

// Start starts cmd with its stdout and stderr sent to out, and SysProcAttr(cred) unless cmd already
// has attributes. The caller must eventually call Stop (or observe Done) to reap the process.
//
// Pdeathsig fires when the thread that forked the child ends, and Go ends a thread when a goroutine
// that locked it exits. So the child is started and waited for by a goroutine locked to its thread:
// that thread lives exactly as long as the child.
func Start(cmd *exec.Cmd, out *LineWriter, cred *syscall.Credential) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = SysProcAttr(cred)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = waitDelay
	p := &Process{cmd: cmd, out: out, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the child has exited and its output is drained.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has exited, and with which Wait error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends sig, waits up to grace (or until ctx ends, whichever is first) for the child to exit, then
// sends SIGKILL and waits for the exit. It returns nil when the child is gone, whatever its exit
// status: a stop that ends with the process gone is a successful stop. Safe to call more than once.
func (p *Process) Stop(ctx context.Context, sig os.Signal, grace time.Duration) error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal pid %d: %w", p.Pid(), err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pid %d: %w", p.Pid(), err)
	}
	// SIGKILL cannot be ignored; the bound only guards against a kernel stuck in uninterruptible I/O.
	select {
	case <-p.done:
		return nil
	case <-time.After(waitDelay + 10*time.Second):
		return fmt.Errorf("pid %d still running after SIGKILL", p.Pid())
	}
}

// LineWriter is the stdout/stderr of a child: it splits the output into lines, logs each at debug
// level, calls an optional hook per line and keeps the last lines for error messages.
// It is safe for concurrent use.
type LineWriter struct {
	log    zerolog.Logger
	onLine func(string)

	mu      sync.Mutex
	partial []byte
	tail    []string
	keep    int
}

// NewLineWriter returns a writer that logs each line to log at debug level, keeps the last keep lines
// and calls onLine (when non-nil) for every complete line, from the goroutine that writes.
func NewLineWriter(log zerolog.Logger, keep int, onLine func(line string)) *LineWriter {
	return &LineWriter{log: log, onLine: onLine, keep: keep}
}

// Write implements io.Writer. It never fails.
func (w *LineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.partial = append(w.partial, b...)
	var lines []string
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.partial[:i]), "\r")
		w.partial = w.partial[i+1:]
		lines = append(lines, line)
		w.tail = append(w.tail, line)
		if len(w.tail) > w.keep {
			w.tail = w.tail[len(w.tail)-w.keep:]
		}
	}
	w.mu.Unlock()
	for _, line := range lines {
		w.log.Debug().Msg(line)
		if w.onLine != nil {
			w.onLine(line)
		}
	}
	return len(b), nil
}

// Tail returns the last lines written (including an unterminated last line), joined by newlines.
func (w *LineWriter) Tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := append([]string(nil), w.tail...)
	if len(w.partial) > 0 {
		lines = append(lines, string(w.partial))
	}
	return strings.Join(lines, "\n")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another process can take it
// before the caller binds it: callers must retry on "address in use".
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
