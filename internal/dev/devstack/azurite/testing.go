package azurite

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// ForTest starts an Azurite for the test (lifecycle events in the test log, Azurite's own output left
// out) and stops it, removing its directory, when the test and its subtests finish.
func ForTest(t testing.TB) *Azurite {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs a real Azurite; run without -short")
	}
	// Generous: on a fresh clone the first start runs npm ci.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	a, err := Start(ctx, Options{Logger: log})
	if err != nil {
		t.Fatalf("start azurite: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop azurite: %v", err)
		}
	})
	return a
}
