package bench

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/mxazure/backups/internal/dev/devstack/pgcluster"
)

// generate creates database name owned by role bench_owner and fills it at the given scale.
func generate(t *testing.T, pg *pgcluster.Cluster, name string, customers int, files []File) {
	t.Helper()
	ctx := t.Context()
	if err := pg.CreateDatabase(ctx, name, "bench_owner"); err != nil {
		t.Fatal(err)
	}
	if err := GenerateDatabase(ctx, pg.DSN(name), "bench_owner", customers, files); err != nil {
		t.Fatalf("generate %s: %v", name, err)
	}
}

// fingerprint returns md5 of every row of every table of db, in id order.
func fingerprint(t *testing.T, pg *pgcluster.Cluster, db string) map[string]string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pg.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	out := map[string]string{}
	for _, table := range []string{"sales$customer", "sales$order", "sales$orderline", "audit$logentry", "system$filedocument"} {
		var sum string
		q := `SELECT md5(string_agg(t::text, '|' ORDER BY id)) || ':' || count(*) FROM ` + pgx.Identifier{table}.Sanitize() + ` t`
		if err := conn.QueryRow(t.Context(), q).Scan(&sum); err != nil {
			t.Fatalf("fingerprint %s: %v", table, err)
		}
		out[table] = sum
	}
	return out
}

func TestGenerateDatabaseIsDeterministicAndMendixLike(t *testing.T) {
	pg := pgcluster.ForTest(t)
	if err := pg.CreateRole(t.Context(), "bench_owner", ""); err != nil {
		t.Fatal(err)
	}
	customers := 1500
	if v := os.Getenv("BENCH_CALIBRATE_CUSTOMERS"); v != "" {
		customers, _ = strconv.Atoi(v) // a larger scale to measure bytesPerCustomer
	}
	files := Files(300)
	generate(t, pg, "first", customers, files)
	generate(t, pg, "second", customers, files)

	a, b := fingerprint(t, pg, "first"), fingerprint(t, pg, "second")
	for table, sum := range a {
		if b[table] != sum {
			t.Errorf("table %s: second generation %s, first %s", table, b[table], sum)
		}
	}
	wantRows := map[string]int{"sales$customer": customers, "sales$order": 4 * customers, "sales$orderline": 12 * customers,
		"audit$logentry": 4 * customers, "system$filedocument": len(files)}
	for table, want := range wantRows {
		if got := a[table][len(a[table])-len(strconv.Itoa(want))-1:]; got != ":"+strconv.Itoa(want) {
			t.Errorf("table %s: rows %s, want %d", table, a[table], want)
		}
	}

	conn, err := pgx.Connect(t.Context(), pg.DSN("first"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(t.Context()))
	var owner, seq, idx int
	if err := conn.QueryRow(t.Context(), `SELECT
  (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> 'bench_owner'),
  (SELECT last_value FROM "sales$order_seq"),
  (SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_sales$customer_email')`).Scan(&owner, &seq, &idx); err != nil {
		t.Fatal(err)
	}
	if owner != 0 || seq != 4*customers || idx != 1 {
		t.Errorf("tables not owned by the role %d, sequence at %d (want %d), email index %d", owner, seq, 4*customers, idx)
	}
	var distinctNotes, withEmail int
	if err := conn.QueryRow(t.Context(), `SELECT count(DISTINCT notes), count(*) FILTER (WHERE email LIKE '%@%.%')
FROM "sales$customer"`).Scan(&distinctNotes, &withEmail); err != nil {
		t.Fatal(err)
	}
	if distinctNotes < customers*9/10 || withEmail != customers {
		t.Errorf("customers: %d distinct notes, %d with an email, of %d: want varied text", distinctNotes, withEmail, customers)
	}
	size, err := DatabaseSize(t.Context(), pg.DSN("postgres"), "first")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d customers: %d bytes on disk, %.0f bytes per customer above an empty database", customers, size,
		float64(size-emptyDatabaseBytes)/float64(customers))
}
