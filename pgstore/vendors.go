package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/repository"
)

type vendorRepo struct{ pool *pgxpool.Pool }

const vendorColumns = `id, name, status, version, extractor_version, metadata, created_at, updated_at, created_by`

func scanVendor(row pgx.Row) (repository.Vendor, error) {
	var v repository.Vendor
	err := row.Scan(&v.ID, &v.Name, &v.Status, &v.Version, &v.ExtractorVersion, &v.Metadata,
		&v.CreatedAt, &v.UpdatedAt, &v.CreatedBy)
	v.CreatedAt, v.UpdatedAt = v.CreatedAt.UTC(), v.UpdatedAt.UTC()
	return v, unreadable(err, "vendor", v.Name) // pgx fills the columns before the failing one
}

func (r vendorRepo) Get(ctx context.Context, name string) (repository.Vendor, error) {
	if err := repository.ValidateVendorName(name); err != nil {
		return repository.Vendor{}, fmt.Errorf("pgstore: get vendor: %w", err)
	}
	v, err := replanned(ctx, r.pool, func() (repository.Vendor, error) {
		return scanVendor(r.pool.QueryRow(ctx, `SELECT `+vendorColumns+` FROM vendors WHERE name = $1`, name))
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return repository.Vendor{}, fmt.Errorf("pgstore: get vendor %q: %w", name, repository.ErrNotFound)
	}
	return v, mapError("get vendor", err)
}

func (r vendorRepo) List(ctx context.Context, f repository.VendorFilter) ([]repository.Vendor, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("pgstore: list vendors: %w", err)
	}
	var q strings.Builder
	var args []any
	q.WriteString(`SELECT ` + vendorColumns + ` FROM vendors`)
	if f.Status != nil {
		args = append(args, string(*f.Status))
		q.WriteString(` WHERE status = $1`)
	}
	q.WriteString(` ORDER BY name`)
	writePage(&q, &args, f.Limit, f.Offset)
	out, err := collect(ctx, r.pool, scanVendor, q.String(), args...)
	if err != nil {
		return nil, mapError("list vendors", err)
	}
	return out, nil
}

// writePage appends LIMIT/OFFSET as parameters; a zero Limit means no limit.
func writePage(q *strings.Builder, args *[]any, limit, offset int) {
	if limit > 0 {
		*args = append(*args, limit)
		q.WriteString(` LIMIT $` + strconv.Itoa(len(*args)))
	}
	if offset > 0 {
		*args = append(*args, offset)
		q.WriteString(` OFFSET $` + strconv.Itoa(len(*args)))
	}
}

func (r vendorRepo) Create(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	if err := v.Validate(); err != nil {
		return repository.Vendor{}, fmt.Errorf("pgstore: create vendor: %w", err)
	}
	out, err := replanned(ctx, r.pool, func() (repository.Vendor, error) { return createVendor(ctx, r.pool, v) })
	return out, mapError("create vendor", err)
}

func (r vendorRepo) Update(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	if err := v.ValidateUpdate(); err != nil {
		return repository.Vendor{}, fmt.Errorf("pgstore: update vendor: %w", err)
	}
	out, err := replanned(ctx, r.pool, func() (repository.Vendor, error) { return updateVendor(ctx, r.pool, v, v.Version) })
	return out, mapError("update vendor", err)
}

func (r vendorRepo) Delete(ctx context.Context, name string) error {
	if err := repository.ValidateVendorName(name); err != nil {
		return fmt.Errorf("pgstore: delete vendor: %w", err)
	}
	found, err := replanned(ctx, r.pool, func() (bool, error) { return deleteVendor(ctx, r.pool, name) })
	if err != nil {
		return mapError("delete vendor", err)
	}
	if !found {
		return fmt.Errorf("pgstore: delete vendor %q: %w", name, repository.ErrNotFound)
	}
	return nil
}

// The vendor writes below run on the pool, one statement each, for the
// repository's calls, and on the transaction of an ApplyWrite. They take v
// validated and return errors unmapped.

