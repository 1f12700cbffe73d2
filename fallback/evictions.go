package fallback

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// evictionLog is the race guard of the write-through (see recent.go): a
// call notes begin() before it reaches the primary, and may write its
// result through only if none of the keys that result depends on was
// evicted since. It records the last eviction of each key, so that an
// eviction of one key holds back the write-through of that key (and, for
// a work item, of its descendants) only — not of every key of its kind,
// which under a busy change feed (every refreshed work item may have
// moved) kept freshly read or created items out of the cache.
//
// record and since must be called with recentWrites' lock held: the check
// and the enqueue that follows it, and an eviction's record and enqueue,
// must not interleave. begin needs no lock.
type evictionLog[K comparable] struct {
	seq atomic.Uint64 // advanced by every eviction
	// floor, floorAt: calls that began before them are held back whatever
	// their keys, since the map was cleared then (it is bounded like
	// recentWrites).
	floor   uint64
	floorAt int64
	last    map[K]eviction
}

// eviction is a key's last eviction: its position, and when.
type eviction struct {
	seq uint64
	at  int64 // unix nanoseconds, this host's clock
}

// evictionMark is where a read began in the eviction log: the position a
// call noted before it reached the primary (begin), or, for rows another
// process read (a broadcast's), a time no later than that read began (at,
// unix nanoseconds in this host's clock; zero: use seq). A delete this
// process made after that time may be missing from such a row.
type evictionMark struct {
	seq uint64
	at  int64
}

// begin is the position a call notes before it reaches the primary.
func (e *evictionLog[K]) begin() uint64 { return e.seq.Load() }

// record notes an eviction of k (or of the subtree under it).
func (e *evictionLog[K]) record(k K) {
	s, now := e.seq.Add(1), time.Now().UnixNano()
	if e.last == nil {
		e.last = map[K]eviction{}
	}
	if len(e.last) >= maxRecent {
		clear(e.last)
		e.floor, e.floorAt = s, now
	}
	e.last[k] = eviction{seq: s, at: now}
}

// since reports whether one of keys was evicted after start: a result read
// from the primary before that eviction must not be written through after
// it.
func (e *evictionLog[K]) since(start uint64, keys ...K) bool {
	if start < e.floor {
		return true
	}
	if start == e.seq.Load() {
		return false // nothing evicted since the call began
	}
	for _, k := range keys {
		if e.last[k].seq > start {
			return true
		}
	}
	return false
}

// stale is since for a mark: by position, or by time (at or after it, to
// err on the side of reading again).
func (e *evictionLog[K]) stale(m evictionMark, keys ...K) bool {
	if m.at == 0 {
		return e.since(m.seq, keys...)
	}
	if m.at <= e.floorAt {
		return true
	}
	for _, k := range keys {
		if e.last[k].at >= m.at {
			return true
		}
	}
	return false
}

// vendorStale reports whether vendor name was evicted after m.
func (l *Layer) vendorStale(m evictionMark, name string) bool {
	return l.vendorEvictions.stale(m, name)
}

// itemStale reports whether w, read after m, depends on an eviction
// since: of w itself or of an ancestor.
func (l *Layer) itemStale(m evictionMark, w repository.WorkItem) bool {
	e := &l.itemEvictions
	if m.at == 0 && m.seq >= e.floor && m.seq == e.seq.Load() {
		return false // the common case, without parsing the path
	}
	return e.stale(m, itemKeys(w.ID, w.Path)...)
}

// itemKeys are the keys a work item's cached copy depends on: its own ID
// and its ancestors' (its Path), since deleting or moving an ancestor
// rewrites it in the primary.
func itemKeys(id uuid.UUID, path string) []uuid.UUID {
	keys := []uuid.UUID{id}
	for seg := range strings.SplitSeq(path, "/") {
		if a, err := uuid.Parse(seg); err == nil {
			keys = append(keys, a)
		}
	}
	return keys
}
