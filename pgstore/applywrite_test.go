package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

func vendorWrite(op repository.WriteOp, v repository.Vendor, base int64) repository.Write {
	return repository.Write{ID: uuid.New(), Op: op, Entity: repository.EntityVendor, Vendor: v, BaseVersion: base}
}

func itemWrite(op repository.WriteOp, w repository.WorkItem, base int64) repository.Write {
	return repository.Write{ID: uuid.New(), Op: op, Entity: repository.EntityWorkItem, WorkItem: w, BaseVersion: base}
}

func mustApply(t *testing.T, s *pgstore.Store, w repository.Write) repository.AppliedWrite {
	t.Helper()
	out, err := s.ApplyWrite(context.Background(), w)
	if err != nil {
		t.Fatalf("ApplyWrite %s %s %s: %v", w.Op, w.Entity, w.Key(), err)
	}
	return out
}

// record returns what pgfallback_applied_writes says about id, "" when
// nothing.
func record(t *testing.T, s *pgstore.Store, id uuid.UUID) string {
	t.Helper()
	var entity, key, op string
	err := s.Pool().QueryRow(context.Background(),
		`SELECT entity, key, op FROM pgfallback_applied_writes WHERE id = $1`, id).Scan(&entity, &key, &op)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return op + " " + entity + " " + key
}

func wantRecorded(t *testing.T, s *pgstore.Store, w repository.Write, key string) {
	t.Helper()
	if got, want := record(t, s, w.ID), fmt.Sprintf("%s %s %s", w.Op, w.Entity, key); got != want {
		t.Fatalf("record of %s: %q, want %q", w.ID, got, want)
	}
}

func wantNotRecorded(t *testing.T, s *pgstore.Store, w repository.Write) {
	t.Helper()
	if got := record(t, s, w.ID); got != "" {
		t.Fatalf("write %s was recorded (%s), want nothing recorded", w.ID, got)
	}
}

func count(t *testing.T, s *pgstore.Store, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestApplyWriteVendorOps(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)

	in := newVendor("acme")
	in.ID = uuid.New() // a queued create chose it
	create := vendorWrite(repository.WriteCreate, in, 0)
	got := mustApply(t, s, create)
	if got.AlreadyApplied || got.Vendor == nil || got.WorkItem != nil {
		t.Fatalf("create returned %+v", got)
	}
	if got.Vendor.ID != in.ID || got.Vendor.Version != 1 {
		t.Fatalf("created %+v: want the write's ID and version 1", *got.Vendor)
	}
	if stored, err := s.Vendors().Get(ctx, "acme"); err != nil || !reflect.DeepEqual(stored, *got.Vendor) {
		t.Fatalf("Get = %+v, %v; ApplyWrite returned %+v", stored, err, *got.Vendor)
	}
	wantRecorded(t, s, create, "acme")

	change := *got.Vendor
	change.Status, change.Version = repository.VendorBroken, 99 // Version is ignored: BaseVersion counts
	update := vendorWrite(repository.WriteUpdate, change, 1)
	got = mustApply(t, s, update)
	if got.AlreadyApplied || got.Vendor == nil || got.Vendor.Version != 2 || got.Vendor.Status != repository.VendorBroken {
		t.Fatalf("update returned %+v", got)
	}
	if stored, err := s.Vendors().Get(ctx, "acme"); err != nil || !reflect.DeepEqual(stored, *got.Vendor) {
		t.Fatalf("Get = %+v, %v; ApplyWrite returned %+v", stored, err, *got.Vendor)
	}
	wantRecorded(t, s, update, "acme")

	del := vendorWrite(repository.WriteDelete, repository.Vendor{Name: "acme"}, 0)
	if got = mustApply(t, s, del); got != (repository.AppliedWrite{}) {
		t.Fatalf("delete returned %+v, want no row", got)
	}
	if _, err := s.Vendors().Get(ctx, "acme"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Get after delete: %v, want ErrNotFound", err)
	}
	wantRecorded(t, s, del, "acme")

	// A create without an ID gets one, as Create does.
	got = mustApply(t, s, vendorWrite(repository.WriteCreate, newVendor("fresh"), 0))
	if got.Vendor == nil || got.Vendor.ID == uuid.Nil {
		t.Fatalf("create without an ID returned %+v", got)
	}
}

