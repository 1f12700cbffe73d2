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

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

type opKind uint8

const (
	opSetVendor opKind = iota
	opSetWorkItem
	opEvictVendor
	opEvictWorkItem
	opEvictWorkItemTree // the item and every cached descendant
	opUpdateWorkItem    // set, first evicting descendants if the item moved
	opRefreshVendors    // the change feed's refresh: must land before its cursor moves
	opBarrier           // Flush: closes done when everything before it is applied
)

// kept reports whether an op may never be dropped. Dropping a set only
// costs a cache miss, or leaves an older version that the next read or
// warm replaces. Dropping an eviction leaves a deleted row to be served as
// live in the next outage ("a deleted row never comes back"), dropping a
// move leaves descendants with their old paths, and dropping a feed
// refresh would leave a change unapplied behind a cursor that moved past
// it; a barrier is a caller waiting.
func (k opKind) kept() bool { return k >= opEvictVendor }

type cacheOp struct {
	kind    opKind
	vendor  repository.Vendor
	vendors []repository.Vendor // opRefreshVendors
	item    repository.WorkItem
	name    string
	id      uuid.UUID
	done    chan struct{}
}

// writer applies write-through updates to the cache off the request path:
// callers enqueue without waiting, one goroutine drains the queue in
// batches, one cache transaction per run of like updates.
//
// Sets go through a bounded queue and are dropped (and counted) when it is
// full, rather than slowing a call that PostgreSQL already answered.
// Evictions, moves and barriers are never dropped: one that finds the
// queue full joins an overflow list, and while that list is not empty,
// sets are dropped and every kept op joins it, so the writer applies all
// of them in the order they were made (channel first, then the list). The
// list grows only with deletes and moves made while the cache is stuck,
// a few dozen bytes each. A kept op the cache fails is retried, with
// backoff, until it is applied or the close deadline passes.
type writer struct {
	l     *Layer // for its cache, which may come and go (see cacheslot.go)
	q     chan cacheOp
	batch int
	stats *counters
	log   *slog.Logger

	mu          sync.Mutex
	overflow    []cacheOp
	overflowing atomic.Bool
	kick        chan struct{} // the overflow has work; buffered, never blocks

	quit     chan struct{}   // closed by stop
	stopped  atomic.Bool     // set before quit is closed
	drainCtx context.Context // bounds the drain after stop; set before quit is closed

	logs logLimiter // a broken disk must not become a log line per request
}

func newWriter(l *Layer, stats *counters, log *slog.Logger, queue, batch int) *writer {
	return &writer{l: l, q: make(chan cacheOp, queue), batch: batch, stats: stats, log: log,
		kick: make(chan struct{}, 1), quit: make(chan struct{}), logs: logLimiter{every: 10 * time.Second}}
}

// enqueue queues op without waiting and reports whether it was queued. A
// set is dropped when the queue is full; a kept op never is.
func (w *writer) enqueue(op cacheOp) bool {
	if op.kind.kept() {
		return w.enqueueKept(op)
	}
	if w.stopped.Load() || w.overflowing.Load() {
		w.stats.writeDropped.Add(1)
		return false
	}
	select {
	case w.q <- op:
		w.stats.writeQueued.Add(1)
		return true
	default:
		w.stats.writeDropped.Add(1)
		return false
	}
}

func (w *writer) enqueueKept(op cacheOp) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped.Load() {
		// The writer has stopped: a Delete that PostgreSQL answered while
		// the layer was closing. Apply its eviction here, briefly.
		w.mu.Unlock()
		w.applyLate(op)
		w.mu.Lock()
		return true
	}
	w.stats.writeQueued.Add(1)
	if !w.overflowing.Load() {
		select {
		case w.q <- op:
			return true
		default:
			w.overflowing.Store(true)
		}
	}
	w.overflow = append(w.overflow, op)
	w.stats.writeOverflowed.Add(1)
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return true
}

func (w *writer) setVendor(v repository.Vendor) bool {
	return w.enqueue(cacheOp{kind: opSetVendor, vendor: v})
}

func (w *writer) setWorkItem(it repository.WorkItem) bool {
	return w.enqueue(cacheOp{kind: opSetWorkItem, item: it})
}

func (w *writer) updateWorkItem(it repository.WorkItem) {
	w.enqueue(cacheOp{kind: opUpdateWorkItem, item: it})
}

