package prom_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/prom"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// refusingPrimary offers a change feed whose listener refuses to listen
// while reason is set, as pgstore's does behind a pooler.
type refusingPrimary struct {
	*mock.Primary
	mock.RefusableChangeFeed
}

// A listener that refuses to listen where it is pointed is exported, with
// its reason, for as long as it lasts: the feed is correct but slow then,
// which nothing else on a dashboard shows.
func TestListenerRefusedGauge(t *testing.T) {
	var reason atomic.Pointer[string]
	p := refusingPrimary{Primary: &newPrimary().Primary, RefusableChangeFeed: mock.RefusableChangeFeed{
		ChangeFeed: mock.ChangeFeed{
			ChangeHeadFn: func(context.Context) (string, error) { return "0", nil },
			ReadChangesFn: func(_ context.Context, cursor string, _ int) (repository.ChangeBatch, error) {
				return repository.ChangeBatch{Next: cursor, AsOf: time.Now()}, nil
			},
			WatchChangesFn: func(ctx context.Context, wake func(bool)) error {
				wake(true)
				<-ctx.Done()
				return ctx.Err()
			},
		},
		ListenerRefusedFn: func() string {
			if r := reason.Load(); r != nil {
				return *r
			}
			return ""
		},
	}}
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	l, err := fallback.New(&p, cache, fallback.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	col := prom.NewCollector(l)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)

	if m := find(scrape(t, reg), "pgfallback_feed_listener_refused"); m != nil {
		t.Fatalf("exported while the listener listens: %v", m)
	}
	pooler := "pooler"
	reason.Store(&pooler)
	if got := value(t, scrape(t, reg), "pgfallback_feed_listener_refused", "reason=pooler"); got != 1 {
		t.Fatalf("pgfallback_feed_listener_refused{reason=pooler} = %v, want 1", got)
	}
	problems, err := testutil.CollectAndLint(col, "pgfallback_feed_listener_refused")
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
	reason.Store(nil)
	if m := find(scrape(t, reg), "pgfallback_feed_listener_refused"); m != nil {
		t.Fatalf("still exported once it listens: %v", m)
	}
}
