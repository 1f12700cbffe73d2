package pgstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
)

// The listener's own path goes silent while the pool's works (its own
// route, WithListenConfig, or one connection cut behind a proxy that keeps
// it open): the follower must still be woken about every wakerTakeover, as
// when no waker can be heard. The listener's connect and its first
// statements had no bound but the follower's context: with a DSN without
// connect_timeout, a reconnect to a silent server waited forever, and the
// follower heard nothing until its poll, 30 s later.
func TestFollowerWokenWhileTheListenerPathIsSilent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	proxy, proxied := chaos.TestProxy(t, dsn, "listen")
	lcfg, err := pgx.ParseConfig(proxied) // no connect_timeout: what most DSNs say
	if err != nil {
		t.Fatal(err)
	}
	if lcfg.ConnectTimeout != 0 {
		t.Fatalf("the test's listen DSN has a connect timeout (%v): it must not", lcfg.ConnectTimeout)
	}
	s, err := Open(ctx, dsn, WithListenConfig(lcfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	var wakes, reconnects atomic.Int64
	watchUntilCleanup(t, ctx, s, func(reconnected bool) {
		wakes.Add(1)
		if reconnected {
			reconnects.Add(1)
		}
	})
	eventually(t, "the listener to connect and elect itself", func() bool { return len(wakerHolders(t, ctx, s)) == 1 })

	if err := proxy.Blackhole(); err != nil {
		t.Fatal(err)
	}
	// Whatever the listener was doing when its path went silent (here:
	// the waker's looks), it gives the connection up and stands in,
	// waking its follower every wakerTakeover while it cannot connect.
	before := wakes.Load()
	eventually(t, "the follower woken three times while its listener's path is silent",
		func() bool { return wakes.Load() >= before+3 },
		func() string { return fmt.Sprintf("woken %d times", wakes.Load()-before) })

	// The path heals: the listener connects again and takes its turn.
	r := reconnects.Load()
	if err := proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the listener to reconnect", func() bool { return reconnects.Load() > r })
	eventually(t, "the listener to be the waker again", func() bool { return len(wakerHolders(t, ctx, s)) == 1 })
}
