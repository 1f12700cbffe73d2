package main

import (
	"strings"
	"testing"

	"github.com/pgfallback/pgfallback/integration/pgtest"
)

// `make demo` with DATABASE_URL exported (as statusd's README has a user
// do) drilled that database. Only --dsn names a database to drill: here
// DATABASE_URL points nowhere, and the drill runs on its embedded server.
func TestDrillIgnoresDatabaseURL(t *testing.T) {
	pgtest.Shared(t) // skips (or fails under PGFALLBACK_REQUIRE_POSTGRES) where no server can run
	t.Setenv("DATABASE_URL", "postgres://someone:s3cret@127.0.0.1:1/production?sslmode=disable")
	code, stdout, stderr := runCLI(t, "drill", "--scenario", "down", "--duration", "500ms", "--baseline", "200ms", "--readers", "2", "--writers", "1")
	if code != 0 {
		t.Fatalf("drill: exit %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, "production") || strings.Contains(stdout+stderr, "127.0.0.1:1") {
		t.Fatalf("the drill used DATABASE_URL:\n%s%s", stdout, stderr)
	}
}
