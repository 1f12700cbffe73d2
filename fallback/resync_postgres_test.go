package fallback_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// When the change log can no longer say what changed — here a log that was
// reset, as after a failover to a standby that never saw the last
// transactions — the feed's resync replaces every cached row by the
// primary's, even one at a lower version: the cache's higher version
// belongs to a history that no longer exists. A key the primary no longer
// has leaves the cache; a key with a queued write keeps its pending state.
func TestResyncAfterAResetLogIsAuthoritative(t *testing.T) {
	for _, warm := range []fallback.WarmStrategy{fallback.WarmCached, fallback.WarmAll} {
		t.Run(warm.String(), func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.NewDatabase(t)
			a := openStack(t, dsn, filepath.Join(t.TempDir(), "a.db"), fallback.Config{Warm: warm})
			names := seed(t, a, 4)
			for range 5 { // versions 2..6, followed by A's feed
				if _, err := a.store.Pool().Exec(ctx, `UPDATE vendors SET version = version + 1, status = 'broken' WHERE name = ANY ($1)`, names); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range names {
				if _, err := a.layer.Vendors().Get(ctx, n); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.layer.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "A's cache at version 6", func() bool {
				v, _, err := a.cache.GetVendor(ctx, names[0])
				return err == nil && v.Version == 6 && a.layer.Stats().Feed.State == fallback.FeedFollowing
			})
			resyncs := a.layer.Stats().Feed.Resyncs

			// Another history: the rows as a standby last replayed them,
			// written with the triggers off (so no log row tells A), one
			// row gone, and a log that is not the one A's cursor was read on.
			tx, err := a.store.Pool().Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, sql := range []string{
				`SET LOCAL session_replication_role = replica`,
				`UPDATE vendors SET version = 2, status = 'operational' WHERE name <> '` + names[3] + `'`,
				`DELETE FROM vendors WHERE name = '` + names[3] + `'`,
				`DELETE FROM pgfallback_change_log`,
			} {
				if _, err := tx.Exec(ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := a.layer.CatchUp(ctx); err != nil {
				t.Fatal(err)
			}
			if got := a.layer.Stats().Feed.Resyncs; got != resyncs+1 {
				t.Fatalf("resyncs %d, want %d", got, resyncs+1)
			}
			for _, n := range names[:3] {
				v, _, err := a.cache.GetVendor(ctx, n)
				if err != nil || v.Version != 2 || v.Status != repository.VendorOperational {
					t.Fatalf("cached %s after the resync: version %d %s (%v), want the primary's version 2 operational", n, v.Version, v.Status, err)
				}
			}
			if _, _, err := a.cache.GetVendor(ctx, names[3]); err == nil {
				t.Fatalf("%s, gone from the primary, is still cached", names[3])
			}
			// The next change is followed from the new log as usual.
			if _, err := a.store.Pool().Exec(ctx, `UPDATE vendors SET version = 3 WHERE name = $1`, names[0]); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the next change to reach A", func() bool {
				v, _, err := a.cache.GetVendor(ctx, names[0])
				return err == nil && v.Version == 3
			})
		})
	}
}

