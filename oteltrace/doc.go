// Package oteltrace traces a fallback.Layer with OpenTelemetry: one span per
// repository call, and a child span for each read the layer makes from its
// SQLite cache while PostgreSQL cannot answer. It uses the OpenTelemetry API
// only; the application chooses the SDK and the exporter.
//
// Wiring:
//
//	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter)) // the application's
//	layer, err := fallback.New(store, cache, fallback.Config{
//		Observer: oteltrace.NewObserver(tp), // nil: otel.GetTracerProvider()
//	})
//
// The layer runs each call with the context that holds its span, down to
// the pgx store: a pgx tracer set on the pool (for example
// github.com/exaring/otelpgx, pgxpool.Config.ConnConfig.Tracer =
// otelpgx.NewTracer()) makes its query spans children of the call's span.
//
// # Spans
//
// A call span is named "pgfallback <entity>.<op>" (e.g. "pgfallback
// vendors.get", "pgfallback work_items.list"), of kind Internal, with:
//
//	pgfallback.op             get, list, create, update, delete (at start, for samplers)
//	pgfallback.entity         vendor, work_item (at start)
//	pgfallback.source         primary, cache, none (none: the call failed)
//	pgfallback.breaker.state  closed, half-open, open, when the call ended
//	pgfallback.outcome        fallback.Outcome: ok, not_found, invalid, conflict, already_exists,
//	                          unreadable, unavailable, outcome_unknown, canceled, closed, error
//	error.type                the outcome, on calls whose status is Error
//
// and, on answers from the cache only (they describe the cached copy):
//
//	pgfallback.slow           bool: answered from the cache because PostgreSQL was slower than
//	                          fallback.Config.SoftTimeout (Origin.Slow), not because it failed
//	pgfallback.stale          bool, on a Get: past its TTL (served within StaleIfError)
//	pgfallback.age_ms         int, on a Get: the entry's age in milliseconds (a List has no single age)
//	pgfallback.as_of          RFC 3339: the change feed's confirmed position, when there is one
//	pgfallback.partial        bool, on a List: holds only what happened to be cached
//
// A cache read span is named "pgfallback sqlite read", of kind Client, with
// db.system.name=sqlite, db.operation.name=SELECT, db.collection.name (the
// cache table), pgfallback.op, pgfallback.entity, and pgfallback.cache.hit.
//
// # Errors
//
// A span's status is Error, with the error recorded as an event, when the
// layer failed the caller: unavailable, outcome_unknown, unreadable, closed
// and error. Business answers (not_found, invalid, conflict,
// already_exists) are the repository doing its job, and canceled is the
// caller's own decision: their status stays Unset, and pgfallback.outcome
// tells them apart. Marking them Error would page people for a user's typo
// and bury the outages that matter.
//
// A cache miss (repository.ErrNotFound from the cache) is not an error of
// the cache read span either, only pgfallback.cache.hit=false: the cache
// worked, it just did not hold the key. The call span then says what the
// caller got (unavailable, an Error). Any other cache error is an Error of
// the cache read span, except the caller's cancellation.
package oteltrace
