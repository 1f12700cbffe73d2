package sqlitecache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/pgfallback/pgfallback/migrations"
	"github.com/pgfallback/pgfallback/repository"
)

// Cache is the persistent SQLite cache. It is safe for concurrent use by many
// goroutines, and several processes may open the same file.
//
// Writes go through one connection (SQLite allows one writer at a time; a
// pool of writers would only queue on SQLite's lock and surface "database is
// locked"), reads through a separate pool so they never wait behind a write
// (WAL mode gives readers a snapshot).
type Cache struct {
	path string
	cfg  config

	w *sql.DB // the single writer connection
	r *sql.DB // reader pool, query_only

	fast *fastReaders // driver-level readers for Get* (see fastReaders)

	setVendorStmt   *sql.Stmt
	setWorkItemStmt *sql.Stmt

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	wg        sync.WaitGroup

	hits, misses, staleHits atomic.Int64

	vendorMemo   *memo[string, memoVendor]
	workItemMemo *memo[uuid.UUID, memoWorkItem]

	vendors   *vendorRepo
	workItems *workItemRepo
}

// Open opens (creating if needed) the cache file at path; "" means
// DefaultPath. The parent directory is created. The schema is created or
// upgraded with the embedded goose migrations. A file that is not a valid
// SQLite database is moved aside to "<path>.corrupt-<timestamp>" (with its
// -wal and -shm files), logged, and replaced by an empty cache.
//
// Errors: repository.ErrInvalid for a bad option value; otherwise the wrapped
// file system or SQLite error when the cache cannot be opened at all (for
// example a directory that cannot be created).
func Open(path string, opts ...Option) (*Cache, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if path == "" {
		path = DefaultPath
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("sqlitecache: create directory: %w", err)
		}
	}
	c := &Cache{
		path: path, cfg: cfg, stop: make(chan struct{}),
		vendorMemo:   newMemo[string, memoVendor](cfg.memoSize, cfg.memoBytes),
		workItemMemo: newMemo[uuid.UUID, memoWorkItem](cfg.memoSize, cfg.memoBytes),
	}
	if err := c.openWithRecovery(); err != nil {
		return nil, err
	}
	c.vendors = &vendorRepo{c: c}
	c.workItems = &workItemRepo{c: c}
	if cfg.cleanupInterval > 0 {
		c.wg.Add(1)
		go c.cleanupLoop(cfg.cleanupInterval)
	}
	return c, nil
}

func (cfg config) validate() error {
	switch {
	case cfg.vendorTTL <= 0:
		return repository.Invalid("VendorTTL", "must be positive, got %v", cfg.vendorTTL)
	case cfg.workItemTTL <= 0:
		return repository.Invalid("WorkItemTTL", "must be positive, got %v", cfg.workItemTTL)
	case cfg.busyTimeout < 0:
		return repository.Invalid("BusyTimeout", "must not be negative, got %v", cfg.busyTimeout)
	case cfg.staleRetention < 0:
		return repository.Invalid("StaleRetention", "must not be negative, got %v", cfg.staleRetention)
	case cfg.memoSize < 0:
		return repository.Invalid("MemoSize", "must not be negative, got %d", cfg.memoSize)
	case cfg.memoBytes < 0:
		return repository.Invalid("MemoBytes", "must not be negative, got %d", cfg.memoBytes)
	case cfg.maxReaders < 1:
		return repository.Invalid("MaxReaders", "must be at least 1, got %d", cfg.maxReaders)
	}
	return nil
}

// openWithRecovery opens the databases; when the file turns out not to be a
// database, it quarantines the file and tries once more on a fresh one.
func (c *Cache) openWithRecovery() error {
	// Check the header ourselves first: SQLite, handed a file that is not a
	// database, may delete its -wal and -shm while failing, and those are
	// part of the evidence worth keeping.
	err := checkHeader(c.path)
	if err == nil {
		if err = c.openDBs(); err == nil {
			return nil
		}
	}
	if !isCorrupt(err) {
		return err
	}
	c.fast, c.r, c.setVendorStmt, c.setWorkItemStmt = nil, nil, nil, nil
	c.w = nil
	moved, qerr := quarantine(c.path, c.cfg.clock())
	if qerr != nil {
		return fmt.Errorf("sqlitecache: %w (and moving it aside failed: %w)", err, qerr)
	}
	c.cfg.logger.Error("sqlitecache: cache file is corrupt; moved it aside and starting empty",
		"path", c.path, "moved_to", moved, "err", err)
	return c.openDBs()
}

