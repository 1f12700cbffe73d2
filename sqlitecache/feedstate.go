package sqlitecache

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// FeedState is where the cache stands in the primary's change log (see
// repository.ChangeFeed). It lives in the cache file, so an instance that
// restarts catches up from where it stopped instead of re-reading every key.
type FeedState struct {
	// Cursor is the change log position up to which every committed change
	// has been applied to this file; "" when none has been recorded.
	Cursor string
	// AsOf is when, up to which this file reflects every committed change:
	// in the clock of the host that stored it (the fallback layer keeps it
	// so; releases before it stored the database's); zero when unknown.
	AsOf time.Time
	// Mirror: the file holds every row of both tables (a complete WarmAll),
	// kept complete by the feed since. Cleared by ClearAll.
	Mirror bool
	// ResyncSince: a resync began at this time and has not finished (zero
	// when none is under way). The log could no longer say what changed
	// (the cursor expired), so an entry written before it may not be the
	// database's row until the resync replaces it.
	ResyncSince time.Time
}

// The cache_metadata keys of FeedState. The table is the original layout's
// key/value store, so no migration is needed.
const (
	metaFeedCursor = "feed.cursor"
	metaFeedAsOf   = "feed.as_of"
	metaFeedMirror = "feed.mirror"
	metaFeedResync = "feed.resync_since"
)

// FeedState returns the recorded feed position (the zero FeedState when
// none is). It works on a read-only cache too.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) FeedState(ctx context.Context) (FeedState, error) {
	if err := c.checkOpen(); err != nil {
		return FeedState{}, err
	}
	rows, err := c.h.Load().r.QueryContext(ctx, `SELECT key, value FROM cache_metadata WHERE key IN (?, ?, ?, ?)`,
		metaFeedCursor, metaFeedAsOf, metaFeedMirror, metaFeedResync)
	if err != nil {
		return FeedState{}, c.wrapErr("feed state", err)
	}
	defer rows.Close()
	var s FeedState
	for rows.Next() {
		var k string
		var v sql.NullString
		if err := rows.Scan(&k, &v); err != nil {
			return FeedState{}, c.wrapErr("feed state", err)
		}
		switch k {
		case metaFeedCursor:
			s.Cursor = v.String
		case metaFeedAsOf:
			s.AsOf = unixNanoTime(v.String)
		case metaFeedResync:
			s.ResyncSince = unixNanoTime(v.String)
		case metaFeedMirror:
			s.Mirror = v.String == "complete"
		}
	}
	return s, c.wrapErr("feed state", rows.Err())
}

// SetFeedState records s in one transaction.
// Errors: ErrClosed, ErrReadOnly or the wrapped SQLite error.
func (c *Cache) SetFeedState(ctx context.Context, s FeedState) error {
	mirror := ""
	if s.Mirror {
		mirror = "complete"
	}
	now := float64(c.cfg.clock().UnixNano()) / 1e9
	return c.inTx(ctx, "set feed state", func(tx wtx) error {
		for _, kv := range [][2]string{{metaFeedCursor, s.Cursor}, {metaFeedAsOf, unixNanoText(s.AsOf)},
			{metaFeedMirror, mirror}, {metaFeedResync, unixNanoText(s.ResyncSince)}} {
			if _, err := tx.ExecContext(ctx, `INSERT INTO cache_metadata (key, value, updated_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`, kv[0], kv[1], now); err != nil {
				return err
			}
		}
		return nil
	})
}

// unixNanoText stores a FeedState time: "0" for the zero time.
func unixNanoText(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

// unixNanoTime reads what unixNanoText stored; anything else is the zero
// time.
func unixNanoTime(s string) time.Time {
	if ns, err := strconv.ParseInt(s, 10, 64); err == nil && ns != 0 {
		return time.Unix(0, ns).UTC()
	}
	return time.Time{}
}

// CachedVendorNames returns those of names that the cache holds, in any
// order: a change feed refreshes only what is cached.
// Errors: ErrClosed, ctx's error if it ended before the lookup started, or
// the wrapped SQLite error.
func (c *Cache) CachedVendorNames(ctx context.Context, names []string) ([]string, error) {
	return cachedKeys(ctx, c, false, names, func(s string) (string, error) { return s, nil })
}

// CachedWorkItemIDs is CachedVendorNames for work items.
func (c *Cache) CachedWorkItemIDs(ctx context.Context, ids []uuid.UUID) ([]uuid.UUID, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = id.String()
	}
	return cachedKeys(ctx, c, true, keys, uuid.Parse)
}

// The statements of cachedKeys: one text whatever the number of keys, so
// that it is prepared once (an IN list of n placeholders was a new
// statement for every n, prepared again on most calls). Each key is an
// index probe.
const (
	cachedVendorsSQL   = `SELECT name FROM cached_vendors WHERE name IN (SELECT value FROM json_each(?1))`
	cachedWorkItemsSQL = `SELECT id FROM cached_work_items WHERE id IN (SELECT value FROM json_each(?1))`
)

// cachedKeys returns those of keys that the vendors' (or the work items')
// table holds. It runs on the Gets' driver-level connections (fastread.go):
// a follower asks at every catch-up, fifty followers in one process some
// thousands of times a second, and database/sql's checkout and its
// goroutine per cancellable query cost more than the probes themselves
// (BenchmarkCachedVendorNames).
func cachedKeys[K any](ctx context.Context, c *Cache, workItems bool, keys []string, parse func(string) (K, error)) ([]K, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return []K{}, nil
	}
	list, err := json.Marshal(keys)
	if err != nil {
		return nil, c.wrapErr("cached keys", err)
	}
	h := c.h.Load()
	found, err := h.fast.cachedKeys(ctx, workItems, string(list))
	if err != nil && errors.Is(err, errPoolClosed) {
		// It raced a reopen: once more on the new connections.
		if nh := c.h.Load(); nh != h {
			found, err = nh.fast.cachedKeys(ctx, workItems, string(list))
		}
	}
	if err != nil {
		return nil, c.wrapErr("cached keys", err)
	}
	out := make([]K, 0, len(found))
	for _, s := range found {
		k, err := parse(s)
		if err != nil {
			continue // a malformed key is no cached entry of ours
		}
		out = append(out, k)
	}
	return out, nil
}
