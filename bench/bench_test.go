package bench_test

import (
	"context"

	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const vendors = 1000

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// metadata is about 1 KB of JSON, the size the targets are stated for.
func metadata(i int) map[string]any {
	return map[string]any{
		"index":    float64(i),
		"region":   "eu-west-1",
		"tags":     []any{"retail", "daily", "priority"},
		"endpoint": "https://example.com/api/v2/vendors/" + fmt.Sprint(i),
		"notes":    strings.Repeat("lorem ipsum dolor sit amet ", 30),
		"limits":   map[string]any{"rps": 50.0, "burst": 200.0, "enabled": true},
	}
}

type fixture struct {
	store *pgstore.Store
	cache *sqlitecache.Cache
	layer *fallback.Layer
	names []string
}

func newFixture(b *testing.B) *fixture {
	b.Helper()
	ctx := context.Background()
	store, err := pgstore.Open(ctx, pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	cache, err := sqlitecache.Open(filepath.Join(b.TempDir(), "cache.db"),
		sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cache.Close() })
	f := &fixture{store: store, cache: cache}
	var all []repository.Vendor
	for i := range vendors {
		v, err := store.Vendors().Create(ctx, repository.Vendor{
			Name: fmt.Sprintf("vendor-%04d", i), Status: repository.VendorOperational,
			ExtractorVersion: "2.3.1", Metadata: metadata(i), CreatedBy: "bench",
		})
		if err != nil {
			b.Fatal(err)
		}
		f.names = append(f.names, v.Name)
		all = append(all, v)
	}
	if err := cache.SetVendors(ctx, all); err != nil {
		b.Fatal(err)
	}
	f.layer, err = fallback.New(store, cache, fallback.Config{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.layer.Close() })
	// Steady state: the layer has written every key through once, as a
	// running service has; an unchanged key is re-sent only once per
	// refresh interval (Config.WriteThroughRefresh). The first read of each
	// key costs one background cache write, measured by
	// BenchmarkGetVendorFirstRead.
	for _, n := range f.names {
		if _, err := f.layer.Vendors().Get(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.layer.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	return f
}

// openLayer returns a layer over the same cache whose primary is down and
// whose breaker is open.
func (f *fixture) openLayer(b *testing.B) *fallback.Layer {
	refused := fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
	dead := &mock.Primary{PingFn: func(context.Context) error { return refused }}
	dead.VendorRepo.GetFn = func(context.Context, string) (repository.Vendor, error) { return repository.Vendor{}, refused }
	l, err := fallback.New(dead, f.cache, fallback.Config{Logger: quiet, OpenTimeout: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	for l.State() != fallback.Open {
		l.Vendors().Get(context.Background(), f.names[0])
	}
	return l
}

func getLoop(b *testing.B, names []string, get func(context.Context, string) error) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := get(ctx, names[i%len(names)]); err != nil {
			b.Fatal(err)
		}
	}
}

func getParallel(b *testing.B, names []string, get func(context.Context, string) error) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := get(ctx, names[i%len(names)]); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

// BenchmarkGetVendor compares one Get of a vendor with ~1 KB of metadata:
// the pgx store over loopback TCP, the SQLite cache, and the fallback layer
// healthy (Postgres answers, write-through on) and open (served from cache).
// Sub-benchmarks are named impl=..., so benchstat can put them side by side:
//
//	go test -run '^$' -bench GetVendor -benchmem -count 10 ./bench/ | benchstat -col /impl -
func BenchmarkGetVendor(b *testing.B) {
	f := newFixture(b)
	for _, impl := range f.impls(b) {
		b.Run("impl="+impl.name, func(b *testing.B) { getLoop(b, f.names, impl.get) })
	}
}

// BenchmarkGetVendorFirstRead is the healthy layer's Get when every read
// is the first of its key in the refresh interval, so each one also queues
// a cache write: the cost when the working set is larger than what one
// refresh interval re-reads. Flushing at the end charges the writer's work
// to the benchmark.
func BenchmarkGetVendorFirstRead(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	layer, err := fallback.New(f.store, f.cache, fallback.Config{Logger: quiet, WriteThroughRefresh: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer layer.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := layer.Vendors().Get(ctx, f.names[i%len(f.names)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := layer.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkGetVendorParallel is BenchmarkGetVendor with b.RunParallel.
func BenchmarkGetVendorParallel(b *testing.B) {
	f := newFixture(b)
	for _, impl := range f.impls(b) {
		b.Run("impl="+impl.name, func(b *testing.B) { getParallel(b, f.names, impl.get) })
	}
}

type impl struct {
	name string
	get  func(context.Context, string) error
}

func (f *fixture) impls(b *testing.B) []impl {
	open := f.openLayer(b)
	soft, err := fallback.New(f.store, f.cache, fallback.Config{Logger: quiet, SoftTimeout: 50 * time.Millisecond, DisableChangeFeed: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { soft.Close() })
	return []impl{
		{"pgstore", func(ctx context.Context, n string) error { _, err := f.store.Vendors().Get(ctx, n); return err }},
		// The bare store with the deadline the layer puts on every call:
		// pgx watches a cancellable context, which costs allocations.
		{"pgstore-deadline", func(ctx context.Context, n string) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := f.store.Vendors().Get(ctx, n)
			return err
		}},
		{"fallback-healthy", func(ctx context.Context, n string) error { _, err := f.layer.Vendors().Get(ctx, n); return err }},
		// With a soft timeout each read's call runs on a goroutine of its
		// own, under a timer.
		{"fallback-healthy-soft", func(ctx context.Context, n string) error { _, err := soft.Vendors().Get(ctx, n); return err }},
		{"sqlitecache", func(ctx context.Context, n string) error { _, _, err := f.cache.GetVendor(ctx, n); return err }},
		{"fallback-open", func(ctx context.Context, n string) error { _, err := open.Vendors().Get(ctx, n); return err }},
	}
}

// BenchmarkWarmAll mirrors 100,000 rows (50,000 vendors and 50,000 work
// items) from PostgreSQL into an empty cache.
func BenchmarkWarmAll(b *testing.B) {
	ctx := context.Background()
	store, err := pgstore.Open(ctx, pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	const half = 50_000
	if _, err := store.Pool().Exec(ctx, `
		INSERT INTO vendors (id, name, status, extractor_version, metadata, created_by)
		SELECT gen_random_uuid(), 'vendor-' || g, 'operational', '1.0.0',
		       jsonb_build_object('i', g, 'pad', repeat('x', 200)), 'bench'
		FROM generate_series(1, $1) g`, half); err != nil {
		b.Fatal(err)
	}
	if _, err := store.Pool().Exec(ctx, `
		INSERT INTO work_items (id, type, title, status, metadata, created_by)
		SELECT gen_random_uuid(), 'task', 'task ' || g, 'active',
		       jsonb_build_object('i', g, 'pad', repeat('x', 200)), 'bench'
		FROM generate_series(1, $1) g`, half); err != nil {
		b.Fatal(err)
	}
	cache, err := sqlitecache.Open(filepath.Join(b.TempDir(), "cache.db"),
		sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	for _, paging := range []string{"keyset", "offset"} {
		b.Run(paging, func(b *testing.B) {
			var primary fallback.Primary = store
			if paging == "offset" {
				primary = offsetStore{store} // LIMIT/OFFSET, as before keyset paging
			}
			warmAll(b, primary, cache, 2*half)
		})
	}
}

// offsetStore hides the store's keyset paging (and its change feed).
type offsetStore struct{ s *pgstore.Store }

func (o offsetStore) Vendors() repository.VendorRepository {
	return struct{ repository.VendorRepository }{o.s.Vendors()}
}
func (o offsetStore) WorkItems() repository.WorkItemRepository {
	return struct{ repository.WorkItemRepository }{o.s.WorkItems()}
}
func (o offsetStore) Ping(ctx context.Context) error { return o.s.Ping(ctx) }

func warmAll(b *testing.B, primary fallback.Primary, cache *sqlitecache.Cache, want int) {
	ctx := context.Background()
	layer, err := fallback.New(primary, cache, fallback.Config{
		Logger: quiet, Warm: fallback.WarmAll, WarmBatch: 5000, WarmLimit: 1_000_000, PrimaryTimeout: time.Minute,
		DisableChangeFeed: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer layer.Close()
	b.ResetTimer()
	var rows int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := cache.ClearAll(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rep, err := layer.Warm(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Refreshed != want {
			b.Fatalf("warmed %d rows, want %d", rep.Refreshed, want)
		}
		rows += rep.Refreshed
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
