package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// options is the service's configuration, from flags and the environment.
type options struct {
	addr string
	dsn  string // DATABASE_URL: never logged, never printed (it may hold a password)
	// directDSN: DATABASE_DIRECT_URL, PostgreSQL itself when DATABASE_URL
	// is a connection pooler, for the change feed's listener; optional.
	directDSN       string
	cachePath       string
	primaryTimeout  time.Duration
	softTimeout     time.Duration // fallback.Config.SoftTimeout: 0 is off
	ttl             time.Duration // the cache's TTL (sqlitecache.WithTTL): older answers are stale
	openTimeout     time.Duration
	shutdownTimeout time.Duration
	trace           bool
	logLevel        slog.Level

	// Set by tests only: no flag would be a good idea for them.
	cacheOptions []sqlitecache.Option
	layerConfig  func(*fallback.Config)
}

// errUsage: the command line or the environment is wrong (exit code 2).
var errUsage = errors.New("usage")

// parseOptions reads the command line and the environment. The DSN comes
// from DATABASE_URL only, never from a flag: a flag's value is visible to
// every user of the machine in the process list.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	o := options{dsn: getenv("DATABASE_URL"), directDSN: getenv("DATABASE_DIRECT_URL")}
	fs := flag.NewFlagSet("statusd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `statusd: the project-status HTTP API, answering from a cache when PostgreSQL is down

Usage: DATABASE_URL=postgres://... statusd [flags]

Behind a connection pooler (PgBouncer in transaction mode), set
DATABASE_DIRECT_URL to PostgreSQL itself: the change feed listens there. Add
default_query_exec_mode=exec to DATABASE_URL unless the pooler keeps prepared
statements (PgBouncer 1.22+ with max_prepared_statements) (docs/poolers.md).

`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", ":8080", "address to listen on")
	fs.StringVar(&o.cachePath, "cache", "cache/project_status.db", "path of the SQLite cache file")
	fs.DurationVar(&o.primaryTimeout, "primary-timeout", time.Second, "deadline of each call to PostgreSQL")
	fs.DurationVar(&o.softTimeout, "soft-timeout", 0,
		"answer a read of a cached key from the cache when PostgreSQL has not answered within it (0: off; below --primary-timeout)")
	fs.DurationVar(&o.ttl, "ttl", sqlitecache.DefaultTTL,
		"the cache's TTL: during an outage an answer cached longer ago is served marked stale (Warning: 110), up to 24 h past it")
	fs.DurationVar(&o.openTimeout, "open-timeout", 5*time.Second,
		"how long the breaker stays open before probing PostgreSQL again (also the Retry-After of a 503)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second,
		"how long a shutdown waits for requests in flight")
	fs.BoolVar(&o.trace, "trace", false, "write OpenTelemetry spans to stdout")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, fmt.Errorf("%w: %v", errUsage, err) // the flag package printed it with the usage
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	case o.dsn == "":
		return o, fmt.Errorf("%w: DATABASE_URL is not set (e.g. postgres://user:password@host:5432/db?sslmode=disable)", errUsage)
	case o.primaryTimeout <= 0 || o.openTimeout <= 0 || o.shutdownTimeout <= 0:
		return o, fmt.Errorf("%w: timeouts must be positive", errUsage)
	case o.ttl <= 0:
		return o, fmt.Errorf("%w: --ttl must be positive", errUsage)
	case o.softTimeout < 0 || (o.softTimeout > 0 && o.softTimeout >= o.primaryTimeout):
		return o, fmt.Errorf("%w: --soft-timeout must be 0 (off) or positive and below --primary-timeout", errUsage)
	case o.cachePath == "":
		return o, fmt.Errorf("%w: --cache must not be empty", errUsage)
	}
	return o, nil
}
