package tablestore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/dev/devstack/azurite"
	"github.com/mxazure/backups/internal/storetest"
)

// TestConformance runs the domain's store suite against real Table Storage (Azurite): the same tests
// the in-memory fake passes. Each subtest gets its own table prefix, so they are isolated.
func TestConformance(t *testing.T) {
	az := azurite.ForTest(t)
	var n atomic.Int64
	newStores := func(t *testing.T) backup.Stores {
		s, err := NewFromConnectionString(az.ConnectionString(), fmt.Sprintf("t%d", n.Add(1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.EnsureTables(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s.Stores()
	}
	storetest.Run(t, newStores)
	storetest.RunSnapshots(t, newStores)
}

func TestODataQuoting(t *testing.T) {
	if got := odataString("a'b"); got != "'a''b'" {
		t.Errorf("got %s", got)
	}
}
