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

	"github.com/jackc/pgx/v5"
	_ "github.com/mattn/go-sqlite3"

	"github.com/pgfallback/pgfallback/integration/pgtest"
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
// log's head, so an instance starting on it catches up instead of warming;
// stats --json reads it back.
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
	code, stdout, stderr := runCLI(t, "cache", "warm", "--all", "--dsn", dsn, "--path", path)
	if code != 0 || !strings.Contains(stdout, "120 rows written") || !strings.Contains(stderr, "120/120") {
		t.Fatalf("cache warm --all: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, "cache", "stats", "--json", "--path", path)
	if code != 0 {
		t.Fatalf("stats --json: exit %d: %s", code, stderr)
	}
	var st struct {
		Vendors    int    `json:"vendors"`
		FeedCursor string `json:"feed_cursor"`
		Mirror     bool   `json:"mirror"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("stats --json is not JSON: %v\n%s", err, stdout)
	}
	if st.Vendors != 120 || st.FeedCursor == "" || !st.Mirror {
		t.Fatalf("stats after warm --all: %+v", st)
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
