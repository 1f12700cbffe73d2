package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// The promote scenario: a failover to an asynchronous streaming standby
// that loses acknowledged transactions. The application reaches
// PostgreSQL through a multi-host DSN (the primary, then the standby, with
// target_session_attrs=primary); readers read cached keys, writers
// create vendors and update the cached ones. Replication is cut for the
// last part of the run, so what the primary acknowledges from then on
// never reaches the standby; the primary is killed (SIGKILL), and after a
// while without any primary the standby is promoted. It runs on a primary
// and standby pair of its own, started from local PostgreSQL binaries: the
// drill's server is never killed.
//
// Bounds: no failed read of a cached key (served from the cache while
// there is no primary); writes succeed again within promoteWriteBound of
// the promotion's request; once the load has stopped, every vendor in the
// cache file equals the new primary's row (ID, version and every field)
// within promoteConverge — a row lost to the failover must not be served
// from the cache, nor a version the new primary reached again with other
// contents.
// As in the other scenarios: no call held past PrimaryTimeout plus the
// margin, no write reported failed present on the new primary, and no
// goroutine left behind.
//
// Writes the old primary acknowledged that the new one does not have are
// counted ("lost to asynchronous replication"): the price of asynchronous
// replication, reported and not a failure. At least one write must have
// been acknowledged after the cut, or the run proves nothing.

const (
	// promoteWriteBound: from the promotion's request to a write
	// acknowledged by the new primary.
	promoteWriteBound = 5 * time.Second
	// promoteConverge: how long after the load stops the cache may take to
	// equal the new primary (the change feed's poll is 1 s).
	promoteConverge = 5 * time.Second
)

// PromoteSummary reports the promote scenario. Times are from the
// scenario's start.
type PromoteSummary struct {
	// SetupMs: starting the pair (initdb, base backup), seeding, and the
	// standby catching up, before the load begins.
	SetupMs     float64 `json:"setup_ms"`
	CutAtMs     float64 `json:"cut_at_ms"`     // replication cut (the walreceiver gone)
	KillAtMs    float64 `json:"kill_at_ms"`    // the primary killed
	PromoteAtMs float64 `json:"promote_at_ms"` // the promotion requested
	// PromoteMs: from the request until the standby was out of recovery
	// (polled every 10 ms).
	PromoteMs float64 `json:"promote_ms"`
	// FirstWriteMs: from the promotion's request to the first write the
	// new primary acknowledged; -1: none.
	FirstWriteMs   float64 `json:"first_write_ms"`
	TimelineBefore uint32  `json:"timeline_before"`
	TimelineAfter  uint32  `json:"timeline_after"`
	// Writes the old primary acknowledged after the cut, and those of all
	// its acknowledged writes that the new primary does not have.
	AckedAfterCut int `json:"acked_after_cut"` // sent after the cut, acknowledged by the old primary
	LostCreates   int `json:"lost_creates"`
	LostUpdates   int `json:"lost_updates"`
	// The cache file against the new primary once the load stopped.
	CacheChecked int    `json:"cache_checked"`
	CacheDiffer  int    `json:"cache_differ"`
	CacheExample string `json:"cache_example,omitempty"`
	// CacheMatchedMs: from the end of the load to the cache matching the
	// new primary; -1: not within promoteConverge.
	CacheMatchedMs float64 `json:"cache_matched_ms"`
	// The change feed at the end: full resyncs (1: the first start), and
	// its state and last error.
	FeedResyncs   uint64 `json:"feed_resyncs"`
	FeedState     string `json:"feed_state"`
	FeedLastError string `json:"feed_last_error,omitempty"`
}

// pwrite is a write the old or the new primary acknowledged.
type pwrite struct {
	key     string
	version int64         // the version it made
	at      time.Duration // acknowledged, since the scenario's start
	// started: when it was sent. A write sent before the cut completed
	// may have reached the standby even if its acknowledgement came after:
	// only one sent after the cut proves the cut when it is missing.
	started time.Duration
}

