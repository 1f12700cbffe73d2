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

// storeWithout opens a store on a fresh database with migration version
// and every later one undone: a schema that was never migrated so far.
func storeWithout(t *testing.T, ctx context.Context, version int64) *pgstore.Store {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	st, err := migrations.Status(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st {
		if m.Version >= version {
			if err := migrations.Down(ctx, dsn); err != nil {
				t.Fatal(err)
			}
		}
	}
	s, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
