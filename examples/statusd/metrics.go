package main

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/prom"
)

// metricsHandler serves /metrics in the Prometheus text format: the
// layer's metrics read at scrape time (breaker state and transitions, the
// primary's failures by kind, the write-through queue, the change feed, the
// last warm), obs's per-call metrics (latency by operation, source and
// outcome; fresh and stale answers from the cache), and the Go runtime's
// and the process's. obs must be the Observer in the layer's Config.
//
// The registry is this handler's own rather than Prometheus' default: one
// process may build several layers (the tests do), and a second
// registration of the same metrics in the default registry is an error.
func metricsHandler(layer *fallback.Layer, obs *prom.Observer) (http.Handler, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		prom.NewCollector(layer, prom.WithObserver(obs)),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}), nil
}
