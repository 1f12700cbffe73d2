package chaos_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testLogger logs through t.Log until the test ends; records that arrive
// later (Toxiproxy's goroutines notice closed connections asynchronously)
// are dropped instead of panicking. All records are also kept for asserts.
type testLogger struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
	buf  bytes.Buffer
}

func (w *testLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogger) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func newLogger(t testing.TB, level slog.Level) (*slog.Logger, *testLogger) {
	w := &testLogger{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), w
}

type fixture struct {
	tp      *chaos.Toxiproxy
	proxy   *chaos.Proxy
	direct  string // DSN straight to Postgres
	proxied string // DSN through the proxy
}

func setup(t *testing.T) fixture {
	t.Helper()
	direct := pgtest.NewDatabase(t)
	logger, _ := newLogger(t, slog.LevelInfo)
	ctx := context.Background()
	tp, err := chaos.StartServer(ctx, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	upstream, err := chaos.DSNHostPort(direct)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tp.Proxy(ctx, "postgres", upstream)
	if err != nil {
		t.Fatal(err)
	}
	proxied, err := p.DSN(direct)
	if err != nil {
		t.Fatal(err)
	}
	return fixture{tp: tp, proxy: p, direct: direct, proxied: proxied}
}

// connect opens a pgx connection, closed at cleanup.
func connect(t *testing.T, dsn string, timeout time.Duration) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn, nil
}

func mustConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := connect(t, dsn, 10*time.Second)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return conn
}

func query1(conn *pgx.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var n int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("SELECT 1 gave %d", n)
	}
	return nil
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronization
	}
}

// connectAndQuery opens a fresh connection through dsn and runs SELECT 1.
func connectAndQuery(t *testing.T, dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var n int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&n)
}

func toxicNames(t *testing.T, p *chaos.Proxy) []string {
	t.Helper()
	toxics, err := p.Toxics()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tx := range toxics {
		names = append(names, tx.Name)
	}
	return names
}

func TestQueriesThroughProxy(t *testing.T) {
	f := setup(t)
	if f.proxied == f.direct {
		t.Fatal("DSN not rewritten")
	}
	if !strings.Contains(f.proxied, f.proxy.Addr()) {
		t.Fatalf("proxied DSN %q does not name %s", f.proxied, f.proxy.Addr())
	}
	conn := mustConnect(t, f.proxied)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "CREATE TABLE chaos_t (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO chaos_t VALUES (1, 'through the proxy')"); err != nil {
		t.Fatal(err)
	}
	// Visible on a direct connection: it really is the same server.
	direct := mustConnect(t, f.direct)
	var v string
	if err := direct.QueryRow(ctx, "SELECT v FROM chaos_t WHERE id = 1").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != "through the proxy" {
		t.Fatalf("got %q", v)
	}
	// The proxy's address is the one the connection uses.
	if got := conn.PgConn().Conn().RemoteAddr().String(); got != f.proxy.Addr() {
		t.Fatalf("connection goes to %s, proxy is %s", got, f.proxy.Addr())
	}
}

func TestDownUp(t *testing.T) {
	f := setup(t)
	open := mustConnect(t, f.proxied)
	if err := query1(open, 2*time.Second); err != nil {
		t.Fatal(err)
	}

	if err := f.proxy.Down(); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Down(); err != nil { // idempotent
		t.Fatal(err)
	}
	start := time.Now()
	_, err := connect(t, f.proxied, 5*time.Second)
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("connected through a proxy that is down")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("want connection refused, got %v", err)
	}
	if elapsed > time.Second {
		t.Fatalf("refusal took %v, want fast", elapsed)
	}
	t.Logf("Down: new connection refused in %v: %v", elapsed, err)
	// The connection that was open is closed too.
	err = query1(open, 2*time.Second)
	if err == nil {
		t.Fatal("open connection survived Down")
	}
	t.Logf("Down: open connection: %v", err)

	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Up(); err != nil { // idempotent
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "connect after Up", func() error { return connectAndQuery(t, f.proxied) })
}

