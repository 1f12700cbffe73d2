package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

func newItem(title string, parent *repository.WorkItem) repository.WorkItem {
	w := repository.WorkItem{
		Type:       repository.WorkItemTask,
		Title:      title,
		Status:     repository.WorkItemActive,
		BranchName: "feature/" + strings.ReplaceAll(title, " ", "-"),
		CommitHash: strings.Repeat("ab", 20),
		Metadata:   map[string]any{"title": title},
		CreatedBy:  "tester",
	}
	if parent != nil {
		w.ParentID = &parent.ID
	}
	return w
}

// chain creates a root and n-1 descendants, each the child of the previous.
func chain(t *testing.T, repo repository.WorkItemRepository, n int) []repository.WorkItem {
	t.Helper()
	var out []repository.WorkItem
	for i := range n {
		var parent *repository.WorkItem
		if i > 0 {
			parent = &out[i-1]
		}
		w, err := repo.Create(context.Background(), newItem(fmt.Sprintf("level %d", i), parent))
		if err != nil {
			t.Fatalf("create level %d: %v", i, err)
		}
		out = append(out, w)
	}
	return out
}

func TestWorkItemCreateGetHierarchy(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).WorkItems()
	items := chain(t, repo, 6) // depths 0..5
	for i, w := range items {
		if w.Depth != i || w.Version != 1 {
			t.Fatalf("level %d: depth %d version %d", i, w.Depth, w.Version)
		}
		if i == 0 {
			if w.Path != "" || w.ParentID != nil {
				t.Fatalf("root: path %q parent %v, want empty", w.Path, w.ParentID)
			}
			continue
		}
		if want := items[i-1].ChildPath(); w.Path != want {
			t.Fatalf("level %d: path %q, want %q", i, w.Path, want)
		}
		got, err := repo.Get(ctx, w.ID)
		if err != nil || !reflect.DeepEqual(got, w) {
			t.Fatalf("Get level %d = %+v, %v; want %+v", i, got, err, w)
		}
	}
	// A seventh level would be at depth 6.
	if _, err := repo.Create(ctx, newItem("too deep", &items[5])); !errors.Is(err, repository.ErrInvalid) || !strings.Contains(err.Error(), "ParentID") {
		t.Fatalf("create at depth 6: got %v, want ErrInvalid naming ParentID", err)
	}
	ghost := repository.WorkItem{ID: uuid.New()}
	if _, err := repo.Create(ctx, newItem("orphan", &ghost)); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("create under a missing parent: got %v, want ErrInvalid", err)
	}
	if _, err := repo.Get(ctx, uuid.New()); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Get missing: got %v, want ErrNotFound", err)
	}
	dup := newItem("dup", nil)
	dup.ID = items[0].ID
	if _, err := repo.Create(ctx, dup); !errors.Is(err, repository.ErrAlreadyExists) {
		t.Fatalf("Create duplicate id: got %v, want ErrAlreadyExists", err)
	}
}

func TestWorkItemUpdate(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).WorkItems()
	w, err := repo.Create(ctx, newItem("first", nil))
	if err != nil {
		t.Fatal(err)
	}
	change := w
	change.Title = "renamed"
	change.Status = repository.WorkItemCompleted
	change.Metadata = map[string]any{"n": 2.0}
	updated, err := repo.Update(ctx, change)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if updated.Version != 2 || updated.Title != "renamed" || updated.Status != repository.WorkItemCompleted ||
		!reflect.DeepEqual(updated.Metadata, change.Metadata) || !updated.CreatedAt.Equal(w.CreatedAt) {
		t.Fatalf("Update returned %+v", updated)
	}
	if _, err := repo.Update(ctx, change); !errors.Is(err, repository.ErrConflict) {
		t.Fatalf("stale Update: got %v, want ErrConflict", err)
	}
	missing := newItem("missing", nil)
	missing.ID, missing.Version = uuid.New(), 1
	if _, err := repo.Update(ctx, missing); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Update missing: got %v, want ErrNotFound", err)
	}
	if err := repo.Delete(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	gone, _ := repo.Get(ctx, w.ID)
	if _, err := repo.Update(ctx, gone); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Update deleted item: got %v, want ErrNotFound", err)
	}
}