func TestApplyWriteWorkItemOps(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)

	root := newItem("root", nil)
	root.ID = uuid.New()
	create := itemWrite(repository.WriteCreate, root, 0)
	got := mustApply(t, s, create)
	if got.AlreadyApplied || got.WorkItem == nil || got.Vendor != nil || got.WorkItem.ID != root.ID || got.WorkItem.Version != 1 {
		t.Fatalf("create returned %+v", got)
	}
	wantRecorded(t, s, create, root.ID.String())
	parent := *got.WorkItem

	// Without an ID: one is assigned, and recorded as the key.
	childCreate := itemWrite(repository.WriteCreate, newItem("child", &parent), 0)
	got = mustApply(t, s, childCreate)
	child := *got.WorkItem
	if child.ID == uuid.Nil || child.Path != parent.ChildPath() || child.Depth != 1 {
		t.Fatalf("child created as %+v", child)
	}
	wantRecorded(t, s, childCreate, child.ID.String())

	change := parent
	change.Title = "renamed"
	update := itemWrite(repository.WriteUpdate, change, 1)
	got = mustApply(t, s, update)
	if got.WorkItem == nil || got.WorkItem.Version != 2 || got.WorkItem.Title != "renamed" {
		t.Fatalf("update returned %+v", got)
	}
	if stored, err := s.WorkItems().Get(ctx, root.ID); err != nil || !reflect.DeepEqual(stored, *got.WorkItem) {
		t.Fatalf("Get = %+v, %v; ApplyWrite returned %+v", stored, err, *got.WorkItem)
	}
	wantRecorded(t, s, update, root.ID.String())

	del := itemWrite(repository.WriteDelete, repository.WorkItem{ID: root.ID}, 0)
	if got = mustApply(t, s, del); got != (repository.AppliedWrite{}) {
		t.Fatalf("delete returned %+v, want no row", got)
	}
	for _, id := range []uuid.UUID{root.ID, child.ID} { // the subtree, as Delete does
		if w, err := s.WorkItems().Get(ctx, id); err != nil || w.DeletedAt == nil {
			t.Fatalf("%s after delete: %+v, %v; want soft-deleted", id, w, err)
		}
	}
	wantRecorded(t, s, del, root.ID.String())
}

