package pgstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/migrations"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// Two services share one database, a schema each, each migrated into its
// own: two installations, two change logs. Each gets its own waker,
// channel and pruning lock. With one of each for the whole database, the
// first service's waker was the only one: the second's followers heard
// notifications they could not open (sealed under the other log's id),
// each a wake-up into a read of their own log, and never a broadcast of
// their own changes; pruning one log held off the other's.
func TestTwoInstallationsInOneDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsnA := pgtest.NewDatabase(t) // migrated in schema public
	dsnB := installInSchemaB(ctx, t, dsnA)
	admin, err := pgx.Connect(ctx, dsnA)
	if err != nil {
		t.Fatal(pgdsn.Error(err))
	}
	defer admin.Close(ctx)
	open := func(dsn string, opts ...pgstore.Option) *pgstore.Store {
		s, err := pgstore.Open(ctx, dsn, opts...)
		if err != nil {
			t.Fatal(pgdsn.Error(err))
		}
		t.Cleanup(s.Close)
		return s
	}
	a, b := open(dsnA), open(dsnB)
	holdsWakerLock := func(key int64) bool {
		var held bool
		if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND ((classid::bigint << 32) | objid::bigint) = $1)`, key).Scan(&held); err != nil {
			t.Fatal(err)
		}
		return held
	}
	wctx, stop := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	defer func() { stop(); watchers.Wait() }()

	// A's listener first: it is A's waker.
	watch(t, ctx, a)
	feedEventually(t, 10*time.Second, "A's waker", func() bool { return holdsWakerLock(pgstore.ChangeWakerLockKey) })

	// B's follower: it reads what its wake-ups announce, from the
	// broadcasts its listener heard when it can.
	cursor, err := b.ChangeHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wakes, broadcasts int
	var seen []repository.Change
	wakeB := make(chan struct{}, 1)
	watchers.Add(2)
	go func() {
		defer watchers.Done()
		b.WatchChanges(wctx, func(reconnected bool) {
			select {
			case wakeB <- struct{}{}:
			default:
			}
		})
	}()
	go func() {
		defer watchers.Done()
		for {
			select {
			case <-wctx.Done():
				return
			case <-wakeB:
			}
			batch, heard := b.ReadHeardChanges(cursor, 100)
			if !heard {
				var err error
				if batch, err = b.ReadChanges(wctx, cursor, 100); err != nil {
					continue
				}
			}
			mu.Lock()
			wakes++
			if heard {
				broadcasts++
			}
			seen = append(seen, batch.Changes...)
			cursor = batch.Next
			mu.Unlock()
		}
	}()
	var oid uint32
	if err := admin.QueryRow(ctx, `SELECT 'b.pgfallback_changes'::regclass::oid`).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	feedEventually(t, 10*time.Second, "B's own waker", func() bool { return holdsWakerLock(pgstore.ChangeWakerLockKey ^ int64(oid)) })

	// B's commits reach B's follower in broadcasts, which only a waker
	// of B's log can seal. One at a time, each once the last has arrived:
	// a follower that happens to read the log first (woken by its
	// listener's connect, late on a busy machine) takes a change from
	// there instead.
	seenAll := func(n int) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) >= n }
	}
	vb, err := b.Vendors().Create(ctx, repository.Vendor{Name: "in-b", Status: repository.VendorOperational})
	if err != nil {
		t.Fatal(err)
	}
	feedEventually(t, 10*time.Second, "B's first change", seenAll(1))
	for i := range 5 {
		if vb, err = b.Vendors().Update(ctx, vb); err != nil {
			t.Fatal(err)
		}
		feedEventually(t, 10*time.Second, "B's next change", seenAll(2+i))
	}
	mu.Lock()
	if broadcasts == 0 {
		t.Errorf("B's follower read its %d changes in %d wake-ups, none from a broadcast: no waker of its own", len(seen), wakes)
	}
	before := wakes
	mu.Unlock()

	// A's commits, broadcast by A's waker, do not wake B's follower.
	va, err := a.Vendors().Create(ctx, repository.Vendor{Name: "in-a", Status: repository.VendorOperational})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if va, err = a.Vendors().Update(ctx, va); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // a commit per look of A's waker, or so
	}
	// A's waker broadcast most of them meanwhile (it looks every 5 ms): a
	// follower of B that could hear them was woken by them.
	mu.Lock()
	after := wakes
	mu.Unlock()
	// Up to two may be B's own, late: its waker's broadcast of its last
	// change, after the follower had read it from the log, and a wake-up
	// still queued for the reader. A's broadcasts would be about 20.
	if after-before > 2 {
		t.Errorf("B's follower woken %d times by A's 21 commits, want none", after-before)
	}

	// Pruning one log does not hold off the other's.
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, pgstore.ChangePruneLockKey); err != nil {
		t.Fatal(err)
	}
	if n, err := b.PruneChanges(ctx, 0); err != nil || n < 6 {
		t.Errorf("B pruned %d changes while A's pruning lock is held (%v), want its 6", n, err)
	}
	if n, err := a.PruneChanges(ctx, 0); err != nil || n != 0 {
		t.Errorf("A pruned %d changes while its lock is held (%v), want 0", n, err)
	}
}

// A listener whose search_path finds another installation's log than the
// pool's does not listen there: it would elect itself that log's waker,
// and never wake its follower for the pool's commits.
func TestListenerRefusesAnotherInstallation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	dsnB := installInSchemaB(ctx, t, dsn)
	// The listener on schema public's installation.
	listenElsewhere(ctx, t, dsnB, dsn, pgstore.RefusedOtherInstallation, `schema \"public\", not the pool's, in schema \"b\"`)
}

// installInSchemaB migrates a second installation into schema b of the
// database of dsn, and returns dsn with search_path=b.
func installInSchemaB(ctx context.Context, t *testing.T, dsn string) string {
	t.Helper()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(pgdsn.Error(err))
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `CREATE SCHEMA b`); err != nil {
		t.Fatal(err)
	}
	dsnB := pgtest.WithParam(dsn, "search_path", "b")
	if err := migrations.Up(ctx, dsnB); err != nil {
		t.Fatal(err)
	}
	return dsnB
}
