package fallback_test

import (
	"context"
	"errors"
	"path/filepath"
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
	dsn := pgtest.NewDatabase(t)
	dir := t.TempDir()
	cfgA := fallback.Config{ChangeFeedPoll: time.Hour} // notifications, not the poll
	a := openStack(t, dsn, filepath.Join(dir, "a.db"), cfgA)
	b := openStack(t, dsn, filepath.Join(dir, "b.db"), fallback.Config{})
	names := seed(t, b, 5)
	for _, n := range names {
		if _, err := a.layer.Vendors().Get(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.layer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A's feed to follow", func() bool { return a.layer.Stats().Feed.State == fallback.FeedFollowing })

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
	a2 := openStack(t, dsn, filepath.Join(dir, "a.db"), cfgA)
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
