package fallback_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
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
	u, err := url.Parse(pgtest.NewPgBouncer(t, direct, "transaction", 2, "server_login_retry = 1"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("default_query_exec_mode", "exec")
	u.RawQuery = q.Encode()
	listen, err := pgx.ParseConfig(direct)
	if err != nil {
		t.Fatal(err)
	}
	const primaryTimeout = 500 * time.Millisecond
	s := openStackWith(t, u.String(), []pgstore.Option{pgstore.WithListenConfig(listen)}, filepath.Join(t.TempDir(), "cache.db"),
		fallback.Config{PrimaryTimeout: primaryTimeout, OpenTimeout: 200 * time.Millisecond})
	names := seed(t, s, 20)

	var failed, reads, maxLatency atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				_, err := s.layer.Vendors().Get(ctx, names[rand.IntN(len(names))])
				took := int64(time.Since(start))
				for cur := maxLatency.Load(); took > cur && !maxLatency.CompareAndSwap(cur, took); cur = maxLatency.Load() {
				}
				reads.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	var once sync.Once
	stopReaders := func() { once.Do(func() { close(stop); wg.Wait() }) }
	defer stopReaders()

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the breaker to open", func() bool { return s.layer.State() == fallback.Open })
	atOpen := reads.Load()
	waitFor(t, 10*time.Second, "reads served while open", func() bool { return reads.Load() > atOpen+200 })
	if _, err := s.layer.Vendors().Create(ctx, repository.Vendor{Name: "during-outage", Status: repository.VendorOperational}); !errors.Is(err, repository.ErrUnavailable) {
		t.Errorf("write during the outage: %v, want ErrUnavailable", err)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	waitFor(t, 20*time.Second, "the breaker to close", func() bool { return s.layer.State() == fallback.Closed })
	closedAfter := time.Since(started)
	stopReaders()

	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d reads of cached keys failed; first: %v", n, reads.Load(), *firstErr.Load())
	}
	if max := time.Duration(maxLatency.Load()); max > primaryTimeout+300*time.Millisecond {
		t.Errorf("slowest read took %s; PrimaryTimeout is %s", max, primaryTimeout)
	}
	if _, err := s.store.Vendors().Get(ctx, "during-outage"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("a write reported failed is in PostgreSQL: %v", err)
	}
	st := s.layer.Stats()
	t.Logf("reads %d, max latency %s, breaker closed %s after PostgreSQL started; failures %v",
		reads.Load(), time.Duration(maxLatency.Load()).Round(time.Millisecond), closedAfter.Round(time.Millisecond), st.PrimaryFailures)
}
