package fallback

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// ChangePruner is implemented by primaries whose change log the layer may
// prune (*pgstore.Store). Pruning must be safe when several instances call
// it at once.
type ChangePruner interface {
	PruneChanges(ctx context.Context, olderThan time.Duration) (int64, error)
}

// FeedState is the change feed's state, in Stats.
type FeedState int32

const (
	FeedOff       FeedState = iota // disabled, or the primary offers no feed
	FeedStarting                   // not yet caught up once (the log may be missing: not migrated)
	FeedFollowing                  // caught up; AsOf moves with every catch-up
	FeedBehind                     // the last catch-up failed; AsOf holds where it stopped
	FeedResyncing                  // the cursor expired: a full warm is under way, then the catch-up of what was committed during it (ResyncSince is zero once the warm is done)
)

func (s FeedState) String() string {
	switch s {
	case FeedOff:
		return "off"
	case FeedStarting:
		return "starting"
	case FeedFollowing:
		return "following"
	case FeedBehind:
		return "behind"
	case FeedResyncing:
		return "resyncing"
	}
	return "unknown"
}

// feedBatch is how many changes one read of the log returns at most.
const feedBatch = 1000

// retryMinBackoff is the first wait before a failed catch-up is tried
// again.
const retryMinBackoff = 50 * time.Millisecond

// storeEvery: a catch-up that applied nothing to the cache stores its new
// cursor and AsOf in the file at most this often. The stored cursor may
// then lag the one in memory; a restart reads again from it, and reading
// changes twice is harmless. A stored AsOf that lags is conservative. The
// same bound spaces the check that the file still holds a cursor. Each
// catch-up would otherwise write the file even when, as for most changes,
// the cache holds none of the keys.
const storeEvery = time.Second

// follower keeps the cache current with every change committed to the
// primary, whoever made it: another instance, another service, plain SQL.
// The database's waker (pgstore.WatchChanges) notifies it within a few
// milliseconds of a commit; a catch-up that fails is retried with backoff,
// and a poll every ChangeFeedPoll is the last backstop. Each catch-up reads the log from the cursor stored in the cache
// file, refreshes the changed keys the cache holds (all of them in mirror
// mode) from the primary in batches, evicts what the primary no longer
// has, and only then stores the new cursor. Duplicates and reordering are
// harmless: refreshing re-reads the row, and the cache never lowers a
// version.
type follower struct {
	l    *Layer
	feed repository.ChangeFeed
	// heard is feed when its notifications carry the changes (nil
	// otherwise): a catch-up a notification woke reads them there.
	heard repository.HeardChangeFeed
	wake  chan struct{} // buffered: a pending wake-up is enough
	// fromLog: a pending wake-up must read the log, up to now (a
	// reconnect, the breaker closing, the start), not only what a
	// notification carried.
	fromLog atomic.Bool

	run    sync.Mutex // one catch-up at a time (the follower, recovery)
	cursor string     // under run
	// fromFile: under run, cursor came from the cache file, written by an
	// earlier run, maybe of another release; one the primary gave this
	// process is never foreign (foreignCursor).
	fromFile bool
	inited   bool // under run: the baseline (cursor and warm) is set
	// pending: under run, the baseline whose warm has not finished: the
	// next attempt goes on from it.
	pending *pendingBaseline
	// Under run: when the file was last checked for a lost cursor, and
	// when the cursor was last stored (see storeEvery).
	checked, stored time.Time
	// skew: under run, the most the database's clock can be ahead of this
	// host's, as the last read of the log bounds it (localAsOf); skewKnown:
	// a read has.
	skew      time.Duration
	skewKnown bool

	state  atomic.Int32
	asOf   atomic.Int64 // unix nanos, this host's clock (localAsOf); 0: unknown
	mirror atomic.Bool
	// resyncSince: unix nanos when a resync began that has not finished
	// (0: none); entries written before it are served stale (see resync).
	resyncSince atomic.Int64

	applied, catchUps, heardCatchUps, rowsHeard, resyncs, errs, pruned atomic.Uint64
	lastErr                                                            atomic.Pointer[string]
	incomplete                                                         atomic.Bool // the last catch-up met ErrChangeLogIncomplete
	logs                                                               logLimiter
}

