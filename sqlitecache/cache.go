package sqlitecache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
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
	path     string // as given to Open
	abs      string // absolute: the process may change directory
	cfg      config
	readOnly bool

	// h is swapped when the file is lost and reopened (see watch.go); every
	// operation loads it once and uses that set of connections throughout.
	h atomic.Pointer[handles]

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	kick      chan struct{} // asks the file watcher for an immediate check
	wg        sync.WaitGroup
	reopenMu  sync.Mutex // serializes file checks, reopening and Close

	lostPending atomic.Bool           // a lost file awaits a successful reopen
	reopenErr   atomic.Pointer[error] // why the last reopen failed

	hits, misses, staleHits atomic.Int64
	fileLost, reopens       atomic.Int64

	vendorMemo   *memo[string, memoVendor]
	workItemMemo *memo[uuid.UUID, memoWorkItem]

	vendors   *vendorRepo
	workItems *workItemRepo
}

// handles is one opening of the cache file: its connections, prepared
// statements and the identity of the file they were opened on. It is never
// modified after it is published, so readers need no lock.
type handles struct {
	w *sql.DB // the single writer connection; nil when read-only
	r *sql.DB // reader pool, query_only

	fast *fastReaders // driver-level readers for Get* (see fastReaders)

	setVendorStmt       *sql.Stmt
	setWorkItemStmt     *sql.Stmt
	replaceVendorStmt   *sql.Stmt
	replaceWorkItemStmt *sql.Stmt

	ident os.FileInfo // the file as it was when opened, for os.SameFile

	isClosed atomic.Bool
}

// retired reports whether close was called.
func (h *handles) retired() bool { return h.isClosed.Load() }

// Open opens (creating if needed) the cache file at path; "" means
// DefaultPath. Missing parent directories are created (mode from
// WithFileMode). The schema is created or upgraded with the embedded goose
// migrations and the file is stamped with ApplicationID.
//
// Open only takes over what is a cache: a missing or empty file, a SQLite
// database stamped with ApplicationID, one written by an earlier version
// (only cache tables), or a SQLite database without tables. Anything else is
// refused with ErrForeignFile and left untouched. A cache file that is
// damaged (a valid SQLite header over corrupt pages, or binary garbage) is
// moved aside to "<path>.corrupt-<timestamp>" (with its -wal and -shm),
// logged, and replaced by an empty cache.
//
// Errors: repository.ErrInvalid for a bad option value; ErrForeignFile;
// otherwise an error saying what is wrong (read-only file system, no space
// left, ...) that wraps the OS or SQLite cause, so errors.Is(err,
// syscall.EROFS) and the like work. A failed Open removes the files and
// directories it created.
func Open(path string, opts ...Option) (*Cache, error) {
	c, err := newCache(path, opts)
	if err != nil {
		return nil, err
	}
	h, err := c.openFile()
	if err != nil {
		return nil, err
	}
	c.h.Store(h)
	if c.cfg.cleanupInterval > 0 {
		c.wg.Add(1)
		go c.cleanupLoop(c.cfg.cleanupInterval)
	}
	if c.cfg.fileCheckInterval > 0 {
		c.kick = make(chan struct{}, 1)
		c.wg.Add(1)
		go c.watchLoop(c.cfg.fileCheckInterval)
	}
	return c, nil
}

func newCache(path string, opts []Option) (*Cache, error) {
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
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlitecache: %w", err)
	}
	c := &Cache{
		path: path, abs: abs, cfg: cfg, stop: make(chan struct{}),
		vendorMemo:   newMemo[string, memoVendor](cfg.memoSize, cfg.memoBytes),
		workItemMemo: newMemo[uuid.UUID, memoWorkItem](cfg.memoSize, cfg.memoBytes),
	}
	c.vendors = &vendorRepo{c: c}
	c.workItems = &workItemRepo{c: c}
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
	case cfg.fileMode&^0o777 != 0:
		return repository.Invalid("FileMode", "must hold permission bits only, got %v", cfg.fileMode)
	case cfg.fileMode&0o600 != 0o600:
		return repository.Invalid("FileMode", "must let the owner read and write, got %#o", uint32(cfg.fileMode))
	}
	return nil
}

