package bench_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
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
	// writerVendors are updated by pgbench, one random row per transaction.
	writerVendors = 10_000
	// writerCached vendors are cached by each follower (disjoint sets).
	writerCached = 1_000
	// writerFollowersEnv overrides the number of followers (default 3;
	// 0 measures the triggers alone).
	writerFollowersEnv = "PGFALLBACK_BENCH_FOLLOWERS"
	// writerMinIntervalEnv sets the followers' ChangeFeedMinInterval.
	writerMinIntervalEnv = "PGFALLBACK_BENCH_FEED_MIN_INTERVAL"
	// wakeIntervalEnv sets every store's pgstore.WithChangeWakeInterval.
	wakeIntervalEnv = "PGFALLBACK_BENCH_WAKE_INTERVAL"
	// writerSecondsEnv overrides pgbench's -T, in whole seconds.
	writerSecondsEnv     = "PGFALLBACK_BENCH_PGBENCH_SECONDS"
	writerDefaultSeconds = 5
	// writerSyncCommitEnv, when set (on, off, local, …), is passed to
	// pgbench's sessions as synchronous_commit; otherwise they run with
	// the server's setting (pgtest's shared local server: off).
	writerSyncCommitEnv = "PGFALLBACK_BENCH_SYNCHRONOUS_COMMIT"
	// writerIsolationEnv, when set (serializable, repeatable read), is the
	// database's default_transaction_isolation, for pgbench's sessions and
	// the followers' alike; pgbench then retries serialization failures
	// (--max-tries) and the runs report how many transactions it retried.
	writerIsolationEnv = "PGFALLBACK_BENCH_ISOLATION"
	// writerCatchUp bounds the followers' catch-up after a run.
	writerCatchUp = 30 * time.Second
	// writerAppName names pgbench's sessions in pg_stat_activity.
	writerAppName = "pgfallback-bench-writer"
	// writerSampleEvery: how often pgbench's sessions' wait events are
	// sampled during a run, for the log.
	writerSampleEvery = 50 * time.Millisecond
)

// writerClients are pgbench's concurrent sessions (-c).
var writerClients = []int{8, 32, 64}

// writerMode is the state of the change log's triggers during one pgbench run.
type writerMode int

const (
	writerOff     writerMode = iota // ALTER TABLE vendors DISABLE TRIGGER pgfallback_vendors_change
	writerOn                        // the trigger enabled, migration 00005's functions (no NOTIFY)
	writerNotify                    // the trigger enabled, migration 00003's functions (pg_notify in every writer)
	writerLogical                   // the trigger disabled, the log written from logical decoding (logicalfeed_test.go); followers cannot follow it
	writerModes
)

func (m writerMode) String() string {
	return [...]string{"triggers=off", "feed=on", "feed=on,notify", "feed=logical"}[m]
}

// followed: the followers follow the log in this mode. With the trigger
// disabled, ChangeHead and ReadChanges say the log is incomplete
// (pgstore/triggers.go): the followers are behind, which is all the
// writers' baseline needs of them, and the logical prototype's log cannot
// be followed since.
func (m writerMode) followed() bool { return m == writerOn || m == writerNotify }

// unit prefixes the mode's metrics.
func (m writerMode) unit() string { return [...]string{"off", "on", "notify", "logical"}[m] }

// writerModesEnv, set to a comma-separated list of the modes' units (off,
// on, notify), runs only those, in that order: to profile one mode
// (-cpuprofile) without the others' CPU. Without off, no ratio is reported.
const writerModesEnv = "PGFALLBACK_BENCH_MODES"

// parseWriterModes reads writerModesEnv's list.
func parseWriterModes(s string) ([]writerMode, error) {
	var modes []writerMode
	for _, u := range strings.Split(s, ",") {
		i := slices.IndexFunc([]writerMode{writerOff, writerOn, writerNotify}, func(m writerMode) bool { return m.unit() == strings.TrimSpace(u) })
		if i < 0 {
			return nil, fmt.Errorf("%s=%q: %q is not a mode (off, on, notify)", writerModesEnv, s, u)
		}
		modes = append(modes, writerMode(i))
	}
	return modes, nil
}

// writerStatementsEnv, set to 1, starts the server with pg_stat_statements
// and logs, after each run, the statements that took the most time in it:
// what the feed's sessions ask of PostgreSQL, next to pgbench's update.
const writerStatementsEnv = "PGFALLBACK_BENCH_STATEMENTS"

