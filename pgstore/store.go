// Package pgstore implements the repository interfaces on PostgreSQL with
// pgx (github.com/jackc/pgx/v5), the source of truth behind pgfallback.
//
// Business outcomes map to the repository sentinel errors (ErrNotFound,
// ErrAlreadyExists, ErrConflict, ErrInvalid). Everything else — refused
// connections, timeouts, server shutdowns — is returned wrapped but
// unchanged in kind, so callers (and the fallback package) can inspect it
// with errors.As for *pgconn.PgError, *pgconn.ConnectError, net.Error, or
// pgconn.Timeout.
//
// Every statement works in each of pgx's query exec modes, so a pool
// behind a transaction pooler (PgBouncer) works with
// default_query_exec_mode=exec in its DSN; the change feed's listener
// needs a session of its own: WithListenConfig (docs/poolers.md).
package pgstore

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"

	"github.com/pgfallback/pgfallback/repository"
)

// Store is a PostgreSQL-backed store. It is safe for concurrent use.
type Store struct {
	pool         *pgxpool.Pool
	listenConfig *pgx.ConnConfig  // nil: the pool's
	wakeInterval time.Duration    // 0: DefaultChangeWakeInterval
	heard        *heardBroadcasts // the waker's reads, as its notifications carried them (broadcast.go)
	// maxQueueUsage: 0 for broadcastMaxQueueUsage; tests lower it.
	maxQueueUsage float64
	// rowReads counts the waker's reads of changed rows (rows.go), for tests.
	rowReads atomic.Uint64
	// cannotConnectRetry: 0 for the constant; tests shorten it.
	cannotConnectRetry time.Duration
	log                *slog.Logger // WithLogger; slog.Default() if not set
	// refusedSaid: why the listener last refused to listen, said in the
	// log; nil once it listens (watch.go, refuse). ListenerRefused.
	refusedSaid atomic.Pointer[refusal]
	// preparedSaid: the pool's prepared statements behind a pooler were
	// warned of; poolIdent: where the pool's connections are, once read
	// (watch.go, checkPool).
	preparedSaid atomic.Bool
	poolIdent    atomic.Pointer[poolIdentity]
	// sessionSaid: settings of the pool's sessions that pgx cannot work
	// with were said (session.go).
	sessionSaid atomic.Bool
	vendors     vendorRepo
	workItems   workItemRepo
}

// Open creates a connection pool from dsn (a URL or key=value string that
// pgxpool.ParseConfig accepts, pool settings included) and pings the server.
// It fails if the server cannot be reached; an application that must start
// during an outage builds its pool from ParseConfig with
// pgxpool.NewWithConfig, which connects lazily, and passes it to New. opts
// are New's.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: create pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: ping: %w", err)
	}
	return New(pool, opts...), nil
}

// ParseConfig parses dsn as pgxpool.ParseConfig does (a URL or key=value
// string, pool settings included), for a pool the application builds with
// pgxpool.NewWithConfig, which connects lazily: a service can start during
// an outage. Unlike pgx's, its error shows no password, and the pool's
// sessions get what pgx needs of them whatever a DBA's defaults say:
// client_encoding UTF8 (under another, text was stored garbled without an
// error), DateStyle ISO and standard_conforming_strings on
// (docs/poolers.md). Open uses it.
func ParseConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgdsn.ParseConfig(dsn) // pgx's own error can show part of a password
	if err != nil {
		return nil, fmt.Errorf("pgstore: parse dsn: %w", err)
	}
	return cfg, nil
}

// New wraps an existing pool. The Store does not own the pool's
// configuration, but Close closes it. Build the pool from ParseConfig,
// which pins the session settings pgx needs; a pool from pgxpool.New or
// pgxpool.ParseConfig takes a DBA's defaults as they are (docs/poolers.md).
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, heard: &heardBroadcasts{}, vendors: vendorRepo{pool}, workItems: workItemRepo{pool}}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// Option configures New.
type Option func(*Store)

// WithListenConfig sets the connection the change feed listens on
// (WatchChanges). By default it is the pool's. Set it when the pool goes
// through a connection pooler (PgBouncer, say): point this one at
// PostgreSQL itself. A listener that finds a pooler in its way does not
// listen (docs/poolers.md). By default the listener takes the pool's
// configuration and hooks, but not its query tracer: the elected waker
// queries the log 50 to 200 times a second. cfg's own tracer, if any, is
// used.
func WithListenConfig(cfg *pgx.ConnConfig) Option {
	return func(s *Store) { s.listenConfig = cfg }
}

// WithLogger sets the logger for what the Store does on its own, away from
// any call: today, a change feed listener that cannot listen where it is
// pointed. The default is slog.Default(), so it is not lost; nil discards
// (as sqlitecache.WithLogger).
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		s.log = l
	}
}

// Vendors returns the vendor repository.
func (s *Store) Vendors() repository.VendorRepository { return s.vendors }

// WorkItems returns the work item repository.
func (s *Store) WorkItems() repository.WorkItemRepository { return s.workItems }

// Pool returns the underlying pool, for callers that need raw SQL.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the server answers. Connection failures are returned
// wrapped, unchanged in kind.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pgstore: ping: %w", err)
	}
	return nil
}

// TakesWrites implements repository.WriteChecker: the setting a
// transaction begun now would have (default_transaction_read_only, from
// the server's configuration, the role's or the database's) and whether
// the server is in recovery.
func (s *Store) TakesWrites(ctx context.Context) (takes, standby bool, err error) {
	if err := s.pool.QueryRow(ctx,
		`SELECT current_setting('transaction_read_only') = 'off', pg_is_in_recovery()`).Scan(&takes, &standby); err != nil {
		return false, false, fmt.Errorf("pgstore: takes writes: %w", err)
	}
	return takes, standby, nil
}

// ProbeCommit implements repository.CommitProber with a transactional
// logical decoding message (prefix "pgfallback", which logical decoding
// consumers ignore): it takes a transaction ID and writes WAL, so its
// commit is flushed and, under synchronous replication, waited for like
// any write's; no row changes. (A transaction ID alone, txid_current,
// commits without waiting: PostgreSQL waits only for a transaction that
// wrote WAL.) Any role may call it.
func (s *Store) ProbeCommit(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, `SELECT pg_logical_emit_message(true, 'pgfallback', 'commit probe')`); err != nil {
		return fmt.Errorf("pgstore: probe commit: %w", err)
	}
	return nil
}

// Close closes the pool, waiting for connections in use to be released.
func (s *Store) Close() { s.pool.Close() }

var (
	_ repository.WriteChecker       = (*Store)(nil)
	_ repository.CommitProber       = (*Store)(nil)
	_ repository.VendorRepository   = vendorRepo{}
	_ repository.WorkItemRepository = workItemRepo{}
)
