package drill

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/repository"
)

// FeedSummary reports the change feed of a scenario with several
// instances: how far behind the observed instance was, and what it did.
type FeedSummary struct {
	Instances      int     `json:"instances"`
	LagAtFaultMs   float64 `json:"lag_at_fault_ms"` // how old the observed instance's AsOf was when its outage began
	CaughtUpMs     float64 `json:"caught_up_ms"`    // feed-cut: from healing the listener to the cache holding every change; -1: never
	ChangesApplied uint64  `json:"changes_applied"` // by the observed instance
	CatchUps       uint64  `json:"catch_ups"`       // reads of the log until caught up
	Resyncs        uint64  `json:"resyncs"`         // full warms (1: the first start)
	Checked        int     `json:"checked"`         // keys checked against their latest version
	SkippedRecent  int     `json:"skipped_recent"`  // keys changed within the last second before the outage: not checked
	DeletedChecked int     `json:"deleted_checked"` // deleted vendors checked not to be served
}

// truth is what the peers wrote: every key's latest version and when it
// was acknowledged, or that it was deleted.
type truth struct {
	mu   sync.Mutex
	keys map[string]fact
}

type fact struct {
	version int64
	at      time.Time
	deleted bool
}

func (t *truth) set(key string, f fact) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.keys[key]; ok && (cur.deleted || cur.version > f.version) && !f.deleted {
		return
	}
	t.keys[key] = f
}

func (t *truth) snapshot() map[string]fact {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]fact, len(t.keys))
	for k, v := range t.keys {
		out[k] = v
	}
	return out
}

// peer is one instance of a multi-instance scenario, with its own proxy.
type peer struct {
	proxy *chaos.Proxy
	app   *app
}

// openPeer opens an instance behind a proxy of its own (or the
// environment's, when proxy is nil).
func openPeer(ctx context.Context, e *env, cfg Config, name, tag string, own bool, lcfg fallback.Config) (*peer, error) {
	p := &peer{proxy: e.proxy}
	target := e.proxiedDSN
	if own {
		var err error
		if p.proxy, target, err = ownProxy(ctx, e, tag+"-"+name); err != nil {
			return nil, err
		}
	}
	a, err := openApp(ctx, target, e.cachePath(tag+"-"+name), lcfg)
	if err != nil {
		if own {
			p.proxy.Delete()
		}
		return nil, err
	}
	p.app = a
	return p, nil
}

// ownProxy makes a proxy of the drill's Toxiproxy in front of the
// database, for one instance or connection, and the DSN through it.
func ownProxy(ctx context.Context, e *env, name string) (*chaos.Proxy, string, error) {
	upstream, err := chaos.DSNHostPort(e.directDSN)
	if err != nil {
		return nil, "", err
	}
	proxy, err := e.tp.Proxy(ctx, "pgfallback-drill-"+name, upstream)
	if err != nil {
		return nil, "", err
	}
	target, err := proxy.DSN(e.directDSN)
	if err != nil {
		proxy.Delete()
		return nil, "", err
	}
	return proxy, target, nil
}

// settleScenario ends a scenario with several instances, after they are
// closed: it removes the rows it created, checks that no goroutine was
// left behind, and decides the verdict.
func settleScenario(ctx context.Context, e *env, tag string, goroutinesBefore int, sr *ScenarioReport) {
	if err := removeRows(context.WithoutCancel(ctx), e.directDSN, tag); err != nil {
		sr.violate("remove the drill's rows: %v", err)
	}
	if n, ok := goroutinesSettle(goroutinesBefore, 5*time.Second); !ok {
		sr.violate("goroutine leak: %d goroutines after closing the instances, %d before", n, goroutinesBefore)
	}
	sr.Passed = len(sr.Violations) == 0
}

func (p *peer) close(own bool) error {
	err := p.app.close()
	if own {
		err = errors.Join(err, p.proxy.Delete())
	}
	return err
}

