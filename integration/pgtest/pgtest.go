package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/migrations"
)

// Environment variables read by the package.
const (
	// EnvDSN names an existing server to use (mode 1), e.g.
	// postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable.
	EnvDSN = "PGFALLBACK_TEST_DSN"
	// EnvRequire, set to 1 (or true), turns "no PostgreSQL available" from a
	// skip into a test failure.
	EnvRequire = "PGFALLBACK_REQUIRE_POSTGRES"
	// EnvMode chooses the mode: auto (the default), local, docker or
	// external. A test that must stop and start its server never uses an
	// external one: under external, such tests use local, then Docker.
	EnvMode = "PGFALLBACK_TEST_MODE"
	// EnvImage names the image of Docker mode (default DefaultDockerImage),
	// e.g. one built locally where none can be pulled.
	EnvImage = "PGFALLBACK_TEST_IMAGE"
)

// DefaultDockerImage is the image used in Docker mode.
const DefaultDockerImage = "postgres:16-alpine"

// ErrUnavailable is matched (errors.Is) by the error StartServer returns when
// no way of getting a PostgreSQL server works. Tests skip on it unless
// PGFALLBACK_REQUIRE_POSTGRES=1. Any other error (an unreachable
// PGFALLBACK_TEST_DSN, a failing migration) always fails the test.
var ErrUnavailable = errors.New("pgtest: no PostgreSQL server available")

// ErrNotControllable is returned by Stop, Start and Restart of an external
// server.
var ErrNotControllable = errors.New("pgtest: an external server (PGFALLBACK_TEST_DSN) cannot be stopped or started")

// Mode is how a Server was obtained.
type Mode int

const (
	// ModeAuto, in Options, tries external, local, then Docker.
	ModeAuto Mode = iota
	// ModeExternal is a server named by PGFALLBACK_TEST_DSN (or Options.DSN).
	ModeExternal
	// ModeLocal is a throwaway cluster run from local PostgreSQL binaries.
	ModeLocal
	// ModeDocker is a testcontainers-go container.
	ModeDocker
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeExternal:
		return "external"
	case ModeLocal:
		return "local"
	case ModeDocker:
		return "docker"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// ParseMode reads a mode's name as EnvMode holds it: "" or auto, local,
// docker, external.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return ModeAuto, nil
	case "local":
		return ModeLocal, nil
	case "docker":
		return ModeDocker, nil
	case "external":
		return ModeExternal, nil
	}
	return ModeAuto, fmt.Errorf("pgtest: %s=%q: want auto, local, docker or external", EnvMode, s)
}

// Options configures StartServer. The zero value picks the mode
// automatically from the environment.
type Options struct {
	// Mode forces one way; ModeAuto (zero) tries external (when a DSN is
	// set), then local, then Docker.
	Mode Mode
	// DSN of an external server; empty means $PGFALLBACK_TEST_DSN unless
	// IgnoreEnv.
	DSN string
	// IgnoreEnv ignores the environment: PGFALLBACK_TEST_DSN,
	// PGFALLBACK_TEST_MODE and PGFALLBACK_TEST_IMAGE.
	IgnoreEnv bool
	// Controllable requires a server that can be stopped and started, so the
	// external mode is not used. Such a server also keeps
	// synchronous_commit on, so that a row committed before Stop is still
	// there after Start (the shared server runs with it off).
	Controllable bool
	// Durable keeps PostgreSQL's default durability (fsync,
	// full_page_writes and synchronous_commit on), for benchmarks of what
	// a commit costs; by default a throwaway server turns them off. A
	// durable server is controllable.
	Durable bool
	// Settings are extra server settings (postgres -c name=value) for a
	// server this package starts, local or Docker; an external server is
	// used as it is. A benchmark of logical decoding sets wal_level.
	Settings map[string]string
	// BinDir is the directory holding initdb and postgres; empty searches
	// pg_config --bindir, /usr/lib/postgresql/*/bin (highest), then PATH.
	BinDir string
	// DockerImage defaults to DefaultDockerImage.
	DockerImage string
	// StartTimeout bounds starting the server (and each Start); default
	// 60 s for local, 3 min for Docker (image pull).
	StartTimeout time.Duration
	// Migrate is applied to the template database that CreateDatabase
	// clones; nil means migrations.Up.
	Migrate func(ctx context.Context, dsn string) error
	// Logf receives timings and progress; nil discards them.
	Logf func(format string, args ...any)
}