// A resync on a server that answers, but too slowly for the whole warm to
// fit in WarmTimeout (a large cache; a server just restarted, its buffers
// cold; fifty followers resyncing at once after a crash emptied the
// unlogged log). Each attempt is bounded by WarmTimeout; the next one must
// continue where it stopped, or no attempt ever finishes: the cache stays
// marked stale and the feed never follows again. And when the resync comes
// with recovery from an outage, the breaker closes once WarmTimeout has
// passed, as Config.WarmTimeout promises, the resync going on behind it;
// before, the unfinished warm counted as an outage and kept the breaker
// open while PostgreSQL answered every call.
func TestSlowResyncFinishes(t *testing.T) {
	const batch = 10
	for _, tc := range []struct {
		name        string
		recovery    bool
		keys        int // in batches of at least 20 ms: 2 s for 1000, two attempts at least
		warm        fallback.WarmStrategy
		warmTimeout time.Duration
	}{
		{"following", false, 1000, fallback.WarmCached, 400 * time.Millisecond},
		{"following/all", false, 1000, fallback.WarmAll, 400 * time.Millisecond},
		{"recovery", true, 1000, fallback.WarmCached, 400 * time.Millisecond},
		// Shorter than one batch: each attempt still gets time for one
		// (2 × PrimaryTimeout, here 1 s), or none would ever move.
		{"following/tiny-warm-timeout", false, 1000, fallback.WarmCached, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			direct := pgtest.NewDatabase(t)
			proxy, proxied := chaos.TestProxy(t, direct, "postgres")
			a := openStack(t, proxied, filepath.Join(t.TempDir(), "a.db"), fallback.Config{
				Warm: tc.warm, WarmBatch: batch, WarmTimeout: tc.warmTimeout, ChangeFeedPoll: 200 * time.Millisecond,
				PrimaryTimeout: 500 * time.Millisecond, SlowCallDuration: 400 * time.Millisecond, ConsecutiveFailures: 1,
				OpenTimeout: 200 * time.Millisecond,
			})
			seed(t, a, tc.keys)
			waitFor(t, 10*time.Second, "A's feed to follow", func() bool {
				return a.layer.Stats().Feed.State == fallback.FeedFollowing
			})
			resyncs := a.layer.Stats().Feed.Resyncs

			if tc.recovery {
				cutUntilOpen(t, proxy, a)
			}
			// The server turns slow, then the log can no longer say what
			// changed (as after a crash of PostgreSQL, which empties it):
			// every cursor expires.
			if err := proxy.Latency(20*time.Millisecond, 0); err != nil {
				t.Fatal(err)
			}
			dconn, err := pgx.Connect(ctx, direct)
			if err != nil {
				t.Fatal(err)
			}
			defer dconn.Close(ctx)
			for _, sql := range []string{
				`DELETE FROM pgfallback_change_log`,
				`UPDATE vendors SET version = version + 1, status = 'broken' WHERE name = 'vendor-007'`,
				`DELETE FROM vendors WHERE name = 'vendor-011'`,
			} {
				if _, err := dconn.Exec(ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
			// Another instance keeps writing while the resync runs: what an
			// attempt replaced must still get every change made after it
			// (the resync reads the log from the head its first attempt took).
			stopWriting := make(chan struct{})
			wrote := make(chan error, 1)
			go func() { wrote <- writeUntil(ctx, direct, 100, 200, stopWriting) }()
			if tc.recovery {
				if err := proxy.Up(); err != nil {
					t.Fatal(err)
				}
				waitFor(t, 20*time.Second, "the breaker to close while the resync goes on", func() bool {
					return a.layer.State() == fallback.Closed
				})
				if a.layer.Stats().Feed.ResyncSince.IsZero() {
					t.Error("the breaker closed only once the resync was done: recovery waited past WarmTimeout for it")
				}
			}
			waitFor(t, 30*time.Second, "the resync to finish", func() bool {
				st := a.layer.Stats().Feed
				return st.Resyncs > resyncs && st.ResyncSince.IsZero() && st.State == fallback.FeedFollowing
			})
			close(stopWriting)
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			dpool, err := pgxpool.New(ctx, direct)
			if err != nil {
				t.Fatal(err)
			}
			defer dpool.Close()
			var written []string
			for i := 100; i < 200; i++ {
				written = append(written, fmt.Sprintf("vendor-%03d", i))
			}
			deadline := time.Now().Add(10 * time.Second)
			for differs := cacheMatches(t, ctx, a, dpool, written); differs != ""; differs = cacheMatches(t, ctx, a, dpool, written) {
				if time.Now().After(deadline) {
					t.Fatalf("10 s after the resync, a change made during it has not reached the cache: %s", differs)
				}
				time.Sleep(10 * time.Millisecond) // polling the cache, with a deadline
			}
			// 100 batches of at least 20 ms do not fit in one attempt
			// (WarmTimeout, or 2 × PrimaryTimeout): more than one did the work.
			if st := a.layer.Stats(); st.Feed.Errors == 0 && !tc.recovery {
				t.Errorf("the resync finished in one attempt (%+v): the test did not test resuming", st.LastWarm)
			}
			v, _, err := a.cache.GetVendor(ctx, "vendor-007")
			if err != nil || v.Version != 2 || v.Status != repository.VendorBroken {
				t.Fatalf("cached vendor-007 after the resync: version %d %s (%v), want the primary's version 2 broken", v.Version, v.Status, err)
			}
			if _, _, err := a.cache.GetVendor(ctx, "vendor-011"); err == nil {
				t.Fatal("vendor-011, gone from the primary, is still cached")
			}
			if mirror := a.layer.Stats().Feed.Mirror; mirror != (tc.warm == fallback.WarmAll) {
				t.Errorf("after a resumed %s resync the feed says mirror %v", tc.warm, mirror)
			}
			if n, err := a.cache.VendorNames(ctx); err != nil || len(n) != tc.keys-1 {
				t.Fatalf("%d vendors cached after the resync (%v), want %d", len(n), err, tc.keys-1)
			}
		})
	}
}

// Without the change feed, recovery warms the cache; a warm that outlasts
// WarmTimeout closes the breaker all the same, as Config.WarmTimeout says.
// (It counted as an outage: with a cache too large to warm in 60 s, the
// breaker never closed again after the first outage.)
func TestRecoveryWarmOutlastingWarmTimeoutClosesTheBreaker(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	proxy, proxied := chaos.TestProxy(t, direct, "postgres")
	a := openStack(t, proxied, filepath.Join(t.TempDir(), "a.db"), fallback.Config{
		DisableChangeFeed: true, WarmBatch: 10, WarmTimeout: 400 * time.Millisecond,
		PrimaryTimeout: 2 * time.Second, SlowCallDuration: time.Second, ConsecutiveFailures: 1,
		OpenTimeout: 200 * time.Millisecond,
	})
	seed(t, a, 300) // 30 batches of at least 20 ms: 0.6 s or more
	cutUntilOpen(t, proxy, a)
	if err := proxy.Latency(20*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the breaker to close after a warm that outlasted WarmTimeout", func() bool {
		return a.layer.State() == fallback.Closed
	})
	if w := a.layer.Stats().LastWarm; w.Err == "" || w.Refreshed >= 300 {
		t.Errorf("the last warm refreshed %d of 300 (%q): it should have been cut by WarmTimeout", w.Refreshed, w.Err)
	}
}

// cutUntilOpen takes the proxy down and calls through s until its breaker
// opens.
func cutUntilOpen(t *testing.T, proxy *chaos.Proxy, s *stack) {
	t.Helper()
	if err := proxy.Down(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the breaker to open", func() bool {
		_, _ = s.layer.Vendors().Get(context.Background(), "vendor-000")
		return s.layer.State() == fallback.Open
	})
}

// writeUntil updates vendor-<from> … vendor-<to-1> in turn, straight to
// PostgreSQL, one every 5 ms (a pace the follower keeps up with behind the
// tests' latency), until stop is closed.
func writeUntil(ctx context.Context, dsn string, from, to int, stop <-chan struct{}) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
		name := fmt.Sprintf("vendor-%03d", from+i%(to-from))
		if _, err := conn.Exec(ctx, `UPDATE vendors SET version = version + 1,
			status = CASE status WHEN 'broken' THEN 'operational' ELSE 'broken' END WHERE name = $1`, name); err != nil {
			return err
		}
	}
}
