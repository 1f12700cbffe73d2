package prom_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/prom"
)

// BenchmarkObserverOverhead measures what the Prometheus observer adds to
// a healthy Get, over a primary that answers instantly from memory so
// that the layer's own cost is all there is to see: observer=none is the
// layer without an observer, observer=noop one whose methods do nothing
// (the hook's own cost: the Call, the provenance), observer=prom this
// package's. Compare with
//
//	go test -run '^$' -bench ObserverOverhead -benchmem -count 6 ./prom/ | benchstat -col /observer -
func BenchmarkObserverOverhead(b *testing.B) {
	p := newPrimary()
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("vendor-%04d", i)
		p.put(names[i])
	}
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		obs  fallback.Observer
	}{
		{"none", nil},
		{"noop", &fallback.FuncObserver{}},
		{"prom", prom.NewObserver()},
	} {
		b.Run("observer="+bc.name, func(b *testing.B) {
			l, _ := newLayer(b, p, bc.obs)
			vendors := l.Vendors()
			// One pass first, so that every sub-benchmark measures reads
			// whose write-through was already sent (see WriteThroughRefresh).
			for _, n := range names {
				if _, err := vendors.Get(ctx, n); err != nil {
					b.Fatal(err)
				}
			}
			if err := l.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := vendors.Get(ctx, names[i%len(names)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkObserverEnd is the Observer's End alone, for the call that
// dominates a healthy service: a Get answered by PostgreSQL.
func BenchmarkObserverEnd(b *testing.B) {
	obs := prom.NewObserver()
	ctx := context.Background()
	c := fallback.Call{Op: fallback.OpGet, Entity: "vendor", Origin: fallback.Origin{Source: fallback.SourcePrimary},
		Outcome: fallback.OutcomeOK, Duration: 300_000}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			obs.End(ctx, c)
		}
	})
}