// runPeers: three instances, each with its own proxy and cache file. Two
// of them (and plain SQL) change rows while the third loses PostgreSQL.
// Every key changed more than a second before its outage began must be
// served by it at its latest version, and no deleted vendor as live.
func runPeers(ctx context.Context, cfg Config, e *env, tag string) (sr ScenarioReport) {
	sr = ScenarioReport{Name: ScenarioPeers, TimeToTripMs: -1, TimeToRecoverMs: -1,
		Description: "three instances with their own caches; two (and plain SQL) write while the third loses PostgreSQL: it serves every change older than 1 s, and no deleted vendor"}
	fail := sr.violate
	if e.tp == nil || !e.tp.InProcess() {
		sr.Skipped, sr.Passed = "needs the in-process Toxiproxy for a proxy per instance", true
		return sr
	}
	goroutinesBefore := runtime.NumGoroutine()
	start := time.Now()
	lcfg := fallback.Config{PrimaryTimeout: cfg.PrimaryTimeout, OpenTimeout: cfg.OpenTimeout, ProbeTimeout: cfg.PrimaryTimeout,
		Logger: cfg.Logger, ChangeFeedPoll: time.Second}
	var peers []*peer
	defer func() {
		for i, p := range peers {
			if err := p.close(i > 0); err != nil {
				fail("close instance %d: %v", i, err)
			}
		}
		settleScenario(ctx, e, tag, goroutinesBefore, &sr)
	}()
	for i, name := range []string{"a", "b", "c"} {
		p, err := openPeer(ctx, e, cfg, name, tag, i > 0, lcfg)
		if err != nil {
			fail("open instance %s: %v", name, err)
			return sr
		}
		peers = append(peers, p)
	}
	a, writers := peers[0], peers[1:]

	// Seed through B's store; A caches everything (seedVendors: set-up is
	// not measured).
	n := min(cfg.Seed, 200)
	vs := make([]repository.Vendor, n)
	for i := range vs {
		vs[i] = repository.Vendor{Name: fmt.Sprintf("%s-p%03d", tag, i), Status: repository.VendorOperational, CreatedBy: "pgfallback drill"}
	}
	seeded, err := seedVendors(ctx, writers[0].app.store, vs, a.app.cache, writers[0].app.cache)
	if err != nil {
		fail("seed: %v", err)
		return sr
	}
	keys := make([]string, n)
	facts := &truth{keys: map[string]fact{}}
	for i, v := range seeded {
		keys[i] = v.Name
		facts.set(v.Name, fact{version: v.Version, at: time.Now()})
	}
	if err := waitFor(ctx, 10*time.Second, func() bool {
		return a.app.layer.Stats().Feed.State == fallback.FeedFollowing
	}); err != nil {
		fail("instance a's change feed never caught up: %v (state %v)", err, a.app.layer.Stats().Feed.State)
		return sr
	}

	// Deletions: through an instance, and in plain SQL.
	for _, k := range keys[:4] {
		if err := writers[0].app.layer.Vendors().Delete(ctx, k); err != nil {
			fail("instance b deletes %s: %v", k, err)
			return sr
		}
		facts.set(k, fact{at: time.Now(), deleted: true})
	}
	if err := deleteRows(ctx, e.directDSN, keys[4:6]); err != nil {
		fail("delete in plain SQL: %v", err)
		return sr
	}
	for _, k := range keys[4:6] {
		facts.set(k, fact{at: time.Now(), deleted: true})
	}
	keys = keys[6:]

	// B, C and plain SQL write until told to stop.
	stop := make(chan struct{})
	var load sync.WaitGroup
	for i, w := range writers {
		load.Add(1)
		go func() { defer load.Done(); peerWriter(ctx, w, keys, facts, uint64(i+1), stop) }()
	}
	load.Add(1)
	go func() { defer load.Done(); sqlWriter(ctx, e.directDSN, keys, facts, stop) }()
	stopLoad := func() {
		if stop != nil {
			close(stop)
			load.Wait()
			stop = nil
		}
	}
	defer stopLoad()

	pause(ctx, max(cfg.Baseline, 1500*time.Millisecond))
	faultAt := time.Now()
	sr.FaultStartMs = ms(faultAt.Sub(start))
	feed := &FeedSummary{Instances: 3}
	sr.Feed = feed
	if asOf := a.app.layer.Stats().Feed.AsOf; !asOf.IsZero() {
		feed.LagAtFaultMs = ms(faultAt.Sub(asOf))
	}
	if err := a.proxy.Down(); err != nil {
		fail("cut instance a: %v", err)
		return sr
	}
	// A learns of its outage through its own calls, as a service would.
	if err := waitFor(ctx, 10*time.Second, func() bool {
		_, _ = a.app.layer.Vendors().Get(ctx, keys[0])
		return a.app.layer.State() == fallback.Open
	}); err != nil {
		fail("instance a's breaker did not open: %v", err)
		return sr
	}
	sr.Tripped, sr.TimeToTripMs = true, ms(time.Since(faultAt))
	pause(ctx, cfg.Duration/2)
	stopLoad()

	cutoff := faultAt.Add(-time.Second)
	for key, f := range facts.snapshot() {
		if f.at.After(cutoff) {
			feed.SkippedRecent++
			continue
		}
		v, err := a.app.layer.Vendors().Get(ctx, key)
		switch {
		case f.deleted:
			feed.DeletedChecked++
			if err == nil {
				fail("deleted vendor %s served as live (version %d) during the outage", key, v.Version)
			}
		case err != nil:
			feed.Checked++
			fail("%s (version %d, changed %s before the outage) not served: %v", key, f.version, faultAt.Sub(f.at).Round(time.Millisecond), err)
		default:
			feed.Checked++
			if v.Version != f.version {
				fail("%s served at version %d during the outage; version %d was acknowledged %s before it began",
					key, v.Version, f.version, faultAt.Sub(f.at).Round(time.Millisecond))
			}
		}
	}
	if feed.Checked == 0 {
		fail("no key was checked: the scenario proves nothing")
	}
	sr.FaultEndMs = ms(time.Since(start))
	if err := a.proxy.Clear(); err != nil {
		fail("heal instance a: %v", err)
	}
	healAt := time.Now()
	if err := waitFor(ctx, cfg.RecoverWithin, func() bool { return a.app.layer.State() == fallback.Closed }); err != nil {
		fail("instance a did not recover: %v", err)
	} else {
		sr.TimeToRecoverMs = ms(time.Since(healAt))
	}
	s := a.app.layer.Stats().Feed
	feed.ChangesApplied, feed.CatchUps, feed.Resyncs = s.ChangesApplied, s.CatchUps, s.Resyncs
	return sr
}