func (w *writer) evictVendor(name string)    { w.enqueue(cacheOp{kind: opEvictVendor, name: name}) }
func (w *writer) evictWorkItem(id uuid.UUID) { w.enqueue(cacheOp{kind: opEvictWorkItem, id: id}) }
func (w *writer) evictWorkItemTree(id uuid.UUID) {
	w.enqueue(cacheOp{kind: opEvictWorkItemTree, id: id})
}

// depth is how many updates wait: the queue and the overflow list.
func (w *writer) depth() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.q) + len(w.overflow)
}

// flush waits for the updates queued before it, or for ctx.
func (w *writer) flush(ctx context.Context) error {
	done := make(chan struct{})
	w.enqueue(cacheOp{kind: opBarrier, done: done})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop makes later sets drop and lets run drain what is queued within ctx
// and return. What is still queued when ctx ends is dropped and counted.
func (w *writer) stop(ctx context.Context) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped.Load() {
		return
	}
	w.drainCtx = ctx
	w.stopped.Store(true)
	close(w.quit)
}

func (w *writer) run() {
	buf := make([]cacheOp, 0, w.batch)
	for {
		select {
		case op := <-w.q:
			buf = append(buf[:0], op)
			buf = w.fill(buf)
			w.apply(context.Background(), buf)
		case <-w.kick:
		case <-w.quit:
			w.drain(buf[:0])
			return
		}
		if len(w.q) == 0 {
			w.applyOverflow(context.Background())
		}
	}
}

// applyOverflow applies the overflow list once the queue ahead of it is
// empty. Nothing enters the queue while the list is not empty, so taking
// the list keeps the order of everything enqueued.
func (w *writer) applyOverflow(ctx context.Context) {
	if !w.overflowing.Load() {
		return
	}
	w.mu.Lock()
	ops := w.overflow
	w.overflow = nil
	w.overflowing.Store(false)
	w.mu.Unlock()
	for batch := range chunks(ops, w.batch) {
		w.apply(ctx, batch)
	}
}

// drain applies what is queued until the close deadline, then drops the
// rest, counting it, and logging any eviction among it.
func (w *writer) drain(buf []cacheOp) {
	ctx := w.drainCtx
	for ctx.Err() == nil {
		buf = w.fill(buf[:0])
		if len(buf) == 0 {
			if !w.overflowing.Load() {
				return
			}
			w.applyOverflow(ctx)
			continue
		}
		w.apply(ctx, buf)
	}
	var left []cacheOp
	for {
		buf = w.fill(buf[:0])
		if len(buf) == 0 {
			break
		}
		left = append(left, buf...)
	}
	w.mu.Lock()
	left = append(left, w.overflow...)
	w.overflow = nil
	w.overflowing.Store(false)
	w.mu.Unlock()
	w.abandon(left)
}

// abandon drops ops the close deadline left unapplied.
func (w *writer) abandon(ops []cacheOp) {
	var lost []string
	for _, op := range ops {
		switch {
		case op.kind == opBarrier:
			close(op.done)
			continue
		case op.kind.kept():
			w.stats.evictionsLost.Add(1)
			lost = append(lost, op.key())
		}
		w.stats.writeDropped.Add(1)
		w.stats.droppedAtClose.Add(1)
	}
	if len(lost) > 0 {
		w.log.Error("pgfallback: the cache stayed locked past the close deadline; these deletions did not reach it, "+
			"and the cache may serve them in an outage until a warm removes them",
			"count", len(lost), "keys", lost[:min(len(lost), 20)])
	}
}

