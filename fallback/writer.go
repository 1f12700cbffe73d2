package fallback

import (
	"context"
	"log/slog"
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
	opBarrier           // Flush: closes done when everything before it is applied
)

type cacheOp struct {
	kind   opKind
	vendor repository.Vendor
	item   repository.WorkItem
	name   string
	id     uuid.UUID
	done   chan struct{}
}

// writer applies write-through updates to the cache off the request path:
// callers enqueue without waiting, one goroutine drains the queue in
// batches, one cache transaction per run of like updates. A full queue drops
// (and counts) rather than slowing a call that PostgreSQL already answered;
// the cache is version-monotonic, so order between sets of one key does not
// matter, and evictions keep their place in the queue.
type writer struct {
	cache   *sqlitecache.Cache
	q       chan cacheOp
	quit    chan struct{}
	stopped atomic.Bool
	batch   int
	stats   *counters
	log     *slog.Logger
	lastLog atomic.Int64 // unix nanos of the last failure logged
}

func newWriter(cache *sqlitecache.Cache, stats *counters, log *slog.Logger, queue, batch int) *writer {
	return &writer{cache: cache, q: make(chan cacheOp, queue), quit: make(chan struct{}), batch: batch, stats: stats, log: log}
}

// enqueue queues op without waiting and reports whether it was queued.
func (w *writer) enqueue(op cacheOp) bool {
	if w.stopped.Load() {
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

func (w *writer) setVendor(v repository.Vendor) bool {
	return w.enqueue(cacheOp{kind: opSetVendor, vendor: v})
}

func (w *writer) setWorkItem(it repository.WorkItem) bool {
	return w.enqueue(cacheOp{kind: opSetWorkItem, item: it})
}

func (w *writer) updateWorkItem(it repository.WorkItem) bool {
	return w.enqueue(cacheOp{kind: opUpdateWorkItem, item: it})
}

func (w *writer) evictVendor(name string)    { w.enqueue(cacheOp{kind: opEvictVendor, name: name}) }
func (w *writer) evictWorkItem(id uuid.UUID) { w.enqueue(cacheOp{kind: opEvictWorkItem, id: id}) }
func (w *writer) evictWorkItemTree(id uuid.UUID) {
	w.enqueue(cacheOp{kind: opEvictWorkItemTree, id: id})
}

// flush waits for the updates queued before it. Unlike enqueue it waits for
// room in the queue, bounded by ctx.
func (w *writer) flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case w.q <- cacheOp{kind: opBarrier, done: done}:
	case <-w.quit:
		return nil // stopped: stop has drained the queue
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop makes later enqueues drop, and lets run drain what is queued and
// return.
func (w *writer) stop() {
	if w.stopped.CompareAndSwap(false, true) {
		close(w.quit)
	}
}

func (w *writer) run() {
	buf := make([]cacheOp, 0, w.batch)
	for {
		select {
		case op := <-w.q:
			buf = append(buf[:0], op)
			buf = w.fill(buf)
			w.apply(buf)
		case <-w.quit:
			for {
				buf = w.fill(buf[:0])
				if len(buf) == 0 {
					return
				}
				w.apply(buf)
			}
		}
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
// as one bulk transaction.
func (w *writer) apply(ops []cacheOp) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < len(ops); {
		j := i + 1
		for j < len(ops) && ops[j].kind == ops[i].kind && (ops[i].kind == opSetVendor || ops[i].kind == opSetWorkItem) {
			j++
		}
		run := ops[i:j]
		var err error
		switch ops[i].kind {
		case opSetVendor:
			vs := make([]repository.Vendor, len(run))
			for k, op := range run {
				vs[k] = op.vendor
			}
			err = w.cache.SetVendors(ctx, vs)
		case opSetWorkItem:
			ws := make([]repository.WorkItem, len(run))
			for k, op := range run {
				ws[k] = op.item
			}
			err = w.cache.SetWorkItems(ctx, ws)
		case opEvictVendor:
			err = w.cache.DeleteVendor(ctx, ops[i].name)
		case opEvictWorkItem:
			err = w.cache.DeleteWorkItem(ctx, ops[i].id)
		case opEvictWorkItemTree:
			err = w.cache.DeleteWorkItemTree(ctx, ops[i].id)
		case opUpdateWorkItem:
			err = w.updateItem(ctx, ops[i].item)
		case opBarrier:
			close(ops[i].done)
			i = j
			continue
		}
		if err != nil {
			w.stats.writeFailed.Add(uint64(len(run)))
			w.stats.writeDropped.Add(uint64(len(run)))
			w.logFailure(err)
		} else {
			w.stats.writeWritten.Add(uint64(len(run)))
		}
		i = j
	}
}

// updateItem writes an updated work item. When the update moved it (its
// path changed, or it was not cached so nobody knows), the cached copies of
// its descendants carry old paths and are evicted first; warming or the
// next reads bring them back.
func (w *writer) updateItem(ctx context.Context, it repository.WorkItem) error {
	cached, _, err := w.cache.GetWorkItem(ctx, it.ID)
	if err != nil || cached.Path != it.Path {
		if err := w.cache.DeleteWorkItemTree(ctx, it.ID); err != nil {
			return err
		}
	}
	return w.cache.SetWorkItem(ctx, it)
}

// logFailure logs at most one cache failure every 10 s: a broken disk must
// not turn into a log line per request.
func (w *writer) logFailure(err error) {
	now := time.Now().UnixNano()
	last := w.lastLog.Load()
	if now-last < int64(10*time.Second) || !w.lastLog.CompareAndSwap(last, now) {
		return
	}
	w.log.Error("pgfallback: write-through to cache failed; calls are unaffected", "err", err,
		"dropped_total", w.stats.writeDropped.Load())
}
