package fallback_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// PostgreSQL stops while the application reaches it through PgBouncer in
// transaction mode, set up as docs/poolers.md says (exec mode, listener
// direct). The pooler stays up and answers the connect, so what the layer
// sees is PgBouncer's queue and its refusals, not a refused connection:
// they must still be an outage. Reads of cached keys never fail, a write
// fails with ErrUnavailable, and the breaker closes once PostgreSQL is
// back. PgBouncer waits server_login_retry after a failed login before it
// tries PostgreSQL again (15 s by default: the breaker then closed 15.05 s
// after the start); the test sets 1 s, as docs/poolers.md advises.
func TestServerStoppedBehindPgBouncer(t *testing.T) {
	srv := pgtest.NewServer(t)
	ctx := context.Background()
	direct, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pooled := pgtest.WithParam(pgtest.NewPgBouncer(t, direct, "transaction", 2, "server_login_retry = 1"), "default_query_exec_mode", "exec")
	listen, err := pgx.ParseConfig(direct)
	if err != nil {
		t.Fatal(err)
	}
	const primaryTimeout = 500 * time.Millisecond
	s := openStackWith(t, pooled, []pgstore.Option{pgstore.WithListenConfig(listen)}, filepath.Join(t.TempDir(), "cache.db"),
		fallback.Config{PrimaryTimeout: primaryTimeout, OpenTimeout: 200 * time.Millisecond})
	names := seed(t, s, 20)

	readers := readCachedKeys(ctx, s, names, 8)
	defer readers.stop()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the breaker to open", func() bool { return s.layer.State() == fallback.Open })
	atOpen := readers.reads.Load()
	waitFor(t, 10*time.Second, "reads served while open", func() bool { return readers.reads.Load() > atOpen+200 })
	if _, err := s.layer.Vendors().Create(ctx, repository.Vendor{Name: "during-outage", Status: repository.VendorOperational}); !errors.Is(err, repository.ErrUnavailable) {
		t.Errorf("write during the outage: %v, want ErrUnavailable", err)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	waitFor(t, 20*time.Second, "the breaker to close", func() bool { return s.layer.State() == fallback.Closed })
	closedAfter := time.Since(started)
	readers.stop()
	readers.check(t, primaryTimeout)
	if _, err := s.store.Vendors().Get(ctx, "during-outage"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("a write reported failed is in PostgreSQL: %v", err)
	}
	st := s.layer.Stats()
	t.Logf("reads %d, max latency %s, breaker closed %s after PostgreSQL started; failures %v",
		readers.reads.Load(), time.Duration(readers.maxLatency.Load()).Round(time.Millisecond), closedAfter.Round(time.Millisecond), st.PrimaryFailures)
}

// A listener that refuses to listen where it is pointed (here another
// database than the pool's: a second DSN with a typo) is correct but slow,
// waking its follower once a second; the log says so once, and Stats say
// it for as long as it lasts, where health checks and metrics look.
func TestStatsSayTheListenerIsRefused(t *testing.T) {
	mine, other := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	listen, err := pgx.ParseConfig(other)
	if err != nil {
		t.Fatal(err)
	}
	refused := openStackWith(t, mine, []pgstore.Option{pgstore.WithListenConfig(listen), pgstore.WithLogger(nil)},
		filepath.Join(t.TempDir(), "refused.db"), fallback.Config{})
	defer refused.close()
	waitFor(t, 10*time.Second, "Stats to say the listener is refused", func() bool {
		return refused.layer.Stats().Feed.ListenerRefused == pgstore.RefusedOtherDatabase
	})

	fine := openStack(t, mine, filepath.Join(t.TempDir(), "fine.db"), fallback.Config{})
	defer fine.close()
	waitFor(t, 10*time.Second, "the feed to follow", func() bool { return fine.layer.Stats().Feed.State == fallback.FeedFollowing })
	if why := fine.layer.Stats().Feed.ListenerRefused; why != "" {
		t.Errorf("a listener pointed where the pool is: ListenerRefused %q, want none", why)
	}
}
