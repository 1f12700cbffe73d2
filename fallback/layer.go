// Package fallback keeps an application answering when its PostgreSQL goes
// away. A Layer wraps a primary (the pgx store) and the SQLite cache into
// repositories that an application uses exactly like the primary's:
//
//   - while PostgreSQL answers, every call goes to it, and what it returns is
//     written through to the cache off the request path;
//   - when it fails (refused connections, timeouts, a server shutting down),
//     a circuit breaker (github.com/sony/gobreaker/v2) opens, reads are
//     served from the cache — marked stale when past their TTL, refused past
//     StaleIfError — and writes fail fast with repository.ErrUnavailable,
//     unless the caller opted in with WithWriteQueue: then they are kept
//     in the cache file and replayed, exactly once, when it comes back;
//   - while the breaker is open a background prober pings PostgreSQL; when
//     it answers, the layer brings the cache up to date (a catch-up of the
//     change feed, or a warm without one), replays the queued writes, and
//     closes the breaker.
//
// Business answers (ErrNotFound, ErrConflict, ErrAlreadyExists, ErrInvalid
// and SQL errors such as constraint violations) pass through unchanged and
// never trip the breaker. A cache miss during an outage is ErrUnavailable,
// never ErrNotFound. Use WithProvenance to learn where a result came from.
//
// # Migrations first
//
// The layer never changes PostgreSQL's schema. Apply the migrations with
// migrations.Up (or the CLI's "pgfallback migrate up") before the first
// layer starts, and again after upgrading this module: they create the
// tables, the change log and triggers the change feed reads (migrations
// 00003 and 00005), and the record of applied writes that makes the
// queue's replay exactly-once (00004). Migrate from a deploy step rather
// than at a service's start, which must succeed while the database is down
// (examples/statusd never migrates).
//
// # The change feed
//
// Several instances, each with its own cache file, write to one
// PostgreSQL; without help each cache would go on serving what the others
// changed or deleted. With a primary that offers a change log
// (repository.ChangeFeed: *pgstore.Store once migrated) a layer follows it
// (Config.DisableChangeFeed turns that off): it re-reads or evicts every
// cached key any instance, or plain SQL, changed, within milliseconds, so
// each instance's cache stays truthful, and Origin.AsOf says up to when.
// After an outage the layer catches up from the cursor stored in its cache
// file — O(changes) — instead of re-reading every cached key. Stats().Feed
// shows where it stands.
package fallback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/sync/singleflight"

	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// Primary is the source of truth; *pgstore.Store implements it.
type Primary interface {
	Vendors() repository.VendorRepository
	WorkItems() repository.WorkItemRepository
	Ping(ctx context.Context) error
}

// State is the layer's circuit state.
type State int32

const (
	// Closed: PostgreSQL is healthy; calls go to it.
	Closed State = iota
	// HalfOpen: PostgreSQL answered a probe; the layer is catching the
	// cache up (or warming it) and replaying queued writes, and will close.
	// Calls are still served as when Open.
	HalfOpen
	// Open: PostgreSQL is considered down; reads come from the cache and
	// writes fail fast.
	Open
)

func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return "unknown"
}

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("fallback: layer closed")

// errBreakerOpen is the cause of a call that never reached the primary.
var errBreakerOpen = errors.New("circuit breaker open")

