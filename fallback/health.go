package fallback

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Health is what HealthHandler answers, as JSON.
type Health struct {
	// Status: "ok" (PostgreSQL answers), "degraded" (it does not, and reads
	// come from the cache; or it does, but refuses writes, read-only or out
	// of disk space; or the instance has lost part of its protection:
	// Reason), "unavailable" (nothing can be served).
	Status string `json:"status"`
	Ready  bool   `json:"ready"`
	// Reason says why the status is not "ok".
	Reason string `json:"reason,omitempty"`
	// State is the breaker's state: closed, half-open, open.
	State     string `json:"state"`
	CacheOpen bool   `json:"cache_open"`
	// CacheError: why the cache is not open (NewWithCacheFile retries).
	CacheError string `json:"cache_error,omitempty"`
	Feed       struct {
		State string     `json:"state"`
		AsOf  *time.Time `json:"as_of,omitempty"` // every change committed before it is in the cache
		LagMs float64    `json:"lag_ms"`
		// ResyncSince: an unfinished resync began then; entries cached
		// before it are served stale until it is done.
		ResyncSince *time.Time `json:"resync_since,omitempty"`
	} `json:"feed"`
	LastTrip *time.Time `json:"last_trip,omitempty"`
	// LastTripCause: "failures" or "slow calls" (PostgreSQL answered, but
	// slowly); empty if the breaker never opened.
	LastTripCause string `json:"last_trip_cause,omitempty"`
	// ReadOnlySince: PostgreSQL has refused writes since then, read-only or
	// out of disk space (Stats.ReadOnlySince, ReadOnlyCause); absent while
	// it takes them.
	ReadOnlySince *time.Time `json:"read_only_since,omitempty"`
	// WritesStalledSince: PostgreSQL's writes have timed out while it
	// answered other calls since then (Stats.WritesStalledSince); absent
	// while commits go through.
	WritesStalledSince *time.Time `json:"writes_stalled_since,omitempty"`
	// SlowCalls: calls PostgreSQL answered in SlowCallDuration or longer.
	SlowCalls uint64 `json:"slow_calls"`
	// Queue is the durable write queue; absent without one.
	Queue *HealthQueue `json:"queue,omitempty"`
	Stats Stats        `json:"stats"`
}

// HealthQueue is the durable write queue in a Health.
type HealthQueue struct {
	Pending int64 `json:"pending"`
	// OldestAgeSeconds: how long the oldest pending write has waited.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// Stalled: the last replay pass failed with writes pending (LastError).
	Stalled   bool   `json:"stalled"`
	LastError string `json:"last_error,omitempty"`
}

