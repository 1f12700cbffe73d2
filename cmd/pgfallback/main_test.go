package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrorsExitTwo(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"drill", "--no-such-flag"},
		{"drill", "--scenario", "earthquake"},
		{"drill", "--readers", "0"},
		{"drill", "extra-arg"},
		{"migrate"},
		{"migrate", "sideways", "--dsn", "postgres://x"},
		{"migrate", "up"}, // no --dsn and no DATABASE_URL
		{"migrate", "up", "--bogus"},
		{"cache"},
		{"cache", "explode"},
		{"cache", "stats", "--ttl", "-1s"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 2 {
			t.Errorf("pgfallback %s: exit %d, want 2", strings.Join(args, " "), code)
		}
		if strings.TrimSpace(stderr) == "" {
			t.Errorf("pgfallback %s: no message on stderr", strings.Join(args, " "))
		}
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"drill", "--help"}, {"migrate", "--help"}, {"cache", "--help"}} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 {
			t.Errorf("pgfallback %s: exit %d, want 0", strings.Join(args, " "), code)
		}
		if !strings.Contains(stdout+stderr, "Usage") {
			t.Errorf("pgfallback %s printed no usage", strings.Join(args, " "))
		}
	}
}

func TestMigrate(t *testing.T) {
	dsn := pgtest.NewDatabase(t) // already migrated: up is a no-op, status lists all applied
	if code, _, stderr := runCLI(t, "migrate", "up", "--dsn", dsn); code != 0 {
		t.Fatalf("migrate up: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "migrate", "status", "--dsn", dsn)
	if code != 0 || !strings.Contains(stdout, "00001_create_vendors.sql") || strings.Contains(stdout, "pending") {
		t.Fatalf("migrate status: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Setenv("DATABASE_URL", dsn)
	if code, _, stderr := runCLI(t, "migrate", "status"); code != 0 {
		t.Fatalf("migrate status with DATABASE_URL: exit %d: %s", code, stderr)
	}
	if code, _, _ := runCLI(t, "migrate", "up", "--dsn", "postgres://nobody@127.0.0.1:1/x?connect_timeout=1"); code != 1 {
		t.Fatalf("migrate against a dead server: exit %d, want 1", code)
	}
}

func TestCacheCommands(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cache.db")
	c, err := sqlitecache.Open(path, sqlitecache.WithCleanupInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		if err := c.SetVendor(ctx, repository.Vendor{Name: n, Status: repository.VendorOperational, Version: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// The CLI reads the file while the "service" still has it open.
	code, stdout, stderr := runCLI(t, "cache", "stats", "--path", path)
	if code != 0 || !strings.Contains(stdout, "vendors") || !strings.Contains(stdout, "3") {
		t.Fatalf("cache stats: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, _ := runCLI(t, "cache", "clear-stale", "--path", path); code != 0 || !strings.Contains(stdout, "removed 0") {
		t.Fatalf("clear-stale of fresh entries: exit %d: %s", code, stdout)
	}
	if code, stdout, _ := runCLI(t, "cache", "clear", "--path", path); code != 0 || !strings.Contains(stdout, "removed 3") {
		t.Fatalf("clear: exit %d: %s", code, stdout)
	}
	c.Close()
	if code, _, _ := runCLI(t, "cache", "stats", "--path", filepath.Join(t.TempDir(), "missing.db")); code != 1 {
		t.Fatalf("stats of a missing file: exit %d, want 1", code)
	}
}

func TestDrillWritesReports(t *testing.T) {
	pgtest.Shared(t) // skips (or fails under REQUIRE) like every database test when no PostgreSQL can be had
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	t.Setenv("DATABASE_URL", "")
	code, stdout, stderr := runCLI(t, "drill", "--scenario", "down", "--duration", "1s", "--baseline", "500ms",
		"--readers", "4", "--json", jsonPath, "--html", htmlPath)
	if code != 0 {
		t.Fatalf("drill: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "drill passed") {
		t.Fatalf("report:\n%s", stdout)
	}
	var rep struct {
		Passed    bool `json:"passed"`
		Scenarios []struct {
			Name string `json:"name"`
		} `json:"scenarios"`
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil || json.Unmarshal(b, &rep) != nil || !rep.Passed || len(rep.Scenarios) != 1 {
		t.Fatalf("JSON report: %v %+v", err, rep)
	}
	page, err := os.ReadFile(htmlPath)
	if err != nil || !bytes.Contains(page, []byte("<svg")) || bytes.Contains(page, []byte("<script")) {
		t.Fatalf("HTML report: %v, has svg %v", err, bytes.Contains(page, []byte("<svg")))
	}
}

// Drilling a database the command was pointed at: the drill goes through
// an in-process proxy to that server, refuses an unmigrated database, and
// skips what it may not do there (stop the server).
func TestDrillAgainstGivenDSN(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	t.Setenv("DATABASE_URL", "")
	code, stdout, stderr := runCLI(t, "drill", "--dsn", dsn, "--scenario", "down,kill", "--duration", "1s",
		"--baseline", "300ms", "--readers", "2", "--writers", "1")
	if code != 0 {
		t.Fatalf("drill --dsn: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "== down [PASS]") || !strings.Contains(stdout, "== kill [SKIP]") {
		t.Fatalf("report:\n%s", stdout)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	var left int
	err = conn.QueryRow(context.Background(), `SELECT count(*) FROM vendors`).Scan(&left)
	conn.Close(context.Background())
	if err != nil || left != 0 {
		t.Fatalf("the drill left %d rows behind in the database it was pointed at (%v)", left, err)
	}

	empty := pgtest.NewDatabase(t)
	conn, err = pgx.Connect(context.Background(), empty)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), `DROP TABLE work_items; DROP TABLE vendors`)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, "drill", "--dsn", empty, "--scenario", "down", "--duration", "1s")
	if code != 1 || !strings.Contains(stderr, "migrate up") {
		t.Fatalf("drill of an unmigrated database: exit %d, %s", code, stderr)
	}
}
