package fallback

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// Replay applies the queued writes to PostgreSQL in queue order, in
// batches of Config.ReplayBatch per transaction when the primary is a
// repository.BatchWriteApplier (write by write otherwise), each write's ID
// recorded in the transaction that applies it, so that a replay cut short
// by a crash, a kill or a lost reply applies nothing twice: the next replay
// finds the ID recorded and only removes the write from the queue.
//
// It runs on recovery, after the catch-up or warm and before the breaker
// closes (tryRecover), then every Config.ReplayInterval while the breaker
// is closed, and at once when a write is queued while PostgreSQL answers.
// A transient failure (PostgreSQL unreachable, a timeout, the
// applied-writes table missing) stops the pass and backs off; a write
// PostgreSQL rejects becomes a dead letter, with the writes queued behind
// it for its key, and never holds up the other keys.

// DefaultReplayBatch is Config.ReplayBatch's default: at a few hundred
// microseconds per write, a batch holds its row locks for tens of
// milliseconds, and 10,000 queued writes take 40 commits.
const DefaultReplayBatch = 256

// replayRead is the fewest writes read from the queue at a time.
const replayRead = 256

// replayReadAhead batches are read, and marked sent, at a time: marking
// takes the cache's write lock, which waits for the completer's commit of
// the writes applied before, once per read rather than once per batch.
const replayReadAhead = 4

// AppliedWritePruner is implemented by primaries whose record of applied
// writes the layer may prune (*pgstore.Store). Pruning must be safe when
// several instances call it at once.
type AppliedWritePruner interface {
	PruneAppliedWrites(ctx context.Context, olderThan time.Duration) (int64, error)
}

// DefaultAppliedWriteRetention is Config.AppliedWriteRetention's default
// (pgstore.DefaultAppliedWriteRetention).
const DefaultAppliedWriteRetention = 7 * 24 * time.Hour

// writeQueue is the layer's side of the durable queue: the replayer and
// the counters. The queue itself is in the cache file.
type writeQueue struct {
	l       *Layer
	applier repository.WriteApplier
	batcher repository.BatchWriteApplier // applier, or it one write at a time
	maxSize int                          // writes per batch: ReplayBatch, or 1 without a batch applier
	kick    chan struct{}

	passMu sync.Mutex // one replay pass at a time

	// pending is the number of pending writes as last counted or changed
	// by this process: reads and writes consult the queue only while it is
	// above zero, so an empty queue costs the healthy path one atomic load.
	pending atomic.Int64

	queued, replayed, alreadyApplied, deadLettered, conflicts, failures, timedOut, full, pruned atomic.Uint64
	lastErr                                                                                     atomic.Pointer[string]
	oldest                                                                                      atomic.Int64 // UnixNano of the oldest pending write as last counted; 0: none
	stalled                                                                                     atomic.Bool  // the last replay pass stopped on a failure
}

func newWriteQueue(l *Layer, applier repository.WriteApplier) *writeQueue {
	q := &writeQueue{l: l, applier: applier, kick: make(chan struct{}, 1), maxSize: 1, batcher: oneByOne{applier}}
	if b, ok := applier.(repository.BatchWriteApplier); ok {
		q.batcher, q.maxSize = b, l.cfg.ReplayBatch
	}
	return q
}

// readSize is how many writes a pass reads at a time: replayReadAhead
// batches, within reason for a huge ReplayBatch.
func (q *writeQueue) readSize() int {
	return max(replayRead, q.maxSize, min(q.maxSize*replayReadAhead, 4096))
}

// oneByOne applies a batch with ApplyWrite, a transaction per write, up to
// the first write that fails (an already applied write whose row cannot be
// read now counts as applied).
type oneByOne struct{ repository.WriteApplier }

