package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/oteltrace"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/prom"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// app is the wired service: the store, the layer over it and its cache,
// telemetry, and the HTTP handler that only sees the layer's repositories.
type app struct {
	store    *pgstore.Store
	layer    *fallback.Layer
	tracing  *tracing
	handler  http.Handler
	database string // where the DSN points, without its password: for logs
	log      *slog.Logger
}

// newApp wires the service. It never connects to PostgreSQL: the pool
// connects lazily, so the service starts (and serves what its cache holds)
// while the database is down. Its errors are configuration errors, and
// never quote the DSN's password.
func newApp(ctx context.Context, o options, logger *slog.Logger, traceOut io.Writer) (_ *app, err error) {
	pcfg, err := dsn.ParseConfig(o.dsn) // pgx's own parse error may show part of a password
	if err != nil {
		return nil, fmt.Errorf("%w: DATABASE_URL: %v", errUsage, err)
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		// Connections are also opened off any request (the change feed's
		// listener, the prober): without a bound, one to a blackholed
		// server would wait for the kernel's TCP timeout.
		pcfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	a := &app{log: logger, database: describe(pcfg)}
	defer func() {
		if err != nil {
			a.shutdown(context.Background())
		}
	}()
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connection pool: %w", dsn.Error(err))
	}
	storeOpts := []pgstore.Option{pgstore.WithLogger(logger)}
	if o.directDSN != "" {
		lcfg, err := dsn.ConnConfig(o.directDSN)
		if err != nil {
			return nil, fmt.Errorf("%w: DATABASE_DIRECT_URL: %v", errUsage, err)
		}
		if lcfg.ConnectTimeout == 0 {
			lcfg.ConnectTimeout = pcfg.ConnConfig.ConnectTimeout
		}
		storeOpts = append(storeOpts, pgstore.WithListenConfig(lcfg))
	}
	a.store = pgstore.New(pool, storeOpts...)

	if a.tracing, err = newTracing(o.trace, traceOut); err != nil {
		return nil, err
	}
	// The layer takes its observers at birth; the metrics collector needs
	// the layer: the observer is made first, exported after.
	metricsObs := prom.NewObserver()
	obs := fallback.Observers{metricsObs}
	if a.tracing.enabled() {
		obs = append(obs, oteltrace.NewObserver(a.tracing.provider))
	}
	cfg := fallback.Config{
		PrimaryTimeout: o.primaryTimeout,
		SoftTimeout:    o.softTimeout,
		OpenTimeout:    o.openTimeout,
		Logger:         logger,
		Observer:       obs,
		OnStateChange: func(from, to fallback.State) {
			logger.Warn("database circuit", "from", from, "to", to)
		},
	}
	if o.layerConfig != nil {
		o.layerConfig(&cfg)
	}
	cacheOpts := []sqlitecache.Option{sqlitecache.WithLogger(logger)}
	if o.ttl > 0 { // parseOptions requires it; tests that build options by hand may leave it
		cacheOpts = append(cacheOpts, sqlitecache.WithTTL(o.ttl))
	}
	cacheOpts = append(cacheOpts, o.cacheOptions...)
	// A cache that cannot be opened does not stop the start: the layer
	// serves from PostgreSQL alone and retries (README). Only bad
	// configuration fails here.
	if a.layer, err = fallback.NewWithCacheFile(a.store, o.cachePath, cfg, cacheOpts...); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	metrics, err := metricsHandler(a.layer, metricsObs)
	if err != nil {
		return nil, err
	}
	s := &server{vendors: a.layer.Vendors(), workItems: a.layer.WorkItems(), log: logger, retryAfter: o.openTimeout}
	a.handler = a.tracing.handler(s.routes(fallback.HealthHandler(a.layer), metrics))
	return a, nil
}

// shutdown stops what newApp started, in dependency order: the layer
// (which applies its write-through queue to the cache, within ctx, and
// stops its prober and change feed), then the pool the layer used, then
// the tracer (flushing its last spans). It returns what went wrong, for
// logging: by then there is nothing left to do about it.
func (a *app) shutdown(ctx context.Context) error {
	var errs []error
	if a.layer != nil {
		if err := a.layer.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cache: %w", err))
		}
	}
	if a.store != nil {
		a.store.Close()
	}
	if a.tracing != nil {
		if err := a.tracing.shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tracing: %w", err))
		}
	}
	return errors.Join(errs...)
}

// describe says where a pool connects — user@host:port/database — for logs,
// without the password or any other parameter.
func describe(c *pgxpool.Config) string {
	cc := c.ConnConfig
	return cc.User + "@" + cc.Host + ":" + strconv.Itoa(int(cc.Port)) + "/" + cc.Database
}
