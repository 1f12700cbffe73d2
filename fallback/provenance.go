package fallback

import (
	"context"
	"sync"
	"time"
)

// Source tells where a result came from.
type Source int

const (
	// SourceNone: the call has not completed, or failed.
	SourceNone Source = iota
	// SourcePrimary: PostgreSQL answered.
	SourcePrimary
	// SourceCache: the primary could not answer; the cache did.
	SourceCache
	// SourceQueue: a write was queued (WithWriteQueue), or a read answered
	// with the state a queued write will give the entity once replayed.
	SourceQueue
)

func (s Source) String() string {
	switch s {
	case SourcePrimary:
		return "primary"
	case SourceCache:
		return "cache"
	case SourceQueue:
		return "queue"
	}
	return "none"
}

// Origin describes where one call's result came from.
type Origin struct {
	Source Source
	// CachedAt and Age are the cache entry's write time and age when a Get
	// was served from the cache (zero for a List).
	CachedAt time.Time
	Age      time.Duration
	// Stale is true when a cached result was past its TTL (but within
	// Config.StaleIfError), or was cached before a resync of the change
	// feed that has not finished: the feed's cursor expired (the log was
	// pruned past it or reset, or a failover lost transactions), so the log
	// can no longer say whether the row changed since.
	Stale bool
	// Partial is true for a List served from the cache: it holds only the
	// entities that happened to be cached, within StaleIfError. A complete
	// mirror (WarmAll with the change feed) answers Lists in full: false.
	Partial bool
	// AsOf, for an answer from the cache: this instance's cache reflects
	// every change committed before this moment (the change feed's last
	// confirmed position, in this host's clock), so a service can say "as
	// of 12:03:41". Zero when the feed is off, never caught up, or fell
	// behind a pruned log.
	AsOf time.Time
	// Pending is true when the answer holds a write that PostgreSQL does
	// not have yet: a write just queued, a read of a key with a queued
	// write (read-your-writes), or a List from the cache while writes are
	// queued.
	Pending bool
	// Slow is true when the answer came from the cache because PostgreSQL
	// was slower than Config.SoftTimeout (or the background calls of
	// earlier slow reads were at their bound): it may answer, but not in
	// time.
	Slow bool
}

// Provenance records the Origin of calls made with a context from
// WithProvenance. It is safe for concurrent use; when several calls share
// one, it holds the last that completed.
type Provenance struct {
	mu     sync.Mutex
	origin Origin
}

// Origin returns the origin of the last completed call.
func (p *Provenance) Origin() Origin {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.origin
}

// markSlow marks the recorded origin as answered because PostgreSQL was
// slow.
func (p *Provenance) markSlow() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.origin.Slow = true
}

func (p *Provenance) record(o Origin) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.origin = o
	p.mu.Unlock()
}

type provenanceKey struct{}

// WithProvenance returns a context that makes the layer's repositories
// record where each result came from, without changing their interfaces:
//
//	ctx, prov := fallback.WithProvenance(ctx)
//	v, err := vendors.Get(ctx, "acme")
//	if o := prov.Origin(); o.Source == fallback.SourceCache && o.Stale {
//		w.Header().Set("Warning", `110 - "Response is Stale"`)
//	}
func WithProvenance(ctx context.Context) (context.Context, *Provenance) {
	p := &Provenance{}
	return context.WithValue(ctx, provenanceKey{}, p), p
}

func provenanceFrom(ctx context.Context) *Provenance {
	p, _ := ctx.Value(provenanceKey{}).(*Provenance)
	return p
}
