package fallback

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// The durable write queue. A write made with a context from WithWriteQueue
// that PostgreSQL cannot take — the breaker is open, or the call failed
// with an outage before it was sent — is validated, stored in the cache
// file together with the cache entry it changes (one SQLite transaction,
// fsync'd), and answered as it will be. The replayer (replay.go) applies
// queued writes in order, exactly once, when PostgreSQL is back.
//
// Only a failure that certainly left PostgreSQL unchanged is queued: a
// write that may have been applied is ErrOutcomeUnknown, as without the
// queue, so the caller never gets a write applied twice from one call.

// DefaultMaxQueuedWrites is Config.MaxQueuedWrites's default.
const DefaultMaxQueuedWrites = 10_000

type writeQueueKey struct{}

// WithWriteQueue returns a context whose writes may be queued when
// PostgreSQL cannot take them, instead of failing with ErrUnavailable. A
// queued write returns nil and the entity as it will be (Create: ID,
// Version 1 and timestamps; Update: Version+1; the timestamps are the
// queue's, PostgreSQL sets its own at replay), and Origin reports
// SourceQueue with Pending. It is replayed in queue order when PostgreSQL
// is back; one that PostgreSQL then rejects (a version conflict, a taken
// key, invalid) becomes a dead letter and Config.OnConflict is called.
//
// Queue only what may wait and may lose to a concurrent change: see the
// project's docs/queue.md. Money, inventory and uniqueness are decided
// by the database at the moment of the write, not by a queue.
//
// What cannot be queued fails as before, with ErrUnavailable and the
// reason: the queue is full (Config.MaxQueuedWrites), the layer has no
// cache, the primary cannot apply writes exactly once (it is not a
// repository.WriteApplier), an update of a row the cache does not hold
// (or a delete of such a work item: its deleted state cannot be shown; a
// vendor's delete is queued all the same), a work item created under a
// parent the cache does not hold,
// or a move to another parent (it rewrites a subtree the cache may hold
// only in part).
func WithWriteQueue(ctx context.Context) context.Context {
	return context.WithValue(ctx, writeQueueKey{}, true)
}

func queueing(ctx context.Context) bool {
	v, _ := ctx.Value(writeQueueKey{}).(bool)
	return v
}

// QueuedWrite is a write in the durable queue: pending, or a dead letter.
type QueuedWrite struct {
	ID          uuid.UUID // the write's ID: PostgreSQL records it, so it is applied once
	Op          repository.WriteOp
	Entity      repository.Entity
	Key         string // the vendor's name or the work item's ID
	BaseVersion int64  // for an update: the version it was built on
	QueuedAt    time.Time
	Attempts    int    // replays that failed transiently
	Err         string // why the last replay failed, or why it is a dead letter
	DeadLetter  bool
	DeadAt      time.Time

	// The entity as the caller wrote it.
	Vendor   *repository.Vendor
	WorkItem *repository.WorkItem
	// For a dead letter: PostgreSQL's row when it was rejected (nil when
	// none was known or the row is gone).
	CurrentVendor   *repository.Vendor
	CurrentWorkItem *repository.WorkItem
}

func queuedWrite(q sqlitecache.QueuedWrite) QueuedWrite {
	out := QueuedWrite{
		ID: q.Write.ID, Op: q.Write.Op, Entity: q.Write.Entity, Key: q.Write.Key(), BaseVersion: q.Write.BaseVersion,
		QueuedAt: q.QueuedAt, Attempts: q.Attempts, Err: q.Err, DeadLetter: q.Dead, DeadAt: q.DeadAt,
		CurrentVendor: q.Current.Vendor, CurrentWorkItem: q.Current.WorkItem,
	}
	if q.Write.Entity == repository.EntityWorkItem {
		w := q.Write.WorkItem
		out.WorkItem = &w
	} else {
		v := q.Write.Vendor
		out.Vendor = &v
	}
	return out
}

