package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// bytesPerCustomer is the database size on disk (pg_database_size, tables and indexes) per customer
// row of the generated schema, where every other table is a multiple of the customers; measured on
// PostgreSQL 15. CustomersFor uses it to aim at a size; the report prints the size reached.
const bytesPerCustomer = 4170

// emptyDatabaseBytes is pg_database_size of a new empty database (the catalog).
const emptyDatabaseBytes = 7_500_000

// CustomersFor returns the number of customers that makes a database of about mb megabytes.
func CustomersFor(mb int) int {
	return max(1000, (mb*1_000_000-emptyDatabaseBytes)/bytesPerCustomer)
}

// phrases is the number of distinct generated sentences the text columns pick from.
const phrases = 8192

// GenerateDatabase fills database db (reached through dsn as a superuser) with the Mendix-like schema
// at the given scale, owned by role: wide tables with text, an index, a sequence, and
// system$filedocument holding files. It ends with VACUUM FREEZE ANALYZE so that every backup that
// follows reads the same settled pages.
func GenerateDatabase(ctx context.Context, dsn, role string, customers int, files []File) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for i, stmt := range schemaStatements(role, customers) {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("generate step %d (%.60s): %w", i, strings.TrimSpace(stmt), err)
		}
	}
	rows := make([][]any, len(files))
	for i, f := range files {
		rows[i] = []any{f.ID, f.UUID, f.Name, int64(f.Size), true, false}
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"system$filedocument"},
		[]string{"id", "__uuid__", "name", "size", "hascontents", "deleteafterdownload"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("copy file documents: %w", err)
	}
	for _, stmt := range []string{"RESET ROLE", "VACUUM (FREEZE, ANALYZE)"} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	return nil
}

// DatabaseSize returns pg_database_size of db.
func DatabaseSize(ctx context.Context, dsn, db string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	if err := conn.QueryRow(ctx, "SELECT pg_database_size($1)", db).Scan(&n); err != nil {
		return 0, fmt.Errorf("database size of %s: %w", db, err)
	}
	return n, nil
}

// sqlArray renders a text array literal of vocabulary words (plain letters, dots and digits only).
func sqlArray(items []string) string {
	return "ARRAY['" + strings.Join(items, "','") + "']"
}

// pick defines pg_temp.<name>(i int): the vocabulary item i modulo its length. The functions are
// inlined by the planner and vanish with the session, so they are not part of any dump.
func pick(name string, items []string) string {
	return fmt.Sprintf(`CREATE FUNCTION pg_temp.%s(i int) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT (%s)[1 + i %% %d] $$`, name, sqlArray(items), len(items))
}