type promoteRun struct {
	*scenarioRun
	cutAt, killAt, promoteAt atomic.Int64  // since start; 0: not yet
	lastAck                  atomic.Int64  // the latest acknowledged write
	loadAt                   time.Duration // the load began (set before it starts)

	wmu     sync.Mutex
	creates []pwrite // acknowledged
	updates []pwrite // acknowledged
}

func runPromote(ctx context.Context, cfg Config, e *env, tag string) (sr ScenarioReport) {
	sr = ScenarioReport{Name: ScenarioPromote, TimeToTripMs: -1, TimeToRecoverMs: -1,
		Description: "an asynchronous streaming standby is promoted after replication was cut and the primary killed (SIGKILL); the application is on a multi-host DSN: cached reads never fail, writes resume within 5 s, the cache then equals the new primary; what the old primary acknowledged after the cut is lost"}
	fail := sr.violate
	if e.srv == nil {
		sr.Skipped, sr.Passed = "runs on a primary and standby of its own (local PostgreSQL binaries); not with --dsn", true
		return sr
	}
	goroutinesBefore := runtime.NumGoroutine()
	p := &promoteRun{scenarioRun: &scenarioRun{cfg: cfg, e: e, name: ScenarioPromote, tag: tag, start: time.Now()}}
	p.phase.Store("setup")
	ps := &PromoteSummary{FirstWriteMs: -1, CacheMatchedMs: -1}
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			if err := closers[i](); err != nil {
				fail("close: %v", err)
			}
		}
		if sr.Skipped == "" {
			if n, ok := goroutinesSettle(goroutinesBefore, 5*time.Second); !ok {
				fail("goroutine leak: %d goroutines after closing the application, %d before", n, goroutinesBefore)
			}
		}
		sr.Passed = len(sr.Violations) == 0
	}()

	// The pair: a local primary (never the drill's server) and its standby.
	logf := func(format string, args ...any) { cfg.Logger.Info(fmt.Sprintf(format, args...)) }
	srv, err := pgtest.StartServer(ctx, pgtest.Options{Mode: pgtest.ModeLocal, Controllable: true, Logf: logf})
	if errors.Is(err, pgtest.ErrUnavailable) {
		sr.Skipped = "needs local PostgreSQL server binaries for a primary and standby of its own: " + err.Error()
		return sr
	}
	if err != nil {
		fail("start the primary: %v", err)
		return sr
	}
	closers = append(closers, srv.Close) // the standby, and the database, with it
	primaryDSN, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		fail("create the database: %v", err)
		return sr
	}
	standby, err := srv.StartStandby(ctx)
	if errors.Is(err, pgtest.ErrNoStandby) {
		sr.Skipped = err.Error()
		return sr
	}
	if err != nil {
		fail("start the standby: %v", err)
		return sr
	}
	sr.Promote = ps
	newDSN, err := standby.DSNFor(primaryDSN)
	if err != nil {
		fail("%v", err)
		return sr
	}
	multi, err := pgtest.MultiHostDSN(primaryDSN, standby.DSN())
	if err != nil {
		fail("%v", err)
		return sr
	}
	if ps.TimelineBefore, err = pgtest.Timeline(ctx, primaryDSN); err != nil {
		fail("%v", err)
	}

	a, err := openApp(ctx, multi, e.cachePath(tag), p.layerConfig())
	if err != nil {
		fail("open the application: %v", err)
		return sr
	}
	p.app = a
	closers = append(closers, func() error { return p.app.close() })
	if err := p.seed(ctx); err != nil {
		fail("seed: %v", err)
		return sr
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = standby.Sync(sctx) // the seeded rows are on the standby
	cancel()
	if err != nil {
		fail("wait for the standby: %v", err)
		return sr
	}

	p.loadAt = p.since()
	ps.SetupMs = ms(p.loadAt)
	stopProgress := p.progress()
	stop := make(chan struct{})
	var load sync.WaitGroup
	for i := range cfg.Readers {
		load.Add(1)
		go func() { defer load.Done(); p.reader(ctx, uint64(i+1), stop) }()
	}
	for i := range cfg.Writers {
		load.Add(1)
		go func() { defer load.Done(); p.promoteWriter(ctx, i, stop) }()
	}
	loadStopped := false
	stopLoad := func() {
		if !loadStopped {
			loadStopped = true
			close(stop)
			load.Wait()
			stopProgress()
		}
	}
	defer stopLoad()

	p.phase.Store("baseline")
	pause(ctx, cfg.Baseline)

	p.phase.Store("cut")
	if err := standby.CutReplication(ctx); err != nil {
		fail("cut replication: %v", err)
		return sr
	}
	p.cutAt.Store(int64(p.since()))
	pause(ctx, cfg.Duration/2) // what the primary acknowledges now is lost

	p.phase.Store("killed")
	p.killAt.Store(int64(p.since()))
	p.faultAt.Store(p.killAt.Load()) // before: the breaker may open while Kill waits for the processes to go
	if err := srv.Kill(); err != nil {
		fail("kill the primary: %v", err)
		return sr
	}
	pause(ctx, cfg.Duration/2) // no primary: reads from the cache, writes refused

	// What the new primary will start from: the standby, still in
	// recovery, no longer fed since the cut.
	before, err := vendorVersions(ctx, newDSN)
	if err != nil {
		fail("read the standby before the promotion: %v", err)
		return sr
	}
	// Times count from the request: the standby takes writes a little
	// before Promote sees that it does.
	p.phase.Store("promote")
	t0 := time.Now()
	p.promoteAt.Store(int64(p.since()))
	p.healAt.Store(p.promoteAt.Load())
	if err := standby.Promote(ctx); err != nil {
		fail("promote the standby: %v", err)
		return sr
	}
	ps.PromoteMs = ms(time.Since(t0))
	p.phase.Store("recovery")
	promoteAt := time.Duration(p.promoteAt.Load())
	if err := waitFor(ctx, promoteWriteBound-time.Since(t0), func() bool { return time.Duration(p.lastAck.Load()) >= promoteAt }); err != nil {
		fail("no write succeeded within %s of the promotion (breaker %s)", promoteWriteBound, p.currentState())
	}
	pause(ctx, 500*time.Millisecond) // load continues on the new primary
	stopLoad()
	p.phase.Store("checks")
	loadEnd := time.Now()

	if ps.TimelineAfter, err = pgtest.Timeline(ctx, newDSN); err != nil {
		fail("%v", err)
	}
	p.checkRun(&sr, ps)
	p.checkLost(ctx, newDSN, before, &sr, ps)

	// The cache against the new primary. Whatever the write-through queue
	// holds goes to the cache first; the change feed then has
	// promoteConverge (several of its 1 s polls) to set right what the
	// failover left wrong. No CatchUp: the feed must get there by itself.
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := p.app.layer.Flush(fctx); err != nil {
		fail("flush the write-through queue: %v", err)
	}
	cancel()
	var last cacheDiff
	store, err := pgstore.Open(ctx, newDSN)
	if err != nil {
		fail("connect to the new primary: %v", err)
		return sr
	}
	defer store.Close()
	deadline := time.Now().Add(promoteConverge)
	for {
		if last = p.compareCache(ctx, store); last.err != nil || last.differ == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			err = errors.New("not converged")
			break
		}
		pause(ctx, 100*time.Millisecond)
	}
	ps.CacheChecked, ps.CacheDiffer, ps.CacheExample = last.checked, last.differ, last.example
	switch {
	case last.err != nil:
		fail("compare the cache with the new primary: %v", last.err)
	case err != nil:
		fail("%d of %d cached vendors still differ from the new primary %s after the load stopped; e.g. %s",
			last.differ, last.checked, promoteConverge, last.example)
	default:
		ps.CacheMatchedMs = ms(time.Since(loadEnd))
	}
	if last.checked == 0 && last.err == nil {
		fail("the cache held no vendor to compare: the scenario proves nothing")
	}
	s := p.app.layer.Stats()
	ps.FeedResyncs, ps.FeedState, ps.FeedLastError = s.Feed.Resyncs, s.Feed.State.String(), s.Feed.LastError
	sr.Warm = WarmSummary{Runs: s.WarmRuns, DurationMs: ms(s.LastWarm.Duration), Refreshed: s.LastWarm.Refreshed,
		Removed: s.LastWarm.Removed, Err: s.LastWarm.Err}
	return sr
}

