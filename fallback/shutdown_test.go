package fallback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// A deleted row came back: with the write-through queue full (another
// process held the cache's write lock), the Delete's eviction was dropped,
// and after a restart during an outage the deleted vendor was served as
// fresh. Evictions are never dropped, whatever the queue holds.
func TestEvictionIsNotDroppedWhenTheQueueIsFull(t *testing.T) {
	db := newFakeDB()
	l, cache := newTestLayer(t, db, Config{WriteQueue: 4, WriteBatch: 1}, sqlitecache.WithBusyTimeout(100*time.Millisecond))
	ctx := context.Background()
	db.put(vendor("victim"))
	for i := range 50 {
		db.put(vendor(fmt.Sprintf("v%03d", i)))
	}
	if _, err := l.Vendors().Get(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)

	release := lockCacheFile(t, cache.Path())
	for i := range 50 { // fills the queue behind the stuck writer
		if _, err := l.Vendors().Get(ctx, fmt.Sprintf("v%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Vendors().Delete(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	if l.Stats().WriteDropped == 0 {
		t.Fatal("the queue never filled; the test proves nothing")
	}
	release()
	flush(t, l)

	// Restart during an outage: a new layer over the same file.
	l.Close()
	cache.Close()
	cache2, err := sqlitecache.Open(cache.Path(), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cache2.Close()
	if _, _, err := cache2.GetVendor(ctx, "victim"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("the deleted vendor is still cached after the restart: %v", err)
	}
	db2 := newFakeDB()
	l2, err := New(db2.primary(), cache2, Config{Logger: discardLogger(), OpenTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	db2.down(errRefused)
	tripBreaker(t, l2, db2)
	if _, err := l2.Vendors().Get(ctx, "victim"); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("Get of the deleted vendor during the outage: %v, want ErrUnavailable", err)
	}
}

// An eviction the cache refuses (its lock held past the busy timeout) is
// retried until it is applied, not dropped like a set.
func TestFailedEvictionIsRetried(t *testing.T) {
	db := newFakeDB()
	l, cache := newTestLayer(t, db, Config{}, sqlitecache.WithBusyTimeout(50*time.Millisecond))
	ctx := context.Background()
	db.put(vendor("victim"))
	if _, err := l.Vendors().Get(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	release := lockCacheFile(t, cache.Path())
	if err := l.Vendors().Delete(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the eviction to fail at least once", func() bool { return l.Stats().WriteFailed > 0 })
	release()
	flush(t, l)
	if _, _, err := cache.GetVendor(ctx, "victim"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("the eviction was dropped after a failure: %v", err)
	}
}

// Close drained 4,097 queued write-throughs against a cache another
// process held locked, each batch waiting out the busy timeout: 85 s.
// It now stops at CloseTimeout, drops and counts what is left, and says
// which deletions did not reach the cache.
func TestCloseIsBoundedWhenTheCacheIsLocked(t *testing.T) {
	const busy = 300 * time.Millisecond
	var logs testutil.Buffer
	db := newFakeDB()
	l, cache := newTestLayer(t, db, Config{WriteQueue: 8192, WriteBatch: 64, CloseTimeout: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, sqlitecache.WithBusyTimeout(busy))
	ctx := context.Background()
	for i := range 4097 {
		db.put(vendor(fmt.Sprintf("v%04d", i)))
	}
	if _, err := l.Vendors().Get(ctx, "v0000"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	lockCacheFile(t, cache.Path())
	for i := range 4097 {
		if _, err := l.Vendors().Get(ctx, fmt.Sprintf("v%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Vendors().Delete(ctx, "v0000"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := l.Close()
	took := time.Since(start)
	t.Logf("Close took %v with the cache locked (CloseTimeout 200ms, busy timeout %v)", took, busy)
	// A hang guard, not a speed test: unbounded, this took 4097/64 batches
	// of one busy timeout each, about 20 s.
	if limit := 200*time.Millisecond + 2*busy + 2*time.Second; took > limit {
		t.Fatalf("Close took %v, more than CloseTimeout plus one busy wait (%v)", took, limit)
	}
	s := l.Stats()
	if s.DroppedAtClose == 0 || s.EvictionsLost != 1 {
		t.Fatalf("dropped at close %d, evictions lost %d: want some, and the one eviction", s.DroppedAtClose, s.EvictionsLost)
	}
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "dropped") {
		t.Fatalf("Close returned %v, want an error saying what was dropped", err)
	}
	if !strings.Contains(logs.String(), "vendor:v0000") {
		t.Fatalf("the lost eviction is not logged by key:\n%s", logs.String())
	}
	if err2 := l.Close(); err2 != err {
		t.Fatalf("second Close: %v, want the first's result", err2)
	}
}

// Shutdown honours its context the same way.
func TestShutdownWithAnExpiredContextDropsTheQueue(t *testing.T) {
	db := newFakeDB()
	l, cache := newTestLayer(t, db, Config{WriteQueue: 100, WriteBatch: 1}, sqlitecache.WithBusyTimeout(50*time.Millisecond))
	ctx := context.Background()
	for i := range 20 {
		db.put(vendor(fmt.Sprintf("v%02d", i)))
	}
	lockCacheFile(t, cache.Path())
	for i := range 20 {
		if _, err := l.Vendors().Get(ctx, fmt.Sprintf("v%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	expired, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Shutdown(expired); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with a canceled context and a stuck cache: %v", err)
	}
	if _, err := l.Vendors().Get(ctx, "v01"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Shutdown: %v", err)
	}
}
