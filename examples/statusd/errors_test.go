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

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/repository"
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
