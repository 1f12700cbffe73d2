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
// before a schema change: at most once per connection of the pool, since
// each refusal makes that connection prepare the statement afresh.
func replanned[T any](ctx context.Context, pool *pgxpool.Pool, op func() (T, error)) (T, error) {
	v, err := op()
	if !stalePlan(err) {
		return v, err
	}
	for range pool.Config().MaxConns { // Config copies the pool's configuration: only here, after a refusal
		if ctx.Err() != nil {
			break
		}
		if v, err = op(); !stalePlan(err) {
			break
		}
	}
	return v, err
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
