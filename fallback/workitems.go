package fallback

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

type workItemRepo struct{ l *Layer }

var _ repository.WorkItemRepository = workItemRepo{}

func (r workItemRepo) Get(ctx context.Context, id uuid.UUID) (repository.WorkItem, error) {
	l := r.l
	if l.pendingBeforePrimary() {
		if cache := l.cacheNow(); cache != nil {
			w, e, cerr := cache.GetWorkItem(ctx, id)
			if ok, err := l.servedPending(ctx, "get work item "+id.String(), e, cerr); ok {
				return w, err
			}
		}
	}
	evictions := l.itemEvictions.begin()
	var w repository.WorkItem
	var err error
	var answered bool
	if l.cfg.SoftTimeout > 0 { // see vendorRepo.Get
		var early bool
		w, err, answered, early = softAttempt(l, ctx, func(ctx context.Context) (repository.WorkItem, error) {
			return l.primary.WorkItems().Get(ctx, id)
		}, func(ctx context.Context) (repository.WorkItem, bool) {
			w, why, perr := r.fromCache(ctx, id)
			return w, why == "" && perr == nil
		}, func(w repository.WorkItem, err error) { r.settle(id, evictions, w, err) })
		if early {
			return w, nil
		}
	} else {
		w, err, answered = attempt(l, ctx, func(ctx context.Context) (repository.WorkItem, error) {
			return l.primary.WorkItems().Get(ctx, id)
		})
	}
	if answered {
		r.settle(id, evictions, w, err)
		if err == nil || errors.Is(err, repository.ErrNotFound) {
			l.fromPrimary(ctx)
		}
		return w, err
	}
	if l.cacheNow() == nil {
		return repository.WorkItem{}, l.readUnavailable(ctx, "get work item "+id.String(), err, l.noCache())
	}
	cached, why, perr := r.fromCache(ctx, id)
	if why != "" {
		return repository.WorkItem{}, l.readUnavailable(ctx, "get work item "+id.String(), err, why)
	}
	return cached, perr
}

// settle applies the primary's answer to a Get to the cache.
func (r workItemRepo) settle(id uuid.UUID, evictions uint64, w repository.WorkItem, err error) {
	switch {
	case err == nil:
		r.l.writeThroughWorkItem(w, evictions)
	case errors.Is(err, repository.ErrNotFound):
		r.l.uncacheWorkItem(id, false)
	}
}

// fromCache is vendorRepo.fromCache for work items.
func (r workItemRepo) fromCache(ctx context.Context, id uuid.UUID) (w repository.WorkItem, why string, perr error) {
	l := r.l
	cache := l.cacheNow()
	if cache == nil {
		return repository.WorkItem{}, l.noCache(), nil
	}
	cctx, end := l.cacheRead(ctx, OpGet, repository.EntityWorkItem)
	cached, e, cerr := cache.GetWorkItem(cctx, id)
	end(cerr)
	if ok, err := l.servedPending(ctx, "get work item "+id.String(), e, cerr); ok {
		return cached, "", err
	}
	if why := l.cacheVerdict(ctx, e, cerr, cache.WorkItemTTL()); why != "" {
		return repository.WorkItem{}, why, nil
	}
	return cached, "", nil
}

func (r workItemRepo) List(ctx context.Context, f repository.WorkItemFilter) ([]repository.WorkItem, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("fallback: list work items: %w", err)
	}
	l := r.l
	evictions := l.itemEvictions.begin()
	return list(l, ctx, "list work items", repository.EntityWorkItem, func(w repository.WorkItem) { l.writeThroughWorkItem(w, evictions) },
		func(ctx context.Context) ([]repository.WorkItem, error) { return l.primary.WorkItems().List(ctx, f) },
		func(ctx context.Context, window time.Duration) ([]repository.WorkItem, error) {
			if cache := l.cacheNow(); cache != nil {
				return cache.ListWorkItemsWithin(ctx, f, window)
			}
			return nil, errNoCache
		})
}

func (r workItemRepo) Create(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	if err := w.Validate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("fallback: create work item: %w", err)
	}
	l := r.l
	const op = "create work item"
	queued := func(cause error) (repository.WorkItem, error) { return l.queueWorkItemCreate(ctx, op, w, cause) }
	if w.ID != uuid.Nil && l.queueFirst(ctx, repository.EntityWorkItem, w.ID.String()) {
		return queued(nil)
	}
	evictions := l.itemEvictions.begin()
	out, err := write(l, ctx, op, func(ctx context.Context) (repository.WorkItem, error) {
		return l.primary.WorkItems().Create(ctx, w)
	}, queued)
	if err == nil {
		l.writeThroughWorkItem(out, evictions)
	}
	return out, err
}

func (r workItemRepo) Update(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	if err := w.ValidateUpdate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("fallback: update work item: %w", err)
	}
	l := r.l
	op := "update work item " + w.ID.String()
	queued := func(cause error) (repository.WorkItem, error) { return l.queueWorkItemUpdate(ctx, op, w, cause) }
	if l.queueFirst(ctx, repository.EntityWorkItem, w.ID.String()) {
		return queued(nil)
	}
	out, err := write(l, ctx, op, func(ctx context.Context) (repository.WorkItem, error) {
		return l.primary.WorkItems().Update(ctx, w)
	}, queued)
	switch {
	case err == nil:
		l.cacheUpdatedWorkItem(out)
	case errors.Is(err, repository.ErrNotFound):
		l.uncacheWorkItem(w.ID, false)
	}
	return out, err
}

func (r workItemRepo) Delete(ctx context.Context, id uuid.UUID) error {
	l := r.l
	op := "delete work item " + id.String()
	queued := func(cause error) (struct{}, error) { return struct{}{}, l.queueWorkItemDelete(ctx, op, id, cause) }
	if l.queueFirst(ctx, repository.EntityWorkItem, id.String()) {
		_, err := queued(nil)
		return err
	}
	_, err := write(l, ctx, op, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, l.primary.WorkItems().Delete(ctx, id)
	}, queued)
	if err == nil || errors.Is(err, repository.ErrNotFound) {
		// The soft delete reached the whole subtree: evict it rather than
		// keep copies that would still read as live during an outage.
		l.uncacheWorkItem(id, true)
	}
	return err
}
