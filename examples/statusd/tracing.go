package main

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// tracing is what --trace sets up: spans written to stdout as JSON, one
// per HTTP request with the layer's call inside it (oteltrace: "pgfallback
// vendors.get", with its source, staleness and breaker state) and, while
// PostgreSQL is down, the read from the SQLite cache inside that. Without
// --trace the provider is a no-op and the layer is given no tracer at all.
type tracing struct {
	provider trace.TracerProvider
	shutdown func(context.Context) error // flushes the spans still batched
}

// newTracing returns tracing to w when enabled, a no-op otherwise. The
// stdout exporter is for trying the service out and for a demo: a
// deployment would use an OTLP exporter to its collector instead, and
// nothing else here would change.
func newTracing(enabled bool, w io.Writer) (*tracing, error) {
	if !enabled {
		return &tracing{provider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}, nil
	}
	exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
	if err != nil {
		return nil, fmt.Errorf("tracing: stdout exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		// Schemaless: no semconv version to keep in step with the SDK's.
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "statusd"))),
	)
	return &tracing{provider: tp, shutdown: tp.Shutdown}, nil
}

// enabled reports whether spans are recorded.
func (t *tracing) enabled() bool {
	_, noopTP := t.provider.(noop.TracerProvider)
	return !noopTP
}

// handler wraps h so that every request is a span, parent of the layer's;
// a caller's traceparent header continues the caller's trace.
func (t *tracing) handler(h http.Handler) http.Handler {
	if !t.enabled() {
		return h
	}
	return otelhttp.NewHandler(h, "statusd",
		otelhttp.WithTracerProvider(t.provider),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.URL.Path
		}))
}
