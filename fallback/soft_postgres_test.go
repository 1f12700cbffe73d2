package fallback_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// softFixture: a layer with a soft timeout behind a Toxiproxy that can
// make PostgreSQL slow, and a direct connection for "another instance".
type softFixture struct {
	proxy  *chaos.Proxy
	s      *stack
	direct *stack
}

func newSoftFixture(t *testing.T, cfg fallback.Config) *softFixture {
	t.Helper()
	direct := pgtest.NewDatabase(t)
	p, proxied := chaos.TestProxy(t, direct, "postgres")
	cfg.DisableChangeFeed = true // the write-through alone brings the background answer
	f := &softFixture{proxy: p, s: openStack(t, proxied, filepath.Join(t.TempDir(), "cache.db"), cfg)}
	f.direct = openStack(t, direct, filepath.Join(t.TempDir(), "direct.db"), fallback.Config{DisableChangeFeed: true})
	return f
}

func softConfig() fallback.Config {
	return fallback.Config{
		PrimaryTimeout: 2 * time.Second, SoftTimeout: 50 * time.Millisecond, OpenTimeout: time.Hour,
		SlowCallRate: -1, // these tests are about answers, not the breaker
	}
}

// A Get of a cached key that PostgreSQL answers slower than SoftTimeout is
// answered from the cache within about SoftTimeout, marked Slow; the call
// goes on and its answer — a change made meanwhile — is written through.
// A key the cache does not hold keeps waiting for PostgreSQL.
func TestSoftTimeoutAnswersFromTheCache(t *testing.T) {
	ctx := context.Background()
	f := newSoftFixture(t, softConfig())
	names := seed(t, f.s, 2)
	missing, err := f.direct.layer.Vendors().Create(ctx, repository.Vendor{Name: "not-cached", Status: repository.VendorOperational})
	if err != nil {
		t.Fatal(err)
	}
	// Another instance changes names[0]: the cache still has version 1.
	v, err := f.direct.layer.Vendors().Get(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	v.Status = repository.VendorBroken
	if _, err := f.direct.layer.Vendors().Update(ctx, v); err != nil {
		t.Fatal(err)
	}

	if err := f.proxy.Latency(400*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	pctx, prov := fallback.WithProvenance(ctx)
	start := time.Now()
	got, err := f.s.layer.Vendors().Get(pctx, names[0])
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	o := prov.Origin()
	if o.Source != fallback.SourceCache || !o.Slow || got.Version != 1 {
		t.Fatalf("slow Get: version %d, origin %+v; want the cached version 1, from the cache, Slow", got.Version, o)
	}
	if took > 300*time.Millisecond {
		t.Fatalf("slow Get took %v with SoftTimeout 50 ms", took)
	}
	if s := f.s.layer.Stats(); s.ServedSlow != 1 || s.AbandonedCalls != 1 {
		t.Fatalf("stats: %d served slow, %d abandoned; want 1 and 1", s.ServedSlow, s.AbandonedCalls)
	}
	// The abandoned call finishes and writes version 2 through.
	waitFor(t, 10*time.Second, "the background call to write the update through", func() bool {
		c, _, err := f.s.cache.GetVendor(ctx, names[0])
		return err == nil && c.Version == 2 && f.s.layer.Stats().AbandonedCalls == 0
	})

	// A miss keeps waiting: the answer is PostgreSQL's, not ErrNotFound.
	pctx, prov = fallback.WithProvenance(ctx)
	start = time.Now()
	got, err = f.s.layer.Vendors().Get(pctx, missing.Name)
	took = time.Since(start)
	if err != nil || got.Name != missing.Name || prov.Origin().Source != fallback.SourcePrimary {
		t.Fatalf("Get of an uncached key: %+v, %v, origin %+v; want PostgreSQL's row", got, err, prov.Origin())
	}
	if took < 400*time.Millisecond {
		t.Fatalf("Get of an uncached key took %v: it cannot have waited for PostgreSQL", took)
	}

	// Writes are never answered early.
	v.Status = repository.VendorOperational
	v.Version = 2
	start = time.Now()
	if _, err := f.s.layer.Vendors().Update(ctx, v); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("a write returned after %v, before PostgreSQL could answer", took)
	}
}

// At most MaxAbandonedCalls calls run in the background; beyond that, a
// cached key is answered from the cache at once, with no new call, and a
// call in flight at the soft timeout is canceled rather than left running.
func TestSoftTimeoutBoundsAbandonedCalls(t *testing.T) {
	ctx := context.Background()
	cfg := softConfig()
	cfg.MaxAbandonedCalls = 3
	f := newSoftFixture(t, cfg)
	names := seed(t, f.s, 10)
	if err := f.proxy.Latency(time.Second, 0); err != nil {
		t.Fatal(err)
	}
	slowGet := func(n string) {
		pctx, prov := fallback.WithProvenance(ctx)
		if _, err := f.s.layer.Vendors().Get(pctx, n); err != nil || !prov.Origin().Slow {
			t.Errorf("Get %s: %v, origin %+v; want a slow answer from the cache", n, err, prov.Origin())
		}
	}
	for _, n := range names[:3] { // fills the bound
		slowGet(n)
	}
	if s := f.s.layer.Stats(); s.AbandonedCalls != 3 {
		t.Fatalf("%d abandoned calls, want 3", s.AbandonedCalls)
	}
	before := f.s.layer.Stats()
	var wg sync.WaitGroup
	for range 4 {
		for _, n := range names {
			wg.Add(1)
			go func() { defer wg.Done(); slowGet(n) }()
		}
	}
	wg.Wait()
	s := f.s.layer.Stats()
	if s.AbandonedPeak > 3 {
		t.Fatalf("%d calls abandoned at once, bound 3", s.AbandonedPeak)
	}
	if got := s.ServedSlow - before.ServedSlow; got != 40 {
		t.Fatalf("%d served slow, want 40", got)
	}
	// Calls are counted as they end: only the three abandoned ones can
	// have, none was sent for the 40 reads.
	if calls := s.PrimaryCalls - before.PrimaryCalls; calls > 3 {
		t.Fatalf("%d primary calls during the 40 reads at the bound, want none of their own", calls)
	}

	// A burst while no call is abandoned: every read starts a call, three
	// are left running at the soft timeout, the others are canceled.
	if err := f.proxy.Latency(0, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the abandoned calls to end", func() bool { return f.s.layer.Stats().AbandonedCalls == 0 })
	if err := f.proxy.Latency(time.Second, 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); slowGet(n) }()
	}
	wg.Wait()
	if s := f.s.layer.Stats(); s.AbandonedPeak > 3 || s.AbandonedCalls > 3 {
		t.Fatalf("%d calls abandoned at once (%d now), bound 3", s.AbandonedPeak, s.AbandonedCalls)
	}
	if err := f.proxy.Latency(0, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the abandoned calls to end", func() bool { return f.s.layer.Stats().AbandonedCalls == 0 })
}

// Close waits for the calls running in the background, and ends them.
func TestSoftTimeoutCloseEndsBackgroundCalls(t *testing.T) {
	ctx := context.Background()
	cfg := softConfig()
	cfg.PrimaryTimeout = 30 * time.Second
	f := newSoftFixture(t, cfg)
	names := seed(t, f.s, 3)
	if err := f.proxy.Latency(3*time.Second, 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := f.s.layer.Vendors().Get(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.s.layer.Stats().AbandonedCalls; n != 3 {
		t.Fatalf("%d abandoned calls, want 3", n)
	}
	// Close returns once every background call's goroutine has ended.
	start := time.Now()
	f.s.layer.Close()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %v with calls in the background that PostgreSQL answers in 3 s", took)
	}
	if n := f.s.layer.Stats().AbandonedCalls; n != 0 {
		t.Fatalf("%d abandoned calls after Close", n)
	}
}

// A List is answered early only when the cache can answer it completely:
// from a complete mirror (WarmAll with the change feed), not from the
// partial set of rows a cache happens to hold.
func TestSoftTimeoutListsOnlyFromACompleteMirror(t *testing.T) {
	ctx := context.Background()
	cfg := softConfig()
	cfg.Warm = fallback.WarmAll
	direct := pgtest.NewDatabase(t)
	p, proxied := chaos.TestProxy(t, direct, "postgres")
	mirror := openStack(t, proxied, filepath.Join(t.TempDir(), "mirror.db"), cfg)
	seed(t, mirror, 5)
	waitFor(t, 10*time.Second, "a complete mirror", func() bool {
		f := mirror.layer.Stats().Feed
		return f.Mirror && f.State == fallback.FeedFollowing
	})
	if err := mirror.layer.CatchUp(ctx); err != nil { // the seeded rows are in the mirror
		t.Fatal(err)
	}
	partial := openStack(t, proxied, filepath.Join(t.TempDir(), "partial.db"), softConfig())
	if _, err := partial.layer.Vendors().List(ctx, repository.VendorFilter{Limit: 100}); err != nil {
		t.Fatal(err)
	}
	if err := partial.layer.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	if err := p.Latency(400*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	pctx, prov := fallback.WithProvenance(ctx)
	start := time.Now()
	got, err := mirror.layer.Vendors().List(pctx, repository.VendorFilter{Limit: 100})
	took := time.Since(start)
	if o := prov.Origin(); err != nil || len(got) != 5 || o.Source != fallback.SourceCache || !o.Slow || o.Partial {
		t.Fatalf("List from a complete mirror: %d vendors, %v, origin %+v; want all 5 from the cache, Slow, not partial", len(got), err, o)
	}
	if took > 300*time.Millisecond {
		t.Fatalf("List from a complete mirror took %v with SoftTimeout 50 ms", took)
	}

	pctx, prov = fallback.WithProvenance(ctx)
	start = time.Now()
	got, err = partial.layer.Vendors().List(pctx, repository.VendorFilter{Limit: 100})
	if o := prov.Origin(); err != nil || len(got) != 5 || o.Source != fallback.SourcePrimary {
		t.Fatalf("List without a mirror: %d vendors, %v, origin %+v; want PostgreSQL's answer", len(got), err, o)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("List without a mirror returned after %v: it cannot have waited for PostgreSQL", took)
	}
}
