package sqlitecache

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// snapshot is a directory's file names with their contents' hashes.
func snapshot(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	for _, name := range dirNames(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = sha256.Sum256(b)
	}
	return out
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func applicationID(t *testing.T, path string) uint32 {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id int64
	if err := db.QueryRow(`PRAGMA application_id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return uint32(id)
}

// Open pointed at a configuration file by mistake: it used to rename it
// to app.yaml.corrupt-… and put a cache in its place.
func TestOpenRefusesTextFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.yaml")
	yaml := []byte("server:\n  port: 8080\ndatabase:\n  dsn: postgres://app@db/app\n  pool: 10 # connections\nname: \"café\"\n")
	if err := os.WriteFile(path, yaml, 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	for _, open := range []func(string, ...Option) (*Cache, error){Open, OpenReadOnly} {
		c, err := open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
		if err == nil {
			c.Close()
			t.Fatal("a YAML file was opened as a cache")
		}
		if !errors.Is(err, ErrForeignFile) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "text") {
			t.Errorf("error = %v, want ErrForeignFile naming the file and what it is", err)
		}
		t.Log(err)
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Errorf("directory changed: before %v, after %v", before, after)
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// An unrelated SQLite database: refused, and not touched at all (no WAL
// switch, no tables, no rename).
func TestOpenRefusesForeignSQLite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=DELETE")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)`,
		`CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER)`,
		`INSERT INTO users (name) VALUES ('ann')`,
		// One of our table names does not make it ours.
		`CREATE TABLE cached_vendors (name TEXT)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	before := snapshot(t, dir)
	fi, _ := os.Stat(path)

	for _, open := range []func(string, ...Option) (*Cache, error){Open, OpenReadOnly} {
		c, err := open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
		if err == nil {
			c.Close()
			t.Fatal("a foreign database was opened as a cache")
		}
		if !errors.Is(err, ErrForeignFile) || !strings.Contains(err.Error(), "orders, users") {
			t.Errorf("error = %v, want ErrForeignFile naming the tables", err)
		}
		t.Log(err)
	}
	if after := snapshot(t, dir); !mapsEqual(before, after) {
		t.Errorf("directory changed: before %v, after %v", before, after)
	}
	if fi2, _ := os.Stat(path); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Error("mtime changed")
	}
	db, _ = sql.Open("sqlite3", "file:"+path+"?mode=ro")
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "delete" {
		t.Errorf("journal_mode = %q, %v; want delete", mode, err)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a -wal file appeared: %v", err)
	}
}

// A SQLite database stamped by another application is refused even when
// its tables look like ours.
func TestOpenRefusesForeignApplicationID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, _ := sql.Open("sqlite3", path)
	for _, q := range []string{`PRAGMA application_id = 42`, `CREATE TABLE cached_vendors (name TEXT)`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	_, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if !errors.Is(err, ErrForeignFile) || !strings.Contains(err.Error(), "application_id") {
		t.Fatalf("Open: %v, want ErrForeignFile", err)
	}
}

// What Open may adopt: a 0-byte file (SQLite's empty database, or what a
// crashed first Open leaves) and a SQLite database without tables. Both
// become stamped caches.
func TestOpenAdoptsEmptyFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	noTables := filepath.Join(dir, "notables.db")
	db, _ := sql.Open("sqlite3", noTables)
	if _, err := db.Exec(`PRAGMA user_version = 1`); err != nil { // writes the header
		t.Fatal(err)
	}
	db.Close()
	for _, path := range []string{empty, noTables} {
		c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
		if err != nil {
			t.Fatalf("Open %s: %v", path, err)
		}
		if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if id := applicationID(t, path); id != ApplicationID {
			t.Errorf("%s: application_id %#x, want %#x", path, id, ApplicationID)
		}
	}
}

// A cache of an earlier version (application_id 0, only our tables) is
// adopted and stamped; so is a new file.
func TestOpenStampsApplicationID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if id := applicationID(t, path); id != ApplicationID {
		t.Fatalf("new file: application_id %#x", id)
	}
	// Make it look like an earlier version's file.
	db, _ := sql.Open("sqlite3", path)
	if _, err := db.Exec(`PRAGMA application_id = 0`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c, err = Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatalf("earlier version's file: %v", err)
	}
	c.Close()
	if id := applicationID(t, path); id != ApplicationID {
		t.Errorf("earlier version's file: application_id %#x after Open", id)
	}
}

// Binary garbage at the cache path is a damaged cache: moved aside, as
// before. A header cut short by truncation too.
func TestOpenQuarantinesBinaryGarbage(t *testing.T) {
	for name, data := range map[string][]byte{
		"zeros":     make([]byte, 8192),
		"random":    bytes.Repeat([]byte{0x13, 0x80, 0xfe, 0x00, 0x41}, 1000),
		"cut":       []byte("SQLite fo"),
		"shortbin":  {0xff},
		"not-utf-8": bytes.Repeat([]byte{'a', 0xe9, 'b'}, 100),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "cache.db")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			c.Close()
			names := dirNames(t, dir)
			if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "cache.db.corrupt-") }) {
				t.Errorf("not quarantined: %v", names)
			}
		})
	}
}

func TestOpenRefusesDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, open := range []func(string, ...Option) (*Cache, error){Open, OpenReadOnly} {
		_, err := open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
		if !errors.Is(err, ErrForeignFile) || !strings.Contains(err.Error(), "directory") {
			t.Errorf("open on a directory: %v", err)
		}
	}
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		t.Errorf("the directory was touched: %v", err)
	}
}
