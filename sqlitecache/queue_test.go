package sqlitecache

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// openAt opens the cache at path with clk (reopening a file a test wrote).
func openAt(t *testing.T, path string, clk *fakeClock, opts ...Option) *Cache {
	t.Helper()
	base := []Option{WithClock(clk.Now), WithCleanupInterval(0), WithLogger(discardLogger())}
	c, err := Open(path, append(base, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// vendorUpdate is a queued update of v built on version base, with the
// entity as it will be (version base+1).
func vendorUpdate(v repository.Vendor, base int64) (repository.Write, Row) {
	w := repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityVendor, Vendor: v, BaseVersion: base}
	after := v
	after.Version = base + 1
	after.UpdatedAt = after.UpdatedAt.Add(time.Duration(base) * time.Minute)
	return w, Row{Vendor: &after}
}

func vendorDelete(name string) repository.Write {
	return repository.Write{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityVendor, Vendor: repository.Vendor{Name: name}}
}

func vendorCreate(v repository.Vendor) (repository.Write, Row) {
	v.Version = 1
	w := repository.Write{ID: uuid.New(), Op: repository.WriteCreate, Entity: repository.EntityVendor, Vendor: v}
	return w, Row{Vendor: &v}
}

func mustEnqueue(t *testing.T, c *Cache, w repository.Write, after Row) QueuedWrite {
	t.Helper()
	q, err := c.Enqueue(bg, w, after, 0)
	if err != nil {
		t.Fatalf("Enqueue(%s %s %q): %v", w.Op, w.Entity, w.Key(), err)
	}
	return q
}

func pendingCount(t *testing.T, c *Cache) int {
	t.Helper()
	s, err := c.QueueStats(bg)
	if err != nil {
		t.Fatal(err)
	}
	return s.Pending
}

// wantVendor checks the cached vendor's version and pending mark.
func wantVendor(t *testing.T, c *Cache, name string, version int64, pending bool) {
	t.Helper()
	v, e, err := c.GetVendor(bg, name)
	if err != nil {
		t.Fatalf("GetVendor(%q): %v", name, err)
	}
	if v.Version != version || e.Pending != pending {
		t.Errorf("GetVendor(%q): version %d pending %v; want version %d pending %v", name, v.Version, e.Pending, version, pending)
	}
}

func TestEnqueueStoresWriteAndEntryDurably(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "cache.db")
	c := openAt(t, path, clk)
	v1 := testVendor("acme", 1)
	if err := c.SetVendor(bg, v1); err != nil {
		t.Fatal(err)
	}
	w, after := vendorUpdate(v1, 1)
	w.Vendor.Metadata = map[string]any{"changed": true}
	after.Vendor.Metadata = map[string]any{"changed": true}
	clk.Advance(time.Minute)
	q, err := c.Enqueue(bg, w, after, 10)
	if err != nil {
		t.Fatal(err)
	}
	if q.Seq <= 0 || q.Write.ID != w.ID || !q.QueuedAt.Equal(clk.Now()) {
		t.Errorf("Enqueue returned %+v", q)
	}
	// A second write on another key, queued after it.
	other := testVendor("other", 4)
	if err := c.SetVendor(bg, other); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	w2, after2 := vendorUpdate(other, 4)
	q2 := mustEnqueue(t, c, w2, after2)
	if q2.Seq <= q.Seq {
		t.Errorf("second Seq %d not above first %d", q2.Seq, q.Seq)
	}

	check := func(c *Cache, when string) {
		t.Helper()
		got, e, err := c.GetVendor(bg, "acme")
		if err != nil {
			t.Fatalf("%s: GetVendor: %v", when, err)
		}
		if !reflect.DeepEqual(got, *after.Vendor) || !e.Pending {
			t.Errorf("%s: GetVendor = %+v pending=%v\nwant %+v pending", when, got, e.Pending, *after.Vendor)
		}
		qs, err := c.PendingWrites(bg, 0)
		if err != nil {
			t.Fatalf("%s: PendingWrites: %v", when, err)
		}
		if len(qs) != 2 {
			t.Fatalf("%s: %d pending writes, want 2", when, len(qs))
		}
		p := qs[0]
		if p.Seq != q.Seq || p.Write.ID != w.ID || p.Write.Op != repository.WriteUpdate ||
			p.Write.Entity != repository.EntityVendor || p.Write.Key() != "acme" || p.Write.BaseVersion != 1 ||
			!p.QueuedAt.Equal(q.QueuedAt) || p.Attempts != 0 || p.Err != "" || p.Dead {
			t.Errorf("%s: pending write = %+v\nwant seq %d id %s update vendor acme base 1 at %v", when, p, q.Seq, w.ID, q.QueuedAt)
		}
		if !reflect.DeepEqual(p.Write.Vendor, w.Vendor) {
			t.Errorf("%s: queued vendor = %+v\nwant %+v", when, p.Write.Vendor, w.Vendor)
		}
		if qs[1].Write.ID != w2.ID || qs[1].Seq != q2.Seq {
			t.Errorf("%s: second pending write = %+v, want %s", when, qs[1], w2.ID)
		}
		if one, err := c.PendingWrites(bg, 1); err != nil || len(one) != 1 || one[0].Write.ID != w.ID {
			t.Errorf("%s: PendingWrites(1) = %v, %v", when, one, err)
		}
		s, err := c.QueueStats(bg)
		if err != nil || s.Pending != 2 || s.DeadLetters != 0 || !s.Oldest.Equal(q.QueuedAt) {
			t.Errorf("%s: QueueStats = %+v, %v", when, s, err)
		}
	}
	check(c, "before reopen")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	check(openAt(t, path, clk), "after reopen")
}

func TestEnqueueWorkItemRoundTrip(t *testing.T) {
	c, _ := openTest(t)
	item := testWorkItem(3)
	if err := c.SetWorkItem(bg, item); err != nil {
		t.Fatal(err)
	}
	w := repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityWorkItem, WorkItem: item, BaseVersion: 3}
	w.WorkItem.Title = "queued title"
	after := w.WorkItem
	after.Version = 4
	mustEnqueue(t, c, w, Row{WorkItem: &after})
	got, e, err := c.GetWorkItem(bg, item.ID)
	if err != nil || !reflect.DeepEqual(got, after) || !e.Pending {
		t.Errorf("GetWorkItem = %+v pending=%v, %v", got, e.Pending, err)
	}
	qs, err := c.PendingWrites(bg, 0)
	if err != nil || len(qs) != 1 {
		t.Fatalf("PendingWrites = %v, %v", qs, err)
	}
	if !reflect.DeepEqual(qs[0].Write, w) {
		t.Errorf("queued write = %+v\nwant %+v", qs[0].Write, w)
	}
}

