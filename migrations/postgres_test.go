package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// emptyDatabase creates a database with no schema at all, dropped at cleanup.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	admin := pgtest.Shared(t).DSN()
	name := "mig_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), admin)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("admin DSN is not a URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func tables(t *testing.T, dsn string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND table_name IN ('vendors', 'work_items') ORDER BY 1`)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestUpIsIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := emptyDatabase(t)
	for i := range 2 {
		if err := migrations.Up(ctx, dsn); err != nil {
			t.Fatalf("Up #%d: %v", i+1, err)
		}
	}
	if got := fmt.Sprint(tables(t, dsn)); got != "[vendors work_items]" {
		t.Fatalf("tables after Up: %s", got)
	}
	st, err := migrations.Status(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) == 0 {
		t.Fatal("Status lists no migrations")
	}
	for _, s := range st {
		if !s.Applied || s.AppliedAt.IsZero() {
			t.Errorf("migration %d %s not applied after Up", s.Version, s.Name)
		}
	}
}

func TestConcurrentUpAppliesOnce(t *testing.T) {
	ctx := context.Background()
	dsn := emptyDatabase(t)
	const racers = 4
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = migrations.Up(ctx, dsn) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("racer %d: %v", i, err)
		}
	}
	if got := fmt.Sprint(tables(t, dsn)); got != "[vendors work_items]" {
		t.Fatalf("tables after concurrent Up: %s", got)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var applied int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	st, _ := migrations.Status(ctx, dsn)
	if applied != len(st) {
		t.Fatalf("goose recorded %d applications for %d migrations: some ran twice", applied, len(st))
	}
}

func TestDownThenUp(t *testing.T) {
	ctx := context.Background()
	dsn := emptyDatabase(t)
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	st, err := migrations.Status(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	// Down the triggers ALWAYS (00007), the log's checks (00006), the secured
	// change log (00005), the applied writes (00004), the change log (00003),
	// then work_items (00002).
	for i, want := range []string{"[vendors work_items]", "[vendors work_items]", "[vendors work_items]", "[vendors work_items]",
		"[vendors work_items]", "[vendors]"} {
		if err := migrations.Down(ctx, dsn); err != nil {
			t.Fatalf("Down #%d: %v", i+1, err)
		}
		if got := fmt.Sprint(tables(t, dsn)); got != want {
			t.Fatalf("tables after Down #%d: %s, want %s", i+1, got, want)
		}
		after, err := migrations.Status(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if m := after[len(st)-1-i]; m.Applied {
			t.Fatalf("migration %s still applied after Down #%d", m.Name, i+1)
		}
	}
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatalf("Up after Down: %v", err)
	}
}

// changeLogObjects lists what migration 00003 creates: pgfallback_*
// relations (tables, indexes, sequences), functions, and the triggers on
// the entity tables.
func changeLogObjects(t *testing.T, dsn string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `
		SELECT 'relation ' || relname FROM pg_class
			WHERE relname LIKE 'pgfallback%' AND relname NOT LIKE 'pgfallback_applied_writes%'
				AND relnamespace = 'public'::regnamespace
		UNION ALL
		SELECT 'function ' || proname FROM pg_proc
			WHERE proname LIKE 'pgfallback%' AND pronamespace = 'public'::regnamespace
		UNION ALL
		SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass FROM pg_trigger
			WHERE NOT tgisinternal AND tgrelid IN ('vendors'::regclass, 'work_items'::regclass)
		ORDER BY 1`)
	objs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestChangeLogDown(t *testing.T) {
	ctx := context.Background()
	dsn := emptyDatabase(t)
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	objs := changeLogObjects(t, dsn)
	for _, want := range []string{
		"relation pgfallback_changes", "relation pgfallback_change_log",
		"function pgfallback_log_vendor", "function pgfallback_log_work_item", "function pgfallback_log_truncate",
		"trigger pgfallback_vendors_change on vendors", "trigger pgfallback_work_items_truncate on work_items",
	} {
		if !slices.Contains(objs, want) {
			t.Fatalf("after Up, %q is missing from %v", want, objs)
		}
	}
	if len(objs) != 13 { // 2 tables, their 2 primary keys, 1 index, 1 sequence; 3 functions; 4 triggers
		t.Fatalf("after Up: %d change log objects, want 13: %v", len(objs), objs)
	}

	// 00007 (the triggers ALWAYS), 00006 (the log's checks), 00005 (the
	// secured functions) and 00004 (applied writes) come off first, then
	// the change log.
	for _, version := range []string{"00007", "00006", "00005", "00004"} {
		if err := migrations.Down(ctx, dsn); err != nil {
			t.Fatalf("Down %s: %v", version, err)
		}
		if objs := changeLogObjects(t, dsn); len(objs) != 13 {
			t.Fatalf("after Down of %s: %d change log objects, want 13: %v", version, len(objs), objs)
		}
	}
	if err := migrations.Down(ctx, dsn); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if objs := changeLogObjects(t, dsn); len(objs) != 0 {
		t.Fatalf("after Down, left behind: %v", objs)
	}
	if got := fmt.Sprint(tables(t, dsn)); got != "[vendors work_items]" {
		t.Fatalf("tables after Down: %s", got)
	}

	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatalf("Up again: %v", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'again', 'operational')`); err != nil {
		t.Fatal(err)
	}
	var logged int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pgfallback_changes WHERE key = 'again' AND op = 'insert'`).Scan(&logged); err != nil || logged != 1 {
		t.Fatalf("after Up again, an insert logged %d changes (%v), want 1", logged, err)
	}
}

// appliedWritesObjects lists what migration 00004 creates: the table, its
// primary key and its index.
func appliedWritesObjects(t *testing.T, dsn string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT relname::text FROM pg_class
		WHERE relname LIKE 'pgfallback_applied_writes%' AND relnamespace = 'public'::regnamespace ORDER BY 1`)
	objs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestAppliedWritesDown(t *testing.T) {
	ctx := context.Background()
	dsn := emptyDatabase(t)
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	want := "[pgfallback_applied_writes pgfallback_applied_writes_applied_at_idx pgfallback_applied_writes_pkey]"
	if got := fmt.Sprint(appliedWritesObjects(t, dsn)); got != want {
		t.Fatalf("after Up: %s, want %s", got, want)
	}
	for _, version := range []string{"00007", "00006", "00005", "00004"} {
		if err := migrations.Down(ctx, dsn); err != nil {
			t.Fatalf("Down %s: %v", version, err)
		}
	}
	if objs := appliedWritesObjects(t, dsn); len(objs) != 0 {
		t.Fatalf("after Down, left behind: %v", objs)
	}
	if n := len(changeLogObjects(t, dsn)); n != 13 {
		t.Fatalf("Down of 00004 touched the change log: %d objects left, want 13", n)
	}
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatalf("Up again: %v", err)
	}
	if got := fmt.Sprint(appliedWritesObjects(t, dsn)); got != want {
		t.Fatalf("after Up again: %s, want %s", got, want)
	}
}