func newFollower(l *Layer, feed repository.ChangeFeed) *follower {
	f := &follower{l: l, feed: feed, wake: make(chan struct{}, 1), logs: logLimiter{every: time.Minute}}
	f.state.Store(int32(FeedStarting))
	f.heard, _ = feed.(repository.HeardChangeFeed)
	return f
}

// feedStateTimeout bounds adopt's read of the cache file's FeedState,
// which New and the cache's reopening wait for, and resync's record of its
// start, which Close waits for: one local SQLite statement each.
const feedStateTimeout = 5 * time.Second

// adopt takes note of a cache file the layer is about to use: a resync
// it records as unfinished (the process ended during one) makes its older
// entries stale from the first read, before the follower gets to run,
// which during an outage it may not for a while. The follower's baseline
// reads the rest of the state.
func (f *follower) adopt(c *sqlitecache.Cache) {
	ctx, cancel := context.WithTimeout(f.l.ctx, feedStateTimeout)
	defer cancel()
	st, err := c.FeedState(ctx)
	if err != nil {
		return // the baseline reads it again, and reports what fails
	}
	if st.Cursor == "" && !st.ResyncSince.IsZero() {
		f.resyncSince.Store(st.ResyncSince.UnixNano())
	}
}

// poke wakes the follower to read the log up to now.
func (f *follower) poke() {
	f.fromLog.Store(true)
	f.notified()
}

// notified wakes the follower for what a notification announced.
func (f *follower) notified() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// loop runs until the layer closes.
func (f *follower) loop() {
	ctx := f.l.ctx
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		_ = f.feed.WatchChanges(ctx, func(reconnected bool) {
			if reconnected {
				f.poke() // what was notified while it was away is lost
			} else {
				f.notified()
			}
		})
	}()
	defer watch.Wait()
	poll := time.NewTicker(f.l.cfg.ChangeFeedPoll)
	defer poll.Stop()
	// A failed catch-up is tried again after retry, doubling up to a
	// second: nothing else may wake the follower for a while (no more
	// commits, and the poll is the last backstop).
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff := retryMinBackoff
	var nextPrune, lastStart time.Time
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	defer gap.Stop()
	f.poke()
	for {
		heard := false
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
			heard = true
		case <-poll.C:
		case <-retry.C:
		}
		if f.l.degraded.Load() {
			continue // PostgreSQL is down: recovery catches up before the breaker closes
		}
		// Batches, not a read per notification (Config.ChangeFeedMinInterval):
		// what arrives meanwhile is read with the rest.
		if wait := time.Until(lastStart.Add(f.l.cfg.ChangeFeedMinInterval)); wait > 0 {
			gap.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-gap.C:
			}
			select { // the wake-up that came meanwhile is this catch-up's
			case <-f.wake:
			default:
			}
		}
		lastStart = time.Now()
		heard = !f.fromLog.Swap(false) && heard
		if err := f.catchUp(ctx, heard); err != nil && ctx.Err() == nil {
			f.failed(err)
			retry.Reset(backoff)
			backoff = min(2*backoff, time.Second)
		} else {
			backoff = retryMinBackoff
		}
		if now := time.Now(); now.After(nextPrune) && f.state.Load() == int32(FeedFollowing) {
			nextPrune = now.Add(time.Hour)
			f.prune(ctx)
		}
	}
}

func (f *follower) failed(err error) {
	f.errs.Add(1)
	msg := err.Error()
	f.lastErr.Store(&msg)
	f.incomplete.Store(errors.Is(err, repository.ErrChangeLogIncomplete))
	if FeedState(f.state.Load()) == FeedFollowing {
		f.state.Store(int32(FeedBehind))
	}
	f.logs.do(func() {
		f.l.log.Warn("pgfallback: change feed could not catch up; calls are unaffected, cached answers carry the last AsOf",
			"err", err, "errors_total", f.errs.Load())
	})
}

