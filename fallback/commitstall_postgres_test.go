package fallback_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// A server whose commits hang: synchronous_standby_names names a standby
// that is not connected (the synchronous replica died, or was never
// there), the classic way a primary keeps answering reads and stops
// finishing writes. Each write is applied and flushed locally, then waits
// for the replica; when PrimaryTimeout cancels the wait, the transaction
// stays committed. So, with a reader besides:
//   - each write is reported ErrOutcomeUnknown, never "not written"
//     (ErrUnavailable): PostgreSQL has it, and shows it once the wait ends
//     (a backend whose client left keeps waiting, its row invisible: the
//     answer was not knowable when the call returned);
//   - they are not an outage: PostgreSQL answered the reader meanwhile.
//     The breaker stays closed, and reads, of a key the cache lacks too,
//     come from PostgreSQL;
//   - from the ConsecutiveFailures-th in a row, writes are not sent: not
//     written, or queued with WithWriteQueue;
//   - once commits go through (the setting reset), the probe ends that,
//     the queue replays, and writes are sent and succeed.
func TestHungCommitIsOutcomeUnknown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, s := openStallStack(t, ctx)
	names := seed(t, s, 6)
	if _, err := s.store.Vendors().Create(ctx, repository.Vendor{Name: "uncached", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	update := func(wctx context.Context, name string) (repository.Vendor, error) {
		t.Helper()
		v, err := s.layer.Vendors().Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		v.Status = repository.VendorBroken
		_, err = s.layer.Vendors().Update(wctx, v)
		return v, err
	}

	reconfigure(t, ctx, srv, "synchronous_standby_names", "gone")
	waitForHungCommits(t, ctx, s)
	// PostgreSQL answers a reader while the writes wait.
	stopReading := readWhile(t, ctx, s, names[5])
	var want []int64 // the versions the timed-out updates make
	for i := range 3 {
		v, err := update(ctx, names[i])
		if !errors.Is(err, repository.ErrOutcomeUnknown) || errors.Is(err, repository.ErrUnavailable) {
			t.Fatalf("update %d with the commit hung: %v, want ErrOutcomeUnknown (it is committed locally)", i, err)
		}
		want = append(want, v.Version+1)
	}
	if _, err := update(ctx, names[3]); !errors.Is(err, repository.ErrUnavailable) || errors.Is(err, repository.ErrOutcomeUnknown) {
		t.Fatalf("an update after 3 timed out: %v, want ErrUnavailable (not sent)", err)
	}
	queued, err := update(fallback.WithWriteQueue(ctx), names[4])
	if err != nil {
		t.Fatalf("a queued update after 3 timed out: %v", err)
	}
	for _, name := range []string{names[0], "uncached"} {
		rctx, prov := fallback.WithProvenance(ctx)
		if _, err := s.layer.Vendors().Get(rctx, name); err != nil || prov.Origin().Source != fallback.SourcePrimary {
			t.Fatalf("Get %s with commits hung: %v from %v, want PostgreSQL", name, err, prov.Origin().Source)
		}
	}
	stopReading()
	st := s.layer.Stats()
	if st.State != fallback.Closed || st.Transitions != 0 || st.WritesStalledSince.IsZero() || st.Queued.Pending != 1 {
		t.Fatalf("with commits hung: breaker %v after %d transitions (%q), stalled since %v, %d queued",
			st.State, st.Transitions, st.LastTripCause, st.WritesStalledSince, st.Queued.Pending)
	}

	// The replica back: the waits end, and the timed-out updates are there.
	// Had the layer said "not written", the caller would have been lied to.
	reconfigure(t, ctx, srv, "synchronous_standby_names", "")
	waitFor(t, 10*time.Second, "a commit probe to end the stall", func() bool { return s.layer.Stats().WritesStalledSince.IsZero() })
	waitFor(t, 10*time.Second, "the queue to replay", func() bool { return s.layer.Stats().Queued.Pending == 0 })
	for i, version := range want {
		waitFor(t, 10*time.Second, "the timed-out update to show", func() bool {
			got, err := s.store.Vendors().Get(ctx, names[i])
			return err == nil && got.Version == version && got.Status == repository.VendorBroken
		})
	}
	if got, err := s.store.Vendors().Get(ctx, names[4]); err != nil || got.Version != queued.Version+1 {
		t.Fatalf("the queued update: %+v, %v; want it applied once", got, err)
	}
	if got, err := s.store.Vendors().Get(ctx, names[3]); err != nil || got.Version != 1 {
		t.Fatalf("the update not sent: %+v, %v; want the row untouched", got, err)
	}
	if _, err := update(ctx, names[0]); err != nil {
		t.Fatalf("an update once commits finish: %v", err)
	}
}

// A queued write replayed into commits that hang, while PostgreSQL
// answers a reader: the replay times out, which is counted as a stalled
// timeout, not an outage (the breaker stays closed). Its commit was made
// locally and its wait canceled, so the next replay finds the write
// applied by its record: the queue drains, the write applied once, while
// commits still hang.
func TestReplayIntoHungCommitsAppliesOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, s := openStallStack(t, ctx)
	names := seed(t, s, 2)
	// A write queued while the server is read-only.
	reconfigure(t, ctx, srv, "default_transaction_read_only", "on")
	v, err := s.layer.Vendors().Get(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	v.Status = repository.VendorBroken
	if _, err := s.layer.Vendors().Update(fallback.WithWriteQueue(ctx), v); err != nil {
		t.Fatalf("a queued update on a read-only server: %v", err)
	}
	reconfigure(t, ctx, srv, "synchronous_standby_names", "gone")
	waitForHungCommits(t, ctx, s)
	// PostgreSQL answers a reader while the replay waits.
	stopReading := readWhile(t, ctx, s, names[1])
	reconfigure(t, ctx, srv, "default_transaction_read_only", "")
	waitFor(t, 20*time.Second, "the queue to drain while commits hang", func() bool { return s.layer.Stats().Queued.Pending == 0 })
	stopReading()
	st := s.layer.Stats()
	if st.State != fallback.Closed || st.Transitions != 0 || st.StalledTimeouts == 0 || st.Queued.AlreadyApplied == 0 || st.Queued.DeadLettered != 0 {
		t.Fatalf("replays into hung commits: breaker %v after %d transitions (%q), %d stalled timeouts, queue %+v; "+
			"want closed, the timed-out replay counted as stalled and found applied after",
			st.State, st.Transitions, st.LastTripCause, st.StalledTimeouts, st.Queued)
	}
	got, err := s.store.Vendors().Get(ctx, names[0])
	if err != nil || got.Status != repository.VendorBroken || got.Version != v.Version+1 {
		t.Fatalf("PostgreSQL after the replays: %+v, %v; want the queued update applied once", got, err)
	}
	reconfigure(t, ctx, srv, "synchronous_standby_names", "")
}

// openStallStack is the commit-stall tests' server (a private one: they
// reconfigure it) and layer: short timeouts, and a stall after 3 writes.
func openStallStack(t *testing.T, ctx context.Context) (*pgtest.Server, *stack) {
	t.Helper()
	srv := pgtest.NewServer(t)
	d, _, err := srv.CreateDatabase(ctx) // dropped with the server
	if err != nil {
		t.Fatal(err)
	}
	return srv, openStack(t, d, filepath.Join(t.TempDir(), "c.db"), fallback.Config{
		PrimaryTimeout: 300 * time.Millisecond, OpenTimeout: 100 * time.Millisecond, ConsecutiveFailures: 3,
		ReplayInterval: 50 * time.Millisecond,
	})
}

// waitForHungCommits waits until commits hang: backends wait for a
// replica once the checkpointer has taken the reload too, which the commit
// probe tells (and the test fails if it never waits as a write does).
func waitForHungCommits(t *testing.T, ctx context.Context, s *stack) {
	t.Helper()
	waitFor(t, 10*time.Second, "a commit probe to hang", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		return s.store.ProbeCommit(pctx) != nil
	})
}

// readWhile reads name through the layer, again and again, until the
// returned stop is called (also at cleanup); a read that fails fails the
// test.
func readWhile(t *testing.T, ctx context.Context, s *stack, name string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := s.layer.Vendors().Get(ctx, name); err != nil {
				t.Errorf("a read while commits hang: %v", err)
				return
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); reader.Wait() }) }
	t.Cleanup(stop)
	return stop
}
