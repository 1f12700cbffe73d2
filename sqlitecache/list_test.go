package sqlitecache

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

func TestListVendors(t *testing.T) {
	c, clk := openTest(t)
	for i, name := range []string{"delta", "alpha", "charlie", "bravo"} {
		v := testVendor(name, 1)
		if i%2 == 1 {
			v.Status = repository.VendorBroken
		}
		if err := c.SetVendor(bg, v); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Hour) // stale entries are listed too
	names := func(vs []repository.Vendor) []string {
		var out []string
		for _, v := range vs {
			out = append(out, v.Name)
		}
		return out
	}
	broken := repository.VendorBroken
	for _, tc := range []struct {
		f    repository.VendorFilter
		want []string
	}{
		{repository.VendorFilter{}, []string{"alpha", "bravo", "charlie", "delta"}},
		{repository.VendorFilter{Status: &broken}, []string{"alpha", "bravo"}},
		{repository.VendorFilter{Limit: 2, Offset: 1}, []string{"bravo", "charlie"}},
		{repository.VendorFilter{Offset: 10}, nil},
	} {
		got, err := c.ListVendors(bg, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil {
			t.Error("empty result must be an empty slice, not nil")
		}
		if !slices.Equal(names(got), tc.want) {
			t.Errorf("ListVendors(%+v) = %v, want %v", tc.f, names(got), tc.want)
		}
	}
	bad := repository.VendorStatus("nope")
	if _, err := c.ListVendors(bg, repository.VendorFilter{Status: &bad}); !errors.Is(err, repository.ErrInvalid) {
		t.Errorf("bad filter: %v", err)
	}
	if _, err := c.ListVendors(bg, repository.VendorFilter{Limit: -1}); !errors.Is(err, repository.ErrInvalid) {
		t.Errorf("bad limit: %v", err)
	}
	got, err := c.VendorNames(bg)
	if err != nil || !slices.Equal(got, []string{"alpha", "bravo", "charlie", "delta"}) {
		t.Errorf("VendorNames = %v, %v", got, err)
	}
}

func TestListWorkItems(t *testing.T) {
	c, _ := openTest(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	root := testWorkItem(1)
	root.Type = repository.WorkItemProject
	root.CreatedAt = base
	mk := func(created time.Duration, typ repository.WorkItemType, st repository.WorkItemStatus, deleted bool) repository.WorkItem {
		w := testWorkItem(1)
		w.ParentID, w.Path, w.Depth = &root.ID, root.ID.String(), 1
		w.Type, w.Status, w.CreatedAt = typ, st, base.Add(created)
		if deleted {
			d := base
			w.DeletedAt = &d
		}
		return w
	}
	a := mk(3*time.Second, repository.WorkItemTask, repository.WorkItemActive, false)
	b := mk(1*time.Second, repository.WorkItemSession, repository.WorkItemBlocked, false)
	d := mk(2*time.Second, repository.WorkItemTask, repository.WorkItemActive, true)
	// Same CreatedAt as a: ordered by id after it.
	e := mk(3*time.Second, repository.WorkItemTask, repository.WorkItemCompleted, false)
	if e.ID.String() < a.ID.String() {
		a, e = e, a
	}
	if err := c.SetWorkItems(bg, []repository.WorkItem{e, d, b, a, root}); err != nil {
		t.Fatal(err)
	}
	ids := func(ws []repository.WorkItem) []uuid.UUID {
		var out []uuid.UUID
		for _, w := range ws {
			out = append(out, w.ID)
		}
		return out
	}
	task, active := repository.WorkItemTask, repository.WorkItemActive
	var activeIDs []uuid.UUID // in list order, deleted included
	for _, w := range []repository.WorkItem{root, b, d, a, e} {
		if w.Status == active {
			activeIDs = append(activeIDs, w.ID)
		}
	}
	for _, tc := range []struct {
		name string
		f    repository.WorkItemFilter
		want []uuid.UUID
	}{
		{"all live", repository.WorkItemFilter{}, []uuid.UUID{root.ID, b.ID, a.ID, e.ID}},
		{"with deleted", repository.WorkItemFilter{IncludeDeleted: true}, []uuid.UUID{root.ID, b.ID, d.ID, a.ID, e.ID}},
		{"tasks", repository.WorkItemFilter{Type: &task}, []uuid.UUID{a.ID, e.ID}},
		{"active", repository.WorkItemFilter{Status: &active, IncludeDeleted: true}, activeIDs},
		{"children", repository.WorkItemFilter{ParentID: &root.ID}, []uuid.UUID{b.ID, a.ID, e.ID}},
		{"page", repository.WorkItemFilter{Limit: 2, Offset: 1}, []uuid.UUID{b.ID, a.ID}},
	} {
		got, err := c.ListWorkItems(bg, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("%s: got %v\nwant %v", tc.name, ids(got), tc.want)
		}
	}
	bad := repository.WorkItemType("nope")
	if _, err := c.ListWorkItems(bg, repository.WorkItemFilter{Type: &bad}); !errors.Is(err, repository.ErrInvalid) {
		t.Errorf("bad filter: %v", err)
	}
	got, err := c.WorkItemIDs(bg)
	if err != nil || len(got) != 5 || !slices.IsSortedFunc(got, func(x, y uuid.UUID) int {
		return compareStrings(x.String(), y.String())
	}) {
		t.Errorf("WorkItemIDs = %v, %v", got, err)
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// The ...Within lists leave out entries stale for longer than maxStale,
// and a negative maxStale means no limit.
func TestListWithinStaleness(t *testing.T) {
	c, clk := openTest(t, WithTTL(time.Minute))
	old := testWorkItem(1)
	if err := c.SetVendor(bg, testVendor("old", 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWorkItem(bg, old); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Minute)
	newer := testWorkItem(1)
	if err := c.SetVendor(bg, testVendor("new", 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWorkItem(bg, newer); err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Minute) // old: 15 min, new: 5 min; TTL 1 min
	for _, tc := range []struct {
		maxStale time.Duration
		vendors  int
	}{{-1, 2}, {20 * time.Minute, 2}, {10 * time.Minute, 1}, {time.Minute, 0}} {
		vs, err := c.ListVendorsWithin(bg, repository.VendorFilter{}, tc.maxStale)
		if err != nil || len(vs) != tc.vendors {
			t.Errorf("ListVendorsWithin(%v) = %d vendors, %v; want %d", tc.maxStale, len(vs), err, tc.vendors)
		}
		ws, err := c.ListWorkItemsWithin(bg, repository.WorkItemFilter{}, tc.maxStale)
		if err != nil || len(ws) != tc.vendors {
			t.Errorf("ListWorkItemsWithin(%v) = %d items, %v; want %d", tc.maxStale, len(ws), err, tc.vendors)
		}
	}
	if vs, _ := c.ListVendorsWithin(bg, repository.VendorFilter{}, 10*time.Minute); len(vs) == 1 && vs[0].Name != "new" {
		t.Errorf("kept %q, want the newer entry", vs[0].Name)
	}
}