func TestWorkItemConcurrentUpdatesExactlyOneWins(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).WorkItems()
	w, err := repo.Create(ctx, newItem("race", nil))
	if err != nil {
		t.Fatal(err)
	}
	const writers = 12
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := w
			v.Title = fmt.Sprintf("writer %d", i)
			_, errs[i] = repo.Update(ctx, v)
		}()
	}
	wg.Wait()
	wins := 0
	for i, err := range errs {
		if err == nil {
			wins++
		} else if !errors.Is(err, repository.ErrConflict) {
			t.Errorf("writer %d: %v, want nil or ErrConflict", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won, want exactly 1", wins)
	}
}

func TestWorkItemMoveCarriesSubtree(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).WorkItems()
	a := chain(t, repo, 3) // a0 <- a1 <- a2
	b := chain(t, repo, 2) // b0 <- b1

	// Move a1 (with a2) under b1: a1 goes to depth 2, a2 to depth 3.
	move := a[1]
	move.ParentID = &b[1].ID
	moved, err := repo.Update(ctx, move)
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	if moved.Depth != 2 || moved.Path != b[1].ChildPath() || moved.Version != 2 {
		t.Fatalf("moved item: %+v", moved)
	}
	child, err := repo.Get(ctx, a[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	if child.Depth != 3 || child.Path != moved.ChildPath() || child.Version != 2 {
		t.Fatalf("descendant after move: depth %d path %q version %d; want 3, %q, 2", child.Depth, child.Path, child.Version, moved.ChildPath())
	}

	// Moving b0 under a2 (now its own descendant) is a cycle.
	cycle := b[0]
	cycle.ParentID = &child.ID
	if _, err := repo.Update(ctx, cycle); !errors.Is(err, repository.ErrInvalid) || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cycle: got %v, want ErrInvalid mentioning the cycle", err)
	}

	// Moving to a root.
	root := moved
	root.ParentID = nil
	rooted, err := repo.Update(ctx, root)
	if err != nil || rooted.Depth != 0 || rooted.Path != "" {
		t.Fatalf("move to root: %+v, %v", rooted, err)
	}
	if child, _ = repo.Get(ctx, a[2].ID); child.Depth != 1 || child.Path != rooted.ChildPath() {
		t.Fatalf("descendant after move to root: depth %d path %q", child.Depth, child.Path)
	}
}

func TestWorkItemMoveBeyondMaxDepthIsRejected(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).WorkItems()
	deep := chain(t, repo, 4)    // depths 0..3
	subtree := chain(t, repo, 3) // depths 0..2; moved under deep[3] the leaf would be at 6
	move := subtree[0]
	move.ParentID = &deep[3].ID
	if _, err := repo.Update(ctx, move); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("move past MaxDepth: got %v, want ErrInvalid", err)
	}
	if got, _ := repo.Get(ctx, subtree[2].ID); got.Depth != 2 || got.Version != 1 {
		t.Fatalf("rejected move changed the subtree: %+v", got)
	}
}

