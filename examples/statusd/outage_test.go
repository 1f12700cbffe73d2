package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// cacheTTL is short so that an answer from the cache turns stale within
// the test.
const cacheTTL = time.Second

// PostgreSQL goes away behind an in-process Toxiproxy, and the API keeps
// answering what it can, saying where the answer came from, and refuses
// the rest with 503 and Retry-After — never 404 for what it does not know.
// Then PostgreSQL comes back, and so does everything else.
func TestOutage(t *testing.T) {
	ctx := context.Background()
	direct := pgtest.NewDatabase(t)
	proxy, proxied := chaos.TestProxy(t, direct, "statusd-outage")
	a := startApp(t, proxied, func(o *options) { o.ttl = cacheTTL }) // --ttl 1s

	// Before: acme and a work item are read through the API, so cached.
	// ghost exists only in PostgreSQL, written around the service: the
	// cache never saw it.
	a.do(t, "POST", "/vendors", map[string]any{"name": "acme", "status": "operational"}).expect(t, "create acme", http.StatusCreated, nil)
	a.do(t, "GET", "/vendors/acme", nil).expect(t, "read acme", http.StatusOK, nil)
	var item workItemJSON
	a.do(t, "POST", "/work-items", map[string]any{"type": "project", "title": "Survive", "status": "active"}).
		expect(t, "create item", http.StatusCreated, &item)
	itemPath := "/work-items/" + item.ID.String()
	other, err := pgstore.Open(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Vendors().Create(ctx, repository.Vendor{Name: "ghost", Status: repository.VendorOperational})
	other.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.layer.Flush(ctx); err != nil { // the write-through is off the request path
		t.Fatal(err)
	}
	// The change feed confirms a position: cache answers can say "as of".
	waitFor(t, 10*time.Second, "the change feed's AsOf", func() bool {
		_, h := a.health(t)
		return h.Feed.AsOf != nil
	})

	// The outage. Requests through the API trip the breaker.
	if err := proxy.Down(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the breaker to open on API traffic", func() bool {
		r := a.do(t, "GET", "/vendors/ghost", nil)
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("GET of an uncached vendor during the outage: %d %s", r.status, r.body)
		}
		status, h := a.health(t)
		return status == http.StatusOK && h.Status == "degraded"
	})

	// A cached vendor: 200 from the cache, with its age and position.
	r := a.do(t, "GET", "/vendors/acme", nil).expect(t, "cached vendor", http.StatusOK, nil)
	checkFromCache(t, "cached vendor", r)
	if _, err := time.Parse(time.RFC3339, r.header.Get("X-As-Of")); err != nil {
		t.Errorf("X-As-Of %q: %v", r.header.Get("X-As-Of"), err)
	}
	// Past the TTL it is still served, marked stale.
	waitFor(t, 10*time.Second, "a stale answer", func() bool {
		r = a.do(t, "GET", "/vendors/acme", nil).expect(t, "cached vendor", http.StatusOK, nil)
		return r.header.Get("Warning") != ""
	})
	checkFromCache(t, "stale vendor", r)
	if w := r.header.Get("Warning"); w != `110 - "Response is Stale"` {
		t.Errorf("Warning %q", w)
	}
	if age, _ := strconv.Atoi(r.header.Get("Age")); age < int(cacheTTL.Seconds()) {
		t.Errorf("stale answer with Age %q, TTL %v", r.header.Get("Age"), cacheTTL)
	}
	// /healthz counts it, under the snake_case key its README shows.
	var doc struct {
		Stats map[string]json.RawMessage `json:"stats"`
	}
	hb := a.do(t, "GET", "/healthz", nil).expect(t, "healthz", http.StatusOK, &doc)
	if n, err := strconv.Atoi(string(doc.Stats["served_stale"])); err != nil || n < 1 {
		t.Errorf("healthz stats.served_stale %q after a stale answer: %s", doc.Stats["served_stale"], hb.body)
	}
	var got workItemJSON
	r = a.do(t, "GET", itemPath, nil).expect(t, "cached work item", http.StatusOK, &got)
	checkFromCache(t, "cached work item", r)
	if got.ID != item.ID || got.Title != "Survive" {
		t.Errorf("cached work item %+v", got)
	}

	// A list from the cache holds what was cached, and says so.
	var list listJSON[vendorJSON]
	r = a.do(t, "GET", "/vendors", nil).expect(t, "vendors from the cache", http.StatusOK, &list)
	if r.header.Get("X-Served-From") != "cache" || r.header.Get("X-Partial") != "true" || !list.Partial {
		t.Errorf("list during the outage: headers %v, partial %v", r.header, list.Partial)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "acme" {
		t.Errorf("list during the outage: %+v", list.Items)
	}

	// What the cache cannot vouch for is 503, not 404: ghost exists, and
	// nobody knows about nope.
	for _, name := range []string{"ghost", "nope"} {
		r = a.do(t, "GET", "/vendors/"+name, nil).expect(t, "uncached "+name, http.StatusServiceUnavailable, nil)
		checkRetryAfter(t, "GET uncached "+name, r)
	}
	// Writes fail fast, not written, and say when to retry.
	r = a.do(t, "POST", "/vendors", map[string]any{"name": "newco", "status": "operational"}).
		expect(t, "create during the outage", http.StatusServiceUnavailable, nil)
	checkRetryAfter(t, "POST", r)
	r = a.do(t, "PUT", itemPath, map[string]any{"type": "project", "title": "x", "status": "active", "version": 1}).
		expect(t, "update during the outage", http.StatusServiceUnavailable, nil)
	checkRetryAfter(t, "PUT", r)
	// Bad input is still 422: the layer validates before it chooses.
	if _, field, _ := a.do(t, "POST", "/vendors", map[string]any{"name": "Bad Name", "status": "operational"}).
		expect(t, "invalid during the outage", http.StatusUnprocessableEntity, nil).apiErr(t); field != "name" {
		t.Errorf("invalid during the outage: field %q", field)
	}
	// The instance stays in rotation: it can serve.
	status, h := a.health(t)
	if status != http.StatusOK || h.Status != "degraded" || !h.Ready || h.State == "closed" {
		t.Errorf("healthz during the outage: %d %+v", status, h)
	}

	// PostgreSQL comes back: the prober notices, the breaker closes, and
	// everything is answered by PostgreSQL again.
	if err := proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "recovery", func() bool {
		_, h := a.health(t)
		return h.Status == "ok"
	})
	r = a.do(t, "GET", "/vendors/ghost", nil).expect(t, "ghost after recovery", http.StatusOK, nil)
	if src := r.header.Get("X-Served-From"); src != "primary" || r.header.Get("Age") != "" {
		t.Errorf("after recovery: X-Served-From %q, Age %q", src, r.header.Get("Age"))
	}
	a.do(t, "POST", "/vendors", map[string]any{"name": "newco", "status": "operational"}).expect(t, "create after recovery", http.StatusCreated, nil)
	a.do(t, "GET", "/vendors/nope", nil).expect(t, "unknown after recovery", http.StatusNotFound, nil)
}

func checkFromCache(t *testing.T, what string, r response) {
	t.Helper()
	if src := r.header.Get("X-Served-From"); src != "cache" {
		t.Errorf("%s: X-Served-From %q, want cache", what, src)
	}
	if age, err := strconv.Atoi(r.header.Get("Age")); err != nil || age < 0 {
		t.Errorf("%s: Age %q, want seconds", what, r.header.Get("Age"))
	}
}

func checkRetryAfter(t *testing.T, what string, r response) {
	t.Helper()
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("%s: Retry-After %q, want seconds", what, r.header.Get("Retry-After"))
	}
	if code, _, _ := r.apiErr(t); code != "unavailable" {
		t.Errorf("%s: code %q", what, code)
	}
}
