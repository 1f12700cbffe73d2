package fallback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// fakeLog is an in-memory change log: a cursor is the number of changes
// read; a cursor below expiredBelow has been pruned away.
type fakeLog struct {
	mu           sync.Mutex
	changes      []repository.Change
	expiredBelow int
	notify       chan struct{}
	db           *fakeDB
}

func newFakeLog(db *fakeDB) *fakeLog { return &fakeLog{notify: make(chan struct{}, 1), db: db} }

// record appends a change and notifies, as the triggers do at commit.
func (g *fakeLog) record(key string, op repository.ChangeOp, version int64) {
	g.mu.Lock()
	g.changes = append(g.changes, repository.Change{Seq: int64(len(g.changes) + 1), Entity: repository.EntityVendor,
		Key: key, Op: op, Version: version, At: time.Now()})
	g.mu.Unlock()
	select {
	case g.notify <- struct{}{}:
	default:
	}
}

// update sets a vendor's version in the database and records the change,
// as an UPDATE committed elsewhere does.
func (g *fakeLog) update(key string, version int64) {
	g.db.mu.Lock()
	v := g.db.vendors[key]
	v.Version = version
	g.db.vendors[key] = v
	g.db.mu.Unlock()
	g.record(key, repository.ChangeUpdate, version)
}

func (g *fakeLog) feed() *mock.ChangeFeed {
	return &mock.ChangeFeed{
		ChangeHeadFn: func(ctx context.Context) (string, error) {
			if err := g.db.enter(ctx); err != nil {
				return "", err
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			return strconv.Itoa(len(g.changes)), nil
		},
		ReadChangesFn: func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
			if err := g.db.enter(ctx); err != nil {
				return repository.ChangeBatch{}, err
			}
			from, err := strconv.Atoi(cursor)
			if err != nil {
				return repository.ChangeBatch{}, repository.Invalid("cursor", "%q", cursor)
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if from < g.expiredBelow {
				return repository.ChangeBatch{}, repository.ErrCursorExpired
			}
			to := min(len(g.changes), from+limit)
			b := repository.ChangeBatch{Changes: append([]repository.Change(nil), g.changes[from:to]...), Next: strconv.Itoa(to), More: to < len(g.changes)}
			if !b.More {
				b.AsOf = time.Now()
			}
			return b, nil
		},
		WatchChangesFn: func(ctx context.Context, wake func(bool)) error {
			wake(true)
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-g.notify:
					wake(false)
				}
			}
		},
	}
}

// feedPrimary is a primary that offers a change feed.
type feedPrimary struct {
	*mock.Primary
	*mock.ChangeFeed
}

func newFeedLayer(t *testing.T, db *fakeDB, g *fakeLog, path string, cfg Config) (*Layer, *sqlitecache.Cache) {
	t.Helper()
	return newFeedLayerWith(t, db, g.feed(), path, cfg)
}

// newFeedLayerWith is newFeedLayer over a feed the test has altered.
func newFeedLayerWith(t *testing.T, db *fakeDB, feed *mock.ChangeFeed, path string, cfg Config) (*Layer, *sqlitecache.Cache) {
	t.Helper()
	cache, err := sqlitecache.Open(path, sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = discardLogger()
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = time.Hour
	}
	if cfg.ChangeFeedPoll == 0 {
		cfg.ChangeFeedPoll = time.Hour // notifications only, unless a test wants the poll
	}
	l, err := New(feedPrimary{db.primary(), feed}, cache, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); cache.Close() })
	return l, cache
}

