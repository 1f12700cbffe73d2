package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// A session whose session_replication_role is replica (logical
// replication's apply workers, and tools that load data that way) fires
// only triggers enabled ALWAYS: its writes must reach the log too.
func TestReplicaRoleWritesAreLogged(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'acme', 'operational')`)
	h := changeHead(t, ctx, s)

	conn := ownConn(t, ctx, s)
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			t.Skipf("the test's role may not set session_replication_role: %v", err)
		}
		t.Fatal(err)
	}
	for _, sql := range []string{
		`UPDATE vendors SET status = 'broken', version = version + 1 WHERE name = 'acme'`,
		`INSERT INTO work_items (id, type, title, status) VALUES (gen_random_uuid(), 'task', 'replicated', 'active')`,
		`TRUNCATE work_items`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	all, _, _ := readAllChanges(t, ctx, s, h, 100)
	got := describeChanges(all)
	if len(got) != 3 || got[0] != "vendor acme update 2" || !strings.HasPrefix(got[1], "work_item ") || got[2] != "work_item  truncate 0" {
		t.Fatalf("changes written as session_replication_role=replica: %q, want the update, the insert and the truncate", got)
	}
}

// Changes that reach a table while one of the log's triggers does not
// fire must not be passed over: while a trigger is disabled, missing or
// not enabled ALWAYS, the log says it is incomplete, and a cursor read
// before any change to the triggers expires, even when the change was
// undone in the same transaction.
func TestAlteredTriggersStopAndExpireTheFeed(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'acme', 'operational')`)
	const bump = `UPDATE vendors SET version = version + 1 WHERE name = 'acme'`

	incomplete := func(step string, want ...string) {
		t.Helper()
		_, err := s.ChangeHead(ctx)
		if !errors.Is(err, repository.ErrChangeLogIncomplete) {
			t.Fatalf("%s: ChangeHead: %v, want ErrChangeLogIncomplete", step, err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: %v, want it to say %q", step, err, w)
			}
		}
	}
	expired := func(step, cur string) {
		t.Helper()
		if _, err := s.ReadChanges(ctx, cur, 10); !errors.Is(err, repository.ErrCursorExpired) {
			t.Fatalf("%s: a cursor read before: %v, want ErrCursorExpired", step, err)
		}
	}

	// Disabled for a load, then enabled again.
	h := changeHead(t, ctx, s)
	feedExec(t, ctx, s, `ALTER TABLE vendors DISABLE TRIGGER pgfallback_vendors_change`)
	feedExec(t, ctx, s, bump) // not logged
	incomplete("disabled", "pgfallback_vendors_change on vendors is disabled", "ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change")
	if _, err := s.ReadChanges(ctx, h, 10); !errors.Is(err, repository.ErrChangeLogIncomplete) {
		t.Fatalf("disabled: ReadChanges: %v, want ErrChangeLogIncomplete", err)
	}
	feedExec(t, ctx, s, `ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change`)
	expired("disabled, then enabled", h)

	// Disabled and enabled again inside the transaction that wrote: no
	// reader ever saw it disabled.
	h = changeHead(t, ctx, s)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{`ALTER TABLE vendors DISABLE TRIGGER ALL`, bump, `ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change`,
		`ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_truncate`} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	expired("disabled and enabled in one transaction", h)

	// "ENABLE TRIGGER ALL" after a bulk load puts them back to firing for
	// origin sessions only.
	h = changeHead(t, ctx, s)
	feedExec(t, ctx, s, `ALTER TABLE work_items ENABLE TRIGGER ALL`)
	incomplete("enabled for origin sessions only", "pgfallback_work_items_change on work_items does not fire for logical replication",
		"migration 00007")
	feedExec(t, ctx, s, `ALTER TABLE work_items ENABLE ALWAYS TRIGGER pgfallback_work_items_change`)
	feedExec(t, ctx, s, `ALTER TABLE work_items ENABLE ALWAYS TRIGGER pgfallback_work_items_truncate`)
	expired("re-enabled ALWAYS", h)

	// Dropped.
	h = changeHead(t, ctx, s)
	feedExec(t, ctx, s, `DROP TRIGGER pgfallback_vendors_truncate ON vendors`)
	incomplete("dropped", "pgfallback_vendors_truncate on vendors is missing", "migrations.Up")

	// Nothing else about the triggers' table expires a cursor.
	feedExec(t, ctx, s, `CREATE TRIGGER pgfallback_vendors_truncate AFTER TRUNCATE ON vendors
		FOR EACH STATEMENT EXECUTE FUNCTION pgfallback_log_truncate('vendor')`)
	feedExec(t, ctx, s, `ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_truncate`)
	expired("re-created", h)
	h = changeHead(t, ctx, s)
	var body string
	if err := s.Pool().QueryRow(ctx, `SELECT pg_get_functiondef('pgfallback_log_vendor'::regproc)`).Scan(&body); err != nil {
		t.Fatal(err)
	}
	feedExec(t, ctx, s, body) // CREATE OR REPLACE, as it was
	expired("its function replaced", h)
	h = changeHead(t, ctx, s)
	feedExec(t, ctx, s, `ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change`) // already: no catalog write
	feedExec(t, ctx, s, `COMMENT ON TABLE vendors IS 'vendors'`)
	feedExec(t, ctx, s, `VACUUM FREEZE pg_catalog.pg_trigger, pg_catalog.pg_proc`)
	feedExec(t, ctx, s, bump)
	if b, err := s.ReadChanges(ctx, h, 10); err != nil || len(b.Changes) != 1 {
		t.Fatalf("after statements that leave the triggers as they were: %v, %v; want the one update", describeChanges(b.Changes), err)
	}
}

