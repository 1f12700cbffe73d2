package drill

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// Run runs the drill described by cfg and returns its report. The report's
// Passed is false when any bound was broken; err is reserved for a drill
// that could not run at all (no PostgreSQL, no Toxiproxy, a bad config).
// Neither shows a password.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	rep, err := run(ctx, cfg)
	// Reports are published (CI artifacts, HTML pages) and errors printed,
	// and both quote errors from pgx, which quote connection strings.
	if rep != nil {
		rep.redact()
	}
	return rep, dsn.Error(err)
}

func run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	runID := newRunID()
	e, err := setupEnv(ctx, cfg, runID)
	if err != nil {
		return nil, err
	}
	defer e.close()

	rep := &Report{
		RunID: runID, Started: time.Now().UTC(), Embedded: e.srv != nil, ServerVersion: e.version,
		Readers: cfg.Readers, Writers: cfg.Writers, PrimaryTimeoutMs: ms(cfg.PrimaryTimeout),
		OpenTimeoutMs: ms(cfg.OpenTimeout), MarginMs: ms(cfg.Margin), Passed: true,
	}
	if e.srv != nil {
		rep.ServerMode = e.srv.Mode().String()
	}
	for i, name := range cfg.Scenarios {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		sr := runScenario(ctx, cfg, e, name, fmt.Sprintf("%s-%s-%d", runID, name, i))
		rep.Scenarios = append(rep.Scenarios, sr)
		if !sr.Passed {
			rep.Passed = false
		}
	}
	rep.DurationMs = ms(time.Since(rep.Started))
	rep.annotate() // so that a caller reading the Report sees what its writers print
	return rep, nil
}

func newRunID() string {
	b := make([]byte, 3)
	crand.Read(b)
	return hex.EncodeToString(b)
}

// outcome classifies one call's result.
type outcome uint8

const (
	okOutcome outcome = iota
	unavailableOutcome
	unknownOutcome
	notFoundOutcome
	otherOutcome
)

type sample struct {
	at      time.Duration // since the scenario started
	latency time.Duration
	write   bool
	source  fallback.Source
	stale   bool
	slow    bool // answered from the cache at the soft timeout (Origin.Slow)
	age     time.Duration
	outcome outcome
	err     error
}

// scenarioRun is the state of one scenario while it runs.
type scenarioRun struct {
	cfg   Config
	e     *env
	name  string
	tag   string
	start time.Time

	appMu sync.RWMutex // readers hold it per call; a restart takes it
	app   *app

	keys []string // seeded, and cached before the fault

	mu      sync.Mutex
	samples []sample
	acked   []string // creates reported successful
	failed  []string // creates reported ErrUnavailable: must not exist
	unknown []string // creates reported ErrOutcomeUnknown: either way

	faultAt, healAt     atomic.Int64 // nanoseconds since start; 0: not yet
	trippedAt, closedAt atomic.Int64
	phase               atomic.Value // string
	ops, errs           atomic.Int64
}

func (r *scenarioRun) since() time.Duration { return time.Since(r.start) }

func (r *scenarioRun) layerConfig() fallback.Config {
	c := fallback.Config{
		PrimaryTimeout: r.cfg.PrimaryTimeout,
		OpenTimeout:    r.cfg.OpenTimeout,
		ProbeTimeout:   r.cfg.PrimaryTimeout,
		StaleIfError:   r.staleIfError(),
		Logger:         r.cfg.Logger,
		OnStateChange: func(from, to fallback.State) {
			now := int64(r.since())
			switch {
			case to == fallback.Open && from == fallback.Closed && r.faultAt.Load() != 0:
				r.trippedAt.CompareAndSwap(0, now)
			case to == fallback.Closed && r.healAt.Load() != 0:
				r.closedAt.Store(now)
			}
		},
	}
	if r.name == ScenarioBrownout {
		c.SoftTimeout = brownoutSoftTimeout(r.cfg)
		c.MaxAbandonedCalls = brownoutMaxAbandoned
		c.Window = brownoutWindow
	}
	if r.name == ScenarioReadOnly || r.name == ScenarioCommitStall {
		// A short window: the failure ratio is that of the fault's calls,
		// which the burst writers make mostly refused writes. Were a
		// refusal an outage, the breaker would open within a second.
		c.Window = readOnlyWindow
	}
	return c
}