// topStatements lists the run's ten statements with the most execution
// time (pg_stat_statements, reset before the run).
func (w *writerBench) topStatements(b *testing.B) string {
	b.Helper()
	rows, err := w.ctl.Query(context.Background(), `
		SELECT calls, total_exec_time, mean_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 110)
		FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10`)
	if err != nil {
		b.Fatal(err)
	}
	var out []string
	var calls int64
	var total, mean float64
	var query string
	if _, err := pgx.ForEachRow(rows, []any{&calls, &total, &mean, &query}, func() error {
		out = append(out, fmt.Sprintf("\t%8d calls %8.0f ms %7.3f ms each  %s", calls, total, mean, query))
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return strings.Join(out, "\n")
}

// writerLogicalEnv, set to 1, adds the feed=logical mode: the server runs
// with wal_level=logical (all modes, so that they compare on one server).
const writerLogicalEnv = "PGFALLBACK_BENCH_LOGICAL"

// BenchmarkFeedWriterThroughput: what the change feed costs writers. One
// database with 10,000 vendors and 3 followers (fallback.Layer, default
// Config, each with its own cache file and listening connection, one of
// them the elected waker) each caching 1,000 of the vendors; pgbench, an
// external process, sends one-row updates of random vendors from 8, 32 and
// 64 sessions (-M prepared -j 2 -T 5) in three modes:
//
//   - triggers=off: the change log's row trigger on vendors disabled, the
//     writers' baseline on the same server, table and data;
//   - feed=on: the trigger enabled, as migrated (00005: no NOTIFY, the
//     waker wakes the followers);
//   - feed=on,notify: the trigger enabled with migration 00003's functions
//     re-created, which call pg_notify in every writer's transaction (what
//     00005 removed); 00005's functions are restored right after the run;
//   - feed=logical, only with PGFALLBACK_BENCH_LOGICAL=1 (which starts the
//     server with wal_level=logical for every mode): the trigger disabled
//     and the log written from logical decoding by a prototype
//     (logicalfeed_test.go); pg_recvlogical must be beside pgbench.
//
// The modes are measured side by side: each sub-benchmark (clients=N) runs
// one round per b.N iteration, a round being one pgbench run of each mode,
// one after the other, in an order that rotates from round to round (off,
// on, notify; then on, notify, off; then notify, off, on), so that a
// drifting machine or a growing table favours none of them. A round takes
// about 3 × (-T + 1.5 s), so the default -benchtime, like -benchtime=1x,
// gives b.N = 1: one round per repetition, and -count N gives N rounds,
// each interleaved. (The testing package repeats a sub-benchmark -count
// times in a row: modes as sub-benchmarks of their own could not be
// interleaved.) ns/op is not reported. The metrics, averaged over the
// rounds of one repetition:
//
//   - off-tps, on-tps, notify-tps: pgbench's tps (without the initial
//     connection time);
//   - on/off-% and notify/off-%: that mode's tps as a percentage of
//     triggers=off's in the same repetition;
//   - off-wal-B/tx, …: WAL written during the run (pg_current_wal_lsn, the
//     whole server: mostly pgbench's, plus autovacuum's if it ran) per
//     transaction;
//   - on-catchup-ms, notify-catchup-ms: from pgbench's exit until every
//     follower's cache holds, for each of its vendors, at least the last
//     version the log recorded. A follower that does not within 30 s
//     fails the benchmark: the followers must keep following under load.
//     (Updates made with the trigger disabled are in no log: a vendor
//     last updated then is as stale in the caches as the feed allows.)
//
// Each run also logs (-v) pgbench's latency, the load average before and
// after, what pgbench's sessions waited for (pg_stat_activity sampled
// every 50 ms: Lock:object is the NOTIFY queue's lock at commit,
// LWLock:BufferContent a contended page), the CPU PostgreSQL's backends
// used by whom they served (cpushare_test.go), the CPU pgbench and this
// process (the followers) used, and each follower's feed counters.
//
// Before each run the tables are vacuumed and the state of the trigger
// and of the functions is checked; after the notify run the functions are
// checked to be 00005's again, exactly as migrated (pg_get_functiondef).
//
// pgbench is looked for in PATH, then in /usr/lib/postgresql/*/bin
// (highest version); without it the benchmark skips. It connects with
// PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE taken from the
// database's DSN; it ends by itself after -T, and is killed if it has not
// 2 minutes later. -T is PGFALLBACK_BENCH_PGBENCH_SECONDS (default 5);
// PGFALLBACK_BENCH_SYNCHRONOUS_COMMIT sets pgbench's sessions'
// synchronous_commit (pgtest's shared local server runs with it off, and
// with fsync off). PGFALLBACK_BENCH_ISOLATION (serializable, repeatable
// read) sets the database's default_transaction_isolation, for pgbench and
// the followers; pgbench retries serialization failures, and each mode
// reports the share of transactions it retried (off-retried-%, …). A repetition of the three sub-benchmarks takes about
// 3 × 3 × (-T + 1.5 s): raise go test's -timeout (10 minutes by default)
// for many repetitions or longer runs.
//
//	go test -run '^$' -bench FeedWriterThroughput -benchtime=1x -count 3 -v ./bench/
func BenchmarkFeedWriterThroughput(b *testing.B) {
	ctx := context.Background()
	pgbench, err := findPgbench()
	if err != nil {
		b.Skip(err)
	}
	seconds := writerDefaultSeconds
	if s := strings.TrimSpace(os.Getenv(writerSecondsEnv)); s != "" {
		if seconds, err = strconv.Atoi(s); err != nil || seconds < 1 {
			b.Fatalf("%s=%q: want a whole number of seconds, at least 1", writerSecondsEnv, s)
		}
	}
	notifying, err := notifyingFunctions()
	if err != nil {
		b.Fatal(err)
	}

	modes := []writerMode{writerOff, writerOn, writerNotify}
	if s := strings.TrimSpace(os.Getenv(writerModesEnv)); s != "" {
		if modes, err = parseWriterModes(s); err != nil {
			b.Fatal(err)
		}
	}
	var recvlogical string
	var settings map[string]string
	if os.Getenv(writerLogicalEnv) == "1" {
		if recvlogical, err = findRecvlogical(pgbench); err != nil {
			b.Skip(err)
		}
		modes = append(modes, writerLogical)
		settings = map[string]string{"wal_level": "logical", "max_replication_slots": "4", "max_wal_senders": "4"}
	}

	statements := os.Getenv(writerStatementsEnv) == "1"
	if statements {
		if settings == nil {
			settings = map[string]string{}
		}
		settings["shared_preload_libraries"] = "pg_stat_statements"
	}
	// Default durability (fsync, full_page_writes, synchronous_commit on):
	// what a commit costs, and what serializes commits, is the measure.
	srv, err := pgtest.StartServer(ctx, pgtest.Options{Durable: true, Settings: settings, Logf: b.Logf})
	if err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() { srv.Close() })
	dsn, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		b.Fatal(err)
	}
	env, err := pgbenchEnv(dsn, strings.TrimSpace(os.Getenv(writerSyncCommitEnv)))
	if err != nil {
		b.Fatal(err)
	}
	connect := func() *pgx.Conn {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn.Close(cctx)
		})
		return conn
	}
	ctl := connect()
	if statements {
		if _, err := ctl.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
			b.Fatalf("%s=1: %v", writerStatementsEnv, err)
		}
	}
	// DDL waits at most this long for the followers' locks.
	if _, err := ctl.Exec(ctx, `SET lock_timeout = '10s'`); err != nil {
		b.Fatal(err)
	}
	if _, err := ctl.Exec(ctx, `
		INSERT INTO vendors (id, name, status, extractor_version, metadata, created_by)
		SELECT gen_random_uuid(), 'w' || lpad(g::text, 5, '0'), 'operational', '1.0.0',
		       jsonb_build_object('i', g, 'region', 'eu-west-1'), 'bench'
		FROM generate_series(1, $1::int) g`, writerVendors); err != nil {
		b.Fatal(err)
	}

	w := &writerBench{statements: statements, ctl: ctl, sampler: connect(), pgbench: pgbench, env: env, seconds: seconds, notifying: notifying,
		modes: modes, recvlogical: recvlogical, isolation: strings.TrimSpace(os.Getenv(writerIsolationEnv))}
	if w.isolation != "" {
		// Before the followers connect: their sessions take it too.
		var alter string
		if err := ctl.QueryRow(ctx, `SELECT format('ALTER DATABASE %I SET default_transaction_isolation = %L', current_database(), $1::text)`,
			w.isolation).Scan(&alter); err != nil {
			b.Fatal(err)
		}
		if _, err := ctl.Exec(ctx, alter); err != nil {
			b.Fatalf("%s=%q: %v", writerIsolationEnv, w.isolation, err)
		}
	}
	if recvlogical != "" {
		if _, err := ctl.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, logicalSlot); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _, _ = ctl.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, logicalSlot) })
		w.decoderConn = connect()
		if _, err := w.decoderConn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
			b.Fatal(err)
		}
	}
	w.secure = w.functionDefs(b)
	for _, def := range w.secure {
		if strings.Contains(def, "pg_notify") {
			b.Fatalf("the migrated change log functions notify: is migration 00005 applied?\n%s", def)
		}
	}
	b.Cleanup(func() {
		// The database is dropped next; leave it as migrated all the same.
		if err := w.restore(context.Background()); err != nil {
			b.Error(err)
		}
	})
	w.script = filepath.Join(b.TempDir(), "update.sql")
	if err := os.WriteFile(w.script, []byte(`\set n random(1, `+strconv.Itoa(writerVendors)+`)
UPDATE vendors SET version = version + 1, updated_at = now() WHERE name = 'w' || lpad(:n::text, 5, '0');
`), 0o644); err != nil {
		b.Fatal(err)
	}

	// The followers.
	writerFollowers := 3
	if s := strings.TrimSpace(os.Getenv(writerFollowersEnv)); s != "" {
		if writerFollowers, err = strconv.Atoi(s); err != nil || writerFollowers < 0 || writerFollowers > writerVendors/writerCached {
			b.Fatalf("%s=%q: want 0 to %d", writerFollowersEnv, s, writerVendors/writerCached)
		}
	}
	// In production the followers' cache files are on the application's
	// hosts. Here they would share PostgreSQL's disk, and their writes
	// would slow its WAL flushes (a journaling filesystem's fsync flushes
	// others' writes too): they go to a memory filesystem when there is
	// one. The followers still share the cores.
	cacheDir := func() string { return b.TempDir() }
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		cacheDir = func() string {
			d, err := os.MkdirTemp("/dev/shm", "pgfallback-bench-")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	fcfg := fallback.Config{ChangeFeedMinInterval: feedMinInterval(b)}
	t0 := time.Now()
	for i := range writerFollowers {
		_, cache, layer := instanceIn(b, cacheDir(), dsn, fcfg, nil)
		f := writerFollower{cache: cache, layer: layer, names: make([]string, writerCached)}
		for j := range f.names {
			f.names[j] = writerName(i*writerCached + j + 1)
		}
		w.followers = append(w.followers, f)
	}
	for _, f := range w.followers {
		waitFeed(b, f.layer)
		for _, name := range f.names {
			if _, err := f.layer.Vendors().Get(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.layer.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if cached, err := f.cache.CachedVendorNames(ctx, f.names); err != nil || len(cached) != writerCached {
			b.Fatalf("a follower caches %d of its %d vendors: %v", len(cached), writerCached, err)
		}
	}
	w.waitWaker(b)
	b.Logf("%d vendors; %d followers caching %d each, following, one waker, after %v; pgbench %s, -T %d; server: %s",
		writerVendors, writerFollowers, writerCached, time.Since(t0).Round(time.Millisecond), pgbench, seconds, w.settings(b))

	for _, clients := range writerClients {
		round := 0 // across the repetitions (-count) of this sub-benchmark
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			var sum [writerModes]writerRun
			for range b.N {
				for k := range w.modes {
					m := w.modes[(round+k)%len(w.modes)]
					r := w.run(b, m, clients)
					sum[m].tps += r.tps
					sum[m].tx += r.tx
					sum[m].retried += r.retried
					sum[m].wal += r.wal
					sum[m].catchUp += r.catchUp
				}
				round++
			}
			n := float64(b.N)
			b.ReportMetric(0, "ns/op") // a round's time: not a result
			for _, m := range w.modes {
				b.ReportMetric(sum[m].tps/n, m.unit()+"-tps")
				if sum[m].tx > 0 {
					b.ReportMetric(float64(sum[m].wal)/float64(sum[m].tx), m.unit()+"-wal-B/tx")
					if w.isolation != "" {
						b.ReportMetric(100*float64(sum[m].retried)/float64(sum[m].tx), m.unit()+"-retried-%")
					}
				}
				if m != writerOff && sum[writerOff].tps > 0 {
					b.ReportMetric(100*sum[m].tps/sum[writerOff].tps, m.unit()+"/off-%")
					b.ReportMetric(float64(sum[m].catchUp.Microseconds())/1000/n, m.unit()+"-catchup-ms")
				}
			}
		})
	}
}

