package sqlitecache

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgfallback/pgfallback/repository"
)

// TestConcurrentUseAndClose hammers one cache from many goroutines and
// closes it underneath them: every call either succeeds or says ErrClosed
// (run with -race).
func TestConcurrentUseAndClose(t *testing.T) {
	c, _ := openTest(t, WithMemoSize(4)) // a tiny memo: evictions under load
	w := testWorkItem(1)
	if err := c.SetWorkItem(bg, w); err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "c", "d", "e", "f"}
	for _, n := range names {
		if err := c.SetVendor(bg, testVendor(n, 1)); err != nil {
			t.Fatal(err)
		}
	}
	ok := func(err error) bool {
		return err == nil || errors.Is(err, ErrClosed) || errors.Is(err, repository.ErrNotFound)
	}
	var wg sync.WaitGroup
	var done atomic.Int64
	start := make(chan struct{})
	for g := range 8 {
		wg.Go(func() {
			<-start
			for i := range 200 {
				name := names[(g+i)%len(names)]
				var err error
				switch i % 5 {
				case 0:
					err = c.SetVendor(bg, testVendor(name, int64(i+1)))
				case 1:
					_, _, err = c.GetWorkItem(bg, w.ID)
				case 2:
					_, err = c.ListVendors(bg, repository.VendorFilter{Limit: 3})
				case 3:
					_, err = c.Stats(bg)
				default:
					var v repository.Vendor
					v, _, err = c.GetVendor(bg, name)
					if err == nil && v.Name != name {
						t.Errorf("GetVendor(%q) returned %q", name, v.Name)
					}
				}
				if !ok(err) {
					t.Errorf("op %d: %v", i%5, err)
					return
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				done.Add(1)
			}
		})
	}
	close(start)
	wg.Go(func() {
		// Close mid-run, once a good share of the calls went through.
		for done.Load() < 400 {
			runtime.Gosched()
		}
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	wg.Wait()
}

func TestMemoBounds(t *testing.T) {
	m := newMemo[int, int](3, 10_000)
	for i := range 10 {
		m.put(i, 1, 1000, i)
	}
	if len(m.m) != 3 || m.bytes != 3000 {
		t.Errorf("count bound: %d entries, %d bytes", len(m.m), m.bytes)
	}
	m = newMemo[int, int](100, 10_000)
	for i := range 20 {
		m.put(i, 1, 1200, i)
	}
	if m.bytes > 10_000 || len(m.m) != 8 {
		t.Errorf("byte bound: %d entries, %d bytes", len(m.m), m.bytes)
	}
	m.put(99, 1, 1300, 0) // above maxBytes/8: not kept
	if _, ok := m.get(99); ok {
		t.Error("oversized entry memoized")
	}
	m.drop(3)
	var sum int64
	for _, e := range m.m {
		sum += e.size
	}
	if sum != m.bytes {
		t.Errorf("bytes %d, entries sum to %d", m.bytes, sum)
	}
}
