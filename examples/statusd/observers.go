package main

import (
	"context"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/repository"
)

// observers is several fallback.Observers as one: fallback.Config takes a
// single Observer, and this service has two (Prometheus and OpenTelemetry).
// Start runs them in order, each on the context the previous returned, so
// the tracer's span is in the context every later one sees; End runs them
// in reverse, like deferred calls.
type observers []fallback.Observer

var _ fallback.CacheObserver = observers(nil)

func (all observers) Start(ctx context.Context, op fallback.Op, e repository.Entity) context.Context {
	for _, o := range all {
		ctx = o.Start(ctx, op, e)
	}
	return ctx
}

func (all observers) End(ctx context.Context, c fallback.Call) {
	for i := len(all) - 1; i >= 0; i-- {
		all[i].End(ctx, c)
	}
}

// StartCacheRead brackets a read from the cache for those that want it.
func (all observers) StartCacheRead(ctx context.Context, op fallback.Op, e repository.Entity) (context.Context, func(error)) {
	var ends []func(error)
	for _, o := range all {
		if co, ok := o.(fallback.CacheObserver); ok {
			var end func(error)
			ctx, end = co.StartCacheRead(ctx, op, e)
			ends = append(ends, end)
		}
	}
	return ctx, func(err error) {
		for i := len(ends) - 1; i >= 0; i-- {
			ends[i](err)
		}
	}
}
