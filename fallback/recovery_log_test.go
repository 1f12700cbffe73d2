package fallback

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/internal/testutil"
)

// Without a change feed the recovery is a warm, and the log says so; a
// layer without a write queue has nothing to replay and says nothing of it.
func TestRecoveryLogSaysWarmWithoutAFeed(t *testing.T) {
	db := newFakeDB()
	logs := &testutil.Buffer{}
	l, _ := newTestLayer(t, db, Config{OpenTimeout: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	tripBreaker(t, l, db)
	db.up()
	eventually(t, 5*time.Second, "the recovery's log line", func() bool {
		return strings.Contains(logs.String(), "PostgreSQL recovered, breaker closed")
	})
	out := logs.String()
	for _, want := range []string{
		"PostgreSQL answers again: warm of the cache, then the breaker closes",
		`msg="pgfallback: PostgreSQL recovered, breaker closed" cache=warm`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "replay") || strings.Contains(out, "warming") {
		t.Errorf("the log of a layer without a queue mentions a replay, or warming:\n%s", out)
	}
}