// QueueStatus summarizes the durable write queue.
type QueueStatus struct {
	Pending     int       // writes waiting to be replayed
	Oldest      time.Time // when the oldest pending write was queued; zero when none
	DeadLetters int       // writes PostgreSQL rejected, kept for Retry or Discard
}

// Queue returns the queue's status, read from the cache file.
// Errors: ErrUnavailable when the layer has no cache open, ErrClosed, or
// the cache's error.
func (l *Layer) Queue(ctx context.Context) (QueueStatus, error) {
	cache, err := l.queueCache("queue")
	if err != nil {
		return QueueStatus{}, err
	}
	s, err := cache.QueueStats(ctx)
	if err != nil {
		return QueueStatus{}, fmt.Errorf("fallback: queue: %w", err)
	}
	if l.queue != nil {
		l.queue.counted(s)
	}
	return QueueStatus{Pending: s.Pending, Oldest: s.Oldest, DeadLetters: s.DeadLetters}, nil
}

// DeadLetters returns the writes PostgreSQL rejected at replay, in queue
// order, each with its reason (Err) and PostgreSQL's row at the time.
// Errors: as Queue.
func (l *Layer) DeadLetters(ctx context.Context) ([]QueuedWrite, error) {
	cache, err := l.queueCache("dead letters")
	if err != nil {
		return nil, err
	}
	qs, err := cache.DeadLetters(ctx)
	if err != nil {
		return nil, fmt.Errorf("fallback: dead letters: %w", err)
	}
	out := make([]QueuedWrite, len(qs))
	for i, q := range qs {
		out[i] = queuedWrite(q)
	}
	return out, nil
}

// Retry puts the dead letter id back at the end of the queue, as it was
// written (an update keeps its base version, so retry one whose reason is
// gone), and replays it when PostgreSQL answers. The cache keeps
// PostgreSQL's row until then.
// Errors: ErrNotFound when there is no such write, ErrInvalid when it is
// pending rather than a dead letter, otherwise as Queue.
func (l *Layer) Retry(ctx context.Context, id uuid.UUID) error {
	cache, err := l.queueCache("retry")
	if err != nil {
		return err
	}
	if _, err := cache.RetryWrite(ctx, id); err != nil {
		return fmt.Errorf("fallback: retry: %w", err)
	}
	if l.queue != nil {
		l.queue.pending.Add(1)
		l.queue.wake()
	}
	return nil
}

// Discard removes the dead letter id for good.
// Errors: as Retry.
func (l *Layer) Discard(ctx context.Context, id uuid.UUID) error {
	cache, err := l.queueCache("discard")
	if err != nil {
		return err
	}
	if _, err := cache.DiscardWrite(ctx, id); err != nil {
		return fmt.Errorf("fallback: discard: %w", err)
	}
	return nil
}

func (l *Layer) queueCache(op string) (*sqlitecache.Cache, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	cache := l.cacheNow()
	if cache == nil {
		return nil, fmt.Errorf("fallback: %s: %w: %s", op, repository.ErrUnavailable, l.noCache())
	}
	return cache, nil
}

// NotQueuedError says why a write that asked for the queue
// (WithWriteQueue) could not be queued. The write's error matches
// repository.ErrUnavailable and, with errors.As, a *NotQueuedError: nothing
// was written anywhere.
type NotQueuedError struct {
	// Reason is safe to show a client: what the write lacked (its entity is
	// not in the cache, it moves a subtree, the queue is full), or only
	// that this process's storage failed.
	Reason string
	// Err is the failure behind Reason, for logs: it may name a path or an
	// operating system error. Nil when Reason is all there is.
	Err error
}

func (e *NotQueuedError) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason
}

func (e *NotQueuedError) Unwrap() error { return e.Err }

func notQueuedBecause(reason string, err error) *NotQueuedError {
	return &NotQueuedError{Reason: reason, Err: err}
}

