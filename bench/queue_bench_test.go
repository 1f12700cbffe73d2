package bench_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// queueKeys is how many distinct vendors the write benchmarks cycle
// through; the queue is drained (off the clock) every queueKeys writes, so
// each key has at most one pending write and the queue never holds more
// than queueKeys (below queueLimit: ErrQueueFull is never hit). Enqueue's
// limit check counts the pending writes, so its cost is that at a queue
// depth of 0 to queueKeys-1 (half of it on average).
const (
	queueKeys  = 5000
	queueLimit = fallback.DefaultMaxQueuedWrites
)

func openBenchCache(b *testing.B) *sqlitecache.Cache {
	b.Helper()
	c, err := sqlitecache.Open(filepath.Join(b.TempDir(), "cache.db"),
		sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// seedVendors caches n vendors at version 1, as PostgreSQL's rows.
func seedVendors(b *testing.B, c *sqlitecache.Cache, n int) []repository.Vendor {
	b.Helper()
	t := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	vs := make([]repository.Vendor, n)
	for i := range vs {
		vs[i] = repository.Vendor{
			ID: uuid.New(), Name: fmt.Sprintf("vendor-%04d", i), Status: repository.VendorOperational,
			Version: 1, ExtractorVersion: "2.3.1", Metadata: metadata(i), CreatedAt: t, UpdatedAt: t, CreatedBy: "bench",
		}
	}
	if err := c.SetVendors(context.Background(), vs); err != nil {
		b.Fatal(err)
	}
	return vs
}

// drainQueue completes every pending write as if replayed, caching the
// write's result (its vendor at BaseVersion+1) with the pending mark
// cleared.
func drainQueue(b *testing.B, c *sqlitecache.Cache) {
	b.Helper()
	ctx := context.Background()
	qs, err := c.PendingWrites(ctx, 0)
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range qs {
		v := q.Write.Vendor
		v.Version = q.Write.BaseVersion + 1
		if err := c.CompleteWrite(ctx, q, sqlitecache.Row{Vendor: &v}); err != nil {
			b.Fatal(err)
		}
	}
}

// deadStore is a real *pgstore.Store whose server is unreachable: its
// address is a loopback port nobody listens on, so every connection
// attempt is refused at once, as when PostgreSQL is down.
func deadStore(b *testing.B) *pgstore.Store {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pool, err := pgxpool.New(context.Background(), "postgres://bench@"+addr+"/bench?sslmode=disable&connect_timeout=1")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pgstore.New(pool)
}

// BenchmarkQueueWrite compares the cost of one vendor write kept in the
// cache file: SetVendor (the write-through of a row PostgreSQL returned,
// synchronous=NORMAL), Enqueue (a queued update and its pending entry in
// one fsync'd transaction, limit 10,000), and the fallback layer's whole
// queued Update with its breaker open (validation, the cache read the write
// builds on, Enqueue) over a real pgstore.Store whose server is down.
//
//	go test -run '^$' -bench QueueWrite -benchmem -count 10 ./bench/ | benchstat -
func BenchmarkQueueWrite(b *testing.B) {
	ctx := context.Background()

	b.Run("SetVendor", func(b *testing.B) {
		c := openBenchCache(b)
		vs := seedVendors(b, c, queueKeys)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			v := vs[i%queueKeys]
			v.Version = int64(i + 2) // above the cached one: every call writes
			if err := c.SetVendor(ctx, v); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("Enqueue", func(b *testing.B) {
		c := openBenchCache(b)
		vs := seedVendors(b, c, queueKeys)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			k := i % queueKeys
			if k == 0 && i > 0 {
				b.StopTimer()
				drainQueue(b, c)
				b.StartTimer()
			}
			v := vs[k]
			w := repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityVendor, Vendor: v, BaseVersion: v.Version}
			after := v
			after.Version++
			if _, err := c.Enqueue(ctx, w, sqlitecache.Row{Vendor: &after}, queueLimit); err != nil {
				b.Fatal(err)
			}
			vs[k].Version++
		}
	})

	b.Run("LayerQueuedUpdate", func(b *testing.B) {
		c := openBenchCache(b)
		vs := seedVendors(b, c, queueKeys)
		l, err := fallback.New(deadStore(b), c, fallback.Config{
			Logger: quiet, OpenTimeout: time.Hour, DisableChangeFeed: true, MaxQueuedWrites: queueLimit,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		deadline := time.Now().Add(30 * time.Second)
		for l.State() != fallback.Open {
			if time.Now().After(deadline) {
				b.Fatalf("the breaker did not open: %+v", l.Stats())
			}
			l.Vendors().Get(ctx, vs[0].Name) // refused: counts as an outage
		}
		qctx := fallback.WithWriteQueue(ctx)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			k := i % queueKeys
			if k == 0 && i > 0 {
				b.StopTimer()
				drainQueue(b, c)
				if _, err := l.Queue(ctx); err != nil { // the layer recounts: no key pending
					b.Fatal(err)
				}
				b.StartTimer()
			}
			v := vs[k]
			v.Metadata = metadata(i)
			out, err := l.Vendors().Update(qctx, v)
			if err != nil {
				b.Fatal(err)
			}
			if out.Version != v.Version+1 {
				b.Fatalf("queued update returned version %d, want %d", out.Version, v.Version+1)
			}
			vs[k].Version = out.Version
		}
		b.StopTimer()
		if s := l.Stats(); s.State != fallback.Open || s.Queued.Queued != uint64(b.N) {
			b.Fatalf("state %v, %d queued; want open, %d", s.State, s.Queued.Queued, b.N)
		}
	})
}

// BenchmarkReplay measures replay throughput against a real PostgreSQL:
// replayN vendor updates (different keys, their rows created in PostgreSQL
// first) are queued in the cache, then a fallback layer is started over the
// store and the cache, whose replayer applies them at once (the queue is
// not empty at start), each with pgstore's ApplyWrite (one PostgreSQL
// transaction recording the write's ID) and CompleteWrite. The clock runs
// from the layer's start until Layer.Queue reports nothing pending.
//
//	go test -run '^$' -bench Replay -benchmem -count 10 ./bench/ | benchstat -
func BenchmarkReplay(b *testing.B) {
	const replayN = 1000
	ctx := context.Background()
	store, err := pgstore.Open(ctx, pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	cache := openBenchCache(b)
	vs := make([]repository.Vendor, replayN)
	for i := range vs {
		if vs[i], err = store.Vendors().Create(ctx, repository.Vendor{
			Name: fmt.Sprintf("replay-%04d", i), Status: repository.VendorOperational,
			ExtractorVersion: "2.3.1", Metadata: metadata(i), CreatedBy: "bench",
		}); err != nil {
			b.Fatal(err)
		}
	}
	if err := cache.SetVendors(ctx, vs); err != nil {
		b.Fatal(err)
	}

	var elapsed time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for k := range vs {
			v := vs[k]
			v.Metadata = metadata(i*replayN + k)
			w := repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityVendor, Vendor: v, BaseVersion: v.Version}
			after := v
			after.Version++
			if _, err := cache.Enqueue(ctx, w, sqlitecache.Row{Vendor: &after}, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		l, err := fallback.New(store, cache, fallback.Config{
			Logger: quiet, DisableChangeFeed: true, ReplayInterval: time.Millisecond,
		})
		if err != nil {
			b.Fatal(err)
		}
		deadline := start.Add(2 * time.Minute)
		// The layer's own count (an atomic) is polled, not Queue, whose
		// SQLite read would compete with the replay for the two cores;
		// Queue confirms the end.
		poll := time.NewTicker(time.Millisecond)
		for {
			if l.Stats().Queued.Pending == 0 {
				s, err := l.Queue(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if s.Pending == 0 {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("replay did not finish: stats %+v", l.Stats().Queued)
			}
			<-poll.C
		}
		elapsed += time.Since(start)
		poll.Stop()
		b.StopTimer()
		qs, err := l.Queue(ctx)
		if err != nil {
			b.Fatal(err)
		}
		// Closed first: the replayer counts a write after removing it from
		// the queue, so the counters are final only once it has stopped.
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		if st := l.Stats().Queued; st.Replayed != replayN || st.DeadLettered != 0 || qs.DeadLetters != 0 {
			b.Fatalf("replayed %d, dead-lettered %d (%d dead letters); want %d replayed, none dead: %s",
				st.Replayed, st.DeadLettered, qs.DeadLetters, replayN, st.LastError)
		}
		for k := range vs {
			vs[k].Version++
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*replayN)/elapsed.Seconds(), "writes/s")
	// PostgreSQL holds every write.
	got, err := store.Vendors().Get(ctx, vs[replayN-1].Name)
	if err != nil || got.Version != vs[replayN-1].Version {
		b.Fatalf("PostgreSQL row %q at version %d (%v), want %d", vs[replayN-1].Name, got.Version, err, vs[replayN-1].Version)
	}
}
