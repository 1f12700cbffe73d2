package fallback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// WarmReport describes one warm run. As JSON (Stats.LastWarm) its keys
// are snake_case and Duration is integer nanoseconds, "duration_ns".
type WarmReport struct {
	Strategy  WarmStrategy  `json:"strategy"`
	Started   time.Time     `json:"started"`
	Duration  time.Duration `json:"duration_ns"`
	Refreshed int           `json:"refreshed"` // entries written to the cache from the primary
	Removed   int           `json:"removed"`   // cached entries dropped because the primary no longer has them
	Truncated bool          `json:"truncated"` // WarmAll stopped at WarmLimit; nothing was removed
	// Authoritative: the primary's rows replaced the cached ones whatever
	// their versions (a resync after the change feed's history ended).
	Authoritative bool   `json:"authoritative"`
	Err           string `json:"error"` // why the run stopped; empty when it did not fail
}

// VendorBatchGetter is implemented by primaries (pgstore) that can read many
// vendors in one query. GetMany returns those that exist, in any order.
type VendorBatchGetter interface {
	GetMany(ctx context.Context, names []string) ([]repository.Vendor, error)
}

// WorkItemBatchGetter is the work item counterpart of VendorBatchGetter.
type WorkItemBatchGetter interface {
	GetMany(ctx context.Context, ids []uuid.UUID) ([]repository.WorkItem, error)
}

// Warm refreshes the cache from the primary with the configured strategy
// (WarmCached when the strategy is WarmNone). Concurrent calls share one
// run. It reads the primary directly, whatever the breaker's state.
//
// Errors: the first error from the primary or the cache, wrapped; the
// report then covers the work done until it.
func (l *Layer) Warm(ctx context.Context) (WarmReport, error) {
	if l.closed.Load() {
		return WarmReport{}, ErrClosed
	}
	return l.warmShared(ctx, nil)
}

// resyncWarm is Warm with the primary's rows taken as authoritative:
// every cached row is replaced by the primary's whatever its version (see
// sqlitecache.ReplaceVendors), for a follower whose history ended. It is
// never merged with an ordinary warm in flight. It goes on from progress,
// and records there how far it got.
func (l *Layer) resyncWarm(ctx context.Context, progress *warmProgress) (WarmReport, error) {
	if l.closed.Load() {
		return WarmReport{}, ErrClosed
	}
	// Rows read before the history ended may wait in the write-through
	// queue: let them land first, so that the replace comes after them.
	if err := l.writer.flush(ctx); err != nil {
		return WarmReport{}, fmt.Errorf("fallback: resync: %w", err)
	}
	return l.warmShared(ctx, progress)
}

// warmShared runs one warm for concurrent callers: an authoritative one
// (a resync) when progress is not nil.
func (l *Layer) warmShared(ctx context.Context, progress *warmProgress) (WarmReport, error) {
	key := "warm"
	if progress != nil {
		key = "resync"
	}
	v, err, _ := l.warms.Do(key, func() (any, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(l.ctx, cancel)()
		return l.warm(ctx, progress)
	})
	return v.(WarmReport), err
}

// cacheWrites are the cache's setters a warm uses.
type cacheWrites struct {
	vendors   func(context.Context, []repository.Vendor) error
	workItems func(context.Context, []repository.WorkItem) error
}

// warmProgress is how far a warm got. A resync's warm that stops before
// the end (WarmTimeout, a failed batch, Close) goes on from there at its
// next attempt instead of starting over: on a large cache or a slow server
// — one just restarted, its buffers cold, every follower resyncing at once
// because the crash emptied the log — a warm that had to fit in one
// WarmTimeout would never finish, and the cache would stay marked stale.
// What a finished part replaced stays right: the resync follows the log
// from the head it took before its first attempt, which holds every change
// made since.
type warmProgress struct {
	vendors tableProgress[string, repository.Vendor]
	items   tableProgress[uuid.UUID, repository.WorkItem]
}