// A change made elsewhere (another instance, plain SQL) reaches this
// instance's cache with no call of its own: updated keys are refreshed,
// deleted ones evicted, keys it never cached ignored.
func TestFeedAppliesChangesMadeElsewhere(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	for _, n := range []string{"kept", "changed", "deleted", "uncached"} {
		db.put(vendor(n))
	}
	l, cache := newFeedLayer(t, db, g, t.TempDir()+"/cache.db", Config{})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	for _, n := range []string{"kept", "changed", "deleted"} {
		if _, err := l.Vendors().Get(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, l)

	// Elsewhere: an update, a delete, and a change to a key not cached here.
	db.mu.Lock()
	v := db.vendors["changed"]
	v.Version, v.Status = 2, repository.VendorBroken
	db.vendors["changed"] = v
	delete(db.vendors, "deleted")
	u := db.vendors["uncached"]
	u.Version = 2
	db.vendors["uncached"] = u
	db.mu.Unlock()
	g.record("changed", repository.ChangeUpdate, 2)
	g.record("deleted", repository.ChangeDelete, 1)
	g.record("uncached", repository.ChangeUpdate, 2)

	eventually(t, 5*time.Second, "the change to reach the cache", func() bool {
		got, _, err := cache.GetVendor(ctx, "changed")
		return err == nil && got.Version == 2
	})
	eventually(t, 5*time.Second, "the deleted vendor to be evicted", func() bool {
		_, _, err := cache.GetVendor(ctx, "deleted")
		return errors.Is(err, repository.ErrNotFound)
	})
	if _, _, err := cache.GetVendor(ctx, "uncached"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("a key this instance never cached was cached by the feed: %v", err)
	}
	// During an outage the answer says how current it is.
	tripBreaker(t, l, db)
	pctx, prov := WithProvenance(ctx)
	got, err := l.Vendors().Get(pctx, "changed")
	if err != nil || got.Version != 2 {
		t.Fatalf("served during the outage: %+v, %v", got, err)
	}
	if o := prov.Origin(); o.Source != SourceCache || o.AsOf.IsZero() || time.Since(o.AsOf) > time.Minute {
		t.Fatalf("origin %+v: want a cache answer with AsOf", o)
	}
	if _, err := l.Vendors().Get(ctx, "deleted"); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("the vendor deleted elsewhere is served during the outage: %v", err)
	}
	// The counter moves after the cache does: wait for it, then check.
	eventually(t, 5*time.Second, "the catch-up to count its changes", func() bool { return l.Stats().Feed.ChangesApplied >= 3 })
	if s := l.Stats().Feed; s.Resyncs != 1 {
		t.Fatalf("feed stats %+v: want the one initial resync", s)
	}
}

// The cursor lives in the cache file: a restarted instance catches up
// from where it stopped, with no full warm, even for changes made while it
// was down.
func TestFeedCursorSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	db, g, path, cache := followedOnce(t)
	cache.Close()

	g.update("a", 5)

	l2, cache2 := newFeedLayer(t, db, g, path, Config{})
	eventually(t, 5*time.Second, "the restarted instance to catch up", func() bool {
		got, _, err := cache2.GetVendor(ctx, "a")
		return err == nil && got.Version == 5
	})
	if s := l2.Stats(); s.Feed.Resyncs != 0 || s.WarmRuns != 0 {
		t.Fatalf("restart resynced (%d) or warmed (%d): the stored cursor was not used", s.Feed.Resyncs, s.WarmRuns)
	}
}

// A cursor older than the log (pruned) is answered by a full warm, never by
// skipping; AsOf is zero until that is done.
func TestFeedExpiredCursorResyncs(t *testing.T) {
	ctx := context.Background()
	db, g, path, cache := followedOnce(t)
	cache.Close()

	g.update("a", 9)
	g.mu.Lock()
	g.expiredBelow = len(g.changes) // everything up to now was pruned
	g.mu.Unlock()

	l2, cache2 := newFeedLayer(t, db, g, path, Config{})
	eventually(t, 5*time.Second, "the resync", func() bool { return l2.Stats().Feed.Resyncs == 1 && l2.Stats().Feed.State == FeedFollowing })
	if got, _, err := cache2.GetVendor(ctx, "a"); err != nil || got.Version != 9 {
		t.Fatalf("after the resync the cache holds %+v, %v; want version 9", got, err)
	}
}

// followedOnce runs an instance that caches vendor "a" while it follows
// the feed, and closes it: what a restart finds. The cache is left open,
// for the test to alter and close.
func followedOnce(t *testing.T) (*fakeDB, *fakeLog, string, *sqlitecache.Cache) {
	t.Helper()
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("a"))
	path := t.TempDir() + "/cache.db"
	l, cache := newFeedLayer(t, db, g, path, Config{})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	if _, err := l.Vendors().Get(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	l.Close()
	return db, g, path, cache
}

