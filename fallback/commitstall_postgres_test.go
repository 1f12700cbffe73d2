package fallback_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/repository"
)

// A server whose commits hang: synchronous_standby_names names a standby
// that is not connected (the synchronous replica died, or was never
// there), the classic way a primary keeps answering reads and stops
// finishing writes. Each write is applied and flushed locally, then waits
// for the replica; when PrimaryTimeout cancels the wait, the transaction
// stays committed. So:
//   - the write is reported ErrOutcomeUnknown, never "not written"
//     (ErrUnavailable): PostgreSQL has it, and shows it once the wait ends
//     (a backend whose client left keeps waiting, its row invisible: the
//     answer was not knowable when the call returned);
//   - with WithWriteQueue it is not queued either: it may have been applied;
//   - reads, of a key the cache lacks too, come from PostgreSQL;
//   - once the replica is back (here: the setting reset), writes succeed.
func TestHungCommitIsOutcomeUnknown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := pgtest.NewServer(t)
	d, _, err := srv.CreateDatabase(ctx) // dropped with the server
	if err != nil {
		t.Fatal(err)
	}
	s := openStack(t, d, filepath.Join(t.TempDir(), "c.db"), fallback.Config{
		PrimaryTimeout: 300 * time.Millisecond, OpenTimeout: 100 * time.Millisecond, ConsecutiveFailures: 100,
	})
	names := seed(t, s, 2)
	if _, err := s.store.Vendors().Create(ctx, repository.Vendor{Name: "uncached", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	admin, err := dsn.Connect(ctx, srv.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	syncReplica := func(name string) {
		t.Helper()
		set := `ALTER SYSTEM SET synchronous_standby_names = '` + name + `'`
		if name == "" {
			set = `ALTER SYSTEM RESET synchronous_standby_names`
		}
		for _, q := range []string{set, `SELECT pg_reload_conf()`} {
			if _, err := admin.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 10*time.Second, "the reload", func() bool {
			var got string
			return admin.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&got) == nil && got == name
		})
	}

	syncReplica("gone")
	var want []int64 // the versions the timed-out updates make
	for i, wctx := range []context.Context{ctx, fallback.WithWriteQueue(ctx)} {
		v, err := s.layer.Vendors().Get(ctx, names[i])
		if err != nil {
			t.Fatal(err)
		}
		v.Status = repository.VendorBroken
		_, err = s.layer.Vendors().Update(wctx, v)
		if !errors.Is(err, repository.ErrOutcomeUnknown) || errors.Is(err, repository.ErrUnavailable) {
			t.Fatalf("update %d with the commit hung: %v, want ErrOutcomeUnknown (it is committed locally)", i, err)
		}
		want = append(want, v.Version+1)
	}
	if st := s.layer.Stats(); st.Queued.Pending != 0 || st.Queued.Queued != 0 {
		t.Fatalf("a write of unknown outcome was queued: %+v", st.Queued)
	}
	for _, name := range []string{names[0], "uncached"} {
		rctx, prov := fallback.WithProvenance(ctx)
		if _, err := s.layer.Vendors().Get(rctx, name); err != nil || prov.Origin().Source != fallback.SourcePrimary {
			t.Fatalf("Get %s with commits hung: %v from %v, want PostgreSQL", name, err, prov.Origin().Source)
		}
	}

	// The replica back: the waits end, and both updates are there. Had
	// the layer said "not written", the caller would have been lied to.
	syncReplica("")
	for i, version := range want {
		waitFor(t, 10*time.Second, "the timed-out update to show", func() bool {
			got, err := s.store.Vendors().Get(ctx, names[i])
			return err == nil && got.Version == version && got.Status == repository.VendorBroken
		})
	}
	v, err := s.layer.Vendors().Get(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.layer.Vendors().Update(ctx, v); err != nil {
		t.Fatalf("an update once commits finish: %v", err)
	}
}
