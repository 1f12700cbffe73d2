package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// The queued scenarios: the application's writers opt in to the durable
// write queue (fallback.WithWriteQueue) and update vendors while their
// instance has lost PostgreSQL, and another instance, which has not, writes
// some of the same keys meanwhile. After the heal every queued write must
// be in PostgreSQL exactly once, or be a dead letter with its reason; none
// lost, none applied twice, none applied over a version it was not built
// on. Variants: the application restarts mid-outage (queued-restart), and
// the process replaying the queue is killed with SIGKILL mid-replay
// (queued-kill: the replay runs in a child process, see ChildMain).
//
// Every write carries a unique mark in its Metadata ("wid"), so that the
// writes the writers were told about can be matched with the queue (which
// holds each queued write's ID), with pgfallback_applied_writes (the IDs
// PostgreSQL applied) and with the dead letters. Each key's version is
// accounted for: every version step from the seed to the final row must be
// one write that was applied, built on exactly that version, and the row
// must hold the last of them.

const (
	queuedMaxKeys = 60
	// killLatency slows the child's replay (per round trip to PostgreSQL)
	// so that it is killed mid-way, not before or after.
	killLatency = 20 * time.Millisecond
	// killAfter queued writes applied by the child before the kill is sent.
	killAfter = 3
	// killWindow: how long, once killAfter were applied, the kill waits for
	// a moment when a write is committed in PostgreSQL but still in the
	// queue (the reply in flight), the case the applied-writes IDs exist
	// for. It is sent when that time is up all the same.
	killWindow = 2 * time.Second
	// behindPrefix starts the reason of a write dead-lettered because one
	// before it for the same key was rejected (sqlitecache.DeadLetter).
	behindPrefix = "behind dead-lettered write "
)

// The child process: ChildMain runs it when the environment asks for it.
const (
	childEnv        = "PGFALLBACK_DRILL_CHILD"
	childConfigEnv  = "PGFALLBACK_DRILL_CHILD_CONFIG"
	childRoleReplay = "queued-replay"
	childReady      = "pgfallback-drill-child: ready"
	childDone       = "pgfallback-drill-child: queue empty"
)

// childCapable is set by ChildMain in a process that is not a child: this
// binary runs the child role when started again with childEnv set.
var childCapable atomic.Bool

// ChildMain runs the drill's child process role when the environment asks
// for it (the queued-kill scenario starts its own binary again to replay
// the write queue in a process it can kill) and then exits; otherwise it
// returns at once. Call it first thing in main (and in TestMain of tests
// that run the drill): the queued-kill scenario is skipped in a binary
// that does not.
func ChildMain() {
	role := os.Getenv(childEnv)
	if role == "" {
		childCapable.Store(true)
		return
	}
	os.Exit(runChild(role))
}

// childConfig is what the child needs, passed in the environment (not the
// command line, which other users can read: the DSN holds a password).
type childConfig struct {
	DSN            string        `json:"dsn"`
	Cache          string        `json:"cache"`
	PrimaryTimeout time.Duration `json:"primary_timeout"`
	OpenTimeout    time.Duration `json:"open_timeout"`
}

