package migrations_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose in migrateTo
	"github.com/pressly/goose/v3"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/migrations"
)

// These tests create login roles, which are cluster-wide: each has a random
// name, is used by one test only, and is stripped of LOGIN and SUPERUSER
// and dropped when the test ends, after the databases it has privileges in.

// privAdmin returns the DSN of the shared server's maintenance database,
// whose user must be a superuser here: it creates roles, and the forgery
// test needs a superuser owner to show what the old functions gave away.
// The local and Docker servers run as superuser; an external server
// (PGFALLBACK_TEST_DSN) may not, and then the test skips (fails under
// PGFALLBACK_REQUIRE_POSTGRES=1).
func privAdmin(t *testing.T) string {
	t.Helper()
	admin := pgtest.Shared(t).DSN()
	conn := privConnect(t, admin)
	defer conn.Close(context.Background())
	var super bool
	if err := conn.QueryRow(context.Background(),
		`SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		t.Fatal(err)
	}
	if !super {
		msg := "this test creates roles and needs a superuser; the test server's user is not one"
		if v := os.Getenv(pgtest.EnvRequire); v == "1" || strings.EqualFold(v, "true") {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return admin
}

// privConnect connects to dsn; a failure never shows the password.
func privConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", pgdsn.Error(err))
	}
	return conn
}

func privExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) pgconn.CommandTag {
	t.Helper()
	tag, err := conn.Exec(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("as %s: %s: %v", conn.Config().User, firstLine(sql), err)
	}
	return tag
}

func firstLine(sql string) string {
	sql = strings.TrimSpace(sql)
	if i := strings.IndexByte(sql, '\n'); i >= 0 {
		return sql[:i] + " …"
	}
	return sql
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newLoginRole creates a role that can log in with a password and has no
// other attribute.
func newLoginRole(t *testing.T, admin, prefix string) (role, password string) {
	t.Helper()
	return pgtest.NewRole(t, admin, prefix)
}

// asRole is dsn with its user and password replaced. It holds a password:
// never print it.
func asRole(t *testing.T, dsn, role, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("the test DSN is not a URL: %v", pgdsn.Error(err))
	}
	u.User = url.UserPassword(role, password)
	return u.String()
}

// databaseOwnedBy creates a database owned by owner, dropped at cleanup,
// and returns its DSN (as admin) and name.
func databaseOwnedBy(t *testing.T, admin, owner string) (dsn, name string) {
	t.Helper()
	name = "priv_" + randomHex(8)
	conn := privConnect(t, admin)
	defer conn.Close(context.Background())
	privExec(t, conn, "CREATE DATABASE "+name+" OWNER "+owner)
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("cleanup: %v", pgdsn.Error(err))
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("the test DSN is not a URL: %v", pgdsn.Error(err))
	}
	u.Path = "/" + name
	return u.String(), name
}

// migrateTo applies the migrations up to and including version, as goose
// does for migrations.Up.
func migrateTo(t *testing.T, dsn string, version int64) {
	t.Helper()
	ctx := context.Background()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(pgdsn.Error(err))
	}
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.Postgres, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, version); err != nil {
		t.Fatalf("migrate up to %d: %v", version, pgdsn.Error(err))
	}
	if v, err := p.GetDBVersion(ctx); err != nil || v != version {
		t.Fatalf("database at version %d (%v), want %d", v, err, version)
	}
}

// roleAttributes is everything a role is, besides its password: its
// attributes and its memberships.
func roleAttributes(t *testing.T, conn *pgx.Conn, role string) string {
	t.Helper()
	var s string
	err := conn.QueryRow(context.Background(), `
		SELECT format('super=%s inherit=%s createrole=%s createdb=%s login=%s replication=%s bypassrls=%s connlimit=%s validuntil=%s config=%s member_of=%s',
			rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls,
			rolconnlimit, rolvaliduntil, rolconfig,
			(SELECT array_agg(m.roleid::regrole::text ORDER BY m.roleid::regrole::text) FROM pg_auth_members m WHERE m.member = r.oid))
		FROM pg_roles r WHERE rolname = $1`, role).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func isSuperuser(t *testing.T, conn *pgx.Conn, role string) bool {
	t.Helper()
	var super bool
	if err := conn.QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, role).Scan(&super); err != nil {
		t.Fatal(err)
	}
	return super
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

const insufficientPrivilege = "42501"

// logRows lists public.pgfallback_changes rows for key, in seq order, as
// "entity key op version".
func logRows(t *testing.T, conn *pgx.Conn, key string) []string {
	t.Helper()
	rows, _ := conn.Query(context.Background(), `
		SELECT format('%s %s %s %s', entity, key, op, version) FROM public.pgfallback_changes
		WHERE key = $1 ORDER BY seq`, key)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestChangeLogCannotBeForged runs the attack of issue 15 by a role that
// may only read and write vendors and work_items: first on the schema
// without migration 00005, where it must work (or this test could not tell
// the hole is closed), then with it.
func TestChangeLogCannotBeForged(t *testing.T) {
	t.Run("before 00005 the attack works", func(t *testing.T) { forgeryAttempt(t, false) })
	t.Run("00005 closes it", func(t *testing.T) { forgeryAttempt(t, true) })
}

func forgeryAttempt(t *testing.T, secured bool) {
	ctx := context.Background()
	admin := privAdmin(t)
	app, appPassword := newLoginRole(t, admin, "app") // before the database: dropped after it
	dbDSN := emptyDatabase(t)
	// Migrated by a superuser, which owns the database and every object:
	// the worst case, where the owner's rights are everything.
	if secured {
		if err := migrations.Up(ctx, dbDSN); err != nil {
			t.Fatal(err)
		}
	} else {
		migrateTo(t, dbDSN, 4)
	}

	owner := privConnect(t, dbDSN)
	defer owner.Close(ctx)
	privExec(t, owner, "DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO "+app+"', current_database()); END $$")
	privExec(t, owner, "GRANT USAGE ON SCHEMA public TO "+app)
	privExec(t, owner, "GRANT SELECT, INSERT, UPDATE, DELETE ON vendors, work_items TO "+app)
	privExec(t, owner, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'victim', 'operational')`)

	// The attack's preconditions: temporary tables (granted to PUBLIC by
	// default), and no privilege on the log.
	var temp, logInsert, logDelete, execute bool
	if err := owner.QueryRow(ctx, `SELECT
			has_database_privilege($1, current_database(), 'TEMP'),
			has_table_privilege($1, 'public.pgfallback_changes', 'INSERT'),
			has_table_privilege($1, 'public.pgfallback_changes', 'DELETE'),
			has_function_privilege($1, 'public.pgfallback_log_vendor()', 'EXECUTE')`, app).
		Scan(&temp, &logInsert, &logDelete, &execute); err != nil {
		t.Fatal(err)
	}
	if !temp || logInsert || logDelete {
		t.Fatalf("%s: TEMP %v, INSERT on the log %v, DELETE on the log %v; want true, false, false", app, temp, logInsert, logDelete)
	}
	if execute == secured {
		t.Fatalf("%s has EXECUTE on pgfallback_log_vendor: %v, want %v (revoked from PUBLIC by 00005)", app, execute, !secured)
	}
	before := roleAttributes(t, owner, app)
	appDSN := asRole(t, dbDSN, app, appPassword)

	// 1. Forging rows: the app's own temporary table, with the trigger
	// function attached. Its own session, with no temporary
	// pgfallback_changes to shadow the log.
	forger := privConnect(t, appDSN)
	privExec(t, forger, `CREATE TEMP TABLE fake (id uuid, name text, version bigint)`)
	for _, fn := range []string{"pgfallback_log_vendor()", "pgfallback_log_work_item()", "pgfallback_log_truncate('vendor')"} {
		_, err := forger.Exec(ctx, `CREATE TRIGGER forge_`+fn[len("pgfallback_log_"):strings.IndexByte(fn, '(')]+
			` AFTER INSERT ON pg_temp.fake FOR EACH ROW EXECUTE FUNCTION public.`+fn)
		switch {
		case secured && sqlState(err) != insufficientPrivilege:
			t.Errorf("attaching %s to the app's own table: %v, want SQLSTATE %s (insufficient privilege)", fn, err, insufficientPrivilege)
		case !secured && err != nil:
			t.Fatalf("before 00005, attaching %s to the app's own table failed: %v; the test no longer reproduces the hole", fn, err)
		}
	}
	if !secured {
		privExec(t, forger, `INSERT INTO fake VALUES (gen_random_uuid(), 'forged', 7)`)
	}
	forger.Close(ctx)
	forged := logRows(t, owner, "forged")
	switch {
	case secured && len(forged) != 0:
		t.Errorf("forged log rows: %v", forged)
	case !secured && !slices.Contains(forged, "vendor forged insert 7"):
		t.Fatalf("before 00005, the forged row is not in the log (%v): the test no longer reproduces the hole", forged)
	}

	// 2. Redirecting the log and escalating: the attack, verbatim.
	attacker := privConnect(t, appDSN)
	defer attacker.Close(ctx)
	for _, stmt := range []string{
		`CREATE TEMP TABLE pgfallback_changes (entity text, key text, op text, version bigint)`,
		`GRANT ALL ON pgfallback_changes TO PUBLIC`,
		`CREATE FUNCTION pg_temp.pwn() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN EXECUTE 'ALTER ROLE ` + app + ` SUPERUSER'; RETURN NULL; END $$`,
		`CREATE TRIGGER pwn AFTER INSERT ON pg_temp.pgfallback_changes FOR EACH ROW EXECUTE FUNCTION pg_temp.pwn()`,
	} {
		privExec(t, attacker, stmt) // allowed either way: the attack is set up
	}
	tag := privExec(t, attacker, `UPDATE vendors SET status = 'broken', version = version + 1 WHERE name = 'victim'`)
	if tag.RowsAffected() != 1 {
		t.Fatalf("the app's UPDATE of the victim: %s, want UPDATE 1", tag)
	}
	var shadowed int
	if err := attacker.QueryRow(ctx, `SELECT count(*) FROM pg_temp.pgfallback_changes`).Scan(&shadowed); err != nil {
		t.Fatal(err)
	}
	logged := logRows(t, owner, "victim")
	super := isSuperuser(t, owner, app)
	after := roleAttributes(t, owner, app)

	if !secured {
		// Seen, then undone at once (the cleanup does it too).
		privExec(t, owner, "ALTER ROLE "+app+" NOSUPERUSER")
		if shadowed != 1 || slices.Contains(logged, "vendor victim update 2") || !super {
			t.Fatalf("before 00005: %d rows in the app's temporary table (want 1), log %v (want no update), superuser %v (want true): "+
				"the test no longer reproduces the hole", shadowed, logged, super)
		}
		t.Logf("before 00005: the update was logged in the app's temporary table, not the log, and %s became superuser", app)
		return
	}

	if shadowed != 0 {
		t.Errorf("%d log rows went to the app's temporary pgfallback_changes", shadowed)
	}
	if want := []string{"vendor victim insert 1", "vendor victim update 2"}; !slices.Equal(logged, want) {
		t.Errorf("public.pgfallback_changes for the victim: %v, want %v", logged, want)
	}
	if super {
		t.Errorf("%s became superuser", app)
	}
	if after != before {
		t.Errorf("%s's attributes changed:\n before %s\n after  %s", app, before, after)
	}

	// Every kind of write by the app, in the session whose temporary
	// pgfallback_changes (and its trigger) still exist, reaches the log.
	var itemID string
	if err := attacker.QueryRow(ctx, `INSERT INTO work_items (id, type, title, status)
		VALUES (gen_random_uuid(), 'task', 't', 'active') RETURNING id::text`).Scan(&itemID); err != nil {
		t.Fatal(err)
	}
	privExec(t, attacker, `UPDATE work_items SET title = 'u', version = version + 1 WHERE id = $1`, itemID)
	privExec(t, attacker, `DELETE FROM work_items WHERE id = $1`, itemID)
	privExec(t, attacker, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'fresh', 'operational')`)
	privExec(t, attacker, `UPDATE vendors SET name = 'renamed' WHERE name = 'fresh'`)
	privExec(t, attacker, `DELETE FROM vendors WHERE name = 'renamed'`)
	for key, want := range map[string][]string{
		itemID:    {"work_item " + itemID + " insert 1", "work_item " + itemID + " update 2", "work_item " + itemID + " delete 2"},
		"fresh":   {"vendor fresh insert 1", "vendor fresh delete 1"},
		"renamed": {"vendor renamed insert 1", "vendor renamed delete 1"},
	} {
		if got := logRows(t, owner, key); !slices.Equal(got, want) {
			t.Errorf("log for %s: %v, want %v", key, got, want)
		}
	}
	if err := attacker.QueryRow(ctx, `SELECT count(*) FROM pg_temp.pgfallback_changes`).Scan(&shadowed); err != nil || shadowed != 0 {
		t.Errorf("the app's temporary pgfallback_changes holds %d rows (%v), want 0", shadowed, err)
	}

	// 3. Hiding: no way for the app to remove log rows or to write
	// without the triggers.
	for _, stmt := range []string{
		`DELETE FROM public.pgfallback_changes`,
		`UPDATE public.pgfallback_changes SET key = 'other'`,
		`INSERT INTO public.pgfallback_changes (entity, key, op, version) VALUES ('vendor', 'forged', 'insert', 1)`,
		`TRUNCATE public.pgfallback_changes`,
		`UPDATE public.pgfallback_change_log SET pruned_seq = pruned_seq + 1000000`,
		`SET session_replication_role = replica`,
		`ALTER TABLE vendors DISABLE TRIGGER pgfallback_vendors_change`,
		`DROP TRIGGER pgfallback_vendors_change ON vendors`,
		`CREATE OR REPLACE FUNCTION public.pgfallback_log_vendor() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`,
	} {
		if _, err := attacker.Exec(ctx, stmt); sqlState(err) != insufficientPrivilege {
			t.Errorf("as %s: %s: %v, want SQLSTATE %s", app, firstLine(stmt), err, insufficientPrivilege)
		}
	}

	// The definitions: owned by the migrating role, SECURITY DEFINER, the
	// search path fixed with pg_temp last, no EXECUTE for PUBLIC.
	rows, _ := owner.Query(ctx, `
		SELECT format('%s owner=%s definer=%s config=%s public_execute=%s', proname, proowner::regrole, prosecdef, proconfig,
			coalesce((SELECT bool_or(a.grantee = 0) FROM aclexplode(proacl) a WHERE a.privilege_type = 'EXECUTE'), proacl IS NULL))
		FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND proname LIKE 'pgfallback_log_%' ORDER BY proname`)
	defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var ownerName string
	if err := owner.QueryRow(ctx, `SELECT current_user`).Scan(&ownerName); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, fn := range []string{"pgfallback_log_truncate", "pgfallback_log_vendor", "pgfallback_log_work_item"} {
		want = append(want, fmt.Sprintf(`%s owner=%s definer=t config={"search_path=pg_catalog, public, pg_temp"} public_execute=f`,
			fn, ownerName))
	}
	if !slices.Equal(defs, want) {
		t.Errorf("trigger functions:\n%s\nwant\n%s", strings.Join(defs, "\n"), strings.Join(want, "\n"))
	}
}

// TestUpByNonSuperuserOwner: the migrations need only what a database's
// owner has, not superuser.
func TestUpByNonSuperuserOwner(t *testing.T) {
	ctx := context.Background()
	admin := privAdmin(t)
	owner, password := newLoginRole(t, admin, "owner") // before the database: dropped after it
	adminDB, _ := databaseOwnedBy(t, admin, owner)
	ownerDSN := asRole(t, adminDB, owner, password)

	conn := privConnect(t, ownerDSN)
	defer conn.Close(ctx)
	var who, dba string
	var super, createdb, createrole, createOnPublic bool
	if err := conn.QueryRow(ctx, `SELECT current_user, rolsuper, rolcreatedb, rolcreaterole,
			has_schema_privilege('public', 'CREATE'),
			(SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database())
		FROM pg_roles WHERE rolname = current_user`).Scan(&who, &super, &createdb, &createrole, &createOnPublic, &dba); err != nil {
		t.Fatal(err)
	}
	if who != owner || super || createdb || createrole || dba != owner {
		t.Fatalf("connected as %s (superuser %v, createdb %v, createrole %v), database owned by %s; want %s, no attributes, the owner",
			who, super, createdb, createrole, dba, owner)
	}
	if !createOnPublic {
		// PostgreSQL 15 and later: schema public belongs to
		// pg_database_owner, so the database's owner may create in it.
		t.Fatalf("the database's owner has no CREATE on schema public")
	}

	if err := migrations.Up(ctx, ownerDSN); err != nil {
		t.Fatalf("Up as the non-superuser owner: %v", err)
	}
	checkAllApplied := func(when string) int {
		t.Helper()
		st, err := migrations.Status(ctx, ownerDSN)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st {
			if !s.Applied {
				t.Fatalf("%s: migration %s not applied", when, s.Name)
			}
		}
		return len(st)
	}
	n := checkAllApplied("after Up")
	checkOwned := func(when string) {
		t.Helper()
		rows, _ := conn.Query(ctx, `
			SELECT relname || ' ' || relowner::regrole::text FROM pg_class
			WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
			UNION ALL
			SELECT proname || ' ' || proowner::regrole::text FROM pg_proc
			WHERE pronamespace = 'public'::regnamespace AND proname LIKE 'pgfallback%'
			ORDER BY 1`)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, o := range []string{"goose_db_version", "pgfallback_applied_writes", "pgfallback_change_log", "pgfallback_changes",
			"pgfallback_log_truncate", "pgfallback_log_vendor", "pgfallback_log_work_item", "vendors", "work_items"} {
			want = append(want, o+" "+owner)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: objects and owners %v, want %v", when, got, want)
		}
		// The triggers work, run as this owner.
		name := "v" + randomHex(4)
		privExec(t, conn, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), $1, 'operational')`, name)
		if got := logRows(t, conn, name); !slices.Equal(got, []string{"vendor " + name + " insert 1"}) {
			t.Fatalf("%s: log for a new vendor %v", when, got)
		}
	}
	checkOwned("after Up")

	for i := range n {
		if err := migrations.Down(ctx, ownerDSN); err != nil {
			t.Fatalf("Down #%d as the non-superuser owner: %v", i+1, err)
		}
	}
	st, err := migrations.Status(ctx, ownerDSN)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Applied {
			t.Fatalf("after %d Downs, migration %s is still applied", n, s.Name)
		}
	}
	if err := migrations.Up(ctx, ownerDSN); err != nil {
		t.Fatalf("Up again as the non-superuser owner: %v", err)
	}
	checkAllApplied("after Down and Up")
	checkOwned("after Down and Up")
}

