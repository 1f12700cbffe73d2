package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// The handlers depend on the repository interfaces only: with fakes that
// fail in each way the contract allows, every error maps to its status
// without a database — including the ones a real database gives only
// under faults (a lost reply, an unreadable row) — and nothing internal
// reaches the client.
func TestErrorMapping(t *testing.T) {
	const secret = "password=hunter2 host=10.1.2.3 internal detail"
	cases := []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
		message    string // a part the message must hold
	}{
		{"not found", fmt.Errorf("pgstore: get vendor: %w", repository.ErrNotFound), 404, "not_found", "", `vendor "acme"`},
		{"already exists", repository.ErrAlreadyExists, 409, "already_exists", "", ""},
		{"conflict", repository.ErrConflict, 409, "version_conflict", "", "read it again"},
		{"invalid", fmt.Errorf("fallback: %w", repository.Invalid("ExtractorVersion", "%q is not a semantic version", "1.2")), 422, "invalid", "", "extractor_version"},
		{"unavailable", fmt.Errorf("fallback: %w: no cache; primary: %s", repository.ErrUnavailable, secret), 503, "unavailable", "3", "unavailable"},
		{"layer closed", fallback.ErrClosed, 503, "unavailable", "3", ""},
		{"read-only", fmt.Errorf("fallback: %w: not written; primary: %w", repository.ErrUnavailable,
			&pgconn.PgError{Code: "25006", Message: "cannot execute UPDATE in a read-only transaction " + secret}), 503, "unavailable", "3", "the database"},
		{"outcome unknown", fmt.Errorf("fallback: %w: %s", repository.ErrOutcomeUnknown, secret), 502, "outcome_unknown", "", "may or may not have been applied"},
		{"unreadable", fmt.Errorf("%w: vendor %s", repository.ErrUnreadable, secret), 500, "unreadable", "", ""},
		{"anything else", errors.New(secret), 500, "internal", "", "internal error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fail := func() error { return c.err }
			vendors := &mock.VendorRepository{
				GetFn: func(context.Context, string) (repository.Vendor, error) { return repository.Vendor{}, fail() },
				UpdateFn: func(context.Context, repository.Vendor) (repository.Vendor, error) {
					return repository.Vendor{}, fail()
				},
			}
			logs := &testutil.Buffer{}
			s := &server{vendors: vendors, workItems: &mock.WorkItemRepository{}, retryAfter: 2500 * time.Millisecond,
				log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			h := s.routes(http.NotFoundHandler(), http.NotFoundHandler())
			for _, req := range []*http.Request{
				httptest.NewRequest("GET", "/vendors/acme", nil),
				httptest.NewRequest("PUT", "/vendors/acme", strings.NewReader(`{"status":"broken","version":1}`)),
			} {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
				what := req.Method + " " + c.name
				if r.status != c.status {
					t.Fatalf("%s: status %d, want %d (%s)", what, r.status, c.status, r.body)
				}
				code, _, msg := r.apiErr(t)
				if code != c.code || !strings.Contains(msg, c.message) {
					t.Errorf("%s: code %q message %q; want %q with %q", what, code, msg, c.code, c.message)
				}
				if got := r.header.Get("Retry-After"); got != c.retryAfter {
					t.Errorf("%s: Retry-After %q, want %q", what, got, c.retryAfter)
				}
				if strings.Contains(string(r.body), "hunter2") || strings.Contains(string(r.body), "10.1.2.3") {
					t.Errorf("%s: the body leaks the internal error: %s", what, r.body)
				}
			}
			if strings.Contains(logs.String(), "hunter2") {
				t.Errorf("a password reached the log:\n%s", logs)
			}
		})
	}
}

