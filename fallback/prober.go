package fallback

import (
	"context"
	"errors"
	"strings"
	"time"
)

// probe owns recovery. It sleeps until the breaker trips, then pings the
// primary every OpenTimeout — user requests are never spent as probes — and
// when a ping succeeds, warms the cache and closes the breaker. While
// PostgreSQL refuses writes as read-only, or its writes time out while it
// answers other calls, it also checks, at once and then every
// OpenTimeout, whether it takes them again (checkWrites, checkCommits).
func (l *Layer) probe() {
	var recheck *time.Timer
	defer func() {
		if recheck != nil {
			recheck.Stop()
		}
	}()
	for {
		var due <-chan time.Time
		if recheck != nil {
			due = recheck.C
		}
		select {
		case <-l.ctx.Done():
			return
		case <-l.tripped:
			l.settle() // the trip is recorded before recovery begins
			l.recoverLoop()
		case <-l.readOnly.began:
			l.checkWrites()
		case <-l.stall.began:
			// At once: when only some rows are stuck (a lock held by
			// another transaction), commits go through and writes are
			// sent again after one probe.
			l.checkCommits()
		case <-due:
			recheck = nil
			l.checkWrites()
			l.checkCommits()
		}
		if recheck == nil && (l.writeChecker != nil && l.readOnly.checkable() != 0 || l.stall.since.Load() != 0) {
			recheck = time.NewTimer(l.cfg.OpenTimeout)
		}
	}
}

// checkWrites asks a primary that refuses writes as read-only whether it
// takes them now, so that the window ends without waiting for a write (a
// service that stopped writing would report it for as long as it writes
// nothing) and a standby is named. A failed check changes nothing: an
// outage is the calls' to report, and the next check comes.
func (l *Layer) checkWrites() {
	ns := l.readOnly.checkable()
	if l.writeChecker == nil || ns == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.ProbeTimeout)
	defer cancel()
	takes, standby, err := l.writeChecker.TakesWrites(ctx)
	if err != nil {
		l.log.Debug("pgfallback: could not check whether PostgreSQL takes writes", "err", err)
		return
	}
	l.readOnly.checked(ns, takes, standby)
}

// checkCommits ends a run of writes that timed out while PostgreSQL
// answered other calls once a commit goes through: the primary's probe
// (repository.CommitProber), given PrimaryTimeout as a write is; or, for
// a primary that cannot probe, the next write, let through.
func (l *Layer) checkCommits() {
	if l.stall.since.Load() == 0 {
		return
	}
	if l.commitProber == nil {
		l.stall.letOne.Store(true)
		return
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.PrimaryTimeout)
	defer cancel()
	if err := l.commitProber.ProbeCommit(ctx); err != nil {
		l.log.Debug("pgfallback: a commit probe did not go through", "err", err)
		return
	}
	l.stall.committed("probed")
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
// closed afterwards. Once closed, it logs what the recovery did: how the
// cache was brought up to date (catch-up, resync, warm) and how many
// queued writes were replayed.
func (l *Layer) tryRecover() bool {
	if err := l.ping(); err != nil {
		return false
	}
	l.setState(HalfOpen)
	how := "none"
	if l.cfg.Warm != WarmNone || l.feed != nil {
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.WarmTimeout)
		var err error
		how, err = l.recoverCache(ctx)
		outlasted := ctx.Err() != nil
		cancel()
		if err != nil {
			if l.ctx.Err() != nil {
				return true // closing
			}
			if class, kind := Classify(l.ctx, err); class == Outage && !outlasted {
				l.stats.failure(kind)
				l.lastErr.Store(&err)
				l.setState(Open)
				return false
			}
			// The primary is up but the cache could not take everything:
			// traffic goes back to PostgreSQL all the same. So when the
			// work outlasted WarmTimeout (a large resync, a slow server):
			// an outage would keep the breaker open while PostgreSQL
			// answers; the closing ping below tells if it is one. The
			// follower goes on with a catch-up or resync where it stopped.
			if outlasted {
				l.log.Warn("pgfallback: the "+how+" of the cache outlasted WarmTimeout; closing the breaker, it goes on in the background",
					"warm_timeout", l.cfg.WarmTimeout, "err", err)
				how += " (unfinished)"
			} else {
				l.log.Error("pgfallback: the "+how+" of the cache failed; closing the breaker anyway", "err", err)
				how += " (failed)"
			}
		}
	}
	var replayed, deadLettered uint64
	if q := l.queue; q != nil {
		replayed, deadLettered = q.replayed.Load(), q.deadLettered.Load()
	}
	if !l.replayOnRecovery() {
		return false
	}
	if q := l.queue; q != nil {
		// The replayer waits while degraded: what the counters moved by
		// since is this recovery's replay.
		replayed, deadLettered = q.replayed.Load()-replayed, q.deadLettered.Load()-deadLettered
	}
	// The breaker's own open timeout equals OpenTimeout, which has passed
	// since the trip, so it is half-open and admits this one closing ping.
	call, err := l.cb.Allow()
	if err != nil {
		l.setState(Open)
		return false
	}
	err = l.ping()
	if err != nil {
		if errors.Is(err, errSlow) {
			call.done(errSlow) // back to open
		} else {
			call.done(errOutage) // back to open
		}
		l.settle()
		l.setState(Open)
		return false
	}
	call.done(nil) // closes the breaker; onBreakerChange clears degraded
	l.settle()
	args := []any{"cache", how}
	if q := l.queue; q != nil {
		args = append(args, "replayed", replayed, "dead_lettered", deadLettered, "still_pending", q.pending.Load())
	}
	l.log.Info("pgfallback: PostgreSQL recovered, breaker closed", args...)
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
	if err == nil {
		l.answered.mark(start.Add(took))
	}
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

// recoveryPlan says what tryRecover does before the breaker closes, in
// the README's words, for the log.
func (l *Layer) recoveryPlan() string {
	var steps []string
	switch {
	case l.feed != nil:
		steps = append(steps, "catch-up of the cache")
	case l.cfg.Warm != WarmNone:
		steps = append(steps, "warm of the cache")
	}
	if l.queue != nil {
		steps = append(steps, "replay of queued writes")
	}
	return strings.Join(append(steps, "the breaker closes"), ", then ")
}

// recoverCache brings the cache up to date before the breaker closes: a
// catch-up of the change log from the cache's cursor when the feed runs —
// O(changes) — or the configured warm — O(cached keys) — when it does not
// or cannot (never caught up yet). It says which, for the log: "catch-up",
// "resync" (the catch-up found the cursor expired and warmed the whole
// cache), "warm" or "none".
func (l *Layer) recoverCache(ctx context.Context) (how string, err error) {
	if f := l.feed; f != nil {
		resyncs := f.resyncs.Load()
		if ok, err := f.recover(ctx); ok {
			if f.resyncs.Load() != resyncs || !f.resyncStart().IsZero() {
				return "resync", err
			}
			return "catch-up", err
		}
	}
	if l.cfg.Warm == WarmNone {
		return "none", nil
	}
	_, err = l.Warm(ctx)
	return "warm", err
}
