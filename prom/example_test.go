package prom_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/prom"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// The wiring: the Observer goes into the Config before the layer exists;
// the Collector, made from the layer, exports it with the layer's own
// metrics and the cache's entries. Only the Collector is registered.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		slog.Error("bad DATABASE_URL")
		return
	}
	store := pgstore.New(pool)
	defer store.Close()
	cache, err := sqlitecache.Open("cache/project_status.db")
	if err != nil {
		slog.Error("cache", "err", err)
		return
	}
	defer cache.Close()

	obs := prom.NewObserver()
	layer, err := fallback.New(store, cache, fallback.Config{Observer: obs})
	if err != nil {
		slog.Error("fallback layer", "err", err)
		return
	}
	defer layer.Close()

	reg := prometheus.NewRegistry()
	if err := reg.Register(prom.NewCollector(layer, prom.WithObserver(obs), prom.WithCache(cache))); err != nil {
		slog.Error("metrics", "err", err) // registered twice, or a name taken by another collector
		return
	}
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Hand layer.Vendors() and layer.WorkItems() to the application, then
	// http.ListenAndServe.
}
