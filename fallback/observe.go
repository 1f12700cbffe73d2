package fallback

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// Op names a repository call, for observers.
type Op string

const (
	OpGet    Op = "get"
	OpList   Op = "list"
	OpCreate Op = "create"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// Outcome classifies how a call ended, from the error classification: a
// small fixed set, fit for a metric label.
type Outcome string

const (
	OutcomeOK             Outcome = "ok"
	OutcomeNotFound       Outcome = "not_found"
	OutcomeInvalid        Outcome = "invalid"
	OutcomeConflict       Outcome = "conflict"
	OutcomeAlreadyExists  Outcome = "already_exists"
	OutcomeUnreadable     Outcome = "unreadable"
	OutcomeUnavailable    Outcome = "unavailable"
	OutcomeOutcomeUnknown Outcome = "outcome_unknown"
	OutcomeCanceled       Outcome = "canceled" // the caller's context ended
	OutcomeClosed         Outcome = "closed"   // the layer was closed
	OutcomeError          Outcome = "error"    // anything else
)

// OutcomeOf classifies err.
func OutcomeOf(err error) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, repository.ErrNotFound):
		return OutcomeNotFound
	case errors.Is(err, repository.ErrInvalid):
		return OutcomeInvalid
	case errors.Is(err, repository.ErrConflict):
		return OutcomeConflict
	case errors.Is(err, repository.ErrAlreadyExists):
		return OutcomeAlreadyExists
	case errors.Is(err, repository.ErrUnreadable):
		return OutcomeUnreadable
	case errors.Is(err, repository.ErrUnavailable):
		return OutcomeUnavailable
	case errors.Is(err, repository.ErrOutcomeUnknown):
		return OutcomeOutcomeUnknown
	case errors.Is(err, ErrClosed):
		return OutcomeClosed
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	}
	return OutcomeError
}

// Call describes one finished repository call.
type Call struct {
	Op     Op
	Entity repository.Entity
	// Origin: where the answer came from; Source is SourceNone when the
	// call failed. Origin.Slow says a read was answered from the cache
	// because PostgreSQL was slower than Config.SoftTimeout (Source is then
	// SourceCache, Breaker usually Closed): a slowdown, not an outage.
	Origin   Origin
	Duration time.Duration // as the caller saw it
	Outcome  Outcome
	Err      error
	Breaker  State // when the call ended
}

// Observer watches every repository call of a layer: the hook that metrics
// and tracing adapters (packages prom and oteltrace) plug into, so that
// fallback depends on no telemetry library. Its methods run on the caller's
// goroutine, in the call's path: they must be quick and must not block.
type Observer interface {
	// Start is called as a call begins. The context it returns is the
	// one the call runs with (a tracer puts its span in it) and is given
	// back to End.
	Start(ctx context.Context, op Op, entity repository.Entity) context.Context
	// End is called when the call returns.
	End(ctx context.Context, c Call)
}

// CacheObserver is an Observer that also wants to see each read the layer
// makes from the cache when PostgreSQL cannot answer (a tracer makes it a
// child span).
type CacheObserver interface {
	Observer
	// StartCacheRead is called before the read; end is called after it
	// with the cache's error (nil for a hit, even a stale one).
	StartCacheRead(ctx context.Context, op Op, entity repository.Entity) (_ context.Context, end func(error))
}

// observed runs one call under the observer: Start, the call with the
// context Start returned (with a Provenance, to learn the call's Origin),
// End.
func observed[T any](l *Layer, ctx context.Context, op Op, entity repository.Entity, call func(context.Context) (T, error)) (T, error) {
	o := l.cfg.Observer
	start := time.Now()
	ctx = o.Start(ctx, op, entity)
	prov := provenanceFrom(ctx)
	if prov == nil {
		ctx, prov = WithProvenance(ctx)
	}
	out, err := call(ctx)
	o.End(ctx, Call{Op: op, Entity: entity, Origin: prov.Origin(), Duration: time.Since(start),
		Outcome: OutcomeOf(err), Err: err, Breaker: l.State()})
	return out, err
}

// cacheRead brackets a read from the cache for a CacheObserver; without
// one it costs nothing.
func (l *Layer) cacheRead(ctx context.Context, op Op, entity repository.Entity) (context.Context, func(error)) {
	if co, ok := l.cfg.Observer.(CacheObserver); ok {
		return co.StartCacheRead(ctx, op, entity)
	}
	return ctx, func(error) {}
}

// observedVendors and observedWorkItems are what Vendors and WorkItems
// return when Config.Observer is set: without an observer the layer's
// calls pay nothing for it.
type observedVendors struct{ r vendorRepo }

