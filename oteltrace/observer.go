package oteltrace

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/repository"
)

// ScopeName is the instrumentation scope of the spans.
const ScopeName = "github.com/pgfallback/pgfallback/oteltrace"

// Option configures NewObserver.
type Option func(*config)

type config struct {
	attrs []attribute.KeyValue
}

// WithAttributes adds attributes to every call span: what tells one layer
// from another when a process has several (a region, a tenant database).
func WithAttributes(kv ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, kv...) }
}

// NewObserver returns an observer for fallback.Config.Observer that traces
// every call of the layer with tp's tracer. A nil tp is
// otel.GetTracerProvider(): the global provider, which forwards to the one
// the application sets later with otel.SetTracerProvider.
func NewObserver(tp trace.TracerProvider, opts ...Option) fallback.CacheObserver {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	var cfg config
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	o := &observer{
		tracer: tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		attrs:  cfg.attrs,
	}
	// The span names and start options of the known calls are built once:
	// a call then allocates nothing for them.
	for i, op := range ops {
		for j, e := range entities {
			o.known[i][j] = o.newSpec(op, e)
		}
	}
	return o
}

type observer struct {
	tracer trace.Tracer
	attrs  []attribute.KeyValue
	known  [len(ops)][len(entities)]spec
}

// spec is what starting the spans of one kind of call takes.
type spec struct {
	name       string
	start      []trace.SpanStartOption
	cacheStart []trace.SpanStartOption
}

var (
	ops      = [...]fallback.Op{fallback.OpGet, fallback.OpList, fallback.OpCreate, fallback.OpUpdate, fallback.OpDelete}
	entities = [...]repository.Entity{repository.EntityVendor, repository.EntityWorkItem}
)

func (o *observer) newSpec(op fallback.Op, e repository.Entity) spec {
	opAttr, entityAttr := attrOp.String(string(op)), attrEntity.String(string(e))
	attrs := append([]attribute.KeyValue{opAttr, entityAttr}, o.attrs...)
	return spec{
		name:  "pgfallback " + plural(e) + "." + string(op),
		start: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...)},
		cacheStart: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			semconv.DBSystemNameSQLite, semconv.DBOperationName("SELECT"), semconv.DBCollectionName(cacheTable(e)),
			opAttr, entityAttr)},
	}
}

// spec returns the spec of a call, built on the fly for an op or entity
// this package does not know yet (a newer fallback).
func (o *observer) spec(op fallback.Op, e repository.Entity) *spec {
	i, j := index(ops[:], op), index(entities[:], e)
	if i < 0 || j < 0 {
		s := o.newSpec(op, e)
		return &s
	}
	return &o.known[i][j]
}

func index[T comparable](s []T, v T) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// plural names an entity as its collection, for span names.
func plural(e repository.Entity) string {
	switch e {
	case repository.EntityVendor:
		return "vendors"
	case repository.EntityWorkItem:
		return "work_items"
	}
	return string(e)
}

// cacheTable is the cache's table of an entity (migrations/sqlite).
func cacheTable(e repository.Entity) string {
	switch e {
	case repository.EntityVendor:
		return "cached_vendors"
	case repository.EntityWorkItem:
		return "cached_work_items"
	}
	return string(e)
}

// spanKey holds a recording call span in the context Start returns,
// besides OpenTelemetry's own key: End ends only a span this observer
// started, never one the caller's context carried.
type spanKey struct{}

func (o *observer) Start(ctx context.Context, op fallback.Op, e repository.Entity) context.Context {
	s := o.spec(op, e)
	ctx, span := o.tracer.Start(ctx, s.name, s.start...)
	if !span.IsRecording() {
		// Sampled out, or a no-op provider: the span must still be in the
		// context (its children inherit the sampling decision), but End has
		// nothing to do for it, so it costs no second context.
		return ctx
	}
	return context.WithValue(ctx, spanKey{}, span)
}