// catchUp applies every change committed since the stored cursor: up to
// now, or, when heard, up to what the notifications carried if they
// continue the cursor.
func (f *follower) catchUp(ctx context.Context, heard bool) error {
	f.run.Lock()
	defer f.run.Unlock()
	cache := f.l.cacheNow()
	if cache == nil {
		return errNoCache
	}
	if f.inited && time.Since(f.checked) >= storeEvery {
		// A file that lost its cursor was replaced under us (lost and
		// recreated, or swapped): what it holds is unknown, start over.
		f.checked = time.Now()
		if st, err := cache.FeedState(ctx); err != nil {
			return err
		} else if st.Cursor == "" {
			f.l.log.Warn("pgfallback: the cache file has no feed cursor any more (recreated?); resyncing")
			f.inited = false
			f.mirror.Store(false)
		}
	}
	if !f.inited {
		if err := f.baseline(ctx, cache); err != nil {
			return err
		}
	}
	f.catchUps.Add(1)
	for {
		b, ok := repository.ChangeBatch{}, false
		// A notification's AsOf needs a read's bound on the clocks' skew.
		if heard && f.heard != nil && f.skewKnown {
			b, ok = f.heard.ReadHeardChanges(f.cursor, feedBatch)
			heard = false // the batch after it, if any, is the log's
			if ok {
				f.heardCatchUps.Add(1)
			}
		}
		var err error
		var sent time.Time // when the log was read; zero: the batch was heard
		if !ok {
			sent = time.Now()
			rctx, cancel := context.WithTimeout(ctx, f.l.cfg.PrimaryTimeout)
			b, err = f.feed.ReadChanges(rctx, f.cursor, feedBatch)
			cancel()
		}
		if errors.Is(err, repository.ErrCursorExpired) || foreignCursor(err) && f.fromFile {
			f.l.log.Warn("pgfallback: the change feed's cursor expired or cannot be read; resyncing: every cached row is replaced by the primary's",
				"err", err)
			if err := f.resync(ctx, cache); err != nil {
				return err
			}
			continue // and read what was committed during the warm
		}
		if err != nil {
			return fmt.Errorf("fallback: change feed: read: %w", err)
		}
		resync, touched, err := f.apply(ctx, cache, b.Changes, b.Rows)
		if err != nil {
			return fmt.Errorf("fallback: change feed: apply: %w", err)
		}
		if resync {
			if err := f.resync(ctx, cache); err != nil {
				return err
			}
			continue
		}
		// A cut batch moves the cursor but not AsOf: changes committed
		// before now may still wait in the next one.
		st := sqlitecache.FeedState{Cursor: b.Next, AsOf: f.asOfTime(), Mirror: f.mirror.Load()}
		if !b.More {
			st.AsOf = f.localAsOf(b.AsOf, sent)
		}
		if touched || b.More || time.Since(f.stored) >= storeEvery {
			if err := cache.SetFeedState(ctx, st); err != nil {
				return fmt.Errorf("fallback: change feed: store cursor: %w", err)
			}
			f.stored = time.Now()
		}
		f.cursor, f.fromFile = b.Next, false
		f.applied.Add(uint64(len(b.Changes)))
		if !b.More {
			f.asOf.Store(st.AsOf.UnixNano())
			f.incomplete.Store(false)
			f.state.Store(int32(FeedFollowing))
			return nil
		}
	}
}

// foreignCursor reports whether the primary refused a cursor as malformed.
// One read from the cache file was written by another release (rolled
// back to after a newer one changed the format) or damaged: like an
// expired one it is answered by a resync; retried, it would keep the feed
// behind for good. One the primary gave this process is a broken feed, and
// the catch-up fails (a resync would only make another).
func foreignCursor(err error) bool {
	var v *repository.ValidationError
	return errors.As(err, &v) && v.Field == "cursor"
}

