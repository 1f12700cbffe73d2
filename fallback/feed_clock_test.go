package fallback

import (
	"context"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// The change log's AsOf is in the database's clock; this host's may be
// minutes off it (no NTP in a container's host, a VM resumed, a laptop
// against a cloud database). An entry's age is this host's now minus the
// feed's AsOf: with the database's clock ahead, the age came out short by
// the skew (zero, for a skew longer than the outage), and an entry past its
// TTL was served as fresh for as long as the skew. AsOf is kept in this
// host's clock: a read of the log stamps it with when it was sent, and a
// notification's AsOf (the waker's read, in the database's clock) is moved
// by the largest offset the reads allow.
func TestFeedAsOfIsInThisHostsClock(t *testing.T) {
	for _, skew := range []time.Duration{10 * time.Minute, -10 * time.Minute} {
		t.Run("database "+map[bool]string{true: "ahead", false: "behind"}[skew > 0], func(t *testing.T) {
			ctx := context.Background()
			db := newFakeDB()
			g := newFakeLog(db)
			db.put(vendor("acme"))
			base := g.feed()
			read := base.ReadChangesFn
			base.ReadChangesFn = func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
				b, err := read(ctx, cursor, limit)
				if !b.AsOf.IsZero() {
					b.AsOf = b.AsOf.Add(skew)
				}
				return b, err
			}
			feed := &mock.HeardChangeFeed{ChangeFeed: *base, ReadHeardChangesFn: func(cursor string, limit int) (repository.ChangeBatch, bool) {
				b, err := read(context.Background(), cursor, limit)
				return repository.ChangeBatch{Changes: b.Changes, Next: b.Next, AsOf: b.AsOf.Add(skew)}, err == nil && !b.More
			}}
			l, cache := newHeardLayer(t, db, feed, sqlitecache.WithTTL(300*time.Millisecond))
			inThisClock := func(what string) {
				t.Helper()
				s := l.Stats().Feed
				if now := time.Now(); s.AsOf.After(now) || now.Sub(s.AsOf) > time.Minute {
					t.Fatalf("%s: AsOf %v is not in this host's clock (now %v; the database's is %v off)", what, s.AsOf, now, skew)
				}
			}
			inThisClock("after a read of the log")

			// A change heard in a notification, once the start's wake-ups
			// (which read the log) are taken.
			eventually(t, 5*time.Second, "the start's wake-ups to be taken", func() bool {
				return !l.feed.fromLog.Load() && len(l.feed.wake) == 0
			})
			if err := l.CatchUp(ctx); err != nil { // after any catch-up still running
				t.Fatal(err)
			}
			g.update("acme", 2)
			eventually(t, 5*time.Second, "the notified catch-up", func() bool {
				v, _, err := cache.GetVendor(ctx, "acme")
				return err == nil && v.Version == 2 && l.Stats().Feed.HeardCatchUps > 0
			})
			inThisClock("after a notification")

			// An outage: the entry must turn stale once its TTL has passed
			// since the last AsOf, whatever the database's clock said.
			tripBreaker(t, l, db)
			eventually(t, 5*time.Second, "the entry to be served as stale past its TTL", func() bool {
				pctx, prov := WithProvenance(ctx)
				if _, err := l.Vendors().Get(pctx, "acme"); err != nil {
					t.Fatalf("a cached vendor during the outage: %v", err)
				}
				o := prov.Origin()
				return o.Source == SourceCache && o.Stale && o.Age >= 300*time.Millisecond
			})
		})
	}
}

// An AsOf stored in the cache file after now (by a release that kept the
// database's clock, ahead of this host's; or before this host's clock
// stepped back) is not used to age entries: a restart that cannot read the
// log would otherwise serve them as fresh past their TTL.
func TestStoredAsOfAfterNowIsNotTrusted(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("acme"))
	cache, err := sqlitecache.Open(t.TempDir()+"/cache.db", sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil), sqlitecache.WithTTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	cached := vendor("acme")
	cached.Version = 1
	if err := cache.SetVendor(ctx, cached); err != nil {
		t.Fatal(err)
	}
	if err := cache.SetFeedState(ctx, sqlitecache.FeedState{Cursor: "0", AsOf: time.Now().Add(10 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	// The log cannot be read: the follower has only the file's state.
	feed := g.feed()
	feed.ReadChangesFn = func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
		return repository.ChangeBatch{}, errRefused
	}
	l, err := New(feedPrimary{db.primary(), feed}, cache, Config{Logger: discardLogger(), OpenTimeout: time.Hour, ChangeFeedPoll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	eventually(t, 5*time.Second, "the follower to load the file's cursor", func() bool {
		l.feed.run.Lock()
		defer l.feed.run.Unlock()
		return l.feed.inited
	})
	if asOf := l.Stats().Feed.AsOf; !asOf.IsZero() {
		t.Fatalf("AsOf %v from the file, after now, was taken", asOf)
	}
	tripBreaker(t, l, db)
	eventually(t, 5*time.Second, "the entry to be served as stale past its TTL", func() bool {
		pctx, prov := WithProvenance(ctx)
		if _, err := l.Vendors().Get(pctx, "acme"); err != nil {
			t.Fatalf("a cached vendor during the outage: %v", err)
		}
		return prov.Origin().Stale
	})
}
