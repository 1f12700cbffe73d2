package fallback_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// A PostgreSQL that answers every query, but slower than SlowCallDuration
// and well within PrimaryTimeout, trips the breaker (no call failed); the
// prober's pings are slow too, so it stays open; when the latency goes,
// the prober closes it.
func TestSlowPostgreSQLTripsTheBreakerAndRecovers(t *testing.T) {
	ctx := context.Background()
	direct := pgtest.NewDatabase(t)
	proxy, proxied := chaos.TestProxy(t, direct, "postgres")
	s := openStack(t, proxied, filepath.Join(t.TempDir(), "cache.db"), fallback.Config{
		PrimaryTimeout: 2 * time.Second, SlowCallDuration: 100 * time.Millisecond,
		MinRequests: 10, SlowCallRate: 0.5, OpenTimeout: 100 * time.Millisecond,
		DisableChangeFeed: true,
	})
	v, err := s.layer.Vendors().Create(ctx, repository.Vendor{Name: "slow", Status: repository.VendorOperational})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.layer.Vendors().Get(ctx, v.Name); err != nil {
		t.Fatal(err)
	}
	if err := s.layer.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	if err := proxy.Latency(200*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; s.layer.State() == fallback.Closed; i++ {
		if i == 30 {
			t.Fatalf("30 calls of at least 200 ms with SlowCallDuration 100 ms did not trip the breaker: %+v", s.layer.Stats())
		}
		if _, err := s.layer.Vendors().Get(ctx, v.Name); err != nil {
			t.Fatalf("a slow Get: %v", err)
		}
	}
	st := s.layer.Stats()
	if st.LastTripCause != fallback.TripSlowCalls || st.SlowCalls < 5 || len(st.PrimaryFailures) != 0 {
		t.Fatalf("tripped by %q with %d slow calls and failures %v; want slow calls and no failure",
			st.LastTripCause, st.SlowCalls, st.PrimaryFailures)
	}
	pctx, prov := fallback.WithProvenance(ctx)
	start := time.Now()
	if _, err := s.layer.Vendors().Get(pctx, v.Name); err != nil || prov.Origin().Source != fallback.SourceCache {
		t.Fatalf("Get while open: %v, origin %+v; want the cache's", err, prov.Origin())
	}
	if took := time.Since(start); took >= 100*time.Millisecond {
		t.Fatalf("a Get while open took %v: not at cache speed", took)
	}

	// Pings take 200 ms too: no recovery while PostgreSQL is slow.
	probes := st.ProbeCalls
	waitFor(t, 10*time.Second, "two slow probes", func() bool { return s.layer.Stats().ProbeCalls >= probes+2 })
	if s.layer.State() == fallback.Closed {
		t.Fatal("the breaker closed while every ping was slow")
	}

	if err := proxy.Latency(0, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the breaker to close once PostgreSQL is fast", func() bool {
		return s.layer.State() == fallback.Closed
	})
	pctx, prov = fallback.WithProvenance(ctx)
	if _, err := s.layer.Vendors().Get(pctx, v.Name); err != nil || prov.Origin().Source != fallback.SourcePrimary {
		t.Fatalf("Get after recovery: %v, origin %+v; want PostgreSQL's", err, prov.Origin())
	}
}
