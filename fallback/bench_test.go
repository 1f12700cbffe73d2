package fallback

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkLayerOverhead measures what the layer adds to a healthy Get,
// with a primary that answers instantly from memory: the difference between
// the two sub-benchmarks is the layer's own cost per call (breaker,
// deadline, classification, write-through bookkeeping), to set against a
// real PostgreSQL round trip (see bench/).
func BenchmarkLayerOverhead(b *testing.B) {
	db := newFakeDB()
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("vendor-%04d", i)
		db.put(vendor(names[i]))
	}
	l, _ := newTestLayer(b, db, Config{})
	lo, _ := newTestLayer(b, db, Config{Observer: &FuncObserver{}}) // an observer that does nothing: the hook's own cost
	ls, _ := newTestLayer(b, db, Config{SoftTimeout: time.Second})  // the soft timeout's goroutine and timer per read
	primary := db.primary()
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		get  func(string) error
	}{
		{"primary", func(n string) error { _, err := primary.Vendors().Get(ctx, n); return err }},
		{"layer", func(n string) error { _, err := l.Vendors().Get(ctx, n); return err }},
		{"layer+observer", func(n string) error { _, err := lo.Vendors().Get(ctx, n); return err }},
		{"layer+soft", func(n string) error { _, err := ls.Vendors().Get(ctx, n); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := bc.get(names[i%len(names)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