func (o observedVendors) Get(ctx context.Context, name string) (repository.Vendor, error) {
	return observed(o.r.l, ctx, OpGet, repository.EntityVendor, func(ctx context.Context) (repository.Vendor, error) {
		return o.r.Get(ctx, name)
	})
}

func (o observedVendors) List(ctx context.Context, f repository.VendorFilter) ([]repository.Vendor, error) {
	return observed(o.r.l, ctx, OpList, repository.EntityVendor, func(ctx context.Context) ([]repository.Vendor, error) {
		return o.r.List(ctx, f)
	})
}

func (o observedVendors) Create(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	return observed(o.r.l, ctx, OpCreate, repository.EntityVendor, func(ctx context.Context) (repository.Vendor, error) {
		return o.r.Create(ctx, v)
	})
}

func (o observedVendors) Update(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	return observed(o.r.l, ctx, OpUpdate, repository.EntityVendor, func(ctx context.Context) (repository.Vendor, error) {
		return o.r.Update(ctx, v)
	})
}

func (o observedVendors) Delete(ctx context.Context, name string) error {
	_, err := observed(o.r.l, ctx, OpDelete, repository.EntityVendor, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, o.r.Delete(ctx, name)
	})
	return err
}

type observedWorkItems struct{ r workItemRepo }

func (o observedWorkItems) Get(ctx context.Context, id uuid.UUID) (repository.WorkItem, error) {
	return observed(o.r.l, ctx, OpGet, repository.EntityWorkItem, func(ctx context.Context) (repository.WorkItem, error) {
		return o.r.Get(ctx, id)
	})
}

func (o observedWorkItems) List(ctx context.Context, f repository.WorkItemFilter) ([]repository.WorkItem, error) {
	return observed(o.r.l, ctx, OpList, repository.EntityWorkItem, func(ctx context.Context) ([]repository.WorkItem, error) {
		return o.r.List(ctx, f)
	})
}

func (o observedWorkItems) Create(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	return observed(o.r.l, ctx, OpCreate, repository.EntityWorkItem, func(ctx context.Context) (repository.WorkItem, error) {
		return o.r.Create(ctx, w)
	})
}

func (o observedWorkItems) Update(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	return observed(o.r.l, ctx, OpUpdate, repository.EntityWorkItem, func(ctx context.Context) (repository.WorkItem, error) {
		return o.r.Update(ctx, w)
	})
}

func (o observedWorkItems) Delete(ctx context.Context, id uuid.UUID) error {
	_, err := observed(o.r.l, ctx, OpDelete, repository.EntityWorkItem, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, o.r.Delete(ctx, id)
	})
	return err
}

// FuncObserver is an Observer (and CacheObserver) whose methods call the
// func fields that are set and do nothing for the others: for tests and
// small adapters.
type FuncObserver struct {
	StartFn          func(ctx context.Context, op Op, entity repository.Entity) context.Context
	EndFn            func(ctx context.Context, c Call)
	StartCacheReadFn func(ctx context.Context, op Op, entity repository.Entity) (context.Context, func(error))
}

func (f *FuncObserver) Start(ctx context.Context, op Op, entity repository.Entity) context.Context {
	if f.StartFn != nil {
		return f.StartFn(ctx, op, entity)
	}
	return ctx
}

func (f *FuncObserver) End(ctx context.Context, c Call) {
	if f.EndFn != nil {
		f.EndFn(ctx, c)
	}
}

func (f *FuncObserver) StartCacheRead(ctx context.Context, op Op, entity repository.Entity) (context.Context, func(error)) {
	if f.StartCacheReadFn != nil {
		return f.StartCacheReadFn(ctx, op, entity)
	}
	return ctx, func(error) {}
}

// Observers is several Observers as one: Config takes a single Observer,
// and a service may have two (Prometheus and OpenTelemetry).
// Start runs them in order, each on the context the previous returned, so
// the tracer's span is in the context every later one sees; End runs them
// in reverse, like deferred calls.
type Observers []Observer

var _ CacheObserver = Observers(nil)

func (all Observers) Start(ctx context.Context, op Op, e repository.Entity) context.Context {
	for _, o := range all {
		ctx = o.Start(ctx, op, e)
	}
	return ctx
}

func (all Observers) End(ctx context.Context, c Call) {
	for i := len(all) - 1; i >= 0; i-- {
		all[i].End(ctx, c)
	}
}

// StartCacheRead brackets a read from the cache for those that want it.
func (all Observers) StartCacheRead(ctx context.Context, op Op, e repository.Entity) (context.Context, func(error)) {
	var ends []func(error)
	for _, o := range all {
		if co, ok := o.(CacheObserver); ok {
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
