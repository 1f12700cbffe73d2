package fallback

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of the layer's counters since New.
type Stats struct {
	State State

	// The cache, for a Layer made by NewWithCacheFile: whether it is open, and if not
	// the last error opening it and how often that was tried. A Layer
	// without its cache serves from PostgreSQL alone.
	CacheOpen         bool
	CacheError        string
	CacheOpenAttempts uint64

	PrimaryCalls    uint64                 // calls sent to the primary
	PrimaryFailures map[FailureKind]uint64 // outage failures by kind
	// SlowCalls: calls to the primary (among PrimaryCalls) answered, but in
	// SlowCallDuration or longer. Counted even when SlowCallRate < 0.
	SlowCalls uint64

	ServedFresh   uint64 // reads served from the cache within TTL
	ServedStale   uint64 // reads served from the cache past TTL, within StaleIfError
	ServedPartial uint64 // Lists served from the cache (partial by nature)
	// Soft timeouts (Config.SoftTimeout): reads answered from the cache
	// because PostgreSQL was slow (counted in ServedFresh or ServedStale
	// too), and the primary calls still running after their reads were
	// answered, now and at most at once (never above MaxAbandonedCalls).
	ServedSlow        uint64
	AbandonedCalls    int64
	AbandonedPeak     int64
	Unavailable       uint64 // calls that returned ErrUnavailable or ErrOutcomeUnknown
	RejectedWhileOpen uint64 // calls that did not reach the primary because the breaker was open

	WriteQueued  uint64 // cache updates queued by the write-through
	WriteWritten uint64 // cache updates applied
	WriteDropped uint64 // cache updates dropped: queue full, the cache failed a set, or the close deadline passed
	WriteFailed  uint64 // cache updates the cache refused (a set is then dropped, an eviction retried)
	// Evictions and moves never wait nor are dropped when the queue is
	// full: they overflow into a list applied in order after it.
	WriteOverflowed uint64
	WriteQueueDepth int    // updates waiting now: the queue plus the overflow list
	DroppedAtClose  uint64 // updates still queued when Close's deadline passed (counted in WriteDropped too)
	EvictionsLost   uint64 // of those, evictions and moves: the cache may hold rows PostgreSQL deleted until a warm

	Transitions      uint64                // state changes
	TransitionCounts map[Transition]uint64 // state changes by kind
	LastTrip         time.Time             // when the breaker last opened; zero if never
	// LastTripCause: why it last opened: TripFailures (outage failures) or
	// TripSlowCalls (PostgreSQL answered, but slowly); empty if never.
	LastTripCause string

	WarmRuns   uint64
	LastWarm   WarmReport
	ProbeCalls uint64 // pings sent by the prober

	Feed FeedStats // the change feed; State FeedOff when there is none

	Queued QueuedStats // the durable write queue (WithWriteQueue)
}

// QueuedStats counts the durable write queue's work since New.
type QueuedStats struct {
	Pending        int64  // writes pending, as last counted by this layer
	Queued         uint64 // writes queued
	Replayed       uint64 // writes applied at replay (AlreadyApplied among them)
	AlreadyApplied uint64 // replays that found the write applied before (a crash or lost reply)
	DeadLettered   uint64 // writes that became dead letters (rejected, or behind a rejected one)
	Conflicts      uint64 // of the rejections, version conflicts
	ReplayFailures uint64 // replays stopped by a transient failure
	Full           uint64 // writes refused because MaxQueuedWrites were pending
	Pruned         uint64 // records of applied writes this instance pruned in PostgreSQL
	LastError      string // what stopped the last replay pass that failed
	// OldestPending is when the oldest pending write was queued, as last
	// counted (zero: none).
	OldestPending time.Time
	// Stalled: writes are pending and the last replay pass stopped on a
	// failure (LastError); it retries, backing off up to OpenTimeout. While
	// the breaker is open that is the outage; while it is closed,
	// PostgreSQL answers yet the queue does not drain: look at LastError.
	Stalled bool
}

// FeedStats describes the change feed.
type FeedStats struct {
	State FeedState
	// AsOf: the cache reflects every change committed before it; zero
	// until the first catch-up, and after the cursor expired until the
	// resync is done.
	AsOf time.Time
	Lag  time.Duration // how long ago AsOf was; 0 when AsOf is zero
	// Mirror: the cache holds every row (WarmAll), kept complete by the feed.
	Mirror         bool
	ChangesApplied uint64 // changes read from the log and applied
	CatchUps       uint64 // reads of the log until caught up
	Resyncs        uint64 // full warms: no cursor yet, or it expired
	Errors         uint64 // catch-ups that failed (logged at most once a minute)
	LastError      string
	Pruned         uint64 // log entries this instance pruned
}

// Transition is a change of the layer's state.
type Transition struct{ From, To State }

type counters struct {
	primaryCalls, servedFresh, servedStale, servedPartial, unavailable, rejected atomic.Uint64
	writeQueued, writeWritten, writeDropped, writeFailed                         atomic.Uint64
	writeOverflowed, droppedAtClose, evictionsLost                               atomic.Uint64
	transitions, warmRuns, probeCalls                                            atomic.Uint64
	servedSlow                                                                   atomic.Uint64

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

func (c *counters) transition(t Transition) {
	c.mu.Lock()
	if c.byTransition == nil {
		c.byTransition = make(map[Transition]uint64)
	}
	c.byTransition[t]++
	c.mu.Unlock()
}

func (c *counters) snapshot() Stats {
	s := Stats{
		PrimaryCalls: c.primaryCalls.Load(), ServedFresh: c.servedFresh.Load(), ServedStale: c.servedStale.Load(), ServedPartial: c.servedPartial.Load(),
		Unavailable: c.unavailable.Load(), RejectedWhileOpen: c.rejected.Load(),
		WriteQueued: c.writeQueued.Load(), WriteWritten: c.writeWritten.Load(),
		WriteDropped: c.writeDropped.Load(), WriteFailed: c.writeFailed.Load(),
		WriteOverflowed: c.writeOverflowed.Load(), DroppedAtClose: c.droppedAtClose.Load(), EvictionsLost: c.evictionsLost.Load(),
		Transitions: c.transitions.Load(), WarmRuns: c.warmRuns.Load(), ProbeCalls: c.probeCalls.Load(),
		PrimaryFailures: map[FailureKind]uint64{}, ServedSlow: c.servedSlow.Load(),
	}
	c.mu.Lock()
	for k, v := range c.failures {
		s.PrimaryFailures[k] = v
	}
	s.TransitionCounts = make(map[Transition]uint64, len(c.byTransition))
	for k, v := range c.byTransition {
		s.TransitionCounts[k] = v
	}
	s.LastTrip, s.LastWarm = c.lastTrip, c.lastWarm
	s.LastTripCause = c.lastTripCause
	s.SlowCalls = c.slowCalls.Load()
	c.mu.Unlock()
	return s
}