// runChild opens the application on the cache file, which replays the
// queued writes at once, and waits until the queue is empty or its parent
// is gone (stdin closed). The parent kills it before then.
func runChild(role string) int {
	if role != childRoleReplay {
		fmt.Fprintf(os.Stderr, "pgfallback drill child: unknown role %q\n", role)
		return 2
	}
	var cc childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childConfigEnv)), &cc); err != nil {
		fmt.Fprintf(os.Stderr, "pgfallback drill child: %s: %v\n", childConfigEnv, err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel() // the parent is gone
	}()
	lcfg := fallback.Config{
		PrimaryTimeout: cc.PrimaryTimeout, OpenTimeout: cc.OpenTimeout, ProbeTimeout: cc.PrimaryTimeout,
		ReplayInterval: 100 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	a, err := openApp(ctx, cc.DSN, cc.Cache, lcfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgfallback drill child: %s\n", dsn.Redact(err.Error()))
		return 1
	}
	fmt.Fprintln(os.Stdout, childReady)
	for ctx.Err() == nil {
		if st, err := a.layer.Queue(ctx); err == nil && st.Pending == 0 {
			fmt.Fprintln(os.Stdout, childDone)
			break
		}
		pause(ctx, 20*time.Millisecond)
	}
	if err := a.close(); err != nil {
		fmt.Fprintf(os.Stderr, "pgfallback drill child: close: %s\n", dsn.Redact(err.Error()))
		return 1
	}
	return 0
}

// qkind is what a writer was told of its write.
type qkind uint8

const (
	writeQueued     qkind = iota // nil, Origin SourceQueue
	writeDirect                  // nil, Origin SourcePrimary
	writeNotWritten              // an error that says nothing was written
	writeUnknown                 // ErrOutcomeUnknown, or nil from nowhere
)

// qwrite is one update a writer made: its mark, its key, the version it
// was built on, and what it was told.
type qwrite struct {
	wid  string
	key  string
	base int64
	kind qkind
}

// queuedRun is the state of a queued scenario.
type queuedRun struct {
	*scenarioRun
	proxy     *chaos.Proxy // the application's own: the outage cuts only it
	appDSN    string
	cachePath string
	appOpen   bool // q.app is open (it stays set, closed, for the progress line)
	shared    []string
	v0        map[string]int64 // each key's version after seeding

	wmu    sync.Mutex
	writes []qwrite // the application's
	other  []qwrite // the other instance's
	odd    []string // answers that make no sense (nil from no source, a wrong version)

	cmu       sync.Mutex
	conflicts map[uuid.UUID]int // OnConflict calls by write ID

	// Counters of the in-process layers, added up as each closes.
	stats fallback.QueuedStats
}

func runQueued(ctx context.Context, cfg Config, e *env, name, tag string) (sr ScenarioReport) {
	descriptions := map[string]string{
		ScenarioQueued:        "writers queue updates while their instance has lost PostgreSQL; another instance writes some of the same keys; every queued write is applied once or dead-lettered",
		ScenarioQueuedRestart: "queued, and the application is restarted mid-outage on the same cache file: the queue survives",
		ScenarioQueuedKill:    "queued, and the process replaying the queue is killed (SIGKILL) mid-replay; a new one finishes without applying anything twice",
	}
	sr = ScenarioReport{Name: name, Description: descriptions[name], TimeToTripMs: -1, TimeToRecoverMs: -1}
	fail := sr.violate
	if e.tp == nil || !e.tp.InProcess() {
		sr.Skipped, sr.Passed = "needs the in-process Toxiproxy for a proxy per instance", true
		return sr
	}
	if name == ScenarioQueuedKill && !childCapable.Load() {
		sr.Skipped, sr.Passed = "needs a binary that calls drill.ChildMain, to replay in a process it can kill", true
		return sr
	}
	goroutinesBefore := runtime.NumGoroutine()
	q := &queuedRun{
		scenarioRun: &scenarioRun{cfg: cfg, e: e, name: name, tag: tag, start: time.Now()},
		cachePath:   e.cachePath(tag + "-app"), v0: map[string]int64{}, conflicts: map[uuid.UUID]int{},
	}
	q.phase.Store("setup")
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			if err := closers[i](); err != nil {
				fail("close: %v", err)
			}
		}
		if err := removeAppliedWrites(context.WithoutCancel(ctx), e.directDSN, tag); err != nil {
			fail("remove the drill's applied-write records: %v", err)
		}
		settleScenario(ctx, e, tag, goroutinesBefore, &sr)
	}()
	if err := e.proxy.Clear(); err != nil {
		fail("reset the proxy: %v", err)
		return sr
	}
	var err error
	if q.proxy, q.appDSN, err = ownProxy(ctx, e, tag+"-app"); err != nil {
		fail("the application's proxy: %v", err)
		return sr
	}
	closers = append(closers, q.proxy.Delete)
	if err := q.openApp(ctx); err != nil {
		fail("open the application: %v", err)
		return sr
	}
	closers = append(closers, q.closeApp)
	other, err := openApp(ctx, e.proxiedDSN, e.cachePath(tag+"-other"), fallback.Config{
		PrimaryTimeout: cfg.PrimaryTimeout, OpenTimeout: cfg.OpenTimeout, ProbeTimeout: cfg.PrimaryTimeout, Logger: cfg.Logger})
	if err != nil {
		fail("open the other instance: %v", err)
		return sr
	}
	closers = append(closers, other.close)
	if err := q.seed(ctx); err != nil {
		fail("seed: %v", err)
		return sr
	}
	qs := &QueueSummary{Keys: len(q.keys), SharedKeys: len(q.shared)}
	sr.Queue = qs

	stopProgress := q.progress()
	progressStopped := false
	defer func() {
		if !progressStopped {
			stopProgress()
		}
	}()
	otherStop, appStop := make(chan struct{}), make(chan struct{})
	var otherLoad, appLoad sync.WaitGroup
	otherLoad.Add(1)
	go func() { defer otherLoad.Done(); q.otherWriter(ctx, other, otherStop) }()
	stopOther := func() {
		if otherStop != nil {
			close(otherStop)
			otherLoad.Wait()
			otherStop = nil
		}
	}
	defer stopOther()
	for i := range max(cfg.Writers, 1) {
		appLoad.Add(1)
		go func() { defer appLoad.Done(); q.appWriter(ctx, i, appStop) }()
	}
	stopApp := func() {
		if appStop != nil {
			close(appStop)
			appLoad.Wait()
			appStop = nil
		}
	}
	defer stopApp()

	q.phase.Store("baseline")
	pause(ctx, cfg.Baseline)

	q.phase.Store("outage")
	q.faultAt.Store(int64(q.since()))
	if err := q.proxy.Down(); err != nil {
		fail("cut the application: %v", err)
		return sr
	}
	if name == ScenarioQueuedRestart {
		pause(ctx, cfg.Duration/2)
		if err := q.restartApp(ctx); err != nil {
			fail("restart the application: %v", err)
			return sr
		}
		q.withApp(func(a *app) {
			st, err := a.layer.Queue(ctx)
			if err != nil {
				fail("queue status after the restart: %v", err)
			}
			qs.PendingAfterReopen = st.Pending
		})
		if qs.PendingAfterReopen == 0 {
			fail("the queue was empty after the application restarted: the queued writes did not survive it")
		}
		pause(ctx, cfg.Duration-cfg.Duration/2)
	} else {
		pause(ctx, cfg.Duration)
	}
	stopApp()
	// What the writers were told is queued must all be in the queue now:
	// nothing replays while PostgreSQL is cut.
	var snapshot []sqlitecache.QueuedWrite
	q.withApp(func(a *app) { snapshot, err = a.cache.PendingWrites(ctx, 0) })
	if err != nil {
		fail("read the queue: %v", err)
		return sr
	}

	q.phase.Store("replay")
	q.healAt.Store(int64(q.since()))
	sr.FaultStartMs, sr.FaultEndMs = ms(time.Duration(q.faultAt.Load())), ms(time.Duration(q.healAt.Load()))
	qs.ReplayStartMs = sr.FaultEndMs
	replayWithin := max(cfg.RecoverWithin, 30*time.Second)
	if name == ScenarioQueuedKill {
		if !q.killMidReplay(ctx, snapshot, qs, fail) {
			return sr
		}
	} else if err := q.proxy.Clear(); err != nil {
		fail("heal the application's proxy: %v", err)
		return sr
	}
	if err := waitFor(ctx, replayWithin, func() bool { return q.pending(ctx) == 0 }); err != nil {
		fail("the queue still holds %d writes %s after the heal", q.pending(ctx), replayWithin)
	} else {
		qs.ReplayEndMs = ms(q.since())
	}
	if name != ScenarioQueuedKill {
		if err := waitFor(ctx, cfg.RecoverWithin, func() bool { return q.currentState() == fallback.Closed }); err != nil {
			fail("the breaker is %s %s after the heal", q.currentState(), cfg.RecoverWithin)
		}
	}
	stopOther()
	stopProgress()
	progressStopped = true
	q.phase.Store("checks")

	tripped, closed := time.Duration(q.trippedAt.Load()), time.Duration(q.closedAt.Load())
	faultAt, healAt := time.Duration(q.faultAt.Load()), time.Duration(q.healAt.Load())
	if sr.Tripped = tripped > 0; sr.Tripped {
		sr.TimeToTripMs = ms(tripped - faultAt)
		if closed > 0 {
			sr.TimeToRecoverMs = ms(closed - healAt)
		}
	} else {
		fail("the application's breaker did not open during the outage")
	}
	q.mu.Lock()
	samples := slices.Clone(q.samples)
	q.mu.Unlock()
	sr.Phases = []PhaseReport{
		phaseReport("baseline", samples, 0, faultAt),
		phaseReport("outage", samples, faultAt, healAt),
		phaseReport("replay", samples, healAt, q.since()),
	}
	sr.Timeline = timeline(samples, 1500)
	q.checkCalls(samples, fail)
	q.verify(ctx, snapshot, qs, fail)
	q.checkCache(ctx, fail)

	// The counters of the in-process layers, final once they are closed.
	if err := q.closeApp(); err != nil {
		fail("close the application: %v", err)
	}
	q.checkCounters(ctx, qs, fail)
	return sr
}