// A stored cursor the primary cannot read (written by a newer release
// before a rollback, or damaged) is answered by a resync, as an expired one
// is: retried, it would keep the feed behind for good.
func TestFeedForeignCursorResyncs(t *testing.T) {
	ctx := context.Background()
	db, g, path, cache := followedOnce(t)
	st, err := cache.FeedState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Cursor = "c9:a cursor of a later release"
	if err := cache.SetFeedState(ctx, st); err != nil {
		t.Fatal(err)
	}
	cache.Close()

	g.update("a", 4)
	l2, cache2 := newFeedLayer(t, db, g, path, Config{})
	eventually(t, 5*time.Second, "the resync", func() bool { return l2.Stats().Feed.Resyncs == 1 && l2.Stats().Feed.State == FeedFollowing })
	if got, _, err := cache2.GetVendor(ctx, "a"); err != nil || got.Version != 4 {
		t.Fatalf("after the resync the cache holds %+v, %v; want version 4", got, err)
	}

	// A feed that refuses even the cursors its own head gives is broken,
	// not foreign: it fails the catch-up rather than warm again and again.
	g.update("a", 5)
	broken := g.feed()
	read := broken.ReadChangesFn
	broken.ReadChangesFn = func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
		_, err := read(ctx, "x"+cursor, limit)
		return repository.ChangeBatch{}, err
	}
	l3, _ := newFeedLayerWith(t, db, broken, t.TempDir()+"/cache.db", Config{})
	eventually(t, 5*time.Second, "the broken feed to fail", func() bool { return l3.Stats().Feed.Errors > 0 })
	if err := l3.CatchUp(ctx); err == nil {
		t.Fatal("CatchUp over a feed that refuses its own cursors succeeded")
	}
	if s := l3.Stats().Feed; s.Resyncs > 2 {
		t.Fatalf("%d resyncs over a feed that refuses its own cursors, want at most 2 (the first look, and a second)", s.Resyncs)
	}
}