func (o Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

func (o Options) externalDSN() string {
	if o.DSN != "" {
		return o.DSN
	}
	if o.IgnoreEnv {
		return ""
	}
	return strings.TrimSpace(os.Getenv(EnvDSN))
}

// StartServer picks a mode (see the package documentation) and returns a
// running server, which the caller must Close. When no mode works the error
// matches ErrUnavailable and lists every reason.
func StartServer(ctx context.Context, opts Options) (*Server, error) {
	if opts.Durable {
		opts.Controllable = true
	}
	if opts.Migrate == nil {
		opts.Migrate = migrations.Up
	}
	if opts.DockerImage == "" && !opts.IgnoreEnv {
		opts.DockerImage = strings.TrimSpace(os.Getenv(EnvImage))
	}
	if opts.DockerImage == "" {
		opts.DockerImage = DefaultDockerImage
	}
	// A DSN the caller gave is an explicit choice; the environment's mode
	// is for the zero Options.
	if opts.Mode == ModeAuto && !opts.IgnoreEnv && opts.DSN == "" {
		m, err := ParseMode(os.Getenv(EnvMode))
		if err != nil {
			return nil, err
		}
		if m == ModeExternal && opts.Controllable {
			m = ModeAuto // see EnvMode
		}
		opts.Mode = m
	}
	dsn := opts.externalDSN()

	var attempts []Attempt
	try := func(m Mode) (*Server, bool, error) {
		var s *Server
		var err error
		switch m {
		case ModeExternal:
			s, err = startExternal(ctx, opts, dsn)
		case ModeLocal:
			s, err = startLocal(ctx, opts)
		case ModeDocker:
			s, err = startDocker(ctx, opts)
		default:
			return nil, false, fmt.Errorf("pgtest: unknown mode %v", m)
		}
		if err == nil {
			return s, true, nil
		}
		if !errors.Is(err, errModeUnavailable) {
			return nil, false, err // a real failure: do not hide it by moving on
		}
		attempts = append(attempts, Attempt{Mode: m, Err: err})
		opts.logf("pgtest: %v mode unavailable: %v", m, err)
		return nil, false, nil
	}

	var order []Mode
	switch {
	case opts.Mode != ModeAuto:
		order = []Mode{opts.Mode}
	case dsn != "" && !opts.Controllable:
		order = []Mode{ModeExternal}
	default:
		order = []Mode{ModeLocal, ModeDocker}
		switch {
		case dsn == "":
			attempts = append(attempts, Attempt{Mode: ModeExternal, Err: fmt.Errorf("%s is not set", EnvDSN)})
		case opts.Controllable:
			attempts = append(attempts, Attempt{Mode: ModeExternal, Err: fmt.Errorf("%s is set, but a server reached by DSN cannot be stopped and started, which this test needs", EnvDSN)})
		}
	}
	if opts.Mode == ModeExternal && opts.Controllable {
		return nil, &UnavailableError{Attempts: []Attempt{{Mode: ModeExternal, Err: ErrNotControllable}}}
	}
	for _, m := range order {
		s, ok, err := try(m)
		if err != nil {
			return nil, err
		}
		if ok {
			return s, nil
		}
	}
	return nil, &UnavailableError{Attempts: attempts}
}

// errModeUnavailable marks an error of one mode that lets StartServer move on
// to the next mode (no binaries, no Docker engine, …).
var errModeUnavailable = errors.New("mode unavailable")

type unavailableErr struct{ err error }

func (e unavailableErr) Error() string { return e.err.Error() }
func (e unavailableErr) Unwrap() []error {
	return []error{e.err, errModeUnavailable}
}

func modeUnavailable(format string, args ...any) error {
	return unavailableErr{fmt.Errorf(format, args...)}
}

// Attempt is one mode StartServer tried, and why it did not work.
type Attempt struct {
	Mode Mode
	Err  error
}

// UnavailableError lists why no mode worked. It matches ErrUnavailable.
type UnavailableError struct {
	Attempts []Attempt
}

func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func (e *UnavailableError) Error() string {
	var b strings.Builder
	b.WriteString("no PostgreSQL server available for tests; tried:")
	for _, a := range e.Attempts {
		fmt.Fprintf(&b, "\n  - %s: %v", a.Mode, a.Err)
	}
	b.WriteString("\nto fix, do one of: set " + EnvDSN + " to a server where this user may create databases" +
		" (in the pgfallback repository: `docker compose up -d --wait` and " + EnvDSN +
		"=postgres://pgfallback:compose-secret@127.0.0.1:5432/postgres?sslmode=disable);" +
		" install the PostgreSQL server binaries (e.g. `apt-get install -y postgresql`);" +
		" or start a Docker engine")
	return b.String()
}

// requireSet reports whether the value of PGFALLBACK_REQUIRE_POSTGRES asks
// for failures instead of skips.
func requireSet(v string) bool {
	v = strings.TrimSpace(v)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

// verdict decides what a test does when it could not get a server: it fails
// when require (the value of PGFALLBACK_REQUIRE_POSTGRES) is set or when the
// error is not "unavailable" (a broken DSN, a failing migration), and skips
// otherwise. msg is what the test reports.
func verdict(require string, err error) (fail bool, msg string) {
	msg = err.Error()
	if !strings.HasPrefix(msg, "pgtest: ") {
		msg = "pgtest: " + msg
	}
	if !errors.Is(err, ErrUnavailable) {
		return true, msg
	}
	if requireSet(require) {
		return true, msg + "\n" + EnvRequire + "=" + require + " is set, so this is a failure, not a skip"
	}
	return false, msg + "\n(skipped; set " + EnvRequire + "=1 to make this a failure)"
}

func giveUp(t testing.TB, err error) {
	t.Helper()
	fail, msg := verdict(os.Getenv(EnvRequire), err)
	if fail {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// shared is the test binary's server, started lazily by the first test that
// asks and stopped by Main.
var shared struct {
	mu      sync.Mutex
	inMain  bool
	started bool
	srv     *Server
	err     error
}

// Main runs the package's tests with m and exits with their code, stopping
// the shared server (if a test started one) in between. Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	shared.mu.Lock()
	shared.inMain = true
	shared.mu.Unlock()

	code := m.Run()

	if err := closeShared(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: closing the shared server: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func closeShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	srv := shared.srv
	shared.srv, shared.started, shared.err = nil, false, nil
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// verboseLogf writes to stderr when the test binary runs with -v. It serves
// the shared server, which outlives any single test's t.Logf.
func verboseLogf(format string, args ...any) {
	if testing.Testing() && testing.Verbose() {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}

// Shared returns the test binary's shared server, starting it on first use.
// It skips the test when no PostgreSQL can be had (fails instead under
// PGFALLBACK_REQUIRE_POSTGRES=1). The package's TestMain must call Main, which
// stops the server at the end. Do not Stop or Close the shared server: use
// NewServer for that.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.mu.Lock()
	if !shared.inMain {
		shared.mu.Unlock()
		t.Fatal("pgtest: the shared server needs pgtest.Main: add `func TestMain(m *testing.M) { pgtest.Main(m) }` to this package's tests, so that the server is stopped when the test binary ends")
	}
	if !shared.started {
		shared.started = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		t0 := time.Now()
		shared.srv, shared.err = StartServer(ctx, Options{Logf: verboseLogf})
		cancel()
		if shared.err == nil {
			verboseLogf("pgtest: shared %s server at %s ready in %v", shared.srv.Mode(), shared.srv.Addr(), time.Since(t0).Round(time.Millisecond))
		}
	}
	srv, err := shared.srv, shared.err
	shared.mu.Unlock()
	if err != nil {
		giveUp(t, err)
	}
	return srv
}

// NewDatabase returns the DSN of a fresh database on the shared server,
// cloned from the migrated template, and drops it when the test ends. It
// skips the test when no PostgreSQL can be had (fails instead under
// PGFALLBACK_REQUIRE_POSTGRES=1).
func NewDatabase(t testing.TB) string {
	t.Helper()
	srv := Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	dsn, drop, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Logf("pgtest: database ready in %v (%s server)", time.Since(t0).Round(time.Millisecond), srv.Mode())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		t0 := time.Now()
		if err := drop(ctx); err != nil {
			t.Errorf("pgtest: %v", err)
			return
		}
		t.Logf("pgtest: database dropped in %v", since(t0))
	})
	return dsn
}

// NewServer starts a private server for a test that stops and starts it, or
// that needs settings of its own ("name=value", e.g. "wal_level=logical"),
// and closes it when the test ends. An external server (PGFALLBACK_TEST_DSN)
// cannot be controlled, so when it is the only way available the test skips
// (fails under PGFALLBACK_REQUIRE_POSTGRES=1) with that reason.
func NewServer(t testing.TB, settings ...string) *Server {
	t.Helper()
	return newPrivateServer(t, ModeAuto, settings)
}

// NewPrimary is NewServer for a test that gives its server a standby
// (NewStandby): a local server, whatever PGFALLBACK_TEST_MODE says, since
// only a server of this machine's binaries can have one. Without them the
// test is skipped, or fails under PGFALLBACK_REQUIRE_POSTGRES=1.
func NewPrimary(t testing.TB, settings ...string) *Server {
	t.Helper()
	return newPrivateServer(t, ModeLocal, settings)
}

func newPrivateServer(t testing.TB, mode Mode, settings []string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := Options{Mode: mode, Controllable: true, Logf: t.Logf}
	for _, s := range settings {
		name, value, ok := strings.Cut(s, "=")
		if !ok {
			t.Fatalf("pgtest: setting %q: want name=value", s)
		}
		if opts.Settings == nil {
			opts.Settings = map[string]string{}
		}
		opts.Settings[name] = value
	}
	srv, err := StartServer(ctx, opts)
	if err != nil {
		giveUp(t, err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("pgtest: closing server: %v", err)
		}
	})
	return srv
}

// settingArgs are opts.Settings as postgres arguments, in name order.
func (o Options) settingArgs() []string {
	names := make([]string, 0, len(o.Settings))
	for n := range o.Settings {
		names = append(names, n)
	}
	slices.Sort(names)
	var args []string
	for _, n := range names {
		args = append(args, "-c", n+"="+o.Settings[n])
	}
	return args
}