// promoteWriter creates vendors, and updates its share of the seeded ones
// (read through the layer first, as a service would).
func (p *promoteRun) promoteWriter(ctx context.Context, id int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(id)+1, 13))
	var mine []string
	for i, k := range p.keys {
		if i%max(p.cfg.Writers, 1) == id {
			mine = append(mine, k)
		}
	}
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		p.withApp(func(a *app) {
			if n%2 == 0 || len(mine) == 0 {
				p.create(ctx, a, id, n)
			} else {
				p.update(ctx, a, mine[rng.IntN(len(mine))], id, n)
			}
		})
	}
}

func (p *promoteRun) create(ctx context.Context, a *app, id, n int) {
	name := fmt.Sprintf("%s-w%d-%05d", p.tag, id, n)
	at := p.since()
	_, err := a.layer.Vendors().Create(ctx, repository.Vendor{
		Name: name, Status: repository.VendorOperational, CreatedBy: "pgfallback drill",
		Metadata: map[string]any{"writer": id, "n": n},
	})
	p.recordWrite(at, name, 1, err, &p.creates)
}

func (p *promoteRun) update(ctx context.Context, a *app, key string, id, n int) {
	v, err := p.timedGet(ctx, a, key)
	if err != nil {
		return
	}
	v.Status = []repository.VendorStatus{repository.VendorOperational, repository.VendorBroken}[n%4/2]
	v.ExtractorVersion = fmt.Sprintf("2.%d.%d", id, n)
	v.Metadata = map[string]any{"writer": id, "n": n}
	at := p.since()
	out, err := a.layer.Vendors().Update(ctx, v)
	p.recordWrite(at, key, out.Version, err, &p.updates)
}

