package fallback

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// readOnlyWatch remembers whether PostgreSQL refuses writes (Classify's
// ReadOnly: read-only, or out of disk space): from the first write it
// refused so until it next applies one, a call's or the replayer's. It
// is what a write's outcome says, not a poll: a service that stops
// writing keeps the last answer it got.
//
// It is kept apart from the breaker on purpose. Such a server answers
// reads, so opening the breaker for it (as before this existed, for
// 25006) served every read from the cache, failed every key the cache
// lacked, and with queued writes pending kept the breaker open for the
// whole window — hours, for a provider's guard against a full disk.
type readOnlyWatch struct {
	since atomic.Int64 // unix nanoseconds of the first refusal; 0 while writes are taken
	log   *slog.Logger

	mu    sync.Mutex  // orders a run's start and end, and guards cause
	cause FailureKind // the first refusal's: FailReadOnly or FailDiskFull
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
	w.log.Warn("pgfallback: PostgreSQL refuses writes ("+kind.refusal()+"); reads still go to it, writes fail with ErrUnavailable or are queued until it takes them",
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
		w.log.Info("pgfallback: PostgreSQL takes writes again", "refused_for", time.Since(time.Unix(0, ns)).Round(time.Millisecond),
			"cause", w.cause.refusal())
		w.cause = ""
	}
}

// state is when the current run of refusals began and its cause; zero and
// "" when none is under way.
func (w *readOnlyWatch) state() (time.Time, FailureKind) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ns := w.since.Load(); ns != 0 {
		return time.Unix(0, ns), w.cause
	}
	return time.Time{}, ""
}

// refusal says why PostgreSQL refused a write, for logs and the health
// check.
func (k FailureKind) refusal() string {
	if k == FailDiskFull {
		return "out of disk space"
	}
	return "read-only"
}
