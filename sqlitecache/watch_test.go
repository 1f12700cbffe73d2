package sqlitecache

import (
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/repository"
)

func openWatched(t *testing.T, path string, opts ...Option) (*Cache, *testutil.Buffer) {
	t.Helper()
	logs := &testutil.Buffer{}
	base := []Option{WithCleanupInterval(0), WithFileCheckInterval(0), WithLogger(slog.New(slog.NewTextHandler(logs, nil)))}
	c, err := Open(path, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for _, n := range []string{"a", "b", "c"} {
		if err := c.SetVendor(bg, testVendor(n, 1)); err != nil {
			t.Fatal(err)
		}
	}
	return c, logs
}

// afterReopen checks a cache that has just recovered from losing its
// file: counted, logged, working, and working on the file at the path (a
// second reader of the path sees what it writes).
func afterReopen(t *testing.T, c *Cache, logs *testutil.Buffer, how string) {
	t.Helper()
	s, err := c.Stats(bg)
	if err != nil || s.FileLost != 1 || s.Reopens != 1 {
		t.Errorf("Stats = %+v, %v; want FileLost 1, Reopens 1", s, err)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, how) {
		t.Errorf("loss not logged at Error: %s", l)
	}
	if err := c.SetVendor(bg, testVendor("after", 1)); err != nil {
		t.Fatalf("SetVendor after reopen: %v", err)
	}
	if _, _, err := c.GetVendor(bg, "after"); err != nil {
		t.Errorf("GetVendor after reopen: %v", err)
	}
	if got := modeOf(t, c.abs); got != DefaultFileMode {
		t.Errorf("recreated file: mode %v", got)
	}
	r, err := OpenReadOnly(c.Path(), WithLogger(discardLogger()))
	if err != nil {
		t.Fatalf("the path holds no cache after the reopen: %v", err)
	}
	defer r.Close()
	if _, _, err := r.GetVendor(bg, "after"); err != nil {
		t.Errorf("a new reader of the path does not see the write: %v", err)
	}
	if c.checkFile() {
		t.Error("the fresh file is reported lost")
	}
}

// A file deleted under a running Cache: writes went on "succeeding" into
// the deleted inode, unnoticed, and a new process started from nothing.
func TestFileDeletedUnderOpenCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	c, logs := openWatched(t, path)
	if c.checkFile() {
		t.Fatal("a healthy file is reported lost")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if !c.checkFile() {
		t.Fatal("deleted file not detected")
	}
	afterReopen(t, c, logs, "deleted")
}

// A file truncated to 0 bytes under a running Cache: reads failed with "no
// such table" while writes "succeeded".
func TestFileTruncatedUnderOpenCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	c, logs := openWatched(t, path)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if !c.checkFile() {
		t.Fatal("truncated file not detected")
	}
	afterReopen(t, c, logs, "truncated")
}

// The periodic check finds a loss by itself.
func TestFileWatcherChecksPeriodically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	c, logs := openWatched(t, path, WithFileCheckInterval(5*time.Millisecond))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher to reopen", func() bool {
		s, _ := c.Stats(bg)
		return s.Reopens == 1
	})
	afterReopen(t, c, logs, "deleted")
}

// An error that suggests a lost file triggers a check at once, long
// before the next periodic one.
func TestFileCheckTriggeredByError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	c, logs := openWatched(t, path, WithFileCheckInterval(time.Hour))
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, noTable := db.Exec(`SELECT * FROM cached_vendors`)
	if !suggestsLostFile(noTable) {
		t.Fatalf("%v does not suggest a lost file", noTable)
	}
	if suggestsLostFile(repository.ErrNotFound) || suggestsLostFile(sqlite3.Error{Code: sqlite3.ErrConstraint}) {
		t.Error("ordinary errors suggest a lost file")
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	_ = c.wrapErr("test", noTable) // what a failing statement does
	waitFor(t, "the triggered check to reopen", func() bool {
		s, _ := c.Stats(bg)
		return s.Reopens == 1
	})
	afterReopen(t, c, logs, "truncated")
}

