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
//
// With the change feed caught up to AsOf, every cached entry is known to
// be current as of AsOf — a change to its key would have been applied — so
// an entry written before AsOf is as old as AsOf, not as its write: an
// unchanged row cached a week ago is served fresh while the feed follows.
func (l *Layer) fromCache(ctx context.Context, e sqlitecache.Entry, ttl time.Duration) bool {
	asOf := l.feed.asOfTime()
	if !asOf.IsZero() && asOf.After(e.CachedAt) {
		e.Age = max(time.Since(asOf), 0)
		e.Stale = e.Age > ttl
	}
	if rs := l.feed.resyncStart(); !rs.IsZero() && e.CachedAt.Before(rs) {
		// The change log lost track of it (an expired cursor) and the
		// resync has not replaced it yet: it may not be the primary's row.
		e.Stale = true
	}
	if e.Stale {
		if e.Age > ttl+l.maxStale() {
			return false
		}
		l.stats.servedStale.Add(1)
	} else {
		l.stats.servedFresh.Add(1)
	}
	provenanceFrom(ctx).record(Origin{Source: SourceCache, CachedAt: e.CachedAt, Age: e.Age, Stale: e.Stale, AsOf: asOf})
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
	return errors.Is(err, errBreakerOpen) || errors.Is(err, ErrWritesStalled) || errors.As(err, &connectErr) || errors.As(err, &pgErr) ||
		pgconn.SafeToRetry(err) || errors.Is(err, repository.ErrUnavailable)
}

// cacheVerdict is the end of a Get the primary could not answer: given
// what the cache returned, it says why the entry cannot be served ("" when
// it can, after recording and counting it). Callers format their error only
// on a refusal, so the served path allocates nothing here.
func (l *Layer) cacheVerdict(ctx context.Context, e sqlitecache.Entry, cerr error, ttl time.Duration) string {
	switch {
	case cerr != nil:
		return "not served from cache: " + cerr.Error()
	case !l.fromCache(ctx, e, ttl):
		return fmt.Sprintf("cached entry is %s old, past TTL plus StaleIfError", e.Age.Round(time.Second))
	}
	return ""
}

// list runs a List on the primary, writing the results through, or on the
// cache (a partial answer) when the primary cannot answer. With a soft
// timeout, a List the primary is slow to answer is answered from the cache
// only when the cache can answer it completely (a complete mirror).
func list[T any](l *Layer, ctx context.Context, op string, entity repository.Entity, writeThrough func(T),
	primary func(context.Context) ([]T, error), cache func(ctx context.Context, window time.Duration) ([]T, error)) ([]T, error) {
	var items []T
	var err error
	var answered bool
	if l.cfg.SoftTimeout > 0 { // closures to a goroutine: only with a soft timeout
		var early bool
		items, err, answered, early = softAttempt(l, ctx, primary, func(ctx context.Context) ([]T, bool) {
			if !l.completeMirror(ctx) {
				return nil, false
			}
			cctx, end := l.cacheRead(ctx, OpList, entity)
			cached, cerr := cache(cctx, l.cacheListWindow(true))
			end(cerr)
			if cerr != nil {
				return nil, false
			}
			l.servedList(ctx, true)
			return cached, true
		}, func(items []T, err error) { writeListThrough(items, err, writeThrough) })
		if early {
			return items, nil
		}
	} else {
		items, err, answered = attempt(l, ctx, primary)
	}
	if answered {
		writeListThrough(items, err, writeThrough)
		if err == nil {
			l.fromPrimary(ctx)
		}
		return items, err
	}
	complete := l.completeMirror(ctx)
	cctx, end := l.cacheRead(ctx, OpList, entity)
	cached, cerr := cache(cctx, l.cacheListWindow(complete))
	end(cerr)
	if cerr != nil {
		return nil, l.readUnavailable(ctx, op, err, "not served from cache: "+cerr.Error())
	}
	l.servedList(ctx, complete)
	return cached, nil
}

// writeListThrough writes a List's answer through.
func writeListThrough[T any](items []T, err error, writeThrough func(T)) {
	if err == nil {
		for _, it := range items {
			writeThrough(it)
		}
	}
}