// Logical replication applies changes as session_replication_role=replica:
// a database subscribed to another's vendors logs what the subscription
// applies.
func TestLogicalReplicationIsLogged(t *testing.T) {
	ctx := feedCtx(t)
	srv := pgtest.NewServer(t, "wal_level=logical", "max_replication_slots=4", "max_wal_senders=4")
	pubDSN, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subDSN, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pgx.Connect(ctx, pubDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(ctx)
	sub, err := pgstore.Open(ctx, subDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	h := changeHead(t, ctx, sub)

	// A subscription to a database of the same server cannot create its
	// slot while it is created: the slot is made first.
	for _, sql := range []string{
		`CREATE PUBLICATION vendors_pub FOR TABLE vendors`,
		`SELECT pg_create_logical_replication_slot('vendors_sub', 'pgoutput')`,
	} {
		if _, err := pub.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// The subscription connects from the server itself: to the port it
	// listens on there, which in Docker mode is not the one the tests dial.
	var port int
	if err := pub.QueryRow(ctx, `SELECT inet_server_port()`).Scan(&port); err != nil {
		t.Fatal(err)
	}
	cfg := pub.Config()
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s", port, cfg.User, cfg.Database)
	if cfg.Password != "" {
		conninfo += " password=" + cfg.Password
	}
	if _, err := sub.Pool().Exec(ctx, `CREATE SUBSCRIPTION vendors_sub CONNECTION '`+conninfo+
		`' PUBLICATION vendors_pub WITH (create_slot = false)`); err != nil {
		t.Fatalf("create subscription: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sub.Pool().Exec(c, `DROP SUBSCRIPTION vendors_sub`) // drops the slot too
	})
	// The initial copy of the (empty) table first, so that the writes below
	// are replicated one by one.
	deadline := time.Now().Add(30 * time.Second)
	for synced := false; !synced; {
		if time.Now().After(deadline) {
			t.Fatal("the subscription's initial copy did not finish within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
		if err := sub.Pool().QueryRow(ctx, `SELECT count(*) > 0 AND bool_and(srsubstate = 'r') FROM pg_subscription_rel`).
			Scan(&synced); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pub.Exec(ctx, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'acme', 'operational')`); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Exec(ctx, `UPDATE vendors SET status = 'broken', version = version + 1 WHERE name = 'acme'`); err != nil {
		t.Fatal(err)
	}

	var got []string
	deadline = time.Now().Add(30 * time.Second)
	for len(got) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber's log after an insert and an update were replicated: %q", got)
		}
		time.Sleep(20 * time.Millisecond)
		all, _, _ := readAllChanges(t, ctx, sub, h, 100)
		got = describeChanges(all)
	}
	if got[0] != "vendor acme insert 1" || got[1] != "vendor acme update 2" {
		t.Fatalf("the subscriber's log: %q, want the replicated insert and update", got)
	}
}