func TestBlackhole(t *testing.T) {
	f := setup(t)
	open := mustConnect(t, f.proxied)
	if err := query1(open, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Blackhole(); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Blackhole(); err != nil { // idempotent
		t.Fatal(err)
	}
	if got := toxicNames(t, f.proxy); len(got) != 2 {
		t.Fatalf("toxics after Blackhole twice: %v", got)
	}

	// An open connection's query hits its deadline, and does not hang.
	start := time.Now()
	err := query1(open, 300*time.Millisecond)
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("query answered through a blackhole")
	}
	if elapsed > time.Second {
		t.Fatalf("query returned after %v, want ~300ms", elapsed)
	}
	if elapsed < 250*time.Millisecond {
		t.Fatalf("query failed after only %v (%v): not a blackhole", elapsed, err)
	}
	t.Logf("Blackhole: open connection's query failed after %v: %v", elapsed, err)

	// A new connection is accepted but the startup never completes.
	start = time.Now()
	_, err = connect(t, f.proxied, 300*time.Millisecond)
	elapsed = time.Since(start)
	if err == nil {
		t.Fatal("connected through a blackhole")
	}
	if elapsed > time.Second || elapsed < 250*time.Millisecond {
		t.Fatalf("connect failed after %v, want ~300ms: %v", elapsed, err)
	}
	t.Logf("Blackhole: connect failed after %v: %v", elapsed, err)

	// At the TCP level: accepted, no answer, not closed.
	raw, err := net.DialTimeout("tcp", f.proxy.Addr(), time.Second)
	if err != nil {
		t.Fatalf("blackhole must accept: %v", err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte("hello?")); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	n, err := raw.Read(make([]byte, 16))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("blackhole read: want a timeout, got n=%d err=%v", n, err)
	}

	// Clear: service is back; the blackholed raw connection gets closed.
	if err := f.proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	if got := toxicNames(t, f.proxy); len(got) != 0 {
		t.Fatalf("toxics after Clear: %v", got)
	}
	eventually(t, 5*time.Second, "connect after Clear", func() error { return connectAndQuery(t, f.proxied) })
	_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := raw.Read(make([]byte, 16)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("blackholed connection after Clear: want closed, got %v", err)
	}
}

func TestLatency(t *testing.T) {
	f := setup(t)
	conn := mustConnect(t, f.proxied)
	if err := f.proxy.Latency(200*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Latency(200*time.Millisecond, 0); err != nil { // idempotent
		t.Fatal(err)
	}
	for i := range 3 {
		start := time.Now()
		if err := query1(conn, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		if elapsed < 200*time.Millisecond {
			t.Fatalf("round trip %d took %v, want >= 200ms", i, elapsed)
		}
		if elapsed > 2*time.Second {
			t.Fatalf("round trip %d took %v", i, elapsed)
		}
		t.Logf("Latency(200ms): round trip %v", elapsed)
	}

	// Replaced, not stacked.
	if err := f.proxy.Latency(30*time.Millisecond, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	toxics, err := f.proxy.Toxics()
	if err != nil {
		t.Fatal(err)
	}
	if len(toxics) != 1 || toxics[0].Type != "latency" || toxics[0].Attributes["latency"] != float64(30) ||
		toxics[0].Attributes["jitter"] != float64(10) || toxics[0].Stream != "downstream" {
		t.Fatalf("toxics after second Latency: %+v", toxics)
	}
	if err := f.proxy.Latency(-time.Second, 0); err == nil || !strings.Contains(err.Error(), "Latency") {
		t.Fatalf("negative latency: %v", err)
	}

	if err := f.proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "fast again after Clear", func() error {
		start := time.Now()
		if err := query1(conn, 5*time.Second); err != nil {
			return err
		}
		if d := time.Since(start); d >= 30*time.Millisecond {
			return fmt.Errorf("round trip %v", d)
		}
		return nil
	})
}

func TestResetPeer(t *testing.T) {
	f := setup(t)
	idle := mustConnect(t, f.proxied)
	busy := mustConnect(t, f.proxied)
	if err := query1(idle, 2*time.Second); err != nil {
		t.Fatal(err)
	}

	// A query in flight when the reset comes.
	busyErr := make(chan error, 1)
	var busyPID uint32 = busy.PgConn().PID()
	go func() {
		_, err := busy.Exec(context.Background(), "SELECT pg_sleep(5)")
		busyErr <- err
	}()
	direct := mustConnect(t, f.direct)
	eventually(t, 5*time.Second, "pg_sleep running", func() error {
		var n int
		err := direct.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE 'SELECT pg_sleep%'", busyPID).Scan(&n)
		if err == nil && n != 1 {
			err = errors.New("not yet")
		}
		return err
	})

	start := time.Now()
	if err := f.proxy.ResetPeer(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-busyErr:
		if err == nil {
			t.Fatal("in-flight query survived ResetPeer")
		}
		t.Logf("ResetPeer: in-flight query failed after %v: %v", time.Since(start), err)
	case <-time.After(3 * time.Second):
		t.Fatal("in-flight query not cut by ResetPeer")
	}

	// The idle, already-open connection's next query fails.
	err := query1(idle, 2*time.Second)
	if err == nil {
		t.Fatal("open connection survived ResetPeer")
	}
	t.Logf("ResetPeer: open connection's next query: %v", err)

	// New connections are reset as soon as they send.
	_, err = connect(t, f.proxied, 2*time.Second)
	if err == nil {
		t.Fatal("connected through ResetPeer")
	}
	t.Logf("ResetPeer: new connection: %v", err)
	raw, err := net.DialTimeout("tcp", f.proxy.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte("hello?")); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := raw.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("raw connection after ResetPeer: want ECONNRESET, got %v", err)
	}

	if err := f.proxy.ResetPeer(); err != nil { // idempotent
		t.Fatal(err)
	}
	if got := toxicNames(t, f.proxy); len(got) != 2 {
		t.Fatalf("toxics after ResetPeer twice: %v", got)
	}
	if err := f.proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "connect after Clear", func() error { return connectAndQuery(t, f.proxied) })
}

