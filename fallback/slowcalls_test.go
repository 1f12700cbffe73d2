package fallback

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// Slow calls are SlowCallDuration (200 ms) or longer; the fake's slow
// answers take 250 ms and its fast ones microseconds, far on either side.
const (
	testSlowCall = 200 * time.Millisecond
	testSlowness = 250 * time.Millisecond
)

// slowDB is fakeDB with latency: vendor Gets and pings take getDelay and
// pingDelay before the fake answers (or until the call's context ends).
type slowDB struct {
	*fakeDB
	getDelay, pingDelay atomic.Int64
	// slowPing, if set, chooses a ping's delay by its number (from 1)
	// instead of pingDelay.
	slowPing func(n int64) bool
}

func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newSlowLayer is newTestLayer over db with its latency.
func newSlowLayer(t *testing.T, db *slowDB, cfg Config) *Layer {
	t.Helper()
	p := db.primary()
	get, ping := p.VendorRepo.GetFn, p.PingFn
	p.VendorRepo.GetFn = func(ctx context.Context, name string) (repository.Vendor, error) {
		if err := wait(ctx, time.Duration(db.getDelay.Load())); err != nil {
			return repository.Vendor{}, err
		}
		return get(ctx, name)
	}
	p.PingFn = func(ctx context.Context) error {
		d := time.Duration(db.pingDelay.Load())
		if db.slowPing != nil {
			d = 0
			if db.slowPing(db.pings.Load() + 1) {
				d = testSlowness
			}
		}
		if err := wait(ctx, d); err != nil {
			return err
		}
		return ping(ctx)
	}
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = time.Hour
	}
	if cfg.PrimaryTimeout == 0 {
		cfg.PrimaryTimeout = 5 * time.Second
	}
	if cfg.SlowCallDuration == 0 {
		cfg.SlowCallDuration = testSlowCall
	}
	l, err := New(p, cache, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		cache.Close()
	})
	return l
}

func newSlowDB() *slowDB {
	db := &slowDB{fakeDB: newFakeDB()}
	db.put(vendor("v"))
	return db
}

// gets makes n concurrent Gets of "v" and fails the test on an error.
func gets(t *testing.T, l *Layer, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.Vendors().Get(context.Background(), "v"); err != nil {
				t.Errorf("Get: %v", err)
			}
		}()
	}
	wg.Wait()
}

// Answers that take SlowCallDuration or longer, at SlowCallRate of at
// least MinRequests calls, open the breaker as failures do: reads come from
// the cache, OnStateChange is called, the trip is counted and its cause
// told (Stats, health, log).
func TestSlowCallsTripTheBreaker(t *testing.T) {
	var logs testutil.Buffer
	var changes atomic.Int32
	db := newSlowDB()
	l := newSlowLayer(t, db, Config{MinRequests: 10, SlowCallRate: 0.5,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		OnStateChange: func(from, to State) {
			if from == Closed && to == Open {
				changes.Add(1)
			}
		}})
	gets(t, l, 1) // fast: cached
	flush(t, l)

	db.getDelay.Store(int64(testSlowness))
	gets(t, l, 10) // every one slow; each answered, not failed
	if l.State() != Open {
		t.Fatalf("state %v after 10 slow answers of 11 calls with SlowCallRate 0.5", l.State())
	}
	s := l.Stats()
	if s.LastTripCause != TripSlowCalls || s.TransitionCounts[Transition{Closed, Open}] != 1 || changes.Load() != 1 || s.LastTrip.IsZero() {
		t.Fatalf("trip: cause %q, transitions %v, OnStateChange %d", s.LastTripCause, s.TransitionCounts, changes.Load())
	}
	if s.SlowCalls < 5 || s.SlowCalls > 10 || len(s.PrimaryFailures) != 0 {
		t.Fatalf("%d slow calls, failures %v; want 5 to 10 and none", s.SlowCalls, s.PrimaryFailures)
	}
	if log := logs.String(); !strings.Contains(log, "PostgreSQL slow") || !strings.Contains(log, `cause="slow calls"`) {
		t.Fatalf("the trip's log does not say PostgreSQL is slow:\n%s", log)
	}
	// Open: the read is the cache's, at cache speed, and says why.
	calls := db.calls.Load()
	pctx, prov := WithProvenance(context.Background())
	if _, err := l.Vendors().Get(pctx, "v"); err != nil || prov.Origin().Source != SourceCache || db.calls.Load() != calls {
		t.Fatalf("Get while open: %v, origin %+v", err, prov.Origin())
	}
	if _, err := l.Vendors().Get(context.Background(), "missing"); !errors.Is(err, repository.ErrUnavailable) ||
		!strings.Contains(err.Error(), "PostgreSQL is slow") {
		t.Fatalf("a miss while open: %v; want ErrUnavailable saying PostgreSQL is slow", err)
	}
	code, h := probe(t, l)
	if code != 200 || h.Status != "degraded" || h.SlowCalls != s.SlowCalls || h.LastTripCause != TripSlowCalls {
		t.Fatalf("health: %d %+v", code, h)
	}
}