// tableProgress is how far a warm got through one table.
type tableProgress[K comparable, T any] struct {
	done bool
	// WarmCached: the keys up to after, in key order, are done.
	after   K
	started bool
	// WarmAll: where the next page starts (the last row stored, and how
	// many were), every key the primary had, for the removal at the end,
	// and whether WarmLimit cut the table short.
	last      *T
	offset    int
	seen      map[K]bool
	truncated bool
}

func (l *Layer) warm(ctx context.Context, progress *warmProgress) (WarmReport, error) {
	authoritative := progress != nil
	if progress == nil {
		progress = &warmProgress{}
	}
	rep := WarmReport{Strategy: l.cfg.Warm, Started: time.Now(), Authoritative: authoritative}
	cache := l.cacheNow()
	if cache == nil {
		return rep, nil // nothing to warm; a cache that opens later is warmed by its reads
	}
	set := cacheWrites{vendors: cache.SetVendors, workItems: cache.SetWorkItems}
	if authoritative {
		set = cacheWrites{vendors: cache.ReplaceVendors, workItems: cache.ReplaceWorkItems}
	}
	var err error
	if rep.Strategy == WarmAll {
		err = l.warmAll(ctx, cache, set, &rep, progress)
		rep.Truncated = progress.vendors.truncated || progress.items.truncated
	} else {
		rep.Strategy = WarmCached
		err = l.warmCached(ctx, cache, set, &rep, progress)
	}
	rep.Duration = time.Since(rep.Started)
	if err != nil {
		rep.Err = err.Error()
		err = fmt.Errorf("fallback: warm (%s): %w", rep.Strategy, err)
	}
	l.stats.warmRuns.Add(1)
	l.stats.mu.Lock()
	l.stats.lastWarm = rep
	l.stats.mu.Unlock()
	attrs := []any{"strategy", rep.Strategy.String(), "authoritative", authoritative, "refreshed", rep.Refreshed,
		"removed", rep.Removed, "duration", rep.Duration}
	if err != nil {
		// Not "warmed": a reader of the log must not take a failed warm
		// for a done one.
		l.log.Warn("pgfallback: cache warm did not finish", append(attrs, "err", err)...)
	} else {
		l.log.Info("pgfallback: cache warmed", attrs...)
	}
	return rep, err
}

// warmCached re-reads every cached key from the primary, a batch at a time.
func (l *Layer) warmCached(ctx context.Context, cache *sqlitecache.Cache, set cacheWrites, rep *WarmReport, p *warmProgress) error {
	if err := warmKeys(ctx, l, rep, &p.vendors, cache.VendorNames, strings.Compare, l.vendorBatch,
		func(v repository.Vendor) string { return v.Name }, set.vendors, cache.DeleteVendor); err != nil {
		return err
	}
	return warmKeys(ctx, l, rep, &p.items, cache.WorkItemIDs, compareUUIDs, l.workItemBatch,
		func(w repository.WorkItem) uuid.UUID { return w.ID }, set.workItems, cache.DeleteWorkItem)
}

// warmKeys re-reads one table's cached keys from the primary in key order,
// from where p says the last warm stopped, and removes those it no longer
// has.
func warmKeys[K comparable, T any](ctx context.Context, l *Layer, rep *WarmReport, p *tableProgress[K, T],
	cached func(context.Context) ([]K, error), compare func(K, K) int,
	get func(context.Context, []K) ([]T, error), key func(T) K,
	set func(context.Context, []T) error, remove func(context.Context, K) error) error {
	if p.done {
		return nil
	}
	keys, err := cached(ctx)
	if err != nil {
		return err
	}
	// Sorted here, not trusted to the cache's collation: a key skipped
	// by mistake would stay as the other history left it.
	slices.SortFunc(keys, compare)
	if p.started {
		i, found := slices.BinarySearchFunc(keys, p.after, compare)
		if found {
			i++
		}
		keys = keys[i:]
	}
	for batch := range chunks(keys, l.cfg.WarmBatch) {
		found, err := get(ctx, batch)
		if err != nil {
			return err
		}
		if err := set(ctx, found); err != nil {
			return err
		}
		rep.Refreshed += len(found)
		reportProgress(ctx, len(batch))
		present := make(map[K]bool, len(found))
		for _, v := range found {
			present[key(v)] = true
		}
		for _, k := range batch {
			if !present[k] {
				if err := remove(ctx, k); err != nil {
					return err
				}
				rep.Removed++
			}
		}
		p.after, p.started = batch[len(batch)-1], true
	}
	p.done = true
	return nil
}

func compareUUIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }

// VendorPager is implemented by primaries (pgstore) that page vendors by
// key: ListAfter returns up to limit vendors whose Name sorts after after,
// in Name order. A full copy then costs O(rows); through List's
// Limit/Offset it costs O(rows²) on the server.
type VendorPager interface {
	ListAfter(ctx context.Context, after string, limit int) ([]repository.Vendor, error)
}

// WorkItemPager is the work item counterpart of VendorPager: deleted items
// included, in ID order.
type WorkItemPager interface {
	ListAfter(ctx context.Context, after uuid.UUID, limit int) ([]repository.WorkItem, error)
}

// vendorPage reads one page of a full copy: by key when the primary can,
// else by offset.
func (l *Layer) vendorPage(ctx context.Context, last *repository.Vendor, limit, offset int) ([]repository.Vendor, error) {
	if p, ok := l.primary.Vendors().(VendorPager); ok {
		after := ""
		if last != nil {
			after = last.Name
		}
		return p.ListAfter(ctx, after, limit)
	}
	return l.primary.Vendors().List(ctx, repository.VendorFilter{Limit: limit, Offset: offset})
}

func (l *Layer) workItemPage(ctx context.Context, last *repository.WorkItem, limit, offset int) ([]repository.WorkItem, error) {
	if p, ok := l.primary.WorkItems().(WorkItemPager); ok {
		var after uuid.UUID
		if last != nil {
			after = last.ID
		}
		return p.ListAfter(ctx, after, limit)
	}
	return l.primary.WorkItems().List(ctx, repository.WorkItemFilter{IncludeDeleted: true, Limit: limit, Offset: offset})
}

// warmAll mirrors both tables page by page, then drops cached entries the
// primary no longer has (unless WarmLimit cut the mirror short).
func (l *Layer) warmAll(ctx context.Context, cache *sqlitecache.Cache, set cacheWrites, rep *WarmReport, p *warmProgress) error {
	if err := mirrorTable(ctx, l, rep, &p.vendors, l.vendorPage, func(v repository.Vendor) string { return v.Name },
		set.vendors, cache.VendorNames, cache.DeleteVendor); err != nil {
		return err
	}
	return mirrorTable(ctx, l, rep, &p.items, l.workItemPage, func(w repository.WorkItem) uuid.UUID { return w.ID },
		set.workItems, cache.WorkItemIDs, cache.DeleteWorkItem)
}

// mirrorTable mirrors one table from where p says the last warm stopped
// and, when it saw the whole table, drops the cached keys the primary no
// longer has.
func mirrorTable[K comparable, T any](ctx context.Context, l *Layer, rep *WarmReport, p *tableProgress[K, T],
	fetch func(ctx context.Context, last *T, limit, offset int) ([]T, error), key func(T) K,
	set func(context.Context, []T) error, cached func(context.Context) ([]K, error), remove func(context.Context, K) error) error {
	if p.done {
		return nil
	}
	if p.seen == nil {
		p.seen = map[K]bool{}
	}
	complete, err := mirror(ctx, l, rep, p, fetch, func(ctx context.Context, page []T) error {
		for _, v := range page {
			p.seen[key(v)] = true
		}
		return set(ctx, page)
	})
	if err != nil {
		return err
	}
	if complete {
		keys, err := cached(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if !p.seen[k] {
				if err := remove(ctx, k); err != nil {
					return err
				}
				rep.Removed++
			}
		}
	}
	p.done, p.seen = true, nil
	return nil
}

