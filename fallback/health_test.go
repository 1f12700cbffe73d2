package fallback

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/sqlitecache"
)

func probe(t *testing.T, l *Layer) (int, Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	HealthHandler(l).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var h Health
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatalf("health body is not JSON: %v\n%s", err, rec.Body.String())
	}
	return rec.Code, h
}

// Healthy: 200 "ok". Degraded (PostgreSQL down, cache serving): still 200
// and ready — an outage of the database must not take every instance out
// of rotation. Closed: 503.
func TestHealthHandler(t *testing.T) {
	db := newFakeDB()
	l, _ := newTestLayer(t, db, Config{})
	if code, h := probe(t, l); code != http.StatusOK || h.Status != "ok" || !h.Ready || h.State != "closed" || !h.CacheOpen {
		t.Fatalf("healthy: %d %+v", code, h)
	}
	tripBreaker(t, l, db)
	code, h := probe(t, l)
	if code != http.StatusOK || h.Status != "degraded" || !h.Ready || h.State != "open" || h.LastTrip == nil {
		t.Fatalf("degraded: %d %+v; want 200, ready", code, h)
	}
	if h.Stats.TransitionCounts[Transition{Closed, Open}] != 1 {
		t.Fatalf("transition counts %v", h.Stats.TransitionCounts)
	}
	l.Close()
	if code, h := probe(t, l); code != http.StatusServiceUnavailable || h.Ready || h.Status != "unavailable" {
		t.Fatalf("closed: %d %+v; want 503", code, h)
	}
}

// With PostgreSQL down and no cache (it could not be opened), the instance
// can serve nothing: 503. With PostgreSQL up and no cache it serves: 200.
func TestHealthWithoutCache(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	db := newFakeDB()
	l, err := NewWithCacheFile(db.primary(), filepath.Join(blocker, "cache.db"), Config{Logger: discardLogger(), OpenTimeout: time.Hour},
		sqlitecache.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if code, h := probe(t, l); code != http.StatusOK || h.CacheOpen || h.CacheError == "" {
		t.Fatalf("no cache, PostgreSQL up: %d %+v; want 200 with the cache error", code, h)
	}
	tripBreaker(t, l, db)
	if code, h := probe(t, l); code != http.StatusServiceUnavailable || h.Ready {
		t.Fatalf("no cache, PostgreSQL down: %d %+v; want 503", code, h)
	}
}