// Slow answers below SlowCallRate, or fewer than MinRequests calls, do not
// trip.
func TestSlowCallsBelowTheRateDoNotTrip(t *testing.T) {
	db := newSlowDB()
	l := newSlowLayer(t, db, Config{MinRequests: 20, SlowCallRate: 0.5})
	db.getDelay.Store(int64(testSlowness))
	gets(t, l, 9) // 9 of 9 slow, but fewer than MinRequests
	db.getDelay.Store(0)
	gets(t, l, 11) // 9 of 20: 45 %
	db.getDelay.Store(int64(testSlowness))
	if s := l.Stats(); l.State() != Closed || s.SlowCalls != 9 {
		t.Fatalf("state %v, %d slow calls; want closed, 9", l.State(), s.SlowCalls)
	}
	gets(t, l, 1) // 10 of 21: 47.6 %
	if s := l.Stats(); l.State() != Closed || s.SlowCalls != 10 || s.Transitions != 0 {
		t.Fatalf("state %v, %d slow calls; want closed, 10", l.State(), s.SlowCalls)
	}
	gets(t, l, 1) // 11 of 22: 50 %
	if s := l.Stats(); l.State() != Open || s.LastTripCause != TripSlowCalls {
		t.Fatalf("state %v, cause %q at 11 slow of 22; want open by slow calls", l.State(), s.LastTripCause)
	}
}

// A slow answer is an answer: it neither counts toward ConsecutiveFailures
// nor lets a run of outages go on across it.
func TestSlowCallsAreNotConsecutiveFailures(t *testing.T) {
	db := newSlowDB()
	l := newSlowLayer(t, db, Config{ConsecutiveFailures: 3, MinRequests: 1000})
	db.getDelay.Store(int64(testSlowness))
	gets(t, l, 5)
	if l.State() != Closed {
		t.Fatal("5 slow answers in a row tripped the breaker as consecutive failures")
	}
	ctx := context.Background()
	outage := func() {
		db.getDelay.Store(0)
		db.down(errRefused)
		l.Vendors().Get(ctx, "v")
		db.up()
		db.getDelay.Store(int64(testSlowness))
	}
	outage()
	outage()
	gets(t, l, 1)
	outage()
	outage()
	if l.State() != Closed {
		t.Fatal("two outages, a slow answer, two outages: tripped with ConsecutiveFailures 3")
	}
	outage()
	if s := l.Stats(); l.State() != Open || s.LastTripCause != TripFailures || s.SlowCalls != 6 {
		t.Fatalf("three outages in a row: state %v, cause %q, %d slow calls", l.State(), s.LastTripCause, s.SlowCalls)
	}
}

