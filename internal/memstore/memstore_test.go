package memstore

import (
	"testing"

	"github.com/mxazure/backups/internal/backup"
	"github.com/mxazure/backups/internal/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) backup.Stores { return New().Stores() })
}

func TestSnapshotConformance(t *testing.T) {
	storetest.RunSnapshots(t, func(*testing.T) backup.Stores { return New().Stores() })
}

func TestRestoreConformance(t *testing.T) {
	storetest.RunRestores(t, func(*testing.T) backup.Stores { return New().Stores() })
	storetest.RunTransfers(t, func(*testing.T) backup.Stores { return New().Stores() })
}

// TestScheduleConformance pages the walk by 3 environments, so that the suite's few dozen cross pages.
func TestScheduleConformance(t *testing.T) {
	storetest.RunSchedule(t, func(*testing.T) backup.Stores {
		s := New()
		s.walkPage = 3
		return s.Stores()
	})
}