// resync drops the cursor and AsOf and takes a new baseline: the head,
// then an authoritative warm. The caller then reads the log from the new
// head, so the state moves on to following without waiting for another
// wake-up.
//
// Until the warm has replaced them, the cached rows may not be the
// primary's (missed changes, or another history's rows), and the layer may
// have to serve them before then: the PostgreSQL that answered the expiry
// may fail again, or this process die and restart during an outage. So
// the resync's start is noted first, in memory and in the cache file in
// place of the cursor, and an entry written before it is served stale
// until the warm is done (Layer.fromCache).
func (f *follower) resync(ctx context.Context, cache *sqlitecache.Cache) error {
	f.inited, f.pending = false, nil
	f.asOf.Store(0)
	f.mirror.Store(false)
	since := time.Now()
	f.resyncSince.Store(since.UnixNano())
	// Not cancelled by Close: a process that stops now must find the
	// resync unfinished when it starts again, not the expired cursor.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), feedStateTimeout)
	err := cache.SetFeedState(sctx, sqlitecache.FeedState{ResyncSince: since})
	cancel()
	if err != nil {
		return fmt.Errorf("fallback: change feed: store the resync's start: %w", err)
	}
	return f.baseline(ctx, cache)
}

// baseline sets the starting point: the cursor stored in the cache file,
// or — for a file that has none, or whose cursor expired — the log's head
// taken before a warm of the whole cache (a full mirror in WarmAll mode),
// so nothing committed during the warm is missed. That warm is
// authoritative: the cursor expired because the log can no longer say
// what changed (pruned, reset, or another history after a failover that
// lost transactions), so what the cache holds, whatever its version, may
// be a row that no longer exists. Rows with queued writes keep their
// pending state; the replay settles them.
func (f *follower) baseline(ctx context.Context, cache *sqlitecache.Cache) error {
	if f.cursor == "" && f.resyncs.Load() == 0 {
		st, err := cache.FeedState(ctx)
		if err != nil {
			return err
		}
		if st.Cursor != "" {
			f.cursor, f.fromFile, f.inited = st.Cursor, true, true
			f.mirror.Store(st.Mirror && f.l.cfg.Warm == WarmAll)
			// An AsOf after now is not in this host's clock: one stored by
			// a release that kept the database's (ahead of this host's), or
			// by this host before its clock stepped back. Aging entries from
			// it would serve them as fresh past their TTL; without it they
			// age from when they were cached, until a read sets it again.
			if !st.AsOf.IsZero() && !st.AsOf.After(time.Now()) {
				f.asOf.Store(st.AsOf.UnixNano())
			}
			return nil
		}
		if !st.ResyncSince.IsZero() {
			f.resyncSince.Store(st.ResyncSince.UnixNano()) // a resync this file began is not done
		}
	}
	f.state.Store(int32(FeedResyncing))
	p := f.pending
	if p != nil && (p.cache != cache || p.lost != cache.FileLost()) {
		p = nil // another file: what the warm did is not in it
	}
	if p == nil {
		hctx, cancel := context.WithTimeout(ctx, f.l.cfg.PrimaryTimeout)
		head, err := f.feed.ChangeHead(hctx)
		cancel()
		if err != nil {
			f.state.Store(int32(FeedStarting))
			return fmt.Errorf("fallback: change feed: head: %w", err)
		}
		p = &pendingBaseline{cache: cache, lost: cache.FileLost(), head: head}
		f.pending = p
	}
	// Each attempt is bounded; the next goes on from where it stopped.
	// Long enough for a batch and its write to the cache, whatever
	// WarmTimeout says, or a resync with a WarmTimeout below one batch's
	// time would never move.
	wctx, cancel := context.WithTimeout(ctx, max(f.l.cfg.WarmTimeout, 2*f.l.cfg.PrimaryTimeout))
	rep, err := f.l.resyncWarm(wctx, &p.warm)
	cancel()
	if err != nil {
		f.state.Store(int32(FeedStarting))
		return err
	}
	mirror := rep.Strategy == WarmAll && !rep.Truncated
	if err := cache.SetFeedState(ctx, sqlitecache.FeedState{Cursor: p.head, Mirror: mirror}); err != nil {
		return err
	}
	f.cursor, f.fromFile, f.inited, f.pending = p.head, false, true, nil
	f.mirror.Store(mirror)
	f.resyncSince.Store(0)
	f.resyncs.Add(1)
	return nil
}

