package pgstore

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Plans cached before a schema change.
//
// pgx prepares each statement once per connection and reuses it. After a
// column of vendors or work_items changes type (a migration run while the
// application serves, an ALTER by hand), PostgreSQL refuses the next
// execution of every such statement whose result type changed: SQLSTATE
// 0A000, "cached plan must not change result type". pgx then forgets that
// statement on that connection and leaves the retry to the caller, so each
// statement failed once on each connection of each instance: measured, a
// Get and a List each failed once per pooled connection after
// "ALTER TABLE vendors ALTER COLUMN extractor_version TYPE varchar(200)",
// an answer the layer passes on to its callers. The plan is checked before
// the statement runs, so nothing was written and sending it again is safe,
// writes included; a transaction it failed in was rolled back and is run
// again whole.

// replanned runs op, and again while PostgreSQL refuses a plan it cached
// before a schema change: at most once per connection of the pool. Before
// each retry one of the pool's connections forgets its prepared statements
// (forgetPlans).
func replanned[T any](ctx context.Context, pool *pgxpool.Pool, op func() (T, error)) (T, error) {
	v, err := op()
	if !stalePlan(err) {
		return v, err
	}
	for range pool.Config().MaxConns { // Config copies the pool's configuration: only here, after a refusal
		if ctx.Err() != nil {
			break
		}
		forgetPlans(ctx, pool)
		if v, err = op(); !stalePlan(err) {
			break
		}
	}
	return v, err
}

// forgetPlans drops every statement one of the pool's connections
// prepared, there and on the server session it reaches.
//
// Directly connected, the refusal alone made pgx prepare that statement
// afresh on that connection. Behind a pooler that keeps prepared
// statements it does not: PgBouncer 1.21+ prepares a statement on each
// server session once, under a name of its own, keyed by its text, and a
// client that closes and prepares it again is handed the stale one, so
// every call of that statement on that server session kept failing until
// the pooler closed the session (server_lifetime, an hour by default), or
// someone ran RECONNECT on its console (PgBouncer's issue 1038). Measured
// through 1.24: every one of the fourteen statements of
// TestSchemaChangeWhileServing failed after the change, and again on each
// retry. DEALLOCATE ALL is what PgBouncer 1.22+ handles: it drops the
// server session's statements and the client's, and prepares them again
// as they are used. (1.21 passed it to the server and forgot nothing, so
// the session's other clients then met "prepared statement PGBOUNCER_n does
// not exist": use 1.22 or later.) pgx's DeallocateAll also empties its own
// caches, so that it prepares again rather than closing statements the
// pooler no longer knows (which PgBouncer answers with a FATAL). A
// connection it is sent on reaches the server session of its next
// transaction, most often the one just used (PgBouncer hands a client the
// most recently used server session, pgxpool the most recently released
// connection), and otherwise another that a later call then cleans.
// Directly connected it costs one connection's statements, prepared again
// as they are used: after a schema change, rarely.
func forgetPlans(ctx context.Context, pool *pgxpool.Pool) {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return // the retry meets the same error, or another
	}
	defer c.Release()
	if err := c.Conn().DeallocateAll(ctx); err != nil {
		c.Conn().Close(ctx) // its caches are emptied but the server's statements may not be: not to be used again
	}
}

// stalePlan reports whether err is PostgreSQL's refusal of a cached plan
// whose result type changed. The routine's name, unlike the message, is
// not translated.
func stalePlan(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "0A000" && pgErr.Routine == "RevalidateCachedQuery"
}

// collect runs a query on the pool and scans every row (replanned).
func collect[T any](ctx context.Context, pool *pgxpool.Pool, scan func(pgx.Row) (T, error), sql string, args ...any) ([]T, error) {
	return replanned(ctx, pool, func() ([]T, error) {
		rows, err := pool.Query(ctx, sql, args...)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
	})
}