func TestWorkItemSoftDelete(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).WorkItems()
	items := chain(t, repo, 3)
	other, err := repo.Create(ctx, newItem("other", nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Delete(ctx, items[1].ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for _, w := range items[1:] {
		got, err := repo.Get(ctx, w.ID)
		if err != nil || got.DeletedAt == nil || got.Version != 2 {
			t.Fatalf("Get deleted %s = %+v, %v; want DeletedAt set and version 2", w.Title, got, err)
		}
	}
	if got, _ := repo.Get(ctx, items[0].ID); got.DeletedAt != nil {
		t.Fatal("the parent of the deleted item was deleted too")
	}
	live, err := repo.List(ctx, repository.WorkItemFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if ids := itemIDs(live); !reflect.DeepEqual(ids, []uuid.UUID{items[0].ID, other.ID}) {
		t.Fatalf("List hides deleted: got %v", ids)
	}
	all, _ := repo.List(ctx, repository.WorkItemFilter{IncludeDeleted: true})
	if len(all) != 4 {
		t.Fatalf("List IncludeDeleted: %d items, want 4", len(all))
	}
	if err := repo.Delete(ctx, items[1].ID); err != nil {
		t.Fatalf("repeated Delete: got %v, want nil", err)
	}
	if got, _ := repo.Get(ctx, items[1].ID); got.Version != 2 {
		t.Fatalf("repeated Delete bumped the version to %d", got.Version)
	}
	if err := repo.Delete(ctx, uuid.New()); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Delete missing: got %v, want ErrNotFound", err)
	}
	if _, err := repo.Create(ctx, newItem("under deleted", &items[1])); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("create under a deleted parent: got %v, want ErrInvalid", err)
	}
}

func itemIDs(ws []repository.WorkItem) []uuid.UUID {
	out := []uuid.UUID{}
	for _, w := range ws {
		out = append(out, w.ID)
	}
	return out
}

func TestWorkItemListFiltersAndPages(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).WorkItems()
	root, err := repo.Create(ctx, newItem("root", nil))
	if err != nil {
		t.Fatal(err)
	}
	var children []repository.WorkItem
	types := []repository.WorkItemType{repository.WorkItemSession, repository.WorkItemTask, repository.WorkItemResearch}
	for i := range 6 {
		w := newItem(fmt.Sprintf("child %d", i), &root)
		w.Type = types[i%3]
		if i%2 == 0 {
			w.Status = repository.WorkItemBlocked
		}
		c, err := repo.Create(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, c)
	}
	task, blocked := repository.WorkItemTask, repository.WorkItemBlocked
	list := func(f repository.WorkItemFilter) []uuid.UUID {
		t.Helper()
		ws, err := repo.List(ctx, f)
		if err != nil {
			t.Fatalf("List(%+v): %v", f, err)
		}
		return itemIDs(ws)
	}
	ids := func(ws ...repository.WorkItem) []uuid.UUID { return itemIDs(ws) }
	c := children
	for _, tc := range []struct {
		name string
		f    repository.WorkItemFilter
		want []uuid.UUID
	}{
		{"all", repository.WorkItemFilter{}, ids(root, c[0], c[1], c[2], c[3], c[4], c[5])},
		{"children", repository.WorkItemFilter{ParentID: &root.ID}, ids(c...)},
		{"type", repository.WorkItemFilter{Type: &task}, ids(root, c[1], c[4])},
		{"status", repository.WorkItemFilter{Status: &blocked}, ids(c[0], c[2], c[4])},
		{"type+status", repository.WorkItemFilter{Type: &task, Status: &blocked}, ids(c[4])},
		{"page", repository.WorkItemFilter{ParentID: &root.ID, Limit: 2, Offset: 2}, ids(c[2], c[3])},
		{"past end", repository.WorkItemFilter{Offset: 50}, []uuid.UUID{}},
	} {
		if got := list(tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: List = %v, want %v", tc.name, got, tc.want)
		}
	}
	badType := repository.WorkItemType("epic")
	for _, f := range []repository.WorkItemFilter{{Limit: -1}, {Offset: -3}, {Type: &badType}} {
		if _, err := repo.List(ctx, f); !errors.Is(err, repository.ErrInvalid) {
			t.Errorf("List(%+v): got %v, want ErrInvalid", f, err)
		}
	}
}

func TestWorkItemValidationWritesNothing(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).WorkItems()
	zero := uuid.Nil
	cases := []struct {
		field  string
		mutate func(*repository.WorkItem)
	}{
		{"Type", func(w *repository.WorkItem) { w.Type = "" }},
		{"Type", func(w *repository.WorkItem) { w.Type = "epic" }},
		{"Title", func(w *repository.WorkItem) { w.Title = "" }},
		{"Title", func(w *repository.WorkItem) { w.Title = "   " }},
		{"Title", func(w *repository.WorkItem) { w.Title = strings.Repeat("t", 201) }},
		{"Status", func(w *repository.WorkItem) { w.Status = "done" }},
		{"ParentID", func(w *repository.WorkItem) { w.ParentID = &zero }},
		{"BranchName", func(w *repository.WorkItem) { w.BranchName = strings.Repeat("b", 256) }},
		{"CommitHash", func(w *repository.WorkItem) { w.CommitHash = "abc123" }},
		{"CommitHash", func(w *repository.WorkItem) { w.CommitHash = strings.Repeat("AB", 20) }},
		{"Metadata", func(w *repository.WorkItem) { w.Metadata = map[string]any{"f": func() {}} }},
		{"CreatedBy", func(w *repository.WorkItem) { w.CreatedBy = strings.Repeat("c", 101) }},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%s/%d", tc.field, i), func(t *testing.T) {
			w := newItem("valid", nil)
			tc.mutate(&w)
			_, err := repo.Create(ctx, w)
			var ve *repository.ValidationError
			if !errors.Is(err, repository.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("Create: got %v, want ErrInvalid for field %s", err, tc.field)
			}
		})
	}
	self := newItem("self", nil)
	self.ID = uuid.New()
	self.ParentID = &self.ID
	if _, err := repo.Create(ctx, self); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("own parent: got %v, want ErrInvalid", err)
	}
	if all, _ := repo.List(ctx, repository.WorkItemFilter{IncludeDeleted: true}); len(all) != 0 {
		t.Fatalf("invalid creates wrote %d rows", len(all))
	}
}
