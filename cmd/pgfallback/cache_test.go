package main

import (
	"bytes"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

// `cache stats` pointed at app.yaml renamed it to app.yaml.corrupt-… and put
// a fresh cache in its place; on an unrelated SQLite database it added our
// tables and switched it to WAL; an empty file became a cache. It must only
// read, and every cache action must refuse what is not a cache.
func TestCacheCommandsLeaveForeignFilesAlone(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(yaml, []byte("database:\n  url: postgres://db/app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "app.db")
	db, err := sql.Open("sqlite3", "file:"+foreign+"?_journal_mode=DELETE")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada')`); err != nil {
		t.Fatal(err)
	}
	db.Close()

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
