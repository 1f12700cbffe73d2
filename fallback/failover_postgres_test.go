package fallback_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// The reproduction of a failover that loses transactions: instance
// A on a multi-host DSN caches 30 vendors; replication to the asynchronous
// standby is cut; a peer makes 100 updates on the primary, which A's feed
// follows; the primary crashes and the standby is promoted, so those
// updates exist nowhere; the peer updates 15 vendors on the new primary.
// A must end with every cached row equal to the new primary's — lower
// versions included — and serve exactly those rows in the next outage.
func TestFailoverThatLosesTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := pgtest.NewPrimary(t)
	dsn, _, err := srv.CreateDatabase(ctx) // dropped with the server
	if err != nil {
		t.Fatal(err)
	}
	sb := pgtest.NewStandby(t, srv)
	multi, err := pgtest.MultiHostDSN(dsn, sb.DSN())
	if err != nil {
		t.Fatal(err)
	}
	a := openStack(t, multi, filepath.Join(t.TempDir(), "a.db"), fallback.Config{OpenTimeout: 100 * time.Millisecond})
	peer, err := pgxpool.New(ctx, multi)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	names := seed(t, a, 30)
	waitFor(t, 10*time.Second, "A's feed to follow", func() bool { return a.layer.Stats().Feed.State == fallback.FeedFollowing })
	if err := sb.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// A connection string that reaches the standby: its refusals are
	// read-only, and the layer's check names it a standby.
	onStandby := openStack(t, pgtest.WithParam(multi, "target_session_attrs", "standby"), filepath.Join(t.TempDir(), "sb.db"),
		fallback.Config{OpenTimeout: 100 * time.Millisecond, DisableChangeFeed: true})
	if _, err := onStandby.layer.Vendors().Create(ctx, repository.Vendor{Name: "on-standby", Status: repository.VendorOperational}); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("a create on the standby: %v, want ErrUnavailable (read-only)", err)
	}
	waitFor(t, 10*time.Second, "the layer to name the standby", func() bool { return onStandby.layer.Stats().ReadOnlyStandby })
	onStandby.close()

	if err := sb.CutReplication(ctx); err != nil {
		t.Fatal(err)
	}

	// 100 updates the standby never sees; A follows them.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		if _, err := peer.Exec(ctx, `UPDATE vendors SET version = version + 1, status = 'broken' WHERE name = $1`,
			names[rng.IntN(len(names))]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "A's cache to hold the lost history", func() bool {
		return cacheMatches(t, ctx, a, peer, names) == ""
	})

	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := sb.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range names[:15] { // the peer, on the new primary
		err := retry(ctx, func() error {
			_, err := peer.Exec(ctx, `UPDATE vendors SET version = version + 1, extractor_version = '2.0.0' WHERE name = $1`, n)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var lost int
	if err := peer.QueryRow(ctx, `SELECT count(*) FROM vendors WHERE status = 'broken'`).Scan(&lost); err != nil || lost != 0 {
		t.Fatalf("the new primary holds %d broken vendors (%v): replication was not cut, the test proves nothing", lost, err)
	}
	// Settled: the cache equals the new primary and no resync is under way
	// (the new timeline causes one; a log given its id after the follower
	// read the head may cause another, which must finish too).
	deadline := time.Now().Add(20 * time.Second)
	for {
		differ := cacheMatches(t, ctx, a, peer, names)
		s := a.layer.Stats().Feed
		if differ == "" && s.Resyncs >= 2 && s.ResyncSince.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			if differ != "" {
				t.Fatalf("20 s after the promotion the cache still differs from the new primary: %s; feed %+v", differ, s)
			}
			t.Fatalf("feed resyncs %d, one unfinished since %v: the new timeline should have caused one, finished", s.Resyncs, s.ResyncSince)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The next outage: A answers from its cache what the new primary holds.
	want := primaryRows(t, ctx, peer, names)
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		pctx, prov := fallback.WithProvenance(ctx)
		got, err := a.layer.Vendors().Get(pctx, n)
		if err != nil {
			t.Fatalf("Get %s during the outage: %v", n, err)
		}
		if o := prov.Origin(); o.Source != fallback.SourceCache || o.Stale {
			t.Fatalf("Get %s during the outage: origin %+v, want fresh from the cache (the resync finished)", n, o)
		}
		if w := want[n]; got.Version != w.Version || got.Status != w.Status || got.ExtractorVersion != w.ExtractorVersion {
			t.Fatalf("served %s at version %d %s %q, the new primary held %d %s %q",
				n, got.Version, got.Status, got.ExtractorVersion, w.Version, w.Status, w.ExtractorVersion)
		}
	}
}

// retry runs fn until it succeeds or ctx ends: the peer's connections to
// the dead primary fail until the pool reconnects to the new one.
func retry(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func primaryRows(t *testing.T, ctx context.Context, db *pgxpool.Pool, names []string) map[string]repository.Vendor {
	t.Helper()
	out := map[string]repository.Vendor{}
	rows, err := db.Query(ctx, `SELECT name, version, status, extractor_version FROM vendors WHERE name = ANY ($1)`, names)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var v repository.Vendor
		var status string
		if err := rows.Scan(&v.Name, &v.Version, &status, &v.ExtractorVersion); err != nil {
			t.Fatal(err)
		}
		v.Status = repository.VendorStatus(status)
		out[v.Name] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// cacheMatches says how A's cache differs from the database's rows, or ""
// when it holds exactly them.
func cacheMatches(t *testing.T, ctx context.Context, a *stack, db *pgxpool.Pool, names []string) string {
	t.Helper()
	want := primaryRows(t, ctx, db, names)
	for _, n := range names {
		got, _, err := a.cache.GetVendor(ctx, n)
		w, ok := want[n]
		switch {
		case !ok && err == nil:
			return fmt.Sprintf("%s cached, gone from the database", n)
		case ok && err != nil:
			return fmt.Sprintf("%s not cached: %v", n, err)
		case ok && (got.Version != w.Version || got.Status != w.Status || got.ExtractorVersion != w.ExtractorVersion):
			return fmt.Sprintf("%s cached at %d %s, the database has %d %s", n, got.Version, got.Status, w.Version, w.Status)
		}
	}
	return ""
}