func TestCutConnections(t *testing.T) {
	f := setup(t)
	open := mustConnect(t, f.proxied)
	if err := query1(open, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.CutConnections(); err != nil {
		t.Fatal(err)
	}
	err := query1(open, 2*time.Second)
	if err == nil {
		t.Fatal("open connection survived CutConnections")
	}
	t.Logf("CutConnections: open connection's next query: %v", err)
	// Nothing else changed: a new connection works at once.
	if err := connectAndQuery(t, f.proxied); err != nil {
		t.Fatalf("new connection after CutConnections: %v", err)
	}
}

func TestBandwidth(t *testing.T) {
	f := setup(t)
	conn := mustConnect(t, f.proxied)
	const size = 128 << 10 // 128 KiB: 0.5 s at 256 KB/s
	fetch := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		var s string
		if err := conn.QueryRow(ctx, "SELECT repeat('x', $1)", size).Scan(&s); err != nil {
			return 0, err
		}
		if len(s) != size {
			return 0, fmt.Errorf("got %d bytes", len(s))
		}
		return time.Since(start), nil
	}
	before, err := fetch()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Bandwidth(256); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Bandwidth(256); err != nil { // idempotent
		t.Fatal(err)
	}
	if got := toxicNames(t, f.proxy); len(got) != 2 {
		t.Fatalf("toxics after Bandwidth twice: %v", got)
	}
	slow, err := fetch()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Bandwidth(256 KB/s): %d KiB in %v (unlimited: %v)", size>>10, slow, before)
	if slow < 400*time.Millisecond {
		t.Fatalf("128 KiB at 256 KB/s took %v, want about 500ms", slow)
	}
	if err := f.proxy.Bandwidth(0); err == nil || !strings.Contains(err.Error(), "Bandwidth") {
		t.Fatalf("Bandwidth(0): %v", err)
	}
	if err := f.proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "fast after Clear", func() error {
		d, err := fetch()
		if err == nil && d >= 300*time.Millisecond {
			err = fmt.Errorf("still slow: %v", d)
		}
		return err
	})
}

