package oteltrace_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/oteltrace"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// fixture is a layer over a mock primary that can be taken down, a real
// cache file whose clock the test moves, and an SDK tracer provider that
// records every ended span in memory.
type fixture struct {
	layer *fallback.Layer
	cache *sqlitecache.Cache
	rec   *tracetest.SpanRecorder
	tp    *sdktrace.TracerProvider

	down    atomic.Bool
	now     atomic.Pointer[time.Time]
	mu      sync.Mutex
	vendors map[string]repository.Vendor
}

var errRefused = fmt.Errorf("dial: %w", syscall.ECONNREFUSED)

func newFixture(t testing.TB, opts ...oteltrace.Option) *fixture {
	t.Helper()
	f := &fixture{rec: tracetest.NewSpanRecorder(), vendors: map[string]repository.Vendor{}}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.now.Store(&t0)
	f.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.rec))
	t.Cleanup(func() { f.tp.Shutdown(context.Background()) })

	primary := &mock.Primary{
		VendorRepo: mock.VendorRepository{
			GetFn: func(ctx context.Context, name string) (repository.Vendor, error) {
				if f.down.Load() {
					return repository.Vendor{}, errRefused
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				v, ok := f.vendors[name]
				if !ok {
					return repository.Vendor{}, fmt.Errorf("vendor %q: %w", name, repository.ErrNotFound)
				}
				return v, nil
			},
			CreateFn: func(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
				if f.down.Load() {
					return repository.Vendor{}, errRefused
				}
				v.ID, v.Version = uuid.New(), 1
				f.mu.Lock()
				f.vendors[v.Name] = v
				f.mu.Unlock()
				return v, nil
			},
		},
		PingFn: func(ctx context.Context) error { return errRefused },
	}
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"),
		sqlitecache.WithVendorTTL(time.Hour), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil),
		sqlitecache.WithClock(func() time.Time { return *f.now.Load() }))
	if err != nil {
		t.Fatalf("open cache: %v", err)
	}
	f.cache = cache
	f.layer, err = fallback.New(primary, cache, fallback.Config{
		Observer:    oteltrace.NewObserver(f.tp, opts...),
		OpenTimeout: time.Hour, // the breaker stays open: no probe during the test
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("fallback.New: %v", err)
	}
	t.Cleanup(func() {
		f.layer.Close()
		cache.Close()
	})
	return f
}

func (f *fixture) put(v repository.Vendor) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vendors[v.Name] = v
}

func (f *fixture) advance(d time.Duration) {
	t := f.now.Load().Add(d)
	f.now.Store(&t)
}

// trip takes PostgreSQL down and fails calls until the breaker opens.
func (f *fixture) trip(t *testing.T) {
	t.Helper()
	f.down.Store(true)
	for i := 0; f.layer.State() != fallback.Open; i++ {
		if i > 100 {
			t.Fatal("breaker did not open after 100 failures")
		}
		f.layer.Vendors().Get(context.Background(), "trip")
	}
}

// spans runs call and returns the spans that ended during it.
func (f *fixture) spans(call func()) []sdktrace.ReadOnlySpan {
	before := len(f.rec.Ended())
	call()
	return f.rec.Ended()[before:]
}

func vendor(name string) repository.Vendor {
	return repository.Vendor{ID: uuid.New(), Name: name, Status: repository.VendorOperational, Version: 1}
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// want checks that span s has these attributes (values as Emit prints them)
// and none of the keys in absent.
func want(t *testing.T, s sdktrace.ReadOnlySpan, kv map[string]string, absent ...string) {
	t.Helper()
	got := attrs(s)
	for k, v := range kv {
		if g, ok := got[attribute.Key(k)]; !ok || g.Emit() != v {
			t.Errorf("%s: %s = %q (set: %v), want %q", s.Name(), k, g.Emit(), ok, v)
		}
	}
	for _, k := range absent {
		if g, ok := got[attribute.Key(k)]; ok {
			t.Errorf("%s: %s = %q, want it absent", s.Name(), k, g.Emit())
		}
	}
}

// only returns the one span of spans, failing the test otherwise.
func only(t *testing.T, spans []sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
	t.Helper()
	if len(spans) != 1 {
		t.Fatalf("%d spans ended, want 1: %v", len(spans), names(spans))
	}
	return spans[0]
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name())
	}
	return n
}