// TestBuiltinsCallableByNonSuperuser: the server functions and commands
// the change feed uses need no privilege beyond PUBLIC's defaults, so the
// runtime role needs no grant for them (see docs/privileges.md).
func TestBuiltinsCallableByNonSuperuser(t *testing.T) {
	ctx := context.Background()
	admin := privAdmin(t)
	role, password := newLoginRole(t, admin, "plain")
	dbDSN := emptyDatabase(t)
	conn := privConnect(t, asRole(t, dbDSN, role, password))
	defer conn.Close(ctx)
	var super bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		t.Fatalf("the role is superuser (%v, %v)", super, err)
	}
	for _, q := range []string{
		`SELECT system_identifier::text FROM pg_control_system()`,
		`SELECT timeline_id::text FROM pg_control_checkpoint()`,
		`SELECT pg_walfile_name(pg_current_wal_lsn())`,
		`SELECT pg_is_in_recovery()::text`,
		// pgstore's timeline, as readHead reads it.
		`SELECT (CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())
			ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END)::text`,
		`SELECT pg_current_snapshot()::text`,
		`SELECT pg_snapshot_xmin(pg_current_snapshot())::text`,
		`SELECT pg_current_xact_id()::text`,
		`SELECT pg_try_advisory_lock(1)::text`,
		`SELECT pg_advisory_unlock(1)::text`,
		`SELECT pg_try_advisory_xact_lock(2)::text`,
		`SELECT pg_notify('pgfallback_changes', 'vendor')::text`,
		`SELECT (oid::int8)::text FROM pg_database WHERE datname = current_database()`,
	} {
		var out string
		if err := conn.QueryRow(ctx, q).Scan(&out); err != nil {
			t.Errorf("as a plain role: %s: %v", q, err)
			continue
		}
		t.Logf("%s → %s", strings.Join(strings.Fields(q), " "), out)
	}
	for _, stmt := range []string{`LISTEN pgfallback_changes`, `NOTIFY pgfallback_changes, 'vendor'`, `UNLISTEN *`} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Errorf("as a plain role: %s: %v", stmt, err)
		}
	}
}
