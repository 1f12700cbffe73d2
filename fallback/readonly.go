package fallback

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// readOnlyWatch remembers whether PostgreSQL refuses writes (Classify's
// ReadOnly: read-only, or out of disk space): from the first write it
// refused so until it next applies one, a call's or the replayer's, or,
// for a read-only server, until the prober's check finds that it takes
// writes again (checkWrites: a service that has stopped writing would
// otherwise report the window for as long as it writes nothing). No check
// can tell that a disk has room again without writing: that run ends at
// the next write applied.
//
// It is kept apart from the breaker on purpose. Such a server answers
// reads, so opening the breaker for it (as before this existed, for
// 25006) served every read from the cache, failed every key the cache
// lacked, and with queued writes pending kept the breaker open for the
// whole window — hours, for a provider's guard against a full disk.
type readOnlyWatch struct {
	since atomic.Int64 // unix nanoseconds of the first refusal; 0 while writes are taken
	log   *slog.Logger

	mu      sync.Mutex  // orders a run's start and end, and guards cause and standby
	cause   FailureKind // the first refusal's: FailReadOnly or FailDiskFull
	standby bool        // the check found the server in recovery

	began chan struct{} // buffered 1: wakes the prober at a run's start
}

// refused records a write PostgreSQL refused (kind FailReadOnly or
// FailDiskFull); the first of a run is logged.
func (w *readOnlyWatch) refused(err error, kind FailureKind) {
	if w.since.Load() != 0 {
		return // a run under way: one atomic load per refusal
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.since.Load() != 0 {
		return
	}
	w.cause = kind
	w.since.Store(time.Now().UnixNano())
	select {
	case w.began <- struct{}{}:
	default:
	}
	w.log.Warn("pgfallback: PostgreSQL refuses writes ("+refusal(kind, false)+"); reads still go to it, writes fail with ErrUnavailable or are queued until it takes them",
		"cause", err)
}

// accepted records a write PostgreSQL applied.
func (w *readOnlyWatch) accepted() {
	if w.since.Load() == 0 {
		return // the healthy path: one atomic load
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if ns := w.since.Swap(0); ns != 0 {
		w.end(ns, "a write was applied")
	}
}

// end logs the end of the run begun at ns and forgets it; w.mu is held.
func (w *readOnlyWatch) end(ns int64, how string) {
	w.log.Info("pgfallback: PostgreSQL takes writes again", "refused_for", time.Since(time.Unix(0, ns)).Round(time.Millisecond),
		"cause", w.refusalLocked(), "seen", how)
	w.cause, w.standby = "", false
}

// checkable reports the start of a run that a check can end (a read-only
// server's; not a full disk's), 0 if none.
func (w *readOnlyWatch) checkable() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cause != FailReadOnly {
		return 0
	}
	return w.since.Load()
}

// checked records what a check begun during the run that started at ns
// found: the run ends if the server takes writes, and a standby is named
// once. A check that raced with the run's end (and a new run's start)
// changes nothing: it may predate either.
func (w *readOnlyWatch) checked(ns int64, takes, standby bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ns == 0 || w.since.Load() != ns {
		return
	}
	switch {
	case takes:
		w.since.Store(0)
		w.end(ns, "checked")
	case standby && !w.standby:
		w.standby = true
		w.log.Warn("pgfallback: PostgreSQL is a standby (in recovery): the connection string reaches a replica, " +
			"whose reads may lag the primary's writes and which takes no writes until promoted; point it at the primary " +
			"(on a multi-host connection string, target_session_attrs=primary)")
	}
}

// state is when the current run of refusals began and its cause; zero and
// "" when none is under way.
func (w *readOnlyWatch) state() (since time.Time, cause FailureKind, standby bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ns := w.since.Load(); ns != 0 {
		return time.Unix(0, ns), w.cause, w.standby
	}
	return time.Time{}, "", false
}

// refusalLocked is the run's refusal for the log; w.mu is held.
func (w *readOnlyWatch) refusalLocked() string { return refusal(w.cause, w.standby) }

// refusal says why PostgreSQL refuses writes, for logs and the health
// check: cause is the first refusal's kind, standby what the check found.
func refusal(cause FailureKind, standby bool) string {
	switch {
	case standby:
		return "read-only: a standby"
	case cause == FailDiskFull:
		return "out of disk space"
	}
	return "read-only"
}
