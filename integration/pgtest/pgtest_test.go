package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) {
	if os.Getenv(orphanEnv) != "" {
		orphanChild() // never returns
	}
	Main(m)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func tableExists(t *testing.T, ctx context.Context, conn *pgx.Conn, table string) bool {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil {
		t.Fatalf("to_regclass(%s): %v", table, err)
	}
	return ok
}

// --- pure functions -------------------------------------------------------

func TestVerdict(t *testing.T) {
	unavailable := &UnavailableError{Attempts: []Attempt{
		{ModeExternal, errors.New(EnvDSN + " is not set")},
		{ModeLocal, errors.New("no PostgreSQL server binaries")},
		{ModeDocker, errors.New("rootless Docker not found")},
	}}
	broken := errors.New("pgtest: migrate template: syntax error")
	for _, tc := range []struct {
		require string
		err     error
		fail    bool
	}{
		{"", unavailable, false},
		{"0", unavailable, false},
		{"false", unavailable, false},
		{"no", unavailable, false}, // not a boolean: not set
		{"1", unavailable, true},
		{"true", unavailable, true},
		{" TRUE ", unavailable, true},
		{"", fmt.Errorf("wrapped: %w", unavailable), false},
		{"", broken, true}, // a real error is never a skip
		{"1", broken, true},
	} {
		fail, msg := verdict(tc.require, tc.err)
		if fail != tc.fail {
			t.Errorf("verdict(%q, %v): fail = %v, want %v", tc.require, tc.err, fail, tc.fail)
		}
		if !strings.Contains(msg, tc.err.Error()) {
			t.Errorf("verdict(%q, …) message lacks the reason: %s", tc.require, msg)
		}
		if errors.Is(tc.err, ErrUnavailable) && !fail && !strings.Contains(msg, EnvRequire+"=1") {
			t.Errorf("skip message does not say how to make it a failure: %s", msg)
		}
	}
}

func TestUnavailableErrorMessage(t *testing.T) {
	err := error(&UnavailableError{Attempts: []Attempt{
		{ModeExternal, errors.New(EnvDSN + " is not set")},
		{ModeLocal, errors.New("no binaries here")},
		{ModeDocker, errors.New("rootless Docker not found")},
	}})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatal("UnavailableError does not match ErrUnavailable")
	}
	msg := err.Error()
	for _, want := range []string{"external", "no binaries here", "rootless Docker not found",
		EnvDSN, "apt-get install -y postgresql", "docker compose up"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestStartServerUnavailable(t *testing.T) {
	ctx := testCtx(t)
	// Only an external server, but control is needed.
	_, err := StartServer(ctx, Options{Mode: ModeExternal, DSN: "postgres://x@127.0.0.1:1/x", Controllable: true})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(fmt.Sprint(err), "cannot be stopped") {
		t.Errorf("controllable external: got %v", err)
	}
	// No binaries where we are told to look.
	_, err = StartServer(ctx, Options{Mode: ModeLocal, BinDir: t.TempDir()})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("local without binaries: got %v, want ErrUnavailable", err)
	}
	// A DSN that is set but does not answer is a mistake to report, not a skip.
	// (Whatever PGFALLBACK_TEST_MODE says: a DSN given is the caller's choice.)
	srv, err := StartServer(ctx, Options{DSN: "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2"})
	if err == nil {
		srv.Close()
		t.Fatalf("unreachable DSN: a %s server was started instead", srv.Mode())
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("unreachable DSN: got %v, want a non-skip error", err)
	}
	if fail, _ := verdict("", err); !fail {
		t.Error("unreachable DSN would be skipped")
	}
}

// With no usable binaries and no DSN, StartServer falls through to Docker;
// where no engine runs, it gives up fast with every reason.
func TestNothingAvailable(t *testing.T) {
	t0 := time.Now()
	srv, err := StartServer(testCtx(t), Options{IgnoreEnv: true, BinDir: t.TempDir()})
	if err == nil {
		srv.Close()
		t.Skipf("a %s server was available, nothing to test", srv.Mode())
	}
	t.Logf("gave up after %v:\n%v", time.Since(t0), err)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	for _, want := range []string{"external: " + EnvDSN + " is not set", "local: no initdb", "docker: "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message lacks %q", want)
		}
	}
}

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/db1?sslmode=disable"},
		{"postgresql://u@h/", "postgresql://u@h/db1"},
		{"postgres://u@h?dbname=x&sslmode=disable", "postgres://u@h/db1?sslmode=disable"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=db1"},
		{"", "dbname=db1"},
	} {
		if got := withDatabase(tc.in, "db1"); got != tc.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// pgx reads the last dbname of a keyword/value string.
	cfg, err := pgx.ParseConfig(withDatabase("host=h user=u dbname=postgres", "db1"))
	if err != nil || cfg.Database != "db1" {
		t.Errorf("keyword/value override: %v %v", cfg, err)
	}
}