// After an outage the layer catches up from its cursor before closing the
// breaker: O(changes), not a re-read of every cached key.
func TestRecoveryCatchesUpInsteadOfWarming(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	for i := range 20 {
		db.put(vendor(fmt.Sprintf("v%02d", i)))
	}
	l, cache := newFeedLayer(t, db, g, t.TempDir()+"/cache.db", Config{OpenTimeout: 20 * time.Millisecond})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	for i := range 20 {
		if _, err := l.Vendors().Get(ctx, fmt.Sprintf("v%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, l)
	warmsBefore := l.Stats().WarmRuns
	tripBreaker(t, l, db)
	g.update("v07", 3)
	callsBefore := db.calls.Load()
	db.up()
	eventually(t, 5*time.Second, "recovery", func() bool { return l.State() == Closed })
	if got, _, err := cache.GetVendor(ctx, "v07"); err != nil || got.Version != 3 {
		t.Fatalf("the change made during the outage is not in the cache after recovery: %+v, %v", got, err)
	}
	if s := l.Stats(); s.WarmRuns != warmsBefore {
		t.Fatalf("recovery warmed (%d runs, was %d) instead of catching up", s.WarmRuns, warmsBefore)
	}
	if n := db.calls.Load() - callsBefore; n > 3 {
		t.Fatalf("recovery made %d primary calls for one changed key", n)
	}
}

// A log that says it is incomplete (a trigger a DBA disabled) is the
// primary's answer, not an outage: recovery cannot catch up from it, and
// closes the breaker all the same, since PostgreSQL answers.
func TestRecoveryThroughAnIncompleteLog(t *testing.T) {
	db := newFakeDB()
	g := newFakeLog(db)
	var incomplete atomic.Bool
	feed := g.feed()
	read := feed.ReadChangesFn
	feed.ReadChangesFn = func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
		if incomplete.Load() {
			return repository.ChangeBatch{}, fmt.Errorf("pgstore: read changes: %w: trigger disabled", repository.ErrChangeLogIncomplete)
		}
		return read(ctx, cursor, limit)
	}
	l, _ := newFeedLayerWith(t, db, feed, t.TempDir()+"/cache.db", Config{OpenTimeout: 20 * time.Millisecond})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	tripBreaker(t, l, db)
	incomplete.Store(true)
	db.up()
	eventually(t, 5*time.Second, "recovery with the log incomplete", func() bool { return l.State() == Closed })
	if s := l.Stats().Feed; s.State != FeedBehind || !strings.Contains(s.LastError, "change log incomplete") {
		t.Fatalf("after recovery the feed is %v (%q), want behind, saying the log is incomplete", s.State, s.LastError)
	}
}

// Close stops the follower and its watcher.
func TestFeedStopsOnClose(t *testing.T) {
	before := runtime.NumGoroutine()
	db := newFakeDB()
	g := newFakeLog(db)
	l, cache := newFeedLayer(t, db, g, t.TempDir()+"/cache.db", Config{ChangeFeedPoll: 5 * time.Millisecond})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cache.Close()
	eventually(t, 5*time.Second, "goroutines to stop", func() bool { return runtime.NumGoroutine() <= before })
}

// Without a feed (the fake primary offers none, or it is disabled) the
// state says so and nothing runs.
func TestFeedOff(t *testing.T) {
	db := newFakeDB()
	g := newFakeLog(db)
	l, _ := newFeedLayer(t, db, g, t.TempDir()+"/cache.db", Config{DisableChangeFeed: true})
	if s := l.Stats().Feed; s.State != FeedOff {
		t.Fatalf("disabled feed state %v", s.State)
	}
	l2, _ := newTestLayer(t, db, Config{})
	if s := l2.Stats().Feed; s.State != FeedOff {
		t.Fatalf("feed state %v for a primary without a feed", s.State)
	}
}

// Mirror mode (WarmAll with the feed): the cache holds every row, inserts
// made elsewhere included, and a List from it during an outage is complete
// as of the feed's position.
func TestMirrorModeListsAreComplete(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	for i := range 5 {
		db.put(vendor(fmt.Sprintf("m%d", i)))
	}
	l, cache := newFeedLayer(t, db, g, t.TempDir()+"/cache.db", Config{Warm: WarmAll})
	eventually(t, 5*time.Second, "the mirror", func() bool { s := l.Stats().Feed; return s.State == FeedFollowing && s.Mirror })
	db.put(vendor("inserted-elsewhere"))
	g.record("inserted-elsewhere", repository.ChangeInsert, 1)
	eventually(t, 5*time.Second, "the insert to reach the mirror", func() bool {
		_, _, err := cache.GetVendor(ctx, "inserted-elsewhere")
		return err == nil
	})
	tripBreaker(t, l, db)
	pctx, prov := WithProvenance(ctx)
	vs, err := l.Vendors().List(pctx, repository.VendorFilter{})
	if err != nil || len(vs) != 6 {
		t.Fatalf("List from the mirror: %d vendors, %v; want all 6", len(vs), err)
	}
	if o := prov.Origin(); o.Source != SourceCache || o.Partial || o.AsOf.IsZero() {
		t.Fatalf("origin %+v: want a complete (not partial) cache answer with AsOf", o)
	}
}

// A mirror cleared by another process (pgfallback cache clear) is no longer
// complete: a List from it during an outage must say partial, at once.
func TestClearedMirrorIsNotComplete(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	for i := range 3 {
		db.put(vendor(fmt.Sprintf("m%d", i)))
	}
	path := t.TempDir() + "/cache.db"
	l, _ := newFeedLayer(t, db, g, path, Config{Warm: WarmAll})
	eventually(t, 5*time.Second, "the mirror", func() bool { s := l.Stats().Feed; return s.State == FeedFollowing && s.Mirror })
	other, err := sqlitecache.Open(path, sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ClearAll(ctx); err != nil {
		t.Fatal(err)
	}
	other.Close()
	tripBreaker(t, l, db)
	pctx, prov := WithProvenance(ctx)
	if _, err := l.Vendors().List(pctx, repository.VendorFilter{}); err != nil {
		t.Fatal(err)
	}
	if o := prov.Origin(); !o.Partial {
		t.Fatalf("a List from a cleared mirror claims to be complete: %+v", o)
	}
}

// A resync reads the log from its new head at once: the feed follows again
// without waiting for another notification or the poll (it used to stay
// "resyncing" when the two wake-ups at start were folded into one).
func TestResyncFollowsWithoutAnotherWakeUp(t *testing.T) {
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("a"))
	l, _ := newFeedLayer(t, db, g, t.TempDir()+"/cache.db", Config{})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	g.mu.Lock()
	g.changes = append(g.changes, repository.Change{Seq: int64(len(g.changes) + 1), Entity: repository.EntityVendor, Key: "a", Op: repository.ChangeUpdate, Version: 2})
	g.expiredBelow = len(g.changes) // the layer's cursor was pruned away
	g.mu.Unlock()
	// One catch-up, no further wake-ups: it must resync and follow.
	if err := l.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := l.Stats().Feed; s.State != FeedFollowing || s.AsOf.IsZero() {
		t.Fatalf("after one catch-up over an expired cursor: %+v; want following with an AsOf", s)
	}
}

// A catch-up that fails is tried again on its own: after a failover nothing
// else may wake the follower for a long time (no more commits, and the
// poll is the last backstop).
func TestFailedCatchUpIsRetried(t *testing.T) {
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("a"))
	var fails atomic.Int32
	fails.Store(3)
	feed := g.feed()
	read := feed.ReadChangesFn
	feed.ReadChangesFn = func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
		if fails.Add(-1) >= 0 {
			return repository.ChangeBatch{}, errors.New("unexpected EOF")
		}
		return read(ctx, cursor, limit)
	}
	l, _ := newFeedLayerWith(t, db, feed, t.TempDir()+"/cache.db", Config{})
	eventually(t, 5*time.Second, "the feed to follow after three failed reads", func() bool {
		return l.Stats().Feed.State == FeedFollowing
	})
	if s := l.Stats().Feed; s.Errors != 3 {
		t.Fatalf("feed errors %d, want 3", s.Errors)
	}
}

// prunerFeed is a change feed whose pruning blocks until its context ends,
// as a slow DELETE would.
type prunerFeed struct {
	*mock.ChangeFeed
	pruning chan struct{}
}