func TestWriteThroughLeavesPendingEntry(t *testing.T) {
	c, clk := openTest(t, WithVendorTTL(10*time.Minute), WithWorkItemTTL(10*time.Minute))
	v := testVendor("acme", 1)
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	w, after := vendorUpdate(v, 1)
	mustEnqueue(t, c, w, after) // pending at version 2

	newer := testVendor("acme", 9)
	if err := c.SetVendor(bg, newer); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 2, true)
	if err := c.SetVendors(bg, []repository.Vendor{newer, testVendor("bystander", 1)}); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 2, true)
	wantVendor(t, c, "bystander", 1, false) // the batch itself was written
	// Another vendor, recreated under the same name (a different ID, later
	// created_at), replaces a plain entry: not a pending one.
	recreated := testVendor("acme", 1)
	recreated.ID = uuid.New()
	recreated.CreatedAt = recreated.CreatedAt.Add(time.Hour)
	if err := c.SetVendor(bg, recreated); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 2, true)
	if err := c.DeleteVendor(bg, "acme"); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 2, true)

	// Work items: a pending parent survives DeleteWorkItemTree and
	// DeleteWorkItem; its plain child is evicted.
	parent := testWorkItem(1)
	child := testWorkItem(1)
	child.ParentID, child.Path, child.Depth = &parent.ID, parent.ID.String(), 1
	if err := c.SetWorkItems(bg, []repository.WorkItem{parent, child}); err != nil {
		t.Fatal(err)
	}
	wi := repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityWorkItem, WorkItem: parent, BaseVersion: 1}
	pAfter := parent
	pAfter.Version = 2
	mustEnqueue(t, c, wi, Row{WorkItem: &pAfter})
	higher := parent
	higher.Version = 7
	if err := c.SetWorkItem(bg, higher); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteWorkItemTree(bg, parent.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteWorkItem(bg, parent.ID); err != nil {
		t.Fatal(err)
	}
	if got, e, err := c.GetWorkItem(bg, parent.ID); err != nil || got.Version != 2 || !e.Pending {
		t.Errorf("pending work item after write-through and evictions: version %d pending %v, %v", got.Version, e.Pending, err)
	}
	if _, _, err := c.GetWorkItem(bg, child.ID); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("plain child after DeleteWorkItemTree: %v, want evicted", err)
	}

	// Stale beyond any window: ClearStale and ListVendorsWithin.
	if err := c.SetVendor(bg, testVendor("plain", 1)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	if err := c.SetVendor(bg, testVendor("fresh", 1)); err != nil {
		t.Fatal(err)
	}
	vs, err := c.ListVendorsWithin(bg, repository.VendorFilter{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got := vendorNames(vs); !reflect.DeepEqual(got, []string{"acme", "fresh"}) {
		t.Errorf("ListVendorsWithin(1m) = %v, want [acme fresh] (pending acme is never too old)", got)
	}
	if _, e, _ := c.GetVendor(bg, "acme"); !e.Stale || !e.Pending {
		t.Errorf("acme entry = %+v, want stale and pending", e)
	}
	n, err := c.ClearStale(bg)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 { // plain and bystander
		t.Errorf("ClearStale removed %d, want 2", n)
	}
	wantVendor(t, c, "acme", 2, true)
	if _, e, err := c.GetWorkItem(bg, parent.ID); err != nil || !e.Pending {
		t.Errorf("pending work item after ClearStale: %+v, %v", e, err)
	}
	// The background cleanup's retention path is the same query.
	if _, err := c.clearOlderThan(bg, "test cleanup", 0); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 2, true)
	if pendingCount(t, c) != 2 {
		t.Errorf("pending writes changed by write-through")
	}
}

func vendorNames(vs []repository.Vendor) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

// ClearAll empties the cache of PostgreSQL's rows, not of the entries
// queued writes are pending on: the writes stay queued, so their entries
// must stay too (read-your-writes, and no re-caching of a deleted vendor).
func TestClearAllLeavesPendingEntries(t *testing.T) {
	c, _ := openTest(t)
	v := testVendor("acme", 1)
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	if err := c.SetVendor(bg, testVendor("gone", 1)); err != nil {
		t.Fatal(err)
	}
	w, after := vendorUpdate(v, 1)
	mustEnqueue(t, c, w, after)
	mustEnqueue(t, c, vendorDelete("gone"), Row{})
	if _, err := c.ClearAll(bg); err != nil {
		t.Fatal(err)
	}
	if pendingCount(t, c) != 2 {
		t.Fatalf("ClearAll changed the queue")
	}
	_, e, err := c.GetVendor(bg, "acme")
	_, _, terr := c.GetVendor(bg, "gone")
	if err != nil || !e.Pending || !errors.Is(terr, ErrPendingDelete) {
		t.Fatalf("ClearAll deleted the entries of queued writes, which stay queued: "+
			"GetVendor(acme, update pending) = %v pending=%v, want the queued state; GetVendor(gone, delete pending) = %v, want ErrPendingDelete",
			err, e.Pending, terr)
	}
}

func TestPendingDeleteTombstone(t *testing.T) {
	c, _ := openTest(t)
	for _, n := range []string{"acme", "beta", "gamma"} {
		if err := c.SetVendor(bg, testVendor(n, 1)); err != nil {
			t.Fatal(err)
		}
	}
	mustEnqueue(t, c, vendorDelete("acme"), Row{})
	w, after := vendorUpdate(testVendor("beta", 1), 1)
	mustEnqueue(t, c, w, after)

	for range 2 { // the second read could come from the memo
		_, e, err := c.GetVendor(bg, "acme")
		if !errors.Is(err, ErrPendingDelete) || !errors.Is(err, repository.ErrNotFound) {
			t.Errorf("GetVendor(tombstone) err = %v, want ErrPendingDelete and ErrNotFound", err)
		}
		if !e.Pending {
			t.Errorf("GetVendor(tombstone) entry = %+v, want Pending", e)
		}
	}
	if _, err := c.Vendors().Get(bg, "acme"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("repo Get(tombstone) = %v, want ErrNotFound", err)
	}
	// Write-through of PostgreSQL's (older) row cannot resurrect it.
	if err := c.SetVendor(bg, testVendor("acme", 5)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetVendor(bg, "acme"); !errors.Is(err, ErrPendingDelete) {
		t.Errorf("after SetVendor: GetVendor = %v, want ErrPendingDelete", err)
	}
	vs, err := c.ListVendors(bg, repository.VendorFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := vendorNames(vs); !reflect.DeepEqual(got, []string{"beta", "gamma"}) {
		t.Errorf("ListVendors = %v, want [beta gamma]", got)
	}
	op := repository.VendorOperational
	if vs, _ := c.ListVendorsWithin(bg, repository.VendorFilter{Status: &op}, 0); !reflect.DeepEqual(vendorNames(vs), []string{"beta", "gamma"}) {
		t.Errorf("ListVendorsWithin(status) = %v", vendorNames(vs))
	}
	names, err := c.VendorNames(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(names, []string{"gamma"}) {
		t.Errorf("VendorNames = %v, want [gamma] (pending keys excluded)", names)
	}
	// A delete of a vendor the cache does not hold still leaves a tombstone.
	mustEnqueue(t, c, vendorDelete("unknown"), Row{})
	if _, e, err := c.GetVendor(bg, "unknown"); !errors.Is(err, ErrPendingDelete) || !e.Pending {
		t.Errorf("GetVendor(uncached deleted) = %v pending=%v", err, e.Pending)
	}
}

func TestEnqueueChecks(t *testing.T) {
	c, _ := openTest(t)
	v3 := testVendor("acme", 3)
	if err := c.SetVendor(bg, v3); err != nil {
		t.Fatal(err)
	}
	unchanged := func(when string) {
		t.Helper()
		got, e, err := c.GetVendor(bg, "acme")
		if err != nil || !reflect.DeepEqual(got, v3) || e.Pending {
			t.Errorf("%s: acme = %+v pending=%v, %v; want it unchanged", when, got, e.Pending, err)
		}
		if n := pendingCount(t, c); n != 0 {
			t.Errorf("%s: %d writes pending, want 0", when, n)
		}
	}

	w, after := vendorUpdate(v3, 2)
	if _, err := c.Enqueue(bg, w, after, 0); !errors.Is(err, repository.ErrConflict) {
		t.Errorf("update below the cached version: %v, want ErrConflict", err)
	}
	unchanged("after conflict")

	cw, cafter := vendorCreate(testVendor("acme", 1))
	if _, err := c.Enqueue(bg, cw, cafter, 0); !errors.Is(err, repository.ErrAlreadyExists) {
		t.Errorf("create of a cached key: %v, want ErrAlreadyExists", err)
	}
	unchanged("after create of a cached key")

	bad := []struct {
		name string
		w    repository.Write
	}{
		{"nil ID", func() repository.Write { w, _ := vendorUpdate(v3, 3); w.ID = uuid.Nil; return w }()},
		{"bad op", func() repository.Write { w, _ := vendorUpdate(v3, 3); w.Op = "upsert"; return w }()},
		{"no op", func() repository.Write { w, _ := vendorUpdate(v3, 3); w.Op = ""; return w }()},
		{"bad entity", func() repository.Write { w, _ := vendorUpdate(v3, 3); w.Entity = "tenant"; return w }()},
		{"no key", func() repository.Write { w, _ := vendorUpdate(v3, 3); w.Vendor.Name = ""; return w }()},
		{"no work item key", repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityWorkItem}},
	}
	for _, b := range bad {
		_, after := vendorUpdate(v3, 3)
		if _, err := c.Enqueue(bg, b.w, after, 0); !errors.Is(err, repository.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", b.name, err)
		}
	}
	unchanged("after invalid writes")

	// The limit: nothing written, neither the write nor the entry.
	ok, okAfter := vendorUpdate(v3, 3)
	q, err := c.Enqueue(bg, ok, okAfter, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, cfAfter := vendorCreate(testVendor("newcomer", 1))
	if _, err := c.Enqueue(bg, cf, cfAfter, 1); !errors.Is(err, ErrQueueFull) {
		t.Errorf("enqueue at the limit: %v, want ErrQueueFull", err)
	}
	if _, _, err := c.GetVendor(bg, "newcomer"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("a refused create left an entry: %v", err)
	}
	if n := pendingCount(t, c); n != 1 {
		t.Errorf("%d pending after ErrQueueFull, want 1", n)
	}
	if _, err := c.Enqueue(bg, cf, cfAfter, 2); err != nil { // below the limit: accepted
		t.Errorf("enqueue below the limit: %v", err)
	}

	// A duplicate ID: refused, and its entity not shown.
	dup, dupAfter := vendorUpdate(*okAfter.Vendor, 4)
	dup.ID = q.Write.ID
	if _, err := c.Enqueue(bg, dup, dupAfter, 0); !errors.Is(err, repository.ErrInvalid) {
		t.Errorf("duplicate ID: %v, want ErrInvalid", err)
	}
	wantVendor(t, c, "acme", 4, true)
	if n := pendingCount(t, c); n != 2 {
		t.Errorf("%d pending after a duplicate, want 2", n)
	}

	// A tombstone: update and delete are ErrNotFound, a create is allowed.
	if err := c.SetVendor(bg, testVendor("doomed", 1)); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, c, vendorDelete("doomed"), Row{})
	before := pendingCount(t, c)
	uw, uafter := vendorUpdate(testVendor("doomed", 1), 1)
	if _, err := c.Enqueue(bg, uw, uafter, 0); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("update of a tombstone: %v, want ErrNotFound", err)
	}
	if _, err := c.Enqueue(bg, vendorDelete("doomed"), Row{}, 0); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("delete of a tombstone: %v, want ErrNotFound", err)
	}
	if _, _, err := c.GetVendor(bg, "doomed"); !errors.Is(err, ErrPendingDelete) {
		t.Errorf("tombstone after refused writes: %v", err)
	}
	if n := pendingCount(t, c); n != before {
		t.Errorf("refused writes on a tombstone queued something: %d pending, want %d", n, before)
	}
	rw, rafter := vendorCreate(testVendor("doomed", 1))
	if _, err := c.Enqueue(bg, rw, rafter, 0); err != nil {
		t.Errorf("create over a tombstone: %v", err)
	}
	wantVendor(t, c, "doomed", 1, true)

	// A read-only cache writes nothing.
	ro, err := OpenReadOnly(c.Path(), WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Enqueue(bg, cw, cafter, 0); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Enqueue on a read-only cache: %v, want ErrReadOnly", err)
	}
}

func TestCompleteWrite(t *testing.T) {
	c, _ := openTest(t)
	v1 := testVendor("acme", 1)
	if err := c.SetVendor(bg, v1); err != nil {
		t.Fatal(err)
	}
	w, after := vendorUpdate(v1, 1)
	q := mustEnqueue(t, c, w, after)
	stored := *after.Vendor
	stored.UpdatedAt = stored.UpdatedAt.Add(time.Second) // PostgreSQL's own timestamp
	if err := c.CompleteWrite(bg, q, Row{Vendor: &stored}); err != nil {
		t.Fatal(err)
	}
	if n := pendingCount(t, c); n != 0 {
		t.Errorf("%d pending after CompleteWrite", n)
	}
	got, e, err := c.GetVendor(bg, "acme")
	if err != nil || !reflect.DeepEqual(got, stored) || e.Pending {
		t.Errorf("after CompleteWrite: %+v pending=%v, %v; want PostgreSQL's row, not pending", got, e.Pending, err)
	}
	if err := c.SetVendor(bg, testVendor("acme", 3)); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 3, false) // write-through applies again
	if err := c.CompleteWrite(bg, q, Row{Vendor: &stored}); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("second CompleteWrite: %v, want ErrNotFound", err)
	}
	wantVendor(t, c, "acme", 3, false)

	// Two writes on one key: completing the first keeps the second's state.
	v3 := testVendor("acme", 3)
	wa, aa := vendorUpdate(v3, 3)
	qa := mustEnqueue(t, c, wa, aa)
	wb, ab := vendorUpdate(*aa.Vendor, 4)
	qb := mustEnqueue(t, c, wb, ab)
	wantVendor(t, c, "acme", 5, true)
	if err := c.CompleteWrite(bg, qa, Row{Vendor: aa.Vendor}); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 5, true)
	if err := c.SetVendor(bg, testVendor("acme", 9)); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 5, true)
	if err := c.CompleteWrite(bg, qb, Row{Vendor: ab.Vendor}); err != nil {
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 5, false)

	// A vendor delete: completing it removes the tombstone.
	qd := mustEnqueue(t, c, vendorDelete("acme"), Row{})
	if err := c.CompleteWrite(bg, qd, Row{}); err != nil {
		t.Fatal(err)
	}
	_, e, err = c.GetVendor(bg, "acme")
	if !errors.Is(err, repository.ErrNotFound) || errors.Is(err, ErrPendingDelete) || e.Pending {
		t.Errorf("after completing the delete: %v pending=%v; want a plain miss", err, e.Pending)
	}
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil { // re-created elsewhere: cacheable again
		t.Fatal(err)
	}
	wantVendor(t, c, "acme", 1, false)

	// A work item delete: its entry (marked deleted) stays, not pending.
	item := testWorkItem(1)
	if err := c.SetWorkItem(bg, item); err != nil {
		t.Fatal(err)
	}
	deleted := item
	now := time.Now().UTC()
	deleted.DeletedAt, deleted.Version = &now, 2
	wd := repository.Write{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityWorkItem, WorkItem: repository.WorkItem{ID: item.ID}}
	qw := mustEnqueue(t, c, wd, Row{WorkItem: &deleted})
	if err := c.CompleteWrite(bg, qw, Row{}); err != nil {
		t.Fatal(err)
	}
	if got, e, err := c.GetWorkItem(bg, item.ID); err != nil || got.DeletedAt == nil || e.Pending {
		t.Errorf("work item after completing its delete: %+v pending=%v, %v", got, e.Pending, err)
	}
}

