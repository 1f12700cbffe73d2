package fallback_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// The recovery log speaks the README's words — catch-up, warm, replay —
// and says how many queued writes the recovery replayed.
func TestRecoveryLogSaysCatchUpAndReplayedCount(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	proxy, proxied := chaos.TestProxy(t, direct, "postgres-recovery-log")
	pcfg, err := pgxpool.ParseConfig(proxied)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		t.Fatal(err)
	}
	store := pgstore.New(pool)
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.Buffer{}
	cfg := queueConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	layer, err := fallback.New(store, cache, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{store, cache, layer}
	t.Cleanup(s.close)
	names := seed(t, s, 3)
	waitFor(t, 10*time.Second, "the change feed to follow", func() bool {
		return layer.Stats().Feed.State == fallback.FeedFollowing
	})

	if err := proxy.Down(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the breaker to open", func() bool {
		layer.Vendors().List(context.Background(), repository.VendorFilter{Limit: 1})
		return layer.State() == fallback.Open
	})
	queueUpdates(t, layer, names)
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	var recovered string
	waitFor(t, 15*time.Second, "the recovery's log line", func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "PostgreSQL recovered, breaker closed") {
				recovered = line
				return true
			}
		}
		return false
	})
	for _, want := range []string{"cache=catch-up", "replayed=3", "dead_lettered=0", "still_pending=0"} {
		if !strings.Contains(recovered, want) {
			t.Errorf("the recovery's log line lacks %s:\n%s", want, recovered)
		}
	}
	if want := "PostgreSQL answers again: catch-up of the cache, then replay of queued writes, then the breaker closes"; !strings.Contains(logs.String(), want) {
		t.Errorf("the log lacks %q:\n%s", want, logs)
	}
	if strings.Contains(logs.String(), "warming") {
		t.Errorf("the log still says warming:\n%s", logs)
	}
}
