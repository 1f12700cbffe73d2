package sqlitecache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/mattn/go-sqlite3"
)

// OpenReadOnly opens an existing cache file for reading only (SQLite
// mode=ro), for tools such as `pgfallback cache stats` that must never
// change what they look at. It never creates, migrates, moves, stamps or
// writes the file, and starts no background goroutine. Stats, Get*, List*,
// IsStale, VendorNames and WorkItemIDs work; the methods that write return
// ErrReadOnly. It works while another process has the file open read-write.
//
// SQLite may create the -wal and -shm files of a WAL-mode cache that has
// none (it needs the shared index to read safely while a writer may
// appear); they hold no data, and the next read-write Close removes them.
// On a read-only file system the file is opened immutable: nobody can
// change it there. So is a file this user cannot read in place — SQLite
// needs to create or write its -shm, and the directory or the -shm is not
// writable (a 0555 snapshot directory) — provided it has no write-ahead
// log: the file then holds the whole cache, and no writer is at work.
//
// Errors: repository.ErrInvalid for a bad option; an error wrapping
// fs.ErrNotExist for a missing file; ErrNoCache for an empty file or a
// SQLite database without tables; ErrForeignFile for a file that is not a
// cache; ErrCorruptFile for a damaged one; ErrSchemaVersion for a cache
// whose schema is older (Open upgrades it) or newer than this version
// reads; otherwise the wrapped OS or SQLite error.
func OpenReadOnly(path string, opts ...Option) (*Cache, error) {
	c, err := newCache(path, opts)
	if err != nil {
		return nil, err
	}
	c.readOnly = true
	h, err := c.openReadOnly(context.Background())
	if err != nil {
		return nil, err
	}
	c.h.Store(h)
	return c, nil
}

func (c *Cache) openReadOnly(ctx context.Context) (_ *handles, err error) {
	fi, err := os.Stat(c.abs)
	if err != nil {
		return nil, describe("cannot open cache file "+c.path+" read-only", err)
	}
	if err := checkRegular(c.path, fi); err != nil {
		return nil, err
	}
	switch {
	case fi.Size() == 0:
		return nil, fmt.Errorf("sqlitecache: %s: %w: the file is empty", c.path, ErrNoCache)
	case fi.Size() < minDatabaseSize:
		return nil, c.notSQLite()
	}
	dsn := readOnlyDSN(c.abs, c.cfg.busyTimeout)
	h, err := c.openReadersOn(ctx, fi, dsn)
	if err != nil && !strings.Contains(dsn, "immutable=1") && needsImmutable(err, c.abs) {
		// A WAL file read in place needs its -shm, which this user cannot
		// create or write (a read-only directory, a snapshot): with no
		// write-ahead log to read, the file alone is the whole cache.
		h, err = c.openReadersOn(ctx, fi, dsn+"&immutable=1")
	}
	return h, err
}

// openReadersOn opens the readers with dsn and checks the file is a cache
// this version reads.
func (c *Cache) openReadersOn(ctx context.Context, fi os.FileInfo, dsn string) (_ *handles, err error) {
	h := &handles{ident: fi}
	defer func() {
		if err != nil {
			_ = h.close()
		}
	}()
	if h.r, err = sql.Open("sqlite3", dsn); err != nil {
		return nil, fmt.Errorf("sqlitecache: open readers: %w", err)
	}
	c.configureReaders(h.r)
	if err = c.checkReadable(ctx, h.r); err != nil {
		return nil, err
	}
	h.fast = newFastReaders(dsn, c.cfg.maxReaders)
	return h, nil
}

// needsImmutable: reading path failed because SQLite would have had to
// write beside it (SQLITE_READONLY, SQLITE_CANTOPEN: the -shm), and there
// is no write-ahead log holding changes the file lacks — so no writer is
// at work, and the file can be read as immutable. A writer that starts
// while it is read that way is not seen: this is for inspecting a
// snapshot or a read-only copy, which is what a file this user cannot
// write beside is.
func needsImmutable(err error, path string) bool {
	var se sqlite3.Error
	if !errors.As(err, &se) || (se.Code != sqlite3.ErrReadonly && se.Code != sqlite3.ErrCantOpen) {
		return false
	}
	wal, statErr := os.Stat(path + "-wal")
	return errors.Is(statErr, fs.ErrNotExist) || (statErr == nil && wal.Size() == 0)
}

// checkReadable refuses, with the reason, a file that is not a cache this
// version can read as it is.
func (c *Cache) checkReadable(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	var p probed
	if err == nil {
		defer conn.Close()
		p, err = probeWith(ctx, conn)
	}
	switch {
	case err == nil:
	case isNotADB(err):
		return c.notSQLite()
	case isCorrupt(err):
		return fmt.Errorf("sqlitecache: %s: %w: %w", c.path, ErrCorruptFile, err)
	default:
		return describe("cannot read cache file "+c.path, err)
	}
	if _, err := p.verdict(c.path); err != nil {
		return err
	}
	if len(p.tables) == 0 {
		return fmt.Errorf("sqlitecache: %s: %w: it is a SQLite database without tables", c.path, ErrNoCache)
	}
	v, err := schemaVersion(ctx, conn)
	switch {
	case err != nil && isCorrupt(err):
		return fmt.Errorf("sqlitecache: %s: %w: %w", c.path, ErrCorruptFile, err)
	case err != nil:
		return describe("cannot read cache file "+c.path, err)
	case v < latestSchema:
		return fmt.Errorf("sqlitecache: %s: %w: it was written by an older version (schema %d, this version reads %d); opening it read-write once upgrades it",
			c.path, ErrSchemaVersion, v, latestSchema)
	case v > latestSchema:
		return fmt.Errorf("sqlitecache: %s: %w: it was written by a newer version (schema %d, this version reads up to %d)",
			c.path, ErrSchemaVersion, v, latestSchema)
	}
	return nil
}

// notSQLite is the error for a file SQLite does not recognize: foreign
// when it is text, a damaged cache otherwise (the rule Open applies).
func (c *Cache) notSQLite() error {
	if _, err := classifyNonSQLite(c.abs); err != nil {
		return err
	}
	return fmt.Errorf("sqlitecache: %s: %w: it does not start with the SQLite header", c.path, ErrCorruptFile)
}
