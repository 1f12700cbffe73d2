package drill

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
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

// openAppPooled is openApp with a pool of conns connections, all opened,
// and each with the statements of a read and a create prepared, before it
// returns: a service sized for the calls its soft timeouts leave running,
// and warm. In a brownout every round trip is slow: a connection opened
// late takes several, longer than PrimaryTimeout, and so does a
// connection's first use of a statement (pgx prepares it first, a round
// trip of its own); those calls time out, and the breaker counts them as
// outages, not slowness. And with pgxpool's default size (max(4, NumCPU))
// below MaxAbandonedCalls, the background calls queue for a connection and
// time out waiting, which counts as outages too. (It also turns off
// pgxpool's ping of a connection idle for a second: see openAppSized.)
// The vendors created to prepare the create are named tag-xNNN, which the
// scenario's cleanup removes.
func openAppPooled(ctx context.Context, connString, cachePath, tag string, lcfg fallback.Config, conns int32) (*app, error) {
	a, err := openAppSized(ctx, connString, "", cachePath, lcfg, conns)
	if err != nil {
		return nil, err
	}
	if err := warmPool(ctx, a.store, tag, conns); err != nil {
		a.close()
		return nil, fmt.Errorf("drill: open and prepare %d connections: %w", conns, err)
	}
	return a, nil
}

// warmPool opens conns connections and prepares a read and a create on
// each: it holds them all, then frees one at a time, so the store's calls
// run on that one, and takes it back.
func warmPool(ctx context.Context, store *pgstore.Store, tag string, conns int32) error {
	pool := store.Pool()
	held := make([]*pgxpool.Conn, 0, conns)
	defer func() {
		for _, c := range held {
			if c != nil {
				c.Release()
			}
		}
	}()
	for range conns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		held = append(held, c)
	}
	for i := range held {
		held[i].Release()
		held[i] = nil
		name := fmt.Sprintf("%s-x%03d", tag, i)
		if _, err := store.Vendors().Get(ctx, name); !errors.Is(err, repository.ErrNotFound) {
			return fmt.Errorf("prepare a read: %w", err)
		}
		if _, err := store.Vendors().Create(ctx, repository.Vendor{Name: name, Status: repository.VendorOperational, CreatedBy: "pgfallback drill"}); err != nil {
			return fmt.Errorf("prepare a create: %w", err)
		}
		c, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		held[i] = c
	}
	return nil
}

// openAppListening is openApp whose change feed listens through
// listenString, when it is not empty: its own proxy, in feed-cut.
func openAppListening(ctx context.Context, connString, listenString, cachePath string, lcfg fallback.Config, copts ...sqlitecache.Option) (*app, error) {
	return openAppSized(ctx, connString, listenString, cachePath, lcfg, 0, copts...)
}

// openAppSized is openAppListening with a pool of at most conns
// connections (0: pgxpool's default).
func openAppSized(ctx context.Context, connString, listenString, cachePath string, lcfg fallback.Config, conns int32, copts ...sqlitecache.Option) (*app, error) {
	pcfg, err := dsn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("drill: parse dsn: %w", err)
	}
	if conns > 0 {
		pcfg.MaxConns = conns
		// pgxpool pings a connection idle for more than a second before
		// handing it out: in a brownout that is a slow round trip more,
		// and a read on such a connection takes twice the latency, past
		// PrimaryTimeout, which counts as an outage. The pooled
		// application takes its connections as they are.
		pcfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
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

// setupTimeout bounds setting a scenario up: seeding, caching. Set-up is
// not what a scenario measures, so it is never subject to the fault's
// timeouts (PrimaryTimeout, the breaker): on a busy machine a seed through
// the layer could time out and fail the drill before its fault began.
const setupTimeout = 2 * time.Minute

// connectFailed reports an error from making a connection that the server
// did not answer with a refusal (a timeout, a reset): nothing was sent,
// and trying again may work. The layer's own classification says so.
func connectFailed(err error) bool {
	class, kind := fallback.Classify(nil, err)
	return class == fallback.Outage && kind == fallback.FailConnect
}

// seedVendors creates vs in PostgreSQL through the store, not the layer,
// then caches the rows PostgreSQL returned in every cache given (the
// instances that must hold them before the fault), as a read through the
// layer would have. It returns the created rows.
func seedVendors(ctx context.Context, store *pgstore.Store, vs []repository.Vendor, caches ...*sqlitecache.Cache) ([]repository.Vendor, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	out := make([]repository.Vendor, 0, len(vs))
	for _, v := range vs {
		got, err := store.Vendors().Create(ctx, v)
		for connectFailed(err) && ctx.Err() == nil {
			// The pool's connect timeout is the application's
			// (PrimaryTimeout): a password authentication (SCRAM costs
			// both ends milliseconds of CPU) on a busy machine can
			// outlast it. Nothing was sent; set-up tries again.
			pause(ctx, 50*time.Millisecond)
			got, err = store.Vendors().Create(ctx, v)
		}
		if err != nil {
			return out, fmt.Errorf("create vendor %q: %w", v.Name, err)
		}
		out = append(out, got)
	}
	for _, c := range caches {
		if err := c.SetVendors(ctx, out); err != nil {
			return out, fmt.Errorf("cache the seeded vendors: %w", err)
		}
	}
	return out, nil
}
