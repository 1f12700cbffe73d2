package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/testutil"
)

// The whole program: run with flags and DATABASE_URL as main runs it,
// serve requests, export metrics and traces, and on SIGTERM drain, close
// the layer and the pool, flush the spans, and exit 0. The DSN's password
// appears nowhere in the logs.
func TestRunServesAndShutsDownOnSIGTERM(t *testing.T) {
	dsn, password := withPassword(t, pgtest.NewDatabase(t))
	env := map[string]string{"DATABASE_URL": dsn}
	stdout, stderr := &testutil.Buffer{}, &testutil.Buffer{}
	ready := make(chan string, 1)
	exited := make(chan int, 1)
	args := []string{"--addr", "127.0.0.1:0", "--cache", t.TempDir() + "/cache.db", "--trace", "--log-level", "debug"}
	go func() {
		exited <- run(context.Background(), args, func(k string) string { return env[k] }, stdout, stderr, func(addr string) { ready <- addr })
	}()
	var base string
	select {
	case addr := <-ready:
		base = "http://" + addr
	case code := <-exited:
		t.Fatalf("run exited with %d before listening:\n%s", code, stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not listen within 30s:\n%s", stderr)
	}

	post(t, base+"/vendors", `{"name":"acme","status":"operational"}`, http.StatusCreated)
	get(t, base+"/vendors/acme", http.StatusOK)
	if h := get(t, base+"/healthz", http.StatusOK); !strings.Contains(h, `"status": "ok"`) {
		t.Errorf("healthz: %s", h)
	}
	metrics := get(t, base+"/metrics", http.StatusOK)
	for _, want := range []string{"pgfallback_circuitbreaker_state", "pgfallback_calls_seconds", "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("exit code %d after SIGTERM:\n%s", code, stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30s of SIGTERM:\n%s", stderr)
	}
	logs := stderr.String()
	for _, want := range []string{"statusd listening", "shutting down", "stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log has no %q:\n%s", want, logs)
		}
	}
	if password != "" && strings.Contains(logs, password) {
		t.Errorf("the DSN's password is in the log:\n%s", logs)
	}
	// The spans were flushed at shutdown: the HTTP request's and, inside
	// it, the layer's call.
	spans := stdout.String()
	for _, want := range []string{`"Name":"GET /vendors/acme"`, `"Name":"pgfallback vendors.get"`, `"Value":"primary"`} {
		if !strings.Contains(spans, want) {
			t.Errorf("stdout has no span with %s:\n%.2000s", want, spans)
		}
	}
	// The port is closed.
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still answering after exit")
	}
}

// A configuration the service cannot run with exits 2 with a message, and
// the message never holds the DSN's password.
func TestRunRefusesBadConfiguration(t *testing.T) {
	const secret = "hunter2-secret"
	cases := []struct {
		name string
		args []string
		dsn  string
		want string
	}{
		{"no DATABASE_URL", nil, "", "DATABASE_URL is not set"},
		{"unparseable DATABASE_URL", nil, "postgres://app:" + secret + "@db:notaport/x", "DATABASE_URL"},
		{"keyword form with a bad port", nil, "host=db port=x password=" + secret, "DATABASE_URL"},
		{"unknown flag", []string{"--nope"}, "postgres://app:" + secret + "@db/x", "flag provided but not defined"},
		{"bad timeout", []string{"--primary-timeout", "-1s"}, "postgres://app:" + secret + "@db/x", "timeouts must be positive"},
		{"stray argument", []string{"serve"}, "postgres://app:" + secret + "@db/x", "unexpected arguments"},
	}
	for _, c := range cases {
		stderr := &testutil.Buffer{}
		getenv := func(k string) string {
			if k == "DATABASE_URL" {
				return c.dsn
			}
			return ""
		}
		code := run(context.Background(), c.args, getenv, io.Discard, stderr, nil)
		if code != 2 {
			t.Errorf("%s: exit code %d, want 2:\n%s", c.name, code, stderr)
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: stderr lacks %q:\n%s", c.name, c.want, stderr)
		}
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("%s: the password is printed:\n%s", c.name, stderr)
		}
	}
	if code := run(context.Background(), []string{"--help"}, func(string) string { return "" }, io.Discard, io.Discard, nil); code != 0 {
		t.Errorf("--help: exit code %d", code)
	}
}

// withPassword gives dsn a password when it has none, so that the test can
// look for it in the logs: pgtest's local server trusts every connection,
// whatever the password. A DSN that has one already (an external server)
// keeps it.
func withPassword(t *testing.T, dsn string) (string, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := u.User.Password(); ok {
		return dsn, p
	}
	if pgtest.Shared(t).Mode() != pgtest.ModeLocal {
		return dsn, ""
	}
	const p = "statusd-test-password"
	u.User = url.UserPassword(u.User.Username(), p)
	return u.String(), p
}

func get(t *testing.T, url string, status int) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return readAll(t, res, status)
}

func post(t *testing.T, url, body string, status int) string {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return readAll(t, res, status)
}

func readAll(t *testing.T, res *http.Response, status int) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != status {
		t.Fatalf("%s %s: %d, want %d: %s", res.Request.Method, res.Request.URL, res.StatusCode, status, b)
	}
	return string(b)
}
