package fallback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// A server that answers reads and refuses writes — read-only (SQLSTATE
// 25006: a provider's full-disk guard, a maintenance window) or out of
// disk space (53100) — is not an outage: a run of refused writes, far
// more than trip the breaker on failures, leaves it closed, reads keep
// coming from PostgreSQL (a key the cache lacks included), each write
// fails as not written, and Stats, the health check and the log say so,
// with the cause, until a write is applied again.
func TestReadOnlyPrimaryRefusesWritesAndServesReads(t *testing.T) {
	for _, c := range []struct {
		code   string
		refuse func(*fakeDB) *atomic.Bool
		kind   FailureKind
		why    string
	}{
		{"25006", func(db *fakeDB) *atomic.Bool { return &db.readOnly }, FailReadOnly, "read-only"},
		{"53100", func(db *fakeDB) *atomic.Bool { return &db.diskFull }, FailDiskFull, "out of disk space"},
	} {
		t.Run(c.code, func(t *testing.T) {
			db := newFakeDB()
			logs := &testutil.Buffer{}
			l, cache := newTestLayer(t, db, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			ctx := context.Background()
			db.put(vendor("cached"))
			db.put(vendor("uncached"))
			cached, err := l.Vendors().Get(ctx, "cached")
			if err != nil {
				t.Fatal(err)
			}
			flush(t, l)

			c.refuse(db).Store(true)
			for i := range 50 { // ConsecutiveFailures is 5
				up := cached
				up.Status = repository.VendorBroken
				_, err := l.Vendors().Update(ctx, up)
				var pgErr *pgconn.PgError
				if !errors.Is(err, repository.ErrUnavailable) || errors.Is(err, repository.ErrOutcomeUnknown) ||
					!errors.As(err, &pgErr) || pgErr.Code != c.code {
					t.Fatalf("update %d: %v, want ErrUnavailable (not written) with the %s cause", i, err, c.code)
				}
			}
			if err := l.Vendors().Delete(ctx, "cached"); !errors.Is(err, repository.ErrUnavailable) {
				t.Fatalf("delete: %v", err)
			}
			for _, name := range []string{"cached", "uncached"} {
				rctx, prov := WithProvenance(ctx)
				v, err := l.Vendors().Get(rctx, name)
				if err != nil || prov.Origin().Source != SourcePrimary || v.Version != 1 {
					t.Fatalf("Get %s: %+v, %v from %v; want version 1 from PostgreSQL", name, v, err, prov.Origin().Source)
				}
			}
			s := l.Stats()
			if s.State != Closed || s.Transitions != 0 {
				t.Fatalf("the breaker moved on refused writes: %v, %d transitions", s.State, s.Transitions)
			}
			if s.ReadOnlySince.IsZero() || s.ReadOnlyCause != c.kind || s.PrimaryFailures[c.kind] != 51 || len(s.PrimaryFailures) != 1 {
				t.Fatalf("Stats: refusing since %v (%q), failures %v; want a time, %q, and 51 of them", s.ReadOnlySince, s.ReadOnlyCause, s.PrimaryFailures, c.kind)
			}
			h := l.CheckHealth()
			if h.Status != "degraded" || !h.Ready || !strings.Contains(h.Reason, "refuses writes ("+c.why+")") || h.ReadOnlySince == nil {
				t.Fatalf("health: %+v", h)
			}
			flush(t, l)
			if e, _, err := cache.GetVendor(ctx, "cached"); err != nil || e.Version != 1 {
				t.Fatalf("a refused write reached the cache: %+v, %v", e, err)
			}

			c.refuse(db).Store(false)
			if _, err := l.Vendors().Update(ctx, cached); err != nil {
				t.Fatal(err)
			}
			if s := l.Stats(); !s.ReadOnlySince.IsZero() || s.ReadOnlyCause != "" || l.CheckHealth().Status != "ok" {
				t.Fatalf("after a write was applied: refusing since %v (%q), health %+v", s.ReadOnlySince, s.ReadOnlyCause, l.CheckHealth())
			}
			out := logs.String()
			if n := strings.Count(out, "PostgreSQL refuses writes ("+c.why+")"); n != 1 {
				t.Errorf("the refusals were logged %d times, want once:\n%s", n, out)
			}
			if n := strings.Count(out, "PostgreSQL takes writes again"); n != 1 {
				t.Errorf("the end was logged %d times, want once:\n%s", n, out)
			}
		})
	}
}

// A read that PostgreSQL refuses for lack of disk space (a sort that spills
// to a full disk) is answered from the cache when it holds the key, and
// says where it came from; the breaker counts nothing, and no write was
// refused, so the layer does not claim writes are.
func TestDiskFullReadIsServedFromTheCache(t *testing.T) {
	db := newFakeDB()
	l, _ := newTestLayer(t, db, Config{})
	ctx := context.Background()
	db.put(vendor("cached"))
	if _, err := l.Vendors().Get(ctx, "cached"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	db.down(fmt.Errorf("pgstore: %w", &pgconn.PgError{Code: "53100", Message: "could not write to file: No space left on device"}))
	for range 20 {
		rctx, prov := WithProvenance(ctx)
		if _, err := l.Vendors().Get(rctx, "cached"); err != nil || prov.Origin().Source != SourceCache {
			t.Fatalf("Get on a full disk: %v from %v, want the cached row", err, prov.Origin().Source)
		}
	}
	if _, err := l.Vendors().Get(ctx, "uncached"); !errors.Is(err, repository.ErrUnavailable) || errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Get of a key the cache lacks on a full disk: %v, want ErrUnavailable", err)
	}
	if s := l.Stats(); s.State != Closed || s.Transitions != 0 || !s.ReadOnlySince.IsZero() || s.PrimaryFailures[FailDiskFull] != 21 {
		t.Fatalf("Stats: %v after %d transitions, refusing writes since %v, failures %v", s.State, s.Transitions, s.ReadOnlySince, s.PrimaryFailures)
	}
}

// A service that stops writing in a read-only window must not report the
// window for as long as it writes nothing: the prober asks a primary that
// can tell (repository.WriteChecker) at the first refusal and then every
// OpenTimeout. It names a standby (a connection string that reached a
// replica), ends the window when the server takes writes again, with no
// write, and never ends a full disk's, which no check can see.
func TestReadOnlyWindowEndsWhenACheckFindsWritesTaken(t *testing.T) {
	db := newFakeDB()
	logs := &testutil.Buffer{}
	var standby atomic.Bool
	var checks atomic.Int64
	checker := &mock.WriteChecker{TakesWritesFn: func(ctx context.Context) (bool, bool, error) {
		checks.Add(1)
		if err := db.enter(ctx); err != nil {
			return false, false, err
		}
		return !db.readOnly.Load() && !standby.Load(), standby.Load(), nil
	}}
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(struct {
		*mock.Primary
		*mock.WriteChecker
	}{db.primary(), checker}, cache, Config{Logger: slog.New(slog.NewTextHandler(logs, nil)), OpenTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); cache.Close() })
	ctx := context.Background()
	v, err := l.Vendors().Create(ctx, repository.Vendor{Name: "v", Status: repository.VendorOperational})
	if err != nil {
		t.Fatal(err)
	}
	if checks.Load() != 0 {
		t.Fatalf("%d checks while PostgreSQL took writes, want none", checks.Load())
	}
	refuse := func() {
		t.Helper()
		if _, err := l.Vendors().Update(ctx, v); !errors.Is(err, repository.ErrUnavailable) {
			t.Fatalf("update: %v, want refused", err)
		}
	}

	db.readOnly.Store(true)
	standby.Store(true)
	refuse()
	eventually(t, 5*time.Second, "the check to name a standby", func() bool { return l.Stats().ReadOnlyStandby })
	if h := l.CheckHealth(); h.Status != "degraded" || !strings.Contains(h.Reason, "(read-only: a standby)") {
		t.Fatalf("health on a standby: %+v", h)
	}
	since := l.Stats().ReadOnlySince
	n := checks.Load()
	eventually(t, 5*time.Second, "more checks", func() bool { return checks.Load() >= n+3 })
	if c := strings.Count(logs.String(), "PostgreSQL is a standby"); c != 1 {
		t.Fatalf("the standby was logged %d times, want once:\n%s", c, logs)
	}

	// Promoted (or the guard lifted): the window ends with no write.
	standby.Store(false)
	db.readOnly.Store(false)
	eventually(t, 5*time.Second, "the window to end without a write", func() bool { return l.Stats().ReadOnlySince.IsZero() })
	if s := l.Stats(); s.ReadOnlyCause != "" || s.ReadOnlyStandby || l.CheckHealth().Status != "ok" {
		t.Fatalf("after the check: cause %q, standby %v, health %+v", s.ReadOnlyCause, s.ReadOnlyStandby, l.CheckHealth())
	}
	if !strings.Contains(logs.String(), "seen=checked") {
		t.Fatalf("the end was not logged as checked:\n%s", logs)
	}

	// A check that began in a run that has ended since changes nothing
	// in the next run.
	db.readOnly.Store(true)
	refuse()
	if s := l.Stats(); s.ReadOnlySince.IsZero() || !s.ReadOnlySince.After(since) {
		t.Fatalf("a new run: since %v", s.ReadOnlySince)
	}
	l.readOnly.checked(since.UnixNano(), true, false)
	if l.Stats().ReadOnlySince.IsZero() {
		t.Fatal("a check of an earlier run ended this one")
	}
	db.readOnly.Store(false)
	eventually(t, 5*time.Second, "the second window to end", func() bool { return l.Stats().ReadOnlySince.IsZero() })

	// A full disk: no check is made, and none could end it.
	db.diskFull.Store(true)
	refuse()
	n = checks.Load()
	l.checkWrites()
	if s := l.Stats(); s.ReadOnlySince.IsZero() || s.ReadOnlyCause != FailDiskFull || checks.Load() != n {
		t.Fatalf("a full disk after a check: since %v, cause %q, %d checks made, want none", s.ReadOnlySince, s.ReadOnlyCause, checks.Load()-n)
	}
	db.diskFull.Store(false)
	if _, err := l.Vendors().Update(ctx, v); err != nil {
		t.Fatal(err)
	}
	if !l.Stats().ReadOnlySince.IsZero() {
		t.Fatal("a write applied did not end the full disk's run")
	}
}
