package fallback_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// One row that pgx cannot decode (written around validation, in plain
// SQL) opened the breaker after a few reads: unrelated writes then failed
// with ErrUnavailable and Lists came from the cache while PostgreSQL was
// healthy. Reading it is an answer about that row and must count as one.
func TestUndecodableRowDoesNotTripTheBreaker(t *testing.T) {
	ctx := context.Background()
	s := openStack(t, pgtest.NewDatabase(t), filepath.Join(t.TempDir(), "cache.db"), fallback.Config{ConsecutiveFailures: 3, DisableChangeFeed: true}) // the warm below is what is tested
	seed(t, s, 3)
	if _, err := s.layer.Vendors().Create(ctx, repository.Vendor{Name: "poison", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	if err := s.layer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	deep := `{"a":` + strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000) + `}`
	if _, err := s.store.Pool().Exec(ctx, `UPDATE vendors SET metadata = $1::jsonb, version = version + 1 WHERE name = 'poison'`, deep); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		pctx, prov := fallback.WithProvenance(ctx)
		_, err := s.layer.Vendors().Get(pctx, "poison")
		if !errors.Is(err, repository.ErrUnreadable) || errors.Is(err, repository.ErrUnavailable) {
			t.Fatalf("Get of the poison row: %v, want ErrUnreadable", err)
		}
		if o := prov.Origin(); o.Source == fallback.SourceCache {
			t.Fatal("Get of the poison row answered from the cache")
		}
		pctx, prov = fallback.WithProvenance(ctx)
		_, err = s.layer.Vendors().List(pctx, repository.VendorFilter{})
		if !errors.Is(err, repository.ErrUnreadable) {
			t.Fatalf("List over the poison row: %v, want ErrUnreadable", err)
		}
		if o := prov.Origin(); o.Source == fallback.SourceCache {
			t.Fatal("List served partial from the cache while PostgreSQL answers")
		}
	}
	st := s.layer.Stats()
	if st.State != fallback.Closed || len(st.PrimaryFailures) != 0 {
		t.Fatalf("state %v, failures %v after reading one bad row: want closed, none", st.State, st.PrimaryFailures)
	}
	if _, err := s.layer.Vendors().Create(ctx, repository.Vendor{Name: "unrelated", Status: repository.VendorOperational}); err != nil {
		t.Fatalf("an unrelated write after the bad reads: %v", err)
	}
	// A warm meets the row in its batch: it warms the rest and drops the
	// cached copy, which no longer shows what PostgreSQL holds.
	rep, err := s.layer.Warm(ctx)
	if err != nil || rep.Removed != 1 || rep.Refreshed < 3 {
		t.Fatalf("warm with an unreadable row: %+v, %v", rep, err)
	}
	if _, _, err := s.cache.GetVendor(ctx, "poison"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("the outdated copy of the unreadable row is still cached: %v", err)
	}
}
