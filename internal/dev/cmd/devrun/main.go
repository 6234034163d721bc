// Command devrun runs the service locally (`make run`) and mints tokens for its demo user
// (`make token`).
//
//	devrun run -app dist [-listen 127.0.0.1:7071]   Azurite + PostgreSQL + issuer + local host + demo seed
//	devrun token [-user <oid>]                      a bearer token for the running instance
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/auth/localissuer"
	"github.com/mxazure/backups/internal/dev/devstack/stack"
)

// stateDir keeps the issuer key and the description of the running instance, for `make token`.
const stateDir = ".local"

type runState struct {
	URL       string `json:"url"`
	IssuerURL string `json:"issuer_url"`
	Audience  string `json:"audience"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: devrun run -app DIR | devrun token [-user OID]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "token":
		err = token(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (run, token)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devrun:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	app := fs.String("app", "dist", "app folder: host.json, function folders and the handler binary (make package)")
	listen := fs.String("listen", "127.0.0.1:7071", "address of the local Functions host")
	_ = fs.Parse(args)

	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stdout, TimeFormat: time.TimeOnly}).With().Timestamp().Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	absApp, err := filepath.Abs(*app)
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(stateDir)
	st, err := stack.Start(ctx, stack.Options{AppDir: absApp, Listen: *listen, StateDir: abs, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		log.Info().Msg("stopping")
		stopCtx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		if err := st.Stop(stopCtx); err != nil {
			log.Warn().Err(err).Msg("stop")
		}
	}()
	state, _ := json.Marshal(runState{URL: st.URL, IssuerURL: st.IssuerURL, Audience: stack.Audience})
	if err := os.WriteFile(filepath.Join(abs, "run.json"), state, 0o600); err != nil {
		return err
	}
	log.Info().Msg("seeding the demo environment")
	demo, err := st.SeedDemo(ctx)
	if err != nil {
		return err
	}
	fmt.Printf(`
The backup service is running.
  API (local Functions host):  %[1]s/api
  Health:                      %[1]s/api/health
  OpenAPI:                     %[1]s/api/v1/openapi.json
  OIDC issuer:                 %[2]s
  Azurite blob/table:          %[3]s  %[4]s
  PostgreSQL 15:               127.0.0.1:%[5]d (user postgres, password %[6]s)
Demo: namespace %[7]q, environment %[8]s (stopped, deployed), user %[9]s.
Get a token:   TOKEN=$(make -s token)
Try:           curl -H "Authorization: Bearer $TOKEN" %[1]s/api/v1/namespaces/%[7]s/environments
Ctrl-C stops everything.
`, st.URL, st.IssuerURL, st.Azurite.BlobURL, st.Azurite.TableURL, st.Postgres.Port, st.Postgres.Password,
		demo.Namespace, demo.EnvironmentID, stack.DemoUserID)
	<-ctx.Done()
	return nil
}

func token(args []string) error {
	fs := flag.NewFlagSet("token", flag.ExitOnError)
	user := fs.String("user", stack.DemoUserID, "principal (oid) of the token")
	name := fs.String("name", stack.DemoUserName, "display name")
	ttl := fs.Duration("ttl", 8*time.Hour, "token lifetime")
	_ = fs.Parse(args)
	raw, err := os.ReadFile(filepath.Join(stateDir, "run.json"))
	if err != nil {
		return fmt.Errorf("no running instance found (%v): start one with `make run` first", err)
	}
	var state runState
	if err := json.Unmarshal(raw, &state); err != nil {
		return fmt.Errorf("read %s/run.json: %w", stateDir, err)
	}
	iss, err := localissuer.New(localissuer.Options{KeyFile: filepath.Join(stateDir, "issuer-key.pem"), Issuer: state.IssuerURL})
	if err != nil {
		return err
	}
	tok, err := iss.Token(localissuer.TokenRequest{Subject: *user, ObjectID: *user, Name: *name, Audience: state.Audience, TTL: *ttl})
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
