package prom_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

var errRefused = fmt.Errorf("dial: %w", syscall.ECONNREFUSED)

// primary is an in-memory PostgreSQL stand-in built on mock.Primary: it
// answers from a map until down is set, then fails every call and ping
// with a refused connection, which the layer counts as an outage. While
// hold holds a channel, a vendor Get waits for it to close (or for its
// context to end) before it answers: PostgreSQL slow, not down.
type primary struct {
	mock.Primary
	down atomic.Bool
	hold atomic.Pointer[chan struct{}]
	// readOnly: writes fail with SQLSTATE 25006, reads answer.
	readOnly atomic.Bool
	// commitsHang: writes wait until their deadline, reads answer.
	commitsHang atomic.Bool

	mu      sync.Mutex
	vendors map[string]repository.Vendor
}

func newPrimary() *primary {
	p := &primary{vendors: map[string]repository.Vendor{}}
	p.PingFn = func(context.Context) error { return p.err() }
	p.VendorRepo = mock.VendorRepository{
		GetFn: func(ctx context.Context, name string) (repository.Vendor, error) {
			if h := p.hold.Load(); h != nil {
				select {
				case <-*h:
				case <-ctx.Done():
					return repository.Vendor{}, ctx.Err()
				}
			}
			if err := p.err(); err != nil {
				return repository.Vendor{}, err
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			v, ok := p.vendors[name]
			if !ok {
				return repository.Vendor{}, fmt.Errorf("vendor %q: %w", name, repository.ErrNotFound)
			}
			return v, nil
		},
		ListFn: func(context.Context, repository.VendorFilter) ([]repository.Vendor, error) {
			if err := p.err(); err != nil {
				return nil, err
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			var vs []repository.Vendor
			for _, v := range p.vendors {
				vs = append(vs, v)
			}
			sort.Slice(vs, func(i, j int) bool { return vs[i].Name < vs[j].Name })
			return vs, nil
		},
		CreateFn: func(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
			if err := p.err(); err != nil {
				return repository.Vendor{}, err
			}
			if p.commitsHang.Load() {
				<-ctx.Done()
				return repository.Vendor{}, ctx.Err()
			}
			if p.readOnly.Load() {
				return repository.Vendor{}, &pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}
			}
			return p.put(v.Name), nil
		},
	}
	p.WorkItemRepo = mock.WorkItemRepository{
		GetFn: func(_ context.Context, id uuid.UUID) (repository.WorkItem, error) {
			if err := p.err(); err != nil {
				return repository.WorkItem{}, err
			}
			return repository.WorkItem{}, repository.ErrNotFound
		},
	}
	return p
}

func (p *primary) err() error {
	if p.down.Load() {
		return errRefused
	}
	return nil
}

// put stores a vendor as PostgreSQL would have created it.
func (p *primary) put(name string) repository.Vendor {
	now := time.Now().UTC()
	v := repository.Vendor{ID: uuid.New(), Name: name, Status: repository.VendorOperational, Version: 1,
		CreatedAt: now, UpdatedAt: now}
	p.mu.Lock()
	p.vendors[name] = v
	p.mu.Unlock()
	return v
}

// newLayer builds a layer over p with a cache file in a temporary
// directory; obs may be nil for a layer without an observer.
func newLayer(t testing.TB, p *primary, obs fallback.Observer, cacheOpts ...sqlitecache.Option) (*fallback.Layer, *sqlitecache.Cache) {
	t.Helper()
	return newLayerWith(t, p, obs, nil, cacheOpts...)
}

// newLayerWith is newLayer with configure, if set, changing the layer's
// Config before it is built.
func newLayerWith(t testing.TB, p *primary, obs fallback.Observer, configure func(*fallback.Config),
	cacheOpts ...sqlitecache.Option) (*fallback.Layer, *sqlitecache.Cache) {
	t.Helper()
	cacheOpts = append([]sqlitecache.Option{sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil)}, cacheOpts...)
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), cacheOpts...)
	if err != nil {
		t.Fatalf("open cache: %v", err)
	}
	// OpenTimeout of an hour: the prober must not end the outage under
	// the test's feet.
	cfg := fallback.Config{OpenTimeout: time.Hour, Logger: slog.New(slog.DiscardHandler), Observer: obs}
	if configure != nil {
		configure(&cfg)
	}
	l, err := fallback.New(&p.Primary, cache, cfg)
	if err != nil {
		t.Fatalf("fallback.New: %v", err)
	}
	t.Cleanup(func() {
		_ = l.Close()
		_ = cache.Close()
	})
	return l, cache
}

// trip takes the primary down and makes failing Gets until the breaker
// opens; it returns how many it took.
func trip(t *testing.T, l *fallback.Layer, p *primary) int {
	t.Helper()
	p.down.Store(true)
	n := 0
	for l.State() != fallback.Open {
		if n == 100 {
			t.Fatal("the breaker did not open after 100 failures")
		}
		_, _ = l.Vendors().Get(context.Background(), "never-cached")
		n++
	}
	return n
}

// scrape gathers reg: the metrics as a scraper would get them, after the
// registry's consistency checks (a pedantic registry also checks each
// metric against the descriptors).
func scrape(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	m := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		m[mf.GetName()] = mf
	}
	return m
}

// find returns the series of name whose labels include every "k=v" of
// labels, or nil.
func find(mfs map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	mf := mfs[name]
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is the value of a counter or gauge series; it fails the test when
// the series is absent.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := find(mfs, name, labels...)
	if m == nil {
		t.Fatalf("no series %s%v", name, labels)
	}
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

// count is the sample count of a histogram series, 0 when it is absent.
func count(mfs map[string]*dto.MetricFamily, name string, labels ...string) uint64 {
	return find(mfs, name, labels...).GetHistogram().GetSampleCount()
}
