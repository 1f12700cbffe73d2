package fallback_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// A PostgreSQL that answers reads and refuses writes, the way a provider
// guards a full disk: default_transaction_read_only turned on for the
// whole server and reloaded, so sessions already open refuse writes too
// (SQLSTATE 25006). It must not look like an outage:
//   - a run of refused writes with no read between them (which trips the
//     breaker on failures) leaves it closed, and reads, of a key the cache
//     lacks too, come from PostgreSQL;
//   - a queued write is accepted, and the replayer's refused attempts do
//     not open the breaker either;
//   - the guard lifted, the window ends without a write (the layer checks);
//   - after a crash, a server that comes back read-only with writes still
//     queued lets the breaker close: reads go back to it;
//   - once it takes writes, the queue drains into it and Stats says so.
func TestReadOnlyPostgreSQLServesReadsAndQueuesWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := pgtest.NewServer(t)
	dsn, _, err := srv.CreateDatabase(ctx) // dropped with the server
	if err != nil {
		t.Fatal(err)
	}
	s := openStack(t, dsn, filepath.Join(t.TempDir(), "c.db"), fallback.Config{
		OpenTimeout: 100 * time.Millisecond, ReplayInterval: 50 * time.Millisecond,
	})
	names := seed(t, s, 3)
	if _, err := s.store.Vendors().Create(ctx, repository.Vendor{Name: "uncached", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	get := func(name string) fallback.Origin {
		t.Helper()
		rctx, prov := fallback.WithProvenance(ctx)
		if _, err := s.layer.Vendors().Get(rctx, name); err != nil {
			t.Fatalf("Get %s: %v", name, err)
		}
		return prov.Origin()
	}
	noTransitions := func(when string) {
		t.Helper()
		if st := s.layer.Stats(); st.State != fallback.Closed || st.Transitions != 0 {
			t.Fatalf("%s: breaker %v after %d transitions (last trip %q), want closed throughout", when, st.State, st.Transitions, st.LastTripCause)
		}
	}

	reconfigure(t, ctx, srv, "default_transaction_read_only", "on")
	// What a multi-host DSN's target_session_attrs makes of this server:
	// read-write refuses it (its transaction_read_only is on), which would
	// make the window an outage; primary takes it (it is no standby).
	for attrs, refused := range map[string]bool{"read-write": true, "primary": false} {
		c, err := pgx.Connect(ctx, pgtest.WithParam(dsn, "target_session_attrs", attrs))
		if err == nil {
			c.Close(ctx)
		}
		if (err != nil) != refused {
			t.Fatalf("target_session_attrs=%s on a read-only primary: %v, want refused %v", attrs, err, refused)
		}
	}
	v, err := s.layer.Vendors().Get(ctx, names[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		v.Status = repository.VendorBroken
		_, err := s.layer.Vendors().Update(ctx, v)
		var pgErr *pgconn.PgError
		if !errors.Is(err, repository.ErrUnavailable) || !errors.As(err, &pgErr) || pgErr.Code != "25006" {
			t.Fatalf("update %d on a read-only server: %v, want ErrUnavailable caused by SQLSTATE 25006", i, err)
		}
	}
	noTransitions("20 refused writes")
	for _, name := range []string{names[1], "uncached"} {
		if o := get(name); o.Source != fallback.SourcePrimary {
			t.Fatalf("Get %s on a read-only server: from %v, want PostgreSQL", name, o.Source)
		}
	}
	if st := s.layer.Stats(); st.ReadOnlySince.IsZero() || st.ReadOnlyStandby {
		t.Fatalf("Stats on a server that refused 20 writes: read-only since %v, standby %v", st.ReadOnlySince, st.ReadOnlyStandby)
	}
	if takes, standby, err := s.store.TakesWrites(ctx); takes || standby || err != nil {
		t.Fatalf("TakesWrites on a read-only primary: %v, standby %v, %v", takes, standby, err)
	}
	// The guard lifted and no write since: the prober's check ends the
	// window (a service that stopped writing would report it for good).
	reconfigure(t, ctx, srv, "default_transaction_read_only", "")
	waitFor(t, 10*time.Second, "the check to end the window", func() bool { return s.layer.Stats().ReadOnlySince.IsZero() })
	reconfigure(t, ctx, srv, "default_transaction_read_only", "on")
	if _, err := s.layer.Vendors().Update(ctx, v); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("update on a read-only server again: %v", err)
	}

	qctx := fallback.WithWriteQueue(ctx)
	queued, err := s.layer.Vendors().Get(ctx, names[2])
	if err != nil {
		t.Fatal(err)
	}
	queued.Status = repository.VendorBroken
	if _, err := s.layer.Vendors().Update(qctx, queued); err != nil {
		t.Fatalf("a queued update on a read-only server: %v", err)
	}
	waitFor(t, 30*time.Second, "more refused replays than trip the breaker", func() bool { return s.layer.Stats().Queued.ReplayFailures >= 8 })
	noTransitions("refused replays")
	if o := get(names[2]); o.Source != fallback.SourceQueue || !o.Pending {
		t.Fatalf("a read of the queued key: %+v, want its pending state", o)
	}

	// A crash; the server comes back read-only (the setting is in
	// postgresql.auto.conf) with the write still queued.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the breaker to open", func() bool {
		s.layer.Vendors().Get(ctx, names[1])
		return s.layer.State() == fallback.Open
	})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the breaker to close on a read-only server", func() bool { return s.layer.State() == fallback.Closed })
	if o := get("uncached"); o.Source != fallback.SourcePrimary {
		t.Fatalf("after recovery on a read-only server: Get from %v, want PostgreSQL", o.Source)
	}
	if st := s.layer.Stats(); st.Queued.Pending != 1 {
		t.Fatalf("pending %d, want the queued write still queued", st.Queued.Pending)
	}

	reconfigure(t, ctx, srv, "default_transaction_read_only", "")
	waitFor(t, 30*time.Second, "the queue to drain", func() bool { return s.layer.Stats().Queued.Pending == 0 })
	got, err := s.store.Vendors().Get(ctx, names[2])
	if err != nil || got.Status != repository.VendorBroken || got.Version != queued.Version+1 {
		t.Fatalf("PostgreSQL after the replay: %+v, %v; want the queued update applied once", got, err)
	}
	if st := s.layer.Stats(); !st.ReadOnlySince.IsZero() || st.Queued.DeadLettered != 0 {
		t.Fatalf("after the replay: read-only since %v, dead letters %d", st.ReadOnlySince, st.Queued.DeadLettered)
	}
}
