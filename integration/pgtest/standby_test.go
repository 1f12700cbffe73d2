package pgtest

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMultiHostDSN(t *testing.T) {
	for _, tc := range []struct{ primary, standby, want string }{
		{"postgres://postgres@127.0.0.1:5433/db1?sslmode=disable", "postgres://postgres@127.0.0.1:5434/postgres?sslmode=disable",
			"postgres://postgres@127.0.0.1:5433,127.0.0.1:5434/db1?sslmode=disable&target_session_attrs=primary"},
		{"postgresql://u:p%40w@h1:1/d", "host=h2 port=2 dbname=other",
			"postgresql://u:p%40w@h1:1,h2:2/d?target_session_attrs=primary"},
		{"postgres://u@h1:1/d?target_session_attrs=any", "postgres://h2:2/x",
			"postgres://u@h1:1,h2:2/d?target_session_attrs=primary"},
	} {
		got, err := MultiHostDSN(tc.primary, tc.standby)
		if err != nil || got != tc.want {
			t.Errorf("MultiHostDSN(%q, %q)\n got %q, %v\nwant %q", tc.primary, tc.standby, got, err, tc.want)
			continue
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil {
			t.Errorf("pgx cannot parse %q: %v", got, err)
			continue
		}
		hosts := map[string]bool{hostPort(&cfg.Config): true}
		for _, fb := range cfg.Fallbacks { // one per host and TLS mode tried
			hosts[net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port)))] = true
		}
		if len(hosts) != 2 || cfg.ValidateConnect == nil {
			t.Errorf("%q: pgx sees hosts %v and ValidateConnect set %v; want 2 and a primary check", got, hosts, cfg.ValidateConnect != nil)
		}
	}
	for _, bad := range [][2]string{
		{"host=h1 dbname=d", "postgres://h2:2/x"},                          // the primary's must be a URL
		{"postgres://u@h1:1,h3:3/d", "postgres://h2:2/x"},                  // already several hosts
		{"postgres://u@h1:1/d", "host=/var/run/postgresql dbname=x"},       // no TCP host
		{"postgres://u:secretpw@h1:notaport:/d", "postgres://h2:2/x"},      // malformed
		{"postgres://u@h1:1/d", "host=h2 port=notaport password=secretpw"}, // malformed
	} {
		got, err := MultiHostDSN(bad[0], bad[1])
		if err == nil {
			t.Errorf("MultiHostDSN(%q, %q) = %q, want an error", bad[0], bad[1], got)
		} else if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestStartStandbyNotLocal(t *testing.T) {
	srv := newServer(ModeExternal, "postgres://u@127.0.0.1:1/x", "127.0.0.1:1", nil, Options{})
	_, err := srv.StartStandby(testCtx(t))
	if !errors.Is(err, ErrNoStandby) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("StartStandby of an external server: %v; want ErrNoStandby, matching ErrUnavailable", err)
	}
	if fail, _ := verdict("", err); fail {
		t.Error("a test giving up on it would fail, not skip")
	}
	if fail, _ := verdict("1", err); !fail {
		t.Error("under PGFALLBACK_REQUIRE_POSTGRES=1 a test giving up on it would skip")
	}
	if err := srv.Kill(); !errors.Is(err, ErrNotControllable) {
		t.Errorf("Kill of an external server: %v", err)
	}
}

// serverPort is the port of the server a connection reached.
func serverPort(t *testing.T, ctx context.Context, conn *pgx.Conn) int {
	t.Helper()
	var port int
	if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
		t.Fatal(err)
	}
	return port
}

func addrPort(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	port, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return port
}

