package sqlitecache

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

func TestOfflineVendorRepository(t *testing.T) {
	c, clk := openTest(t)
	r := c.Vendors()
	in := testVendor("acme", 99)
	in.ID = uuid.Nil
	v, err := r.Create(bg, in)
	if err != nil {
		t.Fatal(err)
	}
	if v.ID == uuid.Nil || v.ID.Version() != 7 || v.Version != 1 || !v.CreatedAt.Equal(clk.Now()) || !v.UpdatedAt.Equal(v.CreatedAt) {
		t.Errorf("created = %+v", v)
	}
	if _, err := r.Create(bg, in); !errors.Is(err, repository.ErrAlreadyExists) {
		t.Errorf("duplicate name: %v", err)
	}
	sameID := testVendor("other", 1)
	sameID.ID = v.ID
	if _, err := r.Create(bg, sameID); !errors.Is(err, repository.ErrAlreadyExists) {
		t.Errorf("duplicate id: %v", err)
	}
	bad := in
	bad.ExtractorVersion = "v1"
	var ve *repository.ValidationError
	if _, err := r.Create(bg, bad); !errors.As(err, &ve) || ve.Field != "ExtractorVersion" {
		t.Errorf("bad create: %v", err)
	}

	got, err := r.Get(bg, "acme")
	if err != nil || got.ID != v.ID {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	clk.Advance(time.Minute)
	upd := got
	upd.Status = repository.VendorBroken
	upd.CreatedBy = "someone else" // kept from the stored row
	u, err := r.Update(bg, upd)
	if err != nil {
		t.Fatal(err)
	}
	if u.Version != 2 || u.Status != repository.VendorBroken || u.CreatedBy != v.CreatedBy ||
		!u.CreatedAt.Equal(v.CreatedAt) || !u.UpdatedAt.Equal(clk.Now()) {
		t.Errorf("updated = %+v", u)
	}
	if _, err := r.Update(bg, upd); !errors.Is(err, repository.ErrConflict) {
		t.Errorf("stale update: %v", err)
	}
	missing := testVendor("missing", 1)
	if _, err := r.Update(bg, missing); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("update missing: %v", err)
	}
	if _, err := r.Update(bg, testVendor("acme", 0)); !errors.As(err, &ve) || ve.Field != "Version" {
		t.Errorf("update version 0: %v", err)
	}
	list, err := r.List(bg, repository.VendorFilter{})
	if err != nil || len(list) != 1 {
		t.Errorf("List = %v, %v", list, err)
	}
	if err := r.Delete(bg, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(bg, "acme"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if _, err := r.Get(bg, "acme"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if err := r.Delete(bg, "BAD"); !errors.Is(err, repository.ErrInvalid) {
		t.Errorf("delete bad name: %v", err)
	}
}

// chain creates a root and n-1 nested children below it through r.
func chain(t *testing.T, r repository.WorkItemRepository, n int) []repository.WorkItem {
	t.Helper()
	var out []repository.WorkItem
	for i := range n {
		w := testWorkItem(0)
		w.ID = uuid.Nil
		if i > 0 {
			w.ParentID = &out[i-1].ID
		}
		created, err := r.Create(bg, w)
		if err != nil {
			t.Fatalf("create level %d: %v", i, err)
		}
		out = append(out, created)
	}
	return out
}

func TestOfflineWorkItemCreate(t *testing.T) {
	c, _ := openTest(t)
	r := c.WorkItems()
	items := chain(t, r, repository.MaxDepth+1)
	for i, w := range items {
		if w.Depth != i || w.Version != 1 {
			t.Errorf("level %d: depth %d version %d", i, w.Depth, w.Version)
		}
		if i > 0 && w.Path != items[i-1].ChildPath() {
			t.Errorf("level %d: path %q, want %q", i, w.Path, items[i-1].ChildPath())
		}
	}
	var ve *repository.ValidationError
	tooDeep := testWorkItem(0)
	tooDeep.ParentID = &items[repository.MaxDepth].ID
	if _, err := r.Create(bg, tooDeep); !errors.As(err, &ve) || ve.Field != "ParentID" {
		t.Errorf("too deep: %v", err)
	}
	orphan := testWorkItem(0)
	missing := uuid.New()
	orphan.ParentID = &missing
	if _, err := r.Create(bg, orphan); !errors.As(err, &ve) || ve.Field != "ParentID" {
		t.Errorf("missing parent: %v", err)
	}
	dup := testWorkItem(0)
	dup.ID = items[0].ID
	if _, err := r.Create(bg, dup); !errors.Is(err, repository.ErrAlreadyExists) {
		t.Errorf("duplicate id: %v", err)
	}
	if err := r.Delete(bg, items[1].ID); err != nil {
		t.Fatal(err)
	}
	underDeleted := testWorkItem(0)
	underDeleted.ParentID = &items[1].ID
	if _, err := r.Create(bg, underDeleted); !errors.As(err, &ve) || ve.Field != "ParentID" {
		t.Errorf("deleted parent: %v", err)
	}
	blank := testWorkItem(0)
	blank.Title = ""
	if _, err := r.Create(bg, blank); !errors.As(err, &ve) || ve.Field != "Title" {
		t.Errorf("blank title: %v", err)
	}
	if s, _ := c.Stats(bg); s.WorkItemsCached != repository.MaxDepth+1 {
		t.Errorf("rejected creates wrote entries: %d", s.WorkItemsCached)
	}
}

func TestOfflineWorkItemUpdateAndMove(t *testing.T) {
	c, clk := openTest(t)
	r := c.WorkItems()
	a := chain(t, r, 3) // a0 > a1 > a2
	b := chain(t, r, 1) // b0
	clk.Advance(time.Minute)

	// Plain update.
	u := a[2]
	u.Title = "renamed"
	got, err := r.Update(bg, u)
	if err != nil || got.Version != 2 || got.Title != "renamed" || got.Path != a[2].Path {
		t.Fatalf("update = %+v, %v", got, err)
	}
	if _, err := r.Update(bg, u); !errors.Is(err, repository.ErrConflict) {
		t.Errorf("stale update: %v", err)
	}

	// Move a1 (with a2) under b0.
	m := a[1]
	m.ParentID = &b[0].ID
	moved, err := r.Update(bg, m)
	if err != nil {
		t.Fatal(err)
	}
	if moved.Path != b[0].ChildPath() || moved.Depth != 1 || moved.Version != 2 {
		t.Errorf("moved = path %q depth %d v%d", moved.Path, moved.Depth, moved.Version)
	}
	child, _ := r.Get(bg, a[2].ID)
	if child.Path != moved.ChildPath() || child.Depth != 2 || child.Version != 3 || !child.UpdatedAt.Equal(clk.Now()) {
		t.Errorf("descendant after move = path %q depth %d v%d", child.Path, child.Depth, child.Version)
	}

	// Cycle: b0 under a2 (now b0's grandchild).
	cyc, _ := r.Get(bg, b[0].ID)
	cyc.ParentID = &a[2].ID
	var ve *repository.ValidationError
	if _, err := r.Update(bg, cyc); !errors.As(err, &ve) || ve.Field != "ParentID" || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}
	// Self-parent.
	self, _ := r.Get(bg, a[0].ID)
	self.ParentID = &self.ID
	if _, err := r.Update(bg, self); !errors.Is(err, repository.ErrInvalid) {
		t.Errorf("self parent: %v", err)
	}
	// Move to root.
	toRoot, _ := r.Get(bg, a[1].ID)
	toRoot.ParentID = nil
	if got, err := r.Update(bg, toRoot); err != nil || got.Path != "" || got.Depth != 0 {
		t.Errorf("move to root = %+v, %v", got, err)
	}
	if child, _ := r.Get(bg, a[2].ID); child.Depth != 1 || child.Path != a[1].ID.String() {
		t.Errorf("descendant after move to root: depth %d path %q", child.Depth, child.Path)
	}
	// A move that would push the subtree below MaxDepth.
	deep := chain(t, r, repository.MaxDepth) // depths 0..MaxDepth-1
	sub, _ := r.Get(bg, a[1].ID)             // a1 > a2: two levels
	sub.ParentID = &deep[len(deep)-1].ID
	if _, err := r.Update(bg, sub); !errors.As(err, &ve) || ve.Field != "ParentID" {
		t.Errorf("too deep move: %v", err)
	}
	if _, err := r.Update(bg, testWorkItem(1)); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("update missing: %v", err)
	}
}

func TestOfflineWorkItemDelete(t *testing.T) {
	c, clk := openTest(t)
	r := c.WorkItems()
	a := chain(t, r, 3)
	clk.Advance(time.Minute)
	if err := r.Delete(bg, a[0].ID); err != nil {
		t.Fatal(err)
	}
	for i, w := range a {
		got, err := r.Get(bg, w.ID)
		if err != nil || got.DeletedAt == nil || !got.DeletedAt.Equal(clk.Now()) || got.Version != 2 {
			t.Errorf("level %d after delete: %+v, %v", i, got, err)
		}
	}
	if err := r.Delete(bg, a[0].ID); err != nil {
		t.Errorf("re-delete: %v", err)
	}
	if got, _ := r.Get(bg, a[0].ID); got.Version != 2 {
		t.Errorf("re-delete bumped the version: %d", got.Version)
	}
	if err := r.Delete(bg, uuid.New()); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("delete missing: %v", err)
	}
	upd := a[1]
	upd.Version = 2
	if _, err := r.Update(bg, upd); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("update deleted: %v", err)
	}
	live, _ := r.List(bg, repository.WorkItemFilter{})
	all, _ := r.List(bg, repository.WorkItemFilter{IncludeDeleted: true})
	if len(live) != 0 || len(all) != 3 {
		t.Errorf("List: %d live, %d all", len(live), len(all))
	}
}

func TestDeleteWorkItemTree(t *testing.T) {
	c, _ := openTest(t)
	a := chain(t, c.WorkItems(), 3)
	other := chain(t, c.WorkItems(), 2)
	if err := c.DeleteWorkItemTree(bg, a[1].ID); err != nil {
		t.Fatal(err)
	}
	ids, _ := c.WorkItemIDs(bg)
	if len(ids) != 3 {
		t.Errorf("after evicting a1's tree: %d entries, want 3 (a0, and the other chain)", len(ids))
	}
	for _, w := range []repository.WorkItem{a[0], other[0], other[1]} {
		if _, _, err := c.GetWorkItem(bg, w.ID); err != nil {
			t.Errorf("unrelated entry evicted: %v", err)
		}
	}
	if err := c.DeleteWorkItemTree(bg, uuid.New()); err != nil {
		t.Errorf("absent tree: %v", err)
	}
}