func hasException(s sdktrace.ReadOnlySpan) bool {
	for _, e := range s.Events() {
		if e.Name == "exception" {
			return true
		}
	}
	return false
}

// A healthy Get is one Internal span, answered by the primary, with no
// child and no cache attributes.
func TestHealthyGet(t *testing.T) {
	f := newFixture(t)
	f.put(vendor("acme"))
	s := only(t, f.spans(func() {
		if _, err := f.layer.Vendors().Get(context.Background(), "acme"); err != nil {
			t.Fatal(err)
		}
	}))
	if s.Name() != "pgfallback vendors.get" || s.SpanKind() != trace.SpanKindInternal {
		t.Errorf("span %q of kind %v, want \"pgfallback vendors.get\" of kind internal", s.Name(), s.SpanKind())
	}
	want(t, s, map[string]string{
		"pgfallback.op": "get", "pgfallback.entity": "vendor", "pgfallback.source": "primary",
		"pgfallback.breaker.state": "closed", "pgfallback.outcome": "ok",
	}, "pgfallback.stale", "pgfallback.slow", "pgfallback.age_ms", "pgfallback.as_of", "pgfallback.partial", "error.type")
	if s.Status().Code != codes.Unset || hasException(s) {
		t.Errorf("status %+v, events %v: want Unset, no exception", s.Status(), s.Events())
	}
	if s.InstrumentationScope().Name != oteltrace.ScopeName {
		t.Errorf("scope %q, want %q", s.InstrumentationScope().Name, oteltrace.ScopeName)
	}
}

// During an outage a Get served from a stale cached entry says so: source
// cache, stale, its age; the read from SQLite is a Client child span.
func TestGetFromCacheDuringOutage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.cache.SetVendor(ctx, vendor("acme")); err != nil {
		t.Fatal(err)
	}
	f.advance(90 * time.Minute) // past the 1 h TTL, within the default 24 h StaleIfError
	f.trip(t)

	spans := f.spans(func() {
		if _, err := f.layer.Vendors().Get(ctx, "acme"); err != nil {
			t.Fatalf("Get during the outage: %v", err)
		}
	})
	if len(spans) != 2 {
		t.Fatalf("spans %v, want the cache read and the call", names(spans))
	}
	read, call := spans[0], spans[1] // the child ends first
	if call.Name() != "pgfallback vendors.get" {
		t.Fatalf("call span %q", call.Name())
	}
	want(t, call, map[string]string{
		"pgfallback.source": "cache", "pgfallback.stale": "true", "pgfallback.slow": "false",
		"pgfallback.breaker.state": "open", "pgfallback.outcome": "ok",
	}, "pgfallback.as_of", "pgfallback.partial", "error.type")
	// The cache stores its write time as REAL seconds: allow its rounding.
	if age := attrs(call)["pgfallback.age_ms"]; age.Type() != attribute.INT64 || age.AsInt64() < 5399999 || age.AsInt64() > 5400000 {
		t.Errorf("pgfallback.age_ms = %s, want 5400000 (90 minutes)", age.Emit())
	}
	if call.Status().Code != codes.Unset {
		t.Errorf("call status %+v, want Unset: the caller got an answer", call.Status())
	}

	if read.Name() != "pgfallback sqlite read" || read.SpanKind() != trace.SpanKindClient {
		t.Errorf("cache read span %q of kind %v", read.Name(), read.SpanKind())
	}
	want(t, read, map[string]string{
		"db.system.name": "sqlite", "db.operation.name": "SELECT", "db.collection.name": "cached_vendors",
		"pgfallback.op": "get", "pgfallback.entity": "vendor", "pgfallback.cache.hit": "true",
	})
	if read.Parent().SpanID() != call.SpanContext().SpanID() || read.SpanContext().TraceID() != call.SpanContext().TraceID() {
		t.Errorf("cache read's parent %v, want the call span %v", read.Parent(), call.SpanContext())
	}
	if read.Status().Code != codes.Unset {
		t.Errorf("cache read status %+v, want Unset", read.Status())
	}
}