func (o oneByOne) ApplyWrites(ctx context.Context, ws []repository.Write) ([]repository.AppliedWrite, error) {
	out := make([]repository.AppliedWrite, 0, len(ws))
	for _, w := range ws {
		a, err := o.ApplyWrite(ctx, w)
		if err != nil && !(a.AlreadyApplied && errors.Is(err, repository.ErrUnreadable)) {
			return out, err
		}
		out = append(out, a)
	}
	return out, nil
}

// wake asks the replayer for a pass now.
func (q *writeQueue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// loop is the replayer goroutine; the layer's Close stops it.
func (q *writeQueue) loop() {
	l := q.l
	interval := l.cfg.ReplayInterval
	wait := interval
	var retryAt, lastLog, nextPrune time.Time // failures logged at most once a minute
	q.count(l.ctx)
	if q.pending.Load() > 0 {
		wait = 0 // a restart with writes queued: replay as soon as PostgreSQL answers
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-q.kick:
			if time.Now().Before(retryAt) {
				continue // backing off: the timer will come
			}
		case <-t.C:
		}
		if l.degraded.Load() || l.stall.since.Load() != 0 {
			// The prober replays on recovery, before the breaker closes;
			// while commits do not finish, a replay would only wait.
			t.Reset(interval)
			continue
		}
		if now := time.Now(); now.After(nextPrune) {
			nextPrune = now.Add(time.Hour)
			q.prune(l.ctx)
		}
		if err := q.replay(l.ctx); err != nil && l.ctx.Err() == nil {
			if time.Since(lastLog) >= time.Minute {
				lastLog = time.Now()
				l.log.Warn("pgfallback: replaying queued writes failed; they stay queued and the replay retries",
					"pending", q.pending.Load(), "err", err)
			}
			// At most OpenTimeout: the prober's pace, so that a replay
			// waits no longer for PostgreSQL than a trip would.
			wait = min(max(wait*2, interval), max(l.cfg.OpenTimeout, interval))
			retryAt = time.Now().Add(wait)
		} else {
			wait = interval
			retryAt = time.Time{}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// prune trims PostgreSQL's record of applied writes, when the primary
// allows it (hourly, by every instance: the pruner shares the work).
func (q *writeQueue) prune(ctx context.Context) {
	p, ok := q.applier.(AppliedWritePruner)
	if !ok || q.l.cfg.AppliedWriteRetention < 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := p.PruneAppliedWrites(pctx, q.l.cfg.AppliedWriteRetention)
	if err != nil {
		if ctx.Err() == nil {
			q.l.log.Warn("pgfallback: pruning the record of applied writes failed", "err", err)
		}
		return
	}
	q.pruned.Add(uint64(n))
}

// count reads the number of pending writes, and the oldest's age, from
// the cache file.
func (q *writeQueue) count(ctx context.Context) {
	if cache := q.l.cacheNow(); cache != nil {
		if s, err := cache.QueueStats(ctx); err == nil {
			q.counted(s)
		}
	}
}

func (q *writeQueue) counted(s sqlitecache.QueueStats) {
	q.pending.Store(int64(s.Pending))
	var oldest int64
	if !s.Oldest.IsZero() {
		oldest = s.Oldest.UnixNano()
	}
	q.oldest.Store(oldest)
}

// replay runs one pass: every pending write, in order, until the queue is
// empty or a transient failure stops it (returned).
//
// The pass applies writes to PostgreSQL one by one, in queue order, while
// a completer goroutine removes the applied ones from the queue behind it,
// several per SQLite transaction: the two databases work at the same
// time. A crash between the two leaves applied writes queued, which the
// next replay finds applied by their IDs.
func (q *writeQueue) replay(ctx context.Context) error {
	q.passMu.Lock()
	defer q.passMu.Unlock()
	cache := q.l.cacheNow()
	if cache == nil {
		return nil
	}
	c := q.startCompleter(ctx, cache)
	err := q.pass(ctx, cache, c)
	if cerr := c.stop(); err == nil {
		err = cerr
	}
	if ctx.Err() == nil {
		// Whatever stopped the pass — PostgreSQL, the queue unreadable, the
		// cache refusing a removal — is a stall an operator must see.
		q.stalled.Store(err != nil)
		if err != nil {
			q.failed(err)
		}
	}
	q.count(ctx)
	return err
}

func (q *writeQueue) pass(ctx context.Context, cache *sqlitecache.Cache, c *completer) error {
	size := &batchSize{now: q.maxSize, limit: q.maxSize}
	var last int64 // the last seq handed to PostgreSQL, or dead-lettered
	for {
		// After last: what is applied may not be removed yet. A write
		// queued since, behind a key's earlier writes, has a higher seq.
		batch, err := cache.PendingWritesAfter(ctx, last, q.readSize())
		if err != nil {
			return fmt.Errorf("fallback: replay: reading the queue: %w", err)
		}
		if len(batch) == 0 {
			return nil
		}
		last = batch[len(batch)-1].Seq
		if err := cache.MarkSent(ctx, batch); err != nil {
			return fmt.Errorf("fallback: replay: %w", err)
		}
		for len(batch) > 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := c.failure(); err != nil {
				return err
			}
			if batch, err = q.replayNext(ctx, cache, c, batch, size); err != nil {
				return err
			}
		}
	}
}

// batchSize is how many writes the next PostgreSQL transaction of a pass
// takes: it drops to one when a batch outlasts PrimaryTimeout (a slow
// server; one write that does is an outage), then doubles after each batch
// that commits, up to half the size that timed out.
type batchSize struct{ now, limit int }

func (b *batchSize) committed() { b.now = min(b.now*2, b.limit) }

func (b *batchSize) timedOut() {
	b.limit = max(b.now/2, 1)
	b.now = 1
}

// replayNext applies the next batch of writes: the longest run, up to
// size, that may be replayed. It returns the writes still to replay, or the
// transient failure that must stop the pass.
func (q *writeQueue) replayNext(ctx context.Context, cache *sqlitecache.Cache, c *completer, batch []sqlitecache.QueuedWrite, size *batchSize) ([]sqlitecache.QueuedWrite, error) {
	l := q.l
	if err := l.unreplayable(batch[0]); err != nil {
		return q.rejectIn(ctx, cache, c, batch, err)
	}
	n := 1
	for n < len(batch) && n < size.now && l.unreplayable(batch[n]) == nil {
		n++
	}
	ws := make([]repository.Write, n)
	for i := range ws {
		ws[i] = batch[i].Write
	}
	pctx, cancel := context.WithTimeout(ctx, l.cfg.PrimaryTimeout)
	start := time.Now()
	applied, err := q.batcher.ApplyWrites(pctx, ws)
	timedOut := errors.Is(pctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	wrote := false
	for i, a := range applied {
		c.add(sqlitecache.Completed{Write: batch[i], Row: sqlitecache.Row{Vendor: a.Vendor, WorkItem: a.WorkItem}}, a.AlreadyApplied)
		if !a.AlreadyApplied { // found applied before: nothing written now
			l.readOnly.accepted()
			wrote = true
		}
	}
	batch = batch[len(applied):]
	switch {
	case err == nil:
		size.committed()
		l.answered.mark(time.Now())
		if wrote { // a batch found applied commits nothing to wait for
			l.stall.committed("a replay")
		}
		return batch, nil
	// PostgreSQL's answer about the write itself, which no retry changes.
	// Anything else (an outage, a timeout, the applied-writes table
	// missing) keeps the write queued.
	case repository.IsAnswer(err) && len(applied) < n:
		return q.rejectIn(ctx, cache, c, batch, err)
	case timedOut && n-len(applied) > 1:
		// Slow, not gone: smaller batches follow. The batch was rolled
		// back, or its commit landed as the deadline passed (a lost
		// reply): the next finds those writes already applied, by their
		// records, and applies nothing twice.
		size.timedOut()
		q.timedOut.Add(uint64(n - len(applied)))
		l.log.Debug("pgfallback: a replay batch outlasted PrimaryTimeout; replaying smaller batches",
			"writes", n, "timeout", l.cfg.PrimaryTimeout)
		return batch, nil
	}
	w := batch[0]
	if ctx.Err() == nil {
		msg := err.Error()
		switch class, kind := Classify(ctx, err); class {
		case Outage:
			l.stats.failure(kind)
			if timedOut && l.answered.since(start) {
				// PostgreSQL answered other calls meanwhile: its commits
				// hang (stall.go), it is not out of reach.
				l.stats.stalledTimeouts.Add(1)
				l.stall.timedOut(err)
				break
			}
			l.lastErr.Store(&err)
			l.reportReplayOutage()
		case ReadOnly:
			// Reachable: the writes wait for PostgreSQL to take them,
			// and the breaker stays closed for the reads.
			l.stats.failure(kind)
			l.readOnly.refused(err, kind)
		}
		if derr := cache.DeferWrite(context.WithoutCancel(ctx), w, msg); derr != nil {
			l.log.Warn("pgfallback: recording a failed replay in the queue failed", "write", w.Write.ID, "err", derr)
		}
	}
	if n > 1 {
		return nil, fmt.Errorf("fallback: replay of %d queued writes from %s (%s %s %q): %w", n-len(applied), w.Write.ID, w.Write.Op, w.Write.Entity, w.Write.Key(), err)
	}
	return nil, fmt.Errorf("fallback: replay of queued write %s (%s %s %q): %w", w.Write.ID, w.Write.Op, w.Write.Entity, w.Write.Key(), err)
}

// rejectIn dead-letters batch[0] for cause, with the writes behind it for
// its key, and returns the rest of the batch without them.
func (q *writeQueue) rejectIn(ctx context.Context, cache *sqlitecache.Cache, c *completer, batch []sqlitecache.QueuedWrite, cause error) ([]sqlitecache.QueuedWrite, error) {
	// The dead letter caches PostgreSQL's row: the completions before it
	// must land first, or one of them would overwrite that row.
	if err := c.flush(); err != nil {
		return nil, err
	}
	dead, err := q.reject(ctx, cache, batch[0], cause)
	if err != nil {
		return nil, err
	}
	gone := make(map[int64]bool, len(dead)+1)
	gone[batch[0].Seq] = true
	for _, d := range dead {
		gone[d.Seq] = true
	}
	rest := batch[:0:0]
	for _, w := range batch[1:] {
		if !gone[w.Seq] {
			rest = append(rest, w)
		}
	}
	return rest, nil
}

// unreplayable is why w must become a dead letter without being sent:
// it does not decode, or it may have been applied with its record pruned.
func (l *Layer) unreplayable(w sqlitecache.QueuedWrite) error {
	if w.Undecodable != "" {
		// Not an answer from PostgreSQL: the key's row is read from it,
		// so that the cache drops the pending state for the truth.
		return fmt.Errorf("queued write %d does not decode, so it cannot be replayed: %s (its bytes are kept: pgfallback queue list --json): %w",
			w.Seq, w.Undecodable, sqlitecache.ErrCorruptEntry)
	}
	return l.mayBePruned(w)
}

// mayBePruned refuses to replay a write first handed to PostgreSQL longer
// than AppliedWriteRetention ago: if that replay applied it (and the queue
// lost the news in a crash), the record that makes another replay do
// nothing may be pruned by now, and the write would be applied twice.
// Whether it was applied cannot be known: ErrOutcomeUnknown, and an
// operator decides (Retry applies it, Discard drops it).
func (l *Layer) mayBePruned(w sqlitecache.QueuedWrite) error {
	ret := l.cfg.AppliedWriteRetention
	if ret < 0 || w.SentAt.IsZero() {
		return nil
	}
	if age := time.Since(w.SentAt); age > ret {
		return fmt.Errorf("first sent to PostgreSQL %s ago, longer than AppliedWriteRetention (%s): it may have been applied and its record pruned, so it is not replayed: %w",
			age.Round(time.Second), ret, repository.ErrOutcomeUnknown)
	}
	return nil
}

// completer removes applied writes from the queue, in order, as many per
// SQLite transaction as have arrived. It is owned by one replay pass,
// which stops it.
type completer struct {
	q     *writeQueue
	cache *sqlitecache.Cache
	ctx   context.Context
	items chan completion
	done  chan struct{}
	err   atomic.Pointer[error]
}

// completion is an applied write, or (flushed set) a request to say when
// everything before it is removed.
type completion struct {
	c              sqlitecache.Completed
	alreadyApplied bool
	flushed        chan struct{}
}

func (q *writeQueue) startCompleter(ctx context.Context, cache *sqlitecache.Cache) *completer {
	c := &completer{q: q, cache: cache, ctx: ctx, items: make(chan completion, replayRead), done: make(chan struct{})}
	go c.run()
	return c
}

func (c *completer) add(d sqlitecache.Completed, alreadyApplied bool) {
	c.items <- completion{c: d, alreadyApplied: alreadyApplied}
}

// flush waits until every write added so far is removed (or failed).
func (c *completer) flush() error {
	ch := make(chan struct{})
	c.items <- completion{flushed: ch}
	<-ch
	return c.failure()
}

// failure is the error that stopped the completer, if any.
func (c *completer) failure() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

// stop removes what is left and ends the goroutine.
func (c *completer) stop() error {
	close(c.items)
	<-c.done
	return c.failure()
}

func (c *completer) run() {
	defer close(c.done)
	for it := range c.items {
		batch := []completion{it}
		// Whatever else has arrived goes in the same transaction (this is
		// the only receiver, so a non-empty channel will not block).
		for len(batch) < replayRead && len(c.items) > 0 {
			batch = append(batch, <-c.items)
		}
		c.commit(batch)
	}
}

func (c *completer) commit(batch []completion) {
	var done []sqlitecache.Completed
	for _, it := range batch {
		if it.flushed == nil {
			done = append(done, it.c)
		}
	}
	if len(done) > 0 && c.failure() == nil {
		// Not the pass's context: a replay cut short by Close still
		// records what PostgreSQL has already applied.
		removed, err := c.cache.CompleteWrites(context.WithoutCancel(c.ctx), done)
		if err != nil {
			// Applied in PostgreSQL but still queued: the next pass finds
			// their IDs recorded and only removes them.
			err = fmt.Errorf("fallback: replay: %d writes were applied, but removing them from the queue failed: %w", len(done), err)
			c.err.Store(&err)
		}
		i := 0
		for _, it := range batch {
			if it.flushed != nil {
				continue
			}
			if removed[i] {
				c.q.replayed.Add(1)
				if it.alreadyApplied {
					c.q.alreadyApplied.Add(1)
				}
			}
			i++
		}
	}
	for _, it := range batch {
		if it.flushed != nil {
			close(it.flushed)
		}
	}
}

// reportReplayOutage counts a replay that could not reach PostgreSQL as a
// failed call of the breaker. An instance that restarted during an outage
// may send nothing else to PostgreSQL — its reads of pending keys and its
// writes to them go to the queue — so without this its breaker would never
// open, and the prober would never take over recovery.
func (l *Layer) reportReplayOutage() {
	if l.degraded.Load() {
		return // the prober is recovering: it decides
	}
	if call, err := l.cb.Allow(); err == nil {
		call.done(errOutage)
		l.settle()
	}
}

// failed counts a replay pass stopped by err.
func (q *writeQueue) failed(err error) {
	q.failures.Add(1)
	msg := err.Error()
	q.lastErr.Store(&msg)
}

// reject dead-letters a write PostgreSQL rejected, with the writes behind
// it for its key, caches PostgreSQL's row, and tells OnConflict of each.
func (q *writeQueue) reject(ctx context.Context, cache *sqlitecache.Cache, w sqlitecache.QueuedWrite, cause error) ([]sqlitecache.QueuedWrite, error) {
	l := q.l
	current := q.currentRow(ctx, w.Write, cause)
	dead, err := cache.DeadLetter(ctx, w, cause.Error(), current)
	if err != nil {
		if errors.Is(err, repository.ErrNotFound) {
			return nil, nil // another process settled it meanwhile
		}
		return nil, fmt.Errorf("fallback: replay: dead-lettering write %s failed: %w", w.Write.ID, err)
	}
	q.deadLettered.Add(uint64(len(dead)))
	if errors.Is(cause, repository.ErrConflict) {
		q.conflicts.Add(1)
	}
	l.log.Warn("pgfallback: PostgreSQL rejected a queued write; kept as a dead letter",
		"write", w.Write.ID, "op", w.Write.Op, "entity", w.Write.Entity, "key", w.Write.Key(),
		"behind_it", len(dead)-1, "err", cause)
	if l.cfg.OnConflict != nil {
		for i, d := range dead {
			err := cause
			if i > 0 {
				err = fmt.Errorf("behind dead-lettered write %s: %w", w.Write.ID, cause)
			}
			l.cfg.OnConflict(queuedWrite(d), err)
		}
	}
	return dead, nil
}

// currentRow is PostgreSQL's row for a rejected write's key: the one a
// conflict carries, or a fresh read (nothing when the read fails: the
// cache then forgets the key rather than keep the rejected write's state).
func (q *writeQueue) currentRow(ctx context.Context, w repository.Write, cause error) sqlitecache.Row {
	var ce *repository.ConflictError
	if errors.As(cause, &ce) {
		return sqlitecache.Row{Vendor: ce.Vendor, WorkItem: ce.WorkItem}
	}
	if errors.Is(cause, repository.ErrUnreadable) || errors.Is(cause, repository.ErrNotFound) {
		return sqlitecache.Row{}
	}
	pctx, cancel := context.WithTimeout(ctx, q.l.cfg.PrimaryTimeout)
	defer cancel()
	if w.Entity == repository.EntityVendor {
		if v, err := q.l.primary.Vendors().Get(pctx, w.Vendor.Name); err == nil {
			return sqlitecache.Row{Vendor: &v}
		}
		return sqlitecache.Row{}
	}
	if item, err := q.l.primary.WorkItems().Get(pctx, w.WorkItem.ID); err == nil {
		return sqlitecache.Row{WorkItem: &item}
	}
	return sqlitecache.Row{}
}

// replayOnRecovery is the replay run by the prober before the breaker
// closes. It reports false when PostgreSQL failed again (the breaker stays
// open); another failure is logged, and the breaker closes all the same.
func (l *Layer) replayOnRecovery() bool {
	if l.queue == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.WarmTimeout)
	err := l.queue.replay(ctx)
	timedOut := ctx.Err() != nil
	cancel()
	if err == nil || l.ctx.Err() != nil {
		return true
	}
	if timedOut {
		// Not an outage: a long queue. Reads of its keys answer their
		// pending state and writes to them queue behind, so traffic can go
		// back to PostgreSQL while the replayer finishes.
		l.log.Warn("pgfallback: the replay of queued writes outlasted WarmTimeout; closing the breaker, the rest replays in the background",
			"pending", l.queue.pending.Load())
		return true
	}
	switch class, _ := Classify(l.ctx, err); class {
	case Outage:
		l.setState(Open)
		return false
	case ReadOnly:
		// Reads can go back to PostgreSQL; the writes replay once it
		// takes them (reads of their keys answer the pending state).
		l.log.Warn("pgfallback: PostgreSQL is back but takes no writes (read-only or out of disk); closing the breaker, queued writes stay queued and the replay retries",
			"pending", l.queue.pending.Load(), "err", err)
		return true
	}
	l.log.Error("pgfallback: replaying queued writes failed; closing the breaker anyway, the replay retries", "err", err)
	return true
}
