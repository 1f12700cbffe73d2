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
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// newStallLayer is a layer over db whose primary probes commits with
// probe, or cannot probe when probe is nil.
func newStallLayer(t *testing.T, db *fakeDB, probe func(context.Context) error, logs *testutil.Buffer) *Layer {
	t.Helper()
	return newStallLayerProbing(t, db, probe, logs, 30*time.Millisecond)
}

// newStallLayerProbing is newStallLayer with the prober's OpenTimeout.
func newStallLayerProbing(t *testing.T, db *fakeDB, probe func(context.Context) error, logs *testutil.Buffer, openTimeout time.Duration) *Layer {
	t.Helper()
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	// PrimaryTimeout with room for a read on a busy machine under -race:
	// only the writes may time out.
	cfg := Config{Logger: slog.New(slog.NewTextHandler(logs, nil)), PrimaryTimeout: 200 * time.Millisecond, OpenTimeout: openTimeout}
	var primary Primary = db.primary()
	if probe != nil {
		primary = struct {
			*mock.Primary
			*mock.CommitProber
		}{db.primary(), &mock.CommitProber{ProbeCommitFn: probe}}
	}
	l, err := New(primary, cache, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); cache.Close() })
	return l
}

// readWhile reads name through l until the returned stop is called:
// PostgreSQL answering other calls while writes time out.
func readWhile(t *testing.T, l *Layer, name string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := l.Vendors().Get(context.Background(), name); err != nil {
				t.Errorf("a read while writes time out: %v", err)
				return
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop) // before the layer closes, on a test's failure too
	return stop
}

// Writes that time out while PostgreSQL answers reads — commits waiting
// for a synchronous replica that is gone — are not an outage: the breaker
// stays closed and reads go on to PostgreSQL, a key the cache lacks
// included. Each such write is of unknown outcome (it may be committed);
// from the ConsecutiveFailures-th in a row, writes are not sent at all
// (ErrUnavailable, not written) until a commit probe goes through.
func TestWritesThatTimeOutWhileReadsAnswerAreNotAnOutage(t *testing.T) {
	db := newFakeDB()
	var probes atomic.Int64
	logs := &testutil.Buffer{}
	l := newStallLayer(t, db, func(ctx context.Context) error {
		probes.Add(1)
		if db.commitsHang.Load() {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}, logs)
	ctx := context.Background()
	v := db.put(vendor("a"))
	db.put(vendor("uncached"))
	if _, err := l.Vendors().Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}

	db.commitsHang.Store(true)
	stop := readWhile(t, l, "a")
	for i := range 5 { // ConsecutiveFailures
		if _, err := l.Vendors().Update(ctx, v); !errors.Is(err, repository.ErrOutcomeUnknown) {
			t.Fatalf("update %d with commits hung: %v, want ErrOutcomeUnknown", i, err)
		}
	}
	sent := db.writes.Load()
	_, err := l.Vendors().Update(ctx, v)
	if !errors.Is(err, repository.ErrUnavailable) || errors.Is(err, repository.ErrOutcomeUnknown) ||
		!strings.Contains(err.Error(), "not written") || db.writes.Load() != sent {
		t.Fatalf("an update after 5 timed out: %v (%d sent), want ErrUnavailable, not written, not sent", err, db.writes.Load()-sent)
	}
	rctx, prov := WithProvenance(ctx)
	if _, err := l.Vendors().Get(rctx, "uncached"); err != nil || prov.Origin().Source != SourcePrimary {
		t.Fatalf("a read of a key the cache lacks: %v from %v, want PostgreSQL", err, prov.Origin().Source)
	}
	stop()
	s := l.Stats()
	if s.State != Closed || s.Transitions != 0 {
		t.Fatalf("the breaker moved: %v after %d transitions (%q)", s.State, s.Transitions, s.LastTripCause)
	}
	if s.WritesStalledSince.IsZero() || s.StalledTimeouts != 5 || s.WritesHeld != 1 || s.PrimaryFailures[FailTimeout] != 5 || len(s.PrimaryFailures) != 1 {
		t.Fatalf("Stats: stalled since %v, %d stalled timeouts, %d held, failures %v", s.WritesStalledSince, s.StalledTimeouts, s.WritesHeld, s.PrimaryFailures)
	}
	if h := l.CheckHealth(); h.Status != "degraded" || !h.Ready || !strings.Contains(h.Reason, "writes time out") || h.WritesStalledSince == nil {
		t.Fatalf("health: %+v", h)
	}
	n := probes.Load()
	eventually(t, 5*time.Second, "probes while commits hang", func() bool { return probes.Load() >= n+2 })
	if !l.Stats().WritesStalledSince.Equal(s.WritesStalledSince) {
		t.Fatal("a probe that timed out ended the run")
	}

	db.commitsHang.Store(false)
	eventually(t, 5*time.Second, "a probe to end the run", func() bool { return l.Stats().WritesStalledSince.IsZero() })
	if _, err := l.Vendors().Update(ctx, v); err != nil {
		t.Fatalf("an update once commits go through: %v", err)
	}
	out := logs.String()
	if c := strings.Count(out, "writes time out while PostgreSQL answers"); c != 1 {
		t.Errorf("the run's start logged %d times, want once:\n%s", c, out)
	}
	if c := strings.Count(out, "commits go through again"); c != 1 || !strings.Contains(out, "seen=probed") {
		t.Errorf("the run's end logged %d times, want once, by the probe:\n%s", c, out)
	}
}

