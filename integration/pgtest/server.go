package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// backend is what a controllable mode (local, Docker) implements.
type backend interface {
	stop() error
	start() error
	kill() error
	close() error
	// pid is the postmaster's process id on this machine, 0 if unknown or
	// not running.
	pid() int
}

// Server is a running PostgreSQL server: the shared one of a test binary, a
// private one from NewServer, or one from StartServer. Its methods are safe
// for concurrent use.
type Server struct {
	mode    Mode
	dsn     string // maintenance database
	addr    string
	be      backend // nil for external
	opts    Options
	prefix  string // of every database this Server creates
	created time.Time

	ctlMu sync.Mutex // serializes Stop, Start, Close

	createMu sync.Mutex // serializes template preparation and CREATE DATABASE
	tmpl     string     // migrated template, "" until prepared

	mu       sync.Mutex
	seq      int
	dbs      map[string]bool   // created and not yet dropped
	standbys map[*Standby]bool // started and not yet closed
	closed   bool
}

func newServer(mode Mode, dsn, addr string, be backend, opts Options) *Server {
	return &Server{
		mode:    mode,
		dsn:     dsn,
		addr:    addr,
		be:      be,
		opts:    opts,
		prefix:  "pgtest_" + randomHex(4),
		created: time.Now(),
		dbs:     map[string]bool{},
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// DSN is the connection string of the server's maintenance database
// ("postgres" for local and Docker servers, the given one for an external
// server). It stays the same across Stop and Start.
func (s *Server) DSN() string { return s.dsn }

// Addr is the server's host:port, what a TCP proxy in front of it dials.
func (s *Server) Addr() string { return s.addr }

// Mode tells how the server was obtained.
func (s *Server) Mode() Mode { return s.mode }

// Controllable reports whether Stop, Start and Restart work (false for an
// external server).
func (s *Server) Controllable() bool { return s.be != nil }

// Stop shuts the server down immediately, like a crash (pg_ctl stop -m
// immediate: no checkpoint, clients cut off, crash recovery at the next
// Start); for Docker the container is stopped without grace period. It
// returns once connections are refused. Stopping a stopped server does
// nothing.
func (s *Server) Stop() error {
	return s.control("stop", "stopped (immediate)", func() error { return s.be.stop() })
}

// Start starts a stopped server again on the same port with the same data,
// and returns once it accepts connections. Starting a running server does
// nothing.
func (s *Server) Start() error {
	return s.control("start", "started", func() error { return s.be.start() })
}

// Kill crashes the server and leaves it down: SIGKILL to the postmaster
// and to every process it started, at once, as `docker kill` or systemd
// killing the service's cgroup would. Nothing is flushed and no client is told anything: the
// kernel closes their connections. It returns once every process has
// exited. For Docker the container is stopped without grace period (as
// Stop). Killing a stopped server does nothing.
//
// Start would run crash recovery and bring the server back on its old
// timeline with every row it had committed; after a standby of it was
// promoted that makes two primaries, so a failover test leaves it down.
func (s *Server) Kill() error {
	return s.control("kill", "killed", func() error { return s.be.kill() })
}

// control runs one of Stop, Start and Kill under the control lock, and
// logs how long it took.
func (s *Server) control(verb, done string, op func() error) error {
	if s.be == nil {
		return ErrNotControllable
	}
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	t0 := time.Now()
	if err := op(); err != nil {
		return fmt.Errorf("pgtest: %s %s server: %w", verb, s.mode, err)
	}
	s.opts.logf("pgtest: %s server at %s %s in %v", s.mode, s.addr, done, since(t0))
	return nil
}

// Restart is Stop then Start.
func (s *Server) Restart() error {
	t0 := time.Now()
	if err := s.Stop(); err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	s.opts.logf("pgtest: %s server at %s restarted in %v", s.mode, s.addr, since(t0))
	return nil
}

func (s *Server) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgtest: server is closed")
	}
	return nil
}