func (p prunerFeed) PruneChanges(ctx context.Context, _ time.Duration) (int64, error) {
	select {
	case p.pruning <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return 0, ctx.Err()
}

// Closing the layer while the feed prunes the log is not a failure of the
// pruning: nothing is logged (issue 17: "A quick Close logs a false
// failure").
func TestCloseDuringPruneLogsNoFailure(t *testing.T) {
	var logs testutil.Buffer
	db := newFakeDB()
	g := newFakeLog(db)
	feed := prunerFeed{g.feed(), make(chan struct{}, 1)}
	cache, err := sqlitecache.Open(t.TempDir()+"/cache.db", sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	l, err := New(struct {
		*mock.Primary
		prunerFeed
	}{db.primary(), feed}, cache, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), OpenTimeout: time.Hour, ChangeFeedPoll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-feed.pruning: // the first catch-up is followed by a prune
	case <-time.After(10 * time.Second):
		l.Close()
		t.Fatal("the feed did not prune after its first catch-up")
	}
	l.Close()
	if strings.Contains(logs.String(), "pruning the change log failed") {
		t.Fatalf("Close during a prune logged a failure:\n%s", logs.String())
	}
}

// A notification that arrives while the layer is degraded is not acted on
// (recovery catches up before the breaker closes), but it must not be
// lost: a change committed after recovery's catch-up and before the
// breaker closes, with no commit after it, reaches the cache all the same.
// (The queued drill caught this: the other instance's last writes were
// never applied, and the feed said "following" for as long as the poll.)
func TestWakeWhileDegradedIsNotLost(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("a"))
	feed := g.feed()
	read := feed.ReadChangesFn
	watch := feed.WatchChangesFn
	var woken atomic.Int64 // wake-ups handed to the follower
	feed.WatchChangesFn = func(ctx context.Context, wake func(bool)) error {
		return watch(ctx, func(reconnected bool) { wake(reconnected); woken.Add(1) })
	}
	var armed atomic.Bool
	var l *Layer
	feed.ReadChangesFn = func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
		b, err := read(ctx, cursor, limit)
		if err == nil && armed.CompareAndSwap(true, false) {
			// Recovery's catch-up has read the log: a commit lands now,
			// its notification while the breaker is still open.
			before := woken.Load()
			g.update("a", 2)
			// Recovery waits here until the follower has taken the
			// wake-up, while the layer is still degraded (at most a
			// second: a follower busy elsewhere takes it later, and the
			// test then proves less but does not fail).
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if woken.Load() > before && len(l.feed.wake) == 0 {
					break
				}
			}
		}
		return b, err
	}
	// No minimum interval, and the follower idle before the trip: a
	// catch-up of its own that failed during the outage would be retried
	// after the close and hide the loss.
	l, cache := newFeedLayerWith(t, db, feed, t.TempDir()+"/cache.db", Config{OpenTimeout: 20 * time.Millisecond, ChangeFeedMinInterval: -1})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	if _, err := l.Vendors().Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	eventually(t, 5*time.Second, "the follower to idle", func() bool {
		if !l.feed.run.TryLock() {
			return false
		}
		l.feed.run.Unlock()
		return len(l.feed.wake) == 0
	})
	errorsBefore := l.Stats().Feed.Errors
	tripBreaker(t, l, db)
	armed.Store(true)
	db.up()
	eventually(t, 5*time.Second, "recovery", func() bool { return l.State() == Closed })
	if armed.Load() {
		t.Fatal("recovery did not read the change log")
	}
	eventually(t, 5*time.Second, "the change committed during recovery in the cache", func() bool {
		got, _, err := cache.GetVendor(ctx, "a")
		return err == nil && got.Version == 2
	})
	if n := l.Stats().Feed.Errors - errorsBefore; n != 0 {
		t.Logf("the follower failed %d catch-ups during the outage: its retry may have applied the change", n)
	}
}

// heardPrimary is a primary whose feed's notifications carry the changes.
type heardPrimary struct {
	*mock.Primary
	*mock.HeardChangeFeed
}

// newHeardLayer is a layer over db and feed, following, with "acme" cached
// and written through: where the tests of heard catch-ups begin.
func newHeardLayer(t *testing.T, db *fakeDB, feed *mock.HeardChangeFeed, opts ...sqlitecache.Option) (*Layer, *sqlitecache.Cache) {
	t.Helper()
	return newHeardLayerWith(t, db, feed, Config{}, opts...)
}