// applyLate applies a kept op after the writer stopped, bounded; the
// cache may already be closed, in which case nothing can be done.
func (w *writer) applyLate(op cacheOp) {
	if op.kind == opBarrier {
		close(op.done)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := w.applyOne(ctx, op); err != nil {
		w.abandon([]cacheOp{op})
	}
}

// fill adds what is already queued, without waiting, up to the batch size.
func (w *writer) fill(buf []cacheOp) []cacheOp {
	for len(buf) < w.batch {
		select {
		case op := <-w.q:
			buf = append(buf, op)
		default:
			return buf
		}
	}
	return buf
}

// apply writes ops in queue order, each run of consecutive sets of one type
// as one bulk transaction. ctx ends a kept op's retries (the close
// deadline); a cache statement already waiting for a lock still runs to
// the cache's busy timeout.
func (w *writer) apply(ctx context.Context, ops []cacheOp) {
	for i := 0; i < len(ops); {
		j := i + 1
		if k := ops[i].kind; k == opSetVendor || k == opSetWorkItem {
			for j < len(ops) && ops[j].kind == k {
				j++
			}
			w.applySets(ops[i:j])
		} else if !w.applyKept(ctx, ops[i]) {
			w.abandon(ops[i:]) // the deadline passed while retrying
			return
		}
		i = j
	}
}

func (w *writer) applySets(run []cacheOp) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cache := w.l.cacheNow()
	if cache == nil {
		w.stats.writeDropped.Add(uint64(len(run)))
		return
	}
	var err error
	if run[0].kind == opSetVendor {
		vs := make([]repository.Vendor, len(run))
		for k, op := range run {
			vs[k] = op.vendor
		}
		err = cache.SetVendors(ctx, vs)
	} else {
		ws := make([]repository.WorkItem, len(run))
		for k, op := range run {
			ws[k] = op.item
		}
		err = cache.SetWorkItems(ctx, ws)
	}
	if err != nil {
		w.stats.writeFailed.Add(uint64(len(run)))
		w.stats.writeDropped.Add(uint64(len(run)))
		w.logFailure(err)
		return
	}
	w.stats.writeWritten.Add(uint64(len(run)))
}

// applyKept applies a kept op, retrying with backoff while the cache
// fails (a lock held by another process, a full disk), and reports false
// only when it gave up: the cache was closed, or ctx — the close deadline
// once the layer is closing — ended first.
func (w *writer) applyKept(ctx context.Context, op cacheOp) bool {
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		err := w.applyOne(context.Background(), op)
		if err == nil {
			return true
		}
		if errors.Is(err, sqlitecache.ErrClosed) {
			return false
		}
		w.stats.writeFailed.Add(1)
		w.logFailure(err)
		var quit <-chan struct{}
		if w.stopped.Load() {
			ctx = w.drainCtx
		} else {
			quit = w.quit // closing: go on retrying, now within the deadline
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-quit:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}

func (w *writer) applyOne(ctx context.Context, op cacheOp) error {
	if op.kind == opBarrier {
		close(op.done)
		return nil
	}
	cache := w.l.cacheNow()
	if cache == nil {
		// Whatever file opens later may hold what this deleted or moved.
		w.l.slot.missedEvictions.Store(true)
		w.stats.writeDropped.Add(1)
		return nil
	}
	var err error
	switch op.kind {
	case opEvictVendor:
		err = cache.DeleteVendor(ctx, op.name)
	case opEvictWorkItem:
		err = cache.DeleteWorkItem(ctx, op.id)
	case opEvictWorkItemTree:
		err = cache.DeleteWorkItemTree(ctx, op.id)
	case opUpdateWorkItem:
		err = updateItem(ctx, cache, op.item)
	case opRefreshVendors:
		err = cache.SetVendors(ctx, op.vendors)
	}
	if err == nil {
		w.stats.writeWritten.Add(1)
	}
	return err
}

// key names an op's entity for logs.
func (op cacheOp) key() string {
	switch op.kind {
	case opSetVendor:
		return "vendor:" + op.vendor.Name
	case opEvictVendor:
		return "vendor:" + op.name
	case opSetWorkItem, opUpdateWorkItem:
		return "work_item:" + op.item.ID.String()
	case opRefreshVendors:
		return fmt.Sprintf("vendors:%d refreshed by the change feed", len(op.vendors))
	}
	return "work_item:" + op.id.String()
}

// updateItem writes an updated work item. When the update moved it (its
// path changed, or it was not cached so nobody knows), the cached copies of
// its descendants carry old paths and are evicted first; warming or the
// next reads bring them back.
func updateItem(ctx context.Context, cache *sqlitecache.Cache, it repository.WorkItem) error {
	cached, _, err := cache.GetWorkItem(ctx, it.ID)
	if err != nil || cached.Path != it.Path {
		if err := cache.DeleteWorkItemTree(ctx, it.ID); err != nil {
			return err
		}
	}
	return cache.SetWorkItem(ctx, it)
}

// logFailure logs at most one cache failure every 10 s.
func (w *writer) logFailure(err error) {
	w.logs.do(func() {
		w.log.Error("pgfallback: write-through to cache failed; calls are unaffected", "err", err,
			"dropped_total", w.stats.writeDropped.Load())
	})
}
