package pgstore_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/pgstore"
)

// Behind PgBouncer in transaction mode, as docs/poolers.md says to set it
// up: the pool through PgBouncer in one of the query exec modes that need
// no prepared statement, the listener pointed at PostgreSQL itself. Every
// statement works, and the change feed is woken by notifications. Other
// clients share the pooler's two server connections, so that the store's
// transactions land on whichever session is free, as in production (a
// client alone is handed the session it last used): pgx's default mode
// fails there, which the test checks first, or it would prove nothing.
func TestBehindPgBouncerInTransactionMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	direct := pgtest.NewDatabase(t)
	// A DBA's DateStyle, which pgx cannot read in the text modes: the
	// store's own (ISO, a startup parameter) must reach the server sessions.
	alterDatabase(ctx, t, direct, `DateStyle = 'SQL, DMY'`)
	pooled := pgtest.NewPgBouncer(t, direct, "transaction", 2, preparedPassedThrough(t)...)
	shareThePooler(ctx, t, pooled)
	listen, err := pgx.ParseConfig(direct)
	if err != nil {
		t.Fatalf("parse: %v", pgdsn.Error(err))
	}
	var logged testutil.Buffer
	open := func(t *testing.T, mode string) *pgstore.Store {
		s, err := pgstore.Open(ctx, pgtest.WithParam(pooled, "default_query_exec_mode", mode), pgstore.WithListenConfig(listen),
			pgstore.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
		if err != nil {
			t.Fatalf("open through PgBouncer: %v", pgdsn.Error(err))
		}
		t.Cleanup(s.Close)
		return s
	}

	// The control: prepared statements do not survive the pooler.
	preparedStatementsFail(ctx, t, open(t, "cache_statement"))

	for _, mode := range []string{"exec", "simple_protocol", "cache_describe"} {
		t.Run(mode, func(t *testing.T) {
			s := open(t, mode)
			// Really through the pooler: it makes up the process ID it reports.
			c, err := s.Pool().Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var backend uint32
			err = c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend)
			reported := c.Conn().PgConn().PID()
			c.Release()
			if err != nil || backend == reported {
				t.Fatalf("the pool's connection reports process %d, its session is %d (%v): not through PgBouncer", reported, backend, err)
			}
			if _, err := s.Pool().Exec(ctx, `TRUNCATE vendors, work_items, pgfallback_applied_writes`); err != nil {
				t.Fatal(err)
			}
			exerciseStore(ctx, t, s)
			if out := logged.String(); out != "" {
				t.Errorf("logged, set up as docs/poolers.md says:\n%s", out)
			}
		})
	}
}

