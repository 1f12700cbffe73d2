package sqlitecache

import (
	"errors"
	"fmt"

	"github.com/pgfallback/pgfallback/repository"
)

var (
	// ErrClosed is returned by every operation on a Cache after Close.
	ErrClosed = errors.New("sqlitecache: cache is closed")

	// ErrInvalidKey is returned by IsStale and ParseKey for a key that is not
	// "vendor:<name>" or "work_item:<uuid>". It matches repository.ErrInvalid.
	ErrInvalidKey = fmt.Errorf("sqlitecache: invalid cache key: %w", repository.ErrInvalid)

	// ErrCorruptEntry is returned (beside repository.ErrNotFound, so callers
	// that only check for a miss treat it as one) when a stored entry does
	// not decode. The cache's own ignorance must not fail the application.
	ErrCorruptEntry = errors.New("sqlitecache: corrupt cache entry")

	// ErrPending is returned by RetryWrite and DiscardWrite for a write
	// that is pending, not a dead letter: the application replays it. It
	// matches repository.ErrInvalid.
	ErrPending = fmt.Errorf("not a dead letter: %w", repository.ErrInvalid)

	// ErrUndecodable is returned by RetryWrite for a queued write whose
	// stored bytes do not decode (QueuedWrite.Undecodable): no replay can
	// apply it. It matches repository.ErrInvalid.
	ErrUndecodable = fmt.Errorf("queued write does not decode: %w", repository.ErrInvalid)

	// ErrForeignFile is returned by Open and OpenReadOnly for a file that is
	// not a cache: a SQLite database of another application, a text file, a
	// directory. The file is left exactly as it was; the message says what
	// was found.
	ErrForeignFile = errors.New("not a pgfallback cache file")

	// ErrReadOnly is returned by the methods that write, on a Cache from
	// OpenReadOnly.
	ErrReadOnly = errors.New("sqlitecache: cache is opened read-only")

	// ErrNoCache is returned by OpenReadOnly for a file that holds no cache
	// yet: empty, or a SQLite database without tables (Open would adopt
	// it).
	ErrNoCache = errors.New("no cache in the file yet")

	// ErrCorruptFile is returned by OpenReadOnly for a cache file that is
	// damaged (Open would move it aside and start empty).
	ErrCorruptFile = errors.New("cache file is damaged")

	// ErrSchemaVersion is returned by OpenReadOnly for a cache whose schema
	// this version cannot read without changing it: older (Open upgrades
	// it) or newer (written by a later version).
	ErrSchemaVersion = errors.New("cache schema version not readable by this version")
)

// errPoolClosed is what a set of connections answers once it was closed:
// by Close (reported as ErrClosed) or by a reopen (the call raced the swap).
var errPoolClosed = errors.New("connections were closed")

// wrapErr gives a database error context, turns the errors a concurrent
// Close causes inside database/sql into ErrClosed, and asks the file
// watcher to look at the file when the error suggests it was lost.
func (c *Cache) wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if c.closed.Load() {
		return fmt.Errorf("sqlitecache: %s: %w", op, ErrClosed)
	}
	c.noteErr(err)
	if lost := c.lostErr(); lost != nil {
		return fmt.Errorf("sqlitecache: %s: %w: %w", op, lost, err)
	}
	return fmt.Errorf("sqlitecache: %s: %w", op, err)
}
