package fallback

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgfallback/pgfallback/repository"
)

type vendorRepo struct{ l *Layer }

var _ repository.VendorRepository = vendorRepo{}

func (r vendorRepo) Get(ctx context.Context, name string) (repository.Vendor, error) {
	l := r.l
	v, err, answered := attempt(l, ctx, func(ctx context.Context) (repository.Vendor, error) {
		return l.primary.Vendors().Get(ctx, name)
	})
	if answered {
		switch {
		case err == nil:
			l.cacheVendor(v)
			l.fromPrimary(ctx)
		case errors.Is(err, repository.ErrNotFound):
			l.uncacheVendor(name)
			l.fromPrimary(ctx)
		}
		return v, err
	}
	cached, e, cerr := l.cache.GetVendor(ctx, name)
	switch {
	case cerr != nil:
		return repository.Vendor{}, l.readUnavailable(ctx, fmt.Sprintf("get vendor %q", name), err, "not served from cache: "+cerr.Error())
	case !l.fromCache(ctx, e, l.cache.VendorTTL()):
		return repository.Vendor{}, l.readUnavailable(ctx, fmt.Sprintf("get vendor %q", name), err,
			fmt.Sprintf("cached entry is %s old, past TTL plus StaleIfError", e.Age.Round(1e9)))
	}
	return cached, nil
}

func (r vendorRepo) List(ctx context.Context, f repository.VendorFilter) ([]repository.Vendor, error) {
	l := r.l
	vs, err, answered := attempt(l, ctx, func(ctx context.Context) ([]repository.Vendor, error) {
		return l.primary.Vendors().List(ctx, f)
	})
	if answered {
		if err == nil {
			for _, v := range vs {
				l.cacheVendor(v)
			}
			l.fromPrimary(ctx)
		}
		return vs, err
	}
	cached, cerr := l.cache.ListVendors(ctx, f)
	if cerr != nil {
		return nil, l.readUnavailable(ctx, "list vendors", err, "not served from cache: "+cerr.Error())
	}
	l.servedList(ctx)
	return cached, nil
}

func (r vendorRepo) Create(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	if err := v.Validate(); err != nil {
		return repository.Vendor{}, fmt.Errorf("fallback: create vendor: %w", err)
	}
	l := r.l
	out, err, answered := attempt(l, ctx, func(ctx context.Context) (repository.Vendor, error) {
		return l.primary.Vendors().Create(ctx, v)
	})
	if !answered {
		return repository.Vendor{}, l.writeUnavailable(ctx, fmt.Sprintf("create vendor %q", v.Name), err)
	}
	if err == nil {
		l.cacheVendor(out)
		l.fromPrimary(ctx)
	}
	return out, err
}

func (r vendorRepo) Update(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	if err := v.Validate(); err != nil {
		return repository.Vendor{}, fmt.Errorf("fallback: update vendor: %w", err)
	}
	l := r.l
	out, err, answered := attempt(l, ctx, func(ctx context.Context) (repository.Vendor, error) {
		return l.primary.Vendors().Update(ctx, v)
	})
	if !answered {
		return repository.Vendor{}, l.writeUnavailable(ctx, fmt.Sprintf("update vendor %q", v.Name), err)
	}
	switch {
	case err == nil:
		l.cacheVendor(out)
		l.fromPrimary(ctx)
	case errors.Is(err, repository.ErrNotFound):
		l.uncacheVendor(v.Name)
	}
	return out, err
}

func (r vendorRepo) Delete(ctx context.Context, name string) error {
	l := r.l
	_, err, answered := attempt(l, ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, l.primary.Vendors().Delete(ctx, name)
	})
	if !answered {
		return l.writeUnavailable(ctx, fmt.Sprintf("delete vendor %q", name), err)
	}
	if err == nil || errors.Is(err, repository.ErrNotFound) {
		l.uncacheVendor(name)
		l.fromPrimary(ctx)
	}
	return err
}