// pendingBaseline is a baseline whose warm did not finish: the head it
// follows the log from once the warm is done, taken before the warm began
// so that nothing committed during it is missed, and how far the warm got
// in the cache file it was warming.
type pendingBaseline struct {
	cache *sqlitecache.Cache
	lost  int64 // the file's FileLost count: a lost file is replaced by an empty one
	head  string
	warm  warmProgress
}

// apply refreshes the changed keys. It reports resync for a change it
// cannot follow key by key (a TRUNCATE), and touched when it changed the
// cache.
//
// rows, when a broadcast carried them, spare the reads of their keys.
func (f *follower) apply(ctx context.Context, cache *sqlitecache.Cache, changes []repository.Change, rows []repository.ChangedRow) (resync, touched bool, err error) {
	var names []string
	var ids []uuid.UUID
	seenV, seenW := map[string]bool{}, map[uuid.UUID]bool{}
	for _, c := range changes {
		if c.Op == repository.ChangeTruncate {
			return true, false, nil
		}
		switch c.Entity {
		case repository.EntityVendor:
			if !seenV[c.Key] {
				seenV[c.Key] = true
				names = append(names, c.Key)
			}
		case repository.EntityWorkItem:
			id, err := uuid.Parse(c.Key)
			if err == nil && !seenW[id] {
				seenW[id] = true
				ids = append(ids, id)
			}
		}
	}
	mirror := f.mirror.Load()
	if !mirror && len(names) > 0 {
		if names, err = cache.CachedVendorNames(ctx, names); err != nil {
			return false, false, err
		}
	}
	if !mirror && len(ids) > 0 {
		if ids, err = cache.CachedWorkItemIDs(ctx, ids); err != nil {
			return false, false, err
		}
	}
	// Whatever is queued for a cached key — a heard row, an eviction, a
	// row read below — must land before the cursor moves past its change.
	cached := len(names) + len(ids)
	if len(rows) > 0 && cached > 0 {
		names, ids = f.applyHeard(names, ids, rows)
	}
	for batch := range chunks(names, f.l.cfg.WarmBatch) {
		if err := refreshKeys(ctx, f.l, batch, f.l.vendorEvictions.begin, f.l.vendorBatch,
			func(v repository.Vendor) string { return v.Name }, f.l.feedSetVendors, f.l.uncacheVendor); err != nil {
			return false, false, err
		}
	}
	for batch := range chunks(ids, f.l.cfg.WarmBatch) {
		if err := refreshKeys(ctx, f.l, batch, f.l.itemEvictions.begin, f.l.workItemBatch,
			func(w repository.WorkItem) uuid.UUID { return w.ID }, f.l.feedSetWorkItems,
			func(id uuid.UUID) { f.l.uncacheWorkItem(id, false) }); err != nil {
			return false, false, err
		}
	}
	// The refreshes and evictions went through the write-through queue, in
	// order with the layer's own writes; the cursor moves once they landed.
	if cached > 0 {
		fctx, cancel := context.WithTimeout(ctx, f.l.cfg.WarmTimeout)
		defer cancel()
		return false, true, f.l.writer.flush(fctx)
	}
	return false, false, nil
}

