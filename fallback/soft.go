package fallback

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Soft timeouts: a read that PostgreSQL has not answered within
// Config.SoftTimeout is answered from the cache when the cache can answer
// it by the rules of an outage, and its call goes on in the background, up
// to PrimaryTimeout: its answer is written through and counts toward the
// breaker like any other. Most incidents are slowdowns (lock waits, a
// saturated disk, a failover in progress), not outages: without this, every
// read waits for the slow database even though the cache holds the answer.

// background owns the primary calls that outlive their reads. Close waits
// for them; they end at the latest at PrimaryTimeout, or when the layer's
// context is canceled.
type background struct {
	mu        sync.Mutex
	closed    bool
	wg        sync.WaitGroup
	abandoned atomic.Int64 // calls whose reads were answered early, still running
	peak      atomic.Int64 // the most abandoned at once
}

// start registers a background call; false once the layer is closing.
func (b *background) start() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	return true
}

func (b *background) wait() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
}

// abandon takes one of max places for a call left running in the
// background, and reports whether there was one.
func (b *background) abandon(max int64) bool {
	for {
		n := b.abandoned.Load()
		if n >= max {
			return false
		}
		if b.abandoned.CompareAndSwap(n, n+1) {
			for p := b.peak.Load(); n+1 > p && !b.peak.CompareAndSwap(p, n+1); p = b.peak.Load() {
			}
			return true
		}
	}
}

// Call states, for the race between the read's soft timeout and the
// call's answer.
const (
	callRunning   int32 = iota
	callAbandoned       // answered from the cache; the call runs on
	callDropped         // answered from the cache; the call was canceled
	callDelivered       // the call answered the read
)

type callResult[T any] struct {
	res      T
	err      error
	answered bool
}

// softAttempt is attempt with the soft timeout. fromCache tries to answer
// the read from the cache: it records the Origin and reports true when it
// did. settle applies an answer of the primary to the cache (write-through,
// eviction) when it arrives after the read was answered early; for an
// answer in time the caller does that itself, as after attempt. early
// reports that res came from the cache.
func softAttempt[T any](l *Layer, ctx context.Context, call func(context.Context) (T, error),
	fromCache func(context.Context) (T, bool), settle func(T, error)) (res T, err error, answered, early bool) {
	// Callers come here only with a soft timeout set (see vendorRepo.Get).
	if l.degraded.Load() || l.closed.Load() {
		res, err, answered = attempt(l, ctx, call)
		return res, err, answered, false
	}
	if l.bg.abandoned.Load() >= int64(l.cfg.MaxAbandonedCalls) {
		// PostgreSQL is already slow for as many calls as we let run
		// unwatched: a cached key is answered at once, with no new call.
		if v, ok := slowFromCache(l, ctx, fromCache); ok {
			return v, nil, true, true
		}
		res, err, answered = attempt(l, ctx, call)
		return res, err, answered, false
	}
	if !l.bg.start() {
		res, err, answered = attempt(l, ctx, call)
		return res, err, answered, false
	}
	// The call outlives the caller's context only once abandoned: until
	// then the caller's cancellation (and always the layer's close)
	// cancels it.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopCaller := context.AfterFunc(ctx, cancel)
	stopLayer := context.AfterFunc(l.ctx, cancel)
	var state atomic.Int32
	done := make(chan callResult[T], 1)
	go func() {
		defer l.bg.wg.Done()
		defer cancel()
		defer stopLayer()
		r, e, a := attempt(l, cctx, call)
		if state.CompareAndSwap(callRunning, callDelivered) {
			done <- callResult[T]{r, e, a}
			return
		}
		if state.Load() == callDropped {
			return
		}
		// Abandoned: the read was answered from the cache.
		if a {
			settle(r, e)
		}
		l.bg.abandoned.Add(-1)
	}()
	t := time.NewTimer(l.cfg.SoftTimeout)
	defer t.Stop()
	select {
	case r := <-done:
		stopCaller()
		return r.res, r.err, r.answered, false
	case <-t.C:
	}
	if v, ok := slowFromCache(l, ctx, fromCache); ok {
		if l.bg.abandon(int64(l.cfg.MaxAbandonedCalls)) {
			if state.CompareAndSwap(callRunning, callAbandoned) {
				stopCaller()
				return v, nil, true, true
			}
			l.bg.abandoned.Add(-1) // the answer came in meanwhile: it wins
		} else if state.CompareAndSwap(callRunning, callDropped) {
			// As many calls run unwatched as we allow: this one is
			// canceled rather than left running (a canceled call does not
			// count toward the breaker).
			cancel()
			stopCaller()
			return v, nil, true, true
		}
	}
	r := <-done // keeps waiting, up to PrimaryTimeout or the caller's end
	stopCaller()
	return r.res, r.err, r.answered, false
}

// slowFromCache answers from the cache because PostgreSQL is slow, and
// says so in the Origin.
func slowFromCache[T any](l *Layer, ctx context.Context, fromCache func(context.Context) (T, bool)) (T, bool) {
	v, ok := fromCache(ctx)
	if ok {
		l.stats.servedSlow.Add(1)
		provenanceFrom(ctx).markSlow()
	}
	return v, ok
}