// canQueue reports whether a write made with ctx may be queued at all.
func (l *Layer) canQueue(ctx context.Context) bool {
	return l.queue != nil && queueing(ctx)
}

// queueFirst reports whether a write to key must go to the queue without
// trying PostgreSQL: writes to it are already pending, and a write sent
// now would overtake them. Nothing is read while the queue is empty.
func (l *Layer) queueFirst(ctx context.Context, entity repository.Entity, key string) bool {
	if !l.canQueue(ctx) || l.queue.pending.Load() == 0 {
		return false
	}
	cache := l.cacheNow()
	if cache == nil {
		return false
	}
	var e sqlitecache.Entry
	if entity == repository.EntityVendor {
		_, e, _ = cache.GetVendor(ctx, key)
	} else if id, err := uuid.Parse(key); err == nil {
		_, e, _ = cache.GetWorkItem(ctx, id)
	}
	return e.Pending
}

// enqueue stores w with after (see sqlitecache.Cache.Enqueue) and answers
// the caller: nil, recorded as SourceQueue, or the reason it could not be
// queued. cause is why PostgreSQL was not used (nil: writes to the key
// were pending).
func (l *Layer) enqueue(ctx context.Context, op string, w repository.Write, after sqlitecache.Row, cause error) error {
	if l.closed.Load() {
		return ErrClosed
	}
	cache := l.cacheNow()
	if cache == nil {
		return l.notQueued(ctx, op, cause, notQueuedBecause("the cache is not open", errors.New(l.noCache())))
	}
	var err error
	if w.ID, err = uuid.NewV7(); err != nil {
		return l.notQueued(ctx, op, cause, notQueuedBecause("no ID could be made for it", err))
	}
	_, err = cache.Enqueue(ctx, w, after, l.cfg.MaxQueuedWrites)
	switch {
	case err == nil:
	case errors.Is(err, sqlitecache.ErrQueueFull):
		l.queue.full.Add(1)
		return l.notQueued(ctx, op, cause, notQueuedBecause(
			fmt.Sprintf("the write queue is full (%d writes pending)", l.cfg.MaxQueuedWrites), err))
	case errors.Is(err, repository.ErrConflict), errors.Is(err, repository.ErrNotFound),
		errors.Is(err, repository.ErrAlreadyExists), errors.Is(err, repository.ErrInvalid):
		// The cache and the queue hold the key's last known state: the
		// answer PostgreSQL would give to this write on top of it.
		return fmt.Errorf("fallback: %s (PostgreSQL unreachable; checked against the cache and the queue): %w", op, err)
	case ctx.Err() != nil:
		return fmt.Errorf("fallback: %s: not queued: %w", op, ctx.Err())
	default:
		return l.notQueued(ctx, op, cause, notQueuedBecause("storing it in the cache failed", err))
	}
	l.queue.queued.Add(1)
	l.queue.pending.Add(1)
	provenanceFrom(ctx).record(Origin{Source: SourceQueue, Pending: true, CachedAt: time.Now()})
	if !l.degraded.Load() {
		l.queue.wake() // PostgreSQL is back: replay now
	}
	return nil
}

// notQueued is the ErrUnavailable of a write that asked for the queue and
// could not be queued: nothing was written anywhere.
func (l *Layer) notQueued(ctx context.Context, op string, cause error, why *NotQueuedError) error {
	l.stats.unavailable.Add(1)
	provenanceFrom(ctx).record(Origin{})
	if cause == nil {
		return fmt.Errorf("fallback: %s: %w: not written: it could not be queued: %w", op, repository.ErrUnavailable, why)
	}
	return fmt.Errorf("fallback: %s: %w: not written: it could not be queued (%w); primary: %w",
		op, repository.ErrUnavailable, why, l.cause(cause))
}

// The queued forms of the six writes: each computes the entity as it will
// be from what the cache holds, as the store would from its row.

