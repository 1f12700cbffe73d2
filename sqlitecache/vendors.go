package sqlitecache

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

// SetVendor caches v, stamped now. It never replaces a cached entry of the
// same vendor (same ID) with a lower Version; an equal Version refreshes the
// entry. A cached vendor with a different ID (the name was deleted and
// re-created) is replaced by the later-created one.
// Errors: repository.ErrInvalid when v fails Validate or v.Version < 1
// (nothing written), ErrClosed, or the wrapped SQLite error (disk full...),
// in which case earlier entries stay readable.
func (c *Cache) SetVendor(ctx context.Context, v repository.Vendor) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	if err := checkSetVendor(v); err != nil {
		return fmt.Errorf("sqlitecache: set vendor: %w", err)
	}
	args, err := c.vendorArgs(v, toSec(c.cfg.clock()))
	if err != nil {
		return fmt.Errorf("sqlitecache: set vendor: %w", err)
	}
	_, err = c.h.Load().setVendorStmt.ExecContext(ctx, args...)
	return c.wrapErr("set vendor", err)
}

// SetVendors caches vs in one transaction, with SetVendor's rules per
// entry. Every entry is checked first: one bad entry fails the call and
// nothing is written.
// Errors: as SetVendor; the ErrInvalid message carries the entry's index.
func (c *Cache) SetVendors(ctx context.Context, vs []repository.Vendor) error {
	return c.setVendors(ctx, "set vendors", vs, func(h *handles) *sql.Stmt { return h.setVendorStmt })
}