// createVendor inserts v at version 1, with its ID or, when zero, a new one.
func createVendor(ctx context.Context, db dbtx, v repository.Vendor) (repository.Vendor, error) {
	if v.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return repository.Vendor{}, fmt.Errorf("new id: %w", err)
		}
		v.ID = id
	}
	q, args := createVendorSQL(v)
	out, err := scanVendor(db.QueryRow(ctx, q, args...))
	return out, autocommitted(db, err)
}

// createVendorSQL is the statement that inserts v, whose ID is set.
func createVendorSQL(v repository.Vendor) (string, []any) {
	return `
		INSERT INTO vendors (id, name, status, version, extractor_version, metadata, created_by)
		VALUES ($1, $2, $3, 1, $4, $5, $6)
		RETURNING ` + vendorColumns,
		[]any{v.ID, v.Name, string(v.Status), v.ExtractorVersion, metadataArg(v.Metadata), v.CreatedBy}
}

// updateVendorSQL is the statement that writes v over the vendor named
// v.Name if it is at version base; it returns no row otherwise.
func updateVendorSQL(v repository.Vendor, base int64) (string, []any) {
	return `
		UPDATE vendors
		SET status = $3, extractor_version = $4, metadata = $5, version = version + 1, updated_at = now()
		WHERE name = $1 AND version = $2
		RETURNING ` + vendorColumns,
		[]any{v.Name, base, string(v.Status), v.ExtractorVersion, metadataArg(v.Metadata)}
}

// updateVendor writes v over the vendor named v.Name provided it is still
// at version base, in one statement. v.Version is not used.
// Errors: ErrNotFound, or a *repository.ConflictError with the current row.
func updateVendor(ctx context.Context, db dbtx, v repository.Vendor, base int64) (repository.Vendor, error) {
	q, args := updateVendorSQL(v, base)
	out, err := scanVendor(db.QueryRow(ctx, q, args...))
	if !errors.Is(err, pgx.ErrNoRows) {
		return out, autocommitted(db, err)
	}
	// Tell a stale version from a missing row; the row may also have
	// vanished in between, in which case ErrNotFound is the truth.
	cur, err := scanVendor(db.QueryRow(ctx, `SELECT `+vendorColumns+` FROM vendors WHERE name = $1`, v.Name))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return repository.Vendor{}, fmt.Errorf("vendor %q: %w", v.Name, repository.ErrNotFound)
	case errors.Is(err, repository.ErrUnreadable):
		// Still a conflict, which the caller must hear, but with no row to
		// carry: ErrConflict and ErrUnreadable both.
		return repository.Vendor{}, fmt.Errorf("vendor %q is no longer at version %d (%w), and its current row cannot be read: %w",
			v.Name, base, repository.ErrConflict, err)
	case err != nil:
		return repository.Vendor{}, err
	}
	return repository.Vendor{}, &repository.ConflictError{Key: v.Name, Base: base, Vendor: &cur}
}

// deleteVendor removes the vendor named name and reports whether there was one.
func deleteVendor(ctx context.Context, db dbtx, name string) (found bool, err error) {
	tag, err := db.Exec(ctx, deleteVendorSQL, name)
	return tag.RowsAffected() > 0, err
}

// deleteVendorSQL removes the vendor named $1.
const deleteVendorSQL = `DELETE FROM vendors WHERE name = $1`

// metadataArg is the metadata as JSON text, a nil map as an empty object
// (never null). Text rather than the map: pgx encodes a map only for a
// parameter whose type the server described, which the exec and
// simple-protocol modes — those a transaction pooler such as PgBouncer
// needs — never ask for; JSON text is read as jsonb in every mode.
func metadataArg(m map[string]any) any {
	if m == nil {
		return "{}"
	}
	b, err := json.Marshal(m)
	if err != nil {
		return m // validation refuses it first; pgx then reports the same error
	}
	return string(b)
}
