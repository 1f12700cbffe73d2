package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/migrations"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// privilegesDoc holds the runtime role's grants, between these markers.
const (
	privilegesDoc    = "../docs/privileges.md"
	runtimeGrantsBeg = "<!-- runtime-grants -->"
	runtimeGrantsEnd = "<!-- /runtime-grants -->"
)

// documentedGrants returns the SQL of docs/privileges.md's runtime grants,
// for role in database db.
func documentedGrants(t *testing.T, role, db string) string {
	t.Helper()
	doc, err := os.ReadFile(privilegesDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), runtimeGrantsBeg)
	block, _, ok2 := strings.Cut(rest, runtimeGrantsEnd)
	if !ok || !ok2 {
		t.Fatalf("%s: no %s … %s section", privilegesDoc, runtimeGrantsBeg, runtimeGrantsEnd)
	}
	block = strings.TrimSpace(block)
	block, ok = strings.CutPrefix(block, "```sql")
	block, ok2 = strings.CutSuffix(block, "```")
	if !ok || !ok2 {
		t.Fatalf("%s: the runtime grants are not one ```sql block", privilegesDoc)
	}
	sql := regexp.MustCompile(`\bpgfallback_app\b`).ReplaceAllString(block, role)
	sql = regexp.MustCompile(`\bDATABASE pgfallback\b`).ReplaceAllString(sql, "DATABASE "+db)
	if !strings.Contains(sql, role) || !strings.Contains(sql, "DATABASE "+db) {
		t.Fatalf("%s: the runtime grants do not name pgfallback_app and DATABASE pgfallback", privilegesDoc)
	}
	return sql
}

func privRandom(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// privAdminConn connects as the shared server's user, which must be a
// superuser here (it creates roles); when it is not (an external server),
// the test skips, or fails under PGFALLBACK_REQUIRE_POSTGRES=1.
func privAdminConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", pgdsn.Error(err))
	}
	var super bool
	if err := conn.QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		t.Fatal(err)
	}
	if !super {
		conn.Close(context.Background())
		msg := "this test creates roles and needs a superuser; the test server's user is not one"
		if v := os.Getenv(pgtest.EnvRequire); v == "1" || strings.EqualFold(v, "true") {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return conn
}

// privRole creates a login role with no other attribute, stripped of LOGIN
// and dropped at cleanup (register it before the databases it has
// privileges in, whose cleanups must run first).
func privRole(t *testing.T, admin, prefix string) (role, password string) {
	t.Helper()
	return pgtest.NewRole(t, admin, prefix)
}

// privDSN is admin's DSN for database db as role. It holds a password:
// never print it.
func privDSN(t *testing.T, admin, db, role, password string) string {
	t.Helper()
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("the test DSN is not a URL: %v", pgdsn.Error(err))
	}
	u.Path = "/" + db
	u.User = url.UserPassword(role, password)
	return u.String()
}

