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
// project's README. They follow Prometheus' conventions (base units,
// _total for counters) and resilience4j's circuit-breaker set
// (state as a gauge per state, transitions, calls not permitted).
//
// pgfallback_writethrough_queue_depth is Stats.WriteQueueDepth: what waits
// in the queue and the overflow list at the scrape.
//
// One Observer and one Collector per layer. To export several layers from
// one process, register each Collector through
// prometheus.WrapRegistererWith(prometheus.Labels{"layer": name}, reg).
package prom