// openFile does everything Open does to the file system: directories, the
// ownership check, creation with the configured mode, quarantine of a
// damaged cache, the connections and the migrations. Reopening a lost file
// uses it too. On failure it removes what it created.
func (c *Cache) openFile() (h *handles, err error) {
	var cr created
	defer func() {
		if err != nil {
			cr.undo(c.abs, c.cfg.logger)
		}
	}()
	if err := cr.mkdirs(filepath.Dir(c.abs), dirMode(c.cfg.fileMode)); err != nil {
		return nil, err
	}
	ctx := context.Background()
	// Another process may create the file between the check and our
	// O_EXCL create; then the check runs again on what it made.
	for attempt := 0; ; attempt++ {
		state, err := inspect(ctx, c.abs, c.cfg.busyTimeout)
		if err != nil {
			return nil, err
		}
		switch state {
		case fileMissing:
			err = cr.createMain(c.abs, c.cfg.fileMode, c.cfg.logger)
			if errors.Is(err, fs.ErrExist) && attempt < 3 {
				continue
			}
		case fileDamaged:
			err = c.quarantine(&cr, errNotADatabase)
		default:
			err = checkWritable(c.abs)
		}
		if err != nil {
			return nil, err
		}
		break
	}
	h, err = c.openHandles(ctx)
	if err != nil && isCorrupt(err) && !cr.createdMain() {
		// The ownership check passed, so the damage is to a cache of ours
		// (pages behind a valid header): move it aside and start empty.
		if err = c.quarantine(&cr, err); err != nil {
			return nil, err
		}
		h, err = c.openHandles(ctx)
	}
	return h, err
}

// quarantine moves the damaged file aside, logs it, and creates a fresh one.
func (c *Cache) quarantine(cr *created, cause error) error {
	moved, err := quarantine(c.abs, c.cfg.clock())
	if err != nil {
		return fmt.Errorf("sqlitecache: %s is damaged (%w) and moving it aside failed: %w", c.path, cause, err)
	}
	c.cfg.logger.Error("sqlitecache: cache file is corrupt; moved it aside and starting empty",
		"path", c.path, "moved_to", moved, "err", cause)
	return cr.createMain(c.abs, c.cfg.fileMode, c.cfg.logger)
}

// dsn is the connection string for the file. The file: URI form with an
// escaped path keeps '?' or '#' in a file name from being read as DSN
// parameters.
func (c *Cache) dsn() string {
	return "file:" + (&url.URL{Path: c.abs}).EscapedPath() +
		"?_busy_timeout=" + strconv.FormatInt(c.cfg.busyTimeout.Milliseconds(), 10)
}

// openHandles opens the connections on the file (which exists and passed
// the ownership check), migrates and stamps it, and prepares statements.
func (c *Cache) openHandles(ctx context.Context) (_ *handles, err error) {
	base := c.dsn()
	h := &handles{}
	defer func() {
		if err != nil {
			_ = h.close()
		}
	}()
	// mode=rw: never create the file. It exists (openFile made it with
	// the configured mode), and a connection opened after it was deleted
	// must fail rather than put an empty 0644 file in its place.
	//
	// The writer keeps its statements prepared (_stmt_cache_size): the
	// queue's group commits run the same few statements hundreds of times
	// per transaction, and preparing each was a third of their time.
	h.w, err = sql.Open("sqlite3", base+"&mode=rw&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate&_stmt_cache_size=64")
	if err != nil {
		return nil, fmt.Errorf("sqlitecache: open writer: %w", err)
	}
	h.w.SetMaxOpenConns(1)
	h.w.SetMaxIdleConns(1)
	h.w.SetConnMaxLifetime(0)
	h.w.SetConnMaxIdleTime(0)

	// The first connection to a new file switches it to WAL, which needs an
	// exclusive lock; SQLite answers a concurrent opener SQLITE_BUSY
	// without waiting on the busy timeout, so retry for a little while.
	for attempt := 1; ; attempt++ {
		err = h.w.PingContext(ctx)
		if err == nil || !isBusy(err) || attempt == 40 {
			break
		}
		time.Sleep(time.Duration(min(attempt, 10)) * 10 * time.Millisecond)
	}
	if err != nil {
		return nil, c.setupErr(err)
	}
	// Stamped before the migrations run: a concurrent opener that sees
	// their half-done work (goose's table, no cache tables yet) must still
	// recognize the file as a cache.
	if err = stamp(ctx, h.w); err != nil {
		return nil, c.setupErr(err)
	}
	if err = c.migrate(ctx, h.w); err != nil {
		return nil, err
	}

	h.r, err = sql.Open("sqlite3", base+"&mode=rw&_query_only=1")
	if err != nil {
		return nil, fmt.Errorf("sqlitecache: open readers: %w", err)
	}
	c.configureReaders(h.r)
	h.fast = newFastReaders(base+"&mode=rw&_query_only=1", c.cfg.maxReaders)
	if err = h.prepare(ctx); err != nil {
		return nil, err
	}
	if h.ident, err = os.Stat(c.abs); err != nil {
		return nil, fmt.Errorf("sqlitecache: %w", err)
	}
	return h, nil
}