// While open, a ping that PostgreSQL answers slowly is no recovery: the
// breaker stays open until a ping is fast again.
func TestProberClosesOnlyOnAFastPing(t *testing.T) {
	var logs testutil.Buffer
	db := newSlowDB()
	l := newSlowLayer(t, db, Config{OpenTimeout: 10 * time.Millisecond, Warm: WarmNone,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	db.pingDelay.Store(int64(testSlowness))
	tripBreaker(t, l, db.fakeDB)
	db.up()
	eventually(t, 10*time.Second, "three slow pings", func() bool { return db.pings.Load() >= 3 })
	if l.State() != Open {
		t.Fatalf("state %v: a slow ping closed the breaker", l.State())
	}
	if log := logs.String(); strings.Count(log, "PostgreSQL answers, but slowly") != 1 {
		t.Fatalf("want one line saying PostgreSQL answers slowly:\n%s", log)
	}
	if _, err := l.Vendors().Get(context.Background(), "missing"); !strings.Contains(fmtErr(err), "a ping took") {
		t.Fatalf("a miss while open: %v; want the slow ping as the cause", err)
	}
	db.pingDelay.Store(0)
	eventually(t, 10*time.Second, "the breaker to close on a fast ping", func() bool { return l.State() == Closed })
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The closing ping counts too: a fast first ping then a slow closing one
// sends the breaker back to open.
func TestProberDoesNotCloseOnASlowClosingPing(t *testing.T) {
	db := newSlowDB()
	db.slowPing = func(n int64) bool { return n%2 == 0 } // each recovery: fast ping, slow closing ping
	l := newSlowLayer(t, db, Config{OpenTimeout: 10 * time.Millisecond, Warm: WarmNone})
	tripBreaker(t, l, db.fakeDB)
	db.up()
	eventually(t, 10*time.Second, "three recovery attempts", func() bool {
		return l.Stats().TransitionCounts[Transition{HalfOpen, Open}] >= 3
	})
	if l.State() == Closed || l.Stats().TransitionCounts[Transition{HalfOpen, Closed}] != 0 {
		t.Fatalf("closed on a slow closing ping: %v", l.Stats().TransitionCounts)
	}
}

// SlowCallRate < 0: slow answers are counted but never trip, and a slow
// ping closes the breaker after an outage.
func TestNegativeSlowCallRateDisables(t *testing.T) {
	db := newSlowDB()
	l := newSlowLayer(t, db, Config{MinRequests: 4, SlowCallRate: -1, OpenTimeout: 10 * time.Millisecond, Warm: WarmNone})
	db.getDelay.Store(int64(testSlowness))
	gets(t, l, 8)
	if s := l.Stats(); l.State() != Closed || s.SlowCalls != 8 {
		t.Fatalf("state %v, %d slow calls; want closed, 8", l.State(), s.SlowCalls)
	}
	db.pingDelay.Store(int64(testSlowness))
	db.getDelay.Store(0)
	tripBreaker(t, l, db.fakeDB)
	if s := l.Stats(); s.LastTripCause != TripFailures {
		t.Fatalf("cause %q", s.LastTripCause)
	}
	db.up()
	eventually(t, 10*time.Second, "a slow ping to close the breaker", func() bool { return l.State() == Closed })
}

func TestNewRejectsSlowCallRateAboveOne(t *testing.T) {
	db := newFakeDB()
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	if _, err := New(db.primary(), cache, Config{SlowCallRate: 1.5}); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("SlowCallRate 1.5: %v; want ErrInvalid", err)
	}
}

// The window rolls as gobreaker's counts do: an outcome goes to the bucket
// its call started in, a bucket rolls out after Window, and a run of
// outages loses the part of it that rolled out.
func TestCallWindowRolls(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var w callWindow
	w.init(10*time.Second, time.Second, t0) // ten buckets of a second
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	call := func(start, end float64, err error) {
		w.done(w.request(at(start)), err, at(end))
	}
	call(0, 0.1, errOutage)
	call(0.5, 0.6, errOutage)
	call(1, 1.2, errSlow)     // ends the run
	call(2, 2.1, errOutage)   // a run of 1...
	call(2.5, 3.5, errOutage) // ...of 2, counted in bucket 2
	call(3, 3.1, errExcluded)
	tok := w.request(at(4)) // still running
	c := w.counts(at(4))
	if c != (callCounts{requests: 7, answered: 1, outages: 4, excluded: 1, slow: 1, consecutiveOutages: 2}) || c.valid() != 6 {
		t.Fatalf("counts %+v", c)
	}
	c = w.counts(at(10.5)) // bucket 0 rolled out
	if c != (callCounts{requests: 5, answered: 1, outages: 2, excluded: 1, slow: 1, consecutiveOutages: 2}) {
		t.Fatalf("after 10.5 s: %+v", c)
	}
	w.done(tok, errOutage, at(10.6)) // run of 3
	if c = w.counts(at(10.6)); c.consecutiveOutages != 3 || c.outages != 3 {
		t.Fatalf("a late outcome: %+v", c)
	}
	c = w.counts(at(12.5)) // buckets 1 and 2 rolled out: the run keeps its outage of bucket 4
	if c != (callCounts{requests: 2, outages: 1, excluded: 1, consecutiveOutages: 1}) {
		t.Fatalf("after 12.5 s: %+v", c)
	}
	tok = w.request(at(13))
	w.reset(at(13.5))
	w.done(tok, errSlow, at(13.6)) // allowed before the reset: ignored
	if c = w.counts(at(14)); c != (callCounts{}) {
		t.Fatalf("after reset: %+v", c)
	}
	if c = w.counts(at(100)); c != (callCounts{}) {
		t.Fatalf("after a long idle: %+v", c)
	}
}