func (c *Cache) openDBs() (err error) {
	abs, err := filepath.Abs(c.path)
	if err != nil {
		return fmt.Errorf("sqlitecache: %w", err)
	}
	// The file: URI form with an escaped path keeps '?' or '#' in a file
	// name from being read as DSN parameters.
	base := "file:" + (&url.URL{Path: abs}).EscapedPath() +
		"?_busy_timeout=" + strconv.FormatInt(c.cfg.busyTimeout.Milliseconds(), 10)
	c.w, err = sql.Open("sqlite3", base+"&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("sqlitecache: open writer: %w", err)
	}
	c.w.SetMaxOpenConns(1)
	c.w.SetMaxIdleConns(1)
	c.w.SetConnMaxLifetime(0)
	c.w.SetConnMaxIdleTime(0)

	defer func() {
		if err != nil {
			c.closeDBs()
		}
	}()
	ctx := context.Background()
	// The first connection to a new file switches it to WAL, which needs an
	// exclusive lock; SQLite answers a concurrent opener SQLITE_BUSY
	// without waiting on the busy timeout, so retry for a little while.
	for attempt := 1; ; attempt++ {
		err = c.w.PingContext(ctx)
		if err == nil || !isBusy(err) || attempt == 40 {
			break
		}
		time.Sleep(time.Duration(min(attempt, 10)) * 10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("sqlitecache: open %s: %w", c.path, err)
	}
	if err = c.migrate(ctx); err != nil {
		return err
	}

	c.r, err = sql.Open("sqlite3", base+"&_query_only=1")
	if err != nil {
		return fmt.Errorf("sqlitecache: open readers: %w", err)
	}
	c.r.SetMaxOpenConns(c.cfg.maxReaders)
	c.r.SetMaxIdleConns(c.cfg.maxReaders)
	c.r.SetConnMaxLifetime(0)
	c.r.SetConnMaxIdleTime(0)
	c.fast = newFastReaders(base+"&_query_only=1", c.cfg.maxReaders)
	return c.prepare(ctx)
}

// migrate runs the goose migrations. Two processes opening a new file at
// the same moment can race on goose's version table (SQLite has no advisory
// lock goose could use); the loser sees an error, so it retries a few times
// and then finds nothing pending.
func (c *Cache) migrate(ctx context.Context) error {
	var err error
	for attempt := range 3 {
		if err = migrations.UpSQLite(ctx, c.w); err == nil || isCorrupt(err) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("sqlitecache: migrate %s: %w", c.path, err)
	}
	return nil
}

const (
	// ?1 is the rev of the caller's memoized copy (0: none). When the row
	// still has that rev, the blob is not even read.
	getVendorSQL = `SELECT rev, cached_at,
    CASE WHEN rev = ?1 THEN NULL ELSE encoding END,
    CASE WHEN rev = ?1 THEN NULL ELSE data END
FROM cached_vendors WHERE name = ?2`
	getWorkItemSQL = `SELECT rev, cached_at,
    CASE WHEN rev = ?1 THEN NULL ELSE encoding END,
    CASE WHEN rev = ?1 THEN NULL ELSE data END
FROM cached_work_items WHERE id = ?2`

	// A different id under the same name is a different vendor (deleted and
	// re-created); the later-created one wins, whatever its version.
	// rev: random, never 0 (0 means "no memo" in getVendorSQL).
	setVendorSQL = `INSERT INTO cached_vendors (name, data, cached_at, version, encoding, id, status, created_at, rev)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, random() | 1)
ON CONFLICT (name) DO UPDATE SET
    rev = excluded.rev, data = excluded.data, cached_at = excluded.cached_at, version = excluded.version,
    encoding = excluded.encoding, id = excluded.id, status = excluded.status, created_at = excluded.created_at
WHERE (excluded.id IS cached_vendors.id AND excluded.version >= cached_vendors.version)
   OR (excluded.id IS NOT cached_vendors.id AND excluded.created_at >= cached_vendors.created_at)`

	setWorkItemSQL = `INSERT INTO cached_work_items (id, data, cached_at, version, encoding, type, status, parent_id, path, deleted, created_at, rev)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, random() | 1)
ON CONFLICT (id) DO UPDATE SET
    rev = excluded.rev, data = excluded.data, cached_at = excluded.cached_at, version = excluded.version,
    encoding = excluded.encoding, type = excluded.type, status = excluded.status,
    parent_id = excluded.parent_id, path = excluded.path, deleted = excluded.deleted,
    created_at = excluded.created_at
WHERE excluded.version >= cached_work_items.version`
)

// prepare prepares the hot statements once; database/sql then keeps one
// prepared copy per connection, so a Get does no SQL parsing.
func (c *Cache) prepare(ctx context.Context) error {
	var err error
	prep := func(db *sql.DB, q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var s *sql.Stmt
		s, err = db.PrepareContext(ctx, q)
		return s
	}
	c.setVendorStmt = prep(c.w, setVendorSQL)
	c.setWorkItemStmt = prep(c.w, setWorkItemSQL)
	if err != nil {
		return fmt.Errorf("sqlitecache: prepare: %w", err)
	}
	return nil
}

func (c *Cache) closeDBs() error {
	var errs []error
	// Fields are closed, not cleared: a Get racing with Close may still read
	// them, and then fails with ErrClosed.
	if c.fast != nil {
		c.fast.close()
	}
	for _, s := range []*sql.Stmt{c.setVendorStmt, c.setWorkItemStmt} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if c.r != nil {
		errs = append(errs, c.r.Close())
	}
	if c.w != nil {
		errs = append(errs, c.w.Close())
	}
	return errors.Join(errs...)
}

// isCorrupt reports whether err means the file is not a usable database.
func isBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}