// refreshKeys re-reads keys from the primary and queues the rows found as
// one kept update, evicting the keys the primary no longer has. A row read
// before a concurrent eviction (a Delete on this instance) must not be
// written after it: like a read's write-through, the update is queued only
// if none of its keys was evicted since the read began; else it reads
// again.
func refreshKeys[K comparable, T any](ctx context.Context, l *Layer, keys []K, begin func() uint64,
	get func(context.Context, []K) ([]T, error), key func(T) K, set func([]T, evictionMark) bool, evict func(K)) error {
	for attempt := 0; ; attempt++ {
		before := evictionMark{seq: begin()}
		found, err := get(ctx, keys)
		if err != nil {
			return err
		}
		if !set(found, before) {
			if attempt == 3 {
				return errors.New("evictions kept racing the refresh; retrying later")
			}
			continue
		}
		present := make(map[K]bool, len(found))
		for _, v := range found {
			present[key(v)] = true
		}
		for _, k := range keys {
			if !present[k] {
				evict(k)
			}
		}
		return nil
	}
}

// feedSetVendors queues vendors refreshed by the feed, unless one of them
// was evicted since evictions was noted; it reports whether it queued
// them.
func (l *Layer) feedSetVendors(vs []repository.Vendor, evictions evictionMark) bool {
	r := l.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range vs {
		if l.vendorStale(evictions, v.Name) {
			return false
		}
	}
	if len(vs) > 0 {
		l.writer.enqueue(cacheOp{kind: opRefreshVendors, vendors: vs})
	}
	return true
}

// feedSetWorkItems is feedSetVendors for work items. A refreshed item may
// have moved: like an Update's write-through, it counts as an eviction.
func (l *Layer) feedSetWorkItems(ws []repository.WorkItem, evictions evictionMark) bool {
	r := l.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range ws {
		if l.itemStale(evictions, w) {
			return false
		}
	}
	for _, w := range ws {
		l.itemEvictions.record(w.ID)
		l.writer.enqueue(cacheOp{kind: opUpdateWorkItem, item: w})
	}
	return true
}

// applyHeard applies the rows a broadcast carried for the keys among
// names and ids (pgstore's rows.go), as refreshKeys applies a read: found
// rows queued, keys with no row evicted. It returns the keys left to read:
// those without a row, and those whose rows it could not use.
//
// The rows were read by the waker before this process heard them. A
// delete this process made since would be undone by writing them, so
// they are used only if none of their keys was evicted here at or after
// the earliest read's AsOf, moved into this host's clock (an update made
// since has a higher version, which the cache keeps).
func (f *follower) applyHeard(names []string, ids []uuid.UUID, rows []repository.ChangedRow) ([]string, []uuid.UUID) {
	vendors, items := map[string]*repository.Vendor{}, map[uuid.UUID]*repository.WorkItem{}
	at := rows[0].At
	for _, r := range rows {
		at = minTime(at, r.At)
		switch r.Entity {
		case repository.EntityVendor:
			vendors[r.Key] = r.Vendor
		case repository.EntityWorkItem:
			if id, err := uuid.Parse(r.Key); err == nil {
				items[id] = r.WorkItem
			}
		}
	}
	mark := evictionMark{at: f.localAsOf(at, time.Time{}).UnixNano()}
	before := len(names) + len(ids)
	names = takeHeard(names, vendors, mark, f.l.feedSetVendors, f.l.uncacheVendor)
	ids = takeHeard(ids, items, mark, f.l.feedSetWorkItems, func(id uuid.UUID) { f.l.uncacheWorkItem(id, false) })
	f.rowsHeard.Add(uint64(before - len(names) - len(ids)))
	return names, ids
}

// takeHeard applies the heard rows of keys (a nil row: the key had none)
// and returns the keys left to read.
func takeHeard[K comparable, T any](keys []K, heard map[K]*T, mark evictionMark, set func([]T, evictionMark) bool, evict func(K)) []K {
	var found []T
	var gone, left []K
	for _, k := range keys {
		switch r, ok := heard[k]; {
		case !ok:
			left = append(left, k)
		case r == nil:
			gone = append(gone, k)
		default:
			found = append(found, *r)
		}
	}
	if len(found) > 0 && !set(found, mark) {
		return keys // evicted here since they were read: read them all again
	}
	for _, k := range gone {
		evict(k) // an eviction is always safe
	}
	return left
}