// openApp opens the application on its proxy and cache file.
func (q *queuedRun) openApp(ctx context.Context) error {
	a, err := q.newApp(ctx)
	if err != nil {
		return err
	}
	q.appMu.Lock()
	q.app, q.appOpen = a, true
	q.appMu.Unlock()
	return nil
}

func (q *queuedRun) newApp(ctx context.Context) (*app, error) {
	lcfg := q.layerConfig()
	lcfg.ReplayInterval = 200 * time.Millisecond
	lcfg.OnConflict = func(w fallback.QueuedWrite, _ error) {
		q.cmu.Lock()
		q.conflicts[w.ID]++
		q.cmu.Unlock()
	}
	return openApp(ctx, q.appDSN, q.cachePath, lcfg)
}

// closeApp closes the application, if open, and adds up its layer's
// queue counters.
func (q *queuedRun) closeApp() error {
	q.appMu.Lock()
	defer q.appMu.Unlock()
	return q.closeAppLocked()
}

func (q *queuedRun) closeAppLocked() error {
	if !q.appOpen {
		return nil
	}
	q.appOpen = false
	err := q.app.close()
	s := q.app.layer.Stats().Queued
	q.stats.Queued += s.Queued
	q.stats.Replayed += s.Replayed
	q.stats.AlreadyApplied += s.AlreadyApplied
	q.stats.DeadLettered += s.DeadLettered
	q.stats.Conflicts += s.Conflicts
	q.stats.ReplayFailures += s.ReplayFailures
	q.stats.ReplayTimedOut += s.ReplayTimedOut
	return err
}

// restartApp closes the application and opens it again on the same cache
// file, PostgreSQL still cut, as a redeploy during the outage would.
func (q *queuedRun) restartApp(ctx context.Context) error {
	// Held throughout: no writer calls the closed instance.
	q.appMu.Lock()
	defer q.appMu.Unlock()
	if err := q.closeAppLocked(); err != nil {
		return err
	}
	a, err := q.newApp(ctx)
	if err != nil {
		return err
	}
	q.app, q.appOpen = a, true
	return nil
}

