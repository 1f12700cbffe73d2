package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testApp is the service wired as main wires it, over dsn, behind an
// httptest server.
type testApp struct {
	*app
	url  string
	logs *testutil.Buffer
}

// startApp wires the service over dsn with a private cache file, a short
// OpenTimeout (so recovery is quick) and no background cleanup; tweak
// adjusts the options. Everything is shut down when the test ends, and the
// service's logs are shown if it failed.
func startApp(t *testing.T, dsn string, tweak ...func(*options)) *testApp {
	t.Helper()
	o := options{
		dsn:             dsn,
		cachePath:       filepath.Join(t.TempDir(), "cache", "project_status.db"),
		primaryTimeout:  time.Second,
		openTimeout:     200 * time.Millisecond,
		shutdownTimeout: 5 * time.Second,
		cacheOptions:    []sqlitecache.Option{sqlitecache.WithCleanupInterval(0)},
	}
	for _, f := range tweak {
		f(&o)
	}
	logs := &testutil.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := newApp(context.Background(), o, logger, io.Discard)
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	ts := httptest.NewServer(a.handler)
	t.Cleanup(func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("service logs:\n%s", logs)
		}
	})
	return &testApp{app: a, url: ts.URL, logs: logs}
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; body is sent as is when it is a string, as JSON
// otherwise (nil: no body).
func (a *testApp) do(t *testing.T, method, path string, body any) response {
	t.Helper()
	return a.doWith(t, method, path, body, nil)
}

// doWith is do with request headers.
func (a *testApp) doWith(t *testing.T, method, path string, body any, header http.Header) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// expect fails the test unless the response has status, and decodes the
// body into v when v is not nil.
func (r response) expect(t *testing.T, what string, status int, v any) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body: %s", what, r.status, status, r.body)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("%s: decoding %s: %v", what, r.body, err)
		}
	}
	return r
}

// apiErr decodes an error body.
func (r response) apiErr(t *testing.T) (code, field, message string) {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("error body %s: %v", r.body, err)
	}
	return b.Error.Code, b.Error.Field, b.Error.Message
}

// health reads /healthz.
func (a *testApp) health(t *testing.T) (int, fallback.Health) {
	t.Helper()
	r := a.do(t, http.MethodGet, "/healthz", nil)
	var h fallback.Health
	if err := json.Unmarshal(r.body, &h); err != nil {
		t.Fatalf("healthz %s: %v", r.body, err)
	}
	return r.status, h
}

// waitFor polls cond until it holds or within passes. The sleep is the
// polling interval, not a synchronization.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