// peerWriter updates random keys through an instance, deleting a few.
func peerWriter(ctx context.Context, p *peer, keys []string, facts *truth, seed uint64, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, 11))
	pace := time.NewTicker(40 * time.Millisecond)
	defer pace.Stop()
	for {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		key := keys[rng.IntN(len(keys))]
		repo := p.app.layer.Vendors()
		v, err := repo.Get(ctx, key)
		if err != nil {
			continue // deleted, or a conflict of timing: next
		}
		if rng.IntN(25) == 0 {
			if err := repo.Delete(ctx, key); err == nil {
				facts.set(key, fact{version: v.Version, at: time.Now(), deleted: true})
			}
			continue
		}
		v.Status = []repository.VendorStatus{repository.VendorOperational, repository.VendorBroken}[rng.IntN(2)]
		if out, err := repo.Update(ctx, v); err == nil {
			facts.set(key, fact{version: out.Version, at: time.Now()})
		}
	}
}

// sqlWriter changes rows in plain SQL, as another service or psql would.
func sqlWriter(ctx context.Context, connString string, keys []string, facts *truth, stop <-chan struct{}) {
	conn, err := dsn.Connect(ctx, connString)
	if err != nil {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rng := rand.New(rand.NewPCG(99, 3))
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		key := keys[rng.IntN(len(keys))]
		var version int64
		err := conn.QueryRow(ctx, `UPDATE vendors SET version = version + 1, updated_at = now(),
			extractor_version = '9.9.' || (version + 1) WHERE name = $1 RETURNING version`, key).Scan(&version)
		if err == nil {
			facts.set(key, fact{version: version, at: time.Now()})
		}
	}
}

// deleteRows deletes vendors in plain SQL, around every instance.
func deleteRows(ctx context.Context, connString string, names []string) error {
	conn, err := dsn.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, `DELETE FROM vendors WHERE name = ANY($1)`, names)
	return err
}

// waitFor polls cond until it holds, within.
func waitFor(ctx context.Context, within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		pause(ctx, 10*time.Millisecond)
	}
	return nil
}

