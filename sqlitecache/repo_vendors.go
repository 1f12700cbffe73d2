package sqlitecache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// vendorRepo is the offline repository.VendorRepository over the cache.
type vendorRepo struct{ c *Cache }

var _ repository.VendorRepository = (*vendorRepo)(nil)

// now is the store's clock: UTC, truncated to microseconds as PostgreSQL's
// timestamptz would keep it, so offline results look like the store's.
func (c *Cache) now() time.Time { return c.cfg.clock().UTC().Truncate(time.Microsecond) }

func (r *vendorRepo) Get(ctx context.Context, name string) (repository.Vendor, error) {
	v, _, err := r.c.GetVendor(ctx, name)
	return v, err
}

func (r *vendorRepo) List(ctx context.Context, f repository.VendorFilter) ([]repository.Vendor, error) {
	return r.c.ListVendors(ctx, f)
}

func (r *vendorRepo) Create(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	c := r.c
	if err := c.checkWrite(); err != nil {
		return repository.Vendor{}, err
	}
	v.Version = 1
	if err := v.Validate(); err != nil {
		return repository.Vendor{}, fmt.Errorf("sqlitecache: create vendor: %w", err)
	}
	if v.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return repository.Vendor{}, fmt.Errorf("sqlitecache: create vendor: new id: %w", err)
		}
		v.ID = id
	}
	v.CreatedAt = c.now()
	v.UpdatedAt = v.CreatedAt
	stored, err := normalizeVendor(v)
	if err != nil {
		return repository.Vendor{}, fmt.Errorf("sqlitecache: create vendor: %w", err)
	}
	err = c.inTx(ctx, "create vendor", func(tx wtx) error {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM cached_vendors WHERE name = ? OR id = ?`,
			v.Name, v.ID.String()).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("vendor %q or id %s: %w", v.Name, v.ID, repository.ErrAlreadyExists)
		}
		return c.writeVendor(ctx, tx, stored)
	})
	if err != nil {
		return repository.Vendor{}, err
	}
	return stored, nil
}

func (r *vendorRepo) Update(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	c := r.c
	if err := c.checkWrite(); err != nil {
		return repository.Vendor{}, err
	}
	if err := v.Validate(); err != nil {
		return repository.Vendor{}, fmt.Errorf("sqlitecache: update vendor: %w", err)
	}
	if v.Version < 1 {
		return repository.Vendor{}, fmt.Errorf("sqlitecache: update vendor: %w",
			repository.Invalid("Version", "must be at least 1, got %d", v.Version))
	}
	var stored repository.Vendor
	err := c.inTx(ctx, "update vendor", func(tx wtx) error {
		cur, err := c.vendorInTx(ctx, tx, v.Name)
		if err != nil {
			return err
		}
		if cur.Version != v.Version {
			return fmt.Errorf("vendor %q is at version %d, not %d: %w", v.Name, cur.Version, v.Version, repository.ErrConflict)
		}
		v.ID, v.CreatedAt, v.CreatedBy = cur.ID, cur.CreatedAt, cur.CreatedBy
		v.Version = cur.Version + 1
		v.UpdatedAt = c.now()
		if stored, err = normalizeVendor(v); err != nil {
			return err
		}
		return c.writeVendor(ctx, tx, stored)
	})
	if err != nil {
		return repository.Vendor{}, err
	}
	return stored, nil
}

func (r *vendorRepo) Delete(ctx context.Context, name string) error {
	c := r.c
	if err := c.checkWrite(); err != nil {
		return err
	}
	if err := repository.ValidateVendorName(name); err != nil {
		return fmt.Errorf("sqlitecache: delete vendor: %w", err)
	}
	return c.inTx(ctx, "delete vendor", func(tx wtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM cached_vendors WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("vendor %q: %w", name, repository.ErrNotFound)
		}
		return nil
	})
}

// vendorInTx reads the current entry inside a write transaction.
// Errors: repository.ErrNotFound (with ErrCorruptEntry if it does not
// decode), or the SQLite error.
func (c *Cache) vendorInTx(ctx context.Context, tx wtx, name string) (repository.Vendor, error) {
	var (
		enc  int64
		data []byte
	)
	err := tx.QueryRowContext(ctx, `SELECT encoding, data FROM cached_vendors WHERE name = ?`, name).Scan(&enc, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return repository.Vendor{}, fmt.Errorf("vendor %q: %w", name, repository.ErrNotFound)
	}
	if err != nil {
		return repository.Vendor{}, err
	}
	v, err := decodeVendor(enc, data)
	if err != nil {
		return repository.Vendor{}, fmt.Errorf("vendor %q: %w (%w: %v)", name, repository.ErrNotFound, ErrCorruptEntry, err)
	}
	return v, nil
}

func (c *Cache) writeVendor(ctx context.Context, tx wtx, v repository.Vendor) error {
	args, err := c.vendorArgs(v, toSec(c.cfg.clock()))
	if err != nil {
		return err
	}
	_, err = tx.StmtContext(ctx, tx.h.setVendorStmt).ExecContext(ctx, args...)
	return err
}

// normalizeVendor returns v as the cache will return it (metadata through
// the JSON data model), so a write returns what a later read returns.
func normalizeVendor(v repository.Vendor) (repository.Vendor, error) {
	b, err := encodeVendor(v)
	if err != nil {
		return repository.Vendor{}, err
	}
	return decodeVendorBinary(string(b))
}