// newHeardLayerWith is newHeardLayer with cfg's Warm.
func newHeardLayerWith(t *testing.T, db *fakeDB, feed *mock.HeardChangeFeed, cfg Config, opts ...sqlitecache.Option) (*Layer, *sqlitecache.Cache) {
	t.Helper()
	cache, err := sqlitecache.Open(t.TempDir()+"/cache.db",
		append([]sqlitecache.Option{sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(heardPrimary{db.primary(), feed}, cache, Config{Logger: discardLogger(), OpenTimeout: time.Hour, ChangeFeedPoll: time.Hour, Warm: cfg.Warm})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); cache.Close() })
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	if _, err := l.Vendors().Get(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	return l, cache
}

// A catch-up a notification woke takes the changes it carried, without a
// read of the log; one that must reach "now" (CatchUp, the start, a
// reconnect) reads the log. When the notification's changes do not
// continue the cursor, the log is read.
func TestFeedHeardChangesAnswerNotifiedCatchUps(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("acme"))
	const (
		heardAll   = iota // the notification carried every change
		heardStale        // it carried nothing new
		heardNone         // it carried nothing usable: ok is false
	)
	var heardMode, logUpTo atomic.Int64 // logUpTo: the log shows changes up to it (-1: all)
	logUpTo.Store(-1)
	base := g.feed()
	read, watchFn := base.ReadChangesFn, base.WatchChangesFn
	connected := make(chan struct{})
	base.WatchChangesFn = func(ctx context.Context, wake func(bool)) error {
		return watchFn(ctx, func(reconnected bool) {
			wake(reconnected)
			if reconnected {
				close(connected)
			}
		})
	}
	base.ReadChangesFn = func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
		if upTo := logUpTo.Load(); upTo >= 0 {
			from, _ := strconv.Atoi(cursor)
			limit = max(int(upTo)-from, 0)
			b, err := read(ctx, cursor, max(limit, 1))
			if limit == 0 {
				b.Changes, b.Next = nil, cursor
			}
			b.More, b.AsOf = false, time.Now()
			return b, err
		}
		return read(ctx, cursor, limit)
	}
	feed := &mock.HeardChangeFeed{ChangeFeed: *base, ReadHeardChangesFn: func(cursor string, limit int) (repository.ChangeBatch, bool) {
		switch heardMode.Load() {
		case heardStale:
			return repository.ChangeBatch{Next: cursor, AsOf: time.Now()}, true
		case heardNone:
			return repository.ChangeBatch{}, false
		}
		b, err := read(context.Background(), cursor, limit)
		return b, err == nil && !b.More
	}}
	l, cache := newHeardLayer(t, db, feed)
	version := func() int64 {
		v, _, err := cache.GetVendor(ctx, "acme")
		if err != nil {
			return 0
		}
		return v.Version
	}

	// The wake-ups of the start (which read the log) are all taken, so
	// that the next one is the notification's alone.
	<-connected
	eventually(t, 5*time.Second, "the start's wake-ups to be taken", func() bool {
		return !l.feed.fromLog.Load() && len(l.feed.wake) == 0
	})
	if err := l.CatchUp(ctx); err != nil { // after any catch-up still running
		t.Fatal(err)
	}

	// The log lags; only the notification has the change.
	g.mu.Lock()
	logUpTo.Store(int64(len(g.changes)))
	g.mu.Unlock()
	g.update("acme", 2)
	eventually(t, 5*time.Second, "the notification's change to reach the cache", func() bool { return version() == 2 })
	if n := l.Stats().Feed.HeardCatchUps; n < 1 {
		t.Fatalf("heard catch-ups %d, want at least 1", n)
	}

	// An explicit catch-up reads the log, whatever was heard.
	logUpTo.Store(-1)
	heardMode.Store(heardStale)
	g.update("acme", 3)
	if err := l.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if v := version(); v != 3 {
		t.Fatalf("after CatchUp: version %d, want 3 (the log's)", v)
	}

	// A notification whose changes do not continue the cursor: the log.
	heardMode.Store(heardNone)
	g.update("acme", 4)
	eventually(t, 5*time.Second, "a change the notification did not carry to be read from the log", func() bool { return version() == 4 })
}

// The log's columns are not constrained (migration 00006): an unknown op
// of a vendor re-reads the key like an update, and a change of an entity
// this layer does not know is ignored, not an error.
func TestFeedToleratesUnknownLogValues(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("odd"))
	l, cache := newFeedLayer(t, db, g, t.TempDir()+"/cache.db", Config{})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	if _, err := l.Vendors().Get(ctx, "odd"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)

	g.mu.Lock()
	g.changes = append(g.changes, repository.Change{Seq: int64(len(g.changes) + 1), Entity: "gizmo", Key: "g1",
		Op: repository.ChangeUpdate, Version: 1, At: time.Now()})
	g.mu.Unlock()
	db.mu.Lock()
	v := db.vendors["odd"]
	v.Version = 2
	db.vendors["odd"] = v
	db.mu.Unlock()
	g.record("odd", "renamed", 2)

	eventually(t, 5*time.Second, "the unknown op to re-read the key", func() bool {
		got, _, err := cache.GetVendor(ctx, "odd")
		return err == nil && got.Version == 2
	})
	if s := l.Stats().Feed; s.Errors != 0 || s.State != FeedFollowing {
		t.Fatalf("feed stats %+v: want following, no errors", s)
	}
}

