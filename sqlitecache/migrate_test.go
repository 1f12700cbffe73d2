package sqlitecache

import (
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pgfallback/pgfallback/repository"
)

// A cache file written by the original implementation (its three tables,
// no goose bookkeeping, JSON rows) is adopted: the migrations add the new
// columns, backfill them from the JSON, and the rows stay readable.
func TestOpenAdoptsOriginalSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "legacy.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	for _, q := range []string{
		`CREATE TABLE cached_vendors (name TEXT PRIMARY KEY, data TEXT NOT NULL, cached_at REAL NOT NULL)`,
		`CREATE INDEX idx_cached_vendors_cached_at ON cached_vendors (cached_at)`,
		`CREATE TABLE cached_work_items (id TEXT PRIMARY KEY, data TEXT NOT NULL, cached_at REAL NOT NULL)`,
		`CREATE TABLE cache_metadata (key TEXT PRIMARY KEY, value TEXT, updated_at REAL)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	_, err = db.Exec(`INSERT INTO cached_vendors VALUES ('acme', ?, ?)`,
		`{"id":"0195f6d2-0000-7000-8000-000000000001","name":"acme","status":"broken","version":4,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}`,
		toSec(clk.Now()))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	c, err := Open(path, WithClock(clk.Now), WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, e, err := c.GetVendor(bg, "acme")
	if err != nil || v.Version != 4 || v.Status != repository.VendorBroken || e.Stale {
		t.Fatalf("legacy row = %+v %+v, %v", v, e, err)
	}
	var createdAt int64
	if err := c.h.Load().r.QueryRow(`SELECT created_at FROM cached_vendors WHERE name = 'acme'`).Scan(&createdAt); err != nil ||
		createdAt != v.CreatedAt.UnixNano() {
		t.Errorf("backfilled created_at = %d, want %d (%v)", createdAt, v.CreatedAt.UnixNano(), err)
	}
	broken := repository.VendorBroken
	if l, _ := c.ListVendors(bg, repository.VendorFilter{Status: &broken}); len(l) != 1 {
		t.Errorf("backfilled status not filterable: %v", l)
	}
	older := testVendor("acme", 3)
	older.ID = v.ID
	older.CreatedAt = v.CreatedAt
	if err := c.SetVendor(bg, older); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := c.GetVendor(bg, "acme"); got.Version != 4 {
		t.Errorf("backfilled version not honoured: v%d replaced v4", got.Version)
	}
}

// Several handles opening one new file at once all get a working cache
// (the migration race is retried, not surfaced).
func TestConcurrentOpenOfNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	var wg sync.WaitGroup
	caches := make([]*Cache, 4)
	for i := range caches {
		wg.Go(func() {
			c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			caches[i] = c
		})
	}
	wg.Wait()
	for i, c := range caches {
		if c == nil {
			continue
		}
		if err := c.SetVendor(bg, testVendor("v", int64(i+1))); err != nil {
			t.Errorf("cache %d: %v", i, err)
		}
		c.Close()
	}
}