// The read-only scenario: readOnlyBurst goroutines write back to back
// during the fault, besides the drill's paced writers, so that refused
// writes are a large share of the calls (about 40 % here) and often come
// several in a row: were a refusal an outage, the breaker would open.
const (
	readOnlyBurst  = 4
	readOnlyWindow = time.Second
)

// The brownout scenario: every round trip takes brownoutLatency, above
// SlowCallDuration (the layer's default, PrimaryTimeout/2) and below
// PrimaryTimeout, so PostgreSQL answers, slowly. Reads are answered from
// the cache at the soft timeout, and the breaker must open on slow calls.
//
// Its rolling Window is short: the slow-call rate is taken over the whole
// window, and while soft timeouts cap the calls left running at
// MaxAbandonedCalls, the primary sees tens of calls a second during the
// brownout against thousands in the healthy baseline before it. With the
// default minute-long window the breaker would open only once the
// baseline's fast calls had rolled out of it, a minute later.
const (
	brownoutMaxAbandoned = 16
	brownoutWindow       = time.Second
)

// brownoutPoolSize has room for every call the brownout can have running
// at once (the background calls, one per reader and writer, the prober's
// and warm's) and as many again for readers and writers: a call canceled
// at the soft timeout, when MaxAbandonedCalls are already running, closes
// its connection, and one opened in its place during the brownout takes
// longer than PrimaryTimeout.
func brownoutPoolSize(cfg Config) int32 {
	return int32(brownoutMaxAbandoned + 2*(cfg.Readers+cfg.Writers) + 4)
}

func brownoutSoftTimeout(cfg Config) time.Duration { return cfg.PrimaryTimeout / 10 }

// brownoutLatency is 65 % of PrimaryTimeout: a Get (one round trip) takes
// about that long, slow but in time.
func brownoutLatency(cfg Config) time.Duration { return cfg.PrimaryTimeout * 65 / 100 }

// The stale scenario runs with a short TTL and StaleIfError so the outage
// outlasts both.
const (
	staleTTL          = time.Second
	staleStaleIfError = time.Second
)

func (r *scenarioRun) staleIfError() time.Duration {
	if r.name == ScenarioStale {
		return staleStaleIfError
	}
	return 0 // the layer's default, 24 h
}

func (r *scenarioRun) openApp(ctx context.Context) (*app, error) {
	if r.name == ScenarioBrownout {
		return openAppPooled(ctx, r.e.proxiedDSN, r.e.cachePath(r.tag), r.tag, r.layerConfig(), brownoutPoolSize(r.cfg))
	}
	if r.name == ScenarioStale {
		return openApp(ctx, r.e.proxiedDSN, r.e.cachePath(r.tag), r.layerConfig(), sqlitecache.WithTTL(staleTTL))
	}
	if r.name == ScenarioCommitStall {
		// A pool with room for every caller, as docs/layer.md advises: with
		// pgxpool's default (max(4, NumCPU)) the stalled writes take every
		// connection, nothing answers for PrimaryTimeout, which looks like
		// an outage, and the breaker opens.
		return openAppSized(ctx, r.e.proxiedDSN, "", r.e.cachePath(r.tag), r.layerConfig(), int32(r.cfg.Readers+r.cfg.Writers+readOnlyBurst+4))
	}
	return openApp(ctx, r.e.proxiedDSN, r.e.cachePath(r.tag), r.layerConfig())
}

// withApp runs fn with the current application instance, never one that a
// restart is closing.
func (r *scenarioRun) withApp(fn func(*app)) {
	r.appMu.RLock()
	defer r.appMu.RUnlock()
	fn(r.app)
}

