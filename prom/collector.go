package prom

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// DefaultCacheTimeout bounds the read of the cache's entry counts during a
// scrape (see WithCacheTimeout).
const DefaultCacheTimeout = time.Second

// Collector is a prometheus.Collector of a layer's metrics. Register one
// per layer.
type Collector struct {
	layer        *fallback.Layer
	obs          *Observer
	cache        *sqlitecache.Cache
	cacheTimeout time.Duration

	// Counted here, not in the layer: a failure of the scrape itself.
	scrapeErrors atomic.Uint64
}

var _ prometheus.Collector = (*Collector)(nil)

// Option configures a Collector.
type Option func(*Collector)

// WithObserver exports obs's per-call metrics with the layer's: obs must
// be the Observer in the layer's fallback.Config. Without it a Collector
// exports the scrape-time metrics only.
func WithObserver(obs *Observer) Option {
	return func(c *Collector) { c.obs = obs }
}

// WithCache exports the entry counts of cache, read at scrape time.
// Without it the collector reads the layer's own cache (Layer.Cache), which
// is what a layer made by fallback.NewWithCacheFile needs; give it to watch
// another file.
func WithCache(cache *sqlitecache.Cache) Option {
	return func(c *Collector) { c.cache = cache }
}

// WithCacheTimeout bounds the cache read of a scrape (default 1 s), so
// that a cache file locked or on a stalled disk cannot hold the scrape;
// when it passes, the entry counts are left out of that scrape and
// pgfallback_scrape_errors_total counts it.
func WithCacheTimeout(d time.Duration) Option {
	return func(c *Collector) {
		if d > 0 {
			c.cacheTimeout = d
		}
	}
}

// NewCollector returns a Collector of layer's metrics: the breaker, the
// primary's failures, the write-through, the change feed and the warm,
// from Layer.Stats at each scrape; with WithObserver the per-call metrics;
// with WithCache the cache's entries. A nil layer exports none of the
// layer's metrics (for an Observer's alone). Register it:
//
//	reg.MustRegister(prom.NewCollector(layer, prom.WithObserver(obs)))
func NewCollector(layer *fallback.Layer, opts ...Option) *Collector {
	c := &Collector{layer: layer, cacheTimeout: DefaultCacheTimeout}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Describe sends the descriptors of every metric the Collector may send.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descState, descTransitions, descNotPermitted, descLastTrip,
		descPrimaryCalls, descPrimaryFailures, descReadOnlySince, descProbes, descCacheOpen,
		descWritesStalledSince, descStalledTimeouts, descWritesHeld,
		descSlowCalls, descServedSlow, descAbandoned, descAbandonedPeak,
		descWriteQueued, descWriteQueueDepth, descWriteWritten, descWriteDropped, descWriteFailed, descWriteOverflowed, descEvictionsLost,
		descWarmRuns, descWarmDuration, descWarmRows, descWarmSuccess, descWarmTimestamp,
		descFeedState, descFeedLag, descFeedResyncSince, descFeedApplied, descFeedCatchUps, descFeedHeardCatchUps, descFeedRowsHeard, descFeedResyncs, descFeedErrors,
		descFeedListenerRefused,
		descQueuedPending, descQueuedStalled, descQueuedEvents,
		descScrapeErrors,
	} {
		ch <- d
	}
	if c.cache != nil || c.layer != nil {
		for _, d := range []*prometheus.Desc{descCacheEntries, descCacheStale, descCacheOldest,
			descCacheLookups, descCacheFileLost, descCacheReopens, descDeadLetters, descQueuedOldest} {
			ch <- d
		}
	}
	if c.obs != nil {
		c.obs.describe(ch)
	}
}

