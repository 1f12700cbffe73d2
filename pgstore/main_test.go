package pgstore_test

import (
	"context"
	"testing"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/migrations"
	"github.com/pgfallback/pgfallback/pgstore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openStore returns a Store on a fresh, migrated database of its own.
func openStore(t *testing.T) *pgstore.Store {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	s, err := pgstore.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// storeWithout opens a store on a fresh database with its newest n
// migrations undone: a schema that was never migrated so far.
func storeWithout(t *testing.T, ctx context.Context, n int) *pgstore.Store {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	for range n {
		if err := migrations.Down(ctx, dsn); err != nil {
			t.Fatal(err)
		}
	}
	s, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
