package pgstore_test

import (
	"context"
	"testing"

	"github.com/pgfallback/pgfallback/integration/pgtest"
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
