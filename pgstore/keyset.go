package pgstore

import (
	"context"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// ListAfter returns up to limit vendors whose name sorts after after, in
// name order: keyset paging for a full copy (fallback.VendorPager). Each
// page is one index range scan, where LIMIT/OFFSET rescans every row before
// the offset and makes a full copy quadratic.
func (r vendorRepo) ListAfter(ctx context.Context, after string, limit int) ([]repository.Vendor, error) {
	out, err := collect(ctx, r.pool, scanVendor, `SELECT `+vendorColumns+` FROM vendors WHERE name > $1 ORDER BY name LIMIT $2`, after, limit)
	return out, mapError("list vendors after", err)
}

// ListAfter returns up to limit work items, deleted ones included, whose id
// sorts after after, in id order (fallback.WorkItemPager).
func (r workItemRepo) ListAfter(ctx context.Context, after uuid.UUID, limit int) ([]repository.WorkItem, error) {
	out, err := collect(ctx, r.pool, scanWorkItem, `SELECT `+workItemColumns+` FROM work_items WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	return out, mapError("list work items after", err)
}
