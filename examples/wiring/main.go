// Command wiring builds pgfallback into a service. Run it with
// DATABASE_URL='postgres://...' go run . -vendor acme
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/migrations"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// VendorService is application code: it depends on the repository interface
// only, and does not know whether PostgreSQL or the cache answered.
type VendorService struct {
	Vendors repository.VendorRepository
}

func (s *VendorService) Status(ctx context.Context, name string) (repository.VendorStatus, error) {
	v, err := s.Vendors.Get(ctx, name)
	if err != nil {
		return "", err
	}
	return v.Status, nil
}

func main() {
	dsn := flag.String("dsn", os.Getenv("DATABASE_URL"), "PostgreSQL URL (default $DATABASE_URL)")
	cachePath := flag.String("cache", "cache/project_status.db", "the SQLite cache file")
	vendor := flag.String("vendor", "acme", "the vendor to look up")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), logger, *dsn, *cachePath, *vendor); err != nil {
		logger.Error("wiring", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger, dsn, cachePath, name string) error {
	// The schema: without it every call fails with `relation "vendors" does not
	// exist`. Up is idempotent and safe to race. PostgreSQL being down does not
	// stop the start: the cache answers until it is back.
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := migrations.Up(mctx, dsn)
	cancel()
	switch class, _ := fallback.Classify(ctx, err); {
	case class == fallback.Outage:
		logger.Warn("PostgreSQL unreachable, migrations not applied", "err", err)
	case class == fallback.ReadOnly: // a provider's full-disk guard, a maintenance window
		logger.Warn("PostgreSQL is read-only, migrations not applied", "err", err)
	case err != nil:
		return err // PostgreSQL answered: a real problem (privileges, a failed migration)
	}

	cfg, err := pgstore.ParseConfig(dsn) // its error shows no password (pgx's may)
	if err != nil {
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg) // connects lazily: the start does not need PostgreSQL
	if err != nil {
		return err
	}
	store := pgstore.New(pool)
	defer store.Close() // third: the pool

	cache, err := sqlitecache.Open(cachePath, sqlitecache.WithLogger(logger))
	if err != nil {
		return err // says why: read-only file system, no space left, not a cache file...
	}
	defer cache.Close() // second: the cache

	layer, err := fallback.New(store, cache, fallback.Config{
		PrimaryTimeout: time.Second, // bounds each PostgreSQL call (default 2 s)
		Logger:         logger,      // one line per trip, recovery and warm
	})
	if err != nil {
		return err // bad configuration only
	}
	defer layer.Close() // first: applies the write-through queue to the cache

	// layer.WorkItems() goes to work-item code the same way.
	svc := &VendorService{Vendors: layer.Vendors()}
	status, err := svc.Status(ctx, name)
	switch {
	case errors.Is(err, repository.ErrNotFound):
		fmt.Printf("%s: no such vendor\n", name)
	case errors.Is(err, repository.ErrUnavailable):
		fmt.Printf("%s: PostgreSQL is down and the cache does not hold it\n", name)
	case err != nil:
		return err
	default:
		fmt.Printf("%s: %s\n", name, status)
	}
	return nil
}
