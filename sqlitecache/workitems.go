package sqlitecache

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// SetWorkItem caches w, stamped now. It never replaces a cached entry with a
// lower Version; an equal Version refreshes the entry.
// Errors: repository.ErrInvalid when w fails Validate, w.ID is zero or
// w.Version < 1 (nothing written), ErrClosed, or the wrapped SQLite error,
// in which case earlier entries stay readable.
func (c *Cache) SetWorkItem(ctx context.Context, w repository.WorkItem) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	if err := checkSetWorkItem(w); err != nil {
		return fmt.Errorf("sqlitecache: set work item: %w", err)
	}
	args, err := c.workItemArgs(w, toSec(c.cfg.clock()))
	if err != nil {
		return fmt.Errorf("sqlitecache: set work item: %w", err)
	}
	_, err = c.h.Load().setWorkItemStmt.ExecContext(ctx, args...)
	return c.wrapErr("set work item", err)
}

// SetWorkItems caches ws in one transaction, with SetWorkItem's rules per
// entry. Every entry is checked first: one bad entry fails the call and
// nothing is written.
// Errors: as SetWorkItem; the ErrInvalid message carries the entry's index.
func (c *Cache) SetWorkItems(ctx context.Context, ws []repository.WorkItem) error {
	return c.setWorkItems(ctx, "set work items", ws, func(h *handles) *sql.Stmt { return h.setWorkItemStmt })
}

