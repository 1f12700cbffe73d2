package drill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/dsn"
)

// env is the drill's world: a PostgreSQL (embedded or the one given), a
// Toxiproxy with a proxy in front of it, and a scratch directory.
type env struct {
	srv        *pgtest.Server // nil when drilling a given DSN
	tp         *chaos.Toxiproxy
	proxy      *chaos.Proxy
	directDSN  string // to the database, around the proxy
	version    string // the server's server_version; "" if it could not be read
	proxiedDSN string // through the proxy: what the application uses
	dir        string
	ownDir     bool
	closers    []func() error
}

func setupEnv(ctx context.Context, cfg Config, runID string) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	switch {
	case cfg.Server != nil:
		e.srv = cfg.Server
	case cfg.DSN == "":
		srv, err := pgtest.StartServer(ctx, pgtest.Options{Controllable: true})
		if err != nil {
			return nil, fmt.Errorf("drill: start an embedded PostgreSQL: %w", err)
		}
		e.srv = srv
		e.closers = append(e.closers, srv.Close)
	}
	if e.srv != nil {
		direct, drop, err := e.srv.CreateDatabase(ctx)
		if err != nil {
			return nil, fmt.Errorf("drill: create the drill database: %w", err)
		}
		e.closers = append(e.closers, func() error { return drop(context.Background()) })
		e.directDSN = direct
		e.version = serverVersion(ctx, direct)
	} else {
		e.directDSN = cfg.DSN
		if e.version, err = checkSchema(ctx, cfg.DSN); err != nil {
			return nil, err
		}
	}

	if cfg.ToxiproxyURL != "" {
		e.tp, err = chaos.Connect(cfg.ToxiproxyURL)
	} else {
		e.tp, err = chaos.StartServer(ctx, cfg.Logger)
	}
	if err != nil {
		return nil, fmt.Errorf("drill: toxiproxy: %w", err)
	}
	e.closers = append(e.closers, e.tp.Close)
	upstream := cfg.Upstream
	if upstream == "" {
		if upstream, err = chaos.DSNHostPort(e.directDSN); err != nil {
			return nil, fmt.Errorf("drill: %w", err)
		}
	}
	name := "pgfallback-drill-" + runID
	if cfg.ToxiproxyURL != "" {
		listen := cfg.ProxyListen
		if listen == "" {
			listen = "0.0.0.0:15432"
		}
		e.proxy, err = e.tp.ProxyListen(ctx, name, listen, upstream)
	} else {
		e.proxy, err = e.tp.Proxy(ctx, name, upstream)
	}
	if err != nil {
		return nil, fmt.Errorf("drill: create proxy to %s: %w", upstream, err)
	}
	e.closers = append(e.closers, e.proxy.Delete)
	if e.proxiedDSN, err = e.proxy.DSN(e.directDSN); err != nil {
		return nil, fmt.Errorf("drill: %w", err)
	}

	if cfg.CacheDir != "" {
		e.dir = cfg.CacheDir
		err = os.MkdirAll(e.dir, 0o755)
	} else {
		e.dir, err = os.MkdirTemp("", "pgfallback-drill-*")
		e.ownDir = true
	}
	if err != nil {
		return nil, fmt.Errorf("drill: cache directory: %w", err)
	}
	return e, nil
}

// cachePath is a fresh cache file per scenario.
func (e *env) cachePath(scenario string) string {
	return filepath.Join(e.dir, "drill-"+scenario+".db")
}

func (e *env) close() error {
	var errs []error
	for i := len(e.closers) - 1; i >= 0; i-- {
		errs = append(errs, e.closers[i]())
	}
	e.closers = nil
	if e.ownDir && e.dir != "" {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	return errors.Join(errs...)
}

// serverVersion is what the report says the drill ran against: a drill's
// results depend on the release (pruning, timeouts, shutdown). Best
// effort: "" when it cannot be read, and the drill goes on.
func serverVersion(ctx context.Context, connString string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := dsn.Connect(ctx, connString)
	if err != nil {
		return ""
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, `SHOW server_version`).Scan(&v); err != nil {
		return ""
	}
	return v
}

// checkSchema refuses to drill a database that has not been migrated: the
// drill never changes a schema it was pointed at. It returns the server's
// server_version (serverVersion), read on the same connection.
func checkSchema(ctx context.Context, connString string) (version string, err error) {
	conn, err := dsn.Connect(ctx, connString)
	if err != nil {
		return "", fmt.Errorf("drill: connect to --dsn: %w", err)
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*), current_setting('server_version') FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_name IN ('vendors', 'work_items')`).Scan(&n, &version)
	if err != nil {
		return "", fmt.Errorf("drill: inspect schema: %w", err)
	}
	if n != 2 {
		return "", fmt.Errorf("drill: the database has no pgfallback schema; run `pgfallback migrate up --dsn ...` first")
	}
	return version, nil
}
