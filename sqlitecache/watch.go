package sqlitecache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// sqliteHeaderSize is the size of the database header: a file shorter than
// this cannot be the database SQLite opened.
const sqliteHeaderSize = 100

// watchLoop checks the cache file every interval, and at once when a
// statement error suggests it was lost (noteErr), until Close.
//
// Why a watcher: SQLite keeps using the inode it opened. A file deleted
// under a running process takes every later write with it, silently; a
// truncated one makes reads fail with "no such table" while writes still
// "succeed"; and a new process then starts from an empty file. Without a
// check, that shows only during the outage the cache exists for.
func (c *Cache) watchLoop(interval time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.kick:
		}
		c.checkFile()
	}
}

// noteErr asks the watcher for a check now when err is one a lost file
// causes. It never blocks: one pending request is enough.
func (c *Cache) noteErr(err error) {
	if c.kick == nil || !suggestsLostFile(err) {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func suggestsLostFile(err error) bool {
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code {
	case sqlite3.ErrIoErr, sqlite3.ErrCorrupt, sqlite3.ErrNotADB, sqlite3.ErrReadonly, sqlite3.ErrCantOpen:
		return true
	case sqlite3.ErrError:
		return strings.Contains(se.Error(), "no such table")
	}
	return false
}

// lostHow says how the file at path differs from the one that was opened
// ("" when it does not, or when the path cannot be examined: that is not
// a loss a reopen could repair).
func lostHow(path string, opened os.FileInfo) string {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "deleted"
	case err != nil:
		return ""
	case !os.SameFile(fi, opened):
		return "replaced"
	case fi.Size() < sqliteHeaderSize:
		return "truncated"
	}
	return ""
}

// checkFile checks the file and, when it was lost, reopens the cache on
// the file now at the path (a fresh one when it is missing). It reports
// whether the file was found lost. A reopen that fails (a full disk, a
// foreign file put in its place) is logged and retried at the next check.
//
// Order matters. For a deleted or replaced file the new connections are
// opened before the old ones are closed, so calls keep working: SQLite,
// closing connections whose file was moved, neither checkpoints into it
// nor deletes the -wal and -shm now at the path. A truncated file is
// different: a connection that opened it after the truncation counts it as
// a database of 0 pages, which SQLite never considers moved, so closing
// that connection checkpoints and deletes "<path>-wal" and "-shm" by name;
// after the new file exists, that would delete the new file's WAL. So the
// truncated file is removed, and the old connections closed and drained of
// in-flight calls, before anything is created; calls fail (saying why)
// until the reopen is done.
func (c *Cache) checkFile() bool {
	c.reopenMu.Lock()
	defer c.reopenMu.Unlock()
	if c.closed.Load() || c.readOnly {
		return false
	}
	old := c.h.Load()
	if !c.lostPending.Load() { // else a failed reopen is retried: counted already
		how := lostHow(c.abs, old.ident)
		if how == "" {
			return false
		}
		c.fileLost.Add(1)
		c.cfg.logger.Error("sqlitecache: cache file was "+how+" under the running process; its entries are gone, reopening",
			"path", c.path)
		c.lostPending.Store(true)
		if how == "truncated" {
			if fi, err := os.Stat(c.abs); err == nil && os.SameFile(fi, old.ident) {
				_ = os.Remove(c.abs)
			}
			c.retire(old)
		}
	}
	h, err := c.openFile()
	if err != nil {
		c.reopenErr.Store(&err)
		c.cfg.logger.Error("sqlitecache: cannot reopen the cache file; will retry", "path", c.path, "err", err)
		return true
	}
	if !old.retired() {
		// Queued writes are promises to the application: carry them over
		// while the lost file can still be read.
		n, err := carryQueue(context.Background(), old, h)
		switch {
		case err != nil:
			c.cfg.logger.Error("sqlitecache: the lost cache file's queued writes could not be carried into the new file; they are lost",
				"path", c.path, "err", err)
		case n > 0:
			c.cfg.logger.Warn("sqlitecache: carried the lost cache file's queued writes into the new file", "path", c.path, "writes", n)
		}
	} else {
		c.cfg.logger.Error("sqlitecache: the cache file was truncated: any queued writes it held are lost", "path", c.path)
	}
	c.h.Store(h)
	c.lostPending.Store(false)
	c.reopens.Add(1)
	c.retire(old) // a no-op when retired above
	c.cfg.logger.Warn("sqlitecache: cache reopened on a fresh file", "path", c.path)
	return true
}

// retire closes the connections and waits (boundedly: calls on a local
// file are short) until no call is using one any more.
func (c *Cache) retire(h *handles) {
	if err := h.close(); err != nil {
		c.cfg.logger.Warn("sqlitecache: closing the connections to the lost file", "path", c.path, "err", err)
	}
	deadline := time.Now().Add(max(c.cfg.busyTimeout, time.Second) + time.Second)
	for !h.drained() {
		if time.Now().After(deadline) {
			c.cfg.logger.Warn("sqlitecache: calls still hold connections to the lost file", "path", c.path)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// drained reports whether every connection of closed handles is gone.
func (h *handles) drained() bool {
	for _, db := range []*sql.DB{h.w, h.r} {
		if db != nil && db.Stats().OpenConnections > 0 {
			return false
		}
	}
	return h.fast == nil || h.fast.inUse() == 0
}

// lostErr explains a failing call while a lost file awaits its reopen;
// nil otherwise.
func (c *Cache) lostErr() error {
	if !c.lostPending.Load() {
		return nil
	}
	if p := c.reopenErr.Load(); p != nil {
		return fmt.Errorf("the cache file was lost and recreating it failed: %w", *p)
	}
	return errors.New("the cache file was lost and is being recreated")
}
