// Package migrations holds pgfallback's database schemas as goose
// migrations embedded in the binary: migrations/postgres for the source of
// truth and migrations/sqlite for the cache.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/pgfallback/pgfallback/internal/dsn"
)

//go:embed postgres/*.sql
var postgresFiles embed.FS

// Postgres is the PostgreSQL schema, one goose SQL file per version.
var Postgres, _ = fs.Sub(postgresFiles, "postgres")

// Up applies every pending PostgreSQL migration to the database at dsn.
// It is idempotent, and safe when several processes run it at once: a
// PostgreSQL session advisory lock lets one apply while the others wait and
// then find nothing pending.
//
// It refuses a server older than MinServerVersion, before changing
// anything.
func Up(ctx context.Context, dsn string) error {
	return withPostgres(ctx, dsn, func(p *goose.Provider, db *sql.DB) error {
		var num int
		var version string
		if err := db.QueryRowContext(ctx, `SELECT current_setting('server_version_num')::int, current_setting('server_version')`).
			Scan(&num, &version); err != nil {
			return err
		}
		if err := checkServerVersion(num, version); err != nil {
			return err
		}
		_, err := p.Up(ctx)
		return err
	})
}

// MinServerVersion is the oldest PostgreSQL release pgfallback runs on
// (server_version_num). Pruning the change log needs max(xid8), and the
// feed's guard against a paused waker holding its lock for hours needs
// idle_session_timeout: both came with PostgreSQL 14. (13 reached its end
// of life in November 2025; on it the log was never pruned.) The whole
// suite runs on 15 and 17.
const MinServerVersion = 140000

func checkServerVersion(num int, version string) error {
	if num < MinServerVersion {
		return fmt.Errorf("PostgreSQL %s is too old: pgfallback needs %d or later (the change log's pruning and the feed's waker use what %d added); nothing was changed",
			version, MinServerVersion/10000, MinServerVersion/10000)
	}
	return nil
}

// Down rolls back the most recent PostgreSQL migration. Rolling back drops
// tables and their data; it is meant for development and the CLI.
func Down(ctx context.Context, dsn string) error {
	return withPostgres(ctx, dsn, func(p *goose.Provider, _ *sql.DB) error {
		_, err := p.Down(ctx)
		return err
	})
}

// MigrationStatus is one migration and whether it has been applied.
type MigrationStatus struct {
	Version   int64
	Name      string // file name, e.g. 00001_create_vendors.sql
	Applied   bool
	AppliedAt time.Time // zero when pending
}

// Status reports every known PostgreSQL migration in version order.
func Status(ctx context.Context, dsn string) ([]MigrationStatus, error) {
	var out []MigrationStatus
	err := withPostgres(ctx, dsn, func(p *goose.Provider, _ *sql.DB) error {
		st, err := p.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range st {
			out = append(out, MigrationStatus{
				Version:   s.Source.Version,
				Name:      path.Base(s.Source.Path),
				Applied:   s.State == goose.StateApplied,
				AppliedAt: s.AppliedAt,
			})
		}
		return nil
	})
	return out, err
}

// withPostgres runs run on a provider over connString. Its errors never
// show the password: the CLI prints them.
func withPostgres(ctx context.Context, connString string, run func(*goose.Provider, *sql.DB) error) error {
	// Parsed as pgxpool does, so the application's DATABASE_URL works here
	// too: sql.Open("pgx", …) would send pool_max_conns and the other pool
	// settings to PostgreSQL, which refuses them.
	cfg, err := dsn.ConnConfig(connString)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	// Retry the advisory lock every second (goose's default is every 5 s),
	// for up to 5 minutes, so a racing process waits briefly, not long.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, Postgres,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrations: %w", dsn.Error(err))
	}
	if err := run(p, db); err != nil {
		return fmt.Errorf("migrations: postgres: %w", dsn.Error(err))
	}
	return nil
}
