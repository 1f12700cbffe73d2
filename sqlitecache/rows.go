package sqlitecache

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

// execer is what the row writers need: the writer *sql.DB or a transaction
// on it.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

// nanos is the created_at column's unit (Unix nanoseconds, an ordering
// key); times outside int64 nanoseconds, like the zero time, are clamped
// instead of overflowing.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// checkSetVendor is the input check of SetVendor(s): what the store would
// never have returned.
func checkSetVendor(v repository.Vendor) error {
	if err := v.Validate(); err != nil {
		return err
	}
	if v.Version < 1 {
		return repository.Invalid("Version", "must be at least 1, got %d", v.Version)
	}
	return nil
}

func checkSetWorkItem(w repository.WorkItem) error {
	if err := w.Validate(); err != nil {
		return err
	}
	if w.ID == [16]byte{} {
		return repository.Invalid("ID", "must not be zero")
	}
	if w.Version < 1 {
		return repository.Invalid("Version", "must be at least 1, got %d", w.Version)
	}
	return nil
}

// vendorArgs encodes v into the arguments of setVendorSQL.
func (c *Cache) vendorArgs(v repository.Vendor, cachedAt float64) ([]any, error) {
	raw, err := encodeVendor(v)
	if err != nil {
		return nil, err
	}
	data, enc := compress(raw, c.cfg.compressionThreshold)
	return []any{v.Name, data, cachedAt, v.Version, enc, v.ID.String(), string(v.Status), nanos(v.CreatedAt)}, nil
}

// workItemArgs encodes w into the arguments of setWorkItemSQL.
func (c *Cache) workItemArgs(w repository.WorkItem, cachedAt float64) ([]any, error) {
	raw, err := encodeWorkItem(w)
	if err != nil {
		return nil, err
	}
	data, enc := compress(raw, c.cfg.compressionThreshold)
	var parent any
	if w.ParentID != nil {
		parent = w.ParentID.String()
	}
	return []any{w.ID.String(), data, cachedAt, w.Version, enc, string(w.Type), string(w.Status),
		parent, w.Path, w.DeletedAt != nil, nanos(w.CreatedAt)}, nil
}

// page turns Limit/Offset into SQL's LIMIT/OFFSET (-1: no limit).
func page(limit, offset int) (int, int) {
	if limit == 0 {
		return -1, offset
	}
	return limit, offset
}

// corrupt builds the error for an entry that does not decode, counts the
// miss and logs it: a corrupt entry is the cache's problem, reported to the
// caller as a miss.
func (c *Cache) corrupt(ctx context.Context, key string, err error) error {
	c.misses.Add(1)
	c.cfg.logger.WarnContext(ctx, "sqlitecache: corrupt entry treated as a miss", "key", key, "err", err)
	return fmt.Errorf("sqlitecache: %s: %w (%w: %v)", key, repository.ErrNotFound, ErrCorruptEntry, err)
}
