package fallback_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// Two instances over one real PostgreSQL: what instance B writes, and what
// plain SQL writes, reaches instance A's cache with no call of A's own;
// a restart of A catches up from its stored cursor, without a full warm.
func TestFeedKeepsPeersCoherent(t *testing.T) {
	ctx := context.Background()
	a, b, names, restartA := cachingFollower(t, 5, fallback.Config{})

	v, err := b.layer.Vendors().Get(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	v.Status = repository.VendorBroken
	updated, err := b.layer.Vendors().Update(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.layer.Vendors().Delete(ctx, names[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Pool().Exec(ctx, `UPDATE vendors SET version = version + 1, extractor_version = '7.0.0' WHERE name = $1`, names[2]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B's update, B's delete and the SQL update to reach A's cache", func() bool {
		got0, _, err0 := a.cache.GetVendor(ctx, names[0])
		_, _, err1 := a.cache.GetVendor(ctx, names[1])
		got2, _, err2 := a.cache.GetVendor(ctx, names[2])
		return err0 == nil && got0.Version == updated.Version && errors.Is(err1, repository.ErrNotFound) &&
			err2 == nil && got2.ExtractorVersion == "7.0.0"
	})

	// A restarts; meanwhile B changes a row. The stored cursor brings it.
	a.close()
	v, err = b.layer.Vendors().Get(ctx, names[3])
	if err != nil {
		t.Fatal(err)
	}
	v.Status = repository.VendorBroken
	if updated, err = b.layer.Vendors().Update(ctx, v); err != nil {
		t.Fatal(err)
	}
	a2 := restartA()
	waitFor(t, 10*time.Second, "the restarted A to catch up", func() bool {
		got, _, err := a2.cache.GetVendor(ctx, names[3])
		return err == nil && got.Version == updated.Version
	})
	if s := a2.layer.Stats(); s.Feed.Resyncs != 0 || s.WarmRuns != 0 {
		t.Fatalf("the restart resynced (%d) or warmed (%d) instead of using its cursor", s.Feed.Resyncs, s.WarmRuns)
	}
	// Applying the same changes again is harmless.
	if err := a2.layer.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _, err := a2.cache.GetVendor(ctx, names[3]); err != nil || got.Version != updated.Version {
		t.Fatalf("after a second catch-up: %+v, %v", got, err)
	}
}

// A DBA disables the log's trigger for a bulk load: the changes made
// meanwhile never reach the log. The follower must not go on calling its
// cache current: while the trigger is off its feed is behind, saying why,
// with AsOf from before; once the trigger is on again it resyncs, also when
// it was off only inside the transaction that wrote.
func TestFeedThroughATriggerDisabledForALoad(t *testing.T) {
	ctx := context.Background()
	a, dba, names, _ := cachingFollower(t, 2, fallback.Config{DisableChangeFeed: true})
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := dba.store.Pool().Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	cachedVersion := func(name string) int64 {
		v, _, err := a.cache.GetVendor(ctx, name)
		if err != nil {
			t.Fatalf("cached %s: %v", name, err)
		}
		return v.Version
	}

	exec(`ALTER TABLE vendors DISABLE TRIGGER pgfallback_vendors_change`)
	var disabledBy time.Time
	if err := dba.store.Pool().QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&disabledBy); err != nil {
		t.Fatal(err)
	}
	exec(`UPDATE vendors SET version = version + 1 WHERE name = $1`, names[0])
	waitFor(t, 10*time.Second, "A's feed to say the log is incomplete", func() bool {
		f := a.layer.Stats().Feed
		return f.State == fallback.FeedBehind && strings.Contains(f.LastError, "pgfallback_vendors_change on vendors is disabled")
	})
	if asOf := a.layer.Stats().Feed.AsOf; !asOf.Before(disabledBy) {
		t.Fatalf("A's AsOf %v while the trigger is off: it must stay before the trigger went off (%v)", asOf, disabledBy)
	}
	if h := a.layer.CheckHealth(); h.Status != "degraded" || !h.Ready || !strings.Contains(h.Reason, "ENABLE ALWAYS TRIGGER pgfallback_vendors_change") ||
		!h.Stats.Feed.Incomplete {
		t.Fatalf("A's health while the trigger is off: %s (ready %v), %q; want degraded, ready, naming the repair", h.Status, h.Ready, h.Reason)
	}
	exec(`ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change`)
	waitFor(t, 10*time.Second, "A to resync the update made while the trigger was off", func() bool {
		return cachedVersion(names[0]) == 2 && a.layer.Stats().Feed.State == fallback.FeedFollowing
	})
	if h := a.layer.CheckHealth(); h.Status != "ok" || h.Stats.Feed.Incomplete {
		t.Fatalf("A's health once the trigger is repaired: %s, %q", h.Status, h.Reason)
	}

	// Off only inside the transaction that wrote: no read saw it off.
	resyncs := a.layer.Stats().Feed.Resyncs
	tx, err := dba.store.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{`ALTER TABLE vendors DISABLE TRIGGER pgfallback_vendors_change`,
		`UPDATE vendors SET version = version + 1 WHERE name = '` + names[1] + `'`,
		`ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change`} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A to resync the update made with the trigger off in its own transaction", func() bool {
		return cachedVersion(names[1]) == 2 && a.layer.Stats().Feed.Resyncs > resyncs
	})
}

// cachingFollower opens two instances over one new database: A, which
// follows the feed by notifications only (its poll an hour away), and a
// writer B with writerCfg. B creates n vendors and A caches them; it
// returns once A's feed follows, with a function that opens A again on its
// cache file.
func cachingFollower(t *testing.T, n int, writerCfg fallback.Config) (a, b *stack, names []string, restartA func() *stack) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	dir := t.TempDir()
	cfgA := fallback.Config{ChangeFeedPoll: time.Hour}
	restartA = func() *stack { return openStack(t, dsn, filepath.Join(dir, "a.db"), cfgA) }
	a = restartA()
	b = openStack(t, dsn, filepath.Join(dir, "b.db"), writerCfg)
	names = seed(t, b, n)
	for _, name := range names {
		if _, err := a.layer.Vendors().Get(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.layer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A's feed to follow", func() bool { return a.layer.Stats().Feed.State == fallback.FeedFollowing })
	return a, b, names, restartA
}