func (c *Cache) setWorkItems(ctx context.Context, op string, ws []repository.WorkItem, stmt func(*handles) *sql.Stmt) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	now := toSec(c.cfg.clock())
	all := make([][]any, len(ws))
	err := prepareAll(len(ws), func(i int) error {
		err := checkSetWorkItem(ws[i])
		if err == nil {
			all[i], err = c.workItemArgs(ws[i], now)
		}
		if err != nil {
			return fmt.Errorf("sqlitecache: %s: entry %d: %w", op, i, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.inTx(ctx, op, func(tx wtx) error {
		st := tx.StmtContext(ctx, stmt(tx.h))
		defer st.Close()
		for _, args := range all {
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// GetWorkItem returns the cached work item (soft-deleted ones included) and
// its freshness. A stale entry is returned too, with Entry.Stale set.
// Errors: repository.ErrNotFound for a miss (also, with ErrCorruptEntry, for
// an entry that does not decode), ErrClosed, the context's error, or the
// wrapped SQLite error.
func (c *Cache) GetWorkItem(ctx context.Context, id uuid.UUID) (repository.WorkItem, Entry, error) {
	if err := c.checkOpen(); err != nil {
		return repository.WorkItem{}, Entry{}, err
	}
	w, row, err := c.readWorkItem(ctx, id)
	if err != nil {
		return repository.WorkItem{}, Entry{}, err
	}
	e := c.entry(row.cachedAt, c.cfg.workItemTTL)
	e.Pending = row.pending != 0
	if e.Stale {
		c.staleHits.Add(1)
	} else {
		c.hits.Add(1)
	}
	return w, e, nil
}

// readWorkItem is GetWorkItem without the checks and the hit counters.
func (c *Cache) readWorkItem(ctx context.Context, id uuid.UUID) (repository.WorkItem, storedRow, error) {
	memo, memoOK := c.workItemMemo.get(id)
	row, found, err := c.lookup(ctx, true, memo.rev, id.String())
	if err != nil {
		return repository.WorkItem{}, row, c.wrapErr("get work item", err)
	}
	if !found {
		if memoOK {
			c.workItemMemo.drop(id)
		}
		c.misses.Add(1)
		return repository.WorkItem{}, row, fmt.Errorf("sqlitecache: work item %s: %w", id, repository.ErrNotFound)
	}
	if memoOK && row.rev == memo.rev {
		return memo.val.workItem(), row, nil
	}
	w, err := decodeWorkItem(row.enc, row.data)
	if err == nil && w.ID != id {
		err = fmt.Errorf("%w: entry holds work item %s", errCorrupt, w.ID)
	}
	if err != nil {
		return repository.WorkItem{}, storedRow{}, c.corrupt(ctx, WorkItemKey(id), err)
	}
	if size := memoSize(row.enc, row.data); row.rev != 0 && c.workItemMemo.worth(size) {
		m := newMemoWorkItem(w)
		c.workItemMemo.put(id, row.rev, size, m)
		return m.workItem(), row, nil
	}
	return w, row, nil
}

// DeleteWorkItem evicts the work item's entry (not its descendants; used
// when the store says the row is gone). An absent entry is not an error.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) DeleteWorkItem(ctx context.Context, id uuid.UUID) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	_, err := c.h.Load().w.ExecContext(ctx, `DELETE FROM cached_work_items WHERE id = ? AND pending = 0`, id.String())
	return c.wrapErr("delete work item", err)
}

// ListWorkItems returns the cached work items matching f, ordered by
// CreatedAt then ID and paged like the store's List; soft-deleted items only
// with f.IncludeDeleted; stale entries included. Entries that do not decode
// are skipped (and logged).
// Errors: repository.ErrInvalid for a bad filter, ErrClosed, or the wrapped
// SQLite error.
func (c *Cache) ListWorkItems(ctx context.Context, f repository.WorkItemFilter) ([]repository.WorkItem, error) {
	return c.ListWorkItemsWithin(ctx, f, -1)
}

// ListWorkItemsWithin is ListWorkItems without the entries that have been
// stale for longer than maxStale (negative: no limit).
// Errors: as ListWorkItems.
func (c *Cache) ListWorkItemsWithin(ctx context.Context, f repository.WorkItemFilter, maxStale time.Duration) ([]repository.WorkItem, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("sqlitecache: list work items: %w", err)
	}
	q := `SELECT id, encoding, data FROM cached_work_items WHERE 1 = 1`
	var args []any
	if f.Type != nil {
		q += ` AND type = ?`
		args = append(args, string(*f.Type))
	}
	if f.Status != nil {
		q += ` AND status = ?`
		args = append(args, string(*f.Status))
	}
	if f.ParentID != nil {
		q += ` AND parent_id = ?`
		args = append(args, f.ParentID.String())
	}
	if !f.IncludeDeleted {
		q += ` AND deleted = 0`
	}
	if maxStale >= 0 {
		q += ` AND (cached_at >= ? OR pending > 0)` // a queued write's result is never too old
		args = append(args, c.staleBefore(c.cfg.workItemTTL+maxStale))
	}
	limit, offset := page(f.Limit, f.Offset)
	q += ` ORDER BY created_at, id LIMIT ? OFFSET ?`
	args = append(args, limit, offset)
	return c.listWorkItems(ctx, c.h.Load().r, q, args...)
}

func (c *Cache) listWorkItems(ctx context.Context, db execer, q string, args ...any) ([]repository.WorkItem, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, c.wrapErr("list work items", err)
	}
	defer rows.Close()
	out := []repository.WorkItem{}
	for rows.Next() {
		var (
			id   string
			enc  int64
			data sql.RawBytes
		)
		if err := rows.Scan(&id, &enc, &data); err != nil {
			return nil, c.wrapErr("list work items", err)
		}
		w, err := decodeWorkItem(enc, data)
		if err != nil {
			c.cfg.logger.WarnContext(ctx, "sqlitecache: skipping corrupt entry", "key", workItemPrefix+id, "err", err)
			continue
		}
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, c.wrapErr("list work items", err)
	}
	return out, nil
}

// WorkItemIDs returns the ids of all cached work items (deleted ones
// included), sorted, for warming.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) WorkItemIDs(ctx context.Context) ([]uuid.UUID, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := c.h.Load().r.QueryContext(ctx, `SELECT id FROM cached_work_items WHERE pending = 0 ORDER BY id`)
	if err != nil {
		return nil, c.wrapErr("work item ids", err)
	}
	defer rows.Close()
	out := []uuid.UUID{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, c.wrapErr("work item ids", err)
		}
		id, err := uuid.Parse(s)
		if err != nil {
			c.cfg.logger.Warn("sqlitecache: skipping malformed work item id", "id", s)
			continue
		}
		out = append(out, id)
	}
	return out, c.wrapErr("work item ids", rows.Err())
}
