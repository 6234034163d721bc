package snapshotter

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mxazure/backups/internal/dev/devstack/azurite"
	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// The package's tests share one PostgreSQL cluster and one Azurite: starting a cluster takes seconds
// (initdb), and every test works in a database, a file container and an environment of its own, so
// that they cannot see each other's data.
var stack struct {
	once    sync.Once
	cluster *pgcluster.Cluster
	az      *azurite.Azurite
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if stack.az != nil {
		if err := stack.az.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "stop azurite:", err)
		}
	}
	if stack.cluster != nil {
		if err := stack.cluster.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "stop postgres cluster:", err)
		}
	}
	os.Exit(code)
}

// sharedStack starts the cluster and Azurite for the first test that needs them.
func sharedStack(t *testing.T) (*pgcluster.Cluster, *azurite.Azurite) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs a real PostgreSQL and a real Azurite; run without -short")
	}
	stack.once.Do(func() {
		// Generous: on a fresh clone Azurite's first start runs npm ci.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		log := zerolog.New(zerolog.NewConsoleWriter(func(w *zerolog.ConsoleWriter) { w.Out = os.Stderr })).Level(zerolog.WarnLevel)
		if stack.cluster, stack.err = pgcluster.Start(ctx, pgcluster.Options{Logger: log}); stack.err != nil {
			stack.err = fmt.Errorf("start postgres cluster: %w", stack.err)
			return
		}
		if stack.az, stack.err = azurite.Start(ctx, azurite.Options{Logger: log, InMemory: true}); stack.err != nil {
			stack.err = fmt.Errorf("start azurite: %w", stack.err)
		}
	})
	if stack.err != nil {
		t.Fatal(stack.err)
	}
	return stack.cluster, stack.az
}
