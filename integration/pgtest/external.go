package pgtest

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
)

// startExternal checks that the server named by dsn answers. A DSN that is
// set but unusable is an error, not "unavailable": whoever set it wants that
// server, and silently testing elsewhere (or skipping) would hide the
// mistake.
func startExternal(ctx context.Context, opts Options, dsn string) (*Server, error) {
	if dsn == "" {
		return nil, modeUnavailable("%s is not set", EnvDSN)
	}
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %s: %w", EnvDSN, pgdsn.Error(err))
	}
	t0 := time.Now()
	s := newServer(ModeExternal, dsn, hostPort(cfg), nil, opts)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := s.connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %s is set but the server does not answer (unset it to use local binaries or Docker): %w", EnvDSN, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		return nil, fmt.Errorf("pgtest: %s: %w", EnvDSN, pgdsn.Error(err))
	}
	opts.logf("pgtest: external server %s (PostgreSQL %s) answered in %v", s.addr, version, since(t0))
	return s, nil
}