func (c *Cache) setVendors(ctx context.Context, op string, vs []repository.Vendor, stmt func(*handles) *sql.Stmt) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	now := toSec(c.cfg.clock())
	all := make([][]any, len(vs))
	err := prepareAll(len(vs), func(i int) error {
		err := checkSetVendor(vs[i])
		if err == nil {
			all[i], err = c.vendorArgs(vs[i], now)
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

// GetVendor returns the cached vendor with the given name and its freshness.
// A stale entry is returned too, with Entry.Stale set: the caller decides
// whether it is still good enough.
// Errors: repository.ErrInvalid for a malformed name, repository.ErrNotFound
// for a miss (also, with ErrCorruptEntry, for an entry that does not
// decode), ErrClosed, the context's error, or the wrapped SQLite error.
func (c *Cache) GetVendor(ctx context.Context, name string) (repository.Vendor, Entry, error) {
	if err := c.checkOpen(); err != nil {
		return repository.Vendor{}, Entry{}, err
	}
	if !fastVendorName(name) {
		if err := repository.ValidateVendorName(name); err != nil {
			return repository.Vendor{}, Entry{}, fmt.Errorf("sqlitecache: get vendor: %w", err)
		}
	}
	v, row, err := c.readVendor(ctx, name)
	if err != nil {
		if row.pending == pendingDelete {
			return repository.Vendor{}, Entry{CachedAt: fromSec(row.cachedAt), Pending: true}, err
		}
		return repository.Vendor{}, Entry{}, err
	}
	e := c.entry(row.cachedAt, c.cfg.vendorTTL)
	e.Pending = row.pending != 0
	if e.Stale {
		c.staleHits.Add(1)
	} else {
		c.hits.Add(1)
	}
	return v, e, nil
}

// readVendor is GetVendor without the checks and the hit counters. A
// vendor a queued write deletes is ErrPendingDelete, with its row.
func (c *Cache) readVendor(ctx context.Context, name string) (repository.Vendor, storedRow, error) {
	memo, memoOK := c.vendorMemo.get(name)
	row, found, err := c.lookup(ctx, false, memo.rev, name)
	if err != nil {
		return repository.Vendor{}, row, c.wrapErr("get vendor", err)
	}
	if !found {
		if memoOK {
			c.vendorMemo.drop(name)
		}
		c.misses.Add(1)
		return repository.Vendor{}, row, fmt.Errorf("sqlitecache: vendor %q: %w", name, repository.ErrNotFound)
	}
	if row.pending == pendingDelete {
		return repository.Vendor{}, row, fmt.Errorf("sqlitecache: vendor %q: %w", name, ErrPendingDelete)
	}
	if memoOK && row.rev == memo.rev {
		return memo.val.vendor(), row, nil
	}
	v, err := decodeVendor(row.enc, row.data)
	if err == nil && v.Name != name {
		err = fmt.Errorf("%w: entry holds vendor %q", errCorrupt, v.Name)
	}
	if err != nil {
		return repository.Vendor{}, storedRow{}, c.corrupt(ctx, VendorKey(name), err)
	}
	if size := memoSize(row.enc, row.data); row.rev != 0 && c.vendorMemo.worth(size) {
		m := newMemoVendor(v)
		c.vendorMemo.put(name, row.rev, size, m)
		return m.vendor(), row, nil
	}
	return v, row, nil
}

// fastVendorName is repository.ValidateVendorName's accepting path without
// the regular expression (a measurable share of a Get hit): 1-100 bytes of
// [a-z0-9_.-], starting with [a-z0-9]. When it says no, ValidateVendorName
// gives the real verdict and message.
func fastVendorName(s string) bool {
	if len(s) == 0 || len(s) > repository.MaxVendorNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9':
		case (b == '_' || b == '.' || b == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// DeleteVendor evicts the vendor's entry (used when the store says it is
// gone). An absent entry is not an error.
// Errors: repository.ErrInvalid for a malformed name, ErrClosed, or the
// wrapped SQLite error.
func (c *Cache) DeleteVendor(ctx context.Context, name string) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	if err := repository.ValidateVendorName(name); err != nil {
		return fmt.Errorf("sqlitecache: delete vendor: %w", err)
	}
	_, err := c.h.Load().w.ExecContext(ctx, `DELETE FROM cached_vendors WHERE name = ? AND pending = 0`, name)
	return c.wrapErr("delete vendor", err)
}

// ListVendors returns the cached vendors matching f, ordered by Name and
// paged like the store's List, stale entries included. Entries that do not
// decode are skipped (and logged).
// Errors: repository.ErrInvalid for a bad filter, ErrClosed, or the wrapped
// SQLite error.
func (c *Cache) ListVendors(ctx context.Context, f repository.VendorFilter) ([]repository.Vendor, error) {
	return c.ListVendorsWithin(ctx, f, -1)
}

// ListVendorsWithin is ListVendors without the entries that have been stale
// for longer than maxStale (negative: no limit). The fallback layer lists
// with its StaleIfError, so a List never serves what a Get would refuse.
// Errors: as ListVendors.
func (c *Cache) ListVendorsWithin(ctx context.Context, f repository.VendorFilter, maxStale time.Duration) ([]repository.Vendor, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("sqlitecache: list vendors: %w", err)
	}
	q := `SELECT name, encoding, data FROM cached_vendors WHERE pending < 2`
	var args []any
	if f.Status != nil {
		q += ` AND status = ?`
		args = append(args, string(*f.Status))
	}
	if maxStale >= 0 {
		q += ` AND (cached_at >= ? OR pending > 0)` // a queued write's result is never too old
		args = append(args, c.staleBefore(c.cfg.vendorTTL+maxStale))
	}
	limit, offset := page(f.Limit, f.Offset)
	q += ` ORDER BY name LIMIT ? OFFSET ?`
	args = append(args, limit, offset)
	return c.listVendors(ctx, c.h.Load().r, q, args...)
}

func (c *Cache) listVendors(ctx context.Context, db execer, q string, args ...any) ([]repository.Vendor, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, c.wrapErr("list vendors", err)
	}
	defer rows.Close()
	out := []repository.Vendor{}
	for rows.Next() {
		var (
			name string
			enc  int64
			data sql.RawBytes
		)
		if err := rows.Scan(&name, &enc, &data); err != nil {
			return nil, c.wrapErr("list vendors", err)
		}
		v, err := decodeVendor(enc, data)
		if err != nil {
			c.cfg.logger.WarnContext(ctx, "sqlitecache: skipping corrupt entry", "key", VendorKey(name), "err", err)
			continue
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, c.wrapErr("list vendors", err)
	}
	return out, nil
}

// VendorNames returns the names of all cached vendors, sorted, for warming.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) VendorNames(ctx context.Context) ([]string, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := c.h.Load().r.QueryContext(ctx, `SELECT name FROM cached_vendors WHERE pending = 0 ORDER BY name`)
	if err != nil {
		return nil, c.wrapErr("vendor names", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, c.wrapErr("vendor names", err)
		}
		out = append(out, n)
	}
	return out, c.wrapErr("vendor names", rows.Err())
}

// wtx is a write transaction with the connections it runs on, whose
// prepared statements it must use (a reopen may have replaced c.h since).
type wtx struct {
	*sql.Tx
	h *handles
}

// inTx runs fn in a write transaction (BEGIN IMMEDIATE: the write lock is
// taken up front, so two processes never deadlock upgrading read locks).
func (c *Cache) inTx(ctx context.Context, op string, fn func(wtx) error) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	h := c.h.Load()
	tx, err := h.w.BeginTx(ctx, nil)
	if err != nil {
		return c.wrapErr(op, err)
	}
	if err := fn(wtx{tx, h}); err != nil {
		_ = tx.Rollback()
		return c.wrapErr(op, err)
	}
	return c.wrapErr(op, tx.Commit())
}