func TestDeadLetterRetryDiscard(t *testing.T) {
	c, clk := openTest(t)
	a := testVendor("acme", 1)
	b := testVendor("beta", 1)
	if err := c.SetVendors(bg, []repository.Vendor{a, b}); err != nil {
		t.Fatal(err)
	}
	w1, a1 := vendorUpdate(a, 1)
	q1 := mustEnqueue(t, c, w1, a1)
	wb, bb := vendorUpdate(b, 1)
	qb := mustEnqueue(t, c, wb, bb)
	w2, a2 := vendorUpdate(*a1.Vendor, 2)
	q2 := mustEnqueue(t, c, w2, a2)
	w3, a3 := vendorUpdate(*a2.Vendor, 3)
	q3 := mustEnqueue(t, c, w3, a3)

	// DeferWrite: one more attempt, and why.
	for range 2 {
		if err := c.DeferWrite(bg, q1, "timeout"); err != nil {
			t.Fatal(err)
		}
	}
	qs, _ := c.PendingWrites(bg, 1)
	if len(qs) != 1 || qs[0].Attempts != 2 || qs[0].Err != "timeout" {
		t.Errorf("after DeferWrite x2: %+v, want Attempts 2, Err timeout", qs)
	}

	clk.Advance(time.Minute)
	cur := testVendor("acme", 7) // PostgreSQL's row
	dead, err := c.DeadLetter(bg, q1, "version conflict", Row{Vendor: &cur})
	if err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for _, d := range dead {
		ids = append(ids, d.Write.ID)
	}
	if !reflect.DeepEqual(ids, []uuid.UUID{w1.ID, w2.ID, w3.ID}) {
		t.Fatalf("DeadLetter returned %v, want [w1 w2 w3] in order", ids)
	}
	if dead[0].Err != "version conflict" || !dead[0].Dead || !dead[0].DeadAt.Equal(clk.Now()) {
		t.Errorf("dead letter = %+v", dead[0])
	}
	for _, d := range dead[1:] {
		if !strings.HasPrefix(d.Err, "behind dead-lettered write") || !strings.Contains(d.Err, w1.ID.String()) || !d.Dead {
			t.Errorf("write behind it: Err = %q dead=%v", d.Err, d.Dead)
		}
	}
	got, e, err := c.GetVendor(bg, "acme")
	if err != nil || !reflect.DeepEqual(got, cur) || e.Pending {
		t.Errorf("acme after DeadLetter: %+v pending=%v, %v; want PostgreSQL's row, not pending", got, e.Pending, err)
	}
	wantVendor(t, c, "beta", 2, true) // other keys untouched
	if pend, _ := c.PendingWrites(bg, 0); len(pend) != 1 || pend[0].Write.ID != wb.ID {
		t.Errorf("pending after DeadLetter = %+v, want only beta's write", pend)
	}
	s, _ := c.QueueStats(bg)
	if s.Pending != 1 || s.DeadLetters != 3 {
		t.Errorf("QueueStats = %+v, want 1 pending, 3 dead letters", s)
	}
	if _, err := c.DeadLetter(bg, q1, "again", Row{}); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("DeadLetter of a dead letter: %v, want ErrNotFound", err)
	}
	if err := c.CompleteWrite(bg, q2, Row{}); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("CompleteWrite of a dead letter: %v, want ErrNotFound", err)
	}

	dls, err := c.DeadLetters(bg)
	if err != nil || len(dls) != 3 {
		t.Fatalf("DeadLetters = %v, %v", dls, err)
	}
	for i, d := range dls {
		if d.Write.ID != ids[i] || d.Current.Vendor == nil || !reflect.DeepEqual(*d.Current.Vendor, cur) || d.Current.WorkItem != nil {
			t.Errorf("dead letter %d: id %s current %+v; want %s with PostgreSQL's row", i, d.Write.ID, d.Current, ids[i])
		}
		if !reflect.DeepEqual(d.Write.Vendor, []repository.Write{w1, w2, w3}[i].Vendor) {
			t.Errorf("dead letter %d: vendor does not round-trip", i)
		}
	}
	if dls[0].Attempts != 2 {
		t.Errorf("dead letter kept Attempts %d, want 2", dls[0].Attempts)
	}

	// Retry: back at the end, cleared.
	r, err := c.RetryWrite(bg, w1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq <= q3.Seq || r.Seq <= qb.Seq || r.Attempts != 0 || r.Err != "" || r.Dead || r.Write.ID != w1.ID {
		t.Errorf("RetryWrite = %+v; want a Seq above %d, Attempts 0, Err empty", r, q3.Seq)
	}
	pend, _ := c.PendingWrites(bg, 0)
	if len(pend) != 2 || pend[0].Write.ID != wb.ID || pend[1].Write.ID != w1.ID ||
		pend[1].Seq != r.Seq || pend[1].Attempts != 0 || pend[1].Err != "" || pend[1].Write.BaseVersion != 1 {
		t.Errorf("pending after retry = %+v; want beta's write, then w1 (attempts 0, no error)", pend)
	}
	wantVendor(t, c, "acme", 7, false) // the cache keeps PostgreSQL's row

	// Discard: gone for good.
	d, err := c.DiscardWrite(bg, w3.ID)
	if err != nil || d.Write.ID != w3.ID {
		t.Fatalf("DiscardWrite = %+v, %v", d, err)
	}
	dls, _ = c.DeadLetters(bg)
	if len(dls) != 1 || dls[0].Write.ID != w2.ID {
		t.Errorf("dead letters after retry and discard = %+v, want only w2", dls)
	}
	if _, err := c.DiscardWrite(bg, w3.ID); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("second DiscardWrite: %v, want ErrNotFound", err)
	}
	for _, id := range []uuid.UUID{wb.ID, w1.ID} { // pending, not dead letters
		if _, err := c.RetryWrite(bg, id); !errors.Is(err, repository.ErrInvalid) {
			t.Errorf("RetryWrite(pending): %v, want ErrInvalid", err)
		}
		if _, err := c.DiscardWrite(bg, id); !errors.Is(err, repository.ErrInvalid) {
			t.Errorf("DiscardWrite(pending): %v, want ErrInvalid", err)
		}
	}
	unknown := uuid.New()
	if _, err := c.RetryWrite(bg, unknown); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("RetryWrite(unknown): %v, want ErrNotFound", err)
	}
	if _, err := c.DiscardWrite(bg, unknown); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("DiscardWrite(unknown): %v, want ErrNotFound", err)
	}
	if s, _ := c.QueueStats(bg); s.Pending != 2 || s.DeadLetters != 1 {
		t.Errorf("QueueStats at the end = %+v, want 2 pending, 1 dead letter", s)
	}

	// Dead-lettered with no current row: the cache forgets the key.
	qz := pend[0] // beta's update
	if _, err := c.DeadLetter(bg, qz, "not found", Row{}); err != nil {
		t.Fatal(err)
	}
	if _, e, err := c.GetVendor(bg, "beta"); !errors.Is(err, repository.ErrNotFound) || e.Pending {
		t.Errorf("beta after a dead letter with no current row: %v pending=%v, want a miss", err, e.Pending)
	}
	dls, _ = c.DeadLetters(bg)
	if len(dls) != 2 || dls[0].Write.ID != wb.ID || dls[0].Current != (Row{}) || dls[1].Write.ID != w2.ID {
		t.Errorf("dead letters = %+v; want beta's (no current row), then w2", dls)
	}
}