func TestWithParam(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:p@h:5432/db?sslmode=disable", "postgres://u:p@h:5432/db?default_query_exec_mode=exec&sslmode=disable"},
		{"postgres://u@h/db?default_query_exec_mode=simple_protocol", "postgres://u@h/db?default_query_exec_mode=exec"},
		{"host=h user=u dbname=db", "host=h user=u dbname=db default_query_exec_mode='exec'"},
	} {
		if got := WithParam(tc.in, "default_query_exec_mode", "exec"); got != tc.want {
			t.Errorf("WithParam(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// A keyword/value string quotes the value, and pgx reads it back.
	cfg, err := pgx.ParseConfig(WithParam("host=h user=u", "application_name", `it's a \ test`))
	if err != nil || cfg.RuntimeParams["application_name"] != `it's a \ test` {
		t.Errorf("keyword/value quoting: %v %v", cfg.RuntimeParams, err)
	}
}

// PgBouncer reaches a server that takes only TLS with the DSN's TLS
// settings (found with an external server behind verify-full).
func TestServerTLSForPgBouncer(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u@h/db", ""},
		{"postgres://u@h/db?sslmode=prefer", ""},
		{"postgres://u@h/db?sslmode=require", "server_tls_sslmode = require"},
		{"postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.crt&sslcert=/c.crt&sslkey=/c.key",
			"server_tls_sslmode = verify-full|server_tls_ca_file = /ca.crt|server_tls_cert_file = /c.crt|server_tls_key_file = /c.key"},
	} {
		u, err := url.Parse(tc.dsn)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(serverTLS(u), "|"); got != tc.want {
			t.Errorf("serverTLS(%s) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{ModeAuto: "auto", ModeExternal: "external", ModeLocal: "local", ModeDocker: "docker", Mode(9): "Mode(9)"} {
		if m.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(m), m.String(), want)
		}
	}
}

// --- against a real server -------------------------------------------------

func TestNewDatabaseIsolatedAndMigrated(t *testing.T) {
	ctx := testCtx(t)
	dsnA, dsnB := NewDatabase(t), NewDatabase(t)
	if dsnA == dsnB {
		t.Fatalf("two databases with one DSN: %s", dsnA)
	}
	a, b := connect(t, ctx, dsnA), connect(t, ctx, dsnB)
	for _, c := range []*pgx.Conn{a, b} {
		for _, table := range []string{"vendors", "work_items"} {
			if !tableExists(t, ctx, c, table) {
				t.Errorf("%s: migrated table %s is missing", c.Config().Database, table)
			}
		}
	}
	if _, err := a.Exec(ctx, "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	if !tableExists(t, ctx, a, "only_in_a") {
		t.Fatal("table created in A is not there")
	}
	if tableExists(t, ctx, b, "only_in_a") {
		t.Fatal("table created in A is visible in B")
	}
	// And a third database, created afterwards, does not see it either: the
	// template was not touched.
	c := connect(t, ctx, NewDatabase(t))
	if tableExists(t, ctx, c, "only_in_a") {
		t.Fatal("table created in A leaked into the template")
	}
}

func TestNewDatabaseParallel(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range 6 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			dsn := NewDatabase(t)
			mu.Lock()
			dup := seen[dsn]
			seen[dsn] = true
			mu.Unlock()
			if dup {
				t.Errorf("DSN handed out twice: %s", dsn)
			}
			ctx := testCtx(t)
			conn := connect(t, ctx, dsn)
			if !tableExists(t, ctx, conn, "vendors") {
				t.Error("vendors missing")
			}
		})
	}
}

func TestDatabaseDroppedAtCleanup(t *testing.T) {
	ctx := testCtx(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		name = cfg.Database
		// An open connection must not prevent the drop.
		connect(t, ctx, cfg.ConnString())
	})
	if name == "" {
		t.Skip("inner test did not get a database")
	}
	conn := connect(t, ctx, Shared(t).DSN())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestSharedIsShared(t *testing.T) {
	if a, b := Shared(t), Shared(t); a != b {
		t.Fatal("Shared returned two servers")
	}
}

