package fallback

import (
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// recentWrites remembers which version of each key the write-through sent
// to the cache, and when, so that a hot key read a thousand times a second
// is written to the cache once per refresh interval, not a thousand times.
// That is what keeps the healthy path's overhead near zero. Forgetting is
// always safe (it only costs a redundant cache write), so the maps are
// simply cleared when they grow past a bound.
type recentWrites struct {
	window time.Duration // 0: remember nothing
	mu     sync.Mutex
	vendor map[string]stamp
	item   map[uuid.UUID]stamp
}

// stamp identifies what was sent: the version, and UpdatedAt, which also
// tells apart a row deleted and created again at the same version.
type stamp struct {
	version int64
	updated int64
	at      int64 // when it was sent, unix nanoseconds
}

const maxRecent = 1 << 16

func newRecentWrites(window time.Duration) *recentWrites {
	return &recentWrites{window: window, vendor: map[string]stamp{}, item: map[uuid.UUID]stamp{}}
}

// fresh reports whether version of key was sent within the window; if not,
// it records that it is being sent now. r.mu must be held.
func fresh[K comparable](r *recentWrites, m map[K]stamp, key K, version int64, updated time.Time) bool {
	if r.window <= 0 {
		return false
	}
	now := time.Now().UnixNano()
	up := updated.UnixNano()
	if s, ok := m[key]; ok && s.version == version && s.updated == up && now-s.at < int64(r.window) {
		return true
	}
	if len(m) >= maxRecent {
		clear(m)
	}
	m[key] = stamp{version: version, updated: up, at: now}
	return false
}

// The layer's write-through entry points: they consult recentWrites, and
// forget a key whose update the writer could not queue.
//
// Evictions race with other calls: a Get that read a row just before a
// Delete evicted it would, writing its result through afterwards, put the
// deleted row back in the cache, to be served as live in the next outage.
// Calls therefore note the eviction log's position before they reach the
// primary and write through only if no key their result depends on — the
// row's own, and for a work item its ancestors' — was evicted meanwhile
// (evictions.go). The check and the enqueue happen under recentWrites'
// lock, as do an eviction's record and enqueue, so a write-through that
// passed the check is queued before the eviction that would have failed
// it, and the writer applies them in that order. A skipped write-through
// costs at most a cache miss.

// writeThroughVendor writes a vendor that a call returned through, unless
// it was evicted since the call began (evictions was noted before it).
func (l *Layer) writeThroughVendor(v repository.Vendor, evictions uint64) {
	r := l.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	if !l.vendorStale(evictionMark{seq: evictions}, v.Name) && !fresh(r, r.vendor, v.Name, v.Version, v.UpdatedAt) && !l.writer.setVendor(v) {
		delete(r.vendor, v.Name)
	}
}

func (l *Layer) uncacheVendor(name string) {
	r := l.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	l.vendorEvictions.record(name)
	delete(r.vendor, name)
	l.writer.evictVendor(name)
}

// writeThroughWorkItem is writeThroughVendor for work items.
func (l *Layer) writeThroughWorkItem(w repository.WorkItem, evictions uint64) {
	r := l.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	if !l.itemStale(evictionMark{seq: evictions}, w) && !fresh(r, r.item, w.ID, w.Version, w.UpdatedAt) && !l.writer.setWorkItem(w) {
		delete(r.item, w.ID)
	}
}

// cacheUpdatedWorkItem always queues: an update may have moved the item,
// which the writer checks against the cached copy, evicting the subtree.
// It counts as an eviction, since reads in flight may hold old paths.
func (l *Layer) cacheUpdatedWorkItem(w repository.WorkItem) {
	r := l.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	l.itemEvictions.record(w.ID)
	fresh(r, r.item, w.ID, w.Version, w.UpdatedAt)
	l.writer.updateWorkItem(w)
}

func (l *Layer) uncacheWorkItem(id uuid.UUID, tree bool) {
	r := l.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	l.itemEvictions.record(id)
	delete(r.item, id)
	if tree {
		l.writer.evictWorkItemTree(id)
	} else {
		l.writer.evictWorkItem(id)
	}
}