// Behind PgBouncer 1.21 or later with max_prepared_statements (on by
// default from 1.24), which prepares its clients' statements again on
// whichever server session they land: pgx's default mode works, as
// docs/poolers.md says, and the pool is not warned of. The control, the
// same pooler passing them through, fails and is warned of.
func TestBehindPgBouncerThatKeepsPreparedStatements(t *testing.T) {
	if v := pgtest.PgBouncerVersion(t); !v.AtLeast(1, 21) {
		t.Skipf("PgBouncer %s keeps no prepared statements (1.21 and later do); "+
			"integration/pgtest/pgbouncer/fetch.sh fetches 1.24, and %s names it", v, pgtest.EnvPgBouncer)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	direct := pgtest.NewDatabase(t)
	listen, err := pgx.ParseConfig(direct)
	if err != nil {
		t.Fatalf("parse: %v", pgdsn.Error(err))
	}
	open := func(t *testing.T, pooled string) (*pgstore.Store, *testutil.Buffer) {
		var logged testutil.Buffer
		s, err := pgstore.Open(ctx, pooled, pgstore.WithListenConfig(listen), pgstore.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
		if err != nil {
			t.Fatalf("open through PgBouncer: %v", pgdsn.Error(err))
		}
		t.Cleanup(s.Close)
		// The pool is looked at when the listener first connects.
		var listening atomic.Bool
		wctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- s.WatchChanges(wctx, func(reconnected bool) { listening.CompareAndSwap(false, reconnected) })
		}()
		t.Cleanup(func() { stop(); <-done })
		for deadline := time.Now().Add(10 * time.Second); !listening.Load(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the listener did not listen in 10 s:\n%s", logged.String())
			}
		}
		return s, &logged
	}
	const warning = "pgx prepares their statements"

	t.Run("passed through", func(t *testing.T) {
		pooled := pgtest.NewPgBouncer(t, direct, "transaction", 2, "max_prepared_statements = 0")
		shareThePooler(ctx, t, pooled)
		s, logged := open(t, pooled)
		if n := strings.Count(logged.String(), warning); n != 1 || !strings.Contains(logged.String(), "the pooler does not keep them") {
			t.Errorf("a pooler passing prepared statements through was warned of %d times, want once, saying it does not keep them:\n%s", n, logged)
		}
		preparedStatementsFail(ctx, t, s)
	})
	t.Run("kept", func(t *testing.T) {
		pooled := pgtest.NewPgBouncer(t, direct, "transaction", 2, "max_prepared_statements = 200")
		shareThePooler(ctx, t, pooled)
		s, logged := open(t, pooled)
		if _, err := s.Pool().Exec(ctx, `TRUNCATE vendors, work_items, pgfallback_applied_writes`); err != nil {
			t.Fatal(err)
		}
		for range 3 { // the store's statements on both server sessions, more than once
			exerciseStore(ctx, t, s)
			if _, err := s.Pool().Exec(ctx, `TRUNCATE vendors, work_items, pgfallback_applied_writes`); err != nil {
				t.Fatal(err)
			}
		}
		if out := logged.String(); out != "" {
			t.Errorf("logged, behind a pooler that keeps prepared statements:\n%s", out)
		}
		// Nothing of the probe's left on a server session.
		var left int
		if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgfallback_probe%'`).Scan(&left); err != nil || left != 0 {
			t.Errorf("%d of the probe's statements left on a server session (%v)", left, err)
		}
	})
}

// preparedStatementsFail waits until a Get through s, in pgx's default
// mode behind a transaction pooler that does not keep prepared statements,
// fails as it must there: a statement missing, or already there, on the
// server session the call landed on. Without it the store was not moved
// between sessions, and the test around it would prove nothing.
func preparedStatementsFail(ctx context.Context, t *testing.T, s *pgstore.Store) {
	t.Helper()
	var pgErr *pgconn.PgError
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := s.Vendors().Get(ctx, "nobody")
		if errors.As(err, &pgErr) && (pgErr.Code == "26000" || pgErr.Code == "42P05") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("prepared statements survived PgBouncer for 10 s (last: %v): the store is not moved between sessions", err)
		}
	}
}

// preparedPassedThrough is the setting that makes PgBouncer pass prepared
// statements through to one server session, as 1.18 did: from 1.24 on it
// keeps them by default.
func preparedPassedThrough(t *testing.T) []string {
	if pgtest.PgBouncerVersion(t).AtLeast(1, 21) {
		return []string{"max_prepared_statements = 0"}
	}
	return nil
}

// shareThePooler keeps other clients busy on the pooler at pooled until the
// test ends, so that a client's transactions land on whichever server
// session is free, as in production (a client alone is handed the session
// it last used).
func shareThePooler(ctx context.Context, t *testing.T, pooled string) {
	others, err := pgxpool.New(ctx, pgtest.WithParam(pooled, "pool_max_conns", "4"))
	if err != nil {
		t.Fatal(err)
	}
	octx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); wg.Wait(); others.Close() })
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for octx.Err() == nil {
				others.Exec(octx, `SELECT pg_sleep(0.001)`)
			}
		}()
	}
}

