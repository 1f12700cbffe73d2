package sqlitecache

import (
	"context"

	"github.com/google/uuid"
)

// DeleteWorkItemTree evicts the work item's entry and the entries of all its
// cached descendants — those whose path names the item as an ancestor. The
// fallback layer uses it after a soft delete or a move in the store, which
// rewrite the whole subtree there. Absent entries are not an error.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) DeleteWorkItemTree(ctx context.Context, id uuid.UUID) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	// Ids are UUIDs, so a path containing this one as a substring has it as
	// a segment: the row is a descendant.
	_, err := c.h.Load().w.ExecContext(ctx, `DELETE FROM cached_work_items WHERE (id = ?1 OR instr(path, ?1) > 0) AND pending = 0`, id.String())
	return c.wrapErr("delete work item tree", err)
}
