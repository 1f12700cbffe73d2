package fallback_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// Exactly-once replay, shown with real interruptions: a process killed
// with SIGKILL in the middle of its replay, and a replay whose writes
// reached PostgreSQL but could not be removed from the queue (another
// process held the cache file's write lock).

const (
	childEnv      = "PGFALLBACK_TEST_REPLAY_CHILD"
	childDSNEnv   = "PGFALLBACK_TEST_REPLAY_DSN"
	childCacheEnv = "PGFALLBACK_TEST_REPLAY_CACHE"
)

// replayChild is the child process's whole life: open the layer on the
// cache file its parent filled, replay, and wait to be killed.
func replayChild() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	pool, err := pgxpool.New(context.Background(), os.Getenv(childDSNEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	cache, err := sqlitecache.Open(os.Getenv(childCacheEnv), sqlitecache.WithLogger(nil))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	_, err = fallback.New(pgstore.New(pool), cache, fallback.Config{
		ReplayInterval: 50 * time.Millisecond, PrimaryTimeout: 5 * time.Second,
		ReplayBatch: 4, // several commits, so that the kill lands between two, or in one
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	fmt.Println("replaying")
	select {} // until SIGKILL
}

func TestReplayIsExactlyOnceAcrossAKill(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	const n = 60
	names := seed(t, f.s, n)
	f.down(t)
	queueUpdates(t, f.s.layer, names)
	f.s.close() // the application stops with its queue in the file

	// PostgreSQL is back, slowly: each round trip of the child's replay
	// takes tens of milliseconds, so the kill lands in the middle.
	if err := f.proxy.Latency(15*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childDSNEnv+"="+f.proxied, childCacheEnv+"="+f.cachePath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	applied := func() int {
		var c int
		if err := f.other.store.Pool().QueryRow(ctx, `SELECT count(*) FROM pgfallback_applied_writes`).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitFor(t, 30*time.Second, "the child to replay some writes", func() bool { return applied() >= 10 })
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	err := cmd.Wait()
	atKill := applied()
	if atKill >= n {
		t.Fatalf("the child replayed all %d writes before the kill; the test needs it to stop halfway", n)
	}
	t.Logf("killed the replaying process (%v) with %d of %d writes applied", err, atKill, n)

	// The application starts again and finishes the replay.
	if err := f.proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	f.s = openStack(t, f.proxied, f.cachePath, queueConfig())
	f.waitReplayed(t)
	st := f.s.layer.Stats().Queued
	t.Logf("after the restart: %d replayed, %d of them found already applied", st.Replayed, st.AlreadyApplied)
	if got := applied(); got != n {
		t.Fatalf("%d writes recorded as applied, want %d", got, n)
	}
	f.updatedOnce(t)
	if dead, _ := f.s.layer.DeadLetters(ctx); len(dead) != 0 {
		t.Fatalf("dead letters after the kill: %+v", dead)
	}
}

// A write applied in PostgreSQL whose removal from the queue fails (the
// cache file is locked by another process) is found applied by the next
// replay, by its ID, and not applied again.
func TestReplayAfterALostQueueUpdateAppliesNothingTwice(t *testing.T) {
	// The breaker stays closed throughout: the replay runs on its timer.
	cfg := queueConfig()
	cfg.ConsecutiveFailures = 1000
	f := newQueueFixture(t, cfg)
	f.s.close()
	f.s = openStack(t, f.proxied, f.cachePath, cfg, sqlitecache.WithBusyTimeout(50*time.Millisecond))
	ctx := context.Background()
	names := seed(t, f.s, 1)
	v, _ := f.s.layer.Vendors().Get(ctx, names[0])
	if err := f.proxy.Down(); err != nil {
		t.Fatal(err)
	}
	f.s.store.Pool().Reset() // no connection the proxy cut: the write fails to connect
	v.Status = repository.VendorBroken
	if _, err := f.s.layer.Vendors().Update(fallback.WithWriteQueue(ctx), v); err != nil {
		t.Fatal(err)
	}
	// A first replay marks it sent and fails to connect; then another
	// process takes the cache's write lock and keeps it.
	waitFor(t, 10*time.Second, "a first replay", func() bool { return f.s.layer.Stats().Queued.ReplayFailures > 0 })
	db, err := sql.Open("sqlite3", "file:"+f.cachePath+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`UPDATE cache_metadata SET updated_at = updated_at`); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the write to reach PostgreSQL", func() bool {
		got, err := f.pgVendor(t, names[0])
		return err == nil && got.Version == 2
	})
	waitFor(t, 10*time.Second, "the replay to fail on the lock", func() bool {
		return strings.Contains(f.s.layer.Stats().Queued.LastError, "removing them from the queue failed")
	})
	if n := f.pending(t); n != 1 {
		t.Fatalf("%d pending while the file is locked, want the applied write still queued", n)
	}
	// The stall is visible: PostgreSQL answers, the queue does not drain.
	if st := f.s.layer.Stats().Queued; !st.Stalled || st.ReplayFailures == 0 || st.OldestPending.IsZero() {
		t.Fatalf("stats while stalled: %+v; want Stalled, failures counted, the oldest write's time", st)
	}
	if h := f.s.layer.CheckHealth(); h.Status != "degraded" || !h.Ready || h.Queue == nil || !h.Queue.Stalled ||
		!strings.Contains(h.Reason, "not replaying") || h.Queue.OldestAgeSeconds <= 0 || h.Queue.LastError == "" {
		t.Fatalf("health while stalled: %+v reason %q queue %+v", h.Status, h.Reason, h.Queue)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	f.waitReplayed(t)
	if h := f.s.layer.CheckHealth(); h.Status != "ok" || h.Queue == nil || h.Queue.Stalled || h.Queue.Pending != 0 {
		t.Fatalf("health after the replay: %+v queue %+v", h.Status, h.Queue)
	}
	if got, err := f.pgVendor(t, names[0]); err != nil || got.Version != 2 {
		t.Fatalf("after the second replay: %+v, %v; want version 2 (applied once)", got, err)
	}
	if st := f.s.layer.Stats().Queued; st.AlreadyApplied != 1 {
		t.Fatalf("stats %+v, want the second replay to find it already applied", st)
	}
}

// A write first handed to PostgreSQL longer than AppliedWriteRetention ago
// may have been applied with its record pruned since: it is not replayed
// (that could apply it twice) but dead-lettered as ErrOutcomeUnknown, for
// an operator to check, retry or discard.
func TestWriteSentBeforeTheRetentionIsNotReplayed(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 1)
	v, _ := f.s.layer.Vendors().Get(ctx, names[0])
	f.down(t)
	v.Status = repository.VendorBroken
	if _, err := f.s.layer.Vendors().Update(fallback.WithWriteQueue(ctx), v); err != nil {
		t.Fatal(err)
	}
	// A replay sent it eight days ago (and, say, crashed before it learned
	// the outcome).
	db, err := sql.Open("sqlite3", "file:"+f.cachePath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	eightDays := float64(time.Now().Add(-8*24*time.Hour).UnixNano()) / 1e9
	if _, err := db.Exec(`UPDATE queued_writes SET sent_at = ?`, eightDays); err != nil {
		t.Fatal(err)
	}
	f.up(t)
	dead, err := f.s.layer.DeadLetters(ctx)
	if err != nil || len(dead) != 1 || !strings.Contains(dead[0].Err, "AppliedWriteRetention") {
		t.Fatalf("dead letters %+v, %v; want the write, for its age", dead, err)
	}
	if seen := f.conflicts.all(); len(seen) != 1 || !errors.Is(seen[0].err, repository.ErrOutcomeUnknown) {
		t.Fatalf("OnConflict: %+v, want one ErrOutcomeUnknown", seen)
	}
	if got, err := f.pgVendor(t, names[0]); err != nil || got.Version != 1 {
		t.Fatalf("PostgreSQL: %+v, %v; want it untouched", got, err)
	}
	// The operator decides to apply it.
	if err := f.s.layer.Retry(ctx, dead[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the retried write to be applied", func() bool {
		got, err := f.pgVendor(t, names[0])
		return err == nil && got.Version == 2
	})
}
