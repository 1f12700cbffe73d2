package fallback_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
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
