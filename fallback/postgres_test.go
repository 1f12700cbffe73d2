package fallback_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

func TestMain(m *testing.M) {
	replayChild() // returns unless this process is a child of TestReplayIsExactlyOnceAcrossAKill
	pgtest.Main(m)
}

// stack is one application instance: store, cache and layer.
type stack struct {
	store *pgstore.Store
	cache *sqlitecache.Cache
	layer *fallback.Layer
}

func (s *stack) close() {
	s.layer.Close()
	s.cache.Close()
	s.store.Close()
}

// openStack wires a layer as an application would. The pool connects
// lazily, so the application starts even when the server is down.
func openStack(t *testing.T, dsn, cachePath string, cfg fallback.Config, copts ...sqlitecache.Option) *stack {
	t.Helper()
	return openStackWith(t, dsn, nil, cachePath, cfg, copts...)
}

// openStackWith is openStack with options for the store.
func openStackWith(t *testing.T, dsn string, sopts []pgstore.Option, cachePath string, cfg fallback.Config, copts ...sqlitecache.Option) *stack {
	t.Helper()
	pcfg, err := pgstore.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	store := pgstore.New(pool, sopts...)
	cache, err := sqlitecache.Open(cachePath, append([]sqlitecache.Option{sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil)}, copts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	layer, err := fallback.New(store, cache, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{store, cache, layer}
	t.Cleanup(s.close)
	return s
}

// reconfigure sets a setting of srv for a test (pgtest.Reconfigure; ""
// resets it), waiting up to 10 s for a session to show it.
func reconfigure(t *testing.T, ctx context.Context, srv *pgtest.Server, name, value string) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pgtest.Reconfigure(rctx, srv.DSN(), name, value); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func seed(t *testing.T, s *stack, n int) []string {
	t.Helper()
	ctx := context.Background()
	var names []string
	for i := range n {
		want := repository.Vendor{
			Name: fmt.Sprintf("vendor-%03d", i), Status: repository.VendorOperational,
			Metadata: map[string]any{"i": float64(i)},
		}
		v, err := s.layer.Vendors().Create(ctx, want)
		// Set-up, not the test: a create that timed out on a busy machine
		// (a connect with password authentication in Docker mode, under
		// -race, can outlast PrimaryTimeout) is made again, or read if the
		// first one landed.
		for attempt := 0; attempt < 5 && err != nil && !repository.IsAnswer(err); attempt++ {
			// The timeout may have opened the breaker (the tests' configs
			// trip on one failure): the layer recovers first.
			waitFor(t, 30*time.Second, "the layer to recover before the seed goes on", func() bool { return s.layer.State() == fallback.Closed })
			v, err = s.layer.Vendors().Create(ctx, want)
			if errors.Is(err, repository.ErrAlreadyExists) {
				v, err = s.layer.Vendors().Get(ctx, want.Name)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, v.Name)
	}
	if err := s.layer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return names
}

func TestServerKilledUnderConcurrentReaders(t *testing.T) {
	srv := pgtest.NewServer(t)
	ctx := context.Background()
	dsn, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const primaryTimeout = 500 * time.Millisecond
	s := openStack(t, dsn, filepath.Join(t.TempDir(), "cache.db"), fallback.Config{
		PrimaryTimeout: primaryTimeout, OpenTimeout: 200 * time.Millisecond,
	})
	names := seed(t, s, 20)

	// Change rows behind the layer's back: the cache still has version 1.
	if _, err := s.store.Pool().Exec(ctx, `UPDATE vendors SET status = 'broken', version = version + 1 WHERE name <= 'vendor-004'`); err != nil {
		t.Fatal(err)
	}

	readers := readCachedKeys(ctx, s, names, 8)
	defer readers.stop()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the breaker to open", func() bool { return s.layer.State() == fallback.Open })
	readsAtOpen := readers.reads.Load()
	waitFor(t, 10*time.Second, "reads served while open", func() bool { return readers.reads.Load() > readsAtOpen+200 })

	_, werr := s.layer.Vendors().Create(ctx, repository.Vendor{Name: "during-outage", Status: repository.VendorOperational})
	if !errors.Is(werr, repository.ErrUnavailable) {
		t.Errorf("write during outage: %v, want ErrUnavailable", werr)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the breaker to close", func() bool { return s.layer.State() == fallback.Closed })
	readers.stop()

	readers.check(t, primaryTimeout)
	for _, name := range names[:5] {
		v, _, err := s.cache.GetVendor(ctx, name)
		if err != nil || v.Version != 2 || v.Status != repository.VendorBroken {
			t.Errorf("%s after recovery: version %d status %s (%v); want the row changed behind the layer's back", name, v.Version, v.Status, err)
		}
	}
	if _, err := s.store.Vendors().Get(ctx, "during-outage"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("a write reported failed is in PostgreSQL: %v", err)
	}
	st := s.layer.Stats()
	t.Logf("reads %d, max latency %s, stats: fresh %d stale %d failures %v warm %+v",
		readers.reads.Load(), time.Duration(readers.maxLatency.Load()), st.ServedFresh, st.ServedStale, st.PrimaryFailures, st.LastWarm)
}

func TestApplicationRestartWhileServerDown(t *testing.T) {
	srv := pgtest.NewServer(t)
	ctx := context.Background()
	dsn, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cachePath := filepath.Join(t.TempDir(), "cache.db")
	first := openStack(t, dsn, cachePath, fallback.Config{})
	names := seed(t, first, 5)
	first.close()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	second := openStack(t, dsn, cachePath, fallback.Config{PrimaryTimeout: 500 * time.Millisecond})
	for _, name := range names {
		ctx, prov := fallback.WithProvenance(ctx)
		v, err := second.layer.Vendors().Get(ctx, name)
		if err != nil || v.Name != name {
			t.Fatalf("Get %s after restart during outage: %+v, %v", name, v, err)
		}
		if o := prov.Origin(); o.Source != fallback.SourceCache {
			t.Fatalf("origin %+v, want cache", o)
		}
	}
	if _, err := second.layer.Vendors().Get(ctx, "never-cached"); !errors.Is(err, repository.ErrUnavailable) || errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("uncached key during outage: %v, want ErrUnavailable", err)
	}
}

// readLoad is n goroutines reading random keys of names through the layer
// until stop.
type readLoad struct {
	reads, failed, maxLatency atomic.Int64
	firstErr                  atomic.Pointer[error]
	quit                      chan struct{}
	once                      sync.Once
	wg                        sync.WaitGroup
}

func readCachedKeys(ctx context.Context, s *stack, names []string, n int) *readLoad {
	r := &readLoad{quit: make(chan struct{})}
	for range n {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for {
				select {
				case <-r.quit:
					return
				default:
				}
				start := time.Now()
				_, err := s.layer.Vendors().Get(ctx, names[rand.IntN(len(names))])
				took := int64(time.Since(start))
				for cur := r.maxLatency.Load(); took > cur && !r.maxLatency.CompareAndSwap(cur, took); cur = r.maxLatency.Load() {
				}
				r.reads.Add(1)
				if err != nil {
					r.failed.Add(1)
					r.firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	return r
}

// stop ends the reads and waits for them; it may be called again.
func (r *readLoad) stop() {
	r.once.Do(func() {
		close(r.quit)
		r.wg.Wait()
	})
}

// check fails t if a read failed or took longer than primaryTimeout allows.
func (r *readLoad) check(t *testing.T, primaryTimeout time.Duration) {
	t.Helper()
	if n := r.failed.Load(); n > 0 {
		t.Errorf("%d of %d reads of cached keys failed; first: %v", n, r.reads.Load(), *r.firstErr.Load())
	}
	if max := time.Duration(r.maxLatency.Load()); max > primaryTimeout+300*time.Millisecond {
		t.Errorf("slowest read took %s; PrimaryTimeout is %s", max, primaryTimeout)
	}
}