// schemaStatements is the generation script, one statement per entry (VACUUM and friends cannot run
// in the implicit transaction of a multi-statement string). h(g, salt) is a non-negative hash of the
// row number: deterministic, uncorrelated between salts.
func schemaStatements(role string, customers int) []string {
	n := customers
	ts := func(salt int) string {
		return fmt.Sprintf("timestamp '2016-01-01' + (pg_temp.h(g, %d) %% 260000000) * interval '1 second'", salt)
	}
	return []string{
		"SET ROLE " + pgx.Identifier{role}.Sanitize(),
		`CREATE FUNCTION pg_temp.h(g bigint, salt int) RETURNS int LANGUAGE sql IMMUTABLE AS
$$ SELECT hashint8(g * 64 + salt) & 2147483647 $$`,
		pick("w", words), pick("first", firstNames), pick("last", lastNames), pick("domain", domains),
		pick("city", cities), pick("country", countries),
		fmt.Sprintf(`CREATE TEMP TABLE phrase AS SELECT p AS id,
  (SELECT string_agg(pg_temp.w(pg_temp.h(p * 32 + k, 7)), ' ') FROM generate_series(1, 5 + pg_temp.h(p, 1) %% 12) k) AS txt
FROM generate_series(0, %d) p`, phrases-1),
		`ALTER TABLE phrase ADD PRIMARY KEY (id)`,
		`ANALYZE phrase`,
		`CREATE TABLE "mendixsystem$version" (versionnumber varchar(50), lastsyncdate timestamp)`,
		`INSERT INTO "mendixsystem$version" VALUES ('9.24.0.2965', timestamp '2024-03-01 12:00:00')`,
		`CREATE TABLE "sales$customer" (id bigint PRIMARY KEY, name varchar(200), email varchar(200),
  phone varchar(40), street varchar(200), city varchar(100), country varchar(100), notes text,
  loyaltypoints integer, creditlimit numeric(18,2), createddate timestamp, changeddate timestamp,
  "system$owner" bigint, "system$changedby" bigint)`,
		fmt.Sprintf(`INSERT INTO "sales$customer"
SELECT g, pg_temp.first(pg_temp.h(g, 1)) || ' ' || pg_temp.last(pg_temp.h(g, 2)),
  lower(pg_temp.first(pg_temp.h(g, 1)) || '.' || pg_temp.last(pg_temp.h(g, 2))) || (g %% 997) || '@' || pg_temp.domain(pg_temp.h(g, 3)),
  '+31 6 ' || lpad((pg_temp.h(g, 4) %% 100000000)::text, 8, '0'),
  initcap(pg_temp.w(pg_temp.h(g, 6))) || 'straat ' || (1 + pg_temp.h(g, 5) %% 299),
  pg_temp.city(pg_temp.h(g, 7)), pg_temp.country(pg_temp.h(g, 8)),
  initcap(p1.txt) || '. ' || initcap(p2.txt) || '.',
  pg_temp.h(g, 9) %% 50000, (pg_temp.h(g, 10) %% 10000000) / 100.0,
  %s, %s + (pg_temp.h(g, 12) %% 9000000) * interval '1 second',
  1 + pg_temp.h(g, 13) %% 50, 1 + pg_temp.h(g, 14) %% 50
FROM generate_series(1, %d) g
JOIN phrase p1 ON p1.id = pg_temp.h(g, 20) %% %d
JOIN phrase p2 ON p2.id = pg_temp.h(g, 21) %% %d`, ts(11), ts(11), n, phrases, phrases),
		`CREATE INDEX "idx_sales$customer_email" ON "sales$customer" (email)`,
		`CREATE SEQUENCE "sales$order_seq"`,
		`CREATE TABLE "sales$order" (id bigint PRIMARY KEY DEFAULT nextval('"sales$order_seq"'),
  ordernumber varchar(40), customer bigint, status varchar(20), totalamount numeric(18,2),
  currency varchar(3), description text, trackingcode varchar(36), orderdate timestamp,
  createddate timestamp, changeddate timestamp, "system$owner" bigint)`,
		fmt.Sprintf(`INSERT INTO "sales$order"
SELECT g, 'ORD-' || (2016 + pg_temp.h(g, 1) %% 9) || '-' || lpad(g::text, 8, '0'), 1 + pg_temp.h(g, 2) %% %d,
  (ARRAY['Draft','Submitted','Paid','Shipped','Delivered','Cancelled'])[1 + pg_temp.h(g, 3) %% 6],
  (pg_temp.h(g, 4) %% 5000000) / 100.0, (ARRAY['EUR','EUR','EUR','USD','GBP'])[1 + pg_temp.h(g, 5) %% 5],
  initcap(p1.txt) || '.', md5('order-' || g)::uuid::text,
  %s, %s, %s + (pg_temp.h(g, 12) %% 9000000) * interval '1 second', 1 + pg_temp.h(g, 13) %% 50
FROM generate_series(1, %d) g
JOIN phrase p1 ON p1.id = pg_temp.h(g, 20) %% %d`, n, ts(11), ts(11), ts(11), 4*n, phrases),
		fmt.Sprintf(`SELECT setval('"sales$order_seq"', %d)`, 4*n),
		`CREATE INDEX "idx_sales$order_customer" ON "sales$order" (customer)`,
		`CREATE TABLE "sales$orderline" (id bigint PRIMARY KEY, "order" bigint, product varchar(200),
  sku varchar(40), quantity integer, unitprice numeric(18,2), discount numeric(5,2), createddate timestamp)`,
		fmt.Sprintf(`INSERT INTO "sales$orderline"
SELECT g, 1 + (g - 1) / 3,
  initcap(pg_temp.w(pg_temp.h(g, 1))) || ' ' || pg_temp.w(pg_temp.h(g, 2)) || ' ' || (ARRAY['S','M','L','XL'])[1 + pg_temp.h(g, 3) %% 4],
  'SKU-' || upper(substr(md5('sku-' || (pg_temp.h(g, 4) %% 50000)), 1, 8)),
  1 + pg_temp.h(g, 5) %% 20, (pg_temp.h(g, 6) %% 100000) / 100.0, (pg_temp.h(g, 7) %% 30)::numeric, %s
FROM generate_series(1, %d) g`, ts(11), 12*n),
		`CREATE TABLE "audit$logentry" (id bigint PRIMARY KEY, loglevel varchar(10), node varchar(100),
  message text, correlationid varchar(36), username varchar(100), ipaddress varchar(45), logdate timestamp)`,
		fmt.Sprintf(`INSERT INTO "audit$logentry"
SELECT g, (ARRAY['INFO','INFO','INFO','WARNING','ERROR','DEBUG'])[1 + pg_temp.h(g, 1) %% 6],
  'Sales.' || initcap(pg_temp.w(pg_temp.h(g, 2))) || 'Handler',
  pg_temp.first(pg_temp.h(g, 3)) || ' ' || pg_temp.last(pg_temp.h(g, 4)) || ': ' || p1.txt || ' (ORD-' || (2016 + pg_temp.h(g, 5) %% 9) || '-' || lpad((1 + pg_temp.h(g, 6) %% %d)::text, 8, '0') || ')',
  md5('correlation-' || g)::uuid::text,
  lower(pg_temp.first(pg_temp.h(g, 3)) || '.' || pg_temp.last(pg_temp.h(g, 4))),
  '10.' || (pg_temp.h(g, 7) %% 256) || '.' || (pg_temp.h(g, 8) %% 256) || '.' || (pg_temp.h(g, 9) %% 256), %s
FROM generate_series(1, %d) g
JOIN phrase p1 ON p1.id = pg_temp.h(g, 20) %% %d`, 4*n, ts(11), 4*n, phrases),
		`CREATE TABLE "system$filedocument" (id bigint PRIMARY KEY, __uuid__ varchar(36), name varchar(400),
  size bigint, hascontents boolean, deleteafterdownload boolean)`,
	}
}

// Elapsed formats a duration in seconds with one decimal, as the report does.
func Elapsed(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// ServerVersion returns the server_version of the PostgreSQL server behind dsn.
func ServerVersion(ctx context.Context, dsn string) (string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "", fmt.Errorf("server version: %w", err)
	}
	return v, nil
}
