package fallback_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// Issue 17: during an outage an unauthenticated health endpoint showed the
// feed's last error, "failed to connect to `user=postgres database=sd`:
// 127.0.0.1:56432 …". Stats and the health JSON say what failed, not whom
// or where it connected to.
func TestStatsErrorsShowNoConnectionDetails(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://secretuser@127.0.0.1:1/secretdb?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	l, err := fallback.New(pgstore.New(pool), cache, fallback.Config{OpenTimeout: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	waitFor(t, 10*time.Second, "the feed to fail", func() bool { return l.Stats().Feed.LastError != "" })
	h := l.CheckHealth()
	body, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, shown := range []string{l.Stats().Feed.LastError, string(body)} {
		for _, detail := range []string{"secretuser", "secretdb", "127.0.0.1", ":1 "} {
			if strings.Contains(shown, detail) {
				t.Fatalf("%q shows %q", shown, detail)
			}
		}
	}
	if !strings.Contains(l.Stats().Feed.LastError, "connect") {
		t.Fatalf("the feed's last error %q no longer says what failed", l.Stats().Feed.LastError)
	}
}
