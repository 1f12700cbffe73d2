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
)

// wrapErr gives a database error context, and turns the errors a concurrent
// Close causes inside database/sql into ErrClosed.
func (c *Cache) wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if c.closed.Load() {
		return fmt.Errorf("sqlitecache: %s: %w", op, ErrClosed)
	}
	return fmt.Errorf("sqlitecache: %s: %w", op, err)
}