// An expired cursor means the log can no longer say what changed: pruned
// past, reset, or another history after a failover that lost
// transactions. Until the resync has replaced them, entries cached before
// it began may not be the primary's rows, and an outage in that window
// serves them marked stale — also after a restart, since the resync's
// start is kept in the cache file. Once the resync is done they are fresh
// again.
func TestEntriesBeforeAnUnfinishedResyncAreStale(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("a"))
	path := t.TempDir() + "/cache.db"
	// The primary goes away as soon as the follower finds its cursor
	// expired: the resync cannot finish.
	feed := g.feed()
	read := feed.ReadChangesFn
	feed.ReadChangesFn = func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
		b, err := read(ctx, cursor, limit)
		if errors.Is(err, repository.ErrCursorExpired) {
			db.down(errRefused)
		}
		return b, err
	}
	l, cache := newFeedLayerWith(t, db, feed, path, Config{})
	eventually(t, 5*time.Second, "the feed to follow", func() bool { return l.Stats().Feed.State == FeedFollowing })
	if _, err := l.Vendors().Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	servedStale := func(l *Layer) bool {
		t.Helper()
		pctx, prov := WithProvenance(ctx)
		if _, err := l.Vendors().Get(pctx, "a"); err != nil {
			t.Fatalf("a cached vendor during the outage: %v", err)
		}
		o := prov.Origin()
		if o.Source != SourceCache {
			t.Fatalf("origin %+v: want the cache", o)
		}
		return o.Stale
	}

	g.mu.Lock()
	g.expiredBelow = len(g.changes) + 1 // pruned past every cursor, the next change's included
	g.mu.Unlock()
	g.update("b", 1)
	eventually(t, 5*time.Second, "the expiry, the resync begun", func() bool { return !l.Stats().Feed.ResyncSince.IsZero() })
	tripBreaker(t, l, db)
	if !servedStale(l) {
		t.Fatal("during an unfinished resync, an entry cached before it was served as fresh")
	}

	// Killed mid-resync, restarted during the outage.
	l.Close()
	cache.Close()
	l2, _ := newFeedLayerWith(t, db, feed, path, Config{OpenTimeout: 20 * time.Millisecond})
	tripBreaker(t, l2, db)
	if !servedStale(l2) {
		t.Fatal("after a restart during an unfinished resync, an entry cached before it was served as fresh")
	}
	if l2.Stats().Feed.ResyncSince.IsZero() || l2.CheckHealth().Feed.ResyncSince == nil {
		t.Fatal("Stats or the health check does not say a resync is unfinished")
	}

	// The primary returns; the resync finishes; the next outage serves fresh.
	db.up()
	eventually(t, 5*time.Second, "the resync", func() bool { return l2.Stats().Feed.State == FeedFollowing })
	if s := l2.Stats().Feed; !s.ResyncSince.IsZero() || l2.CheckHealth().Feed.ResyncSince != nil {
		t.Fatalf("after the resync Stats or the health check still says one is under way since %v", s.ResyncSince)
	}
	tripBreaker(t, l2, db)
	if servedStale(l2) {
		t.Fatal("after the resync finished, the entry is still served as stale")
	}
}

// heardFeedWithRows is g's feed whose notifications carry the changes the
// log holds and, for each changed vendor, the row db holds when they are
// heard. readAt, when not nil, says instead when the rows were read and,
// if it returns one, the row every key had then.
func heardFeedWithRows(db *fakeDB, g *fakeLog, readAt func() (time.Time, *repository.Vendor)) *mock.HeardChangeFeed {
	base := g.feed()
	read := base.ReadChangesFn
	return &mock.HeardChangeFeed{ChangeFeed: *base, ReadHeardChangesFn: func(cursor string, limit int) (repository.ChangeBatch, bool) {
		b, err := read(context.Background(), cursor, limit)
		if err != nil || b.More {
			return repository.ChangeBatch{}, false
		}
		at, row := time.Now(), (*repository.Vendor)(nil)
		if readAt != nil {
			at, row = readAt()
		}
		db.mu.Lock()
		defer db.mu.Unlock()
		for _, c := range b.Changes {
			r := repository.ChangedRow{Entity: c.Entity, Key: c.Key, At: at}
			if row != nil {
				r.Vendor = row
			} else if v, ok := db.vendors[c.Key]; ok {
				r.Vendor = &v
			}
			b.Rows = append(b.Rows, r)
		}
		return b, true
	}}
}

