package sqlitecache

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

func fileDigest(t *testing.T, path string) ([32]byte, os.FileInfo) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b), fi
}

// OpenReadOnly reads a cache another *Cache has open read-write (WAL, with
// entries not yet checkpointed), and writes nothing.
func TestOpenReadOnlyWhileWriterOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	clk := newFakeClock()
	w, err := Open(path, WithClock(clk.Now), WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, n := range []string{"a", "b", "c"} {
		if err := w.SetVendor(bg, testVendor(n, 1)); err != nil {
			t.Fatal(err)
		}
	}
	item := testWorkItem(1)
	if err := w.SetWorkItem(bg, item); err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultTTL + time.Minute)
	if err := w.SetVendor(bg, testVendor("d", 1)); err != nil { // the only fresh one
		t.Fatal(err)
	}

	r, err := OpenReadOnly(path, WithClock(clk.Now), WithLogger(discardLogger()),
		WithCleanupInterval(time.Millisecond), WithFileCheckInterval(time.Millisecond))
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	if loops := backgroundLoops(); loops != 1 { // the writer's file watcher
		t.Errorf("%d background loops running, want only the writer's", loops)
	}
	s, err := r.Stats(bg)
	if err != nil || s.VendorsCached != 4 || s.WorkItemsCached != 1 || s.TotalEntries != 5 || s.StaleEntries != 4 {
		t.Errorf("Stats = %+v, %v", s, err)
	}
	if v, e, err := r.GetVendor(bg, "d"); err != nil || v.Name != "d" || e.Stale {
		t.Errorf("GetVendor = %v %+v %v", v.Name, e, err)
	}
	if _, _, err := r.GetWorkItem(bg, item.ID); err != nil {
		t.Errorf("GetWorkItem: %v", err)
	}
	if l, err := r.ListVendors(bg, repository.VendorFilter{}); err != nil || len(l) != 4 {
		t.Errorf("ListVendors = %d, %v", len(l), err)
	}
	if stale, err := r.IsStale(bg, "vendor:a"); err != nil || !stale {
		t.Errorf("IsStale = %v, %v", stale, err)
	}
	// The writer goes on; the reader sees it.
	if err := w.SetVendor(bg, testVendor("e", 1)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.GetVendor(bg, "e"); err != nil {
		t.Errorf("reader does not see the writer's new entry: %v", err)
	}

	writes := map[string]error{
		"SetVendor":    r.SetVendor(bg, testVendor("x", 1)),
		"SetVendors":   r.SetVendors(bg, []repository.Vendor{testVendor("x", 1)}),
		"SetWorkItem":  r.SetWorkItem(bg, testWorkItem(1)),
		"SetWorkItems": r.SetWorkItems(bg, nil),
		"DeleteVendor": r.DeleteVendor(bg, "a"),
		"DeleteWI":     r.DeleteWorkItem(bg, item.ID),
		"DeleteTree":   r.DeleteWorkItemTree(bg, item.ID),
		"RepoDelete":   r.Vendors().Delete(bg, "a"),
	}
	_, writes["ClearStale"] = r.ClearStale(bg)
	_, writes["ClearAll"] = r.ClearAll(bg)
	_, writes["RepoCreate"] = r.Vendors().Create(bg, testVendor("y", 1))
	for op, err := range writes {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on a read-only cache: %v, want ErrReadOnly", op, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := w.Stats(bg); err != nil || s.VendorsCached != 5 {
		t.Errorf("the read-only cache changed the data: %+v, %v", s, err)
	}
}

// Without a writer, OpenReadOnly leaves the file's bytes and mtime as they
// were.
func TestOpenReadOnlyLeavesFileUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	w, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := w.SetVendor(bg, testVendor("v"+itoa(i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	sum, fi := fileDigest(t, path)

	r, err := OpenReadOnly(path, WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := r.Stats(bg); err != nil || s.VendorsCached != 50 {
		t.Errorf("Stats = %+v, %v", s, err)
	}
	if _, _, err := r.GetVendor(bg, "v7"); err != nil {
		t.Error(err)
	}
	r.Close()
	sum2, fi2 := fileDigest(t, path)
	if sum != sum2 || !fi.ModTime().Equal(fi2.ModTime()) || fi.Mode() != fi2.Mode() {
		t.Errorf("OpenReadOnly changed the file (mtime %v -> %v)", fi.ModTime(), fi2.ModTime())
	}
}

// What OpenReadOnly refuses, and that it leaves each file as it was.
func TestOpenReadOnlyRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sqliteFile := func(name string, stmts ...string) string {
		p := filepath.Join(dir, name)
		db, err := sql.Open("sqlite3", p)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, q := range stmts {
			if _, err := db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	cacheAt := func(name string, stmts ...string) string {
		p := filepath.Join(dir, name)
		c, err := Open(p, WithCleanupInterval(0), WithLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		return sqliteFile(name, stmts...)
	}
	for _, tc := range []struct {
		name string
		path string
		want error
	}{
		{"missing", filepath.Join(dir, "missing.db"), fs.ErrNotExist},
		{"empty", write("empty.db", nil), ErrNoCache},
		{"no tables", sqliteFile("notables.db", `PRAGMA user_version = 3`), ErrNoCache},
		{"text", write("app.yaml", []byte("a: 1\n")), ErrForeignFile},
		{"binary", write("garbage.db", bytes.Repeat([]byte{0, 1, 2, 0xff}, 1024)), ErrCorruptFile},
		{"foreign", sqliteFile("app.db", `CREATE TABLE users (id INTEGER)`), ErrForeignFile},
		{"original layout", sqliteFile("legacy.db",
			`CREATE TABLE cached_vendors (name TEXT PRIMARY KEY, data TEXT NOT NULL, cached_at REAL NOT NULL)`,
			`CREATE TABLE cached_work_items (id TEXT PRIMARY KEY, data TEXT NOT NULL, cached_at REAL NOT NULL)`), ErrSchemaVersion},
		{"older", cacheAt("older.db", `DELETE FROM goose_db_version WHERE version_id = (SELECT MAX(version_id) FROM goose_db_version)`), ErrSchemaVersion},
		{"newer", cacheAt("newer.db", `INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, 1)`), ErrSchemaVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sum [32]byte
			if tc.want != fs.ErrNotExist {
				sum, _ = fileDigest(t, tc.path)
			}
			c, err := OpenReadOnly(tc.path, WithLogger(discardLogger()))
			if err == nil {
				c.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error = %v, want %v naming the file", err, tc.want)
			}
			t.Log(err)
			if tc.want == fs.ErrNotExist {
				if _, err := os.Stat(tc.path); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("the missing file was created: %v", err)
				}
				return
			}
			if sum2, _ := fileDigest(t, tc.path); sum2 != sum {
				t.Error("the file changed")
			}
		})
	}
}

// backgroundLoops counts the goroutines running a Cache's background loops
// (the cleanup, the file watcher): those Open starts. By their creator, as
// a goroutine that has not run yet shows no frames.
func backgroundLoops() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("created by github.com/pgfallback/pgfallback/sqlitecache.Open "))
}
