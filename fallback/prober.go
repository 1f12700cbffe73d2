package fallback

import (
	"context"
	"errors"
	"time"
)

// probe owns recovery. It sleeps until the breaker trips, then pings the
// primary every OpenTimeout — user requests are never spent as probes — and
// when a ping succeeds, warms the cache and closes the breaker.
func (l *Layer) probe() {
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.tripped:
		}
		l.settle() // the trip is recorded before recovery begins
		l.recoverLoop()
	}
}

func (l *Layer) recoverLoop() {
	t := time.NewTimer(l.cfg.OpenTimeout)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		if l.tryRecover() {
			return
		}
		t.Reset(l.cfg.OpenTimeout)
	}
}

// tryRecover makes one recovery attempt and reports whether the breaker is
// closed afterwards.
func (l *Layer) tryRecover() bool {
	if err := l.ping(); err != nil {
		return false
	}
	l.setState(HalfOpen)
	if l.cfg.Warm != WarmNone || l.feed != nil {
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.WarmTimeout)
		err := l.recoverCache(ctx)
		cancel()
		if err != nil {
			if l.ctx.Err() != nil {
				return true // closing
			}
			if class, kind := Classify(l.ctx, err); class == Outage {
				l.stats.failure(kind)
				l.lastErr.Store(&err)
				l.setState(Open)
				return false
			}
			// The primary is up but the cache could not take everything:
			// traffic goes back to PostgreSQL all the same.
			l.log.Error("pgfallback: warming the cache failed; closing the breaker anyway", "err", err)
		}
	}
	if !l.replayOnRecovery() {
		return false
	}
	// The breaker's own open timeout equals OpenTimeout, which has passed
	// since the trip, so it is half-open and admits this one closing ping.
	done, err := l.cb.Allow()
	if err != nil {
		l.setState(Open)
		return false
	}
	err = l.ping()
	if err != nil {
		if errors.Is(err, errSlow) {
			done(errSlow) // back to open
		} else {
			done(errOutage) // back to open
		}
		l.settle()
		l.setState(Open)
		return false
	}
	done(nil) // closes the breaker; onBreakerChange clears degraded
	l.settle()
	return true
}

// ping pings the primary within ProbeTimeout. A ping answered in
// SlowCallDuration or longer fails with a *slowError (errors.Is errSlow):
// PostgreSQL is up but slow, and the breaker stays open (unless
// SlowCallRate < 0).
func (l *Layer) ping() error {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.ProbeTimeout)
	defer cancel()
	l.stats.probeCalls.Add(1)
	start := time.Now()
	err := l.primary.Ping(ctx)
	took := time.Since(start)
	if err != nil && l.ctx.Err() == nil {
		_, kind := Classify(l.ctx, err)
		l.stats.failure(kind)
		l.lastErr.Store(&err)
	}
	if err == nil && l.slowCall(took) {
		err = &slowError{took: took, d: l.cfg.SlowCallDuration}
		l.lastErr.Store(&err)
		if !l.cb.slowPingLogged.Swap(true) {
			l.log.Warn("pgfallback: PostgreSQL answers, but slowly: the breaker stays open", "cause", err,
				"slow_call_duration", l.cfg.SlowCallDuration)
		}
	}
	return err
}

// recoverCache brings the cache up to date before the breaker closes: a
// catch-up of the change log from the cache's cursor when the feed runs —
// O(changes) — or the configured warm — O(cached keys) — when it does not
// or cannot (never caught up yet).
func (l *Layer) recoverCache(ctx context.Context) error {
	if l.feed != nil {
		if ok, err := l.feed.recover(ctx); ok {
			return err
		}
	}
	if l.cfg.Warm == WarmNone {
		return nil
	}
	_, err := l.Warm(ctx)
	return err
}
