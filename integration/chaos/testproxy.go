package chaos

import (
	"context"
	"testing"
)

// TestProxy starts an in-process Toxiproxy with one proxy named name in
// front of the PostgreSQL that dsn reaches, for a test that cuts its own
// connection and no one else's, and returns the proxy and dsn rewritten to
// go through it. Everything is closed when the test ends.
func TestProxy(tb testing.TB, dsn, name string) (*Proxy, string) {
	tb.Helper()
	ctx := context.Background()
	tp, err := StartServer(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = tp.Close() })
	upstream, err := DSNHostPort(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := tp.Proxy(ctx, name, upstream)
	if err != nil {
		tb.Fatal(err)
	}
	proxied, err := p.DSN(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	return p, proxied
}
