package fallback_test

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// TestServerRefusalsPassThrough: PostgreSQL refusing a call for a reason
// that is about neither the row nor reaching the server (a grant the
// runtime role lacks, a serialization failure) is its answer: returned to
// the caller wrapped, with its SQLSTATE, matching none of the sentinels;
// never served from the cache, never counted toward tripping the breaker.
// A role without a grant is a deployment to fix, which the cache would
// hide; a serialization failure is the caller's to retry.
func TestServerRefusalsPassThrough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	role, password := pgtest.NewRole(t, pgtest.Shared(t).DSN(), "app") // before the database: dropped after it
	dsn := pgtest.NewDatabase(t)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	// No DELETE; every transaction of the role at REPEATABLE READ.
	for _, stmt := range []string{
		"GRANT SELECT, INSERT, UPDATE ON vendors TO " + role,
		"ALTER ROLE " + role + " IN DATABASE " + pgx.Identifier{admin.Config().Database}.Sanitize() +
			" SET default_transaction_isolation = 'repeatable read'",
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	owner, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if _, err := owner.Vendors().Create(ctx, repository.Vendor{Name: "refused", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal("the test DSN is not a URL")
	}
	u.User = url.UserPassword(role, password)
	s := openStack(t, u.String(), filepath.Join(t.TempDir(), "cache.db"),
		fallback.Config{ConsecutiveFailures: 1, DisableChangeFeed: true})
	vendors := s.layer.Vendors()
	v, err := vendors.Get(ctx, "refused")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.layer.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	passedThrough := func(op string, err error, code string) {
		t.Helper()
		var pgErr *pgconn.PgError
		switch {
		case !errors.As(err, &pgErr) || pgErr.Code != code:
			t.Errorf("%s: %v, want SQLSTATE %s", op, err, code)
		case errors.Is(err, repository.ErrUnavailable), errors.Is(err, repository.ErrOutcomeUnknown),
			errors.Is(err, repository.ErrConflict), errors.Is(err, repository.ErrNotFound), repository.IsAnswer(err):
			t.Errorf("%s: %v matches a sentinel; PostgreSQL's refusal is neither an outage nor about the row", op, err)
		}
		st := s.layer.Stats()
		if st.State != fallback.Closed || len(st.PrimaryFailures) > 0 || st.ServedFresh+st.ServedStale > 0 {
			t.Errorf("after %s: breaker %v, outage failures %v, served from the cache %d: a refusal is an answer",
				op, st.State, st.PrimaryFailures, st.ServedFresh+st.ServedStale)
		}
	}

	// A grant the role lacks: with ConsecutiveFailures 1, one outage would
	// have opened the breaker.
	err = vendors.Delete(ctx, "refused")
	passedThrough("Delete without the grant", err, "42501")

	// A serialization failure: another transaction updates the row while
	// the layer's UPDATE waits for its lock, and commits.
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `UPDATE vendors SET status = 'broken', version = version + 1 WHERE name = 'refused'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		v.Metadata = map[string]any{"by": "layer"}
		_, err := vendors.Update(ctx, v)
		done <- err
	}()
	waitFor(t, 10*time.Second, "the layer's UPDATE to wait for the row lock", func() bool {
		var waiting bool
		err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock')`,
			role).Scan(&waiting)
		return err == nil && waiting
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	passedThrough("Update under REPEATABLE READ after a concurrent update", <-done, "40001")

	// A row locked by a long transaction: with the role's lock_timeout
	// below PrimaryTimeout, the wait ends as PostgreSQL's answer (55P03),
	// not as a timeout counted toward the breaker (docs/layer.md).
	if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" SET lock_timeout = '200ms'"); err != nil {
		t.Fatal(err)
	}
	s.store.Pool().Reset() // the setting applies to new sessions
	lock, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(context.Background())
	if _, err := lock.Exec(ctx, `SELECT FROM vendors WHERE name = 'refused' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	cur, err := vendors.Get(ctx, "refused")
	if err != nil {
		t.Fatal(err)
	}
	cur.Metadata = map[string]any{"by": "layer"}
	_, err = vendors.Update(ctx, cur)
	passedThrough("Update of a row another transaction holds locked", err, "55P03")

	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// The cache was not told the refused writes happened: a read goes to
	// PostgreSQL and caches its row.
	got, err := vendors.Get(ctx, "refused")
	if err != nil || got.Status != repository.VendorBroken || got.Version != v.Version+1 {
		t.Errorf("Get after the refusals: %+v, %v; want PostgreSQL's row (broken, version %d)", got, err, v.Version+1)
	}
}