func (p *promoteRun) recordWrite(at time.Duration, key string, version int64, err error, acked *[]pwrite) {
	now := p.since()
	o := classify(err)
	p.record(sample{at: at, latency: now - at, write: true, outcome: o, err: err})
	p.mu.Lock()
	switch {
	case o == okOutcome:
	case acked == &p.creates && o == unavailableOutcome:
		p.failed = append(p.failed, key)
	case acked == &p.creates:
		p.unknown = append(p.unknown, key)
	}
	p.mu.Unlock()
	if o != okOutcome {
		return
	}
	p.wmu.Lock()
	*acked = append(*acked, pwrite{key: key, version: version, at: now, started: at})
	p.wmu.Unlock()
	for { // the latest acknowledgement
		last := p.lastAck.Load()
		if int64(now) <= last || p.lastAck.CompareAndSwap(last, int64(now)) {
			break
		}
	}
}

// checkRun measures the calls: phases, trip and recovery, the reads of
// cached keys, the latency bound, the first write after the promotion.
func (p *promoteRun) checkRun(sr *ScenarioReport, ps *PromoteSummary) {
	fail := sr.violate
	p.mu.Lock()
	samples := slices.Clone(p.samples)
	p.mu.Unlock()
	cutAt, killAt, promoteAt := time.Duration(p.cutAt.Load()), time.Duration(p.killAt.Load()), time.Duration(p.promoteAt.Load())
	end := p.since()
	ps.CutAtMs, ps.KillAtMs, ps.PromoteAtMs = ms(cutAt), ms(killAt), ms(promoteAt)
	sr.FaultStartMs, sr.FaultEndMs = ms(killAt), ms(promoteAt)
	sr.Phases = []PhaseReport{
		phaseReport("baseline", samples, p.loadAt, cutAt),
		phaseReport("replication cut", samples, cutAt, killAt),
		phaseReport("no primary", samples, killAt, promoteAt),
		phaseReport("new primary", samples, promoteAt, end),
	}
	sr.Timeline = timeline(samples, 1500)
	tripped, closed := time.Duration(p.trippedAt.Load()), time.Duration(p.closedAt.Load())
	if sr.Tripped = tripped > 0; sr.Tripped {
		sr.TimeToTripMs = ms(tripped - killAt)
	}
	if closed > 0 {
		sr.TimeToRecoverMs = ms(closed - promoteAt)
	}

	bound := p.cfg.PrimaryTimeout + p.cfg.Margin
	var badReads, slow int
	var firstBad, firstSlow string
	first := time.Duration(-1)
	for _, s := range samples {
		if s.latency > bound {
			slow++
			if firstSlow == "" {
				firstSlow = fmt.Sprintf("at %s: %s (%v)", s.at.Round(time.Millisecond), s.latency.Round(time.Millisecond), s.err)
			}
		}
		if s.write {
			if done := s.at + s.latency; s.outcome == okOutcome && done >= promoteAt && (first < 0 || done < first) {
				first = done
			}
			continue
		}
		if s.outcome != okOutcome {
			badReads++
			if firstBad == "" {
				firstBad = fmt.Sprintf("at %s: %v (source %s)", s.at.Round(time.Millisecond), s.err, s.source)
			}
		}
	}
	if badReads > 0 {
		fail("%d reads of cached keys failed; first %s", badReads, firstBad)
	}
	if slow > 0 {
		fail("%d calls took longer than PrimaryTimeout + margin (%s); first %s", slow, bound, firstSlow)
	}
	if first >= 0 {
		ps.FirstWriteMs = ms(first - promoteAt)
		if first-promoteAt > promoteWriteBound {
			fail("the first write succeeded %s after the promotion; the bound is %s", (first - promoteAt).Round(time.Millisecond), promoteWriteBound)
		}
	}
}