// Many goroutines enqueueing at once, some on one key, against a limit:
// exactly limit writes are accepted, none lost or duplicated (run with
// -race).
func TestEnqueueConcurrentLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		limit    int
		twoFiles bool // half the goroutines through a second Cache on the file, as another process
	}{{"limited", 50, false}, {"unlimited", 0, false}, {"limited-two-caches", 50, true}} {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := openTest(t)
			other := c
			if tc.twoFiles {
				other = openAt(t, c.Path(), clk)
			}
			const goroutines, perG = 8, 10
			shared := testVendor("shared", 1)
			if err := c.SetVendor(bg, shared); err != nil {
				t.Fatal(err)
			}
			var (
				mu       sync.Mutex
				accepted = map[uuid.UUID]QueuedWrite{}
				full     int
				wg       sync.WaitGroup
				start    = make(chan struct{})
			)
			for g := range goroutines {
				wg.Go(func() {
					<-start
					for i := range perG {
						var v repository.Vendor
						if i%2 == 0 {
							v = testVendor(fmt.Sprintf("v-%d-%d", g, i), 1)
						} else {
							v = shared
						}
						// A base far above any cached version: only the limit
						// can refuse it.
						w := repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityVendor, Vendor: v, BaseVersion: 1 << 40}
						after := v
						after.Version = 2
						after.ExtractorVersion = w.ID.String()
						cache := c
						if g%2 == 1 {
							cache = other
						}
						q, err := cache.Enqueue(bg, w, Row{Vendor: &after}, tc.limit)
						mu.Lock()
						switch {
						case err == nil:
							accepted[w.ID] = q
						case errors.Is(err, ErrQueueFull):
							full++
						default:
							t.Errorf("Enqueue: %v", err)
						}
						mu.Unlock()
					}
				})
			}
			close(start)
			wg.Wait()
			want := goroutines * perG
			if tc.limit > 0 {
				want = tc.limit
			}
			if len(accepted) != want || len(accepted)+full != goroutines*perG {
				t.Fatalf("%d accepted, %d full; want %d accepted", len(accepted), full, want)
			}
			qs, err := c.PendingWrites(bg, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(qs) != want {
				t.Fatalf("%d pending writes stored, want %d", len(qs), want)
			}
			seen := map[uuid.UUID]bool{}
			lastShared := ""
			for i, q := range qs {
				a, ok := accepted[q.Write.ID]
				if !ok || seen[q.Write.ID] {
					t.Errorf("stored write %s: accepted=%v duplicate=%v", q.Write.ID, ok, seen[q.Write.ID])
				}
				seen[q.Write.ID] = true
				if a.Seq != q.Seq {
					t.Errorf("write %s: stored seq %d, Enqueue returned %d", q.Write.ID, q.Seq, a.Seq)
				}
				if i > 0 && q.Seq <= qs[i-1].Seq {
					t.Errorf("seqs out of order: %d after %d", q.Seq, qs[i-1].Seq)
				}
				if q.Write.Vendor.Name == "shared" {
					lastShared = q.Write.ID.String()
				} else {
					// Each accepted distinct-key write shows in the cache.
					v, e, err := c.GetVendor(bg, q.Write.Vendor.Name)
					if err != nil || !e.Pending || v.ExtractorVersion != q.Write.ID.String() {
						t.Errorf("vendor %s: %v pending=%v, %v", q.Write.Vendor.Name, v.ExtractorVersion, e.Pending, err)
					}
				}
			}
			// The shared key shows the last accepted write to it.
			if lastShared != "" {
				v, e, err := c.GetVendor(bg, "shared")
				if err != nil || !e.Pending || v.ExtractorVersion != lastShared {
					t.Errorf("shared vendor shows %q pending=%v (%v), want the last queued write %s", v.ExtractorVersion, e.Pending, err, lastShared)
				}
			}
			// Refused distinct keys left nothing.
			names, _ := c.ListVendors(bg, repository.VendorFilter{})
			if distinct := len(names) - 1; distinct != countDistinct(qs) {
				t.Errorf("%d distinct-key entries cached, %d accepted", distinct, countDistinct(qs))
			}
		})
	}
}