// A miss during an outage: the cache read is no error (hit=false), the
// call is (the caller gets ErrUnavailable).
func TestCacheMissDuringOutage(t *testing.T) {
	f := newFixture(t)
	f.trip(t)
	spans := f.spans(func() {
		if _, err := f.layer.Vendors().Get(context.Background(), "missing"); !errors.Is(err, repository.ErrUnavailable) {
			t.Fatalf("Get of an uncached key during the outage: %v, want ErrUnavailable", err)
		}
	})
	if len(spans) != 2 {
		t.Fatalf("spans %v, want the cache read and the call", names(spans))
	}
	read, call := spans[0], spans[1]
	want(t, read, map[string]string{"pgfallback.cache.hit": "false"}, "error.type")
	if read.Status().Code != codes.Unset || hasException(read) {
		t.Errorf("cache read of a miss: status %+v, events %v; want Unset, no exception", read.Status(), read.Events())
	}
	want(t, call, map[string]string{
		"pgfallback.source": "none", "pgfallback.outcome": "unavailable", "error.type": "unavailable",
	}, "pgfallback.stale", "pgfallback.age_ms")
	if call.Status().Code != codes.Error || !hasException(call) {
		t.Errorf("call status %+v, events %v; want Error with the error recorded", call.Status(), call.Events())
	}
}

// A write during the outage fails fast: an Error span with the error
// recorded, and no cache read.
func TestFailedWriteDuringOutage(t *testing.T) {
	f := newFixture(t)
	f.trip(t)
	var err error
	s := only(t, f.spans(func() { _, err = f.layer.Vendors().Create(context.Background(), vendor("new")) }))
	if !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("Create during the outage: %v, want ErrUnavailable", err)
	}
	if s.Name() != "pgfallback vendors.create" {
		t.Errorf("span %q", s.Name())
	}
	want(t, s, map[string]string{
		"pgfallback.op": "create", "pgfallback.source": "none", "pgfallback.breaker.state": "open",
		"pgfallback.outcome": "unavailable", "error.type": "unavailable",
	})
	if st := s.Status(); st.Code != codes.Error || st.Description != err.Error() {
		t.Errorf("status %+v, want Error %q", st, err)
	}
	if !hasException(s) {
		t.Errorf("events %v, want the error recorded as an exception", s.Events())
	}
}

// Bad input is a business answer: outcome invalid, status Unset, whatever
// the breaker's state.
func TestInvalidInputIsNoSpanError(t *testing.T) {
	f := newFixture(t)
	for _, tripped := range []bool{false, true} {
		if tripped {
			f.trip(t)
		}
		s := only(t, f.spans(func() {
			if _, err := f.layer.Vendors().Get(context.Background(), "NOT A NAME"); !errors.Is(err, repository.ErrInvalid) {
				t.Fatalf("Get of a bad name: %v, want ErrInvalid", err)
			}
		}))
		want(t, s, map[string]string{"pgfallback.outcome": "invalid", "pgfallback.source": "none"}, "error.type")
		if s.Status().Code != codes.Unset || hasException(s) {
			t.Errorf("breaker tripped %v: status %+v, events %v; want Unset, no exception", tripped, s.Status(), s.Events())
		}
	}
}

// Not found from PostgreSQL is its answer, not a failure.
func TestNotFoundIsNoSpanError(t *testing.T) {
	f := newFixture(t)
	s := only(t, f.spans(func() {
		if _, err := f.layer.Vendors().Get(context.Background(), "nobody"); !errors.Is(err, repository.ErrNotFound) {
			t.Fatalf("Get: %v, want ErrNotFound", err)
		}
	}))
	want(t, s, map[string]string{"pgfallback.outcome": "not_found"}, "error.type")
	if s.Status().Code != codes.Unset {
		t.Errorf("status %+v, want Unset", s.Status())
	}
}