// vendorVersions reads every vendor's version on the server at connString.
func vendorVersions(ctx context.Context, connString string) (map[string]int64, error) {
	conn, err := dsn.Connect(ctx, connString)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, _ := conn.Query(ctx, `SELECT name, version FROM vendors`)
	out := map[string]int64{}
	var name string
	var version int64
	_, err = pgx.ForEachRow(rows, []any{&name, &version}, func() error { out[name] = version; return nil })
	return out, err
}

// checkLost counts the writes the old primary acknowledged that the new
// one started without (before: the standby's rows at the promotion), and
// checks that creates reported failed are nowhere.
func (p *promoteRun) checkLost(ctx context.Context, newDSN string, before map[string]int64, sr *ScenarioReport, ps *PromoteSummary) {
	fail := sr.violate
	cutAt, promoteAt := time.Duration(p.cutAt.Load()), time.Duration(p.promoteAt.Load())
	p.wmu.Lock()
	creates, updates := slices.Clone(p.creates), slices.Clone(p.updates)
	p.wmu.Unlock()
	p.mu.Lock()
	failed, unknown := slices.Clone(p.failed), slices.Clone(p.unknown)
	p.mu.Unlock()

	keptAfterCut := 0
	for _, w := range creates {
		if w.at >= promoteAt {
			continue // the new primary's
		}
		_, kept := before[w.key]
		if !kept {
			ps.LostCreates++
		}
		if w.started > cutAt {
			ps.AckedAfterCut++
			if kept {
				keptAfterCut++
			}
		}
	}
	for _, w := range updates {
		if w.at >= promoteAt {
			continue
		}
		kept := before[w.key] >= w.version
		if !kept {
			ps.LostUpdates++
		}
		if w.started > cutAt {
			ps.AckedAfterCut++
			if kept {
				keptAfterCut++
			}
		}
	}
	if ps.AckedAfterCut == 0 {
		fail("the old primary acknowledged no write after replication was cut: nothing was lost, the scenario proves nothing")
	}
	if keptAfterCut > 0 {
		fail("%d writes acknowledged after replication was cut reached the standby: replication was not cut", keptAfterCut)
	}

	nowThere, err := vendorVersions(ctx, newDSN)
	if err != nil {
		fail("read the new primary: %v", err)
		return
	}
	wc := WriteCheck{Acknowledged: len(creates), ReportedFailed: len(failed), Unknown: len(unknown)}
	for _, w := range creates {
		if _, ok := nowThere[w.key]; !ok {
			wc.MissingAcknowledged++
		}
	}
	for _, k := range failed {
		if _, ok := nowThere[k]; ok {
			wc.PresentButFailed++
		}
	}
	if wc.PresentButFailed > 0 {
		fail("%d writes reported failed (ErrUnavailable) are present on the new primary", wc.PresentButFailed)
	}
	sr.Writes = wc
}