// Layer is the fallback decorator. It is safe for concurrent use; Close it
// to stop its goroutines (the write-through writer and the prober).
type Layer struct {
	primary Primary
	// cache is nil while a cache that NewWithCacheFile could not open is retried
	// (see cacheslot.go); every use loads it once.
	cache atomic.Pointer[sqlitecache.Cache]
	slot  cacheSlot
	cfg   Config
	log   *slog.Logger

	cb       *breaker    // gobreaker, and the window it trips by (slowcalls.go)
	degraded atomic.Bool // from a trip until the prober closes the breaker
	state    atomic.Int32
	// The breaker reports changes under its lock; they are applied (logged,
	// OnStateChange called) by settle, after the lock is released.
	pendingTrip, pendingClose atomic.Bool
	tripped                   chan struct{} // wakes the prober; buffered, never blocks the trip
	lastErr                   atomic.Pointer[error]
	readOnly                  readOnlyWatch           // PostgreSQL refuses writes: not the breaker's (readonly.go)
	writeChecker              repository.WriteChecker // nil when the primary cannot tell (checkWrites)
	answered                  answeredAt              // when PostgreSQL last answered a call (stall.go)
	stall                     stallWatch              // writes time out while PostgreSQL answers: not the breaker's (stall.go)
	commitProber              repository.CommitProber // nil when the primary cannot probe (checkCommits)

	stats  counters
	writer *writer
	feed   *follower   // nil: no change feed (disabled, or the primary has none)
	queue  *writeQueue // nil: the primary cannot apply writes exactly once
	recent *recentWrites
	// The write-through's race guard, by kind (see evictions.go).
	vendorEvictions evictionLog[string]
	itemEvictions   evictionLog[uuid.UUID]
	warms           singleflight.Group
	bg              background // primary calls that outlive their reads (soft.go)

	ctx      context.Context // canceled by Close: ends probes and warms
	cancel   context.CancelFunc
	closed   atomic.Bool
	once     sync.Once
	closeErr error
	wg       sync.WaitGroup

	vendors   vendorRepo
	workItems workItemRepo
}

// New returns a Layer over primary and cache with cfg (zero values take the
// documented defaults) and starts its goroutines. The Layer does not own
// primary or cache: close them after the Layer.
//
// Errors: repository.ErrInvalid when primary or cache is nil or a Config
// field is out of range.
func New(primary Primary, cache *sqlitecache.Cache, cfg Config) (*Layer, error) {
	if cache == nil {
		return nil, fmt.Errorf("fallback: %w", repository.Invalid("cache", "must not be nil"))
	}
	l, err := newLayer(primary, cache, cfg)
	if err != nil {
		return nil, err
	}
	l.start()
	return l, nil
}

// newLayer builds a Layer, with or without its cache, and starts nothing.
func newLayer(primary Primary, cache *sqlitecache.Cache, cfg Config) (*Layer, error) {
	if primary == nil {
		return nil, fmt.Errorf("fallback: %w", repository.Invalid("primary", "must not be nil"))
	}
	if cfg.ReplayBatch < 0 {
		return nil, fmt.Errorf("fallback: %w", repository.Invalid("ReplayBatch", "must not be negative, got %d", cfg.ReplayBatch))
	}
	if cfg.MaxQueuedWrites < 0 {
		return nil, fmt.Errorf("fallback: %w", repository.Invalid("MaxQueuedWrites", "must not be negative, got %d", cfg.MaxQueuedWrites))
	}
	if cfg.FailureRatio > 1 {
		return nil, fmt.Errorf("fallback: %w", repository.Invalid("FailureRatio", "must be in (0, 1], got %v", cfg.FailureRatio))
	}
	if cfg.SlowCallRate > 1 {
		return nil, fmt.Errorf("fallback: %w", repository.Invalid("SlowCallRate", "must be at most 1 (negative: off), got %v", cfg.SlowCallRate))
	}
	cfg = cfg.withDefaults()
	l := &Layer{primary: primary, cfg: cfg, log: cfg.Logger, tripped: make(chan struct{}, 1)}
	l.readOnly.log, l.readOnly.began = l.log, make(chan struct{}, 1)
	l.writeChecker, _ = primary.(repository.WriteChecker)
	l.stall.limit, l.stall.log, l.stall.began = max(cfg.ConsecutiveFailures, 1), l.log, make(chan struct{}, 1)
	l.commitProber, _ = primary.(repository.CommitProber)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.cb = newBreaker(gobreaker.Settings{
		Name:         "postgres",
		MaxRequests:  1, // only the prober's closing ping runs half-open
		Interval:     cfg.Window,
		BucketPeriod: cfg.Window / 10,
		Timeout:      cfg.OpenTimeout,
		// Outage failures in a row, at FailureRatio, or slow answers at
		// SlowCallRate, counted in the breaker's own window (slowcalls.go).
		ReadyToTrip:   l.readyToTrip,
		IsExcluded:    func(err error) bool { return err == errExcluded },
		OnStateChange: l.onBreakerChange,
	})
	refresh := cfg.WriteThroughRefresh
	if refresh == 0 {
		refresh = sqlitecache.DefaultTTL / 10
		if cache != nil {
			refresh = min(cache.VendorTTL(), cache.WorkItemTTL()) / 10
		}
	}
	l.recent = newRecentWrites(max(refresh, 0))
	l.writer = newWriter(l, &l.stats, l.log, cfg.WriteQueue, cfg.WriteBatch)
	if cf, ok := primary.(repository.ChangeFeed); ok && !cfg.DisableChangeFeed {
		l.feed = newFollower(l, cf)
	}
	if cache != nil {
		l.adoptCache(cache)
	}
	if wa, ok := primary.(repository.WriteApplier); ok {
		l.queue = newWriteQueue(l, wa)
	}
	l.vendors = vendorRepo{l}
	l.workItems = workItemRepo{l}
	return l, nil
}

