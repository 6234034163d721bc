package pgcluster

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// ForTest starts a cluster for the test (lifecycle events in the test log, server log at debug level
// left out) and stops it, removing its directory, when the test and its subtests finish.
func ForTest(t testing.TB) *Cluster {
	t.Helper()
	return ForTestWith(t, Options{})
}

// ForTestWith is ForTest with opts (their Logger is replaced by the test's): Options{Embedded: true}
// for a PostgreSQL 17 server, say. npm may have to install it first, which the start's bound allows.
func ForTestWith(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs a real PostgreSQL; run without -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	opts.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start postgres cluster: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop postgres cluster: %v", err)
		}
	})
	return c
}
