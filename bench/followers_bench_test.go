package bench_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

const (
	// followerVendors is the set every follower caches.
	followerVendors = 200
	// followerUpdates per b.N: one every followerUpdateEvery, whatever the
	// followers' pace (an open loop, so that a slow feed shows as latency).
	followerUpdates     = 100
	followerUpdateEvery = 20 * time.Millisecond
	// followerPoolConns bounds each follower's pool, so that 50 of them
	// (plus a listening connection each) fit in the 200 connections of
	// pgtest's local server.
	followerPoolConns = 2
	// followerIdleSettle and followerIdleWindow: how long the followers
	// idle before the queries they send are counted, and for how long.
	followerIdleSettle = 2 * time.Second
	followerIdleWindow = 5 * time.Second
	// The followers are looked at every followerPollEvery, or every
	// followerPollPer for each follower if that is longer: a look costs
	// about 2.5 µs (Layer.Stats), so the watch takes some 5 % of a core
	// beside the followers it measures. It is the latencies' resolution.
	followerPollEvery = 250 * time.Microsecond
	followerPollPer   = 50 * time.Microsecond
)

// BenchmarkFeedFollowers: 1, 10 and 50 instances in this process follow
// the change feed (default Config) over one database, each with its own
// store (a pool of followerPoolConns connections, and the feed's listening
// connection) and its own cache file, and each caching the same 200
// vendors. It reports:
//
//   - p50-ms, p99-ms: another instance (a plain pgstore.Store, not a
//     layer) updates a random one of those vendors every 20 ms; from the
//     update's commit (its acknowledgement) until a follower's cache holds
//     the new version, over every (update, follower) pair;
//   - feed-queries/s: the transactions the idle followers send to
//     PostgreSQL per second (pg_stat_database's xact_commit+xact_rollback
//     for the database over a few seconds without writes; the sampler
//     connects to another database, so it counts none of its own);
//   - feed-conns: the database's connections named pgfallback-feed.
//
// One op is 100 updates; -benchtime=1x runs the three sizes in well under
// a minute.
func BenchmarkFeedFollowers(b *testing.B) {
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("followers=%d", n), func(b *testing.B) { benchFollowers(b, n) })
	}
}

type followerInstance struct {
	store *pgstore.Store
	cache *sqlitecache.Cache
	layer *fallback.Layer
}

