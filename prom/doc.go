// Package prom exports a fallback.Layer's metrics to Prometheus
// (github.com/prometheus/client_golang).
//
// Two parts, because they learn what they report at different times:
//
//   - A Collector reads the layer at scrape time: the breaker's state and
//     transitions, failures of the primary by kind, the write-through
//     queue's counters, the change feed and the last warm — all taken from
//     Layer.Stats, so nothing is counted twice — and the cache's entries
//     (the layer's own cache, or the one given WithCache).
//   - An Observer (a fallback.Observer) sees every repository call as it
//     ends: the per-call latency histogram by operation, entity, source and
//     outcome; the reads served from the cache, fresh or stale, and their
//     age; the calls that failed unavailable.
//
// The Observer has to be in fallback.Config before the layer is built,
// and the Collector needs the layer, so the wiring is: NewObserver, put it
// in the Config, build the layer, then NewCollector(layer,
// WithObserver(obs)) and register that one collector (see the example).
// NewCollector(layer) alone exports the scrape-time metrics only.
//
// The metric names and labels are a public contract, listed in the
// project's docs/observability.md. They follow Prometheus' conventions (base units,
// _total for counters) and resilience4j's circuit-breaker set
// (state as a gauge per state, transitions, calls not permitted).
//
// pgfallback_writethrough_queue_depth is Stats.WriteQueueDepth: what waits
// in the queue and the overflow list at the scrape.
//
// Soft timeouts and slow calls (fallback.Config.SoftTimeout,
// SlowCallDuration): pgfallback_calls_seconds has a slow label, "true" for
// a read answered from the cache because PostgreSQL was slower than
// SoftTimeout (fallback.Origin.Slow, so always with source="cache") and
// "false" for every other call: one label of two values, rather than a
// source value of its own, so that source="cache" still counts every
// answer from the cache, and the histogram of slow answers (about
// SoftTimeout) stays apart from that of an outage's (microseconds).
// Those answers are counted in pgfallback_cache_served_total and its age
// histogram too. From Stats at scrape time: pgfallback_primary_slow_calls_total
// (calls PostgreSQL answered in SlowCallDuration or longer, what trips the
// breaker at SlowCallRate), pgfallback_cache_served_slow_total
// (Stats.ServedSlow), and the gauges pgfallback_abandoned_calls (primary
// calls still running after their reads were answered early) and
// pgfallback_abandoned_calls_peak (the most at once).
//
// One Observer and one Collector per layer. To export several layers from
// one process, register each Collector through
// prometheus.WrapRegistererWith(prometheus.Labels{"layer": name}, reg).
package prom
