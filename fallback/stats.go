package fallback

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of the layer's counters since New.
//
// As JSON (it is the "stats" of HealthHandler's document) every key is
// snake_case, like the rest of that document. Times are RFC 3339, the
// zero time ("0001-01-01T00:00:00Z") meaning never. Durations are integer
// nanoseconds — time.Duration's own encoding — in keys that end in _ns
// (feed.lag_ns, last_warm.duration_ns), so a reader never has to guess
// the unit; a Go client decodes them back into time.Duration.
type Stats struct {
	State State `json:"state"`

	// The cache, for a Layer made by NewWithCacheFile: whether it is open, and if not
	// the last error opening it and how often that was tried. A Layer
	// without its cache serves from PostgreSQL alone.
	CacheOpen         bool   `json:"cache_open"`
	CacheError        string `json:"cache_error"`
	CacheOpenAttempts uint64 `json:"cache_open_attempts"`

	PrimaryCalls    uint64                 `json:"primary_calls"`    // calls sent to the primary
	PrimaryFailures map[FailureKind]uint64 `json:"primary_failures"` // outage failures by kind, and calls refused as read_only or disk_full
	// SlowCalls: calls to the primary (among PrimaryCalls) answered, but in
	// SlowCallDuration or longer. Counted even when SlowCallRate < 0.
	SlowCalls uint64 `json:"slow_calls"`

	ServedFresh   uint64 `json:"served_fresh"`   // reads served from the cache within TTL
	ServedStale   uint64 `json:"served_stale"`   // reads served from the cache past TTL, within StaleIfError
	ServedPartial uint64 `json:"served_partial"` // Lists served from the cache (partial by nature)
	// Soft timeouts (Config.SoftTimeout): reads answered from the cache
	// because PostgreSQL was slow (counted in ServedFresh or ServedStale
	// too), and the primary calls still running after their reads were
	// answered, now and at most at once (never above MaxAbandonedCalls).
	ServedSlow        uint64 `json:"served_slow"`
	AbandonedCalls    int64  `json:"abandoned_calls"`
	AbandonedPeak     int64  `json:"abandoned_peak"`
	Unavailable       uint64 `json:"unavailable"`         // calls that returned ErrUnavailable or ErrOutcomeUnknown
	RejectedWhileOpen uint64 `json:"rejected_while_open"` // calls that did not reach the primary because the breaker was open
	// StalledTimeouts: calls that timed out although PostgreSQL answered
	// another call after they were sent (counted under "timeout" in
	// PrimaryFailures too): their statement or connection was stuck, and
	// the breaker does not count them. WritesStalledSince: writes have
	// timed out so, ConsecutiveFailures in a row, since then (commits
	// that do not finish: a synchronous replica missing), and no commit
	// has gone through since; zero while they do. WritesHeld: writes not
	// sent meanwhile (ErrUnavailable, or queued).
	StalledTimeouts    uint64    `json:"stalled_timeouts"`
	WritesStalledSince time.Time `json:"writes_stalled_since"`
	WritesHeld         uint64    `json:"writes_held"`

	WriteQueued  uint64 `json:"write_queued"`  // cache updates queued by the write-through
	WriteWritten uint64 `json:"write_written"` // cache updates applied
	WriteDropped uint64 `json:"write_dropped"` // cache updates dropped: queue full, the cache failed a set, or the close deadline passed
	WriteFailed  uint64 `json:"write_failed"`  // cache updates the cache refused (a set is then dropped, an eviction retried)
	// Evictions and moves never wait nor are dropped when the queue is
	// full: they overflow into a list applied in order after it.
	WriteOverflowed uint64 `json:"write_overflowed"`
	WriteQueueDepth int    `json:"write_queue_depth"` // updates waiting now: the queue plus the overflow list
	DroppedAtClose  uint64 `json:"dropped_at_close"`  // updates still queued when Close's deadline passed (counted in WriteDropped too)
	EvictionsLost   uint64 `json:"evictions_lost"`    // of those, evictions and moves: the cache may hold rows PostgreSQL deleted until a warm

	Transitions      uint64                `json:"transitions"`       // state changes
	TransitionCounts map[Transition]uint64 `json:"transition_counts"` // state changes by kind ("closed->open")
	LastTrip         time.Time             `json:"last_trip"`         // when the breaker last opened; zero if never
	// LastTripCause: why it last opened: TripFailures (outage failures) or
	// TripSlowCalls (PostgreSQL answered, but slowly); empty if never.
	LastTripCause string `json:"last_trip_cause"`
	// ReadOnlySince: PostgreSQL has refused writes since then, a call's or
	// the replayer's, and applied none since; zero while it takes them.
	// ReadOnlyCause says why the first was refused: FailReadOnly (SQLSTATE
	// 25006, a read-only server) or FailDiskFull (53100, out of disk
	// space); empty when none. Not an outage: the breaker stays closed and
	// reads go to PostgreSQL. It clears at the first write applied after
	// the server takes writes again, or, for a read-only server, when the
	// prober's check (every OpenTimeout, with a primary that implements
	// repository.WriteChecker, as *pgstore.Store does) finds that it takes
	// them. A full disk is seen only by a write. Such refusals count in
	// PrimaryFailures under their kind.
	ReadOnlySince time.Time   `json:"read_only_since"`
	ReadOnlyCause FailureKind `json:"read_only_cause"`
	// ReadOnlyStandby: the check found PostgreSQL in recovery: the
	// connection string reaches a standby, whose reads may lag the
	// primary's writes (point it at the primary: target_session_attrs=primary).
	ReadOnlyStandby bool `json:"read_only_standby"`

	WarmRuns   uint64     `json:"warm_runs"`
	LastWarm   WarmReport `json:"last_warm"`
	ProbeCalls uint64     `json:"probe_calls"` // pings sent by the prober

	Feed FeedStats `json:"feed"` // the change feed; State FeedOff when there is none

	Queued QueuedStats `json:"queued"` // the durable write queue (WithWriteQueue)
}

