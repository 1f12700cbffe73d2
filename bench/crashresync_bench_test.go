package bench_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
)

// crashResyncVendors is what every follower caches.
const crashResyncVendors = 20_000

// warmTimeoutEnv sets the followers' Config.WarmTimeout (default 60 s):
// shorter than one follower's resync, it shows the attempts going on from
// each other.
const warmTimeoutEnv = "PGFALLBACK_BENCH_WARM_TIMEOUT"

// BenchmarkFeedCrashResync: what a crash of PostgreSQL costs the
// followers. The change log is UNLOGGED, so a crash empties it: every
// follower's cursor expires at once, and each resyncs, re-reading every
// key its cache holds from a server that has just restarted. 1, 4 and 16
// instances in this process (each with its own pool of followerPoolConns,
// listening connection and cache file) cache the same 20,000 vendors;
// PostgreSQL is SIGKILLed and started again. Reported:
//
//   - resync-s: from the restart until every follower follows again, its
//     resync finished;
//   - keys/s: the keys re-read per second over all followers;
//   - feed-errors: catch-ups that failed meanwhile (while the server was
//     down or starting, and resync attempts that outlasted WarmTimeout,
//     which the next attempt goes on from).
//
// One op is one crash; -benchtime=1x runs the three sizes in about 20 s.
func BenchmarkFeedCrashResync(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("followers=%d", n), func(b *testing.B) { benchCrashResync(b, n) })
	}
}

func benchCrashResync(b *testing.B, n int) {
	b.StopTimer()
	ctx := b.Context()
	srv := pgtest.NewServer(b) // its own, to kill; closed, databases and all, at cleanup
	dsn, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		b.Fatal(err)
	}
	poolDSN := withPoolMaxConns(b, dsn, followerPoolConns)
	seeder, err := pgstore.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer seeder.Close()
	insertVendors(b, seeder, "crash-", 6, crashResyncVendors)
	fs := make([]followerInstance, n)
	for i := range fs {
		s, c, l := instance(b, poolDSN, fallback.Config{WarmTimeout: envDuration(b, warmTimeoutEnv)}, nil)
		fs[i] = followerInstance{store: s, cache: c, layer: l}
		waitFeed(b, l)
		fill(b, seeder, c)
	}
	seeder.Close()

	for range b.N {
		before := make([]fallback.FeedStats, n)
		for i, f := range fs {
			before[i] = f.layer.Stats().Feed
		}
		if err := srv.Kill(); err != nil {
			b.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		deadline := t0.Add(5 * time.Minute)
		var errs uint64
		for i, f := range fs {
			for {
				st := f.layer.Stats().Feed
				if st.Resyncs > before[i].Resyncs && st.ResyncSince.IsZero() && st.State == fallback.FeedFollowing {
					errs += st.Errors - before[i].Errors
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("follower %d has not finished its resync 5 minutes after the restart: %+v", i, st)
				}
				time.Sleep(5 * time.Millisecond) // a poll of the followers' state, not a synchronisation
			}
		}
		took := time.Since(t0)
		b.StopTimer()
		b.ReportMetric(took.Seconds(), "resync-s")
		b.ReportMetric(float64(n*crashResyncVendors)/took.Seconds(), "keys/s")
		b.ReportMetric(float64(errs), "feed-errors")
		last := fs[0].layer.Stats().LastWarm
		b.Logf("%d followers × %d cached vendors: all resynced %v after the restart; %d failed catch-ups; follower 0's last warm: %d refreshed in %v",
			n, crashResyncVendors, took.Round(time.Millisecond), errs, last.Refreshed, last.Duration.Round(time.Millisecond))
	}
}
