package fallback

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// readOnlyWatch remembers whether PostgreSQL refuses writes (Classify's
// ReadOnly): from the first write it refused as read-only until it next
// applies one, a call's or the replayer's. It is what a write's outcome
// says, not a poll: a service that stops writing keeps the last answer
// it got.
//
// It is kept apart from the breaker on purpose. A read-only server
// answers reads, so opening the breaker for it (as before this existed)
// served every read from the cache, failed every key the cache lacked,
// and with queued writes pending kept the breaker open for the whole
// window — hours, for a provider's guard against a full disk.
type readOnlyWatch struct {
	since atomic.Int64 // unix nanoseconds of the first refusal; 0 while writes are taken
	log   *slog.Logger
}

// refused records a write PostgreSQL refused as read-only; the first of a
// run is logged.
func (w *readOnlyWatch) refused(err error) {
	if w.since.CompareAndSwap(0, time.Now().UnixNano()) {
		w.log.Warn("pgfallback: PostgreSQL refuses writes (read-only); reads still go to it, writes fail with ErrUnavailable or are queued until it takes them",
			"cause", err)
	}
}

// accepted records a write PostgreSQL applied.
func (w *readOnlyWatch) accepted() {
	if w.since.Load() == 0 {
		return // the healthy path: one atomic load
	}
	if ns := w.since.Swap(0); ns != 0 {
		w.log.Info("pgfallback: PostgreSQL takes writes again", "read_only_for", time.Since(time.Unix(0, ns)).Round(time.Millisecond))
	}
}

// sinceTime is when the current run of refusals began; zero when none is.
func (w *readOnlyWatch) sinceTime() time.Time {
	if ns := w.since.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}