// A reopen that cannot succeed yet (a directory now sits at the path) is
// counted once, logged, and succeeds at a later check.
func TestFileReopenRetried(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	c, logs := openWatched(t, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if !c.checkFile() {
			t.Fatal("not detected")
		}
	}
	if s, _ := c.Stats(bg); s.FileLost != 1 || s.Reopens != 0 {
		t.Errorf("Stats = %+v, want FileLost 1, Reopens 0", s)
	}
	if !strings.Contains(logs.String(), "cannot reopen") {
		t.Errorf("failed reopen not logged: %s", logs.String())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if !c.checkFile() {
		t.Fatal("retry not made")
	}
	afterReopen(t, c, logs, "deleted")
}

// Close stops the watcher goroutine.
func TestFileWatcherStoppedByClose(t *testing.T) {
	if n := backgroundLoops(); n != 0 {
		t.Fatalf("%d background loops before the test", n)
	}
	c, err := Open(filepath.Join(t.TempDir(), "c.db"), WithCleanupInterval(0),
		WithFileCheckInterval(time.Millisecond), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if n := backgroundLoops(); n != 1 {
		t.Errorf("%d background loops, want the watcher", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher to stop", func() bool { return backgroundLoops() == 0 })
	c, err = Open(filepath.Join(t.TempDir(), "d.db"), WithCleanupInterval(0),
		WithFileCheckInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := backgroundLoops(); n != 0 {
		t.Errorf("interval 0: %d background loops", n)
	}
}

// Reopening while many goroutines use the cache (run with -race): calls
// racing a reopen may fail (all of them while a truncated file is
// replaced), but nothing panics, deadlocks or reports ErrClosed, and calls
// succeed again after every reopen.
func TestFileReopenUnderConcurrentUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	c, _ := openWatched(t, path, WithMemoSize(4))
	w := testWorkItem(1)
	if err := c.SetWorkItem(bg, w); err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "c", "d"}
	var stop atomic.Bool
	var calls, failures, successes atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				name := names[(g+i)%len(names)]
				var err error
				switch i % 5 {
				case 0:
					err = c.SetVendor(bg, testVendor(name, int64(i+1)))
				case 1:
					_, _, err = c.GetWorkItem(bg, w.ID)
				case 2:
					_, err = c.ListVendors(bg, repository.VendorFilter{Limit: 3})
				case 3:
					_, err = c.Stats(bg)
				default:
					_, _, err = c.GetVendor(bg, name)
				}
				calls.Add(1)
				if err == nil || errors.Is(err, repository.ErrNotFound) {
					successes.Add(1)
				} else {
					failures.Add(1)
					if errors.Is(err, ErrClosed) {
						t.Errorf("ErrClosed from an open cache: %v", err)
						return
					}
				}
			}
		})
	}
	for i := range 6 {
		// Every round starts with calls succeeding again.
		before := successes.Load()
		waitFor(t, "calls to succeed", func() bool { return successes.Load() > before+50 })
		if i%2 == 0 {
			_ = os.Remove(path)
		} else {
			_ = os.Truncate(path, 0)
		}
		if !c.checkFile() {
			t.Fatalf("loss %d not detected", i)
		}
	}
	before := successes.Load()
	waitFor(t, "calls to succeed after the reopens", func() bool { return successes.Load() > before+50 })
	stop.Store(true)
	wg.Wait()
	t.Logf("%d calls, %d failed", calls.Load(), failures.Load())
	if s, _ := c.Stats(bg); s.FileLost != 6 || s.Reopens != 6 {
		t.Errorf("Stats = %+v", s)
	}
	if err := c.SetWorkItem(bg, w); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetWorkItem(bg, w.ID); err != nil {
		t.Errorf("after the reopens: %v", err)
	}
}