// start starts the writer, the prober and the change feed's follower.
func (l *Layer) start() {
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.writer.run() }()
	go func() { defer l.wg.Done(); l.probe() }()
	if l.feed != nil {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.feed.loop() }()
	}
	if l.queue != nil {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); l.queue.loop() }()
	}
}

// Vendors returns the vendor repository with fallback.
func (l *Layer) Vendors() repository.VendorRepository {
	if l.cfg.Observer != nil {
		return observedVendors{l.vendors}
	}
	return l.vendors
}

// WorkItems returns the work item repository with fallback.
func (l *Layer) WorkItems() repository.WorkItemRepository {
	if l.cfg.Observer != nil {
		return observedWorkItems{l.workItems}
	}
	return l.workItems
}

// Cache returns the layer's cache: the one given to New, or the one
// NewWithCacheFile opened (nil while it cannot be opened). For metrics and
// tools; the layer owns what NewWithCacheFile opened.
func (l *Layer) Cache() *sqlitecache.Cache { return l.cacheNow() }

// State returns the circuit state.
func (l *Layer) State() State { return State(l.state.Load()) }

// Stats returns a snapshot of the counters.
func (l *Layer) Stats() Stats {
	s := l.stats.snapshot(&l.state)
	s.CacheOpen = l.cacheNow() != nil
	s.WriteQueueDepth = l.writer.depth()
	s.ReadOnlySince, s.ReadOnlyCause, s.ReadOnlyStandby = l.readOnly.state()
	s.WritesStalledSince = l.stall.state()
	if f := l.feed; f != nil {
		s.Feed = FeedStats{
			State: FeedState(f.state.Load()), AsOf: f.asOfTime(), ResyncSince: f.resyncStart(), Mirror: f.mirror.Load(),
			ChangesApplied: f.applied.Load(), CatchUps: f.catchUps.Load(), HeardCatchUps: f.heardCatchUps.Load(), RowsHeard: f.rowsHeard.Load(), Resyncs: f.resyncs.Load(),
			Errors: f.errs.Load(), Incomplete: f.incomplete.Load(), Pruned: f.pruned.Load(),
		}
		if !s.Feed.AsOf.IsZero() {
			s.Feed.Lag = max(time.Since(s.Feed.AsOf), 0)
		}
		if p := f.lastErr.Load(); p != nil {
			s.Feed.LastError = dsn.RedactDetails(*p)
		}
		if r, ok := l.primary.(repository.RefusableChangeFeed); ok {
			s.Feed.ListenerRefused = r.ListenerRefused()
		}
	}
	if q := l.queue; q != nil {
		s.Queued = QueuedStats{
			Pending: q.pending.Load(), Queued: q.queued.Load(), Replayed: q.replayed.Load(),
			AlreadyApplied: q.alreadyApplied.Load(), DeadLettered: q.deadLettered.Load(), Conflicts: q.conflicts.Load(),
			ReplayFailures: q.failures.Load(), ReplayTimedOut: q.timedOut.Load(), Full: q.full.Load(), Pruned: q.pruned.Load(),
		}
		if ns := q.oldest.Load(); ns != 0 && s.Queued.Pending > 0 {
			s.Queued.OldestPending = time.Unix(0, ns)
		}
		s.Queued.Stalled = s.Queued.Pending > 0 && q.stalled.Load()
		if p := q.lastErr.Load(); p != nil {
			s.Queued.LastError = dsn.RedactDetails(*p)
		}
	}
	s.AbandonedCalls, s.AbandonedPeak = l.bg.abandoned.Load(), l.bg.peak.Load()
	s.CacheOpenAttempts = l.slot.attempts.Load()
	if err := l.slot.err(); err != nil && !s.CacheOpen {
		s.CacheError = dsn.RedactDetails(err.Error())
	}
	// Stats reach health endpoints and status pages: their errors say
	// what failed, not whom or where it connected to.
	s.LastWarm.Err = dsn.RedactDetails(s.LastWarm.Err)
	return s
}

