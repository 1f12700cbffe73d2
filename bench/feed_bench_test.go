package bench_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// instance is one application instance over a shared database.
func instance(b *testing.B, dsn string, cfg fallback.Config, wrap func(*pgstore.Store) fallback.Primary) (*pgstore.Store, *sqlitecache.Cache, *fallback.Layer) {
	b.Helper()
	return instanceIn(b, b.TempDir(), dsn, cfg, wrap)
}

// instanceIn is instance with its cache file in dir.
func instanceIn(b *testing.B, dir, dsn string, cfg fallback.Config, wrap func(*pgstore.Store) fallback.Primary) (*pgstore.Store, *sqlitecache.Cache, *fallback.Layer) {
	b.Helper()
	ctx := context.Background()
	store, err := pgstore.Open(ctx, dsn, pgstore.WithChangeWakeInterval(envDuration(b, wakeIntervalEnv)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	cache, err := sqlitecache.Open(filepath.Join(dir, "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cache.Close() })
	cfg.Logger = quiet
	var primary fallback.Primary = store
	if wrap != nil {
		primary = wrap(store)
	}
	layer, err := fallback.New(primary, cache, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { layer.Close() })
	return store, cache, layer
}

func waitFeed(b *testing.B, l *fallback.Layer) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for l.Stats().Feed.State != fallback.FeedFollowing {
		if time.Now().After(deadline) {
			b.Fatalf("the change feed never followed: %+v", l.Stats().Feed)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkFeedPeerLatency: a commit on instance B until instance A's
// cache holds the new version, on loopback. Reported as p50 and p99.
func BenchmarkFeedPeerLatency(b *testing.B) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(b)
	_, _, lb := instance(b, dsn, fallback.Config{ChangeFeedMinInterval: feedMinInterval(b)}, nil)
	_, cacheA, la := instance(b, dsn, fallback.Config{ChangeFeedPoll: time.Hour, ChangeFeedMinInterval: feedMinInterval(b)}, nil) // notifications only
	const keys = 100
	names := make([]string, keys)
	for i := range keys {
		v, err := lb.Vendors().Create(ctx, repository.Vendor{Name: fmt.Sprintf("peer-%03d", i), Status: repository.VendorOperational, Metadata: metadata(i)})
		if err != nil {
			b.Fatal(err)
		}
		names[i] = v.Name
		if _, err := la.Vendors().Get(ctx, v.Name); err != nil {
			b.Fatal(err)
		}
	}
	if err := la.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	waitFeed(b, la)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := names[i%keys]
		v, err := lb.Vendors().Get(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		v.Status = []repository.VendorStatus{repository.VendorOperational, repository.VendorBroken}[i%2]
		start := time.Now()
		out, err := lb.Vendors().Update(ctx, v)
		if err != nil {
			b.Fatal(err)
		}
		for {
			got, _, err := cacheA.GetVendor(ctx, name)
			if err == nil && got.Version >= out.Version {
				break
			}
			if time.Since(start) > 10*time.Second {
				b.Fatalf("instance a never saw %s version %d", name, out.Version)
			}
			time.Sleep(50 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
}

// quietStore is a store whose notifications never arrive, so that only
// the timed catch-up applies changes.
type quietStore struct{ *pgstore.Store }

func (q quietStore) WatchChanges(ctx context.Context, _ func(bool)) error {
	<-ctx.Done()
	return ctx.Err()
}

// BenchmarkRecovery100k: a cache holding 100,000 keys, 100 of which changed
// during an outage, brought up to date two ways, side by side: catching up
// from the change log (the layer's recovery with the feed) and WarmCached
// (re-reading every cached key, the recovery without it).
func BenchmarkRecovery100k(b *testing.B) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(b)
	store, err := pgstore.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	const n = 100_000
	if _, err := store.Pool().Exec(ctx, `
		INSERT INTO vendors (id, name, status, extractor_version, metadata, created_by)
		SELECT gen_random_uuid(), 'vendor-' || lpad(g::text, 6, '0'), 'operational', '1.0.0',
		       jsonb_build_object('i', g, 'pad', repeat('x', 200)), 'bench'
		FROM generate_series(1, $1) g`, n); err != nil {
		b.Fatal(err)
	}
	change := func(round int) {
		if _, err := store.Pool().Exec(ctx, `UPDATE vendors SET version = version + 1, status = 'broken'
			WHERE name IN (SELECT 'vendor-' || lpad((g * 997 % $1 + 1)::text, 6, '0') FROM generate_series($2::int, $2::int + 99) g)`,
			n, round*100); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("catch-up", func(b *testing.B) {
		s, c, l := instance(b, dsn, fallback.Config{ChangeFeedPoll: time.Hour, WarmBatch: 5000, PrimaryTimeout: time.Minute, WarmTimeout: 10 * time.Minute},
			func(s *pgstore.Store) fallback.Primary { return quietStore{s} })
		fill(b, s, c)
		if err := l.CatchUp(ctx); err != nil { // the baseline: the head, then a warm of the 100,000 keys
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			change(i)
			b.StartTimer()
			if err := l.CatchUp(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm-cached", func(b *testing.B) {
		s, c, l := instance(b, dsn, fallback.Config{DisableChangeFeed: true, WarmBatch: 5000, PrimaryTimeout: time.Minute, WarmTimeout: 10 * time.Minute}, nil)
		fill(b, s, c)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			change(i)
			b.StartTimer()
			rep, err := l.Warm(ctx)
			if err != nil || rep.Refreshed != n {
				b.Fatalf("warm: %+v, %v", rep, err)
			}
		}
	})
}

// fill copies every vendor into the cache, a page at a time by key.
func fill(b *testing.B, s *pgstore.Store, c *sqlitecache.Cache) {
	b.Helper()
	ctx := context.Background()
	pager := s.Vendors().(fallback.VendorPager)
	after := ""
	for {
		page, err := pager.ListAfter(ctx, after, 5000)
		if err != nil {
			b.Fatal(err)
		}
		if len(page) == 0 {
			return
		}
		if err := c.SetVendors(ctx, page); err != nil {
			b.Fatal(err)
		}
		after = page[len(page)-1].Name
	}
}