func TestToxicsCombineAndClear(t *testing.T) {
	f := setup(t)
	if err := f.proxy.Latency(10*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Bandwidth(1024); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Down(); err != nil {
		t.Fatal(err)
	}
	if got := toxicNames(t, f.proxy); len(got) != 3 {
		t.Fatalf("toxics: %v", got)
	}
	if err := f.proxy.Clear(); err != nil { // also brings it Up
		t.Fatal(err)
	}
	if got := toxicNames(t, f.proxy); len(got) != 0 {
		t.Fatalf("toxics after Clear: %v", got)
	}
	eventually(t, 5*time.Second, "connect after Clear", func() error { return connectAndQuery(t, f.proxied) })
}

func TestRecreateAndDelete(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	if err := f.proxy.Latency(time.Second, 0); err != nil {
		t.Fatal(err)
	}
	upstream, _ := chaos.DSNHostPort(f.direct)
	again, err := f.tp.Proxy(ctx, "postgres", upstream)
	if err != nil {
		t.Fatal(err)
	}
	if got := toxicNames(t, again); len(got) != 0 {
		t.Fatalf("recreated proxy kept toxics: %v", got)
	}
	dsn, err := again.DSN(f.direct)
	if err != nil {
		t.Fatal(err)
	}
	if err := connectAndQuery(t, dsn); err != nil {
		t.Fatal(err)
	}

	if err := again.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := again.Delete(); err != nil { // already gone: fine
		t.Fatal(err)
	}
	err = again.Down()
	var apiErr *toxiclient.ApiError
	if err == nil || !strings.Contains(err.Error(), "Down") || !errors.As(err, &apiErr) || apiErr.Status != 404 {
		t.Fatalf("Down on a deleted proxy: %v", err)
	}
	if _, err := connect(t, dsn, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to a deleted proxy: %v", err)
	}

	if _, err := f.tp.Proxy(ctx, "bad", "no-port"); err == nil {
		t.Fatal("accepted an upstream without port")
	}
	if _, err := f.tp.Proxy(ctx, "", upstream); err == nil {
		t.Fatal("accepted an empty name")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.tp.Proxy(cctx, "x", upstream); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled context: %v", err)
	}
}

func TestConnectExternal(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	ctx := context.Background()
	server, err := chaos.StartServer(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	ext, err := chaos.Connect(strings.TrimPrefix(server.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if ext.InProcess() || !server.InProcess() {
		t.Fatal("InProcess wrong")
	}
	upstream, _ := chaos.DSNHostPort(direct)
	p, err := ext.Proxy(ctx, "ext", upstream)
	if err != nil {
		t.Fatal(err)
	}
	dsn, _ := p.DSN(direct)
	if err := connectAndQuery(t, dsn); err != nil {
		t.Fatal(err)
	}
	if err := p.Down(); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, dsn, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("want refused: %v", err)
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "up", func() error { return connectAndQuery(t, dsn) })

	// Closing the external handle deletes its proxies, not the server.
	if err := ext.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ext.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, dsn, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("proxy still there after Close of the handle: %v", err)
	}
	again, err := chaos.Connect(server.URL())
	if err != nil {
		t.Fatalf("server gone after Close of an external handle: %v", err)
	}
	_ = again.Close()

	// Nobody there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	if _, err := chaos.Connect("http://" + deadAddr); err == nil {
		t.Fatal("Connect to nothing succeeded")
	}
}

func TestDSN(t *testing.T) {
	ctx := context.Background()
	tp, err := chaos.StartServer(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	p, err := tp.Proxy(ctx, "dsn", "127.0.0.1:5432")
	if err != nil {
		t.Fatal(err)
	}
	addr := p.Addr()
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:p%40ss@db.example:6543/app?sslmode=disable", "postgres://u:p%40ss@" + addr + "/app?sslmode=disable"},
		{"postgresql://h1:5432,h2:5433/app", "postgresql://" + addr + "/app"},
		{"postgres:///app?host=/var/run/postgresql&port=5433&application_name=x", "postgres://" + addr + "/app?application_name=x"},
	} {
		got, err := p.DSN(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("DSN(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"host=localhost dbname=app", "mysql://x/y"} {
		if _, err := p.DSN(bad); err == nil {
			t.Errorf("DSN(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{
		"postgres://u@127.0.0.1:5433/db":        "127.0.0.1:5433",
		"postgres://u@[::1]/db":                 "[::1]:5432",
		"postgres:///db":                        "localhost:5432",
		"postgres://x/db?host=10.0.0.1&port=77": "10.0.0.1:77",
	} {
		if got, err := chaos.DSNHostPort(in); err != nil || got != want {
			t.Errorf("DSNHostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"postgres://h1,h2/db", "postgres:///db?host=/tmp", "postgres://h:99999/db"} {
		if _, err := chaos.DSNHostPort(bad); err == nil {
			t.Errorf("DSNHostPort(%q) accepted", bad)
		}
	}
}

// TestLogging: Toxiproxy's zerolog output reaches the slog logger at debug
// level and nothing is printed when no logger is given.
func TestLogging(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	logger, rec := newLogger(t, slog.LevelDebug)
	ctx := context.Background()
	tp, err := chaos.StartServer(ctx, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	upstream, _ := chaos.DSNHostPort(direct)
	p, err := tp.Proxy(ctx, "logged", upstream)
	if err != nil {
		t.Fatal(err)
	}
	dsn, _ := p.DSN(direct)
	if err := connectAndQuery(t, dsn); err != nil {
		t.Fatal(err)
	}
	if err := p.Down(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "toxiproxy log lines", func() error {
		out := rec.String()
		for _, want := range []string{
			`level=DEBUG msg="toxiproxy: Accepted client"`,
			`level=DEBUG msg="toxiproxy: Terminated proxy"`,
			`level=INFO msg="chaos: Down" proxy=logged`,
		} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %q in the log", want)
			}
		}
		return nil
	})
	if strings.Contains(rec.String(), "level=INFO msg=toxiproxy") || strings.Contains(rec.String(), "level=WARN msg=toxiproxy") {
		t.Fatal("toxiproxy logged above debug")
	}
}

func goroutineDump() string {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	return b.String()
}

// TestCloseStopsGoroutines: after StartServer, proxies carrying traffic
// (with and without toxics) and Close, the goroutine count is back at its
// baseline.
func TestCloseStopsGoroutines(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	upstream, err := chaos.DSNHostPort(direct)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	baseline := runtime.NumGoroutine()

	ctx := context.Background()
	tp, err := chaos.StartServer(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1, err := tp.Proxy(ctx, "one", upstream)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := tp.Proxy(ctx, "two", upstream)
	if err != nil {
		t.Fatal(err)
	}
	dsn1, _ := p1.DSN(direct)
	dsn2, _ := p2.DSN(direct)

	// Connections left open across Close: the proxy must end them.
	var conns []*pgx.Conn
	for _, dsn := range []string{dsn1, dsn1, dsn2} {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if err := query1(c, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := p1.Latency(5*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if err := query1(conns[0], 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p2.Blackhole(); err != nil {
		t.Fatal(err)
	}
	if err := p1.ResetPeer(); err != nil {
		t.Fatal(err)
	}
	if err := p1.Clear(); err != nil {
		t.Fatal(err)
	}
	if err := connectAndQuery(t, dsn1); err != nil {
		t.Fatal(err)
	}
	during := runtime.NumGoroutine()
	if during <= baseline {
		t.Fatalf("no goroutines while running (baseline %d, now %d): test is not measuring anything", baseline, during)
	}

	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil { // second Close is a no-op
		t.Fatal(err)
	}
	// The application's own connections: all were closed by the proxy.
	for _, c := range conns {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = c.Close(cctx)
		cancel()
	}

	const margin = 2
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline+margin {
			t.Logf("goroutines: baseline %d, while running %d, after Close %d", baseline, during, n)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: baseline %d, after Close %d (margin %d)\n%s", baseline, n, margin, goroutineDump())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}

	// And no proxy port is left listening.
	for _, addr := range []string{p1.Addr(), p2.Addr()} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts after Close", addr)
		}
	}
	if _, err := chaos.Connect(tp.URL()); err == nil {
		t.Fatal("API still answers after Close")
	}
}

// captureFD points file descriptor fd (1 or 2) at a pipe until the returned
// function is called, which restores it and returns what was written. It
// works at the descriptor level, so it also sees loggers that captured
// os.Stderr at init.
func captureFD(t *testing.T, fd int) func() string {
	t.Helper()
	saved, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dupTo(int(w.Fd()), fd); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	done := make(chan struct{})
	go func() { // drain, so that a writer never blocks on a full pipe
		defer close(done)
		_, _ = io.Copy(&got, r)
	}()
	return func() string {
		_ = dupTo(saved, fd)
		_ = syscall.Close(saved)
		_ = w.Close()
		<-done
		_ = r.Close()
		return got.String()
	}
}

// TestSilentByDefault: with a nil logger, a session that exercises every
// verb (including removing a bandwidth toxic from a live connection, which
// makes Toxiproxy log through zerolog's global stderr logger) writes nothing
// to the process's stdout or stderr.
func TestSilentByDefault(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	upstream, err := chaos.DSNHostPort(direct)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error // reported after the descriptors are restored
	restoreOut := captureFD(t, 1)
	restoreErr := captureFD(t, 2)
	func() {
		ctx := context.Background()
		tp, err := chaos.StartServer(ctx, nil)
		if err != nil {
			errs = append(errs, err)
			return
		}
		defer func() { errs = append(errs, tp.Close()) }()
		p, err := tp.Proxy(ctx, "quiet", upstream)
		if err != nil {
			errs = append(errs, err)
			return
		}
		dsn, _ := p.DSN(direct)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(cctx, dsn)
		if err != nil {
			errs = append(errs, err)
			return
		}
		defer conn.Close(ctx)
		errs = append(errs, p.Bandwidth(1024), p.Latency(time.Millisecond, 0))
		var s string
		errs = append(errs, conn.QueryRow(cctx, "SELECT repeat('x', 100000)").Scan(&s))
		errs = append(errs, p.Clear(), p.Blackhole(), p.Clear(), p.ResetPeer(), p.Clear(), p.Down(), p.Up())
	}()
	stderr := restoreErr()
	stdout := restoreOut()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if stdout != "" || stderr != "" {
		t.Fatalf("printed with a nil logger:\nstdout: %s\nstderr: %s", stdout, stderr)
	}
}