// A client that hung up is not a server error, and a canceled call is not
// mistaken for one.
func TestClientGoneIsNotAServerError(t *testing.T) {
	s := &server{
		log: slog.New(slog.DiscardHandler),
		workItems: &mock.WorkItemRepository{GetFn: func(ctx context.Context, _ uuid.UUID) (repository.WorkItem, error) {
			return repository.WorkItem{}, ctx.Err()
		}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest("GET", "/work-items/"+uuid.NewString(), nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	s.routes(http.NotFoundHandler(), http.NotFoundHandler()).ServeHTTP(rec, req)
	if rec.Code != statusClientClosed {
		t.Fatalf("status %d, want %d", rec.Code, statusClientClosed)
	}
}

// Answers from the cache carry where they came from; answers from
// PostgreSQL say so; nothing is said when the repository is not the layer.
func TestProvenanceHeaders(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 3, 41, 0, time.UTC)
	asOf := now.Add(-90 * time.Second)
	cases := []struct {
		name   string
		origin fallback.Origin
		want   map[string]string
	}{
		{"none", fallback.Origin{}, map[string]string{"X-Served-From": "", "Age": ""}},
		{"primary", fallback.Origin{Source: fallback.SourcePrimary}, map[string]string{"X-Served-From": "primary", "Age": ""}},
		{"fresh get", fallback.Origin{Source: fallback.SourceCache, CachedAt: now.Add(-time.Minute), Age: 61500 * time.Millisecond},
			map[string]string{"X-Served-From": "cache", "Age": "61", "Warning": "", "X-As-Of": "", "X-Partial": ""}},
		{"stale get as of", fallback.Origin{Source: fallback.SourceCache, CachedAt: now.Add(-time.Hour), Age: 90 * time.Second, Stale: true, AsOf: asOf},
			map[string]string{"X-Served-From": "cache", "Age": "90", "Warning": `110 - "Response is Stale"`, "X-As-Of": "2026-11-26T12:02:11Z"}},
		{"partial list", fallback.Origin{Source: fallback.SourceCache, Partial: true},
			map[string]string{"X-Served-From": "cache", "Age": "", "X-Partial": "true"}},
		{"complete list as of", fallback.Origin{Source: fallback.SourceCache, AsOf: asOf},
			map[string]string{"X-Served-From": "cache", "Age": "90", "X-Partial": "", "X-As-Of": "2026-11-26T12:02:11Z"}},
		{"queued", fallback.Origin{Source: fallback.SourceQueue, Pending: true, CachedAt: now.Add(-time.Minute), Age: time.Minute},
			map[string]string{"X-Served-From": "queue", "X-Pending": "true", "Age": "", "Warning": ""}},
		{"list with queued writes", fallback.Origin{Source: fallback.SourceCache, Partial: true, Pending: true},
			map[string]string{"X-Served-From": "cache", "X-Partial": "true", "X-Pending": "true"}},
		{"list without", fallback.Origin{Source: fallback.SourceCache, Partial: true},
			map[string]string{"X-Pending": ""}},
	}
	for _, c := range cases {
		h := http.Header{}
		setProvenance(h, c.origin, now)
		for k, v := range c.want {
			if got := h.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", c.name, k, got, v)
			}
		}
	}
}

// Prefer is a list of preferences, possibly repeated, with values and
// parameters (RFC 7240): respond-async is found wherever it is, and only
// as a whole token.
func TestPrefersAsync(t *testing.T) {
	cases := []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{"respond-async"}, true},
		{[]string{"Respond-Async"}, true},
		{[]string{"return=minimal, respond-async, wait=10"}, true},
		{[]string{"wait=10", "respond-async"}, true},
		{[]string{"respond-async; foo=bar"}, true},
		{[]string{"return=representation"}, false},
		{[]string{"respond-asynchronously", "x=respond-async"}, false},
	}
	for _, c := range cases {
		if got := prefersAsync(http.Header{"Prefer": c.values}); got != c.want {
			t.Errorf("Prefer %q: %v, want %v", c.values, got, c.want)
		}
	}
}