// write sends a write to the primary, unless writes time out while
// PostgreSQL answers other calls (stallWatch: then it is not sent). One it
// did not answer, or refused as read-only or out of disk, is queued when the caller asked for the queue and it
// certainly was not applied (queued is then called with the cause), and
// otherwise becomes ErrUnavailable or ErrOutcomeUnknown; the caller
// writes a success through.
func write[T any](l *Layer, ctx context.Context, op string, fn func(context.Context) (T, error), queued func(cause error) (T, error)) (T, error) {
	if !l.closed.Load() && l.stall.holds() {
		l.stats.writesHeld.Add(1)
		if l.canQueue(ctx) {
			return queued(ErrWritesStalled)
		}
		var zero T
		return zero, l.writeUnavailable(ctx, op, ErrWritesStalled)
	}
	out, err, answered := attempt(l, ctx, fn)
	if !answered {
		var stalled *stalledError
		if class, kind := Classify(ctx, err); class == ReadOnly {
			l.readOnly.refused(err, kind)
		} else if errors.As(err, &stalled) {
			l.stall.timedOut(err)
		}
		if l.canQueue(ctx) && notSent(err) {
			return queued(err)
		}
		var zero T
		return zero, l.writeUnavailable(ctx, op, err)
	}
	if err == nil {
		l.fromPrimary(ctx)
		l.readOnly.accepted()
		l.stall.committed("a write")
	}
	return out, err
}

// maxStale is how long past its TTL a cached entry may be served.
func (l *Layer) maxStale() time.Duration { return max(l.cfg.StaleIfError, 0) }

// servedList records and counts a List served from the cache: partial,
// since the cache holds only what was read or written before — unless it
// is a complete mirror that the change feed keeps current.
func (l *Layer) servedList(ctx context.Context, complete bool) {
	if !complete {
		l.stats.servedPartial.Add(1)
	}
	provenanceFrom(ctx).record(Origin{Source: SourceCache, Partial: !complete, AsOf: l.feed.asOfTime(), Pending: l.writesPending()})
}

// writesPending reports whether queued writes are waiting for replay.
func (l *Layer) writesPending() bool { return l.queue != nil && l.queue.pending.Load() > 0 }

// pendingBeforePrimary reports whether a Get must look for a pending write
// in the cache before asking PostgreSQL, which does not have it yet. With
// the breaker open the Get goes to the cache anyway, and servedPending
// answers there: looking first would read the cache twice.
func (l *Layer) pendingBeforePrimary() bool { return l.writesPending() && !l.degraded.Load() }

// servedPending answers a read whose cache entry is a queued write's
// result (e.Pending): read-your-writes, whatever the entry's age and
// whether or not PostgreSQL answers, since PostgreSQL does not have the
// write yet. cerr is the cache's answer: nil, or ErrPendingDelete (a
// deleted vendor: not found). It reports false for any other entry.
func (l *Layer) servedPending(ctx context.Context, op string, e sqlitecache.Entry, cerr error) (bool, error) {
	if !e.Pending {
		return false, nil
	}
	provenanceFrom(ctx).record(Origin{Source: SourceQueue, Pending: true, CachedAt: e.CachedAt, Age: e.Age})
	if cerr != nil {
		return true, fmt.Errorf("fallback: %s: %w", op, cerr)
	}
	return true, nil
}

// completeMirror reports whether the cache holds every row and the feed
// has confirmed a position: a List from it is complete as of AsOf. The
// file must say so too: another process may have cleared it (ClearAll
// ends a mirror), or it may have been lost and recreated empty.
func (l *Layer) completeMirror(ctx context.Context) bool {
	f := l.feed
	if f == nil || !f.mirror.Load() || f.asOfTime().IsZero() {
		return false
	}
	cache := l.cacheNow()
	if cache == nil {
		return false
	}
	st, err := cache.FeedState(ctx)
	return err == nil && st.Mirror
}

// cacheListWindow is how far past its TTL an entry may be to appear in a
// List from the cache: StaleIfError, or everything in a complete mirror
// (the feed vouches for every entry as of AsOf).
func (l *Layer) cacheListWindow(complete bool) time.Duration {
	if complete {
		return -1 // ListVendorsWithin: no bound
	}
	return l.maxStale()
}