func countRows(t *testing.T, ctx context.Context, conn *pgx.Conn) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM acked").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A failover that loses acknowledged transactions: an asynchronous standby
// whose replication was cut is promoted after its primary is killed. What
// the primary acknowledged after the cut is gone; the new primary writes
// on timeline 2; a client on the multi-host DSN lands on it.
func TestStandbyFailover(t *testing.T) {
	ctx := testCtx(t)
	srv := NewPrimary(t)
	dsn, _, err := srv.CreateDatabase(ctx) // dropped with the server: the primary will be dead
	if err != nil {
		t.Fatal(err)
	}
	sb := NewStandby(t, srv)
	primaryPort, standbyPort := addrPort(t, srv.Addr()), addrPort(t, sb.Addr())
	standbyDSN, err := sb.DSNFor(dsn)
	if err != nil {
		t.Fatal(err)
	}
	multi, err := MultiHostDSN(dsn, sb.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("primary %s, standby %s, multi-host %s", srv.Addr(), sb.Addr(), multi)

	primary := connect(t, ctx, dsn)
	if _, err := primary.Exec(ctx, "CREATE TABLE acked (n int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := primary.Exec(ctx, "INSERT INTO acked VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	t0 := time.Now()
	err = sb.Sync(sctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("standby caught up in %v", time.Since(t0))
	standby := connect(t, ctx, standbyDSN)
	if n := countRows(t, ctx, standby); n != 1 {
		t.Fatalf("the standby has %d rows, want the 1 the primary wrote", n)
	}
	if _, err := standby.Exec(ctx, "INSERT INTO acked VALUES (-1)"); !isSQLState(err, "25006") {
		t.Fatalf("a write on the standby: %v, want 25006 (read-only transaction)", err)
	}
	if tli, err := Timeline(ctx, dsn); err != nil || tli != 1 {
		t.Fatalf("primary's timeline: %d, %v; want 1", tli, err)
	}
	if _, err := Timeline(ctx, standbyDSN); err == nil {
		t.Fatal("Timeline of a standby in recovery did not fail")
	}
	before := connect(t, ctx, multi)
	if p := serverPort(t, ctx, before); p != primaryPort {
		t.Fatalf("the multi-host DSN reached port %d, want the primary's %d", p, primaryPort)
	}

	var state, syncState string
	err = primary.QueryRow(ctx, "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1", sb.name).Scan(&state, &syncState)
	if err != nil || state != "streaming" || syncState != "async" {
		t.Fatalf("the primary's walsender for %s: state %q, sync_state %q, %v; want streaming, async", sb.name, state, syncState, err)
	}

	t0 = time.Now()
	if err := sb.CutReplication(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("replication cut in %v", time.Since(t0))
	for i := 1; i <= 100; i++ { // 100 transactions, each acknowledged
		if _, err := primary.Exec(ctx, "INSERT INTO acked VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	if n := countRows(t, ctx, primary); n != 101 {
		t.Fatalf("the primary has %d rows, want 101", n)
	}
	if n := countRows(t, ctx, standby); n != 1 {
		t.Fatalf("the standby has %d rows after the cut, want 1: replication was not cut", n)
	}

	pm := srv.be.pid()
	procs := family(pm)
	t0 = time.Now()
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("primary killed in %v (%d processes)", time.Since(t0), len(procs))
	for _, pid := range procs {
		if processAlive(pid) {
			t.Errorf("process %d of the killed server is alive after Kill returned", pid)
		}
	}
	if err := canConnect(dsn); err == nil {
		t.Fatal("the killed primary still accepts connections")
	}
	if err := before.Ping(ctx); err == nil {
		t.Fatal("a connection to the killed primary still answers")
	}
	if err := srv.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}

	// Before the promotion no host of the multi-host DSN takes writes.
	if err := canConnect(multi); err == nil {
		t.Fatal("the multi-host DSN connected with the primary dead and the standby in recovery")
	} else {
		t.Logf("multi-host DSN before the promotion: %v", err)
	}

	t0 = time.Now()
	if err := sb.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("promoted in %v", time.Since(t0))
	t0 = time.Now()
	after := connect(t, ctx, multi)
	t.Logf("multi-host DSN connected in %v after the promotion", time.Since(t0))
	if p := serverPort(t, ctx, after); p != standbyPort {
		t.Fatalf("the multi-host DSN reached port %d after the promotion, want the promoted standby's %d", p, standbyPort)
	}
	if n := countRows(t, ctx, after); n != 1 {
		t.Fatalf("the new primary has %d rows, want 1: the 100 acknowledged after the cut are lost", n)
	}
	if _, err := after.Exec(ctx, "INSERT INTO acked VALUES (1)"); err != nil { // a key the old primary had used
		t.Fatalf("write on the new primary: %v", err)
	}
	if tli, err := Timeline(ctx, standbyDSN); err != nil || tli != 2 {
		t.Fatalf("the new primary's timeline: %d, %v; want 2", tli, err)
	}
	if err := sb.Promote(ctx); err == nil {
		t.Error("promoting a primary again succeeded")
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := canConnect(standbyDSN); err == nil {
		t.Fatal("the standby still accepts connections after Close")
	}
}
