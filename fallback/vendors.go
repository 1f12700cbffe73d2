package fallback

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

type vendorRepo struct{ l *Layer }

var _ repository.VendorRepository = vendorRepo{}

// Every method validates its input before choosing between the primary and
// the cache: bad input is ErrInvalid whatever the database's state, never
// ErrUnavailable because the breaker happens to be open.

func (r vendorRepo) Get(ctx context.Context, name string) (repository.Vendor, error) {
	if err := repository.ValidateVendorName(name); err != nil {
		return repository.Vendor{}, fmt.Errorf("fallback: get vendor: %w", err)
	}
	l := r.l
	if l.pendingBeforePrimary() {
		if cache := l.cacheNow(); cache != nil {
			v, e, cerr := cache.GetVendor(ctx, name)
			if ok, err := l.servedPending(ctx, fmt.Sprintf("get vendor %q", name), e, cerr); ok {
				return v, err
			}
		}
	}
	evictions := l.vendorEvictions.begin()
	var v repository.Vendor
	var err error
	var answered bool
	if l.cfg.SoftTimeout > 0 {
		// The closures go to a goroutine, so they cost allocations: only
		// with a soft timeout.
		var early bool
		v, err, answered, early = softAttempt(l, ctx, func(ctx context.Context) (repository.Vendor, error) {
			return l.primary.Vendors().Get(ctx, name)
		}, func(ctx context.Context) (repository.Vendor, bool) {
			v, why, perr := r.fromCache(ctx, name)
			return v, why == "" && perr == nil
		}, func(v repository.Vendor, err error) { r.settle(name, evictions, v, err) })
		if early {
			return v, nil
		}
	} else {
		v, err, answered = attempt(l, ctx, func(ctx context.Context) (repository.Vendor, error) {
			return l.primary.Vendors().Get(ctx, name)
		})
	}
	if answered {
		r.settle(name, evictions, v, err)
		if err == nil || errors.Is(err, repository.ErrNotFound) {
			l.fromPrimary(ctx)
		}
		return v, err
	}
	if l.cacheNow() == nil {
		return repository.Vendor{}, l.readUnavailable(ctx, fmt.Sprintf("get vendor %q", name), err, l.noCache())
	}
	cached, why, perr := r.fromCache(ctx, name)
	if why != "" {
		return repository.Vendor{}, l.readUnavailable(ctx, fmt.Sprintf("get vendor %q", name), err, why)
	}
	return cached, perr
}

// settle applies the primary's answer to a Get to the cache.
func (r vendorRepo) settle(name string, evictions uint64, v repository.Vendor, err error) {
	switch {
	case err == nil:
		r.l.writeThroughVendor(v, evictions)
	case errors.Is(err, repository.ErrNotFound):
		r.l.uncacheVendor(name)
	}
}

// fromCache answers a Get from the cache by the rules of an outage and
// records the Origin. why is "" when it did; perr is the answer of an entry
// a queued write is pending on (why is then ""), for which Pending is
// recorded instead.
func (r vendorRepo) fromCache(ctx context.Context, name string) (v repository.Vendor, why string, perr error) {
	l := r.l
	cache := l.cacheNow()
	if cache == nil {
		return repository.Vendor{}, l.noCache(), nil
	}
	cctx, end := l.cacheRead(ctx, OpGet, repository.EntityVendor)
	cached, e, cerr := cache.GetVendor(cctx, name)
	end(cerr)
	if ok, err := l.servedPending(ctx, fmt.Sprintf("get vendor %q", name), e, cerr); ok {
		return cached, "", err
	}
	if why := l.cacheVerdict(ctx, e, cerr, cache.VendorTTL()); why != "" {
		return repository.Vendor{}, why, nil
	}
	return cached, "", nil
}

func (r vendorRepo) List(ctx context.Context, f repository.VendorFilter) ([]repository.Vendor, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("fallback: list vendors: %w", err)
	}
	l := r.l
	evictions := l.vendorEvictions.begin()
	return list(l, ctx, "list vendors", repository.EntityVendor, func(v repository.Vendor) { l.writeThroughVendor(v, evictions) },
		func(ctx context.Context) ([]repository.Vendor, error) { return l.primary.Vendors().List(ctx, f) },
		func(ctx context.Context, window time.Duration) ([]repository.Vendor, error) {
			if cache := l.cacheNow(); cache != nil {
				return cache.ListVendorsWithin(ctx, f, window)
			}
			return nil, errNoCache
		})
}

func (r vendorRepo) Create(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	if err := v.Validate(); err != nil {
		return repository.Vendor{}, fmt.Errorf("fallback: create vendor: %w", err)
	}
	l := r.l
	op := fmt.Sprintf("create vendor %q", v.Name)
	queued := func(cause error) (repository.Vendor, error) { return l.queueVendorCreate(ctx, op, v, cause) }
	if l.queueFirst(ctx, repository.EntityVendor, v.Name) {
		return queued(nil)
	}
	evictions := l.vendorEvictions.begin()
	out, err := write(l, ctx, op, func(ctx context.Context) (repository.Vendor, error) {
		return l.primary.Vendors().Create(ctx, v)
	}, queued)
	if err == nil {
		l.writeThroughVendor(out, evictions)
	}
	return out, err
}

func (r vendorRepo) Update(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	if err := v.ValidateUpdate(); err != nil {
		return repository.Vendor{}, fmt.Errorf("fallback: update vendor: %w", err)
	}
	l := r.l
	op := fmt.Sprintf("update vendor %q", v.Name)
	queued := func(cause error) (repository.Vendor, error) { return l.queueVendorUpdate(ctx, op, v, cause) }
	if l.queueFirst(ctx, repository.EntityVendor, v.Name) {
		return queued(nil)
	}
	evictions := l.vendorEvictions.begin()
	out, err := write(l, ctx, op, func(ctx context.Context) (repository.Vendor, error) {
		return l.primary.Vendors().Update(ctx, v)
	}, queued)
	switch {
	case err == nil:
		l.writeThroughVendor(out, evictions)
	case errors.Is(err, repository.ErrNotFound):
		l.uncacheVendor(v.Name)
	}
	return out, err
}

func (r vendorRepo) Delete(ctx context.Context, name string) error {
	if err := repository.ValidateVendorName(name); err != nil {
		return fmt.Errorf("fallback: delete vendor: %w", err)
	}
	l := r.l
	op := fmt.Sprintf("delete vendor %q", name)
	queued := func(cause error) (struct{}, error) { return struct{}{}, l.queueVendorDelete(ctx, op, name, cause) }
	if l.queueFirst(ctx, repository.EntityVendor, name) {
		_, err := queued(nil)
		return err
	}
	_, err := write(l, ctx, op, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, l.primary.Vendors().Delete(ctx, name)
	}, queued)
	if err == nil || errors.Is(err, repository.ErrNotFound) {
		l.uncacheVendor(name)
	}
	return err
}