func (o *observer) End(ctx context.Context, c fallback.Call) {
	span, ok := ctx.Value(spanKey{}).(trace.Span)
	if !ok {
		return
	}
	defer span.End()
	// Room for the most a call sets (seven: a Get served from a cache the
	// change feed follows), so that appending never grows the slice.
	var buf [7]attribute.KeyValue
	attrs := append(buf[:0],
		attrSource.String(c.Origin.Source.String()),
		attrBreaker.String(c.Breaker.String()),
		attrOutcome.String(string(c.Outcome)),
	)
	if org := c.Origin; org.Source == fallback.SourceCache {
		// Slow: answered from the cache because PostgreSQL was slower
		// than SoftTimeout, not because it failed.
		attrs = append(attrs, attrSlow.Bool(org.Slow))
		// A List mixes entries of many ages: the layer gives it no single
		// age or staleness, only partial.
		if !org.CachedAt.IsZero() {
			attrs = append(attrs, attrStale.Bool(org.Stale), attrAgeMS.Int64(org.Age.Milliseconds()))
		}
		if !org.AsOf.IsZero() {
			attrs = append(attrs, attrAsOf.String(org.AsOf.UTC().Format(time.RFC3339Nano)))
		}
		if c.Op == fallback.OpList {
			attrs = append(attrs, attrPartial.Bool(org.Partial))
		}
	}
	if isError(c.Outcome) && c.Err != nil {
		attrs = append(attrs, semconv.ErrorTypeKey.String(string(c.Outcome)))
		span.RecordError(c.Err)
		span.SetStatus(codes.Error, c.Err.Error())
	}
	span.SetAttributes(attrs...)
}

// isError tells the outcomes in which the layer failed its caller (see the
// package documentation for why the others are not span errors).
func isError(o fallback.Outcome) bool {
	switch o {
	case fallback.OutcomeUnavailable, fallback.OutcomeOutcomeUnknown, fallback.OutcomeUnreadable,
		fallback.OutcomeClosed, fallback.OutcomeError:
		return true
	}
	return false
}

func (o *observer) StartCacheRead(ctx context.Context, op fallback.Op, e repository.Entity) (context.Context, func(error)) {
	ctx, span := o.tracer.Start(ctx, "pgfallback sqlite read", o.spec(op, e).cacheStart...)
	return ctx, func(err error) {
		defer span.End()
		switch {
		case err == nil:
			span.SetAttributes(attrCacheHit.Bool(true))
		case errors.Is(err, repository.ErrNotFound):
			// A miss: the cache answered, without the key.
			span.SetAttributes(attrCacheHit.Bool(false))
		case fallback.OutcomeOf(err) == fallback.OutcomeCanceled:
			// The caller gave up: not the cache's failure, as for calls.
		default:
			span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
}

// errorType is error.type of a cache failure: low-cardinality, as the
// convention wants, so the outcome class rather than the message.
func errorType(err error) string {
	if o := fallback.OutcomeOf(err); o != fallback.OutcomeError {
		return string(o)
	}
	return semconv.ErrorTypeOther.Value.AsString()
}

// The attributes of this package.
const (
	attrOp       = attribute.Key("pgfallback.op")
	attrEntity   = attribute.Key("pgfallback.entity")
	attrSource   = attribute.Key("pgfallback.source")
	attrBreaker  = attribute.Key("pgfallback.breaker.state")
	attrOutcome  = attribute.Key("pgfallback.outcome")
	attrStale    = attribute.Key("pgfallback.stale")
	attrSlow     = attribute.Key("pgfallback.slow")
	attrAgeMS    = attribute.Key("pgfallback.age_ms")
	attrAsOf     = attribute.Key("pgfallback.as_of")
	attrPartial  = attribute.Key("pgfallback.partial")
	attrCacheHit = attribute.Key("pgfallback.cache.hit")
)