// A List from the cache during an outage is marked partial.
func TestListFromCacheIsPartial(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.cache.SetVendor(ctx, vendor("acme")); err != nil {
		t.Fatal(err)
	}
	f.trip(t)
	spans := f.spans(func() {
		if vs, err := f.layer.Vendors().List(ctx, repository.VendorFilter{}); err != nil || len(vs) != 1 {
			t.Fatalf("List during the outage: %v, %v", vs, err)
		}
	})
	if len(spans) != 2 {
		t.Fatalf("spans %v, want the cache read and the call", names(spans))
	}
	want(t, spans[0], map[string]string{"pgfallback.op": "list", "pgfallback.cache.hit": "true"})
	want(t, spans[1], map[string]string{
		"pgfallback.source": "cache", "pgfallback.partial": "true", "pgfallback.outcome": "ok",
	}, "pgfallback.age_ms", "pgfallback.stale")
	if spans[1].Name() != "pgfallback vendors.list" {
		t.Errorf("span %q", spans[1].Name())
	}
}

// The call span joins the caller's trace, and WithAttributes adds to it.
func TestCallSpanIsChildOfCallersSpan(t *testing.T) {
	f := newFixture(t, oteltrace.WithAttributes(attribute.String("region", "eu")))
	f.put(vendor("acme"))
	ctx, parent := f.tp.Tracer("app").Start(context.Background(), "GET /vendors/acme")
	s := only(t, f.spans(func() {
		if _, err := f.layer.Vendors().Get(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
	}))
	parent.End()
	if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("call span's parent %v, want the caller's span %v", s.Parent(), parent.SpanContext())
	}
	want(t, s, map[string]string{"region": "eu"})
}

// End ends only a span its Start made: given a context without one (an
// observer contract broken by a wrapper), it leaves the caller's span be.
func TestEndLeavesForeignSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, caller := tp.Tracer("app").Start(context.Background(), "caller")
	oteltrace.NewObserver(tp).End(ctx, fallback.Call{Op: fallback.OpGet, Entity: repository.EntityVendor})
	if len(rec.Ended()) != 0 {
		t.Fatalf("End ended %v", names(rec.Ended()))
	}
	caller.End()
}

// A nil provider is the global one. (A provider set after the observer was
// made is used too, by OpenTelemetry's global delegation; that works once
// per process, so it is not tested here: -count=N must pass.)
func TestNilProviderIsGlobal(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	otel.SetTracerProvider(tp)
	obs := oteltrace.NewObserver(nil)
	ctx := obs.Start(context.Background(), fallback.OpDelete, repository.EntityWorkItem)
	obs.End(ctx, fallback.Call{Op: fallback.OpDelete, Entity: repository.EntityWorkItem, Outcome: fallback.OutcomeOK})
	if s := only(t, rec.Ended()); s.Name() != "pgfallback work_items.delete" {
		t.Errorf("span %q, want \"pgfallback work_items.delete\"", s.Name())
	}
}

// A cache failure other than a miss is an Error of the cache read span;
// the caller's cancellation is not.
func TestCacheReadErrors(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	obs := oteltrace.NewObserver(tp)
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{errors.New("sqlite: disk I/O error"), codes.Error},
		{fmt.Errorf("sqlitecache: %w", context.Canceled), codes.Unset},
	} {
		_, end := obs.StartCacheRead(context.Background(), fallback.OpList, repository.EntityWorkItem)
		end(tc.err)
		s := rec.Ended()[len(rec.Ended())-1]
		if s.Status().Code != tc.code {
			t.Errorf("cache read ending with %v: status %+v, want %v", tc.err, s.Status(), tc.code)
		}
		want(t, s, map[string]string{"db.collection.name": "cached_work_items"}, "pgfallback.cache.hit")
	}
}

