package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb testutil.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// usageErrors are argument lists that are usage errors whatever
// DATABASE_URL holds.
var usageErrors = [][]string{
	{},
	{"frobnicate"},
	{"drill", "--no-such-flag"},
	{"drill", "--bogus"},
	{"drill", "--scenario", "earthquake"},
	{"drill", "--readers", "0"},
	{"drill", "--readers", "many"},
	{"drill", "extra-arg"},
	{"drill", "--dsn"},
	{"migrate"},
	{"migrate", "sideways"},
	{"migrate", "sideways", "--dsn", "postgres://x"},
	{"migrate", "up", "--bogus"},
	{"migrate", "up", "extra-arg"},
	{"migrate", "status", "--dsn"},
	{"cache"},
	{"cache", "explode"},
	{"cache", "stats", "--ttl", "-1s"},
	{"cache", "stats", "--ttl", "soon"},
	{"queue"},
	{"queue", "explode"},
	{"queue", "list", "extra-arg"},
	{"queue", "list", "--pending", "--dead"},
	{"queue", "retry"},
	{"queue", "retry", "not-a-uuid"},
	{"queue", "discard", "--path"},
}

func TestUsageErrorsExitTwo(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("DATABASE_DIRECT_URL", "")
	for _, args := range append(slices.Clone(usageErrors), []string{"migrate", "up"}) { // no --dsn and no DATABASE_URL
		code, stdout, stderr := runCLI(t, args...)
		if code != 2 {
			t.Errorf("pgfallback %s: exit %d, want 2", strings.Join(args, " "), code)
		}
		if strings.TrimSpace(stderr) == "" {
			t.Errorf("pgfallback %s: no message on stderr", strings.Join(args, " "))
		}
		if !strings.Contains(stderr, "Usage") {
			t.Errorf("pgfallback %s: no usage on stderr:\n%s", strings.Join(args, " "), stderr)
		}
		if stdout != "" {
			t.Errorf("pgfallback %s: a usage error wrote to stdout:\n%s", strings.Join(args, " "), stdout)
		}
	}
}

// helpRequests ask for a usage: on stdout, exit 0, as go tools do.
var helpRequests = [][]string{
	{"--help"}, {"-h"}, {"help"},
	{"drill", "--help"}, {"drill", "-h"}, {"drill", "help"}, {"drill", "--readers", "3", "-help"},
	{"migrate", "--help"}, {"migrate", "-h"}, {"migrate", "help"}, {"migrate", "up", "--help"}, {"migrate", "status", "-h"},
	{"cache", "--help"}, {"cache", "help"}, {"cache", "stats", "--help"},
	{"queue", "--help"}, {"queue", "-h"}, {"queue", "help"}, {"queue", "list", "--help"},
	{"queue", "retry", "-h"}, {"queue", "discard", "--path", "x.db", "--help"},
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, args := range helpRequests {
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 {
			t.Errorf("pgfallback %s: exit %d, want 0", strings.Join(args, " "), code)
		}
		if !strings.Contains(stdout, "Usage") {
			t.Errorf("pgfallback %s printed no usage on stdout", strings.Join(args, " "))
		}
		if stderr != "" {
			t.Errorf("pgfallback %s: help wrote to stderr:\n%s", strings.Join(args, " "), stderr)
		}
	}
}

// The help says what there is: `pgfallback --help` lists every cache
// action, warm included, and `cache --help` says what each does and which
// of them --ttl applies to.
func TestHelpDescribesCacheActions(t *testing.T) {
	code, stdout, _ := runCLI(t, "--help")
	if code != 0 || !strings.Contains(stdout, "pgfallback cache   stats|clear-stale|clear|warm") || !strings.Contains(stdout, "fill it from PostgreSQL") {
		t.Errorf("pgfallback --help does not list cache warm:\n%s", stdout)
	}
	for _, args := range [][]string{{"cache", "--help"}, {"cache", "warm", "--help"}} {
		code, stdout, _ := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("pgfallback %s: exit %d", strings.Join(args, " "), code)
		}
		for _, want := range []string{
			"Usage: pgfallback cache stats|clear-stale|clear|warm",
			"\n  stats        show the file's entries, how many are stale (older than --ttl)",
			"\n  clear-stale  remove the entries older than --ttl",
			"\n  clear        remove every entry",
			"\n  warm         fill the file from PostgreSQL",
			"--ttl applies to stats and clear-stale only",
			"clear and warm\nignore it",
			"stats, clear-stale: an entry cached longer ago is stale", // the flag's own line
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("pgfallback %s lacks %q:\n%s", strings.Join(args, " "), want, stdout)
			}
		}
		if i, j := strings.Index(stdout, "Actions:"), strings.Index(stdout, "Flags:"); i < 0 || j < i {
			t.Errorf("pgfallback %s: the actions are not before the flags:\n%s", strings.Join(args, " "), stdout)
		}
	}
	// The other commands' help is as it was: no actions section.
	if _, stdout, _ := runCLI(t, "queue", "--help"); strings.Contains(stdout, "Actions:") {
		t.Errorf("queue --help:\n%s", stdout)
	}
}

