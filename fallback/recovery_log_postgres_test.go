package fallback_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/testutil"
)

// The recovery log speaks the README's words — catch-up, warm, replay —
// and says how many queued writes the recovery replayed.
func TestRecoveryLogSaysCatchUpAndReplayedCount(t *testing.T) {
	logs := &testutil.Buffer{}
	cfg := queueConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	f := newQueueFixture(t, cfg)
	names := seed(t, f.s, 3)
	waitFor(t, 10*time.Second, "the change feed to follow", func() bool {
		return f.s.layer.Stats().Feed.State == fallback.FeedFollowing
	})
	f.down(t)
	queueUpdates(t, f.s.layer, names)
	if err := f.proxy.Up(); err != nil {
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
