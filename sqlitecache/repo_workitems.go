package sqlitecache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// workItemRepo is the offline repository.WorkItemRepository over the cache.
type workItemRepo struct{ c *Cache }

var _ repository.WorkItemRepository = (*workItemRepo)(nil)

func (r *workItemRepo) Get(ctx context.Context, id uuid.UUID) (repository.WorkItem, error) {
	w, _, err := r.c.GetWorkItem(ctx, id)
	return w, err
}

func (r *workItemRepo) List(ctx context.Context, f repository.WorkItemFilter) ([]repository.WorkItem, error) {
	return r.c.ListWorkItems(ctx, f)
}

func (r *workItemRepo) Create(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	c := r.c
	if err := c.checkWrite(); err != nil {
		return repository.WorkItem{}, err
	}
	// Store-maintained fields are ignored, as documented.
	w.Version, w.Path, w.Depth, w.DeletedAt = 1, "", 0, nil
	if err := w.Validate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("sqlitecache: create work item: %w", err)
	}
	if w.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return repository.WorkItem{}, fmt.Errorf("sqlitecache: create work item: new id: %w", err)
		}
		w.ID = id
	}
	var stored repository.WorkItem
	err := c.inTx(ctx, "create work item", func(tx wtx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM cached_work_items WHERE id = ?`, w.ID.String()).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("work item %s: %w", w.ID, repository.ErrAlreadyExists)
		}
		if w.ParentID != nil {
			p, err := c.liveParent(ctx, tx, *w.ParentID)
			if err != nil {
				return err
			}
			if p.Depth+1 > repository.MaxDepth {
				return repository.Invalid("ParentID", "parent %s is at depth %d; a child would exceed the maximum depth %d",
					p.ID, p.Depth, repository.MaxDepth)
			}
			w.Path, w.Depth = p.ChildPath(), p.Depth+1
		}
		w.CreatedAt = c.now()
		w.UpdatedAt = w.CreatedAt
		var err error
		stored, err = c.writeWorkItem(ctx, tx, w)
		return err
	})
	if err != nil {
		return repository.WorkItem{}, err
	}
	return stored, nil
}

func (r *workItemRepo) Update(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	c := r.c
	if err := c.checkWrite(); err != nil {
		return repository.WorkItem{}, err
	}
	w.Path, w.Depth, w.DeletedAt = "", 0, nil // store-maintained
	if err := w.Validate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("sqlitecache: update work item: %w", err)
	}
	if w.Version < 1 {
		return repository.WorkItem{}, fmt.Errorf("sqlitecache: update work item: %w",
			repository.Invalid("Version", "must be at least 1, got %d", w.Version))
	}
	if w.ID == uuid.Nil {
		return repository.WorkItem{}, fmt.Errorf("sqlitecache: update work item: %w", repository.Invalid("ID", "must not be zero"))
	}
	var stored repository.WorkItem
	err := c.inTx(ctx, "update work item", func(tx wtx) error {
		cur, err := c.workItemInTx(ctx, tx, w.ID)
		if err != nil {
			return err
		}
		if cur.DeletedAt != nil {
			return fmt.Errorf("work item %s is deleted: %w", w.ID, repository.ErrNotFound)
		}
		if cur.Version != w.Version {
			return fmt.Errorf("work item %s is at version %d, not %d: %w", w.ID, cur.Version, w.Version, repository.ErrConflict)
		}
		w.CreatedAt, w.CreatedBy = cur.CreatedAt, cur.CreatedBy
		w.Version = cur.Version + 1
		w.UpdatedAt = c.now()
		w.Path, w.Depth = cur.Path, cur.Depth
		if !sameParent(cur.ParentID, w.ParentID) {
			if err := c.move(ctx, tx, cur, &w); err != nil {
				return err
			}
		}
		stored, err = c.writeWorkItem(ctx, tx, w)
		return err
	})
	if err != nil {
		return repository.WorkItem{}, err
	}
	return stored, nil
}

// move re-parents cur (whose new state is w) and rewrites its subtree: new
// Path and Depth for every descendant, Version bumped, UpdatedAt set.
// Deleted descendants move too, so every path stays consistent.
func (c *Cache) move(ctx context.Context, tx wtx, cur repository.WorkItem, w *repository.WorkItem) error {
	oldChild := cur.ChildPath()
	w.Path, w.Depth = "", 0
	if w.ParentID != nil {
		p, err := c.liveParent(ctx, tx, *w.ParentID)
		if err != nil {
			return err
		}
		if p.Path == oldChild || strings.HasPrefix(p.Path, oldChild+"/") {
			return repository.Invalid("ParentID", "moving %s under its descendant %s would create a cycle", cur.ID, p.ID)
		}
		w.Path, w.Depth = p.ChildPath(), p.Depth+1
	}
	desc, err := c.listWorkItems(ctx, tx, `SELECT id, encoding, data FROM cached_work_items
WHERE path = ? OR (path >= ? AND path < ?)`, oldChild, oldChild+"/", oldChild+"0")
	if err != nil {
		return err
	}
	deepest := w.Depth
	for _, d := range desc {
		deepest = max(deepest, d.Depth-cur.Depth+w.Depth)
	}
	if deepest > repository.MaxDepth {
		return repository.Invalid("ParentID", "the move would put part of the subtree at depth %d, deeper than %d",
			deepest, repository.MaxDepth)
	}
	newChild := w.ChildPath()
	for _, d := range desc {
		d.Path = newChild + d.Path[len(oldChild):]
		d.Depth = d.Depth - cur.Depth + w.Depth
		d.Version++
		d.UpdatedAt = w.UpdatedAt
		if _, err := c.writeWorkItem(ctx, tx, d); err != nil {
			return err
		}
	}
	return nil
}

func (r *workItemRepo) Delete(ctx context.Context, id uuid.UUID) error {
	c := r.c
	if err := c.checkWrite(); err != nil {
		return err
	}
	return c.inTx(ctx, "delete work item", func(tx wtx) error {
		cur, err := c.workItemInTx(ctx, tx, id)
		if err != nil {
			return err
		}
		if cur.DeletedAt != nil {
			return nil // already deleted: a retried Delete is a no-op
		}
		child := cur.ChildPath()
		desc, err := c.listWorkItems(ctx, tx, `SELECT id, encoding, data FROM cached_work_items
WHERE deleted = 0 AND (path = ? OR (path >= ? AND path < ?))`, child, child+"/", child+"0")
		if err != nil {
			return err
		}
		now := c.now()
		for _, w := range append(desc, cur) {
			w.DeletedAt = &now
			w.UpdatedAt = now
			w.Version++
			if _, err := c.writeWorkItem(ctx, tx, w); err != nil {
				return err
			}
		}
		return nil
	})
}

// liveParent returns the would-be parent.
// Errors: repository.ErrInvalid naming ParentID when it is absent or deleted.
func (c *Cache) liveParent(ctx context.Context, tx wtx, id uuid.UUID) (repository.WorkItem, error) {
	p, err := c.workItemInTx(ctx, tx, id)
	if errors.Is(err, repository.ErrNotFound) {
		return p, repository.Invalid("ParentID", "parent %s does not exist", id)
	}
	if err != nil {
		return p, err
	}
	if p.DeletedAt != nil {
		return p, repository.Invalid("ParentID", "parent %s is deleted", id)
	}
	return p, nil
}

// workItemInTx reads the current entry inside a write transaction.
// Errors: repository.ErrNotFound (with ErrCorruptEntry if it does not
// decode), or the SQLite error.
func (c *Cache) workItemInTx(ctx context.Context, tx wtx, id uuid.UUID) (repository.WorkItem, error) {
	var (
		enc  int64
		data []byte
	)
	err := tx.QueryRowContext(ctx, `SELECT encoding, data FROM cached_work_items WHERE id = ?`, id.String()).Scan(&enc, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return repository.WorkItem{}, fmt.Errorf("work item %s: %w", id, repository.ErrNotFound)
	}
	if err != nil {
		return repository.WorkItem{}, err
	}
	w, err := decodeWorkItem(enc, data)
	if err != nil {
		return repository.WorkItem{}, fmt.Errorf("work item %s: %w (%w: %v)", id, repository.ErrNotFound, ErrCorruptEntry, err)
	}
	return w, nil
}

// writeWorkItem stores w in tx and returns it as a later read will.
func (c *Cache) writeWorkItem(ctx context.Context, tx wtx, w repository.WorkItem) (repository.WorkItem, error) {
	args, err := c.workItemArgs(w, toSec(c.cfg.clock()))
	if err != nil {
		return repository.WorkItem{}, err
	}
	if _, err := tx.StmtContext(ctx, tx.h.setWorkItemStmt).ExecContext(ctx, args...); err != nil {
		return repository.WorkItem{}, err
	}
	b, err := encodeWorkItem(w)
	if err != nil {
		return repository.WorkItem{}, err
	}
	return decodeWorkItemBinary(string(b))
}

func sameParent(a, b *uuid.UUID) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
