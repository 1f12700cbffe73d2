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
	srv := pgtest.NewServer(t)
	d, _, err := srv.CreateDatabase(ctx) // dropped with the server
	if err != nil {
		t.Fatal(err)
	}
	s := openStack(t, d, filepath.Join(t.TempDir(), "c.db"), fallback.Config{
		PrimaryTimeout: 300 * time.Millisecond, OpenTimeout: 100 * time.Millisecond, ConsecutiveFailures: 3,
		ReplayInterval: 50 * time.Millisecond,
	})
	names := seed(t, s, 6)
	if _, err := s.store.Vendors().Create(ctx, repository.Vendor{Name: "uncached", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	syncReplica := func(name string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := pgtest.Reconfigure(rctx, srv.DSN(), "synchronous_standby_names", name); err != nil {
			t.Fatal(err)
		}
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

	syncReplica("gone")
	// Backends wait for a replica once the checkpointer has taken the
	// reload too: the commit probe tells when (and fails the test if it
	// never waits as a write does).
	waitFor(t, 10*time.Second, "a commit probe to hang", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer pcancel()
		return s.store.ProbeCommit(pctx) != nil
	})
	reading := make(chan struct{})
	var reader sync.WaitGroup
	reader.Add(1)
	go func() { // PostgreSQL answers it while the writes wait
		defer reader.Done()
		for {
			select {
			case <-reading:
				return
			default:
			}
			if _, err := s.layer.Vendors().Get(ctx, names[5]); err != nil {
				t.Errorf("a read while commits hang: %v", err)
				return
			}
		}
	}()
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
	close(reading)
	reader.Wait()
	st := s.layer.Stats()
	if st.State != fallback.Closed || st.Transitions != 0 || st.WritesStalledSince.IsZero() || st.Queued.Pending != 1 {
		t.Fatalf("with commits hung: breaker %v after %d transitions (%q), stalled since %v, %d queued",
			st.State, st.Transitions, st.LastTripCause, st.WritesStalledSince, st.Queued.Pending)
	}

	// The replica back: the waits end, and the timed-out updates are there.
	// Had the layer said "not written", the caller would have been lied to.
	syncReplica("")
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
	srv := pgtest.NewServer(t)
	d, _, err := srv.CreateDatabase(ctx) // dropped with the server
	if err != nil {
		t.Fatal(err)
	}
	s := openStack(t, d, filepath.Join(t.TempDir(), "c.db"), fallback.Config{
		PrimaryTimeout: 300 * time.Millisecond, OpenTimeout: 100 * time.Millisecond, ConsecutiveFailures: 3,
		ReplayInterval: 50 * time.Millisecond,
	})
	names := seed(t, s, 2)
	reconfigure := func(name, value string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := pgtest.Reconfigure(rctx, srv.DSN(), name, value); err != nil {
			t.Fatal(err)
		}
	}

	// A write queued while the server is read-only.
	reconfigure("default_transaction_read_only", "on")
	v, err := s.layer.Vendors().Get(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	v.Status = repository.VendorBroken
	if _, err := s.layer.Vendors().Update(fallback.WithWriteQueue(ctx), v); err != nil {
		t.Fatalf("a queued update on a read-only server: %v", err)
	}
	reconfigure("synchronous_standby_names", "gone")
	waitFor(t, 10*time.Second, "a commit probe to hang", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer pcancel()
		return s.store.ProbeCommit(pctx) != nil
	})
	stop := make(chan struct{})
	var reader sync.WaitGroup
	reader.Add(1)
	go func() { // PostgreSQL answers it while the replay waits
		defer reader.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.layer.Vendors().Get(ctx, names[1]); err != nil {
				t.Errorf("a read while commits hang: %v", err)
				return
			}
		}
	}()
	reconfigure("default_transaction_read_only", "")
	waitFor(t, 20*time.Second, "the queue to drain while commits hang", func() bool { return s.layer.Stats().Queued.Pending == 0 })
	close(stop)
	reader.Wait()
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
	reconfigure("synchronous_standby_names", "")
}
