// Command funchost runs the project's local Azure Functions host (package internal/funchost) on an app
// root: it starts the custom handler, forwards HTTP, fires timers and emulates Service Bus.
//
//	funchost -root ./dist -listen 127.0.0.1:7071 -env KEY=VALUE
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/funchost"
)

// envFlags collects repeatable -env KEY=VALUE flags.
type envFlags map[string]string

func (e envFlags) String() string { return fmt.Sprint(map[string]string(e)) }

func (e envFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	e[k] = v
	return nil
}

func main() {
	env := envFlags{}
	root := flag.String("root", ".", "app root holding host.json and the function folders")
	listen := flag.String("listen", funchost.DefaultListen, "address of the host's HTTP endpoint")
	flag.Var(env, "env", "KEY=VALUE added to the handler's environment (repeatable)")
	flag.Parse()

	log := zerolog.New(os.Stdout).With().Timestamp().Str("component", "funchost").Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := funchost.Run(ctx, funchost.Options{AppRoot: *root, Listen: *listen, Env: env, Logger: log})
	if err != nil {
		log.Error().Err(err).Msg("funchost failed")
		os.Exit(1)
	}
}