// Flush waits until every cache update queued so far has been applied (or
// dropped), or ctx ends.
func (l *Layer) Flush(ctx context.Context) error { return l.writer.flush(ctx) }

// Close is Shutdown with a deadline of Config.CloseTimeout (default 5 s).
func (l *Layer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.CloseTimeout)
	defer cancel()
	return l.Shutdown(ctx)
}

// Shutdown stops the prober, cancels a warm in progress, applies the
// write-through queue to the cache until ctx ends, and stops the writer.
// What is still queued then is dropped and counted (Stats.DroppedAtClose,
// and EvictionsLost for deletions among it, which are also logged): a
// cache locked by another process cannot hold up a shutdown. It returns
// once the writer has stopped: at the latest when ctx ends plus, if a
// cache statement is then waiting for a lock, the cache's busy timeout
// (SQLite's wait cannot be interrupted).
//
// It is idempotent: later calls return the first one's result. Calls made
// after it fail with ErrClosed.
//
// Errors: nil when everything queued reached the cache; otherwise an error
// wrapping ctx's error that says what was dropped.
func (l *Layer) Shutdown(ctx context.Context) error {
	l.once.Do(func() {
		before := l.stats.droppedAtClose.Load()
		l.closed.Store(true)
		l.cancel()
		l.bg.wait() // canceled with the layer; their write-throughs go before the writer stops
		l.writer.stop(ctx)
		l.wg.Wait()
		l.closeOwnedCache()
		if n := l.stats.droppedAtClose.Load() - before; n > 0 {
			l.closeErr = fmt.Errorf("fallback: shutdown: %d cache updates dropped at the deadline (%d evictions among them): %w",
				n, l.stats.evictionsLost.Load(), context.Cause(ctx))
		}
	})
	return l.closeErr
}

// errExcluded and errOutage (and errSlow) are what the breaker is told;
// the real error goes to the caller.
var (
	errExcluded = errors.New("excluded")
	errOutage   = errors.New("outage")
)

// onBreakerChange runs under the breaker's lock: it only flips flags and
// wakes the prober; settle does the rest once the lock is released.
func (l *Layer) onBreakerChange(_ string, from, to gobreaker.State) {
	l.cb.w.reset(time.Now())
	switch {
	case to == gobreaker.StateOpen && from == gobreaker.StateClosed:
		l.degraded.Store(true)
		l.pendingTrip.Store(true)
		select {
		case l.tripped <- struct{}{}:
		default:
		}
	case to == gobreaker.StateClosed:
		l.degraded.Store(false)
		l.pendingClose.Store(true)
		if l.feed != nil {
			// The follower drops wake-ups while degraded (recovery catches
			// up instead), so a commit after recovery's catch-up and before
			// this close would wait for the next commit or the poll: one
			// catch-up now covers it.
			l.feed.poke()
		}
	}
}

// settle applies the breaker's pending changes. It is called after every
// report to the breaker, by the goroutine that made it.
func (l *Layer) settle() {
	if l.pendingTrip.CompareAndSwap(true, false) {
		l.setState(Open)
	}
	if l.pendingClose.CompareAndSwap(true, false) {
		l.setState(Closed)
	}
}

