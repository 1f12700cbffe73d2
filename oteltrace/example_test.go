package oteltrace_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/oteltrace"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// Wiring tracing into a service: the application's tracer provider traces
// the layer's calls (oteltrace) and, through a pgx tracer on the pool
// (otelpgx), the queries each call makes, as children of the call's span.
func Example() {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	// The application's provider, with its exporter (OTLP in production).
	var exporter sdktrace.SpanExporter = tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
	defer tp.Shutdown(ctx)

	pcfg, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		logger.Error("bad DATABASE_URL") // pgx's error may quote the password
		return
	}
	pcfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithTracerProvider(tp))
	pool, err := pgxpool.NewWithConfig(ctx, pcfg) // connects lazily
	if err != nil {
		logger.Error("pool", "err", err)
		return
	}
	store := pgstore.New(pool)
	defer store.Close()

	layer, err := fallback.NewWithCacheFile(store, "cache/project_status.db", fallback.Config{
		Observer: oteltrace.NewObserver(tp), // nil: the global provider
		Logger:   logger,
	})
	if err != nil {
		logger.Error("fallback layer", "err", err)
		return
	}
	defer layer.Close()

	v, err := layer.Vendors().Get(ctx, "acme") // span "pgfallback vendors.get", its query a child
	fmt.Println(v.Status, err)
}

// The spans of a call PostgreSQL answers, recorded in memory.
func ExampleNewObserver() {
	ctx := context.Background()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))

	primary := &mock.Primary{
		VendorRepo: mock.VendorRepository{GetFn: func(ctx context.Context, name string) (repository.Vendor, error) {
			return repository.Vendor{Name: name, Status: repository.VendorOperational, Version: 1}, nil
		}},
		PingFn: func(ctx context.Context) error { return nil },
	}
	dir, err := os.MkdirTemp("", "oteltrace-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	cache, err := sqlitecache.Open(filepath.Join(dir, "cache.db"), sqlitecache.WithLogger(nil))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cache.Close()
	layer, err := fallback.New(primary, cache, fallback.Config{Observer: oteltrace.NewObserver(tp)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer layer.Close()

	layer.Vendors().Get(ctx, "acme")
	for _, s := range rec.Ended() {
		fmt.Println(s.Name(), s.SpanKind(), s.Status().Code)
		for _, kv := range s.Attributes() {
			fmt.Printf("  %s=%s\n", kv.Key, kv.Value.Emit())
		}
	}
	// Output:
	// pgfallback vendors.get internal Unset
	//   pgfallback.op=get
	//   pgfallback.entity=vendor
	//   pgfallback.source=primary
	//   pgfallback.breaker.state=closed
	//   pgfallback.outcome=ok
}