func (c *Cache) configureReaders(r *sql.DB) {
	r.SetMaxOpenConns(c.cfg.maxReaders)
	r.SetMaxIdleConns(c.cfg.maxReaders)
	r.SetConnMaxLifetime(0)
	r.SetConnMaxIdleTime(0)
}

// setupErr describes a failure to set the file up (connect, migrate,
// stamp) with its OS cause; see describe.
func (c *Cache) setupErr(err error) error {
	if isCorrupt(err) {
		return fmt.Errorf("sqlitecache: open %s: %w", c.path, err)
	}
	return describe("cannot set up cache file "+c.path, err)
}

// migrate brings the schema up to date. The version is read first: an
// up-to-date file (the usual case) skips goose, and a file whose pages are
// damaged fails here at once with SQLITE_CORRUPT, where goose would retry
// for seconds believing its version table missing.
//
// Two processes opening a new file at the same moment can race on goose's
// version table (SQLite has no advisory lock goose could use); the loser
// sees an error, so it retries a few times and then finds nothing pending.
// A failure is first checked against PRAGMA quick_check, so damage is never
// retried.
func (c *Cache) migrate(ctx context.Context, db *sql.DB) error {
	v, err := schemaVersion(ctx, db)
	if err == nil && v == latestSchema {
		return nil
	}
	if err != nil && isCorrupt(err) {
		return fmt.Errorf("sqlitecache: open %s: %w", c.path, err)
	}
	for attempt := range 3 {
		if err = migrations.UpSQLite(ctx, db); err == nil {
			return nil
		}
		if qerr := quickCheck(ctx, db); qerr != nil {
			return fmt.Errorf("sqlitecache: migrate %s: %w (after: %v)", c.path, qerr, err)
		}
		if osCause(err) != 0 {
			break // a full disk or an I/O error is no race: retrying only delays the error
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	return c.setupErr(fmt.Errorf("migrate: %w", err))
}

const (
	// ?1 is the rev of the caller's memoized copy (0: none). When the row
	// still has that rev, the blob is not even read.
	getVendorSQL = `SELECT rev, cached_at,
    CASE WHEN rev = ?1 THEN NULL ELSE encoding END,
    CASE WHEN rev = ?1 THEN NULL ELSE data END, pending
FROM cached_vendors WHERE name = ?2`
	getWorkItemSQL = `SELECT rev, cached_at,
    CASE WHEN rev = ?1 THEN NULL ELSE encoding END,
    CASE WHEN rev = ?1 THEN NULL ELSE data END, pending
FROM cached_work_items WHERE id = ?2`

	// The upserts that the set and replace statements share; each adds the
	// WHERE that decides when a cached entry is replaced.
	upsertVendorSQL = `INSERT INTO cached_vendors (name, data, cached_at, version, encoding, id, status, created_at, rev)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, random() | 1)
ON CONFLICT (name) DO UPDATE SET
    rev = excluded.rev, data = excluded.data, cached_at = excluded.cached_at, version = excluded.version,
    encoding = excluded.encoding, id = excluded.id, status = excluded.status, created_at = excluded.created_at
`
	upsertWorkItemSQL = `INSERT INTO cached_work_items (id, data, cached_at, version, encoding, type, status, parent_id, path, deleted, created_at, rev)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, random() | 1)
ON CONFLICT (id) DO UPDATE SET
    rev = excluded.rev, data = excluded.data, cached_at = excluded.cached_at, version = excluded.version,
    encoding = excluded.encoding, type = excluded.type, status = excluded.status,
    parent_id = excluded.parent_id, path = excluded.path, deleted = excluded.deleted,
    created_at = excluded.created_at
`

	// A different id under the same name is a different vendor (deleted and
	// re-created); the later-created one wins, whatever its version.
	// rev: random, never 0 (0 means "no memo" in getVendorSQL).
	// An entry a queued write is pending on (pending > 0) is left alone:
	// only the queue's own operations (queue.go) replace it.
	setVendorSQL = upsertVendorSQL + `WHERE cached_vendors.pending = 0 AND (
      (excluded.id IS cached_vendors.id AND excluded.version >= cached_vendors.version)
   OR (excluded.id IS NOT cached_vendors.id AND excluded.created_at >= cached_vendors.created_at))`

	setWorkItemSQL = upsertWorkItemSQL + `WHERE cached_work_items.pending = 0 AND excluded.version >= cached_work_items.version`

	// The replace statements are the set statements without the version
	// rule (see replace.go); pending entries are still left alone.
	replaceVendorSQL = upsertVendorSQL + `WHERE cached_vendors.pending = 0`

	replaceWorkItemSQL = upsertWorkItemSQL + `WHERE cached_work_items.pending = 0`
)

// prepare prepares the hot statements once; database/sql then keeps one
// prepared copy per connection, so a Get does no SQL parsing.
func (h *handles) prepare(ctx context.Context) error {
	var err error
	prep := func(db *sql.DB, q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var s *sql.Stmt
		s, err = db.PrepareContext(ctx, q)
		return s
	}
	h.setVendorStmt = prep(h.w, setVendorSQL)
	h.setWorkItemStmt = prep(h.w, setWorkItemSQL)
	h.replaceVendorStmt = prep(h.w, replaceVendorSQL)
	h.replaceWorkItemStmt = prep(h.w, replaceWorkItemSQL)
	if err != nil {
		return fmt.Errorf("sqlitecache: prepare: %w", err)
	}
	return nil
}

// close closes everything. A call still using these handles fails (the
// connection pools refuse new work once closed) instead of using a closed
// connection.
func (h *handles) close() error {
	h.isClosed.Store(true)
	var errs []error
	if h.fast != nil {
		h.fast.close()
	}
	for _, s := range []*sql.Stmt{h.setVendorStmt, h.setWorkItemStmt, h.replaceVendorStmt, h.replaceWorkItemStmt} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if h.r != nil {
		errs = append(errs, h.r.Close())
	}
	if h.w != nil {
		errs = append(errs, h.w.Close())
	}
	return errors.Join(errs...)
}

func isBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}

// isCorrupt reports whether err means the file is not a usable database.
func isCorrupt(err error) bool {
	if errors.Is(err, errNotADatabase) || errors.Is(err, errDamaged) {
		return true
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrNotADB || se.Code == sqlite3.ErrCorrupt
	}
	return false
}

// Close stops the background goroutines (cleanup, file watcher), waits for
// them, and closes the database connections. Calls after the first return
// the first call's result; every other method returns ErrClosed afterwards.
// Errors: the wrapped SQLite error if closing a connection failed.
func (c *Cache) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		close(c.stop)
		c.wg.Wait()
		c.reopenMu.Lock()
		defer c.reopenMu.Unlock()
		if h := c.h.Load(); h != nil {
			if err := h.close(); err != nil {
				c.closeErr = fmt.Errorf("sqlitecache: close: %w", err)
			}
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

// checkWrite is checkOpen for the methods that write.
func (c *Cache) checkWrite() error {
	if c.closed.Load() {
		return ErrClosed
	}
	if c.readOnly {
		return ErrReadOnly
	}
	return nil
}