// mirror copies one table page by page until a short page or WarmLimit,
// and reports whether it saw the whole table. The next page is read from
// the primary while the last one is written to the cache: a full copy
// costs the slower of the two, not their sum.
func mirror[K comparable, T any](ctx context.Context, l *Layer, rep *WarmReport, p *tableProgress[K, T],
	fetch func(ctx context.Context, last *T, limit, offset int) ([]T, error),
	store func(ctx context.Context, page []T) error) (complete bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		page     []T
		err      error
		short    bool
		truncate bool
	}
	pages := make(chan result, 1)
	last, offset := p.last, p.offset // the reader's own: p moves as pages are stored
	go func() {
		defer close(pages)
		for {
			limit := min(l.cfg.WarmBatch, l.cfg.WarmLimit-offset)
			if limit <= 0 {
				pages <- result{truncate: true}
				return
			}
			pctx, pcancel := context.WithTimeout(ctx, l.cfg.PrimaryTimeout)
			page, err := fetch(pctx, last, limit, offset)
			pcancel()
			r := result{page: page, err: err, short: len(page) < limit}
			select {
			case pages <- r:
			case <-ctx.Done():
				return
			}
			if err != nil || r.short {
				return
			}
			last = &page[len(page)-1]
			offset += len(page)
		}
	}()
	defer func() {
		cancel()
		for range pages { // let the reader finish before returning
		}
	}()
	for r := range pages {
		switch {
		case r.err != nil:
			return false, r.err
		case r.truncate:
			p.truncated = true
			return false, nil
		}
		if len(r.page) > 0 {
			if err := store(ctx, r.page); err != nil {
				return false, err
			}
			p.last, p.offset = &r.page[len(r.page)-1], p.offset+len(r.page)
		}
		rep.Refreshed += len(r.page)
		reportProgress(ctx, len(r.page))
		if r.short {
			return true, nil
		}
	}
	return false, ctx.Err()
}

func (l *Layer) vendorBatch(ctx context.Context, names []string) ([]repository.Vendor, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.PrimaryTimeout)
	defer cancel()
	if bg, ok := l.primary.Vendors().(VendorBatchGetter); ok {
		found, err := bg.GetMany(ctx, names)
		if !errors.Is(err, repository.ErrUnreadable) {
			return found, err
		}
	}
	return getEach(ctx, names, l.primary.Vendors().Get)
}

func (l *Layer) workItemBatch(ctx context.Context, ids []uuid.UUID) ([]repository.WorkItem, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.PrimaryTimeout)
	defer cancel()
	if bg, ok := l.primary.WorkItems().(WorkItemBatchGetter); ok {
		found, err := bg.GetMany(ctx, ids)
		if !errors.Is(err, repository.ErrUnreadable) {
			return found, err
		}
	}
	return getEach(ctx, ids, l.primary.WorkItems().Get)
}

// getEach reads keys one by one, a few at a time, for primaries without
// GetMany and for a batch that holds an unreadable row. Keys the primary
// does not have, or holds unreadable, are left out: the warm then drops
// their cached copies, which no longer show what PostgreSQL holds.
func getEach[K any, T any](ctx context.Context, keys []K, get func(context.Context, K) (T, error)) ([]T, error) {
	results := make([]*T, len(keys))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, k := range keys {
		g.Go(func() error {
			v, err := get(ctx, k)
			switch {
			case err == nil:
				results[i] = &v
			case !errors.Is(err, repository.ErrNotFound) && !errors.Is(err, repository.ErrUnreadable):
				return err
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]T, 0, len(keys))
	for _, r := range results {
		if r != nil {
			out = append(out, *r)
		}
	}
	return out, nil
}

// chunks yields s in consecutive slices of at most n.
func chunks[T any](s []T, n int) func(func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

type progressKey struct{}

// WithWarmProgress returns a context with which Warm calls progress after
// each batch, with the number of keys or rows the batch covered: for a
// progress bar (pgfallback cache warm). progress runs on the warm's
// goroutine and must be quick.
func WithWarmProgress(ctx context.Context, progress func(done int)) context.Context {
	return context.WithValue(ctx, progressKey{}, progress)
}

func reportProgress(ctx context.Context, n int) {
	if p, ok := ctx.Value(progressKey{}).(func(int)); ok && n > 0 {
		p(n)
	}
}
