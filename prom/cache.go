package prom

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// collectCache sends the cache's metrics. The entry counts take a read
// transaction on the file, bounded by the cache timeout: a scrape must
// answer even when the disk does not. On a failure the counts are left out
// (a gauge at 0 would read as an empty cache) and the scrape error is
// counted; the process counters, which Stats fills in even then, are still
// sent, unless the cache is closed and has none.
func (c *Collector) collectCache(ch chan<- prometheus.Metric, cache *sqlitecache.Cache) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cacheTimeout)
	defer cancel()
	s, err := cache.Stats(ctx)
	if err != nil {
		c.scrapeErrors.Add(1)
		if errors.Is(err, sqlitecache.ErrClosed) {
			return
		}
	} else {
		gauge(ch, descCacheEntries, float64(s.VendorsCached), string(repository.EntityVendor))
		gauge(ch, descCacheEntries, float64(s.WorkItemsCached), string(repository.EntityWorkItem))
		gauge(ch, descCacheStale, float64(s.StaleEntries))
		gauge(ch, descCacheOldest, s.OldestEntryAge.Seconds())
	}
	counter(ch, descCacheLookups, uint64(s.Hits), "hit")
	counter(ch, descCacheLookups, uint64(s.StaleHits), "stale_hit")
	counter(ch, descCacheLookups, uint64(s.Misses), "miss")
	counter(ch, descCacheFileLost, uint64(s.FileLost))
	counter(ch, descCacheReopens, uint64(s.Reopens))

	// The durable write queue in the file: what an operator alerts on.
	// Read only when the file answered above: one failed scrape of the
	// file counts once.
	if err != nil {
		return
	}
	if q, err := cache.QueueStats(ctx); err != nil {
		c.scrapeErrors.Add(1)
	} else {
		gauge(ch, descDeadLetters, float64(q.DeadLetters))
		if !q.Oldest.IsZero() {
			gauge(ch, descQueuedOldest, max(time.Since(q.Oldest), 0).Seconds())
		}
	}
}
