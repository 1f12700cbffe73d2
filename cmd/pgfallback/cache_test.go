package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/mattn/go-sqlite3"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// `cache stats` pointed at app.yaml renamed it to app.yaml.corrupt-… and put
// a fresh cache in its place; on an unrelated SQLite database it added our
// tables and switched it to WAL; an empty file became a cache. It must only
// read, and every cache action must refuse what is not a cache.
func TestCacheCommandsLeaveForeignFilesAlone(t *testing.T) {
	dir := t.TempDir()
	yaml, empty, foreign := foreignFiles(t, dir)

	snapshot := func() map[string][]byte {
		files := map[string][]byte{}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			files[e.Name()] = b
		}
		return files
	}
	before := snapshot()
	for _, path := range []string{yaml, empty, foreign} {
		for _, action := range []string{"stats", "clear-stale", "clear"} {
			code, stdout, stderr := runCLI(t, "cache", action, "--path", path)
			if code != 1 || strings.TrimSpace(stderr) == "" {
				t.Errorf("cache %s --path %s: exit %d, stdout %q, stderr %q: want a refusal (exit 1)", action, filepath.Base(path), code, stdout, stderr)
			}
		}
	}
	after := snapshot()
	if len(after) != len(before) {
		t.Errorf("files in the directory changed: before %d, after %d", len(before), len(after))
	}
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s was changed", name)
		}
	}
}

// cache warm --all fills a new file from PostgreSQL and records the change
// log's head, so an instance starting on it catches up instead of warming,
// with the database's time taken before it as the file's AsOf; stats and
// stats --json read them back: right after a warm, "as of" is known.
func TestCacheWarmAndStatsJSON(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO vendors (id, name, status) SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 120) g`); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "shipped.db")
	var dbBefore, dbAfter time.Time
	if err := conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&dbBefore); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "cache", "warm", "--all", "--dsn", dsn, "--path", path)
	if code != 0 || !strings.Contains(stdout, "120 rows written") || !strings.Contains(stderr, "120/120") {
		t.Fatalf("cache warm --all: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "current as of ") {
		t.Errorf("cache warm --all does not say since when the file is current:\n%s", stdout)
	}
	if err := conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&dbAfter); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "cache", "stats", "--json", "--path", path)
	if code != 0 {
		t.Fatalf("stats --json: exit %d: %s", code, stderr)
	}
	var st struct {
		Vendors    int        `json:"vendors"`
		FeedCursor string     `json:"feed_cursor"`
		AsOf       *time.Time `json:"as_of"`
		Mirror     bool       `json:"mirror"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("stats --json is not JSON: %v\n%s", err, stdout)
	}
	if st.Vendors != 120 || st.FeedCursor == "" || !st.Mirror {
		t.Fatalf("stats after warm --all: %+v", st)
	}
	// The database's time between the test's two readings of it.
	if st.AsOf == nil || st.AsOf.Before(dbBefore) || st.AsOf.After(dbAfter) {
		t.Errorf("stats --json as_of %v after warm --all, want the database's time during the warm (%v to %v)", st.AsOf, dbBefore, dbAfter)
	}
	code, stdout, stderr = runCLI(t, "cache", "stats", "--path", path)
	if code != 0 {
		t.Fatalf("stats: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"as of", st.AsOf.UTC().Format(time.RFC3339), "every change committed before then is in the file",
		"an instance starting on this file catches up from it", "complete"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stats after warm --all lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "unknown") {
		t.Errorf("stats after warm --all still says unknown:\n%s", stdout)
	}
	// Without --all it refreshes what the file holds.
	if _, err := conn.Exec(ctx, `DELETE FROM vendors WHERE name = 'v7'`); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runCLI(t, "cache", "warm", "--dsn", dsn, "--path", path)
	if code != 0 || !strings.Contains(stdout, "119 rows written, 1 removed") {
		t.Fatalf("cache warm: exit %d\n%s", code, stdout)
	}
}

// foreignFiles makes, in dir, files a cache command must leave alone: a
// YAML configuration, an empty file and another application's SQLite
// database.
func foreignFiles(t *testing.T, dir string) (yaml, empty, foreign string) {
	t.Helper()
	yaml = filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(yaml, []byte("database:\n  url: postgres://db/app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty = filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	foreign = filepath.Join(dir, "app.db")
	db, err := sql.Open("sqlite3", "file:"+foreign+"?_journal_mode=DELETE")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada')`); err != nil {
		t.Fatal(err)
	}
	return yaml, empty, foreign
}

// What `cache stats` says of the change feed: an opaque cursor is
// explained, and "as of" is a time, or says why there is none.
func TestDescribeFeed(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 5, 0, 0, time.UTC)
	asOf := now.Add(-90 * time.Second)
	cases := []struct {
		name         string
		feed         sqlitecache.FeedState
		cursor, asOf []string // parts each must hold
	}{
		{"never", sqlitecache.FeedState{}, []string{"no position recorded"}, []string{"unknown"}},
		{"warmed or caught up", sqlitecache.FeedState{Cursor: "c2:1:2:3:x:9:10:11:", AsOf: asOf},
			[]string{"catches up from it", "c2:1:2:3:x:9:10:11:"}, []string{"2026-11-25T12:03:30Z", "1m30s ago", "every change committed before then"}},
		{"position without a time", sqlitecache.FeedState{Cursor: "c2:1:2:3:x:9:10:11:"},
			[]string{"catches up from it"}, []string{"unknown: the position was recorded without a time", "first catch-up"}},
	}
	for _, c := range cases {
		cursor, asOf := describeFeed(c.feed, now)
		for _, want := range c.cursor {
			if !strings.Contains(cursor, want) {
				t.Errorf("%s: cursor %q lacks %q", c.name, cursor, want)
			}
		}
		for _, want := range c.asOf {
			if !strings.Contains(asOf, want) {
				t.Errorf("%s: as of %q lacks %q", c.name, asOf, want)
			}
		}
	}
}