// A replay of an applied write (after a crash or a lost reply) does
// nothing and says so, with the row as it is now.
func TestApplyWriteTwiceAppliesOnce(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)

	create := vendorWrite(repository.WriteCreate, newVendor("acme"), 0) // no ID: a replay must not make a second row
	first := mustApply(t, s, create)
	again := mustApply(t, s, create)
	if !again.AlreadyApplied || again.Vendor == nil || !reflect.DeepEqual(*again.Vendor, *first.Vendor) {
		t.Fatalf("replayed create: %+v, want AlreadyApplied with %+v", again, *first.Vendor)
	}

	change := *first.Vendor
	change.Status = repository.VendorBroken
	update := vendorWrite(repository.WriteUpdate, change, 1)
	mustApply(t, s, update)
	again = mustApply(t, s, update)
	if !again.AlreadyApplied || again.Vendor == nil || again.Vendor.Version != 2 {
		t.Fatalf("replayed update: %+v, want AlreadyApplied at version 2", again)
	}
	if v, _ := s.Vendors().Get(ctx, "acme"); v.Version != 2 {
		t.Fatalf("after a replayed update the vendor is at version %d, want 2", v.Version)
	}

	// A replayed delete must not remove the vendor created again since.
	del := vendorWrite(repository.WriteDelete, repository.Vendor{Name: "acme"}, 0)
	mustApply(t, s, del)
	reborn, err := s.Vendors().Create(ctx, newVendor("acme"))
	if err != nil {
		t.Fatal(err)
	}
	again = mustApply(t, s, del)
	if !again.AlreadyApplied || again.Vendor == nil || again.Vendor.ID != reborn.ID {
		t.Fatalf("replayed delete: %+v, want AlreadyApplied with the vendor created since", again)
	}

	// Work items: a create without an ID is found again by the ID it got.
	itemCreate := itemWrite(repository.WriteCreate, newItem("once", nil), 0)
	item := mustApply(t, s, itemCreate).WorkItem
	again = mustApply(t, s, itemCreate)
	if !again.AlreadyApplied || again.WorkItem == nil || again.WorkItem.ID != item.ID {
		t.Fatalf("replayed item create: %+v, want AlreadyApplied with %s", again, item.ID)
	}
	if n := count(t, s, `SELECT count(*) FROM work_items WHERE title = 'once'`); n != 1 {
		t.Fatalf("%d items after a replayed create, want 1", n)
	}

	itemDel := itemWrite(repository.WriteDelete, repository.WorkItem{ID: item.ID}, 0)
	mustApply(t, s, itemDel)
	deleted, _ := s.WorkItems().Get(ctx, item.ID)
	again = mustApply(t, s, itemDel)
	if !again.AlreadyApplied || again.WorkItem == nil || !reflect.DeepEqual(*again.WorkItem, deleted) {
		t.Fatalf("replayed item delete: %+v, want AlreadyApplied with %+v", again, deleted)
	}
	if now, _ := s.WorkItems().Get(ctx, item.ID); now.Version != deleted.Version || !now.DeletedAt.Equal(*deleted.DeletedAt) {
		t.Fatalf("a replayed delete touched the item: %+v, was %+v", now, deleted)
	}
}

// The same write applied by several replayers at once: the first holds
// the record's insert uncommitted, the others wait on it, then find it.
// A row lock held from outside makes them all overlap for sure.
func TestApplyWriteConcurrentReplaysApplyOnce(t *testing.T) {
	ctx := feedCtx(t)
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	const replayers = 8
	cfg.MaxConns = replayers + 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := pgstore.New(pool)
	t.Cleanup(s.Close)
	v, err := s.Vendors().Create(ctx, newVendor("acme"))
	if err != nil {
		t.Fatal(err)
	}
	v.Status = repository.VendorBroken
	w := vendorWrite(repository.WriteUpdate, v, v.Version)

	lock, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	if _, err := lock.Exec(ctx, `SELECT 1 FROM vendors WHERE name = 'acme' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	results := make([]repository.AppliedWrite, replayers)
	errs := make([]error, replayers)
	var wg sync.WaitGroup
	for i := range replayers {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = s.ApplyWrite(ctx, w) }()
	}
	// One waits on the row lock, the others on its record's insert.
	feedEventually(t, 30*time.Second, "every replayer waiting on a lock", func() bool {
		return count(t, s, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`) == replayers
	})
	if err := lock.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	applied := 0
	for i := range replayers {
		switch {
		case errs[i] != nil:
			t.Errorf("replayer %d: %v", i, errs[i])
		case !results[i].AlreadyApplied:
			applied++
		case results[i].Vendor == nil || results[i].Vendor.Version != v.Version+1:
			t.Errorf("replayer %d: AlreadyApplied with %+v, want the row at version %d", i, results[i].Vendor, v.Version+1)
		}
	}
	if applied != 1 {
		t.Errorf("%d replayers applied the write, want exactly 1", applied)
	}
	if now, _ := s.Vendors().Get(ctx, "acme"); now.Version != v.Version+1 {
		t.Fatalf("the vendor moved from version %d to %d, want by exactly one", v.Version, now.Version)
	}
}

