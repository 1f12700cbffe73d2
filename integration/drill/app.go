package drill

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// app is one instance of the application under drill: a store over the
// proxied DSN, a cache file, and the fallback layer, wired as a service
// would wire them.
type app struct {
	store *pgstore.Store
	cache *sqlitecache.Cache
	layer *fallback.Layer
}

func openApp(ctx context.Context, connString, cachePath string, lcfg fallback.Config, copts ...sqlitecache.Option) (*app, error) {
	return openAppListening(ctx, connString, "", cachePath, lcfg, copts...)
}

// openAppListening is openApp whose change feed listens through
// listenString, when it is not empty: its own proxy, in feed-cut.
func openAppListening(ctx context.Context, connString, listenString, cachePath string, lcfg fallback.Config, copts ...sqlitecache.Option) (*app, error) {
	pcfg, err := dsn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("drill: parse dsn: %w", err)
	}
	// A connection attempt must not outlast the call that needs it.
	pcfg.ConnConfig.ConnectTimeout = lcfg.PrimaryTimeout
	pool, err := pgxpool.NewWithConfig(ctx, pcfg) // connects lazily: starts during an outage
	if err != nil {
		return nil, fmt.Errorf("drill: pool: %w", err)
	}
	var sopts []pgstore.Option
	if listenString != "" {
		lcc, err := dsn.ConnConfig(listenString)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("drill: parse listen dsn: %w", err)
		}
		lcc.ConnectTimeout = lcfg.PrimaryTimeout
		sopts = append(sopts, pgstore.WithListenConfig(lcc))
	}
	store := pgstore.New(pool, sopts...)
	copts = append([]sqlitecache.Option{sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(lcfg.Logger)}, copts...)
	cache, err := sqlitecache.Open(cachePath, copts...)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("drill: cache: %w", err)
	}
	layer, err := fallback.New(store, cache, lcfg)
	if err != nil {
		cache.Close()
		store.Close()
		return nil, err
	}
	return &app{store: store, cache: cache, layer: layer}, nil
}

// close closes in dependency order: the layer flushes into the cache first.
func (a *app) close() error {
	err := a.layer.Close()
	err = errors.Join(err, a.cache.Close())
	a.store.Close()
	return err
}