func (r *scenarioRun) record(s sample) {
	r.ops.Add(1)
	if s.outcome != okOutcome && s.outcome != notFoundOutcome {
		r.errs.Add(1)
	}
	r.mu.Lock()
	r.samples = append(r.samples, s)
	r.mu.Unlock()
}

func classify(err error) outcome {
	switch {
	case err == nil:
		return okOutcome
	case errors.Is(err, repository.ErrUnavailable):
		return unavailableOutcome
	case errors.Is(err, repository.ErrOutcomeUnknown):
		return unknownOutcome
	case errors.Is(err, repository.ErrNotFound):
		return notFoundOutcome
	}
	return otherOutcome
}

func (r *scenarioRun) reader(ctx context.Context, seed uint64, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, 7))
	pace := time.NewTicker(2 * time.Millisecond)
	defer pace.Stop()
	for {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		key := r.keys[rng.IntN(len(r.keys))]
		r.withApp(func(a *app) { _, _ = r.timedGet(ctx, a, key) })
	}
}

// timedGet reads key through a's layer and records the call as a sample.
func (r *scenarioRun) timedGet(ctx context.Context, a *app, key string) (repository.Vendor, error) {
	pctx, prov := fallback.WithProvenance(ctx)
	at := r.since()
	v, err := a.layer.Vendors().Get(pctx, key)
	o := prov.Origin()
	r.record(sample{at: at, latency: r.since() - at, source: o.Source, stale: o.Stale, slow: o.Slow, age: o.Age,
		outcome: classify(err), err: err})
	return v, err
}

func (r *scenarioRun) writer(ctx context.Context, id int, stop <-chan struct{}) {
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		r.create(ctx, id, n)
	}
}

// burstWriter creates vendors back to back until until: a write-heavy
// service.
func (r *scenarioRun) burstWriter(ctx context.Context, id int, until time.Time) {
	for n := 0; time.Now().Before(until) && ctx.Err() == nil; n++ {
		if !r.create(ctx, id, n) {
			pause(ctx, time.Millisecond) // a write failed fast: a client does not spin on it
		}
	}
}

// create makes writer id's nth vendor through the layer, and records what
// the writer was told: a sample, and the name among the acknowledged,
// failed or unknown writes that checkWrites compares with PostgreSQL. It
// reports whether the write was acknowledged.
func (r *scenarioRun) create(ctx context.Context, id, n int) (acked bool) {
	name := fmt.Sprintf("%s-w%d-%05d", r.tag, id, n)
	r.withApp(func(a *app) {
		at := r.since()
		_, err := a.layer.Vendors().Create(ctx, repository.Vendor{
			Name: name, Status: repository.VendorOperational, CreatedBy: "pgfallback drill",
			Metadata: map[string]any{"writer": id, "n": n},
		})
		o := classify(err)
		r.record(sample{at: at, latency: r.since() - at, write: true, outcome: o, err: err})
		r.mu.Lock()
		switch o {
		case okOutcome:
			r.acked = append(r.acked, name)
			acked = true
		case unavailableOutcome:
			r.failed = append(r.failed, name)
		default:
			r.unknown = append(r.unknown, name)
		}
		r.mu.Unlock()
	})
	return acked
}

// restartApp closes the application and opens it again on the same cache
// file, as a redeploy during an outage would.
func (r *scenarioRun) restartApp(ctx context.Context) error {
	r.appMu.Lock()
	defer r.appMu.Unlock()
	if err := r.app.close(); err != nil {
		return err
	}
	a, err := r.openApp(ctx)
	if err != nil {
		return err
	}
	r.app = a
	return nil
}

func goroutinesSettle(baseline int, within time.Duration) (int, bool) {
	deadline := time.Now().Add(within)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline+goroutineMargin {
			return n, true
		}
		if time.Now().After(deadline) {
			return n, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const goroutineMargin = 5
