package oteltrace_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/oteltrace"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// discard is a span processor that drops what it is given: an SDK pipeline
// that records every span but exports none, so that the benchmark measures
// the tracing itself, not an exporter.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }

// BenchmarkHealthyGet measures what tracing adds to a healthy Get through
// the layer, over a primary that answers from memory (so the difference is
// all overhead; a real PostgreSQL round trip is some 100 µs): no observer,
// the layer's observer hook alone (an empty FuncObserver), an observer
// over the no-op provider (tracing compiled in, switched off),
// the SDK sampling nothing, and the SDK recording every span.
func BenchmarkHealthyGet(b *testing.B) {
	vendors := map[string]repository.Vendor{}
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("vendor-%04d", i)
		vendors[names[i]] = repository.Vendor{Name: names[i], Status: repository.VendorOperational, Version: 1}
	}
	primary := &mock.Primary{
		VendorRepo: mock.VendorRepository{GetFn: func(ctx context.Context, name string) (repository.Vendor, error) {
			return vendors[name], nil // read-only after setup: safe without a lock
		}},
		PingFn: func(ctx context.Context) error { return nil },
	}
	sdk := func(s sdktrace.Sampler) trace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithSpanProcessor(discard{}))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		return tp
	}
	for _, bc := range []struct {
		name string
		obs  fallback.Observer
	}{
		{"observer=none", nil},
		{"observer=func", &fallback.FuncObserver{}}, // the layer's hook alone, observing nothing
		{"observer=noop", oteltrace.NewObserver(noop.NewTracerProvider())},
		{"observer=sdk-unsampled", oteltrace.NewObserver(sdk(sdktrace.NeverSample()))},
		{"observer=sdk", oteltrace.NewObserver(sdk(sdktrace.AlwaysSample()))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cache, err := sqlitecache.Open(filepath.Join(b.TempDir(), "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			layer, err := fallback.New(primary, cache, fallback.Config{
				Observer: bc.obs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer layer.Close()
			vendorRepo, ctx := layer.Vendors(), context.Background()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := vendorRepo.Get(ctx, names[i%len(names)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