// pending is the queue's pending count (-1 when it cannot be read).
func (q *queuedRun) pending(ctx context.Context) int {
	n := -1
	q.withApp(func(a *app) {
		if st, err := a.layer.Queue(ctx); err == nil {
			n = st.Pending
		}
	})
	return n
}

// seed creates the keys through the application, so that its cache holds
// them (a queued update needs the row it builds on).
func (q *queuedRun) seed(ctx context.Context) error {
	n := min(q.cfg.Seed, queuedMaxKeys)
	vs := make([]repository.Vendor, n)
	for i := range vs {
		vs[i] = repository.Vendor{
			Name: fmt.Sprintf("%s-q%03d", q.tag, i), Status: repository.VendorOperational,
			ExtractorVersion: "1.0.0", CreatedBy: "pgfallback drill", Metadata: map[string]any{"seed": i},
		}
	}
	seeded, err := seedVendors(ctx, q.app.store, vs, q.app.cache)
	if err != nil {
		return err
	}
	for _, v := range seeded {
		q.keys = append(q.keys, v.Name)
		q.v0[v.Name] = v.Version
	}
	q.shared = q.keys[:max(1, n/6)]
	return nil
}

// appWriter reads a random key and updates it with the write queue,
// marking each write, until stop.
func (q *queuedRun) appWriter(ctx context.Context, id int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(id)+1, 13))
	pace := time.NewTicker(2 * time.Millisecond)
	defer pace.Stop()
	qctx := fallback.WithWriteQueue(ctx)
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		key := q.keys[rng.IntN(len(q.keys))]
		q.withApp(func(a *app) {
			v, err := q.timedGet(qctx, a, key)
			if err != nil {
				return
			}
			w := qwrite{wid: fmt.Sprintf("a%d-%d", id, n), key: key, base: v.Version}
			v.Metadata = map[string]any{"writer": fmt.Sprintf("app-%d", id), "n": n, "wid": w.wid}
			uctx, uprov := fallback.WithProvenance(qctx)
			at := q.since()
			out, err := a.layer.Vendors().Update(uctx, v)
			o := uprov.Origin()
			q.record(sample{at: at, latency: q.since() - at, write: true, source: o.Source, outcome: classify(err), err: err})
			switch {
			case err == nil && o.Source == fallback.SourceQueue:
				w.kind = writeQueued
			case err == nil && o.Source == fallback.SourcePrimary:
				w.kind = writeDirect
			case errors.Is(err, repository.ErrOutcomeUnknown):
				w.kind = writeUnknown
			case err != nil:
				w.kind = writeNotWritten
			default:
				w.kind = writeUnknown
				q.noteOdd("update %s (%s) succeeded with no source (Origin %+v)", w.wid, key, o)
			}
			if err == nil && out.Version != v.Version+1 {
				q.noteOdd("update %s of %s built on version %d returned version %d", w.wid, key, v.Version, out.Version)
			}
			q.wmu.Lock()
			q.writes = append(q.writes, w)
			q.wmu.Unlock()
		})
	}
}

// otherWriter is the other instance: it updates the shared keys through
// its own layer, whose PostgreSQL is never cut.
func (q *queuedRun) otherWriter(ctx context.Context, o *app, stop <-chan struct{}) {
	pace := time.NewTicker(20 * time.Millisecond)
	defer pace.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		key := q.shared[n%len(q.shared)]
		v, err := o.layer.Vendors().Get(ctx, key)
		if err != nil {
			continue
		}
		w := qwrite{wid: fmt.Sprintf("o-%d", n), key: key, base: v.Version}
		v.Metadata = map[string]any{"writer": "other", "n": n, "wid": w.wid}
		out, err := o.layer.Vendors().Update(ctx, v)
		switch {
		case err == nil:
			w.kind = writeDirect
			if out.Version != v.Version+1 {
				q.noteOdd("the other instance's update %s of %s built on version %d returned version %d", w.wid, key, v.Version, out.Version)
			}
		case errors.Is(err, repository.ErrOutcomeUnknown):
			w.kind = writeUnknown
		default:
			w.kind = writeNotWritten
		}
		q.wmu.Lock()
		q.other = append(q.other, w)
		q.wmu.Unlock()
	}
}

func (q *queuedRun) noteOdd(format string, args ...any) {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.odd = append(q.odd, fmt.Sprintf(format, args...))
}