type writerFollower struct {
	cache *sqlitecache.Cache
	layer *fallback.Layer
	names []string // the vendors it caches
}

type writerBench struct {
	ctl       *pgx.Conn // the benchmark's own connection: DDL, VACUUM, WAL positions, checks
	sampler   *pgx.Conn // sampleWaits's
	pgbench   string
	env       []string
	script    string
	seconds   int
	followers []writerFollower
	secure    []string // the change log functions as migrated (pg_get_functiondef)
	notifying []string // migration 00003's, as CREATE OR REPLACE
	modes     []writerMode
	// feed=logical: pg_recvlogical, and the decoder's connection.
	recvlogical string
	decoderConn *pgx.Conn
	// isolation: writerIsolationEnv's, or "".
	isolation string
	// statements: writerStatementsEnv is set.
	statements bool
}

type writerRun struct {
	tps     float64
	tx      int64
	retried int64 // transactions pgbench retried after a serialization failure
	wal     int64 // bytes
	catchUp time.Duration
}

func writerName(i int) string { return fmt.Sprintf("w%05d", i) }

// run sets mode m, runs pgbench once, waits for the followers to catch up
// when the log recorded the run, and leaves the functions as migrated.
func (w *writerBench) run(b *testing.B, m writerMode, clients int) writerRun {
	b.Helper()
	ctx := context.Background()
	w.setMode(b, m)
	// As pgbench does for its own tables (we pass -n): the same start for
	// every run, whatever the previous one left to vacuum.
	if _, err := w.ctl.Exec(ctx, `VACUUM vendors, pgfallback_changes`); err != nil {
		b.Fatal(err)
	}
	if m.followed() {
		// Each mode alters the log's trigger or its functions, which
		// expires the followers' cursors (pgstore/triggers.go): they
		// resync now, before pgbench starts, not during its run.
		for i, f := range w.followers {
			if err := f.layer.CatchUp(ctx); err != nil {
				b.Fatalf("%s: follower %d's catch-up before the run: %v", m, i, err)
			}
		}
	}
	var feeder *logicalFeeder
	if m == writerLogical {
		var err error
		if feeder, err = startLogicalFeeder(ctx, w.recvlogical, w.env, w.ctl, w.decoderConn); err != nil {
			b.Fatal(err)
		}
		defer feeder.close() // after a Fatal; drain closes it otherwise
	}
	applied := make([]fallback.FeedStats, len(w.followers))
	for i, f := range w.followers {
		applied[i] = f.layer.Stats().Feed
	}
	load0, cpu0 := loadAvg(), selfCPU()
	lsn0 := w.walLSN(b)
	if w.statements {
		if _, err := w.ctl.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
			b.Fatal(err)
		}
	}
	waits := w.sampleWaits()
	defer waits() // stopped before anything else uses the sampler, even after a Fatal
	stopProfile := startProfile(b, fmt.Sprintf("%s-%d", m.unit(), clients))
	out, pgbenchCPU := w.pgbench1(b, clients)
	stopProfile()
	end := time.Now()
	waited := waits()
	lsn1 := w.walLSN(b)
	load1, cpu1 := loadAvg(), selfCPU()
	r, latency, err := parsePgbench(out)
	if err != nil {
		b.Fatalf("%s, clients=%d: %v\n%s", m, clients, err, out)
	}
	r.wal = int64(lsn1 - lsn0)
	var decoded string
	if feeder != nil {
		lag, err := feeder.drain(r.tx, writerCatchUp)
		if err != nil {
			b.Fatalf("%s, clients=%d: the decoder: %v", m, clients, err)
		}
		decoded = fmt.Sprintf("; every update decoded into the log %v after pgbench's exit (%d batches held back until their commits were visible)",
			lag.Round(time.Millisecond), feeder.waitedVisible.Load())
	}
	var lagged string
	if m.followed() {
		var atPG int
		r.catchUp, atPG = w.catchUp(b, end)
		lagged = fmt.Sprintf("; followers caught up %v after pgbench's exit (%d of %d cached vendors at PostgreSQL's version, the others last updated with the trigger off)",
			r.catchUp.Round(time.Millisecond), atPG, len(w.followers)*writerCached)
	}
	var feed []string
	for i, f := range w.followers {
		s := f.layer.Stats().Feed
		feed = append(feed, fmt.Sprintf("%d applied, %d catch-ups (%d heard), %d resyncs, %d errors",
			s.ChangesApplied-applied[i].ChangesApplied, s.CatchUps-applied[i].CatchUps, s.HeardCatchUps-applied[i].HeardCatchUps,
			s.Resyncs-applied[i].Resyncs, s.Errors-applied[i].Errors))
		if m.followed() && s.State != fallback.FeedFollowing {
			b.Fatalf("%s, clients=%d: follower %d's feed is %v after the run: %+v", m, clients, i, s.State, s)
		}
	}
	if m == writerNotify {
		// After the catch-up and the followers' check: replacing the
		// functions expires the followers' cursors, and they resync (the
		// next run's catch-up waits for that).
		if err := w.restore(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("%-14s clients=%-2d %8.0f tps, %7d tx (%d retried), latency %6.2f ms, %4.0f WAL B/tx; load average %s → %s; pgbench's sessions: %s",
		m, clients, r.tps, r.tx, r.retried, latency, float64(r.wal)/float64(max(r.tx, 1)), load0, load1, waited)
	if w.statements {
		b.Logf("%-14s clients=%-2d statements by total time:\n%s", m, clients, w.topStatements(b))
	}
	b.Logf("%-14s clients=%-2d pgbench %.2f CPU-s, this process (the followers) %.2f CPU-s; feeds: %s%s%s",
		m, clients, pgbenchCPU, cpu1-cpu0, strings.Join(feed, " | "), lagged, decoded)
	return r
}

// sampleWaits samples the wait events of pgbench's sessions every
// writerSampleEvery until the returned function is called, which stops the
// sampling and summarises it: the share of the samples in which a session
// was active (running a statement rather than waiting for pgbench), and
// what the active ones waited for ("CPU": no wait event, running or
// waiting for a core), then the CPU PostgreSQL's processes used, by whom
// they served (cpuShares). It may be called more than once.
func (w *writerBench) sampleWaits() func() string {
	stop, done := make(chan struct{}), make(chan string, 1)
	cpu := newCPUShares()
	go func() {
		tally := map[string]int{}
		var samples, active int
		var failed error
		t := time.NewTimer(0)
		defer t.Stop()
	loop:
		for {
			select {
			case <-stop:
				break loop
			case <-t.C:
			}
			if failed == nil {
				// Not cancelled by stop: a query cut short would leave the
				// connection unusable for the next run.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				rows, err := w.sampler.Query(ctx, `
					SELECT pid, coalesce(application_name, ''), coalesce(backend_type, ''),
						EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted),
						coalesce(state = 'active', false), coalesce(wait_event_type || ':' || wait_event, 'CPU')
					FROM pg_stat_activity a`)
				if err == nil {
					var pid int
					var app, backend, event string
					var waker, act bool
					_, err = pgx.ForEachRow(rows, []any{&pid, &app, &backend, &waker, &act, &event}, func() error {
						cpu.sample(pid, backendRole(app, backend, waker))
						if app != writerAppName {
							return nil
						}
						samples++
						if act {
							active++
							tally[event]++
						}
						return nil
					})
				}
				cpu.endSample()
				cancel()
				failed = err
			}
			t.Reset(writerSampleEvery)
		}
		if failed != nil {
			done <- fmt.Sprintf("not sampled (%v)", failed)
			return
		}
		if active == 0 {
			done <- fmt.Sprintf("never active in %d samples", samples)
			return
		}
		events := make([]string, 0, len(tally))
		for e := range tally {
			events = append(events, e)
		}
		sort.Slice(events, func(i, j int) bool { return tally[events[i]] > tally[events[j]] })
		var top []string
		for _, e := range events[:min(len(events), 5)] {
			top = append(top, fmt.Sprintf("%s %.0f%%", e, 100*float64(tally[e])/float64(active)))
		}
		done <- fmt.Sprintf("active %.0f%% of %d samples, of which %s; %v", 100*float64(active)/float64(max(samples, 1)), samples, strings.Join(top, ", "), cpu)
	}()
	var once sync.Once
	var summary string
	return func() string {
		once.Do(func() {
			close(stop)
			summary = <-done
		})
		return summary
	}
}

// setMode puts the trigger and the functions in mode m, and checks that
// they are.
func (w *writerBench) setMode(b *testing.B, m writerMode) {
	b.Helper()
	ctx := context.Background()
	enable := "ENABLE ALWAYS"
	if m == writerOff || m == writerLogical {
		enable = "DISABLE"
	}
	if _, err := w.ctl.Exec(ctx, `ALTER TABLE vendors `+enable+` TRIGGER pgfallback_vendors_change`); err != nil {
		b.Fatal(err)
	}
	if m == writerNotify {
		for _, f := range w.notifying {
			if _, err := w.ctl.Exec(ctx, f); err != nil {
				b.Fatalf("re-create migration 00003's function: %v", err)
			}
		}
	}
	var enabled string
	var notifying int
	if err := w.ctl.QueryRow(ctx, `
		SELECT (SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = 'vendors'::regclass AND tgname = 'pgfallback_vendors_change'),
			(SELECT count(*) FROM pg_proc WHERE pronamespace = current_schema()::regnamespace
				AND proname IN ('pgfallback_log_vendor', 'pgfallback_log_work_item', 'pgfallback_log_truncate')
				AND prosrc LIKE '%pg_notify%')`).Scan(&enabled, &notifying); err != nil {
		b.Fatal(err)
	}
	wantEnabled, wantNotifying := "A", 0
	switch m {
	case writerOff, writerLogical:
		wantEnabled = "D"
	case writerNotify:
		wantNotifying = 3
	}
	if enabled != wantEnabled || notifying != wantNotifying {
		b.Fatalf("%s: the trigger's tgenabled is %q (want %q), %d notifying functions (want %d)", m, enabled, wantEnabled, notifying, wantNotifying)
	}
}

// functionDefs returns the change log functions' definitions, by name.
func (w *writerBench) functionDefs(b *testing.B) []string {
	b.Helper()
	defs, err := w.defs(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return defs
}

func (w *writerBench) defs(ctx context.Context) ([]string, error) {
	rows, err := w.ctl.Query(ctx, `
		SELECT pg_get_functiondef(oid) FROM pg_proc
		WHERE pronamespace = current_schema()::regnamespace
			AND proname IN ('pgfallback_log_vendor', 'pgfallback_log_work_item', 'pgfallback_log_truncate')
		ORDER BY proname`)
	if err != nil {
		return nil, err
	}
	defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(defs) != 3 {
		return nil, fmt.Errorf("%d change log functions, want 3", len(defs))
	}
	return defs, nil
}

// restore re-creates the functions as migrated and checks that they are
// exactly those. The trigger is left enabled.
func (w *writerBench) restore(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if w.ctl.IsClosed() {
		return errors.New("restore the change log functions: the connection is closed")
	}
	for _, def := range w.secure {
		if _, err := w.ctl.Exec(ctx, def); err != nil {
			return fmt.Errorf("restore the change log functions: %w", err)
		}
	}
	if _, err := w.ctl.Exec(ctx, `ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change`); err != nil {
		return err
	}
	now, err := w.defs(ctx)
	if err != nil {
		return err
	}
	for i := range now {
		if now[i] != w.secure[i] {
			return fmt.Errorf("the change log function is not restored as migrated:\n%s\nwant:\n%s", now[i], w.secure[i])
		}
	}
	return nil
}

// notifyingFunctions reads migration 00003's trigger functions, which call
// pg_notify, as CREATE OR REPLACE statements.
func notifyingFunctions() ([]string, error) {
	const path = "../migrations/postgres/00003_change_log.sql"
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	up, _, ok := strings.Cut(string(src), "-- +goose Down")
	if !ok {
		return nil, fmt.Errorf("%s: no -- +goose Down", path)
	}
	var fns []string
	for {
		_, rest, ok := strings.Cut(up, "-- +goose StatementBegin\n")
		if !ok {
			break
		}
		stmt, rest, ok := strings.Cut(rest, "-- +goose StatementEnd")
		if !ok {
			return nil, fmt.Errorf("%s: a StatementBegin without its StatementEnd", path)
		}
		up = rest
		stmt = strings.TrimSpace(stmt)
		if !strings.HasPrefix(stmt, "CREATE FUNCTION ") || !strings.Contains(stmt, "pg_notify(") {
			return nil, fmt.Errorf("%s: not a notifying function: %.60q…", path, stmt)
		}
		fns = append(fns, "CREATE OR REPLACE FUNCTION "+strings.TrimPrefix(stmt, "CREATE FUNCTION "))
	}
	if len(fns) != 3 {
		return nil, fmt.Errorf("%s: %d functions, want 3", path, len(fns))
	}
	return fns, nil
}

// catchUp waits until each follower's cache holds, for each of its
// vendors, at least the last version the log recorded, and at most
// PostgreSQL's. It returns how long after end that was, and how many
// cached vendors are at PostgreSQL's version.
func (w *writerBench) catchUp(b *testing.B, end time.Time) (time.Duration, int) {
	b.Helper()
	ctx := context.Background()
	type want struct {
		name        string
		logged, cur int64
	}
	var all []string
	for _, f := range w.followers {
		all = append(all, f.names...)
	}
	rows, err := w.ctl.Query(ctx, `
		SELECT v.name, coalesce(c.version, 0), v.version
		FROM vendors v LEFT JOIN (
			SELECT key, max(version) AS version FROM pgfallback_changes
			WHERE entity = 'vendor' AND key = ANY ($1) GROUP BY key) c ON c.key = v.name
		WHERE v.name = ANY ($1)`, all)
	if err != nil {
		b.Fatal(err)
	}
	versions := map[string]want{}
	var wt want
	if _, err := pgx.ForEachRow(rows, []any{&wt.name, &wt.logged, &wt.cur}, func() error {
		versions[wt.name] = wt
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	pending := make([][]want, len(w.followers))
	atPG := 0
	for i, f := range w.followers {
		for _, name := range f.names {
			v, ok := versions[name]
			if !ok {
				b.Fatalf("vendor %s is gone", name)
			}
			pending[i] = append(pending[i], v)
		}
	}
	deadline := end.Add(writerCatchUp)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		left := 0
		for i, f := range w.followers {
			rest := pending[i][:0]
			for _, p := range pending[i] {
				v, _, err := f.cache.GetVendor(ctx, p.name)
				switch {
				case err != nil && !errors.Is(err, repository.ErrNotFound):
					b.Fatalf("follower %d: cache: %v", i, err)
				case err == nil && v.Version > p.cur:
					b.Fatalf("follower %d caches %s at version %d, past PostgreSQL's %d", i, p.name, v.Version, p.cur)
				case err == nil && v.Version >= p.logged:
					if v.Version == p.cur {
						atPG++
					}
				default:
					rest = append(rest, p)
				}
			}
			pending[i] = rest
			left += len(rest)
		}
		if left == 0 {
			return time.Since(end), atPG
		}
		if time.Now().After(deadline) {
			for i, f := range w.followers {
				if len(pending[i]) > 0 {
					p := pending[i][0]
					v, _, err := f.cache.GetVendor(ctx, p.name)
					b.Fatalf("follower %d did not catch up within %v of pgbench's exit: %d of its vendors behind the log, e.g. %s cached at version %d (%v), logged %d, PostgreSQL %d; feed %+v",
						i, writerCatchUp, len(pending[i]), p.name, v.Version, err, p.logged, p.cur, f.layer.Stats().Feed)
				}
			}
		}
		<-tick.C
	}
}

// waitWaker waits until each follower has its listening connection and one
// of them holds the waker's lock.
func (w *writerBench) waitWaker(b *testing.B) {
	b.Helper()
	ctx := context.Background()
	key := uint64(pgstore.ChangeWakerLockKey)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var listeners, wakers int
		if err := w.ctl.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgfallback-feed'),
				(SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
				 WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
					AND a.application_name = 'pgfallback-feed'
					AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1)`,
			int64(key>>32), int64(key&0xffff_ffff)).Scan(&listeners, &wakers); err != nil {
			b.Fatal(err)
		}
		if listeners == len(w.followers) && wakers == min(len(w.followers), 1) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d listening connections (want %d), %d wakers (want %d)", listeners, len(w.followers), wakers, min(len(w.followers), 1))
		}
		<-tick.C
	}
}