// TestRuntimeRoleNeedsOnlyDocumentedPrivileges runs everything pgstore does
// as a role that has exactly the grants of docs/privileges.md, in a
// database migrated by a non-superuser owner and where PUBLIC has nothing
// on the database or the schema.
func TestRuntimeRoleNeedsOnlyDocumentedPrivileges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := pgtest.Shared(t).DSN()
	owner, ownerPassword := privRole(t, admin, "owner") // roles first: dropped after the database
	app, appPassword := privRole(t, admin, "app")
	feedOnly, feedOnlyPassword := privRole(t, admin, "feed")

	db := "priv_" + privRandom(8)
	adminConn := privAdminConn(t, admin)
	defer adminConn.Close(ctx)
	if _, err := adminConn.Exec(ctx, "CREATE DATABASE "+db+" OWNER "+owner); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), admin)
		if err != nil {
			t.Errorf("cleanup: %v", pgdsn.Error(err))
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	// Nothing from PUBLIC: the default CONNECT and TEMP on the database,
	// USAGE on schema public.
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("the test DSN is not a URL: %v", pgdsn.Error(err))
	}
	u.Path = "/" + db
	dbAdmin := privAdminConn(t, u.String())
	defer dbAdmin.Close(ctx)
	for _, stmt := range []string{"REVOKE ALL ON DATABASE " + db + " FROM PUBLIC", "REVOKE ALL ON SCHEMA public FROM PUBLIC"} {
		if _, err := dbAdmin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	ownerDSN := privDSN(t, admin, db, owner, ownerPassword)
	if err := migrations.Up(ctx, ownerDSN); err != nil {
		t.Fatalf("Up as the owner: %v", err)
	}
	ownerConn, err := pgx.Connect(ctx, ownerDSN)
	if err != nil {
		t.Fatalf("connect as the owner: %v", pgdsn.Error(err))
	}
	defer ownerConn.Close(ctx)
	// Simple protocol: the block is several statements.
	if _, err := ownerConn.Exec(ctx, documentedGrants(t, app, db), pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("the documented grants, run by the owner: %v", err)
	}
	// The role that cannot touch the log: the same, without the two
	// grants for PruneChanges.
	reduced := documentedGrants(t, feedOnly, db)
	for _, line := range []string{
		"GRANT DELETE ON pgfallback_changes TO " + feedOnly + ";\n",
		"GRANT INSERT, UPDATE ON pgfallback_change_log TO " + feedOnly + ";\n",
	} {
		if !strings.Contains(reduced, line) {
			t.Fatalf("%s: the runtime grants lack %q", privilegesDoc, line)
		}
		reduced = strings.Replace(reduced, line, "", 1)
	}
	if _, err := ownerConn.Exec(ctx, reduced, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("the documented grants without PruneChanges', run by the owner: %v", err)
	}

	s, err := pgstore.Open(ctx, privDSN(t, admin, db, app, appPassword))
	if err != nil {
		t.Fatalf("open the store as the runtime role: %v", pgdsn.Error(err))
	}
	defer s.Close()
	var who string
	var super bool
	if err := s.Pool().QueryRow(ctx, `SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&who, &super); err != nil {
		t.Fatal(err)
	}
	if who != app || super {
		t.Fatalf("the store connects as %s (superuser %v), want %s, not superuser", who, super, app)
	}

	exerciseStore(ctx, t, s)

	// And what the documentation says the role cannot do.
	for _, stmt := range []string{
		`INSERT INTO pgfallback_changes (entity, key, op, version) VALUES ('vendor', 'forged', 'insert', 1)`,
		`UPDATE pgfallback_changes SET key = 'other'`,
		`TRUNCATE vendors`,
		`CREATE TABLE pgfallback_shadow (id int)`,
		`CREATE TEMP TABLE pgfallback_changes (entity text, key text, op text, version bigint)`,
		`ALTER TABLE vendors DISABLE TRIGGER pgfallback_vendors_change`,
	} {
		_, err := s.Pool().Exec(ctx, stmt)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("as the runtime role: %s: %v, want SQLSTATE 42501 (insufficient privilege)", stmt, err)
		}
	}
	var execute bool
	if err := s.Pool().QueryRow(ctx, `SELECT bool_or(has_function_privilege(p.oid, 'EXECUTE')) FROM pg_proc p
		WHERE pronamespace = 'public'::regnamespace AND proname LIKE 'pgfallback_log_%'`).Scan(&execute); err != nil || execute {
		t.Errorf("the runtime role may execute a pgfallback_log_* function (%v, %v)", execute, err)
	}

	// The role without PruneChanges' grants: everything else works, and
	// it can neither prune nor remove log rows.
	f, err := pgstore.Open(ctx, privDSN(t, admin, db, feedOnly, feedOnlyPassword))
	if err != nil {
		t.Fatalf("open the store as the role without pruning: %v", pgdsn.Error(err))
	}
	defer f.Close()
	fhead, err := f.ChangeHead(ctx)
	if err != nil {
		t.Fatalf("without pruning: ChangeHead: %v", err)
	}
	fv, err := f.Vendors().Create(ctx, repository.Vendor{Name: "feedonly", Status: repository.VendorOperational})
	if err != nil {
		t.Fatalf("without pruning: vendor Create: %v", err)
	}
	fv.Status = repository.VendorBroken
	if _, err := f.Vendors().Update(ctx, fv); err != nil {
		t.Fatalf("without pruning: vendor Update: %v", err)
	}
	if _, err := f.ApplyWrite(ctx, repository.Write{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityVendor,
		Vendor: repository.Vendor{Name: "feedonly"}}); err != nil {
		t.Fatalf("without pruning: ApplyWrite: %v", err)
	}
	if _, err := f.PruneAppliedWrites(ctx, 0); err != nil {
		t.Fatalf("without pruning: PruneAppliedWrites: %v", err)
	}
	if b, err := f.ReadChanges(ctx, fhead, 10); err != nil || len(b.Changes) != 3 {
		t.Fatalf("without pruning: ReadChanges: %+v, %v; want the insert, update and delete of feedonly", b.Changes, err)
	}
	var pgErr *pgconn.PgError
	if _, err := f.PruneChanges(ctx, 0); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("without pruning: PruneChanges: %v, want SQLSTATE 42501", err)
	}
	for _, stmt := range []string{
		`DELETE FROM pgfallback_changes`,
		`UPDATE pgfallback_change_log SET pruned_seq = pruned_seq + 1`,
	} {
		if _, err := f.Pool().Exec(ctx, stmt); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("without pruning: %s: %v, want SQLSTATE 42501", stmt, err)
		}
	}
}

// exerciseStore calls every method of s that sends SQL (the repositories,
// GetMany, ListAfter, ApplyWrite and ApplyWrites, the change feed and its
// waker, both prunings) at least once on an empty database, and checks
// each answer.
func exerciseStore(ctx context.Context, t *testing.T, s *pgstore.Store) {
	t.Helper()
	head0, err := s.ChangeHead(ctx)
	if err != nil {
		t.Fatalf("ChangeHead: %v", err)
	}

	// Vendors. The metadata survives the simple protocol's quoting.
	const quoted = `it's "quoted" \ $1 ü`
	vendors := s.Vendors()
	a, err := vendors.Create(ctx, repository.Vendor{Name: "acme", Status: repository.VendorOperational, Metadata: map[string]any{"k": quoted}})
	if err != nil {
		t.Fatalf("vendor Create: %v", err)
	}
	if _, err := vendors.Create(ctx, repository.Vendor{Name: "bolt", Status: repository.VendorOperational}); err != nil {
		t.Fatalf("vendor Create: %v", err)
	}
	if got, err := vendors.Get(ctx, "acme"); err != nil || got.ID != a.ID || got.Metadata["k"] != quoted {
		t.Fatalf("vendor Get: %+v, %v", got, err)
	}
	a.Status = repository.VendorBroken
	if a, err = vendors.Update(ctx, a); err != nil || a.Version != 2 {
		t.Fatalf("vendor Update: version %d, %v", a.Version, err)
	}
	if list, err := vendors.List(ctx, repository.VendorFilter{}); err != nil || len(list) != 2 {
		t.Fatalf("vendor List: %d vendors, %v", len(list), err)
	}
	broken := repository.VendorBroken
	if list, err := vendors.List(ctx, repository.VendorFilter{Status: &broken, Limit: 10}); err != nil || len(list) != 1 {
		t.Fatalf("vendor List by status: %d vendors, %v", len(list), err)
	}
	if err := vendors.Delete(ctx, "bolt"); err != nil {
		t.Fatalf("vendor Delete: %v", err)
	}
	if _, err := vendors.Get(ctx, "bolt"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("vendor Get after Delete: %v, want ErrNotFound", err)
	}
	if gm, ok := vendors.(interface {
		GetMany(context.Context, []string) ([]repository.Vendor, error)
	}); ok {
		if got, err := gm.GetMany(ctx, []string{"acme", "bolt"}); err != nil || len(got) != 1 {
			t.Fatalf("vendor GetMany: %d, %v", len(got), err)
		}
	}
	if la, ok := vendors.(interface {
		ListAfter(context.Context, string, int) ([]repository.Vendor, error)
	}); ok {
		if got, err := la.ListAfter(ctx, "", 10); err != nil || len(got) != 1 {
			t.Fatalf("vendor ListAfter: %d, %v", len(got), err)
		}
	}

	// Work items: a tree (FOR SHARE on the parent), an update, a move of
	// a subtree, a soft delete of a subtree.
	items := s.WorkItems()
	item := func(title string, parent *repository.WorkItem) repository.WorkItem {
		w := repository.WorkItem{Type: repository.WorkItemTask, Title: title, Status: repository.WorkItemActive}
		if parent != nil {
			w.ParentID = &parent.ID
		}
		got, err := items.Create(ctx, w)
		if err != nil {
			t.Fatalf("work item Create %q: %v", title, err)
		}
		return got
	}
	root, other := item("root", nil), item("other root", nil)
	child := item("child", &root)
	grandchild := item("grandchild", &child)
	child.Title, child.Status = "child, renamed", repository.WorkItemBlocked
	if child, err = items.Update(ctx, child); err != nil {
		t.Fatalf("work item Update: %v", err)
	}
	child.ParentID = &other.ID
	if child, err = items.Update(ctx, child); err != nil {
		t.Fatalf("work item Update (move): %v", err)
	}
	if got, err := items.Get(ctx, grandchild.ID); err != nil || !strings.HasPrefix(got.Path, other.ID.String()) {
		t.Fatalf("grandchild after the move: path %q, %v", got.Path, err)
	}
	if err := items.Delete(ctx, other.ID); err != nil {
		t.Fatalf("work item Delete: %v", err)
	}
	if got, err := items.Get(ctx, grandchild.ID); err != nil || got.DeletedAt == nil {
		t.Fatalf("grandchild after deleting its root: %+v, %v", got.DeletedAt, err)
	}
	if list, err := items.List(ctx, repository.WorkItemFilter{}); err != nil || len(list) != 1 || list[0].ID != root.ID {
		t.Fatalf("work item List: %d items, %v; want the one live root", len(list), err)
	}
	if list, err := items.List(ctx, repository.WorkItemFilter{IncludeDeleted: true, ParentID: &other.ID}); err != nil || len(list) != 1 {
		t.Fatalf("work item List of children: %d items, %v", len(list), err)
	}
	if gm, ok := items.(interface {
		GetMany(context.Context, []uuid.UUID) ([]repository.WorkItem, error)
	}); ok {
		if got, err := gm.GetMany(ctx, []uuid.UUID{root.ID, child.ID}); err != nil || len(got) != 2 {
			t.Fatalf("work item GetMany: %d, %v", len(got), err)
		}
	}
	if la, ok := items.(interface {
		ListAfter(context.Context, uuid.UUID, int) ([]repository.WorkItem, error)
	}); ok {
		if got, err := la.ListAfter(ctx, uuid.Nil, 10); err != nil || len(got) != 4 {
			t.Fatalf("work item ListAfter: %d, %v", len(got), err)
		}
	}

	// ApplyWrite, a replay, and every op.
	create := repository.Write{ID: uuid.New(), Op: repository.WriteCreate, Entity: repository.EntityVendor,
		Vendor: repository.Vendor{Name: "queued", Status: repository.VendorOperational}}
	if out, err := s.ApplyWrite(ctx, create); err != nil || out.AlreadyApplied || out.Vendor == nil {
		t.Fatalf("ApplyWrite create: %+v, %v", out, err)
	}
	if out, err := s.ApplyWrite(ctx, create); err != nil || !out.AlreadyApplied || out.Vendor == nil {
		t.Fatalf("ApplyWrite replayed: %+v, %v; want AlreadyApplied with the row", out, err)
	}
	update := repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityVendor, BaseVersion: 1,
		Vendor: repository.Vendor{Name: "queued", Status: repository.VendorBroken}}
	if out, err := s.ApplyWrite(ctx, update); err != nil || out.Vendor == nil || out.Vendor.Version != 2 {
		t.Fatalf("ApplyWrite update: %+v, %v", out, err)
	}
	itemCreate := repository.Write{ID: uuid.New(), Op: repository.WriteCreate, Entity: repository.EntityWorkItem,
		WorkItem: repository.WorkItem{Type: repository.WorkItemTask, Title: "queued", Status: repository.WorkItemActive, ParentID: &root.ID}}
	out, err := s.ApplyWrite(ctx, itemCreate)
	if err != nil || out.WorkItem == nil {
		t.Fatalf("ApplyWrite work item create: %+v, %v", out, err)
	}
	for _, w := range []repository.Write{
		{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityWorkItem, WorkItem: repository.WorkItem{ID: out.WorkItem.ID}},
		{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityVendor, Vendor: repository.Vendor{Name: "queued"}},
	} {
		if _, err := s.ApplyWrite(ctx, w); err != nil {
			t.Fatalf("ApplyWrite %s %s: %v", w.Op, w.Entity, err)
		}
	}
	// ApplyWrites: a batch that goes through in one pipelined transaction.
	batch := []repository.Write{
		{ID: uuid.New(), Op: repository.WriteCreate, Entity: repository.EntityVendor, Vendor: repository.Vendor{
			ID: uuid.New(), Name: "batched", Status: repository.VendorOperational, Metadata: map[string]any{"n": 1.0}}},
		{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityWorkItem, BaseVersion: root.Version,
			WorkItem: repository.WorkItem{ID: root.ID, Type: repository.WorkItemTask, Title: "root, batched",
				Status: repository.WorkItemActive, Metadata: map[string]any{"batched": true}}},
	}
	if got, err := s.ApplyWrites(ctx, batch); err != nil || len(got) != 2 || got[0].Vendor == nil || got[1].WorkItem == nil ||
		got[1].WorkItem.Metadata["batched"] != true {
		t.Fatalf("ApplyWrites: %+v, %v", got, err)
	}

	// The change feed saw the runtime role's writes: the triggers log them
	// though it has no privilege on the log.
	var changes []repository.Change
	for cur := head0; ; {
		b, err := s.ReadChanges(ctx, cur, 1000)
		if err != nil {
			t.Fatalf("ReadChanges: %v", err)
		}
		changes, cur = append(changes, b.Changes...), b.Next
		if !b.More {
			break
		}
	}
	var seen []string
	for _, c := range changes {
		seen = append(seen, string(c.Entity)+" "+c.Key+" "+string(c.Op))
	}
	for _, want := range []string{
		"vendor acme insert", "vendor acme update", "vendor bolt delete", "vendor queued insert", "vendor queued delete",
		"vendor batched insert",
		"work_item " + root.ID.String() + " insert", "work_item " + grandchild.ID.String() + " update",
		"work_item " + out.WorkItem.ID.String() + " update",
	} {
		if !slices.Contains(seen, want) {
			t.Errorf("ReadChanges from the first head lacks %q: %v", want, seen)
		}
	}

	// Pruning both logs. The records and the changes above were written by
	// transactions that have ended: an age of 0 removes them.
	if n, err := s.PruneAppliedWrites(ctx, 0); err != nil || n < 1 {
		t.Fatalf("PruneAppliedWrites: removed %d, %v; want some removed", n, err)
	}
	if n, err := s.PruneChanges(ctx, 0); err != nil || n < 1 {
		t.Fatalf("PruneChanges: removed %d, %v; want some removed", n, err)
	}
	// What pruning recorded in pgfallback_change_log expires the old cursor.
	if _, err := s.ReadChanges(ctx, head0, 10); !errors.Is(err, repository.ErrCursorExpired) {
		t.Fatalf("ReadChanges from before the pruning: %v, want ErrCursorExpired", err)
	}
	head1, err := s.ChangeHead(ctx)
	if err != nil {
		t.Fatalf("ChangeHead after pruning: %v", err)
	}

	// WatchChanges: it listens, and wakes on a notification.
	wakes := make(chan bool, 16)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- s.WatchChanges(wctx, func(reconnected bool) {
			select {
			case wakes <- reconnected:
			default:
			}
		})
	}()
	waitWake := func(want bool, what string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case got := <-wakes:
				if got == want {
					return
				}
			case err := <-done:
				t.Fatalf("WatchChanges returned %v while waiting for %s", err, what)
			case <-timeout:
				t.Fatalf("no %s within 10 s", what)
			}
		}
	}
	waitWake(true, "wake(true) once listening")
	// A write, which the feed's own waking reports, and a notification
	// sent by the runtime role, which needs no privilege either.
	if _, err := vendors.Create(ctx, repository.Vendor{Name: "late", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `SELECT pg_notify($1, 'vendor')`, pgstore.ChangeChannel); err != nil {
		t.Fatalf("NOTIFY as the runtime role: %v", err)
	}
	waitWake(false, "wake(false) after a write and a notification")
	stop()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WatchChanges returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchChanges did not return within 5 s of its context ending")
	}
	b, err := s.ReadChanges(ctx, head1, 10)
	if err != nil || len(b.Changes) != 1 || b.Changes[0].Key != "late" {
		t.Fatalf("ReadChanges after pruning: %+v, %v; want the one insert of late", b.Changes, err)
	}
}