func (l *Layer) queueVendorCreate(ctx context.Context, op string, v repository.Vendor, cause error) (repository.Vendor, error) {
	if v.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return repository.Vendor{}, l.notQueued(ctx, op, cause, notQueuedBecause("no ID could be made for it", err))
		}
		v.ID = id
	}
	now := time.Now().UTC()
	v.Version, v.CreatedAt, v.UpdatedAt = 1, now, now
	w := repository.Write{Op: repository.WriteCreate, Entity: repository.EntityVendor, Vendor: v}
	if err := l.enqueue(ctx, op, w, sqlitecache.Row{Vendor: &v}, cause); err != nil {
		return repository.Vendor{}, err
	}
	return v, nil
}

func (l *Layer) queueVendorUpdate(ctx context.Context, op string, v repository.Vendor, cause error) (repository.Vendor, error) {
	cur, err := l.cachedForQueue(ctx, op, repository.EntityVendor, v.Name, uuid.Nil, cause)
	if err != nil {
		return repository.Vendor{}, err
	}
	w := repository.Write{Op: repository.WriteUpdate, Entity: repository.EntityVendor, Vendor: v, BaseVersion: v.Version}
	after := v
	after.ID, after.CreatedAt, after.CreatedBy = cur.vendor.ID, cur.vendor.CreatedAt, cur.vendor.CreatedBy
	after.Version, after.UpdatedAt = v.Version+1, time.Now().UTC()
	if err := l.enqueue(ctx, op, w, sqlitecache.Row{Vendor: &after}, cause); err != nil {
		return repository.Vendor{}, err
	}
	return after, nil
}

func (l *Layer) queueVendorDelete(ctx context.Context, op, name string, cause error) error {
	w := repository.Write{Op: repository.WriteDelete, Entity: repository.EntityVendor, Vendor: repository.Vendor{Name: name}}
	return l.enqueue(ctx, op, w, sqlitecache.Row{}, cause)
}

func (l *Layer) queueWorkItemCreate(ctx context.Context, op string, item repository.WorkItem, cause error) (repository.WorkItem, error) {
	if item.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return repository.WorkItem{}, l.notQueued(ctx, op, cause, notQueuedBecause("no ID could be made for it", err))
		}
		item.ID = id
	}
	item.Path, item.Depth, item.DeletedAt = "", 0, nil
	if item.ParentID != nil {
		parent, err := l.cachedForQueue(ctx, op, repository.EntityWorkItem, "", *item.ParentID, cause)
		if err != nil {
			if errors.Is(err, repository.ErrNotFound) {
				return repository.WorkItem{}, fmt.Errorf("fallback: %s: %w", op, repository.Invalid("ParentID", "parent %s is deleted", item.ParentID))
			}
			return repository.WorkItem{}, err
		}
		if parent.item.DeletedAt != nil {
			return repository.WorkItem{}, fmt.Errorf("fallback: %s: %w", op, repository.Invalid("ParentID", "parent %s is deleted", item.ParentID))
		}
		if parent.item.Depth+1 > repository.MaxDepth {
			return repository.WorkItem{}, fmt.Errorf("fallback: %s: %w", op,
				repository.Invalid("ParentID", "item would be at depth %d, the limit is %d", parent.item.Depth+1, repository.MaxDepth))
		}
		item.Path, item.Depth = parent.item.ChildPath(), parent.item.Depth+1
	}
	now := time.Now().UTC()
	item.Version, item.CreatedAt, item.UpdatedAt = 1, now, now
	w := repository.Write{Op: repository.WriteCreate, Entity: repository.EntityWorkItem, WorkItem: item}
	if err := l.enqueue(ctx, op, w, sqlitecache.Row{WorkItem: &item}, cause); err != nil {
		return repository.WorkItem{}, err
	}
	return item, nil
}