// settings describes the server, for the log.
func (w *writerBench) settings(b *testing.B) string {
	b.Helper()
	var s string
	if err := w.ctl.QueryRow(context.Background(), `
		SELECT format('PostgreSQL %s, fsync=%s, synchronous_commit=%s, full_page_writes=%s, shared_buffers=%s, max_connections=%s',
			current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'),
			current_setting('full_page_writes'), current_setting('shared_buffers'), current_setting('max_connections'))`).Scan(&s); err != nil {
		b.Fatal(err)
	}
	if v := strings.TrimSpace(os.Getenv(writerSyncCommitEnv)); v != "" {
		s += "; pgbench's sessions: synchronous_commit=" + v
	}
	return s
}

// walLSN returns the server's current WAL write position.
func (w *writerBench) walLSN(b *testing.B) uint64 {
	b.Helper()
	var s string
	if err := w.ctl.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		b.Fatal(err)
	}
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		b.Fatalf("unexpected LSN %q", s)
	}
	return h<<32 | l
}

// pgbench1 runs pgbench once and returns its output.
func (w *writerBench) pgbench1(b *testing.B, clients int) (out string, cpu float64) {
	b.Helper()
	// pgbench ends by itself after -T; the margin covers connecting
	// 64 sessions on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(w.seconds)*time.Second+2*time.Minute)
	defer cancel()
	args := []string{"-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(w.seconds), "-f", w.script}
	if w.isolation != "" {
		args = append(args, "--max-tries=1000") // a serialization failure is retried, and counted
	}
	cmd := exec.CommandContext(ctx, w.pgbench, args...)
	cmd.Env = w.env
	cmd.WaitDelay = 5 * time.Second
	combined, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench -c %d: %v\n%s", clients, err, combined)
	}
	return string(combined), (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}

var (
	pgbenchTPS     = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	pgbenchTx      = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	pgbenchFailed  = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
	pgbenchRetried = regexp.MustCompile(`(?m)^number of transactions retried: ([0-9]+)`)
	pgbenchLatency = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
)

// parsePgbench reads pgbench's summary.
func parsePgbench(out string) (writerRun, float64, error) {
	var r writerRun
	m := pgbenchTPS.FindStringSubmatch(out)
	if m == nil {
		return r, 0, errors.New("no \"tps = … (without initial connection time)\" in pgbench's output")
	}
	tps, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return r, 0, err
	}
	m = pgbenchTx.FindStringSubmatch(out)
	if m == nil {
		return r, 0, errors.New("no \"number of transactions actually processed\" in pgbench's output")
	}
	tx, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return r, 0, err
	}
	if m := pgbenchFailed.FindStringSubmatch(out); m != nil && m[1] != "0" {
		return r, 0, fmt.Errorf("%s failed transactions", m[1])
	}
	if m := pgbenchRetried.FindStringSubmatch(out); m != nil {
		r.retried, _ = strconv.ParseInt(m[1], 10, 64)
	}
	var latency float64
	if m := pgbenchLatency.FindStringSubmatch(out); m != nil {
		latency, _ = strconv.ParseFloat(m[1], 64)
	}
	r.tps, r.tx = tps, tx
	return r, latency, nil
}

