package fallback

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// NewWithCacheFile opens the cache file at path with opts and returns a Layer over
// primary and it, which owns the cache and closes it on Close.
//
// A cache that cannot be opened (a read-only or full disk, a file that is
// not a cache, a permission problem) does not stop the service from
// starting: the Layer serves from PostgreSQL alone, logs the failure,
// shows it in Stats (CacheOpen, CacheError), and retries opening every
// Config.CacheRetry. Until it opens, an outage is an outage: reads return
// repository.ErrUnavailable, saying why. Deletes made in the meantime are
// not lost: a cache that opens late is cleared first if any were made,
// since its rows may include what they deleted.
//
// Use New to manage the cache yourself (sqlitecache.Open failing then
// fails the start).
//
// Errors: repository.ErrInvalid for a nil primary, a Config field out of
// range or a bad cache option; never the cache's own failure.
func NewWithCacheFile(primary Primary, path string, cfg Config, opts ...sqlitecache.Option) (*Layer, error) {
	cache, err := sqlitecache.Open(path, opts...)
	if errors.Is(err, repository.ErrInvalid) {
		return nil, fmt.Errorf("fallback: %w", err)
	}
	l, lerr := newLayer(primary, cache, cfg)
	if lerr != nil {
		if cache != nil {
			cache.Close()
		}
		return nil, lerr
	}
	l.slot = cacheSlot{path: path, opts: opts, owned: true}
	l.slot.attempts.Add(1)
	if err != nil {
		l.slot.failed(err)
		l.log.Error("pgfallback: cache unavailable; serving from PostgreSQL alone, without outage protection, and retrying",
			"path", path, "retry_every", l.cfg.CacheRetry, "err", err)
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.reopenLoop() }()
	}
	l.start()
	return l, nil
}

// cacheSlot is what the layer knows of a cache it opens itself
// (NewWithCacheFile).
type cacheSlot struct {
	path  string
	opts  []sqlitecache.Option
	owned bool // the layer opened the cache, and closes it

	mu       sync.Mutex
	lastErr  error
	attempts atomic.Uint64
	// missedEvictions: an eviction or move found no cache to apply to.
	missedEvictions atomic.Bool
}

func (s *cacheSlot) failed(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
}

func (s *cacheSlot) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// cacheNow returns the cache, nil while a cache NewWithCacheFile could not open is
// being retried.
func (l *Layer) cacheNow() *sqlitecache.Cache { return l.cache.Load() }

// noCache is why a read the primary could not answer found no cache.
func (l *Layer) noCache() string {
	return fmt.Sprintf("no cache: opening %s failed: %v", l.slot.path, l.slot.err())
}

// adoptCache makes c the layer's cache.
func (l *Layer) adoptCache(c *sqlitecache.Cache) {
	if c.CleanupInterval() > 0 && l.cfg.StaleIfError > c.StaleRetention() {
		l.log.Warn("pgfallback: the cache's background cleanup removes stale entries before StaleIfError runs out",
			"stale_if_error", l.cfg.StaleIfError, "cache_retention", c.StaleRetention())
	}
	if l.feed != nil {
		l.feed.adopt(c)
	}
	l.cache.Store(c)
}

// reopenLoop retries opening the cache every CacheRetry until it opens or
// the layer closes.
func (l *Layer) reopenLoop() {
	t := time.NewTicker(l.cfg.CacheRetry)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		l.slot.attempts.Add(1)
		c, err := sqlitecache.Open(l.slot.path, l.slot.opts...)
		if err == nil && l.slot.missedEvictions.Load() {
			if _, err = c.ClearAll(l.ctx); err != nil {
				c.Close()
				err = fmt.Errorf("clearing the cache of rows deleted while it was unavailable: %w", err)
			}
		}
		if err != nil {
			l.slot.failed(err)
			continue
		}
		if l.ctx.Err() != nil {
			c.Close()
			return
		}
		l.adoptCache(c)
		l.log.Info("pgfallback: cache opened; outage protection restored", "path", l.slot.path,
			"attempts", l.slot.attempts.Load())
		return
	}
}

// closeOwnedCache closes the cache if the layer opened it.
func (l *Layer) closeOwnedCache() {
	if c := l.cache.Load(); c != nil && l.slot.owned {
		if err := c.Close(); err != nil {
			l.log.Error("pgfallback: closing the cache", "err", err)
		}
	}
}

// errNoCache is what the writer's cache calls meet while there is none.
var errNoCache = errors.New("fallback: no cache open")