// Unknown ops and entities (a newer fallback) still get a span.
func TestUnknownOp(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	obs := oteltrace.NewObserver(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	ctx := obs.Start(context.Background(), fallback.Op("count"), repository.Entity("tag"))
	obs.End(ctx, fallback.Call{Op: "count", Entity: "tag"})
	if s := only(t, rec.Ended()); s.Name() != "pgfallback tag.count" {
		t.Errorf("span %q", s.Name())
	}
}

// A sampled-out call records nothing but still carries its span context:
// the store's spans (a pgx tracer's) inherit "not sampled" instead of
// starting traces of their own.
func TestUnsampledCallPropagates(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()), sdktrace.WithSpanProcessor(rec))
	obs := oteltrace.NewObserver(tp)
	ctx := obs.Start(context.Background(), fallback.OpGet, repository.EntityVendor)
	if sc := trace.SpanContextFromContext(ctx); !sc.IsValid() || sc.IsSampled() {
		t.Errorf("span context in the call's context: %+v, want valid and not sampled", sc)
	}
	cctx, end := obs.StartCacheRead(ctx, fallback.OpGet, repository.EntityVendor)
	if trace.SpanContextFromContext(cctx).TraceID() != trace.SpanContextFromContext(ctx).TraceID() {
		t.Error("the cache read left the call's trace")
	}
	end(nil)
	obs.End(ctx, fallback.Call{Op: fallback.OpGet, Entity: repository.EntityVendor, Outcome: fallback.OutcomeUnavailable, Err: errRefused})
	if len(rec.Ended()) != 0 {
		t.Errorf("sampled-out spans recorded: %v", names(rec.Ended()))
	}
}

// An answer from a cache the change feed keeps says as of when.
func TestAsOf(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	obs := oteltrace.NewObserver(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	asOf := time.Date(2026, 3, 1, 12, 3, 41, 0, time.FixedZone("CET", 3600))
	ctx := obs.Start(context.Background(), fallback.OpList, repository.EntityWorkItem)
	obs.End(ctx, fallback.Call{Op: fallback.OpList, Entity: repository.EntityWorkItem, Outcome: fallback.OutcomeOK,
		Origin: fallback.Origin{Source: fallback.SourceCache, AsOf: asOf}, Breaker: fallback.Open})
	want(t, only(t, rec.Ended()), map[string]string{
		"pgfallback.as_of": "2026-03-01T11:03:41Z", "pgfallback.partial": "false", "pgfallback.breaker.state": "open",
	})
}

// An answer from the cache because PostgreSQL was slower than SoftTimeout
// says so, with the breaker closed and no error: PostgreSQL answers, late.
func TestSlowAnswer(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	obs := oteltrace.NewObserver(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	for _, c := range []struct {
		origin fallback.Origin
		want   map[string]string
		absent []string
	}{
		{fallback.Origin{Source: fallback.SourceCache, Slow: true, CachedAt: time.Now(), Age: 3 * time.Second},
			map[string]string{"pgfallback.source": "cache", "pgfallback.slow": "true", "pgfallback.stale": "false",
				"pgfallback.age_ms": "3000", "pgfallback.breaker.state": "closed"}, []string{"error.type"}},
		{fallback.Origin{Source: fallback.SourceCache, CachedAt: time.Now()},
			map[string]string{"pgfallback.slow": "false"}, nil},
		{fallback.Origin{Source: fallback.SourcePrimary},
			map[string]string{"pgfallback.source": "primary"}, []string{"pgfallback.slow"}},
	} {
		ctx := obs.Start(context.Background(), fallback.OpGet, repository.EntityVendor)
		obs.End(ctx, fallback.Call{Op: fallback.OpGet, Entity: repository.EntityVendor, Outcome: fallback.OutcomeOK,
			Origin: c.origin, Breaker: fallback.Closed, Duration: 50 * time.Millisecond})
		ended := rec.Ended()
		s := ended[len(ended)-1]
		want(t, s, c.want, c.absent...)
		if s.Status().Code != codes.Unset {
			t.Errorf("origin %+v: status %+v, want Unset", c.origin, s.Status())
		}
	}
}