// findPgbench looks in PATH, then in /usr/lib/postgresql/*/bin, highest
// version first.
func findPgbench() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		p := filepath.Join(d, "pgbench")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("no pgbench in PATH nor in /usr/lib/postgresql/*/bin")
}

// pgbenchEnv is this process's environment with libpq's connection
// variables taken from dsn instead (the password travels in the
// environment, never on the command line), and synchronous_commit set for
// pgbench's sessions when syncCommit is not empty.
func pgbenchEnv(dsn, syncCommit string) ([]string, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("the database's DSN does not parse") // the error would quote it
	}
	set := map[string]string{
		"PGHOST":            cfg.Host,
		"PGPORT":            strconv.Itoa(int(cfg.Port)),
		"PGUSER":            cfg.User,
		"PGDATABASE":        cfg.Database,
		"PGAPPNAME":         writerAppName,
		"PGCONNECT_TIMEOUT": "10",
	}
	if cfg.Password != "" {
		set["PGPASSWORD"] = cfg.Password
	}
	switch {
	case cfg.TLSConfig == nil:
		set["PGSSLMODE"] = "disable"
	case len(cfg.Fallbacks) > 0 && cfg.Fallbacks[len(cfg.Fallbacks)-1].TLSConfig == nil:
		set["PGSSLMODE"] = "prefer"
	default:
		set["PGSSLMODE"] = "require"
	}
	if syncCommit != "" {
		set["PGOPTIONS"] = "-c synchronous_commit=" + syncCommit
	}
	// Whatever else could point libpq elsewhere goes.
	drop := map[string]bool{"PGHOSTADDR": true, "PGSERVICE": true, "PGSERVICEFILE": true, "PGOPTIONS": true, "PGPASSFILE": true}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := set[k]; ours || drop[k] {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env, nil
}

// loadAvg is the 1-minute load average, for the log ("?" where there is
// no /proc).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// selfCPU is this process's user and system CPU time in seconds, from
// /proc (0 without it): the followers' share of the machine.
func selfCPU() float64 {
	cpu, _ := procCPU(os.Getpid())
	return cpu
}

// feedMinInterval is the followers' Config.ChangeFeedMinInterval in the
// feed benchmarks, from PGFALLBACK_BENCH_FEED_MIN_INTERVAL (default: the
// Config's; -1ns: a catch-up per notification), to compare the two.
func feedMinInterval(b *testing.B) time.Duration { return envDuration(b, writerMinIntervalEnv) }

// envDuration is the duration in the environment variable name, 0 when
// it is unset.
func envDuration(b *testing.B, name string) time.Duration {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}