func TestApplyWriteStaleBaseConflicts(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	v, err := s.Vendors().Create(ctx, newVendor("acme"))
	if err != nil {
		t.Fatal(err)
	}
	// The row moved on behind the queue's back.
	if _, err := s.Pool().Exec(ctx, `UPDATE vendors SET version = version + 1, extractor_version = '9.9.9' WHERE name = 'acme'`); err != nil {
		t.Fatal(err)
	}
	v.Status = repository.VendorBroken
	w := vendorWrite(repository.WriteUpdate, v, 1)
	for attempt := range 2 { // a later replay still conflicts: nothing was recorded
		got, err := s.ApplyWrite(ctx, w)
		var ce *repository.ConflictError
		if !errors.Is(err, repository.ErrConflict) || !errors.As(err, &ce) || got.AlreadyApplied {
			t.Fatalf("attempt %d: %+v, %v; want a *ConflictError", attempt, got, err)
		}
		if ce.Key != "acme" || ce.Base != 1 || ce.Vendor == nil || ce.Vendor.Version != 2 || ce.Vendor.ExtractorVersion != "9.9.9" {
			t.Fatalf("attempt %d: conflict %+v (vendor %+v), want the current row at version 2", attempt, ce, ce.Vendor)
		}
		wantNotRecorded(t, s, w)
	}
	if now, _ := s.Vendors().Get(ctx, "acme"); now.Status != repository.VendorOperational {
		t.Fatalf("the stale write was applied: %+v", now)
	}
	// The repository's Update shares the path: its conflict carries the row too.
	if _, err := s.Vendors().Update(ctx, v); !errors.As(err, new(*repository.ConflictError)) {
		t.Fatalf("Update with a stale version: %v, want a *ConflictError", err)
	}

	item, err := s.WorkItems().Create(ctx, newItem("task", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `UPDATE work_items SET version = 5 WHERE id = $1`, item.ID); err != nil {
		t.Fatal(err)
	}
	item.Title = "stale"
	iw := itemWrite(repository.WriteUpdate, item, 1)
	_, err = s.ApplyWrite(ctx, iw)
	var ce *repository.ConflictError
	if !errors.As(err, &ce) || ce.WorkItem == nil || ce.WorkItem.Version != 5 || ce.WorkItem.Title != "task" {
		t.Fatalf("stale work item update: %v (%+v), want a *ConflictError with the row at version 5", err, ce)
	}
	wantNotRecorded(t, s, iw)

	missing := itemWrite(repository.WriteUpdate, newItem("ghost", nil), 1)
	missing.WorkItem.ID = uuid.New()
	if _, err := s.ApplyWrite(ctx, missing); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("update of a missing item: %v, want ErrNotFound", err)
	}
	wantNotRecorded(t, s, missing)
}

func TestApplyWriteCreateOfTakenKey(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	v, err := s.Vendors().Create(ctx, newVendor("acme"))
	if err != nil {
		t.Fatal(err)
	}
	item, err := s.WorkItems().Create(ctx, newItem("task", nil))
	if err != nil {
		t.Fatal(err)
	}
	other := newItem("other", nil)
	other.ID = item.ID
	for _, w := range []repository.Write{
		vendorWrite(repository.WriteCreate, newVendor("acme"), 0),
		itemWrite(repository.WriteCreate, other, 0),
	} {
		if _, err := s.ApplyWrite(ctx, w); !errors.Is(err, repository.ErrAlreadyExists) {
			t.Fatalf("create of a taken %s key: %v, want ErrAlreadyExists", w.Entity, err)
		}
		wantNotRecorded(t, s, w)
	}
	if now, _ := s.Vendors().Get(ctx, "acme"); !reflect.DeepEqual(now, v) {
		t.Fatalf("the vendor changed: %+v, was %+v", now, v)
	}
	if now, _ := s.WorkItems().Get(ctx, item.ID); now.Title != "task" {
		t.Fatalf("the item changed: %+v", now)
	}
}

func TestApplyWriteInvalidWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	existing := mustApply(t, s, vendorWrite(repository.WriteCreate, newVendor("acme"), 0))
	badName := newVendor("Bad Name")
	blank := newItem("x", nil)
	blank.Title = "  "
	orphan := newItem("orphan", &repository.WorkItem{ID: uuid.New()}) // the store refuses it, not Validate
	reused := vendorWrite(repository.WriteUpdate, *existing.Vendor, 1)
	reused.ID = mustApplyID(t, s) // the ID of an earlier, other write
	reusedKey := vendorWrite(repository.WriteDelete, repository.Vendor{Name: "zeta"}, 0)
	mustApply(t, s, reusedKey)
	reusedKey.Vendor.Name = "acme" // the same kind of write, to another key
	before := count(t, s, `SELECT count(*) FROM pgfallback_applied_writes`)
	for _, c := range []struct {
		name  string
		w     repository.Write
		field string
	}{
		{"nil ID", repository.Write{Op: repository.WriteCreate, Entity: repository.EntityVendor, Vendor: newVendor("x")}, "ID"},
		{"unknown op", repository.Write{ID: uuid.New(), Op: "upsert", Entity: repository.EntityVendor, Vendor: newVendor("x")}, "Op"},
		{"unknown entity", repository.Write{ID: uuid.New(), Op: repository.WriteCreate, Entity: "widget"}, "Entity"},
		{"vendor create, bad name", vendorWrite(repository.WriteCreate, badName, 0), "Name"},
		{"vendor update, base 0", vendorWrite(repository.WriteUpdate, newVendor("acme"), 0), "BaseVersion"},
		{"vendor delete, bad name", vendorWrite(repository.WriteDelete, badName, 0), "Name"},
		{"item create, blank title", itemWrite(repository.WriteCreate, blank, 0), "Title"},
		{"item update, no ID", itemWrite(repository.WriteUpdate, newItem("x", nil), 1), "ID"},
		{"item delete, no ID", itemWrite(repository.WriteDelete, repository.WorkItem{}, 0), "ID"},
		{"item create under a missing parent", itemWrite(repository.WriteCreate, orphan, 0), "ParentID"},
		{"an ID already used by another write", reused, "ID"},
		{"an ID already used for another key", reusedKey, "ID"},
	} {
		_, err := s.ApplyWrite(ctx, c.w)
		var ve *repository.ValidationError
		if !errors.Is(err, repository.ErrInvalid) || !errors.As(err, &ve) || ve.Field != c.field {
			t.Errorf("%s: %v, want ErrInvalid naming %s", c.name, err, c.field)
		}
	}
	if n := count(t, s, `SELECT count(*) FROM pgfallback_applied_writes`); n != before {
		t.Fatalf("%d writes recorded, want %d", n, before)
	}
	if n := count(t, s, `SELECT (SELECT count(*) FROM vendors) + (SELECT count(*) FROM work_items)`); n != 2 {
		t.Fatalf("%d rows stored, want the 2 written before", n)
	}
	if now, _ := s.Vendors().Get(ctx, "acme"); now.Version != 1 {
		t.Fatalf("an invalid write changed the vendor: %+v", now)
	}
}

// mustApplyID applies a work item create and returns its write's ID.
func mustApplyID(t *testing.T, s *pgstore.Store) uuid.UUID {
	t.Helper()
	w := itemWrite(repository.WriteCreate, newItem("earlier", nil), 0)
	mustApply(t, s, w)
	return w.ID
}

