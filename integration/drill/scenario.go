package drill

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/repository"
)

// fault is a scenario's script: inject breaks things, during runs while the
// fault lasts (for faults that move), heal repairs.
type fault struct {
	description string
	mustTrip    bool // the breaker has to open
	mustNotTrip bool // the breaker must stay closed
	inject      func(ctx context.Context, r *scenarioRun) error
	during      func(ctx context.Context, r *scenarioRun, until time.Time) error
	heal        func(ctx context.Context, r *scenarioRun) error
}

func faults(name string) (fault, string) {
	down := func(_ context.Context, r *scenarioRun) error { return r.e.proxy.Down() }
	clear := func(_ context.Context, r *scenarioRun) error { return r.e.proxy.Clear() }
	switch name {
	case ScenarioDown:
		return fault{description: "the proxy refuses connections, then accepts again", mustTrip: true, inject: down, heal: clear}, ""
	case ScenarioKill:
		return fault{
			description: "the server is killed (immediate shutdown), then started again", mustTrip: true,
			inject: func(_ context.Context, r *scenarioRun) error { return r.e.srv.Stop() },
			heal:   func(_ context.Context, r *scenarioRun) error { return r.e.srv.Start() },
		}, ""
	case ScenarioBlackhole:
		return fault{
			description: "the proxy accepts and never answers; calls must not hang", mustTrip: true,
			inject: func(_ context.Context, r *scenarioRun) error { return r.e.proxy.Blackhole() }, heal: clear,
		}, ""
	case ScenarioLatency:
		return fault{
			description: "latency above PrimaryTimeout: a slow database counts as down", mustTrip: true,
			inject: func(_ context.Context, r *scenarioRun) error {
				return r.e.proxy.Latency(r.cfg.PrimaryTimeout+300*time.Millisecond, 0)
			},
			heal: clear,
		}, ""
	case ScenarioLatencyBelow:
		return fault{
			description: "latency well below PrimaryTimeout: must not trip", mustNotTrip: true,
			inject: func(_ context.Context, r *scenarioRun) error {
				return r.e.proxy.Latency(r.cfg.PrimaryTimeout/10, 0)
			},
			heal: clear,
		}, ""
	case ScenarioReadOnly:
		return fault{
			description: "PostgreSQL refuses writes for the whole server (default_transaction_read_only, reloaded: a provider's guard against a full disk) and answers reads, with a burst of writes besides the readers: reads go on from PostgreSQL, writes fail as not written, the breaker stays closed",
			mustNotTrip: true,
			inject:      func(ctx context.Context, r *scenarioRun) error { return pgtest.SetReadOnly(ctx, r.e.srv.DSN(), true) },
			during:      burstWriters,
			heal:        func(ctx context.Context, r *scenarioRun) error { return pgtest.SetReadOnly(ctx, r.e.srv.DSN(), false) },
		}, ""
	case ScenarioCommitStall:
		return fault{
			description: "commits wait for a synchronous replica that is gone (synchronous_standby_names, reloaded) while reads answer, with a burst of writes besides the readers: reads go on from PostgreSQL, writes end of unknown outcome, then are not sent until a commit probe goes through; the breaker stays closed",
			mustNotTrip: true,
			inject: func(ctx context.Context, r *scenarioRun) error {
				return pgtest.Reconfigure(ctx, r.e.srv.DSN(), "synchronous_standby_names", "gone")
			},
			during: burstWriters,
			heal: func(ctx context.Context, r *scenarioRun) error {
				return pgtest.Reconfigure(ctx, r.e.srv.DSN(), "synchronous_standby_names", "")
			},
		}, ""
	case ScenarioBrownout:
		return fault{
			description: "latency between SoftTimeout and PrimaryTimeout on every connection: reads answered from the cache at the soft timeout, the breaker opens on slow calls",
			mustTrip:    true,
			inject: func(_ context.Context, r *scenarioRun) error {
				return r.e.proxy.Latency(brownoutLatency(r.cfg), 0)
			},
			heal: clear,
		}, ""
	case ScenarioReset:
		return fault{
			description: "live connections are reset mid-query, again and again",
			inject:      func(_ context.Context, r *scenarioRun) error { return r.e.proxy.ResetPeer() },
			during: func(ctx context.Context, r *scenarioRun, until time.Time) error {
				for time.Now().Before(until) {
					if err := r.e.proxy.Clear(); err != nil {
						return err
					}
					pause(ctx, 150*time.Millisecond)
					if err := r.e.proxy.ResetPeer(); err != nil {
						return err
					}
					pause(ctx, 150*time.Millisecond)
				}
				return nil
			},
			heal: clear,
		}, ""
	case ScenarioFlap:
		return fault{
			description: "the proxy goes down and up every 300 ms",
			inject:      down,
			during: func(ctx context.Context, r *scenarioRun, until time.Time) error {
				up := false
				for time.Now().Before(until) {
					pause(ctx, 300*time.Millisecond)
					var err error
					if up {
						err = r.e.proxy.Down()
					} else {
						err = r.e.proxy.Up()
					}
					if err != nil {
						return err
					}
					up = !up
				}
				return nil
			},
			heal: clear,
		}, ""
	case ScenarioStale:
		return fault{
			description: fmt.Sprintf("an outage longer than the TTL (%s) plus StaleIfError (%s): stale reads, then refusals", staleTTL, staleStaleIfError),
			mustTrip:    true, inject: down, heal: clear,
		}, ""
	case ScenarioRestart:
		return fault{
			description: "the application restarts (layer and cache reopened) during the outage", mustTrip: true,
			inject: down,
			during: func(ctx context.Context, r *scenarioRun, until time.Time) error {
				pause(ctx, time.Until(until)/2)
				return r.restartApp(ctx)
			},
			heal: clear,
		}, ""
	case ScenarioChanged:
		return fault{
			description: "rows change in PostgreSQL during the outage; the cache has them after recovery", mustTrip: true,
			inject: down,
			during: func(ctx context.Context, r *scenarioRun, _ time.Time) error {
				return changeRows(ctx, r.e.directDSN, r.keys[:min(10, len(r.keys))])
			},
			heal: clear,
		}, ""
	}
	return fault{}, fmt.Sprintf("unknown scenario %q", name)
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// burstWriters writes back to back from readOnlyBurst goroutines until
// until, besides the drill's paced writers: writes the fault refuses or
// holds are then a large share of the calls, and often come several in a
// row, so that were such a write an outage the breaker would open.
func burstWriters(ctx context.Context, r *scenarioRun, until time.Time) error {
	var burst sync.WaitGroup
	for i := range readOnlyBurst {
		burst.Add(1)
		go func() { defer burst.Done(); r.burstWriter(ctx, 100+i, until) }()
	}
	burst.Wait()
	return nil
}

// changeRows updates rows directly on the server, around the proxy and
// the layer.
func changeRows(ctx context.Context, connString string, names []string) error {
	conn, err := dsn.Connect(ctx, connString)
	if err != nil {
		return fmt.Errorf("change rows: %w", err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `UPDATE vendors SET status = 'broken', version = version + 1, updated_at = now() WHERE name = ANY($1)`, names)
	return err
}

// removeRows deletes the vendors a scenario created: a drill of a database
// it was pointed at leaves it as it found it.
func removeRows(ctx context.Context, connString, tag string) error {
	conn, err := dsn.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `DELETE FROM vendors WHERE name LIKE $1 || '-%'`, tag)
	return err
}

func runScenario(ctx context.Context, cfg Config, e *env, name, tag string) (sr ScenarioReport) {
	switch name {
	case ScenarioPeers:
		return runPeers(ctx, cfg, e, tag)
	case ScenarioFeedCut:
		return runFeedCut(ctx, cfg, e, tag)
	case ScenarioQueued, ScenarioQueuedRestart, ScenarioQueuedKill:
		return runQueued(ctx, cfg, e, name, tag)
	case ScenarioPromote:
		return runPromote(ctx, cfg, e, tag)
	}
	f, bad := faults(name)
	sr = ScenarioReport{Name: name, Description: f.description, TimeToTripMs: -1, TimeToRecoverMs: -1}
	if bad != "" {
		sr.violate("%s", bad)
		return sr
	}
	if (name == ScenarioKill || name == ScenarioReadOnly || name == ScenarioCommitStall) && (e.srv == nil || !e.srv.Controllable()) {
		sr.Skipped = "needs a server the drill controls (the embedded one); not available with --dsn"
		sr.Passed = true
		return sr
	}
	r := &scenarioRun{cfg: cfg, e: e, name: name, tag: tag, start: time.Now()}
	r.phase.Store("setup")
	fail := sr.violate
	if err := e.proxy.Clear(); err != nil {
		fail("reset the proxy: %v", err)
		return sr
	}
	goroutinesBefore := runtime.NumGoroutine()
	a, err := r.openApp(ctx)
	if err != nil {
		fail("open the application: %v", err)
		return sr
	}
	r.app = a
	appClosed := false
	defer func() {
		if !appClosed {
			r.app.close()
		}
		// A drill of a database it was pointed at leaves it as it found it.
		if err := removeRows(context.WithoutCancel(ctx), e.directDSN, tag); err != nil {
			sr.violate("remove the drill's rows: %v", err)
			sr.Passed = false
		}
	}()
	if err := r.seed(ctx); err != nil {
		fail("seed: %v", err)
		return sr
	}

	stopProgress := r.progress()
	stop := make(chan struct{})
	var load sync.WaitGroup
	for i := range cfg.Readers {
		load.Add(1)
		go func() { defer load.Done(); r.reader(ctx, uint64(i+1), stop) }()
	}
	for i := range cfg.Writers {
		load.Add(1)
		go func() { defer load.Done(); r.writer(ctx, i, stop) }()
	}
	stopLoad := func() {
		close(stop)
		load.Wait()
		stopProgress()
	}

	r.phase.Store("baseline")
	pause(ctx, cfg.Baseline)

	r.phase.Store("fault")
	duration := cfg.Duration
	if name == ScenarioStale {
		duration = max(duration, staleTTL+staleStaleIfError+1500*time.Millisecond)
	}
	r.faultAt.Store(int64(r.since()))
	if err := f.inject(ctx, r); err != nil {
		fail("inject the fault: %v", err)
	}
	until := time.Now().Add(duration)
	if f.during != nil {
		if err := f.during(ctx, r, until); err != nil {
			fail("during the fault: %v", err)
		}
	}
	pause(ctx, time.Until(until))

	r.phase.Store("recovery")
	r.healAt.Store(int64(r.since()))
	if err := f.heal(ctx, r); err != nil {
		fail("heal the fault: %v", err)
	}
	deadline := time.Now().Add(cfg.RecoverWithin)
	for r.currentState() != fallback.Closed && time.Now().Before(deadline) {
		pause(ctx, 10*time.Millisecond)
	}
	pause(ctx, 500*time.Millisecond) // load continues on the recovered database
	stopLoad()
	r.phase.Store("checks")

	r.check(ctx, f, &sr)

	if err := r.app.close(); err != nil {
		fail("close the application: %v", err)
	}
	appClosed = true
	if n, ok := goroutinesSettle(goroutinesBefore, 5*time.Second); !ok {
		fail("goroutine leak: %d goroutines after closing the application, %d before", n, goroutinesBefore)
	}
	sr.Passed = len(sr.Violations) == 0
	return sr
}

func (r *scenarioRun) currentState() fallback.State {
	var s fallback.State
	r.withApp(func(a *app) { s = a.layer.State() })
	return s
}

// seed creates the vendors the readers read, and caches them, before the
// fault (seedVendors: set-up is not measured).
func (r *scenarioRun) seed(ctx context.Context) error {
	vs := make([]repository.Vendor, r.cfg.Seed)
	for i := range vs {
		vs[i] = repository.Vendor{
			Name: fmt.Sprintf("%s-v%04d", r.tag, i), Status: repository.VendorOperational,
			ExtractorVersion: "1.0.0", CreatedBy: "pgfallback drill",
			Metadata: map[string]any{"seed": i, "note": "cached before the fault"},
		}
	}
	seeded, err := seedVendors(ctx, r.app.store, vs, r.app.cache)
	for _, v := range seeded {
		r.keys = append(r.keys, v.Name)
	}
	return err
}

// check measures the run against its bounds and fills the report.
func (r *scenarioRun) check(ctx context.Context, f fault, sr *ScenarioReport) {
	fail := sr.violate
	cfg := r.cfg
	r.mu.Lock()
	samples := slices.Clone(r.samples)
	acked, failed, unknown := slices.Clone(r.acked), slices.Clone(r.failed), slices.Clone(r.unknown)
	r.mu.Unlock()

	faultAt, healAt := time.Duration(r.faultAt.Load()), time.Duration(r.healAt.Load())
	tripped, closed := time.Duration(r.trippedAt.Load()), time.Duration(r.closedAt.Load())
	sr.FaultStartMs, sr.FaultEndMs = ms(faultAt), ms(healAt)
	sr.Tripped = tripped > 0
	if sr.Tripped {
		sr.TimeToTripMs = ms(tripped - faultAt)
		if closed > 0 {
			sr.TimeToRecoverMs = ms(closed - healAt)
		}
	}
	end := r.since()
	sr.Phases = []PhaseReport{
		phaseReport("baseline", samples, 0, faultAt),
		phaseReport("fault", samples, faultAt, healAt),
		phaseReport("recovery", samples, healAt, end),
	}
	sr.Timeline = timeline(samples, 1500)

	bound := cfg.PrimaryTimeout + cfg.Margin
	staleLimit := staleTTL + staleStaleIfError
	var badReads, tooOld, slow int
	var firstBad string
	for _, s := range samples {
		if s.latency > bound {
			slow++
		}
		if s.write {
			continue
		}
		okRead := s.outcome == okOutcome
		// An entry aged A when the fault began is refused from TTL +
		// StaleIfError - A into the outage, and A < TTL for an entry that
		// was fresh: no refusal may come before StaleIfError has passed.
		if r.name == ScenarioStale && s.outcome == unavailableOutcome && s.at >= faultAt+staleStaleIfError {
			okRead = true
		}
		if r.name == ScenarioStale && s.outcome == okOutcome && s.source == fallback.SourceCache && s.age > staleLimit {
			tooOld++ // served past StaleIfError: a lie
			continue
		}
		if !okRead {
			badReads++
			if firstBad == "" {
				firstBad = fmt.Sprintf("at %s: %v (source %s, age %s)", s.at.Round(time.Millisecond), s.err, s.source, s.age)
			}
		}
	}
	if badReads > 0 {
		fail("%d reads of cached keys failed; first %s", badReads, firstBad)
	}
	if tooOld > 0 {
		fail("%d reads were served from entries older than TTL + StaleIfError (%s)", tooOld, staleLimit)
	}
	if slow > 0 {
		fail("%d calls took longer than PrimaryTimeout + margin (%s)", slow, bound)
	}
	if r.name == ScenarioStale {
		var stale, refused int
		for _, s := range samples {
			if !s.write && s.at >= faultAt && s.at < healAt {
				if s.outcome == okOutcome && s.stale {
					stale++
				}
				if s.outcome == unavailableOutcome {
					refused++
				}
			}
		}
		if stale == 0 || refused == 0 {
			fail("stale scenario: %d stale reads served and %d refused; want both", stale, refused)
		}
	}
	switch {
	case f.mustTrip && !sr.Tripped:
		fail("the breaker did not open during the fault")
	case f.mustNotTrip && sr.Tripped:
		fail("the breaker opened during a fault that must not open it (%s)", f.description)
	}
	if sr.Tripped {
		tripBound := 2*cfg.PrimaryTimeout + time.Second
		if d := tripped - faultAt; d > tripBound {
			fail("time to trip %s exceeds %s", d, tripBound)
		}
	}
	if st := r.currentState(); st != fallback.Closed {
		fail("the breaker is %s %s after the fault was healed", st, cfg.RecoverWithin)
	} else if sr.Tripped && closed > 0 && closed-healAt > cfg.RecoverWithin {
		fail("time to recover %s exceeds %s", closed-healAt, cfg.RecoverWithin)
	}

	var stats fallback.Stats
	r.withApp(func(a *app) {
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		a.layer.Flush(fctx)
		stats = a.layer.Stats()
	})
	sr.Warm = WarmSummary{Runs: stats.WarmRuns, DurationMs: ms(stats.LastWarm.Duration), Refreshed: stats.LastWarm.Refreshed,
		Removed: stats.LastWarm.Removed, Err: stats.LastWarm.Err}
	sr.Writes = r.checkWrites(ctx, acked, failed, unknown, fail)
	r.checkCache(ctx, fail)
	if r.name == ScenarioBrownout {
		sr.Brownout = r.checkBrownout(samples, faultAt, healAt, stats, fail)
	}
	if r.name == ScenarioReadOnly || r.name == ScenarioCommitStall {
		r.checkWritesRefused(samples, faultAt, healAt, stats, fail)
	}
}

// checkWritesRefused holds the read-only and commit-stall scenarios to
// their bounds beyond the common ones (no failed read, none reported
// failed present, no trip): every read during the fault came from
// PostgreSQL, which answered reads; the fault took effect (read-only:
// writes refused and counted read_only; commit-stall: timeouts not
// counted as an outage, then writes held); and the layer saw its end (a
// write applied or a commit probe after the heal).
func (r *scenarioRun) checkWritesRefused(samples []sample, faultAt, healAt time.Duration, stats fallback.Stats, fail func(string, ...any)) {
	var fromCache, refused int
	var example string
	for _, s := range samples {
		if s.at < faultAt || s.at >= healAt {
			continue
		}
		switch {
		case s.write && s.outcome == unavailableOutcome:
			refused++
		case !s.write && s.outcome == okOutcome && s.source != fallback.SourcePrimary:
			fromCache++
			if example == "" {
				example = fmt.Sprintf("at %s: source %s, age %s", s.at.Round(time.Millisecond), s.source, s.age)
			}
		}
	}
	if fromCache > 0 {
		fail("%s: %d reads during the fault were not answered by PostgreSQL, which answered reads; first %s", r.name, fromCache, example)
	}
	switch r.name {
	case ScenarioReadOnly:
		if refused == 0 || stats.PrimaryFailures[fallback.FailReadOnly] == 0 {
			fail("read-only: the fault did not take effect: %d writes refused during it, %d counted read_only", refused, stats.PrimaryFailures[fallback.FailReadOnly])
		}
		if !stats.ReadOnlySince.IsZero() {
			fail("read-only: Stats.ReadOnlySince is %s after the heal: no write applied since", stats.ReadOnlySince.Format(time.RFC3339Nano))
		}
	case ScenarioCommitStall:
		if refused == 0 || stats.StalledTimeouts == 0 || stats.WritesHeld == 0 {
			fail("commit-stall: the fault did not take effect: %d writes reported not written during it, %d stalled timeouts, %d writes held",
				refused, stats.StalledTimeouts, stats.WritesHeld)
		}
		if !stats.WritesStalledSince.IsZero() {
			fail("commit-stall: Stats.WritesStalledSince is %s after the heal: no commit went through since", stats.WritesStalledSince.Format(time.RFC3339Nano))
		}
	}
}

// brownoutReadSlack is how much longer than SoftTimeout a read of a cached
// key may take during a brownout (p99): the cache read and scheduling.
const brownoutReadSlack = 30 * time.Millisecond

// checkBrownout holds the brownout scenario to its bounds: reads of cached
// keys answered within SoftTimeout (p99), soft-timeout answers from the
// cache only, a trip on slow calls, and no more background calls than
// allowed.
func (r *scenarioRun) checkBrownout(samples []sample, faultAt, healAt time.Duration, stats fallback.Stats, fail func(string, ...any)) *BrownoutSummary {
	soft := brownoutSoftTimeout(r.cfg)
	b := &BrownoutSummary{
		LatencyMs: ms(brownoutLatency(r.cfg)), SoftTimeoutMs: ms(soft), SlowCallDurationMs: ms(r.cfg.PrimaryTimeout / 2),
		WindowMs: ms(brownoutWindow), ReadBoundMs: ms(soft + brownoutReadSlack),
		ServedSlow: stats.ServedSlow, SlowCalls: stats.SlowCalls, AbandonedPk: stats.AbandonedPeak,
		MaxAbandoned: brownoutMaxAbandoned, TripCause: stats.LastTripCause, Failures: map[string]uint64{},
	}
	r.withApp(func(a *app) {
		b.PoolConns = a.store.Pool().Config().MaxConns
		b.PoolReopened = a.store.Pool().Stat().NewConnsCount() - int64(b.PoolConns)
	})
	for k, n := range stats.PrimaryFailures {
		if k != fallback.FailBreakerOpen && n > 0 {
			b.Failures[string(k)] = n
		}
	}
	var lat []time.Duration
	var mislabelled int
	var example string
	for _, s := range samples {
		if s.write {
			continue
		}
		if s.slow {
			b.SlowReads++
			// An answer given early is the cached row, with its age.
			if s.outcome != okOutcome || s.source != fallback.SourceCache || s.age <= 0 {
				mislabelled++
				if example == "" {
					example = fmt.Sprintf("at %s: source %s, age %s, err %v", s.at.Round(time.Millisecond), s.source, s.age, s.err)
				}
			}
		}
		if s.at >= faultAt && s.at < healAt {
			lat = append(lat, s.latency)
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReadP99Ms = ms(lat[min(len(lat)-1, len(lat)*99/100)])
		b.ReadMaxMs = ms(lat[len(lat)-1])
	}
	if p99 := msDur(b.ReadP99Ms); len(lat) == 0 || p99 > soft+brownoutReadSlack {
		fail("brownout: read p99 during the fault %s (%d reads) exceeds SoftTimeout + %s (%s)", p99, len(lat), brownoutReadSlack, soft+brownoutReadSlack)
	}
	if mislabelled > 0 {
		fail("brownout: %d soft-timeout answers were not cached rows labelled with their age; first %s", mislabelled, example)
	}
	if b.SlowReads == 0 || stats.ServedSlow == 0 {
		fail("brownout: no read was answered at the soft timeout (%d samples, Stats.ServedSlow %d)", b.SlowReads, stats.ServedSlow)
	}
	if stats.LastTripCause != fallback.TripSlowCalls {
		fail("brownout: the breaker last opened on %q, want %q", stats.LastTripCause, fallback.TripSlowCalls)
	}
	if stats.AbandonedPeak > brownoutMaxAbandoned {
		fail("brownout: %d background calls at once, above MaxAbandonedCalls %d", stats.AbandonedPeak, brownoutMaxAbandoned)
	}
	return b
}

// checkWrites compares what writers were told with what PostgreSQL holds.
func (r *scenarioRun) checkWrites(ctx context.Context, acked, failed, unknown []string, fail func(string, ...any)) WriteCheck {
	wc := WriteCheck{Acknowledged: len(acked), ReportedFailed: len(failed), Unknown: len(unknown)}
	conn, err := dsn.Connect(ctx, r.e.directDSN)
	if err != nil {
		fail("connect to verify writes: %v", err)
		return wc
	}
	defer conn.Close(ctx)
	present := map[string]bool{}
	rows, _ := conn.Query(ctx, `SELECT name FROM vendors WHERE name LIKE $1 || '-w%'`, r.tag)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		fail("verify writes: %v", err)
		return wc
	}
	for _, n := range names {
		present[n] = true
	}
	for _, n := range acked {
		if !present[n] {
			wc.MissingAcknowledged++
		}
	}
	for _, n := range failed {
		if present[n] {
			wc.PresentButFailed++
		}
	}
	if wc.MissingAcknowledged > 0 {
		fail("%d writes reported successful are missing from PostgreSQL", wc.MissingAcknowledged)
	}
	if wc.PresentButFailed > 0 {
		fail("%d writes reported failed (ErrUnavailable) are present in PostgreSQL", wc.PresentButFailed)
	}
	return wc
}

// checkCache compares the cached seeded vendors with PostgreSQL after
// recovery and warming.
func (r *scenarioRun) checkCache(ctx context.Context, fail func(string, ...any)) {
	conn, err := dsn.Connect(ctx, r.e.directDSN)
	if err != nil {
		fail("connect to verify the cache: %v", err)
		return
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT name, version FROM vendors WHERE name = ANY($1)`, r.keys)
	truth := map[string]int64{}
	var name string
	var version int64
	_, err = pgx.ForEachRow(rows, []any{&name, &version}, func() error { truth[name] = version; return nil })
	if err != nil {
		fail("verify the cache: %v", err)
		return
	}
	var differ int
	var example string
	r.withApp(func(a *app) {
		for _, k := range r.keys {
			v, _, err := a.cache.GetVendor(ctx, k)
			if err != nil {
				continue // absent is consistent: the next read fills it
			}
			if want, ok := truth[k]; !ok || want != v.Version {
				differ++
				if example == "" {
					example = fmt.Sprintf("%s: cached version %d, PostgreSQL %d", k, v.Version, want)
				}
			}
		}
	})
	if differ > 0 {
		fail("cache inconsistent with PostgreSQL after recovery: %d entries differ (%s)", differ, example)
	}
}
