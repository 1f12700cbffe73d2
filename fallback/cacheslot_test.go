package fallback

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// A cache that could not be opened (a read-only mount, a full disk) kept
// the service from starting, since New requires a cache: the fallback layer
// became a new single point of failure. NewWithCacheFile starts without
// it, serves from PostgreSQL, says why in Stats, and retries.
func TestLayerStartsWithoutItsCacheAndAdoptsItLater(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx := context.Background()
	cacheDir, fix := blockedDir(t)
	path := filepath.Join(cacheDir, "cache.db")
	db := newFakeDB()
	db.put(vendor("alive"))
	db.put(vendor("victim"))
	l, err := NewWithCacheFile(db.primary(), path, Config{Logger: discardLogger(), OpenTimeout: time.Hour, CacheRetry: 10 * time.Millisecond},
		sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatalf("a cache that cannot be opened stopped the layer: %v", err)
	}
	defer l.Close()
	s := l.Stats()
	if s.CacheOpen || !strings.Contains(s.CacheError, "not a directory") || s.CacheOpenAttempts == 0 {
		t.Fatalf("Stats does not show the cache failure: open %v, error %q, attempts %d", s.CacheOpen, s.CacheError, s.CacheOpenAttempts)
	}
	if _, err := l.Vendors().Get(ctx, "alive"); err != nil {
		t.Fatalf("healthy read without a cache: %v", err)
	}
	// A delete while there is no cache to evict from.
	if err := l.Vendors().Delete(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)

	tripBreaker(t, l, db)
	_, err = l.Vendors().Get(ctx, "alive")
	if !errors.Is(err, repository.ErrUnavailable) || !strings.Contains(err.Error(), "no cache") {
		t.Fatalf("read during an outage without a cache: %v, want ErrUnavailable saying there is no cache", err)
	}
	if _, err := l.Vendors().List(ctx, repository.VendorFilter{}); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("List during an outage without a cache: %v", err)
	}

	// The directory is fixed, and an old cache file holds the deleted row.
	fix("alive", "victim")
	eventually(t, 5*time.Second, "the layer to open its cache", func() bool { return l.Stats().CacheOpen })
	if s := l.Stats(); s.CacheError != "" {
		t.Fatalf("CacheError %q once the cache is open", s.CacheError)
	}
	// The deletion made without a cache was not forgotten.
	if _, err := l.Vendors().Get(ctx, "victim"); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("the vendor deleted while the cache was away is served: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "goroutines to stop", func() bool { return runtime.NumGoroutine() <= before })
}

// Without a deletion in between, a cache that opens late keeps what it
// holds: it is as good as after a restart.
func TestLateCacheKeepsItsEntriesWhenNothingWasDeleted(t *testing.T) {
	ctx := context.Background()
	cacheDir, fix := blockedDir(t)
	path := filepath.Join(cacheDir, "cache.db")
	db := newFakeDB()
	l, err := NewWithCacheFile(db.primary(), path, Config{Logger: discardLogger(), OpenTimeout: time.Hour, CacheRetry: 10 * time.Millisecond},
		sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fix("kept")
	eventually(t, 5*time.Second, "the layer to open its cache", func() bool { return l.Stats().CacheOpen })
	tripBreaker(t, l, db)
	if _, err := l.Vendors().Get(ctx, "kept"); err != nil {
		t.Fatalf("a cache that opened late does not serve: %v", err)
	}
}

// Bad options are a programming error, reported at once.
func TestNewWithCacheFileRejectsBadOptions(t *testing.T) {
	_, err := NewWithCacheFile(newFakeDB().primary(), filepath.Join(t.TempDir(), "c.db"), Config{}, sqlitecache.WithTTL(-1))
	if !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("bad cache option: %v, want ErrInvalid", err)
	}
}

// stored is a vendor as a store returns it: with an ID and a version.
func stored(name string) repository.Vendor {
	v := vendor(name)
	v.ID, v.Version = uuid.New(), 1
	return v
}

// blockedDir returns a cache directory path that cannot be created, however
// privileged the test (a symlink to a regular file), and fix, which swaps
// in a directory holding a cache file with the named vendors in one
// atomic rename, so a layer retrying meanwhile sees one or the other.
func blockedDir(t *testing.T) (dir string, fix func(names ...string)) {
	t.Helper()
	root := t.TempDir()
	dir = filepath.Join(root, "cache")
	blocker := filepath.Join(root, "in-the-way")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(blocker, dir); err != nil {
		t.Fatal(err)
	}
	return dir, func(names ...string) {
		t.Helper()
		ready := filepath.Join(root, "ready")
		if err := os.Mkdir(ready, 0o700); err != nil {
			t.Fatal(err)
		}
		old, err := sqlitecache.Open(filepath.Join(ready, "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if err := old.SetVendor(context.Background(), stored(name)); err != nil {
				t.Fatal(err)
			}
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(root, "link")
		if err := os.Symlink(ready, link); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(link, dir); err != nil {
			t.Fatal(err)
		}
	}
}