// A delete of a row that is already gone did what it wanted: success,
// recorded, so that its replay is AlreadyApplied like any other.
func TestApplyWriteDeleteOfGoneRow(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	deletedItem, err := s.WorkItems().Create(ctx, newItem("deleted", nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WorkItems().Delete(ctx, deletedItem.ID); err != nil {
		t.Fatal(err)
	}
	deletedItem, _ = s.WorkItems().Get(ctx, deletedItem.ID)
	neverID := uuid.New()
	for _, c := range []struct {
		w   repository.Write
		key string
	}{
		{vendorWrite(repository.WriteDelete, repository.Vendor{Name: "never"}, 0), "never"},
		{itemWrite(repository.WriteDelete, repository.WorkItem{ID: neverID}, 0), neverID.String()},
		{itemWrite(repository.WriteDelete, repository.WorkItem{ID: deletedItem.ID}, 0), deletedItem.ID.String()},
	} {
		got, err := s.ApplyWrite(ctx, c.w)
		if err != nil || got != (repository.AppliedWrite{}) {
			t.Fatalf("delete of gone %s: %+v, %v; want success", c.key, got, err)
		}
		wantRecorded(t, s, c.w, c.key)
	}
	if now, _ := s.WorkItems().Get(ctx, deletedItem.ID); !reflect.DeepEqual(now, deletedItem) {
		t.Fatalf("deleting a deleted item changed it: %+v, was %+v", now, deletedItem)
	}
}

func TestApplyWriteMovesSubtree(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	repo := s.WorkItems()
	items := chain(t, repo, 3) // a > b > c
	other := chain(t, repo, 2) // x > y
	move := items[1]           // b, from under a (depth 1) to under y (depth 2)
	move.ParentID = &other[1].ID
	w := itemWrite(repository.WriteUpdate, move, items[1].Version)
	got := mustApply(t, s, w).WorkItem
	if got.Path != other[1].ChildPath() || got.Depth != 2 || got.Version != 2 || *got.ParentID != other[1].ID {
		t.Fatalf("moved item: %+v", got)
	}
	c, err := repo.Get(ctx, items[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != got.ChildPath() || c.Depth != 3 || c.Version != items[2].Version+1 {
		t.Fatalf("descendant after the move: path %q depth %d version %d; want %q, 3, %d",
			c.Path, c.Depth, c.Version, got.ChildPath(), items[2].Version+1)
	}
	wantRecorded(t, s, w, move.ID.String())
	// Replayed: not moved again, versions unchanged.
	if again := mustApply(t, s, w); !again.AlreadyApplied || again.WorkItem.Version != 2 {
		t.Fatalf("replayed move: %+v", again)
	}
	if c2, _ := repo.Get(ctx, items[2].ID); c2.Version != c.Version {
		t.Fatalf("a replayed move bumped the descendant to version %d", c2.Version)
	}
}

// Rows written around validation that pgx cannot decode (metadata nested
// past encoding/json's 10,000 levels): the answer says whether the write
// was applied, and is never a bare scan error the fallback layer would take
// for an outage.
func TestApplyWriteUnreadableRows(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	deep := `{"a":` + strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000) + `}`
	if _, err := s.Pool().Exec(ctx, `INSERT INTO vendors (id, name, status, version, metadata)
		VALUES (gen_random_uuid(), 'poison', 'operational', 2, $1::jsonb)`, deep); err != nil {
		t.Fatal(err)
	}
	stale := vendorWrite(repository.WriteUpdate, newVendor("poison"), 1)
	_, err := s.ApplyWrite(ctx, stale)
	if !errors.Is(err, repository.ErrConflict) || !errors.Is(err, repository.ErrUnreadable) || !strings.Contains(err.Error(), "poison") {
		t.Fatalf("stale update of an unreadable vendor: %v, want ErrConflict and ErrUnreadable naming it", err)
	}
	wantNotRecorded(t, s, stale)
	// On the current version the update replaces the metadata: the row heals.
	fix := vendorWrite(repository.WriteUpdate, newVendor("poison"), 2)
	if got := mustApply(t, s, fix); got.Vendor == nil || got.Vendor.Version != 3 {
		t.Fatalf("update of an unreadable vendor at its version: %+v", got)
	}

	// Applied, then made unreadable behind the store's back: the replay
	// says it was applied.
	create := vendorWrite(repository.WriteCreate, newVendor("later"), 0)
	mustApply(t, s, create)
	if _, err := s.Pool().Exec(ctx, `UPDATE vendors SET metadata = $1::jsonb WHERE name = 'later'`, deep); err != nil {
		t.Fatal(err)
	}
	got, err := s.ApplyWrite(ctx, create)
	if !got.AlreadyApplied || !errors.Is(err, repository.ErrUnreadable) || !strings.Contains(err.Error(), "applied earlier") {
		t.Fatalf("replay of a write whose row is now unreadable: %+v, %v; want AlreadyApplied and ErrUnreadable", got, err)
	}

	itemID := uuid.New()
	if _, err := s.Pool().Exec(ctx, `INSERT INTO work_items (id, version, type, title, status, path, depth, metadata)
		VALUES ($1, 2, 'project', 'poison', 'active', '', 0, $2::jsonb)`, itemID, deep); err != nil {
		t.Fatal(err)
	}
	item := newItem("stale", nil)
	item.ID = itemID
	iw := itemWrite(repository.WriteUpdate, item, 1)
	_, err = s.ApplyWrite(ctx, iw)
	if !errors.Is(err, repository.ErrUnreadable) || !strings.Contains(err.Error(), "not applied") {
		t.Fatalf("stale update of an unreadable item: %v, want ErrUnreadable saying it was not applied", err)
	}
	wantNotRecorded(t, s, iw)
}

func TestPruneAppliedWrites(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	w1 := vendorWrite(repository.WriteCreate, newVendor("b"), 0)
	w2 := vendorWrite(repository.WriteCreate, newVendor("c"), 0)
	fresh := vendorWrite(repository.WriteCreate, newVendor("d"), 0)
	for _, w := range []repository.Write{w1, w2, fresh} {
		mustApply(t, s, w)
	}
	// More old records than one batch removes, as a long-lived database has.
	const backlog = 25_000
	if _, err := s.Pool().Exec(ctx, `
		INSERT INTO pgfallback_applied_writes (id, entity, key, op, applied_at)
		SELECT gen_random_uuid(), 'vendor', 'v' || i, 'update', now() - interval '30 days'
		FROM generate_series(1, $1) AS i`, backlog); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `UPDATE pgfallback_applied_writes SET applied_at = now() - interval '8 days'
		WHERE id = ANY($1::uuid[])`, []string{w1.ID.String(), w2.ID.String()}); err != nil {
		t.Fatal(err)
	}
	total := count(t, s, `SELECT count(*) FROM pgfallback_applied_writes`)

	removed, err := s.PruneAppliedWrites(ctx, pgstore.DefaultAppliedWriteRetention)
	if err != nil {
		t.Fatal(err)
	}
	if removed != backlog+2 {
		t.Fatalf("removed %d records, want %d", removed, backlog+2)
	}
	if n := count(t, s, `SELECT count(*) FROM pgfallback_applied_writes`); n != total-backlog-2 {
		t.Fatalf("%d records left, want %d", n, total-backlog-2)
	}
	wantNotRecorded(t, s, w1)
	wantNotRecorded(t, s, w2)
	wantRecorded(t, s, fresh, "d")
	if removed, err := s.PruneAppliedWrites(ctx, pgstore.DefaultAppliedWriteRetention); err != nil || removed != 0 {
		t.Fatalf("pruning again: %d, %v; want 0", removed, err)
	}
	if _, err := s.PruneAppliedWrites(ctx, -time.Second); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("negative olderThan: %v, want ErrInvalid", err)
	}
}

func TestAppliedWritesNotMigrated(t *testing.T) {
	ctx := feedCtx(t)
	s := storeWithout(t, ctx, 4) // 00004 and every later one
	if _, err := s.PruneAppliedWrites(ctx, 0); !errors.Is(err, repository.ErrNotFound) || !strings.Contains(err.Error(), "00004") {
		t.Errorf("PruneAppliedWrites: %v, want ErrNotFound naming migration 00004", err)
	}
	// Not ErrNotFound: a queue would take it for "no such row" and drop the write.
	_, err := s.ApplyWrite(ctx, vendorWrite(repository.WriteCreate, newVendor("acme"), 0))
	if err == nil || errors.Is(err, repository.ErrNotFound) || !strings.Contains(err.Error(), "00004") {
		t.Errorf("ApplyWrite: %v, want an error naming migration 00004, not ErrNotFound", err)
	}
	if n := count(t, s, `SELECT count(*) FROM vendors`); n != 0 {
		t.Errorf("ApplyWrite without the table wrote %d vendors", n)
	}
}

// Replay throughput: vendor updates, each a new write, one transaction
// each (BEGIN, record, UPDATE, COMMIT), against the repository's
// one-statement Update for comparison.
//
//	go test -run '^$' -bench ApplyWrite -benchmem ./pgstore/
func BenchmarkApplyWrite(b *testing.B) {
	ctx := context.Background()
	for _, via := range []string{"ApplyWrite", "Update"} {
		b.Run("via="+via, func(b *testing.B) {
			s := benchStore(b)
			v, err := s.Vendors().Create(ctx, newVendor("acme"))
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for b.Loop() {
				n++
				v.Status = repository.VendorBroken
				if n%2 == 0 {
					v.Status = repository.VendorOperational
				}
				if via == "Update" {
					v, err = s.Vendors().Update(ctx, v)
				} else {
					var got repository.AppliedWrite
					got, err = s.ApplyWrite(ctx, vendorWrite(repository.WriteUpdate, v, v.Version))
					if got.Vendor != nil {
						v = *got.Vendor
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}

// Batched replay throughput: ApplyWrites of 256 vendor updates (256
// vendors), the replay's default batch, as one pipeline and one commit;
// and the same batch applied statement by statement (a work item delete
// among them sends a batch that way).
//
//	go test -run '^$' -bench ApplyWrites -benchmem ./pgstore/
func BenchmarkApplyWrites(b *testing.B) {
	const batch = 256
	ctx := context.Background()
	for _, path := range []string{"pipelined", "careful"} {
		b.Run("path="+path, func(b *testing.B) {
			s := benchStore(b)
			vs := make([]repository.Vendor, batch)
			for i := range vs {
				var err error
				if vs[i], err = s.Vendors().Create(ctx, newVendor(fmt.Sprintf("acme-%03d", i))); err != nil {
					b.Fatal(err)
				}
			}
			var item repository.WorkItem
			if path == "careful" {
				root, err := s.WorkItems().Create(ctx, newItem("root", nil))
				if err != nil {
					b.Fatal(err)
				}
				item = root
			}
			n := 0
			for b.Loop() {
				ws := make([]repository.Write, 0, batch+1)
				for i := range vs {
					vs[i].Status = repository.VendorBroken
					if n%2 == 0 {
						vs[i].Status = repository.VendorOperational
					}
					ws = append(ws, vendorWrite(repository.WriteUpdate, vs[i], vs[i].Version))
				}
				if path == "careful" {
					ws = append(ws, repository.Write{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityWorkItem, WorkItem: item})
				}
				out, err := s.ApplyWrites(ctx, ws)
				if err != nil || len(out) != len(ws) {
					b.Fatalf("ApplyWrites: %d of %d applied, %v", len(out), len(ws), err)
				}
				for i := range vs {
					vs[i] = *out[i].Vendor
				}
				n += batch
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