// canConnect tries once, briefly.
func canConnect(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func TestStopStartRestart(t *testing.T) {
	ctx := testCtx(t)
	srv := NewServer(t)
	if !srv.Controllable() {
		t.Fatalf("NewServer gave an uncontrollable %s server", srv.Mode())
	}
	t.Logf("mode %s, addr %s", srv.Mode(), srv.Addr())
	dsn, drop, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := drop(ctx); err != nil {
			t.Error(err)
		}
	}()
	dsnBefore, addrBefore := srv.DSN(), srv.Addr()

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE survives (x int); INSERT INTO survives VALUES (42)"); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop (immediate) took %v", time.Since(t0))
	if err := canConnect(dsn); err == nil {
		t.Fatal("new connection succeeded while the server is stopped")
	} else {
		t.Logf("connect while stopped: %v", err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("existing connection still works while the server is stopped")
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	t0 = time.Now()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("start took %v", time.Since(t0))
	if srv.DSN() != dsnBefore || srv.Addr() != addrBefore {
		t.Fatalf("address changed: %s -> %s", addrBefore, srv.Addr())
	}
	// Start returns once the server accepts connections: no polling needed.
	conn2 := connect(t, ctx, dsn)
	var x int
	if err := conn2.QueryRow(ctx, "SELECT x FROM survives").Scan(&x); err != nil || x != 42 {
		t.Fatalf("data after crash and start: x=%d err=%v", x, err)
	}
	conn2.Close(ctx)

	t0 = time.Now()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(t0))
	conn3 := connect(t, ctx, dsn)
	if err := conn3.QueryRow(ctx, "SELECT x FROM survives").Scan(&x); err != nil || x != 42 {
		t.Fatalf("data after restart: x=%d err=%v", x, err)
	}

	// New databases still work after the restarts.
	dsn2, drop2, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := canConnect(dsn2); err != nil {
		t.Fatal(err)
	}
	if err := drop2(ctx); err != nil {
		t.Fatal(err)
	}
}

// processesGone polls until none of pids is alive (zombies count as gone),
// or fails at the deadline.
func processesGone(t *testing.T, pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := alive(pids)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres processes still alive %v later: %v (of %v)", within, left, pids)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, bounded by the deadline
	}
}

// family is pid and its live children. (Postgres children call setsid(), so
// they are not in the postmaster's process group; their parent is it.)
func family(pid int) []int {
	return append([]int{pid}, childPIDs(pid)...)
}

