package sqlitecache

import (
	"math"
	"time"
)

// Entry describes a cached entity's freshness as of the Get that returned it.
type Entry struct {
	CachedAt  time.Time     // when the entity was last written to the cache
	ExpiresAt time.Time     // CachedAt + the entity type's TTL
	Age       time.Duration // now - CachedAt (0 if the clock went backwards)
	Stale     bool          // Age > TTL
	// Pending: the entry is the state a queued write will give the entity
	// once it is replayed (see Enqueue), not PostgreSQL's row.
	Pending bool
}

func (c *Cache) entry(cachedAt float64, ttl time.Duration) Entry {
	at := fromSec(cachedAt)
	age := c.cfg.clock().Sub(at)
	if age < 0 {
		age = 0
	}
	return Entry{CachedAt: at, ExpiresAt: at.Add(ttl), Age: age, Stale: age > ttl}
}

// toSec converts to the cached_at column's unit: REAL seconds since the Unix
// epoch, as the original schema stores it (about 0.2 µs resolution today).
func toSec(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func fromSec(f float64) time.Time {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC()
}

// staleBefore is the cached_at below which an entry with this TTL is stale.
func (c *Cache) staleBefore(ttl time.Duration) float64 {
	return toSec(c.cfg.clock().Add(-ttl))
}