// A primary that cannot probe commits: a write is let through every
// OpenTimeout; while commits hang it times out too, and the run goes on;
// the first that commits ends it.
func TestStalledWritesWithoutAProbeLetOneThrough(t *testing.T) {
	db := newFakeDB()
	l := newStallLayer(t, db, nil, &testutil.Buffer{})
	ctx := context.Background()
	v := db.put(vendor("a"))
	db.commitsHang.Store(true)
	readWhile(t, l, "a")
	for range 5 {
		l.Vendors().Update(ctx, v)
	}
	if l.Stats().WritesStalledSince.IsZero() {
		t.Fatal("no run after 5 stalled writes")
	}
	eventually(t, 5*time.Second, "a write let through, timing out again", func() bool {
		_, err := l.Vendors().Update(ctx, v)
		return errors.Is(err, repository.ErrOutcomeUnknown)
	})
	if l.Stats().WritesStalledSince.IsZero() {
		t.Fatal("a let-through write that timed out ended the run")
	}
	db.commitsHang.Store(false)
	eventually(t, 5*time.Second, "a write let through to commit", func() bool {
		_, err := l.Vendors().Update(ctx, v)
		return err == nil
	})
	if !l.Stats().WritesStalledSince.IsZero() {
		t.Fatal("a write committed and the run goes on")
	}
}

// Timeouts while PostgreSQL answers nothing are an outage, as before: the
// rule needs an answer after the call was sent.
func TestTimeoutsWithNoAnswerStillTrip(t *testing.T) {
	db := newFakeDB()
	l := newStallLayer(t, db, func(context.Context) error { return nil }, &testutil.Buffer{})
	ctx := context.Background()
	v := db.put(vendor("a"))
	if _, err := l.Vendors().Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	db.hang.Store(true)
	for range 5 {
		l.Vendors().Update(ctx, v)
	}
	if s := l.Stats(); s.State != Open || s.StalledTimeouts != 0 || !s.WritesStalledSince.IsZero() {
		t.Fatalf("5 timeouts with no answer: %v, %d stalled, stalled since %v; want the breaker open", s.State, s.StalledTimeouts, s.WritesStalledSince)
	}
}

// Writes that time out while commits go through — rows locked by another
// transaction — hold writes for one probe only: the prober probes at once
// when a run begins, not an OpenTimeout later (an hour here).
func TestStalledWritesOnLockedRowsEndAtTheFirstProbe(t *testing.T) {
	db := newFakeDB()
	var probes atomic.Int64
	l := newStallLayerProbing(t, db, func(context.Context) error { probes.Add(1); return nil }, &testutil.Buffer{}, time.Hour)
	ctx := context.Background()
	v := db.put(vendor("a"))
	db.commitsHang.Store(true) // the fake's writes wait, as on a locked row
	stop := readWhile(t, l, "a")
	for range 5 {
		l.Vendors().Update(ctx, v)
	}
	stop()
	eventually(t, 5*time.Second, "the first probe to end the run", func() bool {
		return probes.Load() == 1 && l.Stats().WritesStalledSince.IsZero()
	})
	if s := l.Stats(); s.StalledTimeouts != 5 || s.State != Closed {
		t.Fatalf("Stats: %d stalled timeouts, breaker %v", s.StalledTimeouts, s.State)
	}
}
