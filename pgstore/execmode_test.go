package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/pgstore"
)

// Every statement works in each of pgx's query execution modes. A DSN
// chooses one with default_query_exec_mode; exec and simple_protocol are
// what pgx documents for a pool behind a transaction pooler (PgBouncer
// before 1.21, which cannot keep prepared statements). Those two never ask
// the server for a parameter's type, so pgx must be able to encode every
// argument from its Go type alone: a map for jsonb, or a []uuid.UUID,
// could not be.
func TestEveryQueryExecMode(t *testing.T) {
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := pgstore.Open(ctx, pgtest.WithParam(pgtest.NewDatabase(t), "default_query_exec_mode", mode))
			if err != nil {
				t.Fatalf("open: %v", pgdsn.Error(err))
			}
			defer s.Close()
			exerciseStore(ctx, t, s)
		})
	}
}