// A write sent with Prefer: respond-async that the layer could not queue is
// 503 saying why, in the layer's words when they are about the write, and
// never with the primary's failure (addresses, users) or this process's
// storage details (paths). The errors are built the way the fallback layer
// builds them (TestQueuedWritesDuringOutage checks the real one).
func TestNotQueuedReason(t *testing.T) {
	primary := errors.New("failed to connect to `user=app database=orders`: dial tcp 10.1.2.3:5432: connect: connection refused")
	notQueued := func(why *fallback.NotQueuedError) error {
		return fmt.Errorf("fallback: vendors.Update: %w: not written: it could not be queued (%w); primary: %w",
			repository.ErrUnavailable, why, primary)
	}
	cases := []struct {
		name string
		err  error
		want string // "": no reason
	}{
		{"not in the cache", notQueued(&fallback.NotQueuedError{Reason: `vendor "ghost" is not in the cache, so the write has nothing to build on`}),
			`vendor "ghost" is not in the cache, so the write has nothing to build on`},
		{"without a primary failure", fmt.Errorf("fallback: vendors.Update: %w: not written: it could not be queued: %w",
			repository.ErrUnavailable, &fallback.NotQueuedError{Reason: "a move to another parent cannot be queued: it rewrites the whole subtree"}),
			"a move to another parent cannot be queued: it rewrites the whole subtree"},
		{"queue full", notQueued(&fallback.NotQueuedError{Reason: "the write queue is full (10000 writes pending)",
			Err: fmt.Errorf("%w: 10000 writes pending, the limit is 10000", sqlitecache.ErrQueueFull)}),
			"the write queue is full (10000 writes pending)"},
		{"no cache", notQueued(&fallback.NotQueuedError{Reason: "the cache is not open",
			Err: errors.New("no cache: opening /srv/private/cache.db failed: permission denied")}), "the cache is not open"},
		{"storage", notQueued(&fallback.NotQueuedError{Reason: "storing it in the cache failed",
			Err: errors.New("disk I/O error: /srv/private/cache.db-wal")}), "storing it in the cache failed"},
		{"wrapped again", fmt.Errorf("handler: %w", notQueued(&fallback.NotQueuedError{Reason: `vendor "x" is not in the cache`})), `vendor "x" is not in the cache`},
		{"a write that did not ask for the queue", fmt.Errorf("fallback: vendors.Update: %w: not written; primary: %w",
			repository.ErrUnavailable, primary), ""},
		{"plain", repository.ErrUnavailable, ""},
		{"not unavailable", errors.New("not written: it could not be queued"), ""},
	}
	for _, c := range cases {
		if got := notQueuedReason(c.err); got != c.want {
			t.Errorf("%s: reason %q, want %q", c.name, got, c.want)
		}
		vendors := &mock.VendorRepository{UpdateFn: func(context.Context, repository.Vendor) (repository.Vendor, error) {
			return repository.Vendor{}, c.err
		}}
		s := &server{vendors: vendors, workItems: &mock.WorkItemRepository{}, retryAfter: time.Second, log: slog.New(slog.DiscardHandler)}
		req := httptest.NewRequest("PUT", "/vendors/acme", strings.NewReader(`{"status":"broken","version":1}`))
		req.Header.Set("Prefer", "respond-async")
		rec := httptest.NewRecorder()
		s.routes(http.NotFoundHandler(), http.NotFoundHandler()).ServeHTTP(rec, req)
		r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		if r.status != http.StatusServiceUnavailable {
			if c.name != "not unavailable" {
				t.Errorf("%s: status %d, want 503", c.name, r.status)
			}
			continue
		}
		code, _, msg := r.apiErr(t)
		if code != "unavailable" || !strings.Contains(msg, `vendor "acme" was not changed; retry later`) {
			t.Errorf("%s: code %q, message %q", c.name, code, msg)
		}
		if c.want != "" && !strings.Contains(msg, "could not be queued ("+c.want+")") {
			t.Errorf("%s: message %q does not give the reason %q", c.name, msg, c.want)
		}
		for _, leak := range []string{"10.1.2.3", "5432", "user=", "orders", "/srv/private", "refused"} {
			if strings.Contains(string(r.body), leak) {
				t.Errorf("%s: the body shows %q: %s", c.name, leak, r.body)
			}
		}
	}
}

// A write refused by a database that takes no writes now is told as such:
// the database answers reads, so "unavailable" alone would send a client
// to look for an outage that is not there.
func TestReadOnlyWriteSaysSo(t *testing.T) {
	refused := func(code string) error {
		return fmt.Errorf("fallback: update vendor: %w: not written; primary: %w", repository.ErrUnavailable,
			&pgconn.PgError{Code: code, Message: "refused"})
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{refused("25006"), "takes no writes for now (read-only)"},
		{refused("53100"), "takes no writes for now (out of disk space)"},
		{fmt.Errorf("fallback: update vendor: %w: not written; primary: %w", repository.ErrUnavailable, fallback.ErrWritesStalled),
			"does not finish writes for now (its commits time out)"},
	} {
		vendors := &mock.VendorRepository{UpdateFn: func(context.Context, repository.Vendor) (repository.Vendor, error) {
			return repository.Vendor{}, c.err
		}}
		s := &server{vendors: vendors, workItems: &mock.WorkItemRepository{}, retryAfter: time.Second, log: slog.New(slog.DiscardHandler)}
		rec := httptest.NewRecorder()
		s.routes(http.NotFoundHandler(), http.NotFoundHandler()).ServeHTTP(rec,
			httptest.NewRequest("PUT", "/vendors/acme", strings.NewReader(`{"status":"broken","version":1}`)))
		r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		api, _, msg := r.apiErr(t)
		if want := `the database ` + c.want + `: vendor "acme" was not changed; retry later`; r.status != http.StatusServiceUnavailable || api != "unavailable" || msg != want {
			t.Errorf("%v: %d %q %q, want 503 unavailable %q", c.err, r.status, api, msg, want)
		}
	}
}
