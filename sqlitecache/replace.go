package sqlitecache

import (
	"context"
	"database/sql"

	"github.com/pgfallback/pgfallback/repository"
)

// Authoritative rows. The cache never lowers a version (SetVendor), which
// is right within one history of the database and wrong across a failover
// that lost transactions: a promoted standby may hold version 2 of a row
// the cache saw at version 11 on the old primary, and version 11 no longer
// exists anywhere. A follower that learns its history ended (its change
// cursor expired) replaces what it holds with the primary's current rows.

// ReplaceVendors caches vs in one transaction as the primary's current
// rows: each replaces the cached entry of its name whatever the entry's
// version or ID. An entry a queued write is pending on is left alone: the
// queue's replay settles it against the primary.
// Errors: as SetVendors.
func (c *Cache) ReplaceVendors(ctx context.Context, vs []repository.Vendor) error {
	return c.setVendors(ctx, "replace vendors", vs, func(h *handles) *sql.Stmt { return h.replaceVendorStmt })
}

// ReplaceWorkItems is ReplaceVendors for work items.
// Errors: as SetWorkItems.
func (c *Cache) ReplaceWorkItems(ctx context.Context, ws []repository.WorkItem) error {
	return c.setWorkItems(ctx, "replace work items", ws, func(h *handles) *sql.Stmt { return h.replaceWorkItemStmt })
}