// Rows a notification carried are applied without a read of their keys;
// but not over a delete this process made after they were read, which
// they may not show: those keys are read again.
func TestFeedHeardRowsSpareReadsButNotOverALocalDelete(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("acme"))
	var readAt atomic.Int64                       // when the heard rows were "read"; 0: now
	var readRow atomic.Pointer[repository.Vendor] // the row then; nil: the database's now
	feed := heardFeedWithRows(db, g, func() (time.Time, *repository.Vendor) {
		at := time.Now()
		if n := readAt.Load(); n != 0 {
			at = time.Unix(0, n)
		}
		return at, readRow.Load()
	})
	// A mirror refreshes every changed key, cached or not: the case where
	// a heard row could put back a row deleted here.
	l, cache := newHeardLayerWith(t, db, feed, Config{Warm: WarmAll})
	eventually(t, 5*time.Second, "the start's catch-ups to end", func() bool { return len(l.feed.wake) == 0 && !l.feed.fromLog.Load() })
	if err := l.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}

	calls := db.calls.Load()
	g.update("acme", 2)
	eventually(t, 5*time.Second, "the heard row to reach the cache", func() bool {
		v, _, err := cache.GetVendor(ctx, "acme")
		return err == nil && v.Version == 2
	})
	if n := db.calls.Load() - calls; n != 0 {
		t.Errorf("%d primary calls to apply a change whose row was heard, want 0", n)
	}
	if n := l.Stats().Feed.RowsHeard; n < 1 {
		t.Errorf("RowsHeard %d, want at least 1", n)
	}

	// The waker read acme at version 3; this process deletes it; then the
	// notification arrives with the row read before the delete.
	db.mu.Lock()
	before := db.vendors["acme"]
	db.mu.Unlock()
	before.Version = 3
	readRow.Store(&before)
	readAt.Store(time.Now().Add(-time.Millisecond).UnixNano())
	if err := l.Vendors().Delete(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	g.record("acme", repository.ChangeUpdate, 3)
	eventually(t, 5*time.Second, "the notification to be applied", func() bool { return l.Stats().Feed.ChangesApplied >= 2 })
	if err := l.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	if v, _, err := cache.GetVendor(ctx, "acme"); err == nil {
		t.Fatalf("the cache holds acme version %d, deleted here after its heard row was read", v.Version)
	}
}

// A heard row lands in the cache before the catch-up that took it counts
// its change and moves the cursor past it. Taken and left in the write
// queue, the change was counted, and the cursor and AsOf moved (and, every
// storeEvery, were stored) while the cache still held the row before it:
// an entry served meanwhile carried an AsOf after a change it did not
// have, and a kill -9 before the write left it so for good.
func TestFeedHeardRowLandsBeforeTheCursorMoves(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	g := newFakeLog(db)
	db.put(vendor("acme"))
	feed := heardFeedWithRows(db, g, nil)
	l, cache := newHeardLayerWith(t, db, feed, Config{})
	eventually(t, 5*time.Second, "the start's catch-ups to end", func() bool { return len(l.feed.wake) == 0 && !l.feed.fromLog.Load() })
	if err := l.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	calls := db.calls.Load()

	// Another connection holds the cache file's write lock: the heard row
	// waits in the write queue.
	release := lockCacheFile(t, cache.Path())
	before := l.Stats().Feed
	g.update("acme", 2)
	eventually(t, 5*time.Second, "the heard row to be taken", func() bool { return l.Stats().Feed.RowsHeard > before.RowsHeard })
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if s := l.Stats().Feed; s.ChangesApplied > before.ChangesApplied {
			v, _, _ := cache.GetVendor(ctx, "acme")
			t.Fatalf("the change was counted applied (the cursor moved past it) while its heard row waited in the write queue: the cache holds acme version %d", v.Version)
		}
	}
	release()
	eventually(t, 10*time.Second, "the change to be applied once the row landed", func() bool {
		return l.Stats().Feed.ChangesApplied > before.ChangesApplied
	})
	if v, _, err := cache.GetVendor(ctx, "acme"); err != nil || v.Version != 2 {
		t.Fatalf("after the catch-up the cache holds acme %+v, %v; want version 2", v, err)
	}
	if n := db.calls.Load() - calls; n != 0 {
		t.Errorf("%d primary calls to apply a heard row, want 0", n)
	}
}