func TestUpReportsBadDSN(t *testing.T) {
	if err := migrations.Up(context.Background(), "postgres://nobody@127.0.0.1:1/x?connect_timeout=1"); err == nil {
		t.Fatal("Up against a dead server succeeded")
	}
}

// withParam appends a query parameter to a URL DSN.
func withParam(t *testing.T, dsn, param string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("test DSN is not a URL: %v", err)
	}
	if u.RawQuery != "" {
		u.RawQuery += "&"
	}
	u.RawQuery += param
	return u.String()
}

// The application's DATABASE_URL carries pgxpool settings; migrating with
// it must work, not send them to PostgreSQL as unknown settings.
func TestPoolSettingsInDSN(t *testing.T) {
	ctx := context.Background()
	dsn := withParam(t, emptyDatabase(t), "pool_max_conns=5&pool_min_conns=1")
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatalf("Up with pool settings: %v", err)
	}
	st, err := migrations.Status(ctx, dsn)
	if err != nil {
		t.Fatalf("Status with pool settings: %v", err)
	}
	if len(st) == 0 || !st[len(st)-1].Applied {
		t.Fatalf("Status after Up: %+v", st)
	}
	if err := migrations.Down(ctx, dsn); err != nil {
		t.Fatalf("Down with pool settings: %v", err)
	}
}

// The CLI prints these errors: a DSN that cannot be parsed must not show
// its password, including the shapes pgx itself only half masks.
func TestErrorsShowNoPassword(t *testing.T) {
	ctx := context.Background()
	for _, dsn := range []string{
		"postgres://u:s3cretpw@127.0.0.1:notaport/db",
		"postgres://u:s3c@retpw@127.0.0.1:notaport/db",
		"host=127.0.0.1 port=notaport password = s3cretpw",
		"postgres://u:s3cretpw@127.0.0.1:1/db?connect_timeout=1&pool_max_conns=lots",
		"postgres://u:s3cretpw@127.0.0.1:1/db?connect_timeout=1", // parses; nothing listens
	} {
		for name, op := range map[string]func() error{
			"Up":     func() error { return migrations.Up(ctx, dsn) },
			"Status": func() error { _, err := migrations.Status(ctx, dsn); return err },
		} {
			err := op()
			if err == nil {
				t.Errorf("%s(%q) succeeded", name, dsn)
				continue
			}
			if strings.Contains(err.Error(), "s3c") || strings.Contains(err.Error(), "retpw") {
				t.Errorf("%s(%q): the error shows the password: %v", name, dsn, err)
			}
		}
	}
}

// Migration 00006 needs an ACCESS EXCLUSIVE lock on the log, where every
// writer's trigger inserts. Behind a transaction that wrote a
// vendor and stays open, it gives up after its lock_timeout instead of
// queueing every new writer behind it; once that transaction ends, it
// applies.
func TestLogMigrationGivesUpBehindAnOpenWriter(t *testing.T) {
	ctx := context.Background()
	dsn := emptyDatabase(t)
	migrateTo(t, dsn, 5)
	writer, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'open', 'operational')`); err != nil {
		t.Fatal(err)
	}
	// Without its lock_timeout, Up would wait for the writer: bounded here.
	uctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = migrations.Up(uctx, dsn)
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
		t.Fatalf("Up behind an open writer: %v, want a lock timeout (SQLSTATE 55P03)", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, dsn); err != nil {
		t.Fatalf("Up once the writer committed: %v", err)
	}
	st, err := migrations.Status(ctx, dsn)
	if err != nil || !st[len(st)-1].Applied {
		t.Fatalf("after Up: %+v, %v", st, err)
	}
}
