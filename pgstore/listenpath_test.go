package pgstore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/internal/testutil"
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

// A listener the server turns away while the pool's connections answer (a
// WithListenConfig with a role not permitted to log in, here; a wrong password,
// a pg_hba.conf rule or a server out of connection slots alike) left its
// follower woken once a second instead of at each commit, with nothing to
// show for it but a feed slower than it should be. It is reported
// (ListenerRefused: RefusedCannotConnect, once in the log, no password),
// tried again less often than each second, and cleared when it listens.
func TestListenerThatCannotConnectIsReported(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	role, secret := pgtest.NewRole(t, pgtest.Shared(t).DSN(), "listener") // before the database: dropped after it
	dsn := pgtest.NewDatabase(t)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `ALTER ROLE `+role+` NOLOGIN`); err != nil {
		t.Fatal(err)
	}
	lcfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	lcfg.User, lcfg.Password = role, secret
	var logged testutil.Buffer
	s, err := Open(ctx, dsn, WithListenConfig(lcfg), WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.cannotConnectRetry = 300 * time.Millisecond // before WatchChanges starts
	var wakes, reconnects atomic.Int64
	watchUntilCleanup(t, ctx, s, func(reconnected bool) {
		wakes.Add(1)
		if reconnected {
			reconnects.Add(1)
		}
	})
	eventually(t, "the listener reported as unable to connect", func() bool { return s.ListenerRefused() == RefusedCannotConnect },
		func() string {
			return fmt.Sprintf("ListenerRefused %q; log:\n%s", s.ListenerRefused(), logged.String())
		})
	before := wakes.Load()
	eventually(t, "the follower woken three times while its listener cannot connect",
		func() bool { return wakes.Load() >= before+3 },
		func() string { return fmt.Sprintf("woken %d times", wakes.Load()-before) })
	out := logged.String()
	if n := strings.Count(out, "cannot connect where it is pointed"); n != 1 {
		t.Errorf("reported %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, role) {
		t.Errorf("the report does not say why (the server's error naming the role):\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the report shows the listener's password:\n%s", out)
	}
	if reconnects.Load() != 0 {
		t.Errorf("the listener said it listened (%d times) as a role that may not log in", reconnects.Load())
	}

	// The role may log in (and read what a listener reads): the listener
	// connects at its next try, listens, and the report is cleared.
	if _, err := admin.Exec(ctx, `ALTER ROLE `+role+` LOGIN SUPERUSER`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the listener to listen once it can connect", func() bool { return reconnects.Load() > 0 })
	eventually(t, "the report cleared", func() bool { return s.ListenerRefused() == "" })
}