type cacheDiff struct {
	checked, differ int
	example         string
	err             error
}

// compareCache reads every vendor in the cache file (through
// sqlitecache) and compares it with the new primary's row.
func (p *promoteRun) compareCache(ctx context.Context, store *pgstore.Store) (d cacheDiff) {
	rows, err := store.Vendors().List(ctx, repository.VendorFilter{})
	if err != nil {
		d.err = err
		return d
	}
	truth := make(map[string]repository.Vendor, len(rows))
	for _, v := range rows {
		truth[v.Name] = v
	}
	p.withApp(func(a *app) {
		names, err := a.cache.VendorNames(ctx)
		if err != nil {
			d.err = err
			return
		}
		for _, name := range names {
			cached, _, err := a.cache.GetVendor(ctx, name)
			if errors.Is(err, repository.ErrNotFound) {
				continue // evicted meanwhile
			}
			if err != nil {
				d.err = err
				return
			}
			d.checked++
			want, ok := truth[name]
			why := ""
			if !ok {
				why = fmt.Sprintf("%s: cached at version %d, absent on the new primary (lost in the failover)", name, cached.Version)
			} else if diff := vendorDiff(cached, want); diff != "" {
				why = fmt.Sprintf("%s: cached %s", name, diff)
			}
			if why != "" {
				d.differ++
				if d.example == "" {
					d.example = why
				}
			}
		}
	})
	return d
}

// vendorDiff says how a cached vendor differs from the primary's row, ""
// when it does not.
func vendorDiff(c, p repository.Vendor) string {
	var out []string
	add := func(field string, c, p any) { out = append(out, fmt.Sprintf("%s %v, new primary %v", field, c, p)) }
	if c.Version != p.Version {
		add("version", c.Version, p.Version)
	}
	if c.ID != p.ID {
		add("ID", c.ID, p.ID)
	}
	if c.Status != p.Status {
		add("status", c.Status, p.Status)
	}
	if c.ExtractorVersion != p.ExtractorVersion {
		add("extractor version", c.ExtractorVersion, p.ExtractorVersion)
	}
	if c.CreatedBy != p.CreatedBy {
		add("created by", c.CreatedBy, p.CreatedBy)
	}
	if !c.CreatedAt.Equal(p.CreatedAt) {
		add("created at", c.CreatedAt, p.CreatedAt)
	}
	if !c.UpdatedAt.Equal(p.UpdatedAt) {
		add("updated at", c.UpdatedAt, p.UpdatedAt)
	}
	cm, err1 := json.Marshal(c.Metadata) // map keys sorted: comparable bytes
	pm, err2 := json.Marshal(p.Metadata)
	if err1 != nil || err2 != nil || !bytes.Equal(cm, pm) {
		add("metadata", string(cm), string(pm))
	}
	return strings.Join(out, "; ")
}