// A listener pointed at a pooler (the pool's configuration, when no
// WithListenConfig is given) finds it out before doing anything there: no
// LISTEN, no waker's lock, no setting left on a server session that other
// clients then use. It says so once, with the remedy, and the follower is
// still woken about once a second.
func TestListenerRefusesAPooler(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	direct := pgtest.NewDatabase(t)
	pooled := pgtest.NewPgBouncer(t, direct, "transaction", 2, preparedPassedThrough(t)...)
	var logged testutil.Buffer
	s, err := pgstore.Open(ctx, pooled, pgstore.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
	if err != nil {
		t.Fatalf("open through PgBouncer: %v", pgdsn.Error(err))
	}
	defer s.Close()

	if listening := refusedListenerWakes(ctx, t, s, "behind a pooler"); listening != 0 {
		t.Errorf("wake(true) %d times: the listener said it was listening through a pooler", listening)
	}
	if why := s.ListenerRefused(); why != pgstore.RefusedPooler {
		t.Errorf("ListenerRefused() = %q, want %q", why, pgstore.RefusedPooler)
	}

	// Nothing of the listener's on any server session PgBouncer keeps.
	admin, err := pgx.Connect(ctx, direct)
	if err != nil {
		t.Fatal(pgdsn.Error(err))
	}
	defer admin.Close(ctx)
	var listened, locked int
	if err := admin.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'),
		       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
		          AND ((classid::bigint << 32) | objid::bigint) = $1)`, pgstore.ChangeWakerLockKey).Scan(&listened, &locked); err != nil {
		t.Fatal(err)
	}
	if listened != 0 || locked != 0 {
		t.Errorf("through the pooler: %d server sessions ran LISTEN, %d hold the waker's lock; want none", listened, locked)
	}

	out := logged.String()
	if n := strings.Count(out, "goes through a connection pooler"); n != 1 {
		t.Errorf("the pooler was reported %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "WithListenConfig") {
		t.Errorf("the report does not name the remedy (WithListenConfig):\n%s", out)
	}
	// The pool, through the pooler with pgx's prepared statements, is
	// warned of too, with its remedy.
	if n := strings.Count(out, "pgx prepares their statements"); n != 1 || !strings.Contains(out, "default_query_exec_mode=exec") {
		t.Errorf("the pool's prepared statements behind a pooler were warned of %d times, want once with the remedy:\n%s", n, out)
	}
}

// A listener pointed at another database than the pool's (a second DSN
// with a typo, a staging database on the same server) would hear that
// database's waker, or elect itself there, and its follower would never be
// woken for the pool's commits. It does nothing there, says so, and
// stands in for the waker.
func TestListenerRefusesAnotherDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mine, other := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	listenElsewhere(ctx, t, mine, other, pgstore.RefusedOtherDatabase, "not the pool's")
}

// listenElsewhere opens a store on poolDSN whose listener is pointed at
// listenDSN, and checks that the listener refuses to listen there for
// reason, saying said in the log, and still wakes its follower.
func listenElsewhere(ctx context.Context, t *testing.T, poolDSN, listenDSN, reason, said string) {
	t.Helper()
	listen, err := pgx.ParseConfig(listenDSN)
	if err != nil {
		t.Fatal(pgdsn.Error(err))
	}
	var logged testutil.Buffer
	s, err := pgstore.Open(ctx, poolDSN, pgstore.WithListenConfig(listen),
		pgstore.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
	if err != nil {
		t.Fatal(pgdsn.Error(err))
	}
	defer s.Close()
	if listening := refusedListenerWakes(ctx, t, s, "whose listener is pointed elsewhere ("+reason+")"); listening != 0 {
		t.Errorf("wake(true) %d times: the listener listened elsewhere (%s)", listening, reason)
	}
	if why := s.ListenerRefused(); why != reason {
		t.Errorf("ListenerRefused() = %q, want %q", why, reason)
	}
	if out := logged.String(); !strings.Contains(out, said) {
		t.Errorf("the log does not say %q:\n%s", said, out)
	}
}

// refusedListenerWakes runs s.WatchChanges until it has woken its follower
// three times, as a listener that refuses to listen must about once a
// second, and returns how many times it said it was listening.
func refusedListenerWakes(ctx context.Context, t *testing.T, s *pgstore.Store, follower string) int {
	t.Helper()
	var mu sync.Mutex
	var listening, woken int
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.WatchChanges(wctx, func(reconnected bool) {
			mu.Lock()
			defer mu.Unlock()
			if reconnected {
				listening++
			} else {
				woken++
			}
		})
	}()
	defer func() { stop(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n, l := woken, listening
		mu.Unlock()
		if n >= 3 {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("woken %d times in 10 s (listening %d), want 3: a follower %s must still be woken about once a second", n, l, follower)
		}
	}
}