const secret = "s3cretpw"

// showsSecret reports whether s shows any part of secret long enough to
// matter (pgx, for one, shows the half of a password after an '@').
func showsSecret(s string) bool {
	return strings.Contains(s, "s3c") || strings.Contains(s, "retpw")
}

// Issue 8: the --dsn flag's default was $DATABASE_URL, and the usage shows
// flag defaults. Every usage and every help must hide it, and so must usage
// errors that quote a DSN given in the wrong place.
func TestUsageNeverShowsThePassword(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://postgres:"+secret+"@db.example:5432/app?sslmode=disable")
	misplaced := "postgres://u:" + secret + "@db.example/app"
	all := slices.Concat(usageErrors, helpRequests)
	all = append(all,
		[]string{misplaced},
		[]string{"migrate", misplaced},
		[]string{"migrate", "up", misplaced},
		[]string{"drill", misplaced},
		[]string{"drill", "--readers", misplaced},
		[]string{"drill", "--dsn", misplaced, "--readers", "0"},
		[]string{"drill", "--dsn", "host=h password=" + secret, "--scenario", "earthquake"},
	)
	for _, args := range all {
		code, stdout, stderr := runCLI(t, args...)
		if showsSecret(stdout) || showsSecret(stderr) {
			t.Errorf("pgfallback %s (exit %d) shows the password:\n%s%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	code, stdout, _ := runCLI(t, "migrate", "--help")
	if code != 0 || !strings.Contains(stdout, "$DATABASE_URL") {
		t.Errorf("migrate --help does not say --dsn defaults to $DATABASE_URL:\n%s", stdout)
	}
}

// A DSN that cannot be parsed is refused with an error that does not show
// its password, given by flag or by DATABASE_URL. The last two are shapes
// pgx v5.12 itself shows part or all of.
func TestMalformedDSNErrorsHideThePassword(t *testing.T) {
	t.Setenv("DATABASE_DIRECT_URL", "")
	for _, tc := range []struct{ d, reason string }{
		{"postgres://u:" + secret + "@host:notaport/db", "`: invalid port"},
		{"postgres://u:s3c@retpw@127.0.0.1:notaport/db", `unencoded "@"`},
		{"postgres://u:S3cret@Passw0rd@127.0.0.1:1/sd", `unencoded "@"`}, // issue 17: printed "lookup Passw0rd@127.0.0.1"
		{"host=127.0.0.1 port=notaport password = " + secret, "`: invalid port"},
	} {
		d := tc.d
		for _, args := range [][]string{{"migrate", "up"}, {"migrate", "status"}, {"drill", "--scenario", "down"}} {
			for _, env := range []bool{false, true} {
				if env && args[0] == "drill" {
					continue // the drill reads --dsn only, never DATABASE_URL
				}
				run := append([]string{}, args...)
				if env {
					t.Setenv("DATABASE_URL", d)
				} else {
					t.Setenv("DATABASE_URL", "")
					run = append(run, "--dsn", d)
				}
				code, stdout, stderr := runCLI(t, run...)
				if code != 1 || showsSecret(stdout) || showsSecret(stderr) || strings.Contains(stdout+stderr, "Passw0rd") ||
					!strings.Contains(stderr, tc.reason) {
					t.Errorf("DATABASE_URL from env %v, pgfallback %s: exit %d, want 1 and the reason without the password:\n%s%s",
						env, strings.Join(run, " "), code, stdout, stderr)
				}
			}
		}
	}
}

// withSecretAndPool returns dsn with a password and pgxpool settings, as an
// application's DATABASE_URL may have, and the password to look for. The
// test servers trust local connections, so an added password is ignored.
func withSecretAndPool(t *testing.T, dsn string) (string, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("test DSN is not a URL: %v", err)
	}
	pw, ok := u.User.Password()
	if !ok {
		pw = secret
		u.User = url.UserPassword(u.User.Username(), pw)
	}
	q := u.Query()
	q.Set("pool_max_conns", "5")
	u.RawQuery = q.Encode()
	return u.String(), pw
}

// Issue 8: DATABASE_URL, pool settings included, works for migrate as it
// does for the application.
func TestMigrateWithPoolSettings(t *testing.T) {
	d, pw := withSecretAndPool(t, pgtest.NewDatabase(t))
	t.Setenv("DATABASE_URL", d)
	t.Setenv("DATABASE_DIRECT_URL", "")
	for _, action := range []string{"up", "status"} {
		code, stdout, stderr := runCLI(t, "migrate", action)
		if code != 0 {
			t.Fatalf("migrate %s with pool_max_conns: exit %d\n%s%s", action, code, stdout, stderr)
		}
		if strings.Contains(stdout+stderr, pw) {
			t.Fatalf("migrate %s shows the password:\n%s%s", action, stdout, stderr)
		}
	}
	code, stdout, stderr := runCLI(t, "migrate", "status", "--dsn", d)
	if code != 0 || !strings.Contains(stdout, "00001_create_vendors.sql") || strings.Contains(stdout, "pending") {
		t.Fatalf("migrate status --dsn with pool_max_conns: exit %d\n%s%s", code, stdout, stderr)
	}
}

// Behind a pooler an application's DATABASE_URL is the pooler's, and the
// docs have DATABASE_DIRECT_URL name PostgreSQL itself (for the change
// feed's listener): migrate takes the direct one.
func TestMigratePrefersTheDirectURL(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://app@127.0.0.1:1/pooled?sslmode=disable&connect_timeout=1")
	t.Setenv("DATABASE_DIRECT_URL", pgtest.NewDatabase(t))
	code, stdout, stderr := runCLI(t, "migrate", "status")
	if code != 0 || !strings.Contains(stdout, "00001_create_vendors.sql") {
		t.Fatalf("migrate status with DATABASE_DIRECT_URL set: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "migrate", "--help")
	if code != 0 || !strings.Contains(stdout, "$DATABASE_DIRECT_URL, else $DATABASE_URL") {
		t.Errorf("migrate --help does not say --dsn defaults to $DATABASE_DIRECT_URL, then $DATABASE_URL:\n%s", stdout)
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
	asOf := time.Date(2026, 11, 25, 12, 3, 41, 0, time.UTC)
	if err := c.SetFeedState(ctx, sqlitecache.FeedState{Cursor: "c1:7:100:100:", AsOf: asOf}); err != nil {
		t.Fatal(err)
	}
	// The CLI reads the file while the "service" still has it open.
	code, stdout, stderr := runCLI(t, "cache", "stats", "--path", path)
	if code != 0 || !strings.Contains(stdout, "vendors") || !strings.Contains(stdout, "3") {
		t.Fatalf("cache stats: exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "c1:7:100:100:") || !strings.Contains(stdout, "2026-11-25T12:03:41Z") {
		t.Fatalf("cache stats does not show the feed's cursor and AsOf:\n%s", stdout)
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
//
// The DSN is an application's DATABASE_URL passed as --dsn, a password and
// pgxpool settings included: the drill must accept it and show the
// password nowhere.
func TestDrillAgainstGivenDSN(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	given, pw := withSecretAndPool(t, dsn)
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	code, stdout, stderr := runCLI(t, "drill", "--dsn", given, "--scenario", "down,kill", "--duration", "1s",
		"--baseline", "300ms", "--readers", "2", "--writers", "1", "-v", "--json", jsonPath, "--html", htmlPath)
	if code != 0 {
		t.Fatalf("drill of --dsn: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "== down [PASS]") || !strings.Contains(stdout, "== kill [SKIP]") {
		t.Fatalf("report:\n%s", stdout)
	}
	for name, out := range map[string]string{"stdout": stdout, "stderr": stderr, "JSON report": readFile(t, jsonPath), "HTML report": readFile(t, htmlPath)} {
		if strings.Contains(out, pw) {
			t.Errorf("the drill's %s shows the password", name)
		}
	}
	t.Setenv("DATABASE_URL", "")
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

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
