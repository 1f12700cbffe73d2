// Package bench holds the side-by-side benchmarks that compare pgfallback's
// layers in one run against a real PostgreSQL server (see integration/pgtest):
// the pgx store, the SQLite cache, and the fallback layer healthy and open.
//
//	go test -run '^$' -bench . -benchmem ./bench/
//
// BenchmarkFeedFollowers (1, 10 and 50 layers following one database's
// change feed) sets up every size afresh and times a fixed round of
// updates: run it once per size.
//
//	go test -run '^$' -bench FeedFollowers -benchtime=1x ./bench/
//
// BenchmarkFeedWriterThroughput measures what the change feed costs
// writers: pgbench (an external process, found in PATH or
// /usr/lib/postgresql/*/bin) sends one-row updates from 8, 32 and 64
// sessions with the log's trigger disabled, enabled as migrated, and
// enabled with migration 00003's notifying functions, while 3 layers
// follow the feed. Each repetition of a clients=N sub-benchmark runs the
// three modes once each, interleaved, for 5 s each
// (PGFALLBACK_BENCH_PGBENCH_SECONDS), and reports their tps and the ratios
// on/off-% and notify/off-%; take -count repetitions, not a longer
// -benchtime, and -v for each run's waits and load average.
// PGFALLBACK_BENCH_ISOLATION=serializable runs it all under that default
// isolation and reports the transactions pgbench retried. With -v each run
// also says where the machine's CPU went: PostgreSQL's by whom its
// backends served (pgbench's sessions, the feed's waker, its listeners,
// the followers' reads), pgbench's own, and this process's (the
// followers'). PGFALLBACK_BENCH_MODES=off,on runs only those modes;
// PGFALLBACK_BENCH_STATEMENTS=1 loads pg_stat_statements and logs each
// run's costliest statements; PGFALLBACK_BENCH_CPUPROFILE=/tmp/p profiles
// this process during each pgbench run only (/tmp/p-on-8.prof, …; also
// BenchmarkFeedFollowers's updates, /tmp/p-followers-50.prof).
//
//	go test -run '^$' -bench FeedWriterThroughput -benchtime=1x -count 3 -v ./bench/
//
// BenchmarkFeedCrashResync kills and restarts a server of its own under 1,
// 4 and 16 followers each caching 20,000 vendors, and times until every
// one has resynced (a crash empties the unlogged log);
// PGFALLBACK_BENCH_WARM_TIMEOUT sets their WarmTimeout.
//
//	go test -run '^$' -bench FeedCrashResync -benchtime=1x ./bench/
//
// BenchmarkStoreGetVendorPooled is a pgstore Get direct with pgx's
// default mode, direct in the cache_describe and exec modes, and in those
// two through PgBouncer in transaction mode (skipped without a pgbouncer
// binary).
//
//	go test -run '^$' -bench StoreGetVendorPooled -benchmem -count 6 ./bench/
package bench
