package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// respondAsync is the request header that lets a write be queued.
var respondAsync = http.Header{"Prefer": {"respond-async"}}

// During an outage a client that sends Prefer: respond-async has its
// writes queued and answered 202 with the entity as it will be; reads of
// those keys answer the pending state; the same write without the header
// still fails fast with 503. When PostgreSQL is back the queue is
// replayed and PostgreSQL has the writes.
func TestQueuedWritesDuringOutage(t *testing.T) {
	ctx := context.Background()
	direct := pgtest.NewDatabase(t)
	proxy, proxied := chaos.TestProxy(t, direct, "statusd-queue")
	a := startApp(t, proxied)

	// Before: what the queue builds on is in the cache (an update or a
	// delete of a row the cache does not hold cannot be queued). With
	// PostgreSQL up, Prefer changes nothing: 201, no Preference-Applied.
	r := a.doWith(t, "POST", "/vendors", map[string]any{"name": "acme", "status": "operational"}, respondAsync).
		expect(t, "create acme", http.StatusCreated, nil)
	if r.header.Get("Preference-Applied") != "" || r.header.Get("X-Pending") != "" {
		t.Errorf("a write PostgreSQL took: headers %v", r.header)
	}
	var item, child workItemJSON
	a.do(t, "POST", "/work-items", map[string]any{"type": "project", "title": "Survive", "status": "active"}).
		expect(t, "create item", http.StatusCreated, &item)
	a.do(t, "POST", "/work-items", map[string]any{"type": "task", "title": "Obsolete", "status": "active", "parent_id": item.ID.String()}).
		expect(t, "create child", http.StatusCreated, &child)
	itemPath, childPath := "/work-items/"+item.ID.String(), "/work-items/"+child.ID.String()
	// A write-through races the change feed and may be skipped (the
	// cache is best effort): read until the cache holds all three.
	waitFor(t, 10*time.Second, "acme and the work items in the cache", func() bool {
		for _, p := range []string{"/vendors/acme", itemPath, childPath} {
			a.do(t, "GET", p, nil).expect(t, "read "+p, http.StatusOK, nil)
		}
		if err := a.layer.Flush(ctx); err != nil { // the write-through is off the request path
			t.Fatal(err)
		}
		cache := a.layer.Cache()
		_, _, err1 := cache.GetVendor(ctx, "acme")
		_, _, err2 := cache.GetWorkItem(ctx, item.ID)
		_, _, err3 := cache.GetWorkItem(ctx, child.ID)
		return err1 == nil && err2 == nil && err3 == nil
	})
	// The recovery below catches up from the change feed's cursor; a feed
	// whose first warm the outage cut would recover by a warm instead.
	waitFor(t, 10*time.Second, "the change feed to follow", func() bool {
		return a.layer.Stats().Feed.State == fallback.FeedFollowing
	})

	if err := proxy.Down(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the breaker to open on API traffic", func() bool {
		a.do(t, "GET", "/vendors/ghost", nil).expect(t, "uncached vendor during the outage", http.StatusServiceUnavailable, nil)
		_, h := a.health(t)
		return h.Status == "degraded"
	})

	// Queued: 202, the entity as it will be, and headers that say so.
	acmeUpdate := map[string]any{"status": "broken", "extractor_version": "2.3.1", "version": 1}
	var acme vendorJSON
	r = a.doWith(t, "PUT", "/vendors/acme", acmeUpdate, respondAsync).expect(t, "queued update", http.StatusAccepted, &acme)
	checkQueued(t, "queued update", r)
	if acme.Version != 2 || acme.Status != "broken" || acme.ExtractorVersion != "2.3.1" {
		t.Errorf("queued update: %+v", acme)
	}
	var newco vendorJSON
	r = a.doWith(t, "POST", "/vendors", map[string]any{"name": "newco", "status": "operational"}, respondAsync).
		expect(t, "queued create", http.StatusAccepted, &newco)
	checkQueued(t, "queued create", r)
	if loc := r.header.Get("Location"); loc != "/vendors/newco" || newco.Version != 1 {
		t.Errorf("queued create: Location %q, %+v", loc, newco)
	}
	var itemQueued workItemJSON
	r = a.doWith(t, "PUT", itemPath, map[string]any{"type": "project", "title": "Survive", "status": "completed", "version": 1}, respondAsync).
		expect(t, "queued work item update", http.StatusAccepted, &itemQueued)
	checkQueued(t, "queued work item update", r)
	if itemQueued.Version != 2 || itemQueued.Status != "completed" {
		t.Errorf("queued work item update: %+v", itemQueued)
	}
	r = a.doWith(t, "DELETE", childPath, nil, respondAsync).expect(t, "queued delete", http.StatusAccepted, nil)
	checkQueued(t, "queued delete", r)
	if len(r.body) != 0 {
		t.Errorf("queued delete: body %s", r.body)
	}

	// Reads answer the pending state.
	var got vendorJSON
	r = a.do(t, "GET", "/vendors/acme", nil).expect(t, "read of a queued update", http.StatusOK, &got)
	if r.header.Get("X-Served-From") != "queue" || r.header.Get("X-Pending") != "true" ||
		got.ID != acme.ID || got.Version != 2 || got.Status != "broken" {
		t.Errorf("read of a queued update: headers %v, %+v", r.header, got)
	}
	var gone workItemJSON
	r = a.do(t, "GET", childPath, nil).expect(t, "read of a queued delete", http.StatusOK, &gone)
	if r.header.Get("X-Served-From") != "queue" || gone.DeletedAt == nil {
		t.Errorf("read of a queued delete: headers %v, %+v", r.header, gone)
	}
	var list listJSON[vendorJSON]
	r = a.do(t, "GET", "/vendors", nil).expect(t, "list with queued writes", http.StatusOK, &list)
	if r.header.Get("X-Served-From") != "cache" || r.header.Get("X-Pending") != "true" || len(list.Items) != 2 {
		t.Errorf("list with queued writes: headers %v, %+v", r.header, list.Items)
	}

	// Without the preference: fail fast, as always.
	r = a.do(t, "PUT", "/vendors/acme", map[string]any{"status": "broken", "extractor_version": "2.3.1", "version": 2}).
		expect(t, "update without Prefer", http.StatusServiceUnavailable, nil)
	checkRetryAfter(t, "PUT without Prefer", r)
	// Checked against the cache and the queue: version 1 is no longer current.
	a.doWith(t, "PUT", "/vendors/acme", acmeUpdate, respondAsync).expect(t, "stale queued update", http.StatusConflict, nil)
	// What cannot be queued is 503 even with the preference: the cache
	// does not hold ghost, so an update has nothing to build on.
	r = a.doWith(t, "PUT", "/vendors/ghost", map[string]any{"status": "broken", "version": 1}, respondAsync).
		expect(t, "unqueueable update", http.StatusServiceUnavailable, nil)
	if r.header.Get("Preference-Applied") != "" {
		t.Errorf("unqueueable update: Preference-Applied %q", r.header.Get("Preference-Applied"))
	}
	// It says why, in the layer's words, and nothing of the connection:
	// the primary's failure names the proxy's address.
	checkRetryAfter(t, "unqueueable update", r)
	if _, _, msg := r.apiErr(t); !strings.Contains(msg, `could not be queued (vendor "ghost" is not in the cache, so the write has nothing to build on)`) ||
		!strings.Contains(msg, "retry later") {
		t.Errorf("unqueueable update: message %q does not say why", msg)
	}
	u, err := url.Parse(proxied)
	if err != nil {
		t.Fatal(err)
	}
	for _, detail := range []string{u.Host, u.Hostname(), u.Port(), u.User.Username()} {
		if detail != "" && strings.Contains(string(r.body), detail) {
			t.Errorf("unqueueable update: the body names the database's %q: %s", detail, r.body)
		}
	}

	// PostgreSQL comes back: the queue is replayed, and reads come from
	// PostgreSQL with the new version.
	if err := proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "acme from PostgreSQL at version 2", func() bool {
		var v vendorJSON
		r := a.do(t, "GET", "/vendors/acme", nil).expect(t, "acme after the outage", http.StatusOK, &v)
		return r.header.Get("X-Served-From") == "primary" && v.Version == 2 && v.Status == "broken"
	})
	if r := a.do(t, "GET", "/vendors/acme", nil); r.header.Get("X-Pending") != "" {
		t.Errorf("after replay: X-Pending %q", r.header.Get("X-Pending"))
	}
	// The recovery's log line says how the cache was brought up to date
	// and how many queued writes were replayed: the four above.
	waitFor(t, 5*time.Second, "the recovery's log line", func() bool {
		return strings.Contains(a.logs.String(), "PostgreSQL recovered, breaker closed")
	})
	for _, line := range strings.Split(a.logs.String(), "\n") {
		if strings.Contains(line, "PostgreSQL recovered, breaker closed") &&
			(!strings.Contains(line, "cache=catch-up") || !strings.Contains(line, "replayed=4")) {
			t.Errorf("recovery log line: %s; want cache=catch-up replayed=4", line)
		}
	}

	// PostgreSQL has every queued write, read around the service.
	store, err := pgstore.Open(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if v, err := store.Vendors().Get(ctx, "acme"); err != nil || v.Version != 2 || v.Status != repository.VendorBroken || v.ExtractorVersion != "2.3.1" {
		t.Errorf("PostgreSQL's acme: %+v, %v", v, err)
	}
	if v, err := store.Vendors().Get(ctx, "newco"); err != nil || v.ID != newco.ID || v.Version != 1 {
		t.Errorf("PostgreSQL's newco: %+v, %v (queued %+v)", v, err, newco)
	}
	if w, err := store.WorkItems().Get(ctx, item.ID); err != nil || w.Version != 2 || w.Status != repository.WorkItemCompleted {
		t.Errorf("PostgreSQL's work item: %+v, %v", w, err)
	}
	if w, err := store.WorkItems().Get(ctx, child.ID); err != nil || w.DeletedAt == nil {
		t.Errorf("PostgreSQL's deleted child: %+v, %v", w, err)
	}
}

// checkQueued checks the headers of a write answered from the queue.
func checkQueued(t *testing.T, what string, r response) {
	t.Helper()
	for k, want := range map[string]string{"X-Served-From": "queue", "X-Pending": "true", "Preference-Applied": "respond-async"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %s %q, want %q", what, k, got, want)
		}
	}
}