func benchFollowers(b *testing.B, n int) {
	b.StopTimer()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(b)
	poolDSN := withPoolMaxConns(b, dsn, followerPoolConns)

	// The writer: another instance, straight to PostgreSQL.
	writer, err := pgstore.Open(ctx, poolDSN)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(writer.Close)
	insertVendors(b, writer, "follow-", 3, followerVendors)
	vs, err := writer.Vendors().List(ctx, repository.VendorFilter{})
	if err != nil || len(vs) != followerVendors {
		b.Fatalf("list vendors: %d, %v", len(vs), err)
	}
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = v.Name
	}

	// The followers, each caching every vendor through its layer.
	t0 := time.Now()
	fs := make([]followerInstance, n)
	for i := range fs {
		s, c, l := instance(b, poolDSN, fallback.Config{ChangeFeedMinInterval: feedMinInterval(b)}, nil)
		fs[i] = followerInstance{store: s, cache: c, layer: l}
	}
	started := time.Since(t0)
	for _, f := range fs {
		waitFeed(b, f.layer)
	}
	following := time.Since(t0)
	for _, f := range fs {
		if got, err := f.layer.Vendors().List(ctx, repository.VendorFilter{}); err != nil || len(got) != followerVendors {
			b.Fatalf("list vendors through a layer: %d, %v", len(got), err)
		}
		if err := f.layer.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if cached, err := f.cache.CachedVendorNames(ctx, names); err != nil || len(cached) != followerVendors {
			b.Fatalf("a follower caches %d of %d vendors: %v", len(cached), followerVendors, err)
		}
	}
	b.Logf("%d followers: layers made in %v, all following after %v, all caching %d vendors after %v",
		n, started.Round(time.Millisecond), following.Round(time.Millisecond), followerVendors, time.Since(t0).Round(time.Millisecond))

	// (b) The idle feed. The connections the set-up used are closed, so
	// that no statistics they hold back (a backend reports at most once a
	// second, an idle one within 10 s) land in the window.
	sampler := connectElsewhere(b, dsn)
	writer.Pool().Reset()
	for _, f := range fs {
		f.store.Pool().Reset()
	}
	idle := time.NewTimer(followerIdleSettle)
	<-idle.C // a measurement window, not a wait for anything
	before := dbStats(b, sampler)
	window := time.NewTimer(followerIdleWindow)
	<-window.C
	after := dbStats(b, sampler)
	secs := after.at.Sub(before.at).Seconds()
	b.ReportMetric(float64(after.xacts-before.xacts)/secs, "feed-queries/s")
	b.ReportMetric(float64(after.feedConns), "feed-conns")
	b.Logf("idle for %.1f s: %d transactions in the database; connections: %d feed, %d to the database, %d to the server (max_connections %d)",
		secs, after.xacts-before.xacts, after.feedConns, after.dbConns, after.serverConns, after.maxConns)
	if after.serverConns > after.maxConns*9/10 {
		b.Logf("warning: %d of %d connections in use", after.serverConns, after.maxConns)
	}

	// (a) Commit → follower latency.
	current := make(map[string]repository.Vendor, len(vs))
	for _, v := range vs {
		current[v.Name] = v
	}
	rng := rand.New(rand.NewPCG(uint64(n), 15))
	updates := followerUpdates * b.N
	w := newFollowerWatch(fs, updates)
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.run(pctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		close(w.commits)
		return <-done
	}
	defer func() {
		cancel()
		_ = stop()
	}()
	feedBefore := make([]fallback.FeedStats, n)
	for i, f := range fs {
		feedBefore[i] = f.layer.Stats().Feed
	}
	tick := time.NewTicker(followerUpdateEvery)
	defer tick.Stop()
	stopProfile := startProfile(b, fmt.Sprintf("followers-%d", n))
	defer stopProfile()
	b.StartTimer()
	t1 := time.Now()
	for i := range updates {
		v := current[names[rng.IntN(len(names))]]
		v.Status = []repository.VendorStatus{repository.VendorOperational, repository.VendorBroken}[i%2]
		out, err := writer.Vendors().Update(ctx, v)
		if err != nil {
			b.Fatal(err)
		}
		w.commits <- followerCommit{update: i, name: out.Name, version: out.Version, at: time.Now()}
		current[out.Name] = out
		if i < updates-1 {
			<-tick.C
		}
	}
	wrote := time.Since(t1)
	if err := stop(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	stopProfile()
	if len(w.latencies) != updates*n {
		b.Fatalf("%d latencies, want %d", len(w.latencies), updates*n)
	}
	lat := make([]time.Duration, len(w.latencies))
	for i, l := range w.latencies {
		lat[i] = l.took
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
	var catchUps, heard uint64
	for i, f := range fs {
		s := f.layer.Stats().Feed
		catchUps += s.CatchUps - feedBefore[i].CatchUps
		heard += s.HeardCatchUps - feedBefore[i].HeardCatchUps
	}
	// Whether the slowest 1 % is a few updates that every follower got
	// late (a pause upstream: the waker, PostgreSQL) or spread over many
	// (followers queueing for the cores).
	p99 := lat[min(len(lat)-1, len(lat)*99/100)]
	slow := map[int]int{}
	first := map[int]time.Duration{} // each update's fastest follower
	for _, l := range w.latencies {
		if l.took >= p99 {
			slow[l.update]++
		}
		if f, ok := first[l.update]; !ok || l.took < f {
			first[l.update] = l.took
		}
	}
	var slowFirst []string
	for u := range slow {
		slowFirst = append(slowFirst, fmt.Sprintf("%.1f", ms(first[u])))
	}
	slices.Sort(slowFirst)
	b.Logf("%d updates in %v (the writer slows when PostgreSQL is busy) × %d followers: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; the pairs at or above p99 are of %d updates (their fastest follower's ms: %s); %d catch-ups, %d of them answered by the waker's broadcast",
		updates, wrote.Round(time.Millisecond), n, ms(lat[len(lat)/2]), ms(lat[len(lat)*9/10]), ms(p99), ms(lat[len(lat)-1]),
		len(slow), strings.Join(slowFirst, ", "), catchUps, heard)
}

type followerCommit struct {
	update  int // its place in the run
	name    string
	version int64
	at      time.Time
}

// followerWatch notes when each follower's cache first holds each
// committed version. A follower's cache is read only after its feed
// applied something (Stats.Feed.ChangesApplied moved, which it does once
// the cache writes are flushed), or every followerRecheck anyway in case
// it does not, so that watching 50 caches costs little beside the
// followers themselves. When the counter moved, the version landed between
// the follower's previous look and this one: the latency is taken at the
// middle of that interval.
type followerWatch struct {
	fs        []followerInstance
	commits   chan followerCommit
	latencies []followerLatency
}

// followerLatency is one (update, follower) pair's commit → cache time.
type followerLatency struct {
	update int
	took   time.Duration
}

const (
	followerRecheck  = 20 * time.Millisecond
	followerDeadline = 30 * time.Second
)

func newFollowerWatch(fs []followerInstance, updates int) *followerWatch {
	return &followerWatch{fs: fs, commits: make(chan followerCommit, updates),
		latencies: make([]followerLatency, 0, updates*len(fs))}
}

// run returns once commits is closed and every follower showed every
// commit, or with an error at the first that took longer than
// followerDeadline.
func (w *followerWatch) run(ctx context.Context) error {
	type follower struct {
		pending []followerCommit
		applied uint64
		looked  time.Time // the last look at applied
		checked time.Time // the last read of the cache
	}
	fs := make([]follower, len(w.fs))
	for i := range fs {
		fs[i].applied = w.fs[i].layer.Stats().Feed.ChangesApplied
	}
	every := max(followerPollEvery, time.Duration(len(fs))*followerPollPer)
	open, waiting := true, 0
	add := func(c followerCommit) {
		for i := range fs {
			fs[i].pending = append(fs[i].pending, c)
		}
		waiting += len(fs)
	}
	for open || waiting > 0 {
		if waiting == 0 { // nothing to look for: wait for the next commit
			select {
			case c, ok := <-w.commits:
				if !ok {
					open = false
					continue
				}
				add(c)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	drain:
		for open {
			select {
			case c, ok := <-w.commits:
				if !ok {
					open = false
					break drain
				}
				add(c)
			default:
				break drain
			}
		}
		for i := range fs {
			f := &fs[i]
			if len(f.pending) == 0 {
				continue
			}
			now := time.Now()
			applied := w.fs[i].layer.Stats().Feed.ChangesApplied
			moved, since := applied != f.applied, f.looked
			f.looked = now
			if !moved && now.Sub(f.checked) < followerRecheck {
				continue
			}
			f.applied, f.checked = applied, now
			left := f.pending[:0]
			for _, c := range f.pending {
				v, _, err := w.fs[i].cache.GetVendor(ctx, c.name)
				seen := time.Now()
				switch {
				case err == nil && v.Version >= c.version:
					if moved { // it landed in (since, now]
						from := since
						if from.Before(c.at) {
							from = c.at
						}
						seen = from.Add(now.Sub(from) / 2)
					}
					w.latencies = append(w.latencies, followerLatency{update: c.update, took: max(seen.Sub(c.at), 0)})
					waiting--
				case err != nil && !errors.Is(err, repository.ErrNotFound):
					return fmt.Errorf("follower %d: cache: %w", i, err)
				case seen.Sub(c.at) > followerDeadline:
					return fmt.Errorf("follower %d never showed %s version %d (feed %+v)", i, c.name, c.version, w.fs[i].layer.Stats().Feed)
				default:
					left = append(left, c)
				}
			}
			f.pending = left
		}
		if waiting > 0 {
			t := time.NewTimer(every)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
	}
	return nil
}

type followerDBStats struct {
	at                              time.Time
	xacts                           int64
	feedConns, dbConns, serverConns int
	maxConns                        int
}

// dbStats samples the followers' database from the sampler's connection
// (to another database). Each call is one transaction, so the statistics
// snapshot is fresh.
func dbStats(b *testing.B, s *followerSampler) followerDBStats {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st followerDBStats
	if err := s.conn.QueryRow(ctx, `
		SELECT clock_timestamp(),
			(SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1),
			(SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pgfallback-feed'),
			(SELECT count(*) FROM pg_stat_activity WHERE datname = $1),
			(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
			current_setting('max_connections')::int`, s.db).
		Scan(&st.at, &st.xacts, &st.feedConns, &st.dbConns, &st.serverConns, &st.maxConns); err != nil {
		b.Fatal(err)
	}
	return st
}

type followerSampler struct {
	conn *pgx.Conn
	db   string // the followers' database
}

// connectElsewhere connects to another database of dsn's server
// (postgres, or template1), so that the sampler's own transactions are
// not counted with the followers'.
func connectElsewhere(b *testing.B, dsn string) *followerSampler {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	db := cfg.Database
	var errs []error
	for _, other := range []string{"postgres", "template1"} {
		c := cfg.Copy()
		c.Database = other
		conn, err := pgx.ConnectConfig(ctx, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn.Close(ctx)
		})
		return &followerSampler{conn: conn, db: db}
	}
	b.Fatalf("the sampler needs a database other than %s: %v", db, errors.Join(errs...))
	return nil
}

// withPoolMaxConns adds pool_max_conns to dsn, a URL or key=value string.
func withPoolMaxConns(b *testing.B, dsn string, n int) string {
	b.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			b.Fatalf("parse the test DSN: %v", err)
		}
		q := u.Query()
		q.Set("pool_max_conns", fmt.Sprint(n))
		u.RawQuery = q.Encode()
		return u.String()
	}
	return fmt.Sprintf("%s pool_max_conns=%d", strings.TrimSpace(dsn), n)
}

// insertVendors inserts n vendors named prefix and a number of width
// digits, in one statement.
func insertVendors(b *testing.B, s *pgstore.Store, prefix string, width, n int) {
	b.Helper()
	if _, err := s.Pool().Exec(context.Background(), `
		INSERT INTO vendors (id, name, status, extractor_version, metadata, created_by)
		SELECT gen_random_uuid(), $1 || lpad(g::text, $2, '0'), 'operational', '1.0.0',
		       jsonb_build_object('i', g, 'region', 'eu-west-1'), 'bench'
		FROM generate_series(1, $3) g`, prefix, width, n); err != nil {
		b.Fatal(err)
	}
}