// killMidReplay replays the queue in a child process, slowly, kills it
// (SIGKILL) once it has applied some writes, preferably while one is
// committed in PostgreSQL but not yet removed from the queue, and then
// opens the application again in this process to finish the replay. The
// application must be closed. It reports false when the scenario cannot go
// on.
func (q *queuedRun) killMidReplay(ctx context.Context, snapshot []sqlitecache.QueuedWrite, qs *QueueSummary, fail func(string, ...any)) bool {
	if err := q.closeApp(); err != nil {
		fail("close the application before the replay: %v", err)
		return false
	}
	ids := make([]uuid.UUID, len(snapshot))
	for i, w := range snapshot {
		ids[i] = w.Write.ID
	}
	if len(ids) < 2*killAfter {
		fail("only %d writes queued: too few to kill a replay mid-way", len(ids))
		return false
	}
	if err := q.proxy.Clear(); err != nil {
		fail("heal the application's proxy: %v", err)
		return false
	}
	if err := q.proxy.Latency(killLatency, 0); err != nil {
		fail("slow the application's proxy: %v", err)
		return false
	}
	conn, err := dsn.Connect(ctx, q.e.directDSN)
	if err != nil {
		fail("connect to watch the replay: %v", err)
		return false
	}
	defer conn.Close(context.WithoutCancel(ctx))
	appliedIDs := func() (map[uuid.UUID]bool, error) {
		rows, _ := conn.Query(ctx, `SELECT id FROM pgfallback_applied_writes WHERE id = ANY($1)`, ids)
		got, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		out := make(map[uuid.UUID]bool, len(got))
		for _, id := range got {
			out[id] = true
		}
		return out, err
	}

	exe, err := os.Executable()
	if err != nil {
		fail("find this program to run the child: %v", err)
		return false
	}
	cc, err := json.Marshal(childConfig{DSN: q.appDSN, Cache: q.cachePath, PrimaryTimeout: q.cfg.PrimaryTimeout, OpenTimeout: q.cfg.OpenTimeout})
	if err != nil {
		fail("child config: %v", err)
		return false
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+childRoleReplay, childConfigEnv+"="+string(cc))
	var stdout, stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	stdin, err := cmd.StdinPipe() // closed: the child stops
	if err != nil {
		fail("child stdin: %v", err)
		return false
	}
	if err := cmd.Start(); err != nil {
		fail("start the child: %v", err)
		return false
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		stdin.Close()
	}()

	// A read-only look at the queue, as the child changes it.
	var ro *sqlitecache.Cache
	defer func() {
		if ro != nil {
			ro.Close()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	var windowFrom time.Time
	for {
		select {
		case <-exited:
			fail("the child exited before it was killed (%v): %s%s", exitErr, stdout.String(), stderr.String())
			return false
		default:
		}
		if time.Now().After(deadline) {
			fail("the child applied fewer than %d queued writes in 30 s: %s", killAfter, stderr.String())
			return false
		}
		// PostgreSQL first, then the queue: a write counted applied here
		// and not done in the queue read after is committed and not
		// removed from the queue at the moment of that read.
		applied, err := appliedIDs()
		if err != nil {
			fail("watch the replay: %v", err)
			return false
		}
		if len(applied) >= killAfter {
			if ro == nil {
				if ro, err = sqlitecache.OpenReadOnly(q.cachePath); err != nil {
					fail("open the queue read-only: %v", err)
					return false
				}
			}
			if windowFrom.IsZero() {
				windowFrom = time.Now()
			}
			st, err := ro.QueueStats(ctx)
			if err != nil {
				fail("watch the queue: %v", err)
				return false
			}
			done := len(ids) - st.Pending - st.DeadLetters // applied and removed from the queue
			if len(applied) > done || time.Since(windowFrom) > killWindow {
				break
			}
		}
		pause(ctx, 2*time.Millisecond)
	}
	killAt := q.since()
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		fail("kill the child: %v", err)
		return false
	}
	<-exited
	qs.KillAtMs = ms(killAt)
	var ws syscall.WaitStatus
	if cmd.ProcessState != nil {
		ws, _ = cmd.ProcessState.Sys().(syscall.WaitStatus)
	}
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		fail("the child was not killed by SIGKILL: %v (%s)", exitErr, stderr.String())
	}

	// The state the kill left: what PostgreSQL applied, what the queue
	// still holds. A write in both was in flight; the next replay must
	// find it applied and not apply it again.
	applied, err := appliedIDs()
	if err != nil {
		fail("read what the child applied: %v", err)
		return false
	}
	still, err := ro.PendingWrites(ctx, 0)
	if err != nil {
		fail("read the queue after the kill: %v", err)
		return false
	}
	ro.Close()
	ro = nil
	qs.ReplayedBeforeKill = len(applied)
	for _, w := range still {
		if applied[w.Write.ID] {
			qs.InFlightAtKill++
		}
	}
	if len(still) == 0 {
		fail("the child had replayed the whole queue when it was killed: the kill was not mid-replay")
	}

	if err := q.proxy.Clear(); err != nil {
		fail("heal the application's proxy: %v", err)
		return false
	}
	if err := q.openApp(ctx); err != nil {
		fail("open the application again after the kill: %v", err)
		return false
	}
	qs.PendingAfterReopen = max(q.pending(ctx), 0)
	if qs.PendingAfterReopen == 0 {
		fail("the queue was empty when the application opened it again after the kill")
	}
	return true
}

// limitedBuffer keeps the first 64 KiB written to it, for a child's output.
type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 64<<10 - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return dsn.Redact(strings.TrimSpace(string(b.buf)))
}

