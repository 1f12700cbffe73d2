package sqlitecache

import (
	"context"
	"database/sql"
	"time"
)

// Stats is a snapshot of the cache's contents and of this Cache's counters.
type Stats struct {
	TotalEntries    int
	StaleEntries    int
	VendorsCached   int
	WorkItemsCached int
	OldestEntryAge  time.Duration // 0 when empty

	// Counters since Open, for this *Cache only (not other processes).
	Hits      int64 // Get* found a fresh entry
	StaleHits int64 // Get* found a stale entry (returned, flagged Stale)
	Misses    int64 // Get* found nothing usable

	// FileLost counts the times the cache file was found deleted, replaced
	// or truncated under this Cache (see WithFileCheckInterval); Reopens
	// the successful reopens that followed. FileLost > Reopens means a
	// reopen has failed so far and is being retried.
	FileLost int64
	Reopens  int64
}

// FileLost is Stats.FileLost without reading the file: how many times the
// file was found lost under this Cache, and replaced by an empty one once
// reopened.
func (c *Cache) FileLost() int64 { return c.fileLost.Load() }

// Stats counts the entries in one read transaction (a consistent snapshot)
// using the cached_at indexes, so it stays fast on large caches.
// Errors: ErrClosed or the wrapped SQLite error; with the latter, the
// counters (Hits ... Reopens) are still filled in, since they matter most
// when the file cannot be read.
func (c *Cache) Stats(ctx context.Context) (Stats, error) {
	if err := c.checkOpen(); err != nil {
		return Stats{}, err
	}
	counters := Stats{Hits: c.hits.Load(), StaleHits: c.staleHits.Load(), Misses: c.misses.Load(),
		FileLost: c.fileLost.Load(), Reopens: c.reopens.Load()}
	s := counters
	tx, err := c.h.Load().r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return counters, c.wrapErr("stats", err)
	}
	defer func() { _ = tx.Rollback() }()

	var oldest sql.NullFloat64
	for _, t := range []struct {
		table string
		ttl   time.Duration
		count *int
	}{
		{"cached_vendors", c.cfg.vendorTTL, &s.VendorsCached},
		{"cached_work_items", c.cfg.workItemTTL, &s.WorkItemsCached},
	} {
		// Three queries rather than one: SQLite answers COUNT(*) from the
		// smallest index, MIN from one index probe and the stale count from
		// an index range; combined, it would scan the table.
		var stale int
		var min sql.NullFloat64
		err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t.table).Scan(t.count)
		if err == nil {
			err = tx.QueryRowContext(ctx, `SELECT MIN(cached_at) FROM `+t.table).Scan(&min)
		}
		if err == nil {
			err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t.table+` WHERE cached_at < ?`, c.staleBefore(t.ttl)).Scan(&stale)
		}
		if err != nil {
			return counters, c.wrapErr("stats", err)
		}
		s.StaleEntries += stale
		if min.Valid && (!oldest.Valid || min.Float64 < oldest.Float64) {
			oldest = min
		}
	}
	s.TotalEntries = s.VendorsCached + s.WorkItemsCached
	if oldest.Valid {
		s.OldestEntryAge = c.entry(oldest.Float64, 0).Age
	}
	return s, nil
}