// Collect sends the metrics: the layer's from one Stats snapshot, the
// cache's from one read bounded by the cache timeout, the Observer's.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.layer != nil {
		collectStats(ch, c.layer.Stats())
	}
	cache := c.cache
	if cache == nil && c.layer != nil {
		cache = c.layer.Cache()
	}
	if cache != nil {
		c.collectCache(ch, cache)
	}
	if c.obs != nil {
		c.obs.collect(ch)
	}
	counter(ch, descScrapeErrors, c.scrapeErrors.Load())
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// oneOf sends 1 for the current state and 0 for the others: the
// resilience4j shape, so that a graph of state="open" is a step and an
// alert is `pgfallback_circuitbreaker_state{state="open"} == 1`.
func oneOf(ch chan<- prometheus.Metric, d *prometheus.Desc, current string, states []string) {
	for _, s := range states {
		v := 0.0
		if s == current {
			v = 1
		}
		gauge(ch, d, v, s)
	}
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// stateLabel spells a breaker state as a label value: State.String says
// "half-open", and label values use underscores.
func stateLabel(s fallback.State) string {
	switch s {
	case fallback.Closed:
		return "closed"
	case fallback.HalfOpen:
		return "half_open"
	case fallback.Open:
		return "open"
	}
	return "unknown"
}

var breakerStates = []string{"closed", "half_open", "open"}

// transitionsKnown are the changes the layer makes (a trip, a probe that
// answered, a warm that failed or a closing ping, a recovery): exported
// at zero before they happen, so that increase() sees the first one.
var transitionsKnown = []fallback.Transition{
	{From: fallback.Closed, To: fallback.Open},
	{From: fallback.Open, To: fallback.HalfOpen},
	{From: fallback.HalfOpen, To: fallback.Open},
	{From: fallback.HalfOpen, To: fallback.Closed},
}

// failureKinds are exported at zero for the same reason; a kind added to
// fallback later still shows up once it is counted.
var failureKinds = []fallback.FailureKind{
	fallback.FailConnect, fallback.FailTimeout, fallback.FailConnection, fallback.FailShutdown,
	fallback.FailOverload, fallback.FailReadOnly, fallback.FailDiskFull, fallback.FailUnavailable, fallback.FailUnknown,
}

var feedStates = func() []string {
	var names []string
	for _, s := range []fallback.FeedState{fallback.FeedOff, fallback.FeedStarting, fallback.FeedFollowing,
		fallback.FeedBehind, fallback.FeedResyncing} {
		names = append(names, s.String())
	}
	return names
}()

func collectStats(ch chan<- prometheus.Metric, s fallback.Stats) {
	oneOf(ch, descState, stateLabel(s.State), breakerStates)
	transitions := make(map[fallback.Transition]uint64, len(s.TransitionCounts)+len(transitionsKnown))
	for _, t := range transitionsKnown {
		transitions[t] = 0
	}
	for t, n := range s.TransitionCounts {
		transitions[t] = n
	}
	for t, n := range transitions {
		counter(ch, descTransitions, n, stateLabel(t.From), stateLabel(t.To))
	}
	counter(ch, descNotPermitted, s.RejectedWhileOpen)
	gauge(ch, descWriteQueueDepth, float64(s.WriteQueueDepth))
	if !s.LastTrip.IsZero() {
		gauge(ch, descLastTrip, seconds(s.LastTrip))
	}
	if !s.ReadOnlySince.IsZero() {
		gauge(ch, descReadOnlySince, seconds(s.ReadOnlySince))
	}
	if !s.WritesStalledSince.IsZero() {
		gauge(ch, descWritesStalledSince, seconds(s.WritesStalledSince))
	}
	counter(ch, descStalledTimeouts, s.StalledTimeouts)
	counter(ch, descWritesHeld, s.WritesHeld)
	counter(ch, descPrimaryCalls, s.PrimaryCalls)
	kinds := make(map[fallback.FailureKind]uint64, len(failureKinds)+len(s.PrimaryFailures))
	for _, k := range failureKinds {
		kinds[k] = 0
	}
	for k, n := range s.PrimaryFailures {
		kinds[k] = n
	}
	for k, n := range kinds {
		counter(ch, descPrimaryFailures, n, string(k))
	}
	counter(ch, descProbes, s.ProbeCalls)
	counter(ch, descSlowCalls, s.SlowCalls)
	counter(ch, descServedSlow, s.ServedSlow)
	gauge(ch, descAbandoned, float64(s.AbandonedCalls))
	gauge(ch, descAbandonedPeak, float64(s.AbandonedPeak))
	gauge(ch, descCacheOpen, bool01(s.CacheOpen))

	counter(ch, descWriteQueued, s.WriteQueued)
	counter(ch, descWriteWritten, s.WriteWritten)
	counter(ch, descWriteDropped, s.WriteDropped)
	counter(ch, descWriteFailed, s.WriteFailed)
	counter(ch, descWriteOverflowed, s.WriteOverflowed)
	counter(ch, descEvictionsLost, s.EvictionsLost)

	counter(ch, descWarmRuns, s.WarmRuns)
	if w := s.LastWarm; !w.Started.IsZero() {
		gauge(ch, descWarmDuration, w.Duration.Seconds())
		gauge(ch, descWarmRows, float64(w.Refreshed), "refreshed")
		gauge(ch, descWarmRows, float64(w.Removed), "removed")
		gauge(ch, descWarmSuccess, bool01(w.Err == ""))
		gauge(ch, descWarmTimestamp, seconds(w.Started.Add(w.Duration)))
	}

	f := s.Feed
	oneOf(ch, descFeedState, f.State.String(), feedStates)
	// Absent rather than 0 or NaN while AsOf is unknown: 0 would read as
	// "perfectly current" and NaN breaks comparisons silently; alert on
	// absence with absent() or on pgfallback_feed_state.
	if !f.AsOf.IsZero() {
		gauge(ch, descFeedLag, f.Lag.Seconds())
	}
	if !f.ResyncSince.IsZero() {
		gauge(ch, descFeedResyncSince, seconds(f.ResyncSince))
	}
	counter(ch, descFeedApplied, f.ChangesApplied)
	counter(ch, descFeedCatchUps, f.CatchUps)
	counter(ch, descFeedHeardCatchUps, f.HeardCatchUps)
	counter(ch, descFeedRowsHeard, f.RowsHeard)
	counter(ch, descFeedResyncs, f.Resyncs)
	counter(ch, descFeedErrors, f.Errors)
	if f.ListenerRefused != "" {
		gauge(ch, descFeedListenerRefused, 1, f.ListenerRefused)
	}

	q := s.Queued
	gauge(ch, descQueuedPending, float64(q.Pending))
	gauge(ch, descQueuedStalled, bool01(q.Stalled))
	for _, e := range []struct {
		event string
		n     uint64
	}{
		{"queued", q.Queued}, {"replayed", q.Replayed}, {"already_applied", q.AlreadyApplied},
		{"dead_lettered", q.DeadLettered}, {"conflict", q.Conflicts}, {"replay_failure", q.ReplayFailures},
		{"replay_timed_out", q.ReplayTimedOut}, {"refused_full", q.Full},
	} {
		counter(ch, descQueuedEvents, e.n, e.event)
	}
}