// prune trims the change log, when the primary allows it; one instance at
// a time does the work.
func (f *follower) prune(ctx context.Context) {
	p, ok := f.feed.(ChangePruner)
	if !ok || f.l.cfg.ChangeRetention < 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := p.PruneChanges(pctx, f.l.cfg.ChangeRetention)
	switch {
	case err != nil && ctx.Err() != nil:
		return // the layer is closing: not a failure of pruning (the write queue's prune does the same)
	case err != nil:
		f.l.log.Warn("pgfallback: pruning the change log failed", "err", err)
		return
	}
	f.pruned.Add(uint64(n))
}

// recover catches the cache up after an outage, before the breaker
// closes: O(changes) instead of re-reading every cached key. It reports
// false when the feed cannot (never caught up, no cache): the caller warms.
// A resync under way is gone on with, where it stopped: a warm would redo
// its work from the start.
func (f *follower) recover(ctx context.Context) (bool, error) {
	f.run.Lock() // inited: a catch-up that began before the outage may still be running
	never := FeedState(f.state.Load()) == FeedStarting && !f.inited && f.resyncStart().IsZero()
	f.run.Unlock()
	if never {
		return false, nil
	}
	return true, f.catchUp(ctx, false)
}

// localAsOf is a batch's AsOf (the database's clock) in this host's clock,
// which is what an entry's age is measured against (time.Since): a host
// whose clock is behind the database's by ten minutes aged every entry ten
// minutes too young, and served it as fresh that long past its TTL.
//
// A read of the log sent at sent (this host's clock) returns an AsOf that
// the server took after it arrived, so every change committed before sent
// is in the batch: sent is its AsOf here, exact enough (a round trip
// early) and in this host's clock whatever the database's says. The read
// also bounds the skew: the database's clock is at most AsOf − sent ahead
// of this one. A heard batch (sent zero) carries the AsOf of another
// instance's read in the database's clock: it is moved back by that bound,
// and never later than now. Both err early, never late.
func (f *follower) localAsOf(asOf, sent time.Time) time.Time {
	if !sent.IsZero() {
		if !asOf.IsZero() {
			f.skew, f.skewKnown = asOf.Sub(sent), true
		}
		return sent
	}
	return minTime(asOf.Add(-f.skew), time.Now())
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// asOfTime is the feed's AsOf, zero when unknown or fallen behind a
// pruned cursor.
func (f *follower) asOfTime() time.Time {
	if f == nil {
		return time.Time{}
	}
	return nanosTime(f.asOf.Load())
}

// resyncStart is when a resync that has not finished began; zero when
// none is under way (or the feed is off).
func (f *follower) resyncStart() time.Time {
	if f == nil {
		return time.Time{}
	}
	return nanosTime(f.resyncSince.Load())
}

// nanosTime is the time of unix nanos ns, as the follower keeps times in
// atomics; 0 is the zero time.
func nanosTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// logLimiter runs a logging function at most once per interval: a broken
// disk or a missing log table must not become a log line per call.
type logLimiter struct {
	every time.Duration
	last  atomic.Int64
}

func (r *logLimiter) do(log func()) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(r.every) || !r.last.CompareAndSwap(last, now) {
		return
	}
	log()
}

// ErrNoChangeFeed is returned by CatchUp when the layer follows no change
// feed (disabled, or the primary offers none).
var ErrNoChangeFeed = errors.New("fallback: no change feed")

// CatchUp applies every change committed since the cache's cursor now,
// without waiting for a notification or the poll: for an operator, a test,
// or before a planned failover. Concurrent catch-ups share the work.
//
// Errors: ErrNoChangeFeed, ErrClosed, or the feed's or the cache's error.
func (l *Layer) CatchUp(ctx context.Context) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if l.feed == nil {
		return ErrNoChangeFeed
	}
	return l.feed.catchUp(ctx, false)
}