// QueuedStats counts the durable write queue's work since New.
type QueuedStats struct {
	Pending        int64  `json:"pending"`         // writes pending, as last counted by this layer
	Queued         uint64 `json:"queued"`          // writes queued
	Replayed       uint64 `json:"replayed"`        // writes applied at replay (AlreadyApplied among them)
	AlreadyApplied uint64 `json:"already_applied"` // replays that found the write applied before (a crash or lost reply)
	DeadLettered   uint64 `json:"dead_lettered"`   // writes that became dead letters (rejected, or behind a rejected one)
	Conflicts      uint64 `json:"conflicts"`       // of the rejections, version conflicts
	ReplayFailures uint64 `json:"replay_failures"` // replays stopped by a transient failure
	// ReplayTimedOut: writes handed to PostgreSQL in a replay batch that
	// outlasted PrimaryTimeout (a slow server, a locked row). Smaller
	// batches replay them again: the batch was rolled back, or its commit
	// landed as the deadline passed, and then they count as AlreadyApplied.
	ReplayTimedOut uint64 `json:"replay_timed_out"`
	Full           uint64 `json:"full"`       // writes refused because MaxQueuedWrites were pending
	Pruned         uint64 `json:"pruned"`     // records of applied writes this instance pruned in PostgreSQL
	LastError      string `json:"last_error"` // what stopped the last replay pass that failed
	// OldestPending is when the oldest pending write was queued, as last
	// counted (zero: none).
	OldestPending time.Time `json:"oldest_pending"`
	// Stalled: writes are pending and the last replay pass stopped on a
	// failure (LastError); it retries, backing off up to OpenTimeout. While
	// the breaker is open that is the outage; while it is closed,
	// PostgreSQL answers yet the queue does not drain: look at LastError.
	Stalled bool `json:"stalled"`
}

