package sqlitecache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

// Run: go test -run '^$' -bench . -benchmem ./sqlitecache/
//
// Get benchmarks read one entry with about 1 KB of JSON metadata (the
// memoized path after the first call: one indexed read of rev and
// cached_at, then a deep copy). "ctx" uses a cancellable context, as a
// request handler would; database/sql starts a goroutine per query for
// those, which the Get path avoids.

func BenchmarkGetVendor(b *testing.B) {
	c, _ := openTest(b)
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.GetVendor(bg, "acme"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serial_ctx", func(b *testing.B) {
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.GetVendor(ctx, "acme"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("serial_nomemo", func(b *testing.B) {
		c, _ := openTest(b, WithMemoSize(0))
		if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.GetVendor(bg, "acme"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := c.GetVendor(bg, "acme"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkGetWorkItem(b *testing.B) {
	c, _ := openTest(b)
	w := testWorkItem(1)
	if err := c.SetWorkItem(bg, w); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := c.GetWorkItem(bg, w.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := c.GetWorkItem(bg, w.ID); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkSetVendor(b *testing.B) {
	c, _ := openTest(b)
	v := testVendor("acme", 1)
	b.ReportAllocs()
	for b.Loop() {
		v.Version++ // a real write every time, not a refused regression
		if err := c.SetVendor(bg, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSetVendorsBulk(b *testing.B) {
	const n = 10_000
	vs := make([]repository.Vendor, n)
	for i := range vs {
		vs[i] = testVendor(fmt.Sprintf("vendor-%06d", i), 1)
	}
	c, _ := openTest(b)
	b.ReportAllocs()
	var total int
	start := time.Now()
	for b.Loop() {
		for i := range vs {
			vs[i].Version++
		}
		if err := c.SetVendors(bg, vs); err != nil {
			b.Fatal(err)
		}
		total += n
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "entries/s")
}

// fill100k caches 100,000 work items, half of them stamped 2 TTLs ago.
func fill100k(b *testing.B) (*Cache, *fakeClock) {
	b.Helper()
	c, clk := openTest(b)
	batch := make([]repository.WorkItem, 0, 10_000)
	for i := range 100_000 {
		w := testWorkItem(1)
		w.Metadata = map[string]any{"i": float64(i)}
		batch = append(batch, w)
		if len(batch) == cap(batch) {
			if err := c.SetWorkItems(bg, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
		if i == 49_999 {
			clk.Advance(2 * c.WorkItemTTL())
		}
	}
	return c, clk
}

func BenchmarkClearStale50kOf100k(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		c, _ := fill100k(b)
		b.StartTimer()
		n, err := c.ClearStale(bg)
		if err != nil || n != 50_000 {
			b.Fatalf("ClearStale = %d, %v", n, err)
		}
		b.StopTimer()
		_ = c.Close()
		b.StartTimer()
	}
}

func BenchmarkStats100k(b *testing.B) {
	c, _ := fill100k(b)
	b.ReportAllocs()
	for b.Loop() {
		s, err := c.Stats(bg)
		if err != nil || s.TotalEntries != 100_000 {
			b.Fatalf("Stats = %+v, %v", s, err)
		}
	}
}

// BenchmarkCachedVendorNames: the question a follower asks its cache for
// each batch of changes (which of these keys do you hold?), with batches of
// varying size as a stream of commits gives them: 1,000 of 10,000 vendors
// cached, each batch naming 10 to 200 vendors, about a tenth of them cached.
func BenchmarkCachedVendorNames(b *testing.B) {
	c, _ := openTest(b)
	vs := make([]repository.Vendor, 1000)
	for i := range vs {
		vs[i] = testVendor(fmt.Sprintf("w%05d", i*10), 1)
	}
	if err := c.SetVendors(bg, vs); err != nil {
		b.Fatal(err)
	}
	// keys=1: a follower's catch-up for one commit (cached); keys=10-200:
	// batches of changes, a tenth of whose keys are cached.
	one := [][]string{{"w00010"}, {"w00020"}, {"w00030"}}
	batches := make([][]string, 64)
	for i := range batches {
		n := 10 + (i*37)%191
		for j := range n {
			batches[i] = append(batches[i], fmt.Sprintf("w%05d", (i*7919+j*13)%10_000))
		}
	}
	// Cancellable, as a follower's is (the layer's lifetime).
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	for _, bc := range []struct {
		name string
		keys [][]string
	}{{"keys=1", one}, {"keys=10-200", batches}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := c.CachedVendorNames(ctx, bc.keys[i%len(bc.keys)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