func (l *Layer) setState(to State) {
	// The state, its transition counts and why it last opened change
	// together under the stats' lock, which Stats reads them under: a
	// snapshot taken between the swap and the rest said "open" with no
	// cause and no LastTrip (seen in a test under -race).
	trip := l.cb.trip.Load()
	l.stats.mu.Lock()
	from := State(l.state.Swap(int32(to)))
	if from != to {
		l.stats.transition(Transition{From: from, To: to})
	}
	if from == Closed && to == Open {
		l.stats.lastTrip = time.Now()
		if trip != nil {
			l.stats.lastTripCause = trip.cause
		}
	}
	l.stats.mu.Unlock()
	if from == to {
		return
	}
	switch to {
	case Open:
		var cause error
		if p := l.lastErr.Load(); p != nil {
			cause = *p
		}
		if from == Closed {
			if trip != nil && trip.cause == TripSlowCalls {
				l.log.Warn("pgfallback: PostgreSQL slow, serving reads from cache", "from", from.String(), "cause", TripSlowCalls,
					"slow_calls", trip.slow, "calls", trip.valid, "slow_rate", float64(trip.slow)/float64(trip.valid),
					"slow_call_rate", l.cfg.SlowCallRate, "slow_call_duration", l.cfg.SlowCallDuration)
			} else {
				l.log.Warn("pgfallback: PostgreSQL unavailable, serving reads from cache", "from", from.String(), "cause", cause)
			}
		} else {
			l.log.Warn("pgfallback: PostgreSQL still unavailable after probe", "cause", cause)
		}
	case HalfOpen:
		l.log.Info("pgfallback: PostgreSQL answers again: " + l.recoveryPlan())
	case Closed:
		// tryRecover logs it, with what the recovery did.
	}
	if l.cfg.OnStateChange != nil {
		l.cfg.OnStateChange(from, to)
	}
}

// attempt runs fn against the primary through the breaker, within
// PrimaryTimeout. answered is false when the primary could not answer —
// the breaker was open (err is errBreakerOpen) or the call failed with an
// outage (err is that failure) — or refused the call as read-only or out
// of disk (which the breaker does not count), and the caller falls back. An answer
// that took SlowCallDuration or longer is reported to the breaker as slow.
func attempt[T any](l *Layer, ctx context.Context, fn func(context.Context) (T, error)) (res T, err error, answered bool) {
	if l.closed.Load() {
		return res, ErrClosed, true
	}
	if l.degraded.Load() {
		l.stats.rejected.Add(1)
		return res, errBreakerOpen, false
	}
	call, err := l.cb.Allow()
	if err != nil {
		l.stats.rejected.Add(1)
		return res, errBreakerOpen, false
	}
	pctx, cancel := context.WithTimeout(ctx, l.cfg.PrimaryTimeout)
	start := time.Now()
	res, err = fn(pctx)
	took := time.Since(start)
	cancel()
	l.stats.primaryCalls.Add(1)
	switch class, kind := Classify(ctx, err); class {
	case Answer:
		l.answered.mark(start.Add(took))
		if took >= l.cfg.SlowCallDuration {
			l.stats.slowCalls.Add(1)
			if l.slowCall(took) {
				call.done(errSlow) // a failure to gobreaker: readyToTrip decides
				l.settle()
				return res, err, true
			}
		}
		call.done(nil)
		return res, err, true
	case Canceled:
		call.done(errExcluded)
		return res, err, true
	case ReadOnly:
		// PostgreSQL answered: the breaker counts nothing. A write falls
		// back to failing or queueing (write records the refusal), a read
		// to the cache.
		l.answered.mark(start.Add(took))
		l.stats.failure(kind)
		call.done(errExcluded)
		return res, err, false
	default:
		if kind == FailTimeout && l.answered.since(start) {
			// PostgreSQL answered a call after this one was sent: it is
			// reachable, and this statement or its connection was stuck.
			// The call falls back as a timeout (a read to the cache, a
			// write of unknown outcome), without counting as an outage.
			l.stats.failure(kind)
			l.stats.stalledTimeouts.Add(1)
			call.done(errExcluded)
			return res, &stalledError{err}, false
		}
		l.stats.failure(kind)
		l.lastErr.Store(&err)
		call.done(errOutage)
		l.settle()
		return res, err, false
	}
}

// cause expands errBreakerOpen with the failure that opened the breaker.
func (l *Layer) cause(err error) error {
	if err != errBreakerOpen {
		return err
	}
	if p := l.lastErr.Load(); p != nil {
		return fmt.Errorf("%w (last failure: %w)", errBreakerOpen, *p)
	}
	return err
}