// runFeedCut cuts only instance A's listening connection (it listens
// through a proxy of its own) while instance B writes. A makes no call and
// does not poll, so only the listener can bring the changes: after the
// connection heals, A's cache must hold every change within 2 s.
func runFeedCut(ctx context.Context, cfg Config, e *env, tag string) (sr ScenarioReport) {
	const bound = 2 * time.Second
	sr = ScenarioReport{Name: ScenarioFeedCut, TimeToTripMs: -1, TimeToRecoverMs: -1,
		Description: "only the change feed's listening connection is cut while a peer writes; after it heals the cache catches up within 2 s, with no call of its own"}
	fail := sr.violate
	if e.tp == nil || !e.tp.InProcess() {
		sr.Skipped, sr.Passed = "needs the in-process Toxiproxy for a proxy per connection", true
		return sr
	}
	goroutinesBefore := runtime.NumGoroutine()
	start := time.Now()
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			if err := closers[i](); err != nil {
				fail("close: %v", err)
			}
		}
		settleScenario(ctx, e, tag, goroutinesBefore, &sr)
	}()
	listener, listenDSN, err := ownProxy(ctx, e, tag+"-listen")
	if err != nil {
		fail("listener proxy: %v", err)
		return sr
	}
	closers = append(closers, listener.Delete)
	lcfg := fallback.Config{PrimaryTimeout: cfg.PrimaryTimeout, OpenTimeout: cfg.OpenTimeout, ProbeTimeout: cfg.PrimaryTimeout,
		Logger: cfg.Logger, ChangeFeedPoll: time.Hour} // no poll: the listener alone
	a, err := openAppListening(ctx, e.proxiedDSN, listenDSN, e.cachePath(tag+"-a"), lcfg)
	if err != nil {
		fail("open instance a: %v", err)
		return sr
	}
	closers = append(closers, a.close)
	b, err := openPeer(ctx, e, cfg, "b", tag, true, fallback.Config{PrimaryTimeout: cfg.PrimaryTimeout, Logger: cfg.Logger})
	if err != nil {
		fail("open instance b: %v", err)
		return sr
	}
	closers = append(closers, func() error { return b.close(true) })

	n := min(cfg.Seed, 50)
	vs := make([]repository.Vendor, n)
	for i := range vs {
		vs[i] = repository.Vendor{Name: fmt.Sprintf("%s-f%03d", tag, i), Status: repository.VendorOperational, CreatedBy: "pgfallback drill"}
	}
	seeded, err := seedVendors(ctx, b.app.store, vs, a.cache, b.app.cache)
	if err != nil {
		fail("seed: %v", err)
		return sr
	}
	keys := make([]string, n)
	for i, v := range seeded {
		keys[i] = v.Name
	}
	if err := waitFor(ctx, 10*time.Second, func() bool { return a.layer.Stats().Feed.State == fallback.FeedFollowing }); err != nil {
		fail("instance a's change feed never caught up: %v", err)
		return sr
	}
	feed := &FeedSummary{Instances: 2, CaughtUpMs: -1}
	sr.Feed = feed
	before := a.layer.Stats().Feed

	sr.FaultStartMs = ms(time.Since(start))
	if err := listener.Down(); err != nil {
		fail("cut the listener: %v", err)
		return sr
	}
	latest := map[string]int64{}
	until := time.Now().Add(cfg.Duration)
	for i := 0; time.Now().Before(until); i++ {
		key := keys[i%len(keys)]
		v, err := b.app.layer.Vendors().Get(ctx, key)
		if err == nil {
			v.Status = []repository.VendorStatus{repository.VendorOperational, repository.VendorBroken}[i%2]
			if out, err := b.app.layer.Vendors().Update(ctx, v); err == nil {
				latest[key] = out.Version
			}
		}
		pause(ctx, 20*time.Millisecond)
	}
	caughtUp := func() (missing int) {
		for key, version := range latest {
			if got, _, err := a.cache.GetVendor(ctx, key); err != nil || got.Version < version {
				missing++
			}
		}
		return missing
	}
	if len(latest) == 0 {
		fail("instance b wrote nothing: the scenario proves nothing")
		return sr
	}
	if caughtUp() == 0 {
		fail("instance a had every change while its listener was cut: the cut had no effect")
	}
	sr.FaultEndMs = ms(time.Since(start))
	if err := listener.Clear(); err != nil {
		fail("heal the listener: %v", err)
		return sr
	}
	healAt := time.Now()
	if err := waitFor(ctx, 10*time.Second, func() bool { return caughtUp() == 0 }); err != nil {
		fail("instance a's cache still misses %d of %d changed keys 10 s after the listener healed", caughtUp(), len(latest))
	} else {
		took := time.Since(healAt)
		feed.CaughtUpMs = ms(took)
		if took > bound {
			fail("caught up %s after the listener healed; the bound is %s", took.Round(time.Millisecond), bound)
		}
	}
	after := a.layer.Stats().Feed
	feed.ChangesApplied, feed.CatchUps, feed.Resyncs = after.ChangesApplied-before.ChangesApplied, after.CatchUps-before.CatchUps, after.Resyncs
	feed.Checked = len(latest)
	if after.AsOf.IsZero() {
		fail("instance a's AsOf is zero after catching up")
	} else {
		feed.LagAtFaultMs = ms(time.Since(after.AsOf))
	}
	return sr
}
