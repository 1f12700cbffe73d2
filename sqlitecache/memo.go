package sqlitecache

import (
	"maps"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/pgfallback/pgfallback/repository"
)

// memo keeps decoded entities by key, each tagged with the row's rev (a
// random value every write renews, in any process). A Get reads only rev and
// cached_at when its memo entry is current, and skips the blob and the
// decode, which were most of a hit's time and nearly all its allocations.
// A memo entry is never trusted without that check, so writes by other
// processes (or ClearAll, deletes, ...) are seen immediately.
//
// Values in the memo are never handed out: callers get deep copies, so they
// cannot mutate shared state.
//
// The memo is bounded by entry count and by an estimate of the memory the
// decoded entries hold, because one entity's metadata may be up to 1 MiB.
type memo[K comparable, V any] struct {
	mu       sync.RWMutex
	m        map[K]memoEntry[V]
	max      int   // entries; 0 disables the memo
	maxBytes int64 // estimated bytes held
	bytes    int64
}

type memoEntry[V any] struct {
	rev  int64
	size int64
	val  V
}

func newMemo[K comparable, V any](max int, maxBytes int64) *memo[K, V] {
	return &memo[K, V]{m: make(map[K]memoEntry[V]), max: max, maxBytes: maxBytes}
}

// memoSize estimates the memory a decoded entry holds from its encoded
// size: the strings share one copy of it, the maps and interface boxes
// roughly double it.
func memoSize(enc int64, data []byte) int64 {
	n := int64(len(data))
	if enc == encBinaryZstd {
		n *= 8 // unknown expansion: assume a generous ratio
		var h zstd.Header
		if h.Decode(data) == nil && h.HasFCS {
			n = int64(min(h.FrameContentSize, maxDecodedSize))
		}
	}
	return 2*n + 512
}

// get returns the memoized entry for k; ok is false when there is none.
func (m *memo[K, V]) get(k K) (memoEntry[V], bool) {
	if m.max <= 0 {
		return memoEntry[V]{}, false
	}
	m.mu.RLock()
	e, ok := m.m[k]
	m.mu.RUnlock()
	return e, ok
}

// worth reports whether an entry of this size may be memoized at all: one
// entry must not claim more than an eighth of the budget.
func (m *memo[K, V]) worth(size int64) bool {
	return m.max > 0 && size <= m.maxBytes/8
}

func (m *memo[K, V]) put(k K, rev int64, size int64, v V) {
	if rev == 0 || !m.worth(size) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.m[k]; ok {
		m.bytes -= old.size
		delete(m.m, k)
	}
	// Evict arbitrary entries (map order is random) until this one fits:
	// cheaper than LRU bookkeeping on every hit, and a wrong guess costs
	// one decode.
	for old, e := range m.m {
		if len(m.m) < m.max && m.bytes+size <= m.maxBytes {
			break
		}
		m.bytes -= e.size
		delete(m.m, old)
	}
	m.m[k] = memoEntry[V]{rev: rev, size: size, val: v}
	m.bytes += size
}

func (m *memo[K, V]) drop(k K) {
	if m.max <= 0 {
		return
	}
	m.mu.Lock()
	if e, ok := m.m[k]; ok {
		m.bytes -= e.size
		delete(m.m, k)
	}
	m.mu.Unlock()
}

// frozen is a decoded metadata map kept in a memo, with the keys whose
// values are containers (maps, slices) listed once, so a copy does not have
// to walk the whole map: iterating a map costs more than cloning it.
type frozen struct {
	m      map[string]any
	nested []string
}

func freeze(m map[string]any) frozen {
	f := frozen{m: m}
	for k, v := range m {
		switch v.(type) {
		case map[string]any, []any:
			f.nested = append(f.nested, k)
		}
	}
	return f
}

// thaw returns a deep copy of the frozen map. maps.Clone copies the hash
// table wholesale (no rehashing); only the containers are then replaced.
// Strings, float64s, bools and nil are immutable and shared as they are,
// interface boxes included, which is what makes a copy cheaper than a
// decode.
func (f frozen) thaw() map[string]any {
	if f.m == nil {
		return nil
	}
	out := maps.Clone(f.m)
	for _, k := range f.nested {
		out[k] = copyValue(f.m[k])
	}
	return out
}

// memoVendor and memoWorkItem are what the memos hold: the entity with its
// metadata split off as a frozen map (the entity's own Metadata is nil).
type memoVendor struct {
	v    repository.Vendor
	meta frozen
}

type memoWorkItem struct {
	w    repository.WorkItem
	meta frozen
}

func newMemoVendor(v repository.Vendor) memoVendor {
	m := memoVendor{v: v, meta: freeze(v.Metadata)}
	m.v.Metadata = nil
	return m
}

func newMemoWorkItem(w repository.WorkItem) memoWorkItem {
	m := memoWorkItem{w: w, meta: freeze(w.Metadata)}
	m.w.Metadata = nil
	return m
}

// vendor returns a deep copy: nothing the caller can reach is shared.
func (m memoVendor) vendor() repository.Vendor {
	v := m.v
	v.Metadata = m.meta.thaw()
	return v
}

// workItem returns a deep copy.
func (m memoWorkItem) workItem() repository.WorkItem {
	w := m.w
	w.Metadata = m.meta.thaw()
	if w.ParentID != nil {
		p := *w.ParentID
		w.ParentID = &p
	}
	if w.DeletedAt != nil {
		t := *w.DeletedAt
		w.DeletedAt = &t
	}
	return w
}

// copyMap deep-copies decoded metadata (see thaw).
func copyMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := maps.Clone(m)
	for k, v := range out {
		switch v.(type) {
		case map[string]any, []any:
			out[k] = copyValue(v)
		}
	}
	return out
}

func copyValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return copyMap(x)
	case []any:
		out := make([]any, len(x))
		for i, el := range x {
			out[i] = copyValue(el)
		}
		return out
	}
	return v
}