func TestCloseLeavesNoProcess(t *testing.T) {
	ctx := testCtx(t)
	srv, err := StartServer(ctx, Options{Controllable: true, Logf: t.Logf})
	if err != nil {
		giveUp(t, err)
	}
	t.Cleanup(func() { srv.Close() }) // in case of an early failure; Close is idempotent
	if srv.Mode() != ModeLocal {
		t.Skipf("process check needs a local server, have %s", srv.Mode())
	}
	b := srv.be.(*localBackend)
	pid := b.pid()
	if pid == 0 || !processAlive(pid) {
		t.Fatalf("no running postmaster (pid %d)", pid)
	}
	procs := family(pid)
	if len(procs) < 3 {
		t.Fatalf("expected the postmaster %d and its children, found %v", pid, procs)
	}
	if got := postmasterPID(b.data); got != pid {
		t.Fatalf("postmaster.pid says %d, we started %d", got, pid)
	}
	if _, _, err := srv.CreateDatabase(ctx); err != nil { // leave a database behind: Close must not care
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	processesGone(t, procs, 5*time.Second)
	if _, err := os.Stat(b.base); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir %s not removed: %v", b.base, err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := srv.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// The postmaster must die with the test binary even when it exits without
// cleaning up. A child copy of this test binary starts a server, reports
// its pid, and kills itself with SIGKILL.
const orphanEnv = "PGTEST_ORPHAN_CHILD"

func orphanChild() {
	srv, err := StartServer(context.Background(), Options{Mode: ModeLocal, Controllable: true})
	if err != nil {
		fmt.Println("ERR", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(3)
	}
	b := srv.be.(*localBackend)
	procs := family(b.pid())
	fmt.Printf("PID %s %s\n", b.base, strings.Trim(fmt.Sprint(procs), "[]"))
	if os.Getenv(orphanEnv) == "exit" {
		os.Exit(7) // no deferred cleanup, no Close
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

func TestServerDiesWithBinary(t *testing.T) {
	if _, err := findBinDir(""); err != nil {
		giveUp(t, &UnavailableError{Attempts: []Attempt{{ModeLocal, err}}})
	}
	for _, how := range []string{"kill", "exit"} {
		t.Run(how, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), orphanEnv+"="+how)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, _ := bufio.NewReader(out).ReadString('\n')
			werr := cmd.Wait()
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[0] != "PID" {
				t.Fatalf("child said %q (exit: %v)", line, werr)
			}
			dir := fields[1]
			var pids []int
			for _, f := range fields[2:] {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("child said %q", line)
				}
				pids = append(pids, pid)
			}
			t.Cleanup(func() { os.RemoveAll(filepath.Clean(dir)) })
			t.Logf("child exited (%v); its postmaster and children were %v", werr, pids)
			processesGone(t, pids, 10*time.Second)
		})
	}
}

// An external server (mode 1), here played by the shared server reached by
// DSN: databases work, control does not, several users at once do not
// collide, and Close drops what it created.
func TestExternalMode(t *testing.T) {
	ctx := testCtx(t)
	base := Shared(t)
	var servers []*Server
	for range 2 { // two "test binaries" sharing one server
		srv, err := StartServer(ctx, Options{DSN: base.DSN(), Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, srv)
	}
	if servers[0].Mode() != ModeExternal || servers[0].Controllable() {
		t.Fatalf("mode %s, controllable %v", servers[0].Mode(), servers[0].Controllable())
	}
	if err := servers[0].Stop(); !errors.Is(err, ErrNotControllable) {
		t.Errorf("Stop on external: %v", err)
	}
	if servers[0].Addr() != base.Addr() {
		t.Errorf("Addr %s, want %s", servers[0].Addr(), base.Addr())
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv := servers[i%2]
			dsn, drop, err := srv.CreateDatabase(ctx)
			if err != nil {
				errs <- err
				return
			}
			if err := canConnect(dsn); err != nil {
				errs <- err
			}
			if i%4 == 0 {
				return // left for Close
			}
			if err := drop(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	conn := connect(t, ctx, base.DSN())
	for _, srv := range servers {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname LIKE $1", srv.prefix+"%").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d database(s) %s* left after Close", n, srv.prefix)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, " Local ": ModeLocal, "docker": ModeDocker, "EXTERNAL": ModeExternal} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseMode("podman"); err == nil || !strings.Contains(err.Error(), EnvMode) {
		t.Errorf("ParseMode(podman): %v, want an error naming %s", err, EnvMode)
	}
}

// A Docker engine that answers but cannot have the image (offline, a
// registry outage, a proxy) is Docker mode unavailable, like no engine.
func TestDockerImageThatCannotBePulledIsUnavailable(t *testing.T) {
	t.Setenv(EnvImage, "pgfallback.invalid/no-such-image:never")
	_, err := StartServer(testCtx(t), Options{Mode: ModeDocker})
	if err == nil {
		t.Fatal("a server started from an image that cannot exist")
	}
	t.Logf("%v", err)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if msg := err.Error(); strings.Contains(msg, "no Docker engine") || strings.Contains(msg, "does not answer") {
		t.Skip("no Docker engine answers here: the image path is not reached")
	} else if !strings.Contains(msg, "cannot be pulled") || !strings.Contains(msg, EnvImage) {
		t.Fatalf("message does not say the image cannot be had, or how to name another: %s", msg)
	}
}

func TestParsePgBouncerVersion(t *testing.T) {
	for out, want := range map[string][2]int{
		"PgBouncer 1.18.0\nlibevent 2.1.12-stable\n": {1, 18},
		"PgBouncer 1.24.1\n":                         {1, 24},
		"PgBouncer 2.0":                              {2, 0},
	} {
		if r, err := parsePgBouncerVersion(out); err != nil || [2]int{r.Major, r.Minor} != want {
			t.Errorf("parsePgBouncerVersion(%q) = %v, %v; want %v", out, r, err, want)
		}
	}
	for _, out := range []string{"", "pgbouncer: unknown option", "PgBouncer x.y"} {
		if _, err := parsePgBouncerVersion(out); err == nil {
			t.Errorf("parsePgBouncerVersion(%q): no error", out)
		}
	}
	for _, c := range []struct {
		r            PgBouncerRelease
		major, minor int
		want         bool
	}{{PgBouncerRelease{1, 18}, 1, 21, false}, {PgBouncerRelease{1, 21}, 1, 21, true}, {PgBouncerRelease{1, 24}, 1, 22, true},
		{PgBouncerRelease{2, 0}, 1, 22, true}, {PgBouncerRelease{0, 30}, 1, 21, false}} {
		if got := c.r.AtLeast(c.major, c.minor); got != c.want {
			t.Errorf("%v.AtLeast(%d, %d) = %v, want %v", c.r, c.major, c.minor, got, c.want)
		}
	}
}