// checkCalls: the application's reads of its cached keys never failed,
// and no call was held past PrimaryTimeout plus the margin.
func (q *queuedRun) checkCalls(samples []sample, fail func(string, ...any)) {
	bound := q.cfg.PrimaryTimeout + q.cfg.Margin
	var badReads, slow int
	var firstBad string
	for _, s := range samples {
		if s.latency > bound {
			slow++
		}
		if !s.write && s.outcome != okOutcome {
			badReads++
			if firstBad == "" {
				firstBad = fmt.Sprintf("at %s: %v", s.at.Round(time.Millisecond), s.err)
			}
		}
	}
	if badReads > 0 {
		fail("%d reads of cached keys failed; first %s", badReads, firstBad)
	}
	if slow > 0 {
		fail("%d calls took longer than PrimaryTimeout + margin (%s)", slow, bound)
	}
}

// verify checks the bounds: every queued write is in the queue when the
// outage ends, and then in PostgreSQL exactly once or a dead letter with
// its reason; PostgreSQL holds no queued write nobody made; every key's
// versions add up to the writes applied to it, each on the version it was
// built on, and its row is the last of them.
func (q *queuedRun) verify(ctx context.Context, snapshot []sqlitecache.QueuedWrite, qs *QueueSummary, fail func(string, ...any)) {
	q.wmu.Lock()
	writes, other, odd := slices.Clone(q.writes), slices.Clone(q.other), slices.Clone(q.odd)
	q.wmu.Unlock()
	for _, o := range odd {
		fail("%s", o)
	}
	queued := map[string]qwrite{}
	for _, w := range writes {
		switch w.kind {
		case writeQueued:
			qs.Queued++
			queued[w.wid] = w
		case writeDirect:
			qs.Direct++
		case writeNotWritten:
			qs.NotWritten++
		case writeUnknown:
			qs.Unknown++
		}
	}
	for _, w := range other {
		if w.kind == writeDirect {
			qs.OtherWrites++
		}
	}

	// The queue when the outage ended against what the writers were told.
	inQueue := map[string]sqlitecache.QueuedWrite{}
	for _, s := range snapshot {
		wid, _ := s.Write.Vendor.Metadata["wid"].(string)
		w, ok := queued[wid]
		switch {
		case s.Write.Entity != repository.EntityVendor || s.Write.Op != repository.WriteUpdate:
			fail("the queue holds a %s %s nobody made (write %s)", s.Write.Op, s.Write.Entity, s.Write.ID)
		case !ok:
			fail("the queue holds write %s (%q, mark %q) that no writer was told was queued", s.Write.ID, s.Write.Key(), wid)
		case inQueue[wid].Write.ID != uuid.Nil:
			fail("write %s is in the queue twice (%s and %s)", wid, inQueue[wid].Write.ID, s.Write.ID)
		case s.Write.Key() != w.key || s.Write.BaseVersion != w.base:
			fail("queued write %s is %q on version %d in the queue, but was %q on version %d", wid, s.Write.Key(), s.Write.BaseVersion, w.key, w.base)
		}
		inQueue[wid] = s
	}
	lost := 0
	for wid := range queued {
		if _, ok := inQueue[wid]; !ok {
			lost++
			if lost == 1 {
				fail("queued write %s is not in the queue when the outage ends", wid)
			}
		}
	}
	if lost > 1 {
		fail("%d queued writes in all are missing from the queue: lost", lost)
	}

	conn, err := dsn.Connect(ctx, q.e.directDSN)
	if err != nil {
		fail("connect to verify the queue: %v", err)
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	applied := map[uuid.UUID]string{} // write ID → key
	var id uuid.UUID
	var key string
	rows, _ := conn.Query(ctx, `SELECT id, key FROM pgfallback_applied_writes WHERE key LIKE $1 || '-%'`, q.tag)
	if _, err := pgx.ForEachRow(rows, []any{&id, &key}, func() error { applied[id] = key; return nil }); err != nil {
		fail("read the applied writes: %v", err)
		return
	}
	var dead []fallback.QueuedWrite
	q.withApp(func(a *app) { dead, err = a.layer.DeadLetters(ctx) })
	if err != nil {
		fail("read the dead letters: %v", err)
		return
	}
	deadByID := map[uuid.UUID]fallback.QueuedWrite{}
	for _, d := range dead {
		deadByID[d.ID] = d
	}
	qs.DeadLetters = len(dead)

	// Each queued write: applied once, or a dead letter; never both, never
	// neither.
	snapIDs := map[uuid.UUID]bool{}
	var neither, both []string
	for _, s := range snapshot {
		snapIDs[s.Write.ID] = true
		k, isApplied := applied[s.Write.ID]
		_, isDead := deadByID[s.Write.ID]
		switch {
		case isApplied && isDead:
			both = append(both, s.Write.ID.String())
		case isApplied:
			qs.Replayed++
			if k != s.Write.Key() {
				fail("write %s was recorded applied to %q, not its key %q", s.Write.ID, k, s.Write.Key())
			}
		case isDead:
		default:
			neither = append(neither, s.Write.ID.String())
		}
	}
	if len(neither) > 0 {
		fail("%d queued writes are neither applied nor dead letters: lost (first %s)", len(neither), neither[0])
	}
	if len(both) > 0 {
		fail("%d queued writes are both applied in PostgreSQL and dead letters (first %s)", len(both), both[0])
	}
	for id, k := range applied {
		if !snapIDs[id] {
			fail("PostgreSQL applied write %s to %q, which was not in the queue", id, k)
		}
	}
	if qs.Replayed+qs.DeadLetters != qs.Queued {
		fail("%d writes queued, but %d replayed and %d dead letters", qs.Queued, qs.Replayed, qs.DeadLetters)
	}

	// Each dead letter: its reason, and for the first of a key, a row that
	// had really moved on.
	for _, d := range dead {
		switch {
		case !snapIDs[d.ID]:
			fail("dead letter %s (%q) was never queued", d.ID, d.Key)
		case d.Err == "":
			fail("dead letter %s (%q) has no reason", d.ID, d.Key)
		case strings.HasPrefix(d.Err, behindPrefix):
		case d.CurrentVendor != nil && d.CurrentVendor.Version > d.BaseVersion:
			qs.Conflicts++
			if qs.ExampleDeadLetter == "" {
				qs.ExampleDeadLetter = d.Err
			}
		case d.CurrentVendor != nil:
			fail("dead letter %s (%q, built on version %d) was rejected while PostgreSQL held version %d: %s",
				d.ID, d.Key, d.BaseVersion, d.CurrentVendor.Version, d.Err)
		default:
			fail("dead letter %s (%q) was rejected for another reason than a newer version: %s", d.ID, d.Key, d.Err)
		}
	}

	// The versions of each key.
	chain := map[string][]versionWrite{}
	for _, w := range writes {
		switch w.kind {
		case writeDirect:
			chain[w.key] = append(chain[w.key], versionWrite{wid: w.wid, base: w.base, sure: true})
		case writeUnknown:
			chain[w.key] = append(chain[w.key], versionWrite{wid: w.wid, base: w.base})
		}
	}
	for _, s := range snapshot {
		if _, ok := applied[s.Write.ID]; ok {
			wid, _ := s.Write.Vendor.Metadata["wid"].(string)
			chain[s.Write.Key()] = append(chain[s.Write.Key()], versionWrite{wid: wid, base: s.Write.BaseVersion, sure: true})
		}
	}
	for _, w := range other {
		switch w.kind {
		case writeDirect:
			chain[w.key] = append(chain[w.key], versionWrite{wid: w.wid, base: w.base, sure: true})
		case writeUnknown:
			chain[w.key] = append(chain[w.key], versionWrite{wid: w.wid, base: w.base})
		}
	}
	var version int64
	var wid string
	final := map[string]bool{}
	rows, _ = conn.Query(ctx, `SELECT name, version, coalesce(metadata->>'wid', '') FROM vendors WHERE name = ANY($1)`, q.keys)
	_, err = pgx.ForEachRow(rows, []any{&key, &version, &wid}, func() error {
		final[key] = true
		for _, v := range checkChain(key, q.v0[key], version, wid, chain[key]) {
			fail("%s", v)
		}
		return nil
	})
	if err != nil {
		fail("read the final rows: %v", err)
		return
	}
	if len(final) != len(q.keys) {
		fail("%d of %d keys are gone from PostgreSQL; nothing deleted them", len(q.keys)-len(final), len(q.keys))
	}
}

// versionWrite is a write that changed, or may have changed, a key.
type versionWrite struct {
	wid  string
	base int64
	sure bool // reported applied; otherwise its outcome is unknown
}

// checkChain accounts for a key's versions: from v0 to final, each step is
// exactly one write built on the version before it, applied (sure) or of
// unknown outcome; no two applied writes share a base (one would have
// landed over a newer version), none is outside the range, and the row
// holds the last one (finalWid).
func checkChain(key string, v0, final int64, finalWid string, writes []versionWrite) []string {
	var out []string
	if final < v0 {
		return []string{fmt.Sprintf("%s: PostgreSQL holds version %d, older than the seeded %d", key, final, v0)}
	}
	step := map[int64]versionWrite{}
	maybe := map[int64][]versionWrite{}
	for _, w := range writes {
		if !w.sure {
			maybe[w.base] = append(maybe[w.base], w)
			continue
		}
		if prev, dup := step[w.base]; dup {
			out = append(out, fmt.Sprintf("%s: writes %s and %s were both applied on version %d: one landed over a newer version", key, prev.wid, w.wid, w.base))
			continue
		}
		if w.base < v0 || w.base >= final {
			out = append(out, fmt.Sprintf("%s: write %s was applied on version %d, but the key went from version %d to %d", key, w.wid, w.base, v0, final))
			continue
		}
		step[w.base] = w
	}
	missing := 0
	for v := v0; v < final; v++ {
		if _, ok := step[v]; ok {
			continue
		}
		if m := maybe[v]; len(m) > 0 {
			// Of several writes of unknown outcome on one version (two
			// writers timed out on the same row), the one that landed
			// is not known; for the last step the row says which.
			pick := 0
			for i, w := range m {
				if v == final-1 && w.wid == finalWid {
					pick = i
				}
			}
			step[v] = m[pick]
			continue
		}
		missing++
	}
	if missing > 0 {
		out = append(out, fmt.Sprintf("%s: its version went from %d to %d, %d steps more than the writes applied to it: one applied twice, or one reported failed applied",
			key, v0, final, missing))
	}
	if final > v0 {
		if last, ok := step[final-1]; ok && last.wid != finalWid {
			told := "reported applied"
			if !last.sure {
				told = "of unknown outcome"
			}
			out = append(out, fmt.Sprintf("%s: the row holds write %q, but the last write applied (on version %d) is %q (%s)", key, finalWid, final-1, last.wid, told))
		}
	} else if finalWid != "" {
		out = append(out, fmt.Sprintf("%s: the row holds write %q at the seeded version %d", key, finalWid, v0))
	}
	return out
}

// checkCache: once the other instance has stopped, the application's
// cache converges to PostgreSQL: no entry pending, none at another version.
func (q *queuedRun) checkCache(ctx context.Context, fail func(string, ...any)) {
	conn, err := dsn.Connect(ctx, q.e.directDSN)
	if err != nil {
		fail("connect to verify the cache: %v", err)
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	truth := map[string]int64{}
	var name string
	var version int64
	rows, _ := conn.Query(ctx, `SELECT name, version FROM vendors WHERE name = ANY($1)`, q.keys)
	if _, err := pgx.ForEachRow(rows, []any{&name, &version}, func() error { truth[name] = version; return nil }); err != nil {
		fail("verify the cache: %v", err)
		return
	}
	var example string
	differ := func() (n int) {
		q.withApp(func(a *app) {
			for _, k := range q.keys {
				v, e, err := a.cache.GetVendor(ctx, k)
				if !e.Pending && (err != nil || v.Version == truth[k]) {
					continue // absent is consistent too: the next read fills it
				}
				n++
				example = fmt.Sprintf("%s: cached version %d (pending %v), PostgreSQL %d", k, v.Version, e.Pending, truth[k])
			}
		})
		return n
	}
	if err := waitFor(ctx, 10*time.Second, func() bool { return differ() == 0 }); err != nil {
		// The breaker's state too: while it is not closed the follower
		// leaves catching up to the recovery, by design.
		var st fallback.Stats
		q.withApp(func(a *app) { st = a.layer.Stats() })
		fail("the cache still differs from PostgreSQL 10 s after the replay: %d entries (%s); the breaker %s (last tripped %v for %q, %d transitions); the change feed: %+v",
			differ(), example, st.State, st.LastTrip.Format(time.RFC3339Nano), st.LastTripCause, st.Transitions, st.Feed)
	}
}

// checkCounters compares the in-process layers' counters with what
// PostgreSQL and the queue say. A killed process's counters are gone: the
// kill variant checks what survives it.
func (q *queuedRun) checkCounters(ctx context.Context, qs *QueueSummary, fail func(string, ...any)) {
	s := q.stats
	if int(s.Queued) != qs.Queued {
		fail("the layers counted %d writes queued; the writers were told %d", s.Queued, qs.Queued)
	}
	if q.name == ScenarioQueuedKill {
		// The process that finished the replay; the one before it was
		// killed. It must find the write in flight at the kill applied, and
		// no other but after a replay of its own that failed or outlasted
		// PrimaryTimeout (its commit landing as the deadline passed: a lost
		// reply; seen with two busy loops on the two cores).
		qs.AlreadyApplied = s.AlreadyApplied
		if int(s.AlreadyApplied) < qs.InFlightAtKill || s.AlreadyApplied > uint64(qs.InFlightAtKill)+s.ReplayFailures+s.ReplayTimedOut {
			fail("%d writes were applied in PostgreSQL but still queued when the child was killed; the replay after found %d already applied (%d replays failed, %d writes in batches that timed out)",
				qs.InFlightAtKill, s.AlreadyApplied, s.ReplayFailures, s.ReplayTimedOut)
		}
		return
	}
	qs.AlreadyApplied = s.AlreadyApplied
	if int(s.Replayed) != qs.Replayed || int(s.DeadLettered) != qs.DeadLetters || int(s.Conflicts) != qs.Conflicts {
		fail("the layers counted %d replayed, %d dead-lettered, %d conflicts; PostgreSQL and the queue say %d, %d, %d",
			s.Replayed, s.DeadLettered, s.Conflicts, qs.Replayed, qs.DeadLetters, qs.Conflicts)
	}
	if s.AlreadyApplied > s.ReplayFailures+s.ReplayTimedOut {
		fail("%d replays found their write applied before, but only %d replays failed and %d writes were in batches that timed out: no crash or lost reply explains them",
			s.AlreadyApplied, s.ReplayFailures, s.ReplayTimedOut)
	}
	q.cmu.Lock()
	defer q.cmu.Unlock()
	calls := 0
	for id, n := range q.conflicts {
		calls += n
		if n != 1 {
			fail("OnConflict was called %d times for write %s", n, id)
		}
	}
	if calls != qs.DeadLetters {
		fail("OnConflict was called %d times for %d dead letters", calls, qs.DeadLetters)
	}
}

// removeAppliedWrites deletes the records of the scenario's writes: a
// drill of a database it was pointed at leaves it as it found it.
func removeAppliedWrites(ctx context.Context, connString, tag string) error {
	conn, err := dsn.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `DELETE FROM pgfallback_applied_writes WHERE key LIKE $1 || '-%'`, tag)
	return err
}
