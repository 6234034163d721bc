package funchost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// Timings of the real host's handler supervision.
const (
	readinessInterval = 25 * time.Millisecond
	readinessTimeout  = 30 * time.Second
	stopGrace         = 10 * time.Second
	maxRestartBackoff = 10 * time.Second
	// exitGrace is how long a failed invocation waits to see whether the handler died, so that the
	// redelivery goes to the restarted process instead of the dying one.
	exitGrace = 2 * time.Second
)

var errStopped = errors.New("host is stopping")

// handlerProc supervises the custom handler process: it starts it, probes readiness, logs its output,
// restarts it when it exits or is killed after a function timeout, and stops it.
type handlerProc struct {
	app *App
	env map[string]string // extra env from Options, applied after local.settings Values
	url string            // this host's base URL, for LOCAL_SERVICEBUS_URL
	log zerolog.Logger

	mu       sync.Mutex
	cur      *procGen      // nil while (re)starting
	ready    chan struct{} // closed when cur becomes non-nil
	restarts int
	stopping bool
	stopCh   chan struct{}
	done     chan struct{} // closed when the supervisor has returned
}

// procGen is one run of the handler process.
type procGen struct {
	cmd     *exec.Cmd
	port    int
	baseURL string
	exited  chan struct{}
	waitErr error
	started time.Time
	reason  string // why the host killed it, empty for an unexpected exit
}

func newHandlerProc(app *App, env map[string]string, hostURL string, log zerolog.Logger) *handlerProc {
	return &handlerProc{
		app: app, env: env, url: hostURL, log: log,
		ready: make(chan struct{}), stopCh: make(chan struct{}), done: make(chan struct{}),
	}
}

// start launches the handler and returns once it answers the readiness probe.
func (p *handlerProc) start(ctx context.Context) error {
	g, err := p.spawnReady(ctx)
	if err != nil {
		close(p.done)
		return err
	}
	if !p.setCurrent(g) {
		killGroup(g, syscall.SIGKILL)
		<-g.exited
		close(p.done)
		return errStopped
	}
	go p.supervise(g)
	return nil
}

func (p *handlerProc) spawnReady(ctx context.Context) (*procGen, error) {
	g, err := p.spawn()
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, g); err != nil {
		killGroup(g, syscall.SIGKILL)
		<-g.exited
		return nil, err
	}
	p.log.Info().Int("pid", g.cmd.Process.Pid).Int("port", g.port).Msg("handler ready")
	return g, nil
}

// setCurrent publishes g as the running handler; it reports false when the host is stopping, and the
// caller must then stop g itself.
func (p *handlerProc) setCurrent(g *procGen) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return false
	}
	p.cur = g
	close(p.ready)
	return true
}

// supervise restarts the handler each time it exits, until the host stops.
func (p *handlerProc) supervise(g *procGen) {
	defer close(p.done)
	backoff := time.Duration(0)
	for {
		<-g.exited
		p.mu.Lock()
		stopping := p.stopping
		if !stopping {
			p.restarts++
		}
		p.mu.Unlock()
		if stopping {
			return
		}
		ev := p.log.Error()
		if g.reason != "" {
			ev = p.log.Warn().Str("reason", g.reason)
		}
		ev.Err(g.waitErr).Int("pid", g.cmd.Process.Pid).Msg("handler exited, restarting")
		if time.Since(g.started) > time.Minute {
			backoff = 0
		}
		for {
			if backoff > 0 {
				select {
				case <-time.After(backoff):
				case <-p.stopCh:
					return
				}
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), maxRestartBackoff)
			ng, err := p.spawnReady(stopContext(p.stopCh))
			if err == nil {
				if !p.setCurrent(ng) {
					killGroup(ng, syscall.SIGKILL)
					<-ng.exited
					return
				}
				g = ng
				break
			}
			if p.isStopping() {
				return
			}
			p.log.Error().Err(err).Dur("retry_in", backoff).Msg("restart handler")
		}
	}
}

func (p *handlerProc) isStopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
}

// stopContext returns a context cancelled when ch closes.
func stopContext(ch <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-ch
		cancel()
	}()
	return ctx
}

