package fallback

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/repository"
)

// A server that answers reads and refuses writes (SQLSTATE 25006: a
// provider's full-disk guard, a maintenance window) is not an outage: a
// run of refused writes — far more than trip the breaker on failures —
// leaves it closed, reads keep coming from PostgreSQL (a key the cache
// lacks included), each write fails as not written, and Stats, the health
// check and the log say so until a write is applied again.
func TestReadOnlyPrimaryRefusesWritesAndServesReads(t *testing.T) {
	db := newFakeDB()
	logs := &testutil.Buffer{}
	l, cache := newTestLayer(t, db, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx := context.Background()
	db.put(vendor("cached"))
	db.put(vendor("uncached"))
	cached, err := l.Vendors().Get(ctx, "cached")
	if err != nil {
		t.Fatal(err)
	}
	flush(t, l)

	db.readOnly.Store(true)
	for i := range 50 { // ConsecutiveFailures is 5
		up := cached
		up.Status = repository.VendorBroken
		_, err := l.Vendors().Update(ctx, up)
		var pgErr *pgconn.PgError
		if !errors.Is(err, repository.ErrUnavailable) || errors.Is(err, repository.ErrOutcomeUnknown) ||
			!errors.As(err, &pgErr) || pgErr.Code != "25006" {
			t.Fatalf("update %d on a read-only server: %v, want ErrUnavailable (not written) with the 25006 cause", i, err)
		}
	}
	if err := l.Vendors().Delete(ctx, "cached"); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("delete on a read-only server: %v", err)
	}
	for _, name := range []string{"cached", "uncached"} {
		rctx, prov := WithProvenance(ctx)
		v, err := l.Vendors().Get(rctx, name)
		if err != nil || prov.Origin().Source != SourcePrimary || v.Version != 1 {
			t.Fatalf("Get %s on a read-only server: %+v, %v from %v; want version 1 from PostgreSQL", name, v, err, prov.Origin().Source)
		}
	}
	s := l.Stats()
	if s.State != Closed || s.Transitions != 0 {
		t.Fatalf("the breaker moved on refused writes: %v, %d transitions", s.State, s.Transitions)
	}
	if s.ReadOnlySince.IsZero() || s.PrimaryFailures[FailReadOnly] != 51 || len(s.PrimaryFailures) != 1 {
		t.Fatalf("Stats: read-only since %v, failures %v; want a time, and 51 read_only", s.ReadOnlySince, s.PrimaryFailures)
	}
	h := l.CheckHealth()
	if h.Status != "degraded" || !h.Ready || !strings.Contains(h.Reason, "refuses writes") || h.ReadOnlySince == nil {
		t.Fatalf("health on a read-only server: %+v", h)
	}
	flush(t, l)
	if e, _, err := cache.GetVendor(ctx, "cached"); err != nil || e.Version != 1 {
		t.Fatalf("a refused write reached the cache: %+v, %v", e, err)
	}

	db.readOnly.Store(false)
	if _, err := l.Vendors().Update(ctx, cached); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats(); !s.ReadOnlySince.IsZero() || l.CheckHealth().Status != "ok" {
		t.Fatalf("after a write was applied: read-only since %v, health %+v", s.ReadOnlySince, l.CheckHealth())
	}
	out := logs.String()
	if n := strings.Count(out, "PostgreSQL refuses writes (read-only)"); n != 1 {
		t.Errorf("the refusals were logged %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "PostgreSQL takes writes again"); n != 1 {
		t.Errorf("the end was logged %d times, want once:\n%s", n, out)
	}
}