// CheckHealth returns the layer's health. The instance is ready — it
// should receive traffic — whenever it can serve something: PostgreSQL
// answers, or it does not but the cache is open. A database outage must
// not take every instance out of rotation at once, which would turn an
// outage of the database into an outage of the service; a degraded
// instance keeps serving cached reads and saying so. It is not ready only
// when it is closed, or when PostgreSQL is down and it has no cache.
func (l *Layer) CheckHealth() Health {
	s := l.Stats()
	h := Health{State: s.State.String(), CacheOpen: s.CacheOpen, CacheError: s.CacheError, Stats: s,
		LastTripCause: s.LastTripCause, SlowCalls: s.SlowCalls}
	closed := l.closed.Load()
	if l.queue != nil {
		q := &HealthQueue{Pending: s.Queued.Pending, Stalled: s.Queued.Stalled}
		if !s.Queued.OldestPending.IsZero() {
			q.OldestAgeSeconds = max(time.Since(s.Queued.OldestPending), 0).Seconds()
		}
		if q.Stalled {
			q.LastError = s.Queued.LastError
		}
		h.Queue = q
	}
	switch {
	case closed:
		h.Status, h.Reason = "unavailable", "the layer is closed"
	case s.State != Closed && !s.CacheOpen:
		h.Status, h.Reason = "unavailable", "PostgreSQL does not answer and there is no cache to serve from"
	case s.State != Closed:
		h.Status, h.Ready, h.Reason = "degraded", true, "PostgreSQL does not answer; reads come from the cache"
	case !s.CacheOpen:
		// Serving from PostgreSQL, but an outage now would be an outage.
		h.Status, h.Ready, h.Reason = "degraded", true, "the cache is not open, so an outage of PostgreSQL would not be covered: "+s.CacheError
	case !s.ReadOnlySince.IsZero():
		h.Status, h.Ready, h.Reason = "degraded", true,
			"PostgreSQL answers reads but refuses writes ("+refusal(s.ReadOnlyCause, s.ReadOnlyStandby)+"); writes "+l.heldWrites()+" until it takes them"
	case !s.WritesStalledSince.IsZero():
		h.Status, h.Ready, h.Reason = "degraded", true,
			"PostgreSQL answers reads but its writes time out (commits that do not finish, as for a synchronous replica that is gone, or rows locked by another transaction); writes "+l.heldWrites()+" until a commit goes through"
	case s.Queued.Stalled:
		h.Status, h.Ready, h.Reason = "degraded", true, "PostgreSQL answers, but queued writes are not replaying: "+s.Queued.LastError
	case s.Feed.Incomplete:
		h.Status, h.Ready, h.Reason = "degraded", true,
			"the change log is incomplete, so the cache does not follow other writers: "+s.Feed.LastError
	default:
		h.Status, h.Ready = "ok", true
	}
	h.Feed.State = s.Feed.State.String()
	if !s.Feed.AsOf.IsZero() {
		asOf := s.Feed.AsOf
		h.Feed.AsOf = &asOf
		h.Feed.LagMs = float64(s.Feed.Lag) / float64(time.Millisecond)
	}
	if !s.Feed.ResyncSince.IsZero() {
		since := s.Feed.ResyncSince
		h.Feed.ResyncSince = &since
	}
	if !s.LastTrip.IsZero() {
		t := s.LastTrip
		h.LastTrip = &t
	}
	if !s.ReadOnlySince.IsZero() {
		t := s.ReadOnlySince
		h.ReadOnlySince = &t
	}
	if !s.WritesStalledSince.IsZero() {
		t := s.WritesStalledSince
		h.WritesStalledSince = &t
	}
	return h
}

// HealthHandler answers health checks with the layer's Health as JSON:
// 200 while the instance is ready — healthy or degraded — and 503 when it
// can serve nothing (see CheckHealth). Use it for readiness probes and load
// balancer checks. A liveness probe should not use it: a closed layer is a
// process to replace, an outage of the database is not.
func HealthHandler(l *Layer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := l.CheckHealth()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !h.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		if r.Method == http.MethodHead {
			return
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(h)
	})
}

// MarshalText makes states read as words in JSON (and as map keys).
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalText: "closed->open".
func (t Transition) MarshalText() ([]byte, error) {
	return []byte(t.From.String() + "->" + t.To.String()), nil
}

// MarshalText makes the strategy read as a word in JSON.
func (s WarmStrategy) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalText makes the feed's state read as a word in JSON.
func (s FeedState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads what MarshalText wrote, so a client can decode a
// Health.
func (s *State) UnmarshalText(b []byte) error { return parseWord(b, s, Closed, HalfOpen, Open) }

// UnmarshalText reads "closed->open".
func (t *Transition) UnmarshalText(b []byte) error {
	from, to, ok := strings.Cut(string(b), "->")
	if !ok {
		return fmt.Errorf("fallback: transition %q: want from->to", b)
	}
	if err := t.From.UnmarshalText([]byte(from)); err != nil {
		return err
	}
	return t.To.UnmarshalText([]byte(to))
}

// UnmarshalText reads what MarshalText wrote.
func (s *WarmStrategy) UnmarshalText(b []byte) error {
	return parseWord(b, s, WarmCached, WarmAll, WarmNone)
}

// UnmarshalText reads what MarshalText wrote.
func (s *FeedState) UnmarshalText(b []byte) error {
	return parseWord(b, s, FeedOff, FeedStarting, FeedFollowing, FeedBehind, FeedResyncing)
}

func parseWord[T fmt.Stringer](b []byte, dst *T, values ...T) error {
	for _, v := range values {
		if v.String() == string(b) {
			*dst = v
			return nil
		}
	}
	return fmt.Errorf("fallback: unknown %T %q", *dst, b)
}

// heldWrites says what becomes of writes PostgreSQL does not take now.
func (l *Layer) heldWrites() string {
	if l.queue != nil {
		return "fail with ErrUnavailable (or are queued, with WithWriteQueue)"
	}
	return "fail with ErrUnavailable"
}
