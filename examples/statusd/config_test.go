package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// --soft-timeout is off by default, takes a duration below
// --primary-timeout, and reaches fallback.Config.SoftTimeout; a negative
// one, or one the primary timeout would cut first, is a usage error that
// never prints the DSN's password.
func TestSoftTimeoutFlag(t *testing.T) {
	const secret = "hunter2-secret"
	getenv := func(k string) string {
		if k == "DATABASE_URL" {
			return "postgres://app:" + secret + "@127.0.0.1:1/x?sslmode=disable"
		}
		return ""
	}
	for _, c := range []struct {
		args []string
		want time.Duration
		bad  bool
	}{
		{nil, 0, false},
		{[]string{"--soft-timeout", "150ms"}, 150 * time.Millisecond, false},
		{[]string{"--soft-timeout=0"}, 0, false},
		{[]string{"--soft-timeout", "-1s"}, 0, true},
		{[]string{"--soft-timeout", "1s"}, 0, true}, // the default --primary-timeout is 1s
		{[]string{"--soft-timeout", "1s", "--primary-timeout", "3s"}, time.Second, false},
		{[]string{"--soft-timeout", "soon"}, 0, true},
	} {
		var stderr strings.Builder
		o, err := parseOptions(c.args, getenv, &stderr)
		if c.bad {
			if !errors.Is(err, errUsage) {
				t.Errorf("%q: err %v, want a usage error", c.args, err)
			}
		} else if err != nil || o.softTimeout != c.want {
			t.Errorf("%q: soft timeout %v, err %v; want %v", c.args, o.softTimeout, err, c.want)
		}
		if msg := stderr.String() + errString(err); strings.Contains(msg, secret) {
			t.Errorf("%q: the password is printed: %s", c.args, msg)
		}
	}

	// Wired into the layer's Config. newApp never connects: nothing listens
	// on port 1, and no test server is needed.
	o, err := parseOptions([]string{"--soft-timeout", "150ms", "--cache", filepath.Join(t.TempDir(), "c.db")}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var got time.Duration
	o.layerConfig = func(cfg *fallback.Config) { got = cfg.SoftTimeout }
	a, err := newApp(context.Background(), o, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer a.shutdown(context.Background())
	if got != 150*time.Millisecond {
		t.Errorf("fallback.Config.SoftTimeout = %v, want 150ms", got)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// --ttl is the cache's TTL (sqlitecache.WithTTL), 30 min by default: past
// it an answer from the cache carries Warning: 110. It must be positive.
func TestTTLFlag(t *testing.T) {
	getenv := func(k string) string {
		if k == "DATABASE_URL" {
			return "postgres://app@127.0.0.1:1/x?sslmode=disable"
		}
		return ""
	}
	for _, c := range []struct {
		args []string
		want time.Duration
		bad  bool
	}{
		{nil, sqlitecache.DefaultTTL, false},
		{[]string{"--ttl", "10s"}, 10 * time.Second, false},
		{[]string{"--ttl=2h"}, 2 * time.Hour, false},
		{[]string{"--ttl", "0"}, 0, true},
		{[]string{"--ttl", "-1m"}, 0, true},
		{[]string{"--ttl", "soon"}, 0, true},
	} {
		o, err := parseOptions(c.args, getenv, io.Discard)
		if c.bad {
			if !errors.Is(err, errUsage) {
				t.Errorf("%q: err %v, want a usage error", c.args, err)
			}
		} else if err != nil || o.ttl != c.want {
			t.Errorf("%q: ttl %v, err %v; want %v", c.args, o.ttl, err, c.want)
		}
	}

	// Wired into the cache the layer serves from.
	o, err := parseOptions([]string{"--ttl", "10s", "--cache", filepath.Join(t.TempDir(), "c.db")}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(context.Background(), o, slog.New(slog.DiscardHandler), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer a.shutdown(context.Background())
	c := a.layer.Cache()
	if c == nil {
		t.Fatal("the layer has no cache open")
	}
	if c.VendorTTL() != 10*time.Second || c.WorkItemTTL() != 10*time.Second {
		t.Fatalf("the cache's TTLs are %v and %v, want --ttl's 10s", c.VendorTTL(), c.WorkItemTTL())
	}
}

// DATABASE_DIRECT_URL, optional, is where the change feed listens when
// DATABASE_URL is a connection pooler; a bad one is a usage error that
// never prints its password.
func TestDirectURL(t *testing.T) {
	const secret = "hunter2-direct"
	for _, c := range []struct {
		direct string
		bad    bool
	}{
		{"", false},
		{"postgres://app:" + secret + "@127.0.0.1:2/x?sslmode=disable", false},
		{"postgres://app:" + secret + "@127.0.0.1:2/x?sslmode=nonsense", true},
	} {
		getenv := func(k string) string {
			switch k {
			case "DATABASE_URL":
				return "postgres://app@127.0.0.1:1/x?sslmode=disable&default_query_exec_mode=exec"
			case "DATABASE_DIRECT_URL":
				return c.direct
			}
			return ""
		}
		o, err := parseOptions([]string{"--cache", filepath.Join(t.TempDir(), "c.db")}, getenv, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		a, err := newApp(context.Background(), o, slog.New(slog.DiscardHandler), io.Discard)
		if c.bad {
			if !errors.Is(err, errUsage) || !strings.Contains(errString(err), "DATABASE_DIRECT_URL") {
				t.Errorf("%q: err %v, want a usage error naming DATABASE_DIRECT_URL", c.direct, err)
			}
			if strings.Contains(errString(err), secret) {
				t.Errorf("the password is printed: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", c.direct, err)
		}
		a.shutdown(context.Background())
	}
}
