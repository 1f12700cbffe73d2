package prom

import "github.com/prometheus/client_golang/prometheus"

// The descriptors of the metrics the Collector makes at scrape time. Their
// names and labels are a public contract (docs/observability.md): change them only
// with a note in the changelog, dashboards and alerts depend on them.

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The layer, from Layer.Stats.
var (
	descState = desc("pgfallback_circuitbreaker_state",
		"The circuit breaker's state: 1 for the current one (closed, half_open, open), 0 for the others.", "state")
	descTransitions = desc("pgfallback_circuitbreaker_transitions_total",
		"Changes of the circuit breaker's state, by from and to state.", "from", "to")
	descNotPermitted = desc("pgfallback_circuitbreaker_not_permitted_calls_total",
		"Calls that did not reach PostgreSQL because the breaker was open: served from the cache or failed fast.")
	descLastTrip = desc("pgfallback_circuitbreaker_last_trip_timestamp_seconds",
		"When the breaker last opened from closed, in seconds since the epoch; absent if it never did.")
	descPrimaryCalls = desc("pgfallback_primary_calls_total",
		"Calls sent to PostgreSQL through the breaker (the prober's pings are counted apart).")
	descPrimaryFailures = desc("pgfallback_primary_failures_total",
		"Failures of PostgreSQL that count as an outage (calls and the prober's pings), by kind; read_only and disk_full count calls a read-only server, or one out of disk space, refused: they do not open the breaker.", "kind")
	descReadOnlySince = desc("pgfallback_primary_read_only_since_timestamp_seconds",
		"When PostgreSQL began refusing writes, read-only (SQLSTATE 25006) or out of disk space (53100), in seconds since the epoch; absent while it takes them. Reads still go to it.")
	descWritesStalledSince = desc("pgfallback_primary_writes_stalled_since_timestamp_seconds",
		"When PostgreSQL's writes began to time out while it answered other calls (commits that do not finish: a synchronous replica missing), in seconds since the epoch; absent while commits go through. Writes are not sent meanwhile; reads still go to it.")
	descStalledTimeouts = desc("pgfallback_primary_stalled_timeouts_total",
		"Calls that timed out although PostgreSQL answered another call after they were sent (among the timeouts in pgfallback_primary_failures_total): not counted as an outage.")
	descWritesHeld = desc("pgfallback_writes_held_total",
		"Writes not sent because PostgreSQL's writes time out while it answers other calls: failed as not written, or queued.")
	descSlowCalls = desc("pgfallback_primary_slow_calls_total",
		"Calls PostgreSQL answered, but in SlowCallDuration or longer (among pgfallback_primary_calls_total): what trips the breaker at SlowCallRate.")
	descServedSlow = desc("pgfallback_cache_served_slow_total",
		"Reads answered from the cache because PostgreSQL was slower than SoftTimeout (counted in pgfallback_cache_served_total too).")
	descAbandoned = desc("pgfallback_abandoned_calls",
		"Calls to PostgreSQL still running in the background after their reads were answered from the cache at SoftTimeout (at most MaxAbandonedCalls).")
	descAbandonedPeak = desc("pgfallback_abandoned_calls_peak",
		"The most calls to PostgreSQL that ran in the background at once since the layer started (at most MaxAbandonedCalls).")
	descProbes = desc("pgfallback_primary_probes_total",
		"Pings the prober sent to PostgreSQL while the breaker was open.")
	descCacheOpen = desc("pgfallback_cache_open",
		"1 when the layer has its cache open; 0 while a cache that could not be opened is retried (an outage is then an outage).")

	descWriteQueued = desc("pgfallback_writethrough_queued_total",
		"Cache updates queued by the write-through; each Layer.Flush adds one barrier, counted here and never written.")
	descWriteQueueDepth = desc("pgfallback_writethrough_queue_depth",
		"Cache updates waiting to be applied: the write-through queue plus the overflow list of evictions and moves.")
	descWriteWritten = desc("pgfallback_writethrough_written_total",
		"Cache updates the write-through applied.")
	descWriteDropped = desc("pgfallback_writethrough_dropped_total",
		"Cache updates dropped: the queue was full, the cache failed them, or Close's deadline passed.")
	descWriteFailed = desc("pgfallback_writethrough_failed_total",
		"Cache updates the cache refused (a set is then dropped, an eviction retried).")
	descWriteOverflowed = desc("pgfallback_writethrough_overflowed_total",
		"Evictions and moves that found the queue full and went to the overflow list (never dropped).")
	descEvictionsLost = desc("pgfallback_writethrough_evictions_lost_total",
		"Evictions still queued when Close's deadline passed: the cache may serve those deleted rows until a warm.")

	descWarmRuns = desc("pgfallback_warm_runs_total",
		"Warm runs: after an outage, before the breaker closes, and Layer.Warm.")
	descWarmDuration = desc("pgfallback_last_warm_duration_seconds",
		"How long the last warm took; absent before the first.")
	descWarmRows = desc("pgfallback_last_warm_rows",
		"Cache entries the last warm refreshed from PostgreSQL or removed because PostgreSQL no longer has them; absent before the first.", "action")
	descWarmSuccess = desc("pgfallback_last_warm_success",
		"1 when the last warm ended without error, 0 when it failed; absent before the first.")
	descWarmTimestamp = desc("pgfallback_last_warm_timestamp_seconds",
		"When the last warm ended, in seconds since the epoch; absent before the first.")

	descFeedState = desc("pgfallback_feed_state",
		"The change feed's state: 1 for the current one (off, starting, following, behind, resyncing), 0 for the others.", "state")
	descFeedLag = desc("pgfallback_feed_lag_seconds",
		"How long ago the cache was last known to reflect every committed change (the feed's AsOf); absent while AsOf is unknown.")
	descFeedResyncSince = desc("pgfallback_feed_resync_started_timestamp_seconds",
		"When the change feed's unfinished resync began (its cursor expired); entries cached before it are served stale until it is done. Absent when no resync is under way.")
	descFeedApplied = desc("pgfallback_feed_changes_applied_total",
		"Changes read from the change log and applied to the cache.")
	descFeedCatchUps = desc("pgfallback_feed_catchups_total",
		"Reads of the change log until caught up.")
	descFeedHeardCatchUps = desc("pgfallback_feed_heard_catchups_total",
		"Catch-ups answered by the changes the waker's notification carried, without a read of the change log.")
	descFeedRowsHeard = desc("pgfallback_feed_rows_heard_total",
		"Changed rows the waker's notification carried, applied without a read of their keys.")
	descFeedResyncs = desc("pgfallback_feed_resyncs_total",
		"Full warms by the feed: no cursor yet, or the cursor was older than the log.")
	descFeedErrors = desc("pgfallback_feed_errors_total",
		"Catch-ups of the change feed that failed.")
	descFeedListenerRefused = desc("pgfallback_feed_listener_refused",
		"1 while the change feed's listener refuses to listen where it is pointed (reason: pooler, other_database, other_installation), or cannot connect there while the pool's connections answer (reason: cannot_connect); the follower then reads the change log about once a second instead of at each commit. Absent while it listens.", "reason")

	descQueuedPending = desc("pgfallback_queued_writes",
		"Writes in the durable write queue waiting to be replayed to PostgreSQL, as last counted by the layer.")
	descQueuedStalled = desc("pgfallback_queued_writes_replay_stalled",
		"1 while writes are pending and the last replay pass failed (it retries): with the breaker closed, PostgreSQL answers but the queue does not drain; the layer's Stats().Queued.LastError and /healthz say why.")
	descQueuedEvents = desc("pgfallback_queued_writes_total",
		"Durable write queue events: queued, replayed (already_applied among them: found applied by an earlier, interrupted replay), dead_lettered, conflict (version conflicts among the dead letters), replay_failure (passes stopped by a transient failure), replay_timed_out (writes in a replay batch that outlasted PrimaryTimeout, replayed again in smaller ones), refused_full (writes refused at MaxQueuedWrites).", "event")

	descScrapeErrors = desc("pgfallback_scrape_errors_total",
		"Scrapes that could not read a source in time (the cache's entry counts); that part of the scrape was skipped.")
)

