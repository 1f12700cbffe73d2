package fallback

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// answeredAt records when PostgreSQL last answered a call of this layer
// (unix nanoseconds). A call that timed out although PostgreSQL answered
// another one after it was sent did not find PostgreSQL out of reach: its
// own statement, or its connection, was stuck (a commit waiting for a
// missing synchronous replica, a lock, one broken connection). It is not
// an outage, and opening the breaker for it would send reads that
// PostgreSQL answers to the cache.
type answeredAt struct{ ns atomic.Int64 }

// mark records an answer at t. It stores at most once a millisecond, so
// that many goroutines answered at once do not all write one cache line.
func (a *answeredAt) mark(t time.Time) {
	if ns := t.UnixNano(); ns > a.ns.Load()+int64(time.Millisecond) {
		a.ns.Store(ns)
	}
}

// since reports whether an answer was recorded after start.
func (a *answeredAt) since(start time.Time) bool { return a.ns.Load() > start.UnixNano() }

// stalledError is a call that timed out while PostgreSQL answered others.
// It unwraps to the timeout, so Classify and errors.Is see what they did.
type stalledError struct{ err error }

func (e *stalledError) Error() string {
	return e.err.Error() + " (PostgreSQL answered other calls meanwhile: not an outage)"
}
func (e *stalledError) Unwrap() error { return e.err }

// ErrWritesStalled is the cause of a write the layer did not send
// because PostgreSQL's writes time out while it answers other calls
// (commits that do not finish; see docs/layer.md, "When commits hang").
// Such a write fails with repository.ErrUnavailable (not written), which
// wraps it, or is queued when the caller asked for the queue.
var ErrWritesStalled = errors.New("writes time out while PostgreSQL answers other calls (commits that do not finish, as for a synchronous replica that is gone, or rows locked by another transaction); not sent until a commit goes through")

// stallWatch remembers whether PostgreSQL's writes time out while it
// answers other calls: from the limit-th such write in a row (the
// breaker's ConsecutiveFailures) until a commit goes through — the
// prober's probe (repository.CommitProber: at once, then every
// OpenTimeout), a write let through every OpenTimeout for a primary that
// cannot probe, or a replay that writes. Meanwhile writes are not sent:
// each would hold a connection for PrimaryTimeout and end with an unknown
// outcome, committed locally and not replicated; they fail as not
// written, or are queued. Reads go on to PostgreSQL, and the breaker,
// which such writes do not count toward, stays closed.
type stallWatch struct {
	limit  uint32
	inARow atomic.Uint32
	since  atomic.Int64 // unix nanoseconds of the start; 0 while writes are sent
	letOne atomic.Bool  // a primary that cannot probe: the next write goes through
	log    *slog.Logger
	mu     sync.Mutex    // orders a run's start and end
	began  chan struct{} // buffered 1: wakes the prober at a run's start
}

// timedOut records a write that timed out while PostgreSQL answered
// others; the limit-th in a row starts a run, which is logged.
func (w *stallWatch) timedOut(err error) {
	if w.inARow.Add(1) < w.limit || w.since.Load() != 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.since.Load() != 0 {
		return
	}
	w.since.Store(time.Now().UnixNano())
	select {
	case w.began <- struct{}{}:
	default:
	}
	w.log.Warn("pgfallback: writes time out while PostgreSQL answers other calls (commits that do not finish, as for a synchronous replica that is gone, or rows locked by another transaction); "+
		"reads still go to it, writes fail with ErrUnavailable or are queued until a commit goes through",
		"in_a_row", w.inARow.Load(), "cause", err)
}

// committed records a write or a probe that committed: a run ends.
func (w *stallWatch) committed(how string) {
	if w.inARow.Load() != 0 {
		w.inARow.Store(0)
	}
	if w.since.Load() == 0 {
		return // the healthy path: two atomic loads
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if ns := w.since.Swap(0); ns != 0 {
		w.letOne.Store(false)
		w.log.Info("pgfallback: commits go through again; writes are sent", "stalled_for",
			time.Since(time.Unix(0, ns)).Round(time.Millisecond), "seen", how)
	}
}

// holds reports whether a write must not be sent now. For a primary that
// cannot probe, the prober lets one through every OpenTimeout: the first
// caller to find it takes it.
func (w *stallWatch) holds() bool {
	if w.since.Load() == 0 {
		return false
	}
	return !w.letOne.CompareAndSwap(true, false)
}

// state is when the current run began; zero when none is under way.
func (w *stallWatch) state() time.Time {
	if ns := w.since.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}