func countDistinct(qs []QueuedWrite) int {
	n := 0
	for _, q := range qs {
		if q.Write.Vendor.Name != "shared" {
			n++
		}
	}
	return n
}

// A cache holding queued writes and dead letters is still recognized as
// ours: by OpenReadOnly's schema check, by the ownership check, and as a
// file of an earlier version (no application_id) whose tables are ours.
func TestQueueFileStaysOurs(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "cache.db")
	c := openAt(t, path, clk)
	v := testVendor("acme", 1)
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	w, after := vendorUpdate(v, 1)
	mustEnqueue(t, c, w, after)
	q := mustEnqueue(t, c, vendorDelete("other"), Row{})
	if _, err := c.DeadLetter(bg, q, "rejected", Row{}); err != nil {
		t.Fatal(err)
	}

	if st, err := inspect(bg, path, time.Second); err != nil || st != fileOurs {
		t.Fatalf("inspect = %v, %v; want fileOurs", st, err)
	}
	ro, err := OpenReadOnly(path, WithClock(clk.Now), WithLogger(discardLogger()))
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	qs, err := ro.PendingWrites(bg, 0)
	if err != nil || len(qs) != 1 || qs[0].Write.ID != w.ID {
		t.Errorf("read-only PendingWrites = %v, %v", qs, err)
	}
	if _, e, err := ro.GetVendor(bg, "acme"); err != nil || !e.Pending {
		t.Errorf("read-only GetVendor = %+v, %v", e, err)
	}
	if _, err := ro.RetryWrite(bg, q.Write.ID); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only RetryWrite: %v, want ErrReadOnly", err)
	}
	ro.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// As a file of an earlier version that did not stamp it.
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA application_id = 0`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if got := applicationID(t, path); got != 0 {
		t.Fatalf("application_id = %#x, want 0", got)
	}
	if st, err := inspect(bg, path, time.Second); err != nil || st != fileOurs {
		t.Fatalf("inspect of an unstamped cache with a queue = %v, %v; want fileOurs", st, err)
	}
	c2 := openAt(t, path, clk)
	if n := pendingCount(t, c2); n != 1 {
		t.Errorf("after reopening: %d pending, want 1", n)
	}
	if got := applicationID(t, path); got != ApplicationID {
		t.Errorf("Open did not stamp the file: %#x", got)
	}
}