// The cache, with WithCache, from sqlitecache.Cache.Stats.
var (
	descCacheEntries = desc("pgfallback_cache_entries",
		"Entries in the cache file, by entity (fresh and stale).", "entity")
	descDeadLetters = desc("pgfallback_queued_writes_dead_letters",
		"Queued writes PostgreSQL rejected at replay, kept in the cache file for an operator (pgfallback queue list|retry|discard).")
	descQueuedOldest = desc("pgfallback_queued_writes_oldest_age_seconds",
		"How long the oldest write in the durable queue has been waiting for replay; absent when none is pending.")
	descCacheStale = desc("pgfallback_cache_stale_entries",
		"Entries in the cache file past their TTL, all entities together: still served during an outage within StaleIfError.")
	descCacheOldest = desc("pgfallback_cache_oldest_entry_age_seconds",
		"Age of the oldest entry in the cache file; 0 when it is empty.")
	descCacheLookups = desc("pgfallback_cache_lookups_total",
		"Gets from the cache by this process, by result (hit, stale_hit, miss).", "result")
	descCacheFileLost = desc("pgfallback_cache_file_lost_total",
		"Times the cache file was found deleted, replaced or truncated under the process.")
	descCacheReopens = desc("pgfallback_cache_reopens_total",
		"Successful reopens of the cache after its file was lost.")
)
