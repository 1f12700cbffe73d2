package fallback

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// fromCache decides whether a cached entry may be served during an outage,
// records where the result came from, and counts it. It returns false when
// the entry is past its TTL by more than StaleIfError.
func (l *Layer) fromCache(ctx context.Context, e sqlitecache.Entry, ttl time.Duration) bool {
	if e.Stale {
		if l.cfg.StaleIfError < 0 || e.Age > ttl+l.cfg.StaleIfError {
			return false
		}
		l.stats.servedStale.Add(1)
	} else {
		l.stats.servedFresh.Add(1)
	}
	provenanceFrom(ctx).record(Origin{Source: SourceCache, CachedAt: e.CachedAt, Age: e.Age, Stale: e.Stale})
	return true
}

func (l *Layer) fromPrimary(ctx context.Context) {
	if p := provenanceFrom(ctx); p != nil {
		p.record(Origin{Source: SourcePrimary})
	}
}

// readUnavailable is the error of a read that neither the primary nor the
// cache could serve. The cache's reason is quoted, not wrapped: a cache miss
// must never match repository.ErrNotFound.
func (l *Layer) readUnavailable(ctx context.Context, op string, cause error, why string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.stats.unavailable.Add(1)
	provenanceFrom(ctx).record(Origin{})
	return fmt.Errorf("fallback: %s: %w: %s; primary: %w", op, repository.ErrUnavailable, why, l.cause(cause))
}

// writeUnavailable is the error of a write the primary did not answer. A
// write that may have reached the server is ErrOutcomeUnknown, not
// ErrUnavailable, which promises nothing was written.
func (l *Layer) writeUnavailable(ctx context.Context, op string, cause error) error {
	l.stats.unavailable.Add(1)
	provenanceFrom(ctx).record(Origin{})
	if notSent(cause) {
		return fmt.Errorf("fallback: %s: %w: not written; primary: %w", op, repository.ErrUnavailable, l.cause(cause))
	}
	return fmt.Errorf("fallback: %s: %w: the write may or may not have been applied; primary: %w",
		op, repository.ErrOutcomeUnknown, cause)
}

// notSent reports whether a failed call certainly did not change the
// database: it never left (breaker open, no connection) or the server
// answered with an error, which rolls the statement back.
func notSent(err error) bool {
	var connectErr *pgconn.ConnectError
	var pgErr *pgconn.PgError
	return errors.Is(err, errBreakerOpen) || errors.As(err, &connectErr) || errors.As(err, &pgErr) ||
		pgconn.SafeToRetry(err) || errors.Is(err, repository.ErrUnavailable)
}

// servedList records and counts a List served from the cache: partial by
// nature, since the cache holds only what was read or written before.
func (l *Layer) servedList(ctx context.Context) {
	l.stats.servedPartial.Add(1)
	provenanceFrom(ctx).record(Origin{Source: SourceCache, Partial: true})
}
