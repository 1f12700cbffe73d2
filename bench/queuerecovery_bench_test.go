package bench_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// BenchmarkQueueRecovery measures what a user waits for after an outage with
// writes queued: recoveryWrites vendors (env PGFALLBACK_BENCH_QUEUED,
// default 10,000, the default MaxQueuedWrites) are cached, PostgreSQL is
// cut (a Toxiproxy in front of it), the breaker opens, and each vendor gets
// one update through the layer's Update with WithWriteQueue. The clock
// starts when PostgreSQL answers again and stops when the breaker has
// closed and the queue is empty: the prober's ping, the catch-up, the
// replay (which runs before the breaker closes) and the breaker closing.
// OpenTimeout is 100 ms, so the prober's wait is a small part of it.
//
// Sub-benchmarks compare replay batch sizes side by side: 1 is a
// transaction per write, as before batches.
//
//	go test -run '^$' -bench QueueRecovery -benchtime 3x ./bench/
func BenchmarkQueueRecovery(b *testing.B) {
	n := 10_000
	if s := os.Getenv("PGFALLBACK_BENCH_QUEUED"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("PGFALLBACK_BENCH_QUEUED=%q: want a positive count", s)
		}
	}
	for _, batch := range []int{1, fallback.DefaultReplayBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			benchRecovery(b, n, batch)
		})
	}
}

func benchRecovery(b *testing.B, n, batch int) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(b)
	proxy, proxied := chaos.TestProxy(b, dsn, "recovery")
	direct, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(direct.Close)
	// The rows, made in one statement rather than n round trips.
	if _, err := direct.Exec(ctx, `
		INSERT INTO vendors (id, name, status, version, extractor_version, metadata, created_by)
		SELECT gen_random_uuid(), 'recovery-' || lpad(i::text, 5, '0'), 'operational', 1, '2.3.1', '{}', 'bench'
		FROM generate_series(1, $1) AS i`, n); err != nil {
		b.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, proxied)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	store := pgstore.New(pool)
	// On /dev/shm when there is one: the queue's fsyncs are set-up here,
	// not what is measured.
	dir := b.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err = os.MkdirTemp("/dev/shm", "pgfallback-recovery-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	cache, err := sqlitecache.Open(filepath.Join(dir, "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cache.Close() })
	l, err := fallback.New(store, cache, fallback.Config{
		Logger: quiet, OpenTimeout: 100 * time.Millisecond, ProbeTimeout: time.Second,
		ReplayBatch: batch, WarmTimeout: 5 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	vs, err := l.Vendors().List(ctx, repository.VendorFilter{Limit: n})
	if err != nil || len(vs) != n {
		b.Fatalf("listing the vendors: %d, %v", len(vs), err)
	}
	for i := range vs {
		if _, err := l.Vendors().Get(ctx, vs[i].Name); err != nil { // cached
			b.Fatal(err)
		}
	}

	var elapsed time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := proxy.Down(); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for l.State() != fallback.Open {
			if time.Now().After(deadline) {
				b.Fatalf("the breaker did not open: %+v", l.Stats())
			}
			l.Vendors().Get(ctx, vs[0].Name) // refused: counts as an outage
		}
		qctx := fallback.WithWriteQueue(ctx)
		for k := range vs {
			v := vs[k]
			v.Metadata = metadata(i*n + k)
			out, err := l.Vendors().Update(qctx, v)
			if err != nil {
				b.Fatalf("queueing update %d: %v", k, err)
			}
			vs[k].Version = out.Version
		}
		b.StartTimer()
		start := time.Now()
		if err := proxy.Up(); err != nil {
			b.Fatal(err)
		}
		deadline = start.Add(5 * time.Minute)
		for l.State() != fallback.Closed || l.Stats().Queued.Pending != 0 {
			if time.Now().After(deadline) {
				b.Fatalf("not recovered after %v: state %v, queue %+v", time.Since(start), l.State(), l.Stats().Queued)
			}
			time.Sleep(time.Millisecond) // polling the layer's atomics, not a synchronization
		}
		elapsed += time.Since(start)
		b.StopTimer()
		if st := l.Stats().Queued; st.DeadLettered != 0 {
			b.Fatalf("dead letters: %+v", st)
		}
		b.StartTimer()
	}
	b.StopTimer()
	per := elapsed / time.Duration(b.N)
	b.ReportMetric(per.Seconds(), "s/recovery")
	b.ReportMetric(float64(n)/per.Seconds(), "writes/s")
	got, err := store.Vendors().Get(ctx, vs[n-1].Name)
	if err != nil || got.Version != vs[n-1].Version {
		b.Fatalf("PostgreSQL holds %q at version %d (%v), want %d", vs[n-1].Name, got.Version, err, vs[n-1].Version)
	}
}