func (l *Layer) queueWorkItemUpdate(ctx context.Context, op string, item repository.WorkItem, cause error) (repository.WorkItem, error) {
	cur, err := l.cachedForQueue(ctx, op, repository.EntityWorkItem, "", item.ID, cause)
	if err != nil {
		return repository.WorkItem{}, err
	}
	if cur.item.DeletedAt != nil {
		return repository.WorkItem{}, fmt.Errorf("fallback: %s: work item %s is deleted (as of the cache and the queue): %w",
			op, item.ID, repository.ErrNotFound)
	}
	if !sameParent(cur.item.ParentID, item.ParentID) {
		return repository.WorkItem{}, l.notQueued(ctx, op, cause,
			notQueuedBecause("a move to another parent cannot be queued: it rewrites the whole subtree", nil))
	}
	w := repository.Write{Op: repository.WriteUpdate, Entity: repository.EntityWorkItem, WorkItem: item, BaseVersion: item.Version}
	after := item
	after.CreatedAt, after.CreatedBy, after.Path, after.Depth, after.DeletedAt =
		cur.item.CreatedAt, cur.item.CreatedBy, cur.item.Path, cur.item.Depth, nil
	after.Version, after.UpdatedAt = item.Version+1, time.Now().UTC()
	if err := l.enqueue(ctx, op, w, sqlitecache.Row{WorkItem: &after}, cause); err != nil {
		return repository.WorkItem{}, err
	}
	return after, nil
}

func (l *Layer) queueWorkItemDelete(ctx context.Context, op string, id uuid.UUID, cause error) error {
	cur, err := l.cachedForQueue(ctx, op, repository.EntityWorkItem, "", id, cause)
	if err != nil {
		return err
	}
	if cur.item.DeletedAt != nil {
		return nil // deleting a deleted item is a no-op, as in the store
	}
	after := cur.item
	now := time.Now().UTC()
	after.DeletedAt, after.UpdatedAt, after.Version = &now, now, cur.item.Version+1
	w := repository.Write{Op: repository.WriteDelete, Entity: repository.EntityWorkItem, WorkItem: repository.WorkItem{ID: id}}
	return l.enqueue(ctx, op, w, sqlitecache.Row{WorkItem: &after}, cause)
}

func sameParent(a, b *uuid.UUID) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// cachedRow is what the cache holds for a key a queued write builds on.
type cachedRow struct {
	vendor repository.Vendor
	item   repository.WorkItem
}

// cachedForQueue reads the row a queued update or delete (or a create's
// parent) builds on. A row the cache does not hold cannot be built on:
// ErrUnavailable. A vendor a queued write deletes, or a deleted work item
// (for an update), is ErrNotFound, as the store would answer.
func (l *Layer) cachedForQueue(ctx context.Context, op string, entity repository.Entity, name string, id uuid.UUID, cause error) (cachedRow, error) {
	cache := l.cacheNow()
	if cache == nil {
		return cachedRow{}, l.notQueued(ctx, op, cause, notQueuedBecause("the cache is not open", errors.New(l.noCache())))
	}
	var r cachedRow
	var err error
	key := name
	if entity == repository.EntityVendor {
		r.vendor, _, err = cache.GetVendor(ctx, name)
	} else {
		key = id.String()
		r.item, _, err = cache.GetWorkItem(ctx, id)
	}
	switch {
	case errors.Is(err, sqlitecache.ErrPendingDelete):
		return cachedRow{}, fmt.Errorf("fallback: %s: %w", op, err)
	case errors.Is(err, repository.ErrNotFound):
		return cachedRow{}, l.notQueued(ctx, op, cause, notQueuedBecause(fmt.Sprintf("%s %q is not in the cache, so the write has nothing to build on", entity, key), nil))
	case err != nil:
		return cachedRow{}, l.notQueued(ctx, op, cause, notQueuedBecause("reading the cache failed", err))
	}
	return r, nil
}
