package oteltrace_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/oteltrace"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// With a pgx tracer on the pool (otelpgx), the queries a call makes are
// children of the call's span: the layer runs the store with the context
// the observer's Start returned.
func TestPgxQuerySpansAreChildrenOfTheCall(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithTracerProvider(tp))
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	store := pgstore.New(pool)
	defer store.Close()
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	layer, err := fallback.New(store, cache, fallback.Config{
		Observer:          oteltrace.NewObserver(tp),
		DisableChangeFeed: true, // its queries run on the layer's own context, in no call's trace
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer layer.Close()

	if _, err := layer.Vendors().Create(ctx, vendor("acme")); err != nil {
		t.Fatal(err)
	}
	spans := (&fixture{rec: rec}).spans(func() {
		if _, err := layer.Vendors().Get(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
	})

	var call sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == "pgfallback vendors.get" {
			call = s
		}
	}
	if call == nil {
		t.Fatalf("no call span among %v", names(spans))
	}
	parent := map[trace.SpanID]trace.SpanID{}
	for _, s := range spans {
		parent[s.SpanContext().SpanID()] = s.Parent().SpanID()
	}
	// under reports whether s descends from the call span within this Get.
	under := func(s sdktrace.ReadOnlySpan) bool {
		for id := s.Parent().SpanID(); id.IsValid(); id = parent[id] {
			if id == call.SpanContext().SpanID() {
				return true
			}
		}
		return false
	}
	var queries int
	for _, s := range spans {
		if s == call {
			continue
		}
		a := attrs(s)
		if a["db.system.name"].AsString() != "postgresql" {
			t.Errorf("unexpected span %q during the Get", s.Name())
			continue
		}
		// Every pgx span (pool.acquire, the query, the statement's prepare
		// under the query) descends from the call span, in its trace.
		if !under(s) || s.SpanContext().TraceID() != call.SpanContext().TraceID() {
			t.Errorf("pgx span %q (parent %v) is not under the call span %v", s.Name(), s.Parent().SpanID(), call.SpanContext().SpanID())
		}
		if s.SpanKind() != trace.SpanKindClient {
			t.Errorf("pgx span %q of kind %v, want client", s.Name(), s.SpanKind())
		}
		// The query itself is a direct child.
		if a["db.query.text"].AsString() != "" && s.Parent().SpanID() == call.SpanContext().SpanID() {
			queries++
		}
	}
	if queries == 0 {
		t.Errorf("no query span is a child of the call span: %v", names(spans))
	}
	want(t, call, map[string]string{"pgfallback.source": "primary", "pgfallback.outcome": "ok"})
}
