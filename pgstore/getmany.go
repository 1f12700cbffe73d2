package pgstore

import (
	"context"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// getVendorsSQL and getWorkItemsSQL read the rows of many keys, $1 a
// text[]: GetMany's queries, and the waker's for its broadcasts (rows.go).
const (
	getVendorsSQL   = `SELECT ` + vendorColumns + ` FROM vendors WHERE name = ANY($1) ORDER BY name`
	getWorkItemsSQL = `SELECT ` + workItemColumns + ` FROM work_items WHERE id = ANY($1::uuid[]) ORDER BY created_at, id`
)

// GetMany returns the vendors among names that exist, ordered by name, in
// one query. Warming the fallback cache uses it (fallback.VendorBatchGetter).
func (r vendorRepo) GetMany(ctx context.Context, names []string) ([]repository.Vendor, error) {
	out, err := collect(ctx, r.pool, scanVendor, getVendorsSQL, names)
	return out, mapError("get vendors", err)
}

// GetMany returns the work items among ids that exist (deleted ones
// included), ordered by CreatedAt then ID, in one query.
func (r workItemRepo) GetMany(ctx context.Context, ids []uuid.UUID) ([]repository.WorkItem, error) {
	out, err := collect(ctx, r.pool, scanWorkItem, getWorkItemsSQL, uuidTexts(ids))
	return out, mapError("get work items", err)
}

// uuidTexts is ids as text, for a $n::uuid[] parameter: pgx encodes
// []uuid.UUID only for a parameter whose type the server described, which
// its exec and simple-protocol modes (those transaction poolers need) never
// ask for; a []string is a text[] in every mode.
func uuidTexts(ids []uuid.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}
