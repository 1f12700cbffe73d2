package fallback

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

type workItemRepo struct{ l *Layer }

var _ repository.WorkItemRepository = workItemRepo{}

func (r workItemRepo) Get(ctx context.Context, id uuid.UUID) (repository.WorkItem, error) {
	l := r.l
	w, err, answered := attempt(l, ctx, func(ctx context.Context) (repository.WorkItem, error) {
		return l.primary.WorkItems().Get(ctx, id)
	})
	if answered {
		switch {
		case err == nil:
			l.cacheWorkItem(w)
			l.fromPrimary(ctx)
		case errors.Is(err, repository.ErrNotFound):
			l.uncacheWorkItem(id, false)
			l.fromPrimary(ctx)
		}
		return w, err
	}
	cached, e, cerr := l.cache.GetWorkItem(ctx, id)
	switch {
	case cerr != nil:
		return repository.WorkItem{}, l.readUnavailable(ctx, "get work item "+id.String(), err, "not served from cache: "+cerr.Error())
	case !l.fromCache(ctx, e, l.cache.WorkItemTTL()):
		return repository.WorkItem{}, l.readUnavailable(ctx, "get work item "+id.String(), err,
			fmt.Sprintf("cached entry is %s old, past TTL plus StaleIfError", e.Age.Round(1e9)))
	}
	return cached, nil
}

func (r workItemRepo) List(ctx context.Context, f repository.WorkItemFilter) ([]repository.WorkItem, error) {
	l := r.l
	ws, err, answered := attempt(l, ctx, func(ctx context.Context) ([]repository.WorkItem, error) {
		return l.primary.WorkItems().List(ctx, f)
	})
	if answered {
		if err == nil {
			for _, w := range ws {
				l.cacheWorkItem(w)
			}
			l.fromPrimary(ctx)
		}
		return ws, err
	}
	cached, cerr := l.cache.ListWorkItems(ctx, f)
	if cerr != nil {
		return nil, l.readUnavailable(ctx, "list work items", err, "not served from cache: "+cerr.Error())
	}
	l.servedList(ctx)
	return cached, nil
}

func (r workItemRepo) Create(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	if err := w.Validate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("fallback: create work item: %w", err)
	}
	l := r.l
	out, err, answered := attempt(l, ctx, func(ctx context.Context) (repository.WorkItem, error) {
		return l.primary.WorkItems().Create(ctx, w)
	})
	if !answered {
		return repository.WorkItem{}, l.writeUnavailable(ctx, "create work item", err)
	}
	if err == nil {
		l.cacheWorkItem(out)
		l.fromPrimary(ctx)
	}
	return out, err
}

func (r workItemRepo) Update(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	if err := w.Validate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("fallback: update work item: %w", err)
	}
	l := r.l
	out, err, answered := attempt(l, ctx, func(ctx context.Context) (repository.WorkItem, error) {
		return l.primary.WorkItems().Update(ctx, w)
	})
	if !answered {
		return repository.WorkItem{}, l.writeUnavailable(ctx, "update work item "+w.ID.String(), err)
	}
	switch {
	case err == nil:
		l.cacheUpdatedWorkItem(out)
		l.fromPrimary(ctx)
	case errors.Is(err, repository.ErrNotFound):
		l.uncacheWorkItem(w.ID, false)
	}
	return out, err
}

func (r workItemRepo) Delete(ctx context.Context, id uuid.UUID) error {
	l := r.l
	_, err, answered := attempt(l, ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, l.primary.WorkItems().Delete(ctx, id)
	})
	if !answered {
		return l.writeUnavailable(ctx, "delete work item "+id.String(), err)
	}
	if err == nil || errors.Is(err, repository.ErrNotFound) {
		// The soft delete reached the whole subtree: evict it rather than
		// keep copies that would still read as live during an outage.
		l.uncacheWorkItem(id, true)
		l.fromPrimary(ctx)
	}
	return err
}