// Close stops a local or Docker server (and its standbys) and deletes its
// data; for an external server it drops the databases this Server created
// that are still there (the template included). Closing twice does nothing.
func (s *Server) Close() error {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var leftover []string
	for name := range s.dbs {
		leftover = append(leftover, name)
	}
	var standbys []*Standby
	for sb := range s.standbys {
		standbys = append(standbys, sb)
	}
	s.mu.Unlock()

	t0 := time.Now()
	if s.be != nil {
		var errs []error
		for _, sb := range standbys { // their data lives in the server's directory
			errs = append(errs, sb.Close())
		}
		err := errors.Join(append(errs, s.be.close())...)
		s.opts.logf("pgtest: %s server at %s closed in %v", s.mode, s.addr, since(t0))
		return err
	}
	// External: clean up after ourselves, the server stays.
	s.createMu.Lock()
	tmpl := s.tmpl
	s.createMu.Unlock()
	if tmpl != "" {
		leftover = append(leftover, tmpl)
	}
	if len(leftover) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, name := range leftover {
		if err := s.dropDatabase(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	s.opts.logf("pgtest: dropped %d leftover database(s) on the external server in %v", len(leftover), since(t0))
	return errors.Join(errs...)
}

// CreateDatabase creates a fresh database cloned from the migrated template
// (migrating it on first use) and returns its DSN and a function that drops
// it (terminating its connections). Creations are serialized.
func (s *Server) CreateDatabase(ctx context.Context) (dsn string, drop func(context.Context) error, err error) {
	if err := s.checkOpen(); err != nil {
		return "", nil, err
	}
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if s.tmpl == "" {
		if err := s.prepareTemplate(ctx); err != nil {
			return "", nil, err
		}
	}

	s.mu.Lock()
	s.seq++
	name := fmt.Sprintf("%s_%d", s.prefix, s.seq)
	s.mu.Unlock()

	conn, err := s.connect(ctx, s.dsn)
	if err != nil {
		return "", nil, fmt.Errorf("pgtest: create database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	stmt := "CREATE DATABASE " + ident(name) + " TEMPLATE " + ident(s.tmpl)
	// The template refuses connections (ALLOW_CONNECTIONS false), but a
	// backend that was connected while it was migrated may linger a moment,
	// and CREATE DATABASE fails with 55006 "source database is being
	// accessed by other users" while it does.
	backoff := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err = conn.Exec(ctx, stmt)
		if err == nil || !isSQLState(err, "55006") || attempt == 6 {
			break
		}
		if werr := wait(ctx, backoff); werr != nil {
			break
		}
		backoff *= 2
	}
	if err != nil {
		return "", nil, fmt.Errorf("pgtest: %s: %w", stmt, err)
	}
	s.mu.Lock()
	s.dbs[name] = true
	s.mu.Unlock()

	var once sync.Once
	var dropErr error
	drop = func(ctx context.Context) error {
		once.Do(func() { dropErr = s.dropDatabase(ctx, name) })
		return dropErr
	}
	return withDatabase(s.dsn, name), drop, nil
}

// prepareTemplate creates and migrates the template. Its name is unique to
// this Server, so test binaries sharing an external server never collide.
func (s *Server) prepareTemplate(ctx context.Context) error {
	t0 := time.Now()
	name := s.prefix + "_tmpl"
	conn, err := s.connect(ctx, s.dsn)
	if err != nil {
		return fmt.Errorf("pgtest: template: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident(name)); err != nil {
		return fmt.Errorf("pgtest: create template %s: %w", name, err)
	}
	fail := func(err error) error {
		if derr := dropDB(ctx, conn, name); derr != nil {
			err = errors.Join(err, derr)
		}
		return err
	}
	if err := s.opts.Migrate(ctx, withDatabase(s.dsn, name)); err != nil {
		return fail(fmt.Errorf("pgtest: migrate template %s: %w", name, err))
	}
	migrated := time.Now()
	// No connection may stay open to the template: refuse new ones, end the
	// ones the migrator may have left behind, and wait until they are gone.
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(name)+" WITH ALLOW_CONNECTIONS false"); err != nil {
		return fail(fmt.Errorf("pgtest: template %s: %w", name, err))
	}
	if err := terminateAndWait(ctx, conn, name); err != nil {
		return fail(fmt.Errorf("pgtest: template %s: %w", name, err))
	}
	s.tmpl = name
	s.opts.logf("pgtest: template %s migrated in %v (ready in %v)", name, migrated.Sub(t0).Round(time.Millisecond), since(t0))
	return nil
}

func (s *Server) dropDatabase(ctx context.Context, name string) error {
	conn, err := s.connect(ctx, s.dsn)
	if err != nil {
		return fmt.Errorf("pgtest: drop database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := dropDB(ctx, conn, name); err != nil {
		return fmt.Errorf("pgtest: drop database %s: %w", name, err)
	}
	s.mu.Lock()
	delete(s.dbs, name)
	s.mu.Unlock()
	return nil
}

// dropDB drops a database, forcing its connections closed.
func dropDB(ctx context.Context, conn *pgx.Conn, name string) error {
	_, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)")
	if err != nil && isSQLState(err, "42601") { // before PostgreSQL 13: no WITH (FORCE)
		if err = terminateAndWait(ctx, conn, name); err == nil {
			_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name))
		}
	}
	return err
}

// terminateAndWait ends every other backend connected to database name and
// polls until none is left.
func terminateAndWait(ctx context.Context, conn *pgx.Conn, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = $1 AND pid <> pg_backend_pid()`, name).Scan(&n)
		if err != nil {
			return fmt.Errorf("closing connections to %s: %w", name, err)
		}
		if n == 0 {
			return nil
		}
		if err := wait(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("connections to %s still open: %w", name, err)
		}
	}
}

func (s *Server) connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > 10*time.Second {
		cfg.ConnectTimeout = 10 * time.Second
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// ident quotes an SQL identifier.
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func isSQLState(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// wait sleeps d, or less if ctx ends first (then it returns ctx.Err()).
// It paces retries; it is never used to wait for an event.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// withDatabase returns dsn with its database replaced by db. dsn is a URL
// (postgres://…) or keyword/value (host=… dbname=…) connection string; in the
// latter a later keyword overrides an earlier one.
func withDatabase(dsn, db string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Path = "/" + db
			u.RawPath = ""
			q := u.Query()
			if q.Has("dbname") {
				q.Del("dbname")
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
	}
	dsn = strings.TrimSpace(dsn)
	if dsn == "" {
		return "dbname=" + db
	}
	return dsn + " dbname=" + db
}

// WithParam returns dsn with the connection parameter key set to value, in
// the URL's query or as a trailing keyword: a DSN choosing pgx's
// default_query_exec_mode, say.
func WithParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			q := u.Query()
			q.Set(key, value)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return strings.TrimSpace(dsn) + " " + key + "='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value) + "'"
}

// hostPort is the address of the first host of a parsed config.
func hostPort(cfg *pgconn.Config) string {
	return net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
}
