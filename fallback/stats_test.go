package fallback

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"
)

// The health document is snake_case throughout, "stats" and everything
// nested in it included; durations are integer nanoseconds in keys that
// say so (_ns). The keys of the two maps are values (failure kinds,
// transitions), not field names.
func TestHealthStatsJSONIsSnakeCase(t *testing.T) {
	db := newFakeDB()
	l, _ := newTestLayer(t, db, Config{})
	db.put(vendor("acme"))
	if _, err := l.Vendors().Get(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	flush(t, l) // acme is cached: the warm refreshes it
	if _, err := l.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	tripBreaker(t, l, db) // fills primary_failures, transition_counts, last_trip

	rec := httptest.NewRecorder()
	HealthHandler(l).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("health body: %v\n%s", err, rec.Body)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)
	valueKeyed := map[string]bool{"primary_failures": true, "transition_counts": true}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for k, child := range m {
			if !snake.MatchString(k) {
				t.Errorf("key %s.%s is not snake_case", path, k)
			}
			if !valueKeyed[k] {
				walk(path+"."+k, child)
			}
		}
	}
	walk("", doc)

	stats, _ := doc["stats"].(map[string]any)
	for _, key := range []string{"served_fresh", "served_stale", "cache_open_attempts", "last_warm", "feed", "queued", "primary_failures", "transition_counts"} {
		if _, ok := stats[key]; !ok {
			t.Errorf("stats has no %q: %v", key, stats)
		}
	}
	if tc, _ := stats["transition_counts"].(map[string]any); tc["closed->open"] != 1.0 {
		t.Errorf("stats.transition_counts %v, want closed->open: 1", stats["transition_counts"])
	}
	feed, _ := stats["feed"].(map[string]any)
	if _, ok := feed["lag_ns"]; !ok {
		t.Errorf("stats.feed has no lag_ns: %v", feed)
	}
	warm, _ := stats["last_warm"].(map[string]any)
	want := l.Stats().LastWarm
	if d, ok := warm["duration_ns"].(float64); !ok || time.Duration(d) != want.Duration || want.Duration <= 0 {
		t.Errorf("stats.last_warm.duration_ns %v, want the warm's %d nanoseconds", warm["duration_ns"], want.Duration)
	}
	if warm["strategy"] != "cached" || warm["refreshed"] != 1.0 {
		t.Errorf("stats.last_warm %v", warm)
	}

	// A Go client decodes the document back into a Health.
	var h Health
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatal(err)
	}
	if h.Stats.LastWarm.Duration != want.Duration || h.Stats.TransitionCounts[Transition{Closed, Open}] != 1 || h.Stats.State != Open {
		t.Errorf("decoded stats %+v", h.Stats)
	}
}