// FeedStats describes the change feed.
type FeedStats struct {
	State FeedState `json:"state"`
	// AsOf: the cache reflects every change committed before it, in this
	// host's clock (not the database's; docs/feed.md); zero until the first
	// catch-up, and after the cursor expired until the resync is done.
	AsOf time.Time `json:"as_of"`
	// Lag: how long ago AsOf was; 0 when AsOf is zero. In JSON, integer
	// nanoseconds.
	Lag time.Duration `json:"lag_ns"`
	// ResyncSince: a resync (the cursor expired) under way since then, or
	// recorded in the cache file as unfinished; zero when none is. Entries
	// cached before it are served stale until it is done.
	ResyncSince time.Time `json:"resync_since"`
	// Mirror: the cache holds every row (WarmAll), kept complete by the feed.
	Mirror         bool   `json:"mirror"`
	ChangesApplied uint64 `json:"changes_applied"` // changes read from the log and applied
	CatchUps       uint64 `json:"catch_ups"`       // reads of the log until caught up
	// HeardCatchUps of them were answered by what the waker's notification
	// carried, without a read of the log (pgstore's broadcasts).
	HeardCatchUps uint64 `json:"heard_catch_ups"`
	// RowsHeard: changed keys whose rows the waker's notification carried,
	// applied without a read of the key.
	RowsHeard uint64 `json:"rows_heard"`
	Resyncs   uint64 `json:"resyncs"` // full warms: no cursor yet, or it expired
	Errors    uint64 `json:"errors"`  // catch-ups that failed (logged at most once a minute)
	LastError string `json:"last_error"`
	// Incomplete: the primary says its change log cannot be trusted to
	// hold every change (repository.ErrChangeLogIncomplete: a trigger
	// disabled or dropped); LastError names it and the statement that
	// repairs it. Until then the cache does not follow other writers.
	Incomplete bool   `json:"incomplete"`
	Pruned     uint64 `json:"pruned"` // log entries this instance pruned
	// ListenerRefused: why the feed's listener does not listen where it is
	// pointed, in a word (pgstore: "pooler", "other_database",
	// "other_installation", or "cannot_connect" while the server turns it
	// away and the pool's connections answer; docs/poolers.md, feed.md);
	// "" when it listens.
	// Meanwhile the follower reads the log about once a second instead of
	// at each commit. The log says more, once.
	ListenerRefused string `json:"listener_refused,omitempty"`
}

// Transition is a change of the layer's state.
type Transition struct{ From, To State }

type counters struct {
	primaryCalls, servedFresh, servedStale, servedPartial, unavailable, rejected atomic.Uint64
	writeQueued, writeWritten, writeDropped, writeFailed                         atomic.Uint64
	writeOverflowed, droppedAtClose, evictionsLost                               atomic.Uint64
	transitions, warmRuns, probeCalls                                            atomic.Uint64
	servedSlow, stalledTimeouts, writesHeld                                      atomic.Uint64

	slowCalls atomic.Uint64

	mu            sync.Mutex
	failures      map[FailureKind]uint64
	byTransition  map[Transition]uint64
	lastTrip      time.Time
	lastTripCause string
	lastWarm      WarmReport
}

func (c *counters) failure(kind FailureKind) {
	c.mu.Lock()
	if c.failures == nil {
		c.failures = make(map[FailureKind]uint64)
	}
	c.failures[kind]++
	c.mu.Unlock()
}

// transition counts t; c.mu must be held (setState holds it while the
// state changes).
func (c *counters) transition(t Transition) {
	c.transitions.Add(1)
	if c.byTransition == nil {
		c.byTransition = make(map[Transition]uint64)
	}
	c.byTransition[t]++
}

// snapshot reads the counters, and the breaker's state together with why
// it last opened (setState changes both under c.mu).
func (c *counters) snapshot(state *atomic.Int32) Stats {
	s := Stats{
		PrimaryCalls: c.primaryCalls.Load(), ServedFresh: c.servedFresh.Load(), ServedStale: c.servedStale.Load(), ServedPartial: c.servedPartial.Load(),
		Unavailable: c.unavailable.Load(), RejectedWhileOpen: c.rejected.Load(),
		WriteQueued: c.writeQueued.Load(), WriteWritten: c.writeWritten.Load(),
		WriteDropped: c.writeDropped.Load(), WriteFailed: c.writeFailed.Load(),
		WriteOverflowed: c.writeOverflowed.Load(), DroppedAtClose: c.droppedAtClose.Load(), EvictionsLost: c.evictionsLost.Load(),
		WarmRuns: c.warmRuns.Load(), ProbeCalls: c.probeCalls.Load(),
		PrimaryFailures: map[FailureKind]uint64{}, ServedSlow: c.servedSlow.Load(),
		StalledTimeouts: c.stalledTimeouts.Load(), WritesHeld: c.writesHeld.Load(),
	}
	c.mu.Lock()
	for k, v := range c.failures {
		s.PrimaryFailures[k] = v
	}
	s.TransitionCounts = make(map[Transition]uint64, len(c.byTransition))
	for k, v := range c.byTransition {
		s.TransitionCounts[k] = v
	}
	s.State, s.Transitions = State(state.Load()), c.transitions.Load()
	s.LastTrip, s.LastWarm = c.lastTrip, c.lastWarm
	s.LastTripCause = c.lastTripCause
	s.SlowCalls = c.slowCalls.Load()
	c.mu.Unlock()
	return s
}