// current returns the running handler, waiting while it restarts.
func (p *handlerProc) current(ctx context.Context) (*procGen, error) {
	for {
		p.mu.Lock()
		g, ready, stopping := p.cur, p.ready, p.stopping
		p.mu.Unlock()
		if stopping {
			return nil, errStopped
		}
		if g != nil {
			return g, nil
		}
		select {
		case <-ready:
		case <-p.done:
			return nil, errStopped
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// status returns the running handler's pid (0 while restarting) and the restart count.
func (p *handlerProc) status() (pid, restarts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil {
		pid = p.cur.cmd.Process.Pid
	}
	return pid, p.restarts
}

// kill stops generation g (if it still runs) so the supervisor restarts it; every invocation in flight
// on it fails, as on the real host after a function timeout.
func (p *handlerProc) kill(g *procGen, reason string) {
	p.mu.Lock()
	if p.cur != g || g.reason != "" {
		p.mu.Unlock()
		return
	}
	g.reason = reason
	p.mu.Unlock()
	p.log.Warn().Int("pid", g.cmd.Process.Pid).Str("reason", reason).Msg("killing handler")
	killGroup(g, syscall.SIGKILL)
}

// awaitExit waits up to exitGrace for g to exit, reporting whether it did.
func (g *procGen) awaitExit() bool {
	select {
	case <-g.exited:
		return true
	case <-time.After(exitGrace):
		return false
	}
}

// stop sends SIGTERM, waits up to 10 s (or ctx), then kills the process group.
func (p *handlerProc) stop(ctx context.Context) error {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.stopping = true
	close(p.stopCh)
	g := p.cur
	p.mu.Unlock()
	if g != nil {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(stopGrace)
		defer timer.Stop()
		select {
		case <-g.exited:
		case <-timer.C:
			p.log.Warn().Int("pid", g.cmd.Process.Pid).Msg("handler ignored SIGTERM, killing")
		case <-ctx.Done():
		}
		killGroup(g, syscall.SIGKILL)
		<-g.exited
	}
	<-p.done
	return nil
}

func killGroup(g *procGen, sig syscall.Signal) {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = syscall.Kill(-g.cmd.Process.Pid, sig)
}

// spawn starts one handler process on a free port.
func (p *handlerProc) spawn() (*procGen, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	exe, dir, err := p.executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, p.app.Host.Arguments...)
	cmd.Dir = dir
	cmd.Env = p.environ(port)
	cmd.Stdout = newLineLogger(p.log, zerolog.InfoLevel)
	cmd.Stderr = newLineLogger(p.log, zerolog.ErrorLevel)
	// Pdeathsig kills the handler if the host dies; its own process group lets the host kill children
	// (pg_dump) along with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start handler %s: %w", exe, err)
	}
	g := &procGen{cmd: cmd, port: port, baseURL: "http://127.0.0.1:" + strconv.Itoa(port),
		exited: make(chan struct{}), started: time.Now()}
	go func() {
		err := cmd.Wait()
		cmd.Stdout.(*lineLogger).flush()
		cmd.Stderr.(*lineLogger).flush()
		p.mu.Lock()
		if p.cur == g {
			p.cur = nil
			p.ready = make(chan struct{})
		}
		g.waitErr = err
		p.mu.Unlock()
		close(g.exited)
	}()
	p.log.Info().Int("pid", cmd.Process.Pid).Int("port", port).Str("executable", exe).Msg("handler started")
	return g, nil
}

// executable resolves defaultExecutablePath against workingDirectory, the app root, then PATH.
func (p *handlerProc) executable() (exe, dir string, err error) {
	hc := p.app.Host
	dir = p.app.Root
	if wd := hc.WorkingDirectory; wd != "" {
		if filepath.IsAbs(wd) {
			dir = wd
		} else {
			dir = filepath.Join(p.app.Root, wd)
		}
	}
	exe = hc.ExecutablePath
	if filepath.IsAbs(exe) {
		return exe, dir, nil
	}
	for _, base := range []string{dir, p.app.Root} {
		cand := filepath.Join(base, exe)
		if st, err := os.Stat(cand); err == nil && !st.IsDir() {
			return cand, dir, nil
		}
	}
	found, err := exec.LookPath(exe)
	if err != nil {
		return "", "", fmt.Errorf("handler executable %s: not in %s, %s or PATH", exe, dir, p.app.Root)
	}
	return found, dir, nil
}

// environ builds the handler's environment: process env, local.settings Values, extra env, then the
// variables the real host sets.
func (p *handlerProc) environ(port int) []string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	for k, v := range p.app.Settings {
		m[k] = v
	}
	for k, v := range p.env {
		m[k] = v
	}
	ps := strconv.Itoa(port)
	m["FUNCTIONS_CUSTOMHANDLER_PORT"] = ps
	m["FUNCTIONS_HTTPWORKER_PORT"] = ps
	m["FUNCTIONS_WORKER_RUNTIME"] = "custom"
	m["AzureWebJobsScriptRoot"] = p.app.Root
	if m["LOCAL_SERVICEBUS_URL"] == "" {
		m["LOCAL_SERVICEBUS_URL"] = p.url
	}
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// waitReady polls GET / every 25 ms until any HTTP response arrives.
func (p *handlerProc) waitReady(ctx context.Context, g *procGen) error {
	ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(readinessInterval)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.baseURL+"/", nil)
		if err != nil {
			return fmt.Errorf("readiness probe: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-g.exited:
			return fmt.Errorf("handler exited before it was ready: %v", g.waitErr)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("handler did not answer GET / within %s", readinessTimeout)
			}
			return fmt.Errorf("wait for handler: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lineLogger logs each line written to it (stdout at info, stderr at error, as the real host does).
type lineLogger struct {
	mu    sync.Mutex
	log   zerolog.Logger
	level zerolog.Level
	buf   []byte
}

const maxLogLine = 64 << 10

func newLineLogger(log zerolog.Logger, level zerolog.Level) *lineLogger {
	stream := "stdout"
	if level == zerolog.ErrorLevel {
		stream = "stderr"
	}
	return &lineLogger{log: log.With().Str("source", "handler").Str("stream", stream).Logger(), level: level}
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) >= maxLogLine {
				l.emit(l.buf)
				l.buf = l.buf[:0]
			}
			return len(b), nil
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *lineLogger) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) == 0 {
		return
	}
	l.log.WithLevel(l.level).Msg(string(line))
}
