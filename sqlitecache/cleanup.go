package sqlitecache

import (
	"context"
	"database/sql"
	"time"
)

// IsStale reports whether the entry for key ("vendor:<name>" or
// "work_item:<uuid>") is stale. A well-formed key with no entry is stale:
// there is nothing fresh to serve.
// Errors: ErrInvalidKey (matches repository.ErrInvalid), ErrClosed, or the
// wrapped SQLite error.
func (c *Cache) IsStale(ctx context.Context, key string) (bool, error) {
	if err := c.checkOpen(); err != nil {
		return false, err
	}
	k, err := ParseKey(key)
	if err != nil {
		return false, err
	}
	q, arg, ttl := `SELECT cached_at FROM cached_vendors WHERE name = ?`, k.Name, c.cfg.vendorTTL
	if k.Kind == KeyWorkItem {
		q, arg, ttl = `SELECT cached_at FROM cached_work_items WHERE id = ?`, k.ID.String(), c.cfg.workItemTTL
	}
	var cachedAt float64
	switch err := c.h.Load().r.QueryRowContext(ctx, q, arg).Scan(&cachedAt); err {
	case nil:
		return c.entry(cachedAt, ttl).Stale, nil
	case sql.ErrNoRows:
		return true, nil
	default:
		return false, c.wrapErr("is stale", err)
	}
}

// ClearStale deletes every stale entry (older than its type's TTL) in one
// transaction and returns how many it deleted.
// Errors: ErrClosed or the wrapped SQLite error (nothing deleted).
func (c *Cache) ClearStale(ctx context.Context) (int, error) {
	return c.clearOlderThan(ctx, "clear stale", 0)
}

// clearOlderThan deletes entries stale for longer than grace.
func (c *Cache) clearOlderThan(ctx context.Context, op string, grace time.Duration) (int, error) {
	return c.deleteAll(ctx, op,
		deletion{sql: `DELETE FROM cached_vendors WHERE cached_at < ? AND pending = 0`, args: []any{c.staleBefore(c.cfg.vendorTTL + grace)}},
		deletion{sql: `DELETE FROM cached_work_items WHERE cached_at < ? AND pending = 0`, args: []any{c.staleBefore(c.cfg.workItemTTL + grace)}})
}

// ClearAll deletes every entry and returns how many it deleted, except the
// entries queued writes are pending on (see Enqueue): they are the
// application's writes, not copies of PostgreSQL's rows, and go only when
// their writes leave the queue.
// Errors: ErrClosed or the wrapped SQLite error (nothing deleted).
func (c *Cache) ClearAll(ctx context.Context) (int, error) {
	// An empty file is no longer a complete mirror; its feed cursor stays
	// valid (nothing cached can be out of date).
	return c.deleteAll(ctx, "clear all",
		deletion{sql: `DELETE FROM cached_vendors WHERE pending = 0`}, deletion{sql: `DELETE FROM cached_work_items WHERE pending = 0`},
		deletion{sql: `UPDATE cache_metadata SET value = '' WHERE key = ?`, args: []any{metaFeedMirror}, silent: true})
}

type deletion struct {
	sql    string
	args   []any
	silent bool // bookkeeping, not entries: not counted
}

// deleteAll runs the deletions in one transaction and returns how many rows
// they removed in all.
func (c *Cache) deleteAll(ctx context.Context, op string, ds ...deletion) (int, error) {
	if err := c.checkWrite(); err != nil {
		return 0, err
	}
	var n int64
	err := c.inTx(ctx, op, func(tx wtx) error {
		for _, d := range ds {
			res, err := tx.ExecContext(ctx, d.sql, d.args...)
			if err != nil {
				return err
			}
			if k, _ := res.RowsAffected(); !d.silent {
				n += k
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// cleanupLoop removes entries stale for longer than the retention every
// interval until Close. Failures are logged, never fatal: a cache that
// could not be cleaned is still a cache.
func (c *Cache) cleanupLoop(interval time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.runCleanup()
		}
	}
}

func (c *Cache) runCleanup() {
	// Close must not wait long for a cleanup in progress: cancel it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	n, err := c.clearOlderThan(ctx, "background cleanup", c.cfg.staleRetention)
	switch {
	case err != nil && !c.closed.Load():
		c.cfg.logger.Warn("sqlitecache: background cleanup failed", "path", c.path, "err", err)
	case n > 0:
		c.cfg.logger.Debug("sqlitecache: background cleanup", "path", c.path, "removed", n)
	}
}