func isCorrupt(err error) bool {
	if errors.Is(err, errNotADatabase) {
		return true
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrNotADB || se.Code == sqlite3.ErrCorrupt
	}
	return false
}

// Close stops the background cleanup, waits for it, and closes the database
// connections. Calls after the first return the first call's result; every
// other method returns ErrClosed afterwards.
// Errors: the wrapped SQLite error if closing a connection failed.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		close(c.stop)
		c.wg.Wait()
		if err := c.closeDBs(); err != nil {
			c.closeErr = fmt.Errorf("sqlitecache: close: %w", err)
		}
	})
	return c.closeErr
}

// Path returns the cache file's path as given to Open (DefaultPath for "").
func (c *Cache) Path() string { return c.path }

// StaleRetention is how long past its TTL the background cleanup keeps a
// stale entry (see WithStaleRetention).
func (c *Cache) StaleRetention() time.Duration { return c.cfg.staleRetention }

// CleanupInterval is the background cleanup's interval; 0 when disabled.
func (c *Cache) CleanupInterval() time.Duration { return max(c.cfg.cleanupInterval, 0) }

// VendorTTL returns the vendor entries' time to live.
func (c *Cache) VendorTTL() time.Duration { return c.cfg.vendorTTL }

// WorkItemTTL returns the work item entries' time to live.
func (c *Cache) WorkItemTTL() time.Duration { return c.cfg.workItemTTL }

// Vendors returns a repository.VendorRepository over the cache alone, for
// running fully offline. It has the same validation and error rules as the
// Postgres store; its writes stamp the entries as freshly cached.
func (c *Cache) Vendors() repository.VendorRepository { return c.vendors }

// WorkItems returns a repository.WorkItemRepository over the cache alone,
// with the same rules as the Postgres store (see Vendors).
func (c *Cache) WorkItems() repository.WorkItemRepository { return c.workItems }

func (c *Cache) checkOpen() error {
	if c.closed.Load() {
		return ErrClosed
	}
	return nil
}
