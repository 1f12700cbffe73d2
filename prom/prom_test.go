package prom_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/prom"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// The done-when: a scrape through prometheus/testutil during an
// outage sees the breaker state, the cache-served counts and the age
// histogram move.
func TestScrapeDuringOutage(t *testing.T) {
	ctx := context.Background()
	p := newPrimary()
	p.put("acme")
	p.put("beta")
	obs := prom.NewObserver()
	l, cache := newLayer(t, p, obs)
	col := prom.NewCollector(l, prom.WithObserver(obs), prom.WithCache(cache))
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(col); err != nil {
		t.Fatal(err)
	}

	// Healthy: PostgreSQL answers, and the answers are written through.
	for _, name := range []string{"acme", "beta"} {
		if _, err := l.Vendors().Get(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := scrape(t, reg)
	if got := value(t, before, "pgfallback_circuitbreaker_state", "state=closed"); got != 1 {
		t.Fatalf("state closed = %v before the outage, want 1", got)
	}
	if got := value(t, before, "pgfallback_cache_served_total", "entity=vendor", "freshness=fresh"); got != 0 {
		t.Fatalf("cache served %v before the outage, want 0", got)
	}
	if got := count(before, "pgfallback_cache_served_age_seconds", "entity=vendor"); got != 0 {
		t.Fatalf("age histogram has %d observations before the outage, want 0", got)
	}
	if got := value(t, before, "pgfallback_cache_entries", "entity=vendor"); got != 2 {
		t.Fatalf("cache_entries{vendor} = %v, want 2", got)
	}

	// The outage: refused connections trip the breaker; reads of cached
	// keys are served from the cache, a write fails.
	trips := trip(t, l, p)
	for _, name := range []string{"acme", "acme", "beta"} {
		if _, err := l.Vendors().Get(ctx, name); err != nil {
			t.Fatalf("Get %s during the outage: %v", name, err)
		}
	}
	if _, err := l.Vendors().Create(ctx, repository.Vendor{Name: "gamma", Status: repository.VendorOperational}); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("Create during the outage: %v, want ErrUnavailable", err)
	}

	// The testutil way, for the state and the counters that are exact.
	err := testutil.CollectAndCompare(col, strings.NewReader(`
# HELP pgfallback_circuitbreaker_state The circuit breaker's state: 1 for the current one (closed, half_open, open), 0 for the others.
# TYPE pgfallback_circuitbreaker_state gauge
pgfallback_circuitbreaker_state{state="closed"} 0
pgfallback_circuitbreaker_state{state="half_open"} 0
pgfallback_circuitbreaker_state{state="open"} 1
# HELP pgfallback_cache_served_total Reads answered from the cache because PostgreSQL could not answer, or not within SoftTimeout, by entity and freshness (fresh: within TTL; stale: past it, within StaleIfError).
# TYPE pgfallback_cache_served_total counter
pgfallback_cache_served_total{entity="vendor",freshness="fresh"} 3
pgfallback_cache_served_total{entity="vendor",freshness="stale"} 0
pgfallback_cache_served_total{entity="work_item",freshness="fresh"} 0
pgfallback_cache_served_total{entity="work_item",freshness="stale"} 0
`), "pgfallback_circuitbreaker_state", "pgfallback_cache_served_total")
	if err != nil {
		t.Fatal(err)
	}

	after := scrape(t, reg)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgfallback_circuitbreaker_transitions_total", []string{"from=closed", "to=open"}, 1},
		{"pgfallback_circuitbreaker_transitions_total", []string{"from=open", "to=half_open"}, 0},
		{"pgfallback_primary_failures_total", []string{"kind=connect"}, float64(trips)},
		{"pgfallback_primary_failures_total", []string{"kind=timeout"}, 0},
		{"pgfallback_unavailable_total", []string{"op=create"}, 1},
		// The Gets that tripped the breaker asked for a key never cached.
		{"pgfallback_unavailable_total", []string{"op=get"}, float64(trips)},
		{"pgfallback_circuitbreaker_not_permitted_calls_total", nil, 4}, // 3 Gets and the Create
		{"pgfallback_primary_calls_total", nil, float64(2 + trips)},
		{"pgfallback_cache_open", nil, 1},
		{"pgfallback_feed_state", []string{"state=off"}, 1},
		{"pgfallback_scrape_errors_total", nil, 0},
		{"pgfallback_queued_writes", nil, 0},
		{"pgfallback_queued_writes_total", []string{"event=dead_lettered"}, 0},
	} {
		if got := value(t, after, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if find(after, "pgfallback_circuitbreaker_last_trip_timestamp_seconds") == nil {
		t.Error("no last trip timestamp after a trip")
	}
	if find(after, "pgfallback_feed_lag_seconds") != nil {
		t.Error("feed lag exported without a feed")
	}
	if find(after, "pgfallback_feed_resync_started_timestamp_seconds") != nil {
		t.Error("a resync's start exported without a feed")
	}

	// The age histogram moved: three Gets from entries cached moments ago.
	age := find(after, "pgfallback_cache_served_age_seconds", "entity=vendor").GetHistogram()
	if age.GetSampleCount() != 3 || age.GetSampleSum() <= 0 || age.GetSampleSum() > 60 {
		t.Fatalf("age histogram: %d observations summing to %vs, want 3 of a few ms", age.GetSampleCount(), age.GetSampleSum())
	}

	// Every call is in the latency histogram under its label set.
	for _, c := range []struct {
		labels []string
		want   uint64
	}{
		{[]string{"op=get", "entity=vendor", "source=primary", "outcome=ok", "slow=false"}, 2},
		{[]string{"op=get", "entity=vendor", "source=cache", "outcome=ok", "slow=false"}, 3},
		{[]string{"op=get", "entity=vendor", "source=none", "outcome=unavailable"}, uint64(trips)},
		{[]string{"op=create", "entity=vendor", "source=none", "outcome=unavailable"}, 1},
	} {
		if got := count(after, "pgfallback_calls_seconds", c.labels...); got != c.want {
			t.Errorf("pgfallback_calls_seconds%v: %d observations, want %d", c.labels, got, c.want)
		}
	}
	if n := len(after["pgfallback_calls_seconds"].GetMetric()); n != 4 {
		t.Errorf("pgfallback_calls_seconds has %d label sets, want the 4 above", n)
	}
}

// Without an Observer the Collector exports what Stats holds, and nothing
// per call; the last warm appears once there was one.
func TestCollectorWithoutObserver(t *testing.T) {
	ctx := context.Background()
	p := newPrimary()
	l, _ := newLayer(t, p, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prom.NewCollector(l))
	for _, name := range []string{"acme", "beta"} {
		p.put(name)
		if _, err := l.Vendors().Get(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mfs := scrape(t, reg)
	for _, name := range []string{"pgfallback_calls_seconds", "pgfallback_cache_served_total",
		"pgfallback_last_warm_duration_seconds", "pgfallback_last_warm_rows"} {
		if mfs[name] != nil {
			t.Errorf("%s exported without its source", name)
		}
	}
	if got := value(t, mfs, "pgfallback_writethrough_written_total"); got != 2 {
		t.Errorf("writethrough_written_total = %v, want 2", got)
	}
	if mfs["pgfallback_cache_entries"] == nil { // the layer's own cache, without WithCache
		t.Error("pgfallback_cache_entries not exported from the layer's cache")
	}
	if got := value(t, mfs, "pgfallback_writethrough_queue_depth"); got != 0 {
		t.Errorf("writethrough_queue_depth = %v after a flush, want 0", got)
	}

	p.put("gone")
	if _, err := l.Vendors().Get(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	delete(p.vendors, "gone")
	p.mu.Unlock()
	if _, err := l.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	mfs = scrape(t, reg)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgfallback_warm_runs_total", nil, 1},
		{"pgfallback_last_warm_rows", []string{"action=refreshed"}, 2},
		{"pgfallback_last_warm_rows", []string{"action=removed"}, 1},
		{"pgfallback_last_warm_success", nil, 1},
	} {
		if got := value(t, mfs, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if d := value(t, mfs, "pgfallback_last_warm_duration_seconds"); d <= 0 || d > 10 {
		t.Errorf("last warm took %vs", d)
	}
	if ts := value(t, mfs, "pgfallback_last_warm_timestamp_seconds"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last warm timestamp %v is not now", ts)
	}
}

// A cache that cannot be read leaves its entry counts out of the scrape,
// counts a scrape error, and the rest of the scrape still works.
func TestCacheReadFailureIsSkippedAndCounted(t *testing.T) {
	p := newPrimary()
	l, _ := newLayer(t, p, nil)
	other, err := sqlitecache.Open(filepath.Join(t.TempDir(), "other.db"), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prom.NewCollector(l, prom.WithCache(other), prom.WithCacheTimeout(50*time.Millisecond)))
	mfs := scrape(t, reg)
	if mfs["pgfallback_cache_entries"] != nil {
		t.Error("cache_entries exported for a cache that could not be read")
	}
	if got := value(t, mfs, "pgfallback_scrape_errors_total"); got != 1 {
		t.Errorf("scrape_errors_total = %v, want 1", got)
	}
	if got := value(t, mfs, "pgfallback_circuitbreaker_state", "state=closed"); got != 1 {
		t.Errorf("state closed = %v, want 1", got)
	}
}

// Entries past their TTL served during an outage count as stale.
func TestStaleServedCountsAsStale(t *testing.T) {
	ctx := context.Background()
	p := newPrimary()
	p.put("acme")
	obs := prom.NewObserver()
	l, _ := newLayer(t, p, obs, sqlitecache.WithVendorTTL(10*time.Millisecond))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prom.NewCollector(l, prom.WithObserver(obs)))
	if _, err := l.Vendors().Get(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	trip(t, l, p)
	if _, err := l.Vendors().Get(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Vendors().List(ctx, repository.VendorFilter{}); err != nil {
		t.Fatal(err)
	}
	mfs := scrape(t, reg)
	// The List counts as served (its entries are stale but a List is not
	// marked stale: it is partial) and adds no age: it has no single one.
	if got := value(t, mfs, "pgfallback_cache_served_total", "entity=vendor", "freshness=stale"); got != 1 {
		t.Errorf("served stale = %v, want 1", got)
	}
	if got := value(t, mfs, "pgfallback_cache_served_total", "entity=vendor", "freshness=fresh"); got != 1 {
		t.Errorf("served fresh = %v, want 1 (the List)", got)
	}
	if got := count(mfs, "pgfallback_cache_served_age_seconds", "entity=vendor"); got != 1 {
		t.Errorf("age histogram: %d observations, want 1 (the Get)", got)
	}
	if got := count(mfs, "pgfallback_calls_seconds", "op=list", "source=cache", "outcome=ok"); got != 1 {
		t.Errorf("List from the cache: %d observations, want 1", got)
	}
}

// The Observer alone, with calls made up: an outcome unknown counts as
// unavailable, a stale entry's age lands in its bucket, label values
// unknown to this package are recorded all the same; a nil Observer
// records nothing and does not panic.
func TestObserverEnd(t *testing.T) {
	obs := prom.NewObserver()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prom.NewCollector(nil, prom.WithObserver(obs)))
	ctx := obs.Start(context.Background(), fallback.OpUpdate, repository.EntityWorkItem)
	obs.End(ctx, fallback.Call{Op: fallback.OpUpdate, Entity: repository.EntityWorkItem,
		Outcome: fallback.OutcomeOutcomeUnknown, Duration: time.Millisecond})
	obs.End(ctx, fallback.Call{Op: fallback.OpGet, Entity: repository.EntityWorkItem, Outcome: fallback.OutcomeOK,
		Origin: fallback.Origin{Source: fallback.SourceCache, Stale: true, CachedAt: time.Now().Add(-2 * time.Hour), Age: 2 * time.Hour}})
	mfs := scrape(t, reg)
	if got := value(t, mfs, "pgfallback_unavailable_total", "op=update"); got != 1 {
		t.Errorf("unavailable{update} = %v, want 1", got)
	}
	if got := value(t, mfs, "pgfallback_cache_served_total", "entity=work_item", "freshness=stale"); got != 1 {
		t.Errorf("served{work_item,stale} = %v, want 1", got)
	}
	h := find(mfs, "pgfallback_cache_served_age_seconds", "entity=work_item").GetHistogram()
	if h.GetSampleSum() != 7200 {
		t.Errorf("age sum = %v, want 7200", h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		if want := b.GetUpperBound() >= 7200; (b.GetCumulativeCount() == 1) != want {
			t.Errorf("bucket le=%v holds %d", b.GetUpperBound(), b.GetCumulativeCount())
		}
	}
	if mfs["pgfallback_circuitbreaker_state"] != nil {
		t.Error("a Collector without a layer exported the breaker state")
	}

	// A value fallback may add later still gets its series.
	obs.End(ctx, fallback.Call{Op: "bulk_get", Entity: repository.EntityVendor, Outcome: "surprise"})
	if got := count(scrape(t, reg), "pgfallback_calls_seconds", "op=bulk_get", "outcome=surprise", "source=none"); got != 1 {
		t.Errorf("a call with new label values: %d observations, want 1", got)
	}

	var none *prom.Observer
	none.End(context.Background(), fallback.Call{Op: fallback.OpGet})
}

// promlint finds nothing to say about any metric, each one present.
func TestLint(t *testing.T) {
	ctx := context.Background()
	p := newPrimary()
	p.put("acme")
	obs := prom.NewObserver()
	l, cache := newLayerWith(t, p, obs, func(c *fallback.Config) { c.PrimaryTimeout, c.ConsecutiveFailures = 100*time.Millisecond, 1 })
	col := prom.NewCollector(l, prom.WithObserver(obs), prom.WithCache(cache))
	if _, err := l.Vendors().Get(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil { // the write-through is asynchronous
		t.Fatal(err)
	}
	if _, err := l.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	p.readOnly.Store(true) // a write refused as read-only, for its gauge
	if _, err := l.Vendors().Create(ctx, repository.Vendor{Name: "refused", Status: repository.VendorOperational}); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("a create on a read-only primary: %v", err)
	}
	p.readOnly.Store(false)
	stallWrites(t, l, p)
	trip(t, l, p)
	if _, err := l.Vendors().Get(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// A write waiting in the queue, for its age.
	w := repository.Write{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityVendor, Vendor: repository.Vendor{Name: "gone"}}
	if _, err := cache.Enqueue(ctx, w, sqlitecache.Row{}, 0); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
	// Every descriptor the Collector describes is collected here: the
	// lint saw all of them.
	described := make(chan *prometheus.Desc, 100)
	col.Describe(described)
	close(described)
	n := 0
	for range described {
		n++
	}
	// All but the feed's lag, resync and refused listener: no feed here
	// (TestListenerRefusedGauge lints the last).
	if got := len(scrape(t, mustRegistry(t, col))); got != n-3 {
		t.Errorf("%d metric families collected, %d described", got, n)
	}
}

func mustRegistry(t *testing.T, c prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	return reg
}

// Scrapes run concurrently with calls, trips and each other (run with
// -race).
func TestConcurrentScrapes(t *testing.T) {
	ctx := context.Background()
	p := newPrimary()
	p.put("acme")
	obs := prom.NewObserver()
	l, cache := newLayer(t, p, obs)
	reg := mustRegistry(t, prom.NewCollector(l, prom.WithObserver(obs), prom.WithCache(cache)))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = l.Vendors().Get(ctx, "acme")
			}
		})
	}
	for i := range 20 {
		if i == 10 {
			p.down.Store(true)
		}
		scrape(t, reg)
	}
	close(stop)
	wg.Wait()
}

// The queue's dead letters and the age of its oldest pending write come
// from the cache file, so they are right for any process on it.
func TestQueueGaugesFromTheFile(t *testing.T) {
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithLogger(nil), sqlitecache.WithCleanupInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	ctx := context.Background()
	reg := mustRegistry(t, prom.NewCollector(nil, prom.WithCache(cache)))
	if mfs := scrape(t, reg); value(t, mfs, "pgfallback_queued_writes_dead_letters") != 0 || mfs["pgfallback_queued_writes_oldest_age_seconds"] != nil {
		t.Fatal("an empty queue shows dead letters or a pending age")
	}
	for _, name := range []string{"acme", "beta"} {
		w := repository.Write{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityVendor, Vendor: repository.Vendor{Name: name}}
		if _, err := cache.Enqueue(ctx, w, sqlitecache.Row{}, 0); err != nil {
			t.Fatal(err)
		}
	}
	pending, err := cache.PendingWrites(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cache.DeadLetter(ctx, pending[0], "rejected", sqlitecache.Row{}); err != nil {
		t.Fatal(err)
	}
	mfs := scrape(t, reg)
	if got := value(t, mfs, "pgfallback_queued_writes_dead_letters"); got != 1 {
		t.Errorf("dead letters = %v, want 1", got)
	}
	if got := value(t, mfs, "pgfallback_queued_writes_oldest_age_seconds"); got < 0 || got > 60 {
		t.Errorf("oldest pending age = %v s, want a moment", got)
	}
}

// A Get that PostgreSQL answers slower than SoftTimeout is answered from
// the cache: its call is in pgfallback_calls_seconds with slow="true", and
// in the cache's served count; the scrape-time metrics count it served
// slow, show its call running in the background, and once that call ends,
// count it slow and none abandoned, with the peak kept.
func TestSlowAnswers(t *testing.T) {
	ctx := context.Background()
	p := newPrimary()
	p.put("acme")
	obs := prom.NewObserver()
	l, _ := newLayerWith(t, p, obs, func(c *fallback.Config) {
		c.PrimaryTimeout = time.Minute // the held call ends when the test releases it
		c.SoftTimeout = 20 * time.Millisecond
		c.SlowCallDuration = 10 * time.Millisecond
		c.SlowCallRate = -1 // counted, never tripping
	})
	reg := mustRegistry(t, prom.NewCollector(l, prom.WithObserver(obs)))
	if _, err := l.Vendors().Get(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := scrape(t, reg)
	for _, name := range []string{"pgfallback_cache_served_slow_total", "pgfallback_abandoned_calls", "pgfallback_abandoned_calls_peak"} {
		if got := value(t, before, name); got != 0 {
			t.Errorf("%s = %v before any slow read, want 0", name, got)
		}
	}

	release := make(chan struct{})
	p.hold.Store(&release)
	prov, origin := fallback.WithProvenance(ctx)
	if _, err := l.Vendors().Get(prov, "acme"); err != nil {
		t.Fatal(err)
	}
	if o := origin.Origin(); o.Source != fallback.SourceCache || !o.Slow {
		t.Fatalf("slow Get answered with origin %+v, want the cache, slow", o)
	}
	during := scrape(t, reg)
	for _, c := range []struct {
		labels []string
		want   uint64
	}{
		{[]string{"op=get", "source=primary", "outcome=ok", "slow=false"}, 1},
		{[]string{"op=get", "source=cache", "outcome=ok", "slow=true"}, 1},
		{[]string{"op=get", "source=cache", "slow=false"}, 0},
	} {
		if got := count(during, "pgfallback_calls_seconds", c.labels...); got != c.want {
			t.Errorf("pgfallback_calls_seconds%v: %d observations, want %d", c.labels, got, c.want)
		}
	}
	// The slow answer waited for the soft timeout: its observation is not
	// in a bucket below it.
	if h := find(during, "pgfallback_calls_seconds", "slow=true").GetHistogram(); h.GetSampleSum() < 0.02 {
		t.Errorf("slow answer took %vs, want at least the 20 ms soft timeout", h.GetSampleSum())
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgfallback_cache_served_total", []string{"entity=vendor", "freshness=fresh"}, 1},
		{"pgfallback_cache_served_slow_total", nil, 1},
		{"pgfallback_abandoned_calls", nil, 1}, // held until release
		{"pgfallback_abandoned_calls_peak", nil, 1},
		{"pgfallback_circuitbreaker_state", []string{"state=closed"}, 1},
	} {
		if got := value(t, during, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	close(release)
	if err := l.Close(); err != nil { // waits for the background call
		t.Fatal(err)
	}
	after := scrape(t, reg)
	if got := value(t, after, "pgfallback_abandoned_calls"); got != 0 {
		t.Errorf("abandoned calls = %v after the call ended, want 0", got)
	}
	if got := value(t, after, "pgfallback_abandoned_calls_peak"); got != 1 {
		t.Errorf("abandoned calls peak = %v, want 1", got)
	}
	// The held call took over 20 ms, SlowCallDuration 10 ms; the first
	// Get may have been slow too on a loaded machine.
	if got := value(t, after, "pgfallback_primary_slow_calls_total"); got < 1 || got > 2 {
		t.Errorf("slow calls = %v, want the held call (1, or 2 on a loaded machine)", got)
	}
	if got := value(t, after, "pgfallback_cache_served_slow_total"); got != 1 {
		t.Errorf("served slow = %v, want 1", got)
	}
}

// The slow label: "true" only for calls whose Origin says Slow, and a slow
// call has its own series, apart from the outage's answers from the cache.
func TestObserverSlowLabel(t *testing.T) {
	obs := prom.NewObserver()
	reg := mustRegistry(t, prom.NewCollector(nil, prom.WithObserver(obs)))
	ctx := context.Background()
	cached := fallback.Origin{Source: fallback.SourceCache, CachedAt: time.Now(), Age: time.Second}
	slow := cached
	slow.Slow = true
	for _, c := range []fallback.Call{
		{Op: fallback.OpGet, Entity: repository.EntityVendor, Outcome: fallback.OutcomeOK, Origin: slow, Duration: 50 * time.Millisecond},
		{Op: fallback.OpGet, Entity: repository.EntityVendor, Outcome: fallback.OutcomeOK, Origin: slow, Duration: 50 * time.Millisecond},
		{Op: fallback.OpGet, Entity: repository.EntityVendor, Outcome: fallback.OutcomeOK, Origin: cached, Duration: time.Millisecond},
		{Op: fallback.OpGet, Entity: repository.EntityVendor, Outcome: fallback.OutcomeOK, Origin: fallback.Origin{Source: fallback.SourcePrimary}},
		// An op this package does not know takes the vector's path, and
		// keeps its slow label.
		{Op: "bulk_get", Entity: repository.EntityVendor, Outcome: fallback.OutcomeOK, Origin: slow},
	} {
		obs.End(ctx, c)
	}
	mfs := scrape(t, reg)
	for _, c := range []struct {
		labels []string
		want   uint64
	}{
		{[]string{"op=get", "source=cache", "slow=true"}, 2},
		{[]string{"op=get", "source=cache", "slow=false"}, 1},
		{[]string{"op=get", "source=primary", "slow=false"}, 1},
		{[]string{"op=get", "source=primary", "slow=true"}, 0},
		{[]string{"op=bulk_get", "source=cache", "slow=true"}, 1},
	} {
		if got := count(mfs, "pgfallback_calls_seconds", c.labels...); got != c.want {
			t.Errorf("pgfallback_calls_seconds%v: %d observations, want %d", c.labels, got, c.want)
		}
	}
	if n := len(mfs["pgfallback_calls_seconds"].GetMetric()); n != 4 {
		t.Errorf("pgfallback_calls_seconds has %d label sets, want 4", n)
	}
	// Slow answers are answers from the cache: in its served count.
	if got := value(t, mfs, "pgfallback_cache_served_total", "entity=vendor", "freshness=fresh"); got != 4 {
		t.Errorf("served{vendor,fresh} = %v, want 4", got)
	}
}

// stallWrites makes l's writes time out while PostgreSQL answers reads
// until l stops sending them (Stats.WritesStalledSince).
func stallWrites(t *testing.T, l *fallback.Layer, p *primary) {
	t.Helper()
	ctx := context.Background()
	p.commitsHang.Store(true)
	defer p.commitsHang.Store(false)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // answered while the writes wait
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			l.Vendors().Get(ctx, "acme")
		}
	}()
	defer func() { close(stop); <-done }()
	for deadline := time.Now().Add(10 * time.Second); l.Stats().WritesStalledSince.IsZero(); {
		if time.Now().After(deadline) {
			t.Fatal("writes that time out while reads answer never stalled the layer")
		}
		l.Vendors().Create(ctx, repository.Vendor{Name: "stalled", Status: repository.VendorOperational})
	}
}
