package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoStandby is matched (errors.Is) by the error of StartStandby when the
// server cannot have a standby: only a local server (ModeLocal) of
// PostgreSQL 13 or later, with pg_basebackup beside its binaries, can. The
// error matches ErrUnavailable too, so a test that gives up on it skips,
// or fails under PGFALLBACK_REQUIRE_POSTGRES=1 (see NewStandby).
var ErrNoStandby = errors.New("pgtest: no streaming standby")

type noStandbyError struct{ reason string }

func (e *noStandbyError) Error() string {
	return "pgtest: no streaming standby: " + e.reason
}

func (e *noStandbyError) Is(target error) bool {
	return target == ErrNoStandby || target == ErrUnavailable
}

// Standby is an asynchronous streaming replica of a local Server, made by
// StartStandby: a second postmaster on its own port, fed by the primary's
// WAL over a replication connection. Reads work on it while it streams
// (hot standby); Promote makes it a primary. Its methods are safe for
// concurrent use. The Server that made it closes it when it closes.
type Standby struct {
	primary *Server
	be      *localBackend
	name    string // cluster_name, and so the walreceiver's application_name
	dsn     string
	addr    string

	mu     sync.Mutex
	closed bool
}

// StartStandby creates an asynchronous streaming standby of s and returns
// once it streams: pg_basebackup -R (as the server user) into a new data
// directory beside the primary's, a postmaster on a free loopback port,
// and pg_stat_wal_receiver showing it streaming. Replication is
// asynchronous (the primary has no synchronous_standby_names): a commit is
// acknowledged before the standby has it, so a row acknowledged just
// before the primary dies may be missing on the standby.
//
// Only a local server can have a standby; for any other the error matches
// ErrNoStandby (and ErrUnavailable). The standby is closed by Close, or
// with s.
func (s *Server) StartStandby(ctx context.Context) (*Standby, error) {
	b, ok := s.be.(*localBackend)
	if !ok {
		return nil, &noStandbyError{fmt.Sprintf("only a local server (PostgreSQL binaries on this machine) can have one; this one is %s (a test that needs a standby starts its server with NewPrimary)", s.mode)}
	}
	basebackup := filepath.Join(b.bin, "pg_basebackup")
	if fi, err := os.Stat(basebackup); err != nil || fi.IsDir() {
		return nil, &noStandbyError{fmt.Sprintf("no pg_basebackup in %s", b.bin)}
	}
	s.ctlMu.Lock() // no Stop, Start or Close of the primary meanwhile
	defer s.ctlMu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := checkStandbyVersion(ctx, s); err != nil {
		return nil, err
	}

	s.mu.Lock()
	s.seq++
	name := fmt.Sprintf("pgtest_standby_%d", s.seq)
	s.mu.Unlock()
	dir, err := os.MkdirTemp(b.base, "standby-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: standby: %w", err)
	}
	sb := &localBackend{
		opts: b.opts, bin: b.bin, cred: b.cred, base: dir,
		data: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "postgres.log"),
		extraArgs: []string{"-c", "cluster_name=" + name},
	}
	ok = false
	defer func() {
		if !ok {
			_ = sb.close()
		}
	}()
	if b.cred != nil {
		if err := os.Chown(dir, int(b.cred.Uid), int(b.cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: standby: %w", err)
		}
	}
	if len(dir)+len("/.s.PGSQL.65535.lock") < 100 {
		sb.sock = dir
	}

	// The base backup: a fast checkpoint (a spread one takes minutes),
	// the WAL written meanwhile streamed along (-X stream), and -R writes
	// standby.signal and primary_conninfo.
	bctx, cancel := context.WithTimeout(ctx, b.opts.StartTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(bctx, basebackup, "-D", sb.data, "-h", "127.0.0.1", "-p", strconv.Itoa(b.port),
		"-U", "postgres", "-X", "stream", "-R", "--checkpoint=fast", "--no-sync", "--no-password")
	sb.setup(cmd)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := spawn(cmd); err != nil {
		return nil, fmt.Errorf("pgtest: standby: pg_basebackup: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("pgtest: standby: pg_basebackup: %w\n%s", err, tail(out.String(), 2000))
	}
	backupTime := time.Since(t0)

	var startErr error
	for attempt := 0; attempt < 3; attempt++ { // another process may take the free port first
		if sb.port, startErr = freePort(); startErr != nil {
			break
		}
		startErr = sb.start()
		if startErr == nil || !errors.Is(startErr, errPortTaken) {
			break
		}
	}
	if startErr != nil {
		return nil, fmt.Errorf("pgtest: standby: %w", startErr)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sb.port))
	st := &Standby{primary: s, be: sb, name: name, addr: addr,
		dsn: fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr)}
	if err := st.waitStreaming(bctx); err != nil {
		return nil, fmt.Errorf("pgtest: standby %s: %w\n%s", addr, err, tail(readFrom(sb.logPath, 0), 2000))
	}
	s.mu.Lock()
	if s.standbys == nil {
		s.standbys = map[*Standby]bool{}
	}
	s.standbys[st] = true
	s.mu.Unlock()
	ok = true
	s.opts.logf("pgtest: standby of %s at %s streaming in %v (base backup %v)", s.addr, addr, since(t0), backupTime.Round(time.Millisecond))
	return st, nil
}

// checkStandbyVersion: CutReplication needs primary_conninfo to be
// reloadable, which it is from PostgreSQL 13.
func checkStandbyVersion(ctx context.Context, s *Server) error {
	conn, err := s.connect(ctx, s.dsn)
	if err != nil {
		return fmt.Errorf("pgtest: standby: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return fmt.Errorf("pgtest: standby: %w", err)
	}
	if num < 130000 {
		return &noStandbyError{fmt.Sprintf("needs PostgreSQL 13 or later (a reloadable primary_conninfo); the server is %d", num)}
	}
	return nil
}

// NewStandby starts a streaming standby of srv for a test (see
// StartStandby) and closes it when the test ends. When srv cannot have
// one (not a local server) the test skips with the reason, or fails under
// PGFALLBACK_REQUIRE_POSTGRES=1.
func NewStandby(t testing.TB, srv *Server) *Standby {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sb, err := srv.StartStandby(ctx)
	if err != nil {
		giveUp(t, err) // a real failure fails: it does not match ErrUnavailable
	}
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Errorf("pgtest: closing standby: %v", err)
		}
	})
	return sb
}

// DSN is the connection string of the standby's maintenance database
// ("postgres"). DSNFor gives that of another database.
func (sb *Standby) DSN() string { return sb.dsn }

// Addr is the standby's host:port.
func (sb *Standby) Addr() string { return sb.addr }

// DSNFor returns primaryDSN (a URL naming any database of the primary)
// pointed at the standby instead: same user, database and parameters.
func (sb *Standby) DSNFor(primaryDSN string) (string, error) {
	u, err := parseURL(primaryDSN)
	if err != nil {
		return "", err
	}
	u.Host = sb.addr
	return u.String(), nil
}

// MultiHostDSN returns a URL that lists the primary's address, then the
// standby's, with target_session_attrs=primary: pgx (and libpq) try the
// hosts in order and keep the first that is not in recovery, so a client
// reconnecting after a failover lands on the promoted standby. (Not
// read-write, which also refuses a primary whose writes are turned off by
// default_transaction_read_only, a provider's guard against a full disk:
// the application would see an outage where PostgreSQL answers reads.) The user,
// password, database and parameters are primaryDSN's (a URL); only the
// address is taken from standbyDSN (a URL or keyword/value string).
//
//	postgres://u:p@127.0.0.1:5433,127.0.0.1:5434/db?sslmode=disable&target_session_attrs=primary
func MultiHostDSN(primaryDSN, standbyDSN string) (string, error) {
	u, err := parseURL(primaryDSN)
	if err != nil {
		return "", err
	}
	if strings.Contains(u.Host, ",") {
		return "", errors.New("pgtest: multi-host DSN: the primary's DSN already lists several hosts")
	}
	cfg, err := pgconn.ParseConfig(standbyDSN)
	if err != nil {
		return "", fmt.Errorf("pgtest: multi-host DSN: standby DSN: %w", redactParse(err))
	}
	if cfg.Host == "" || strings.HasPrefix(cfg.Host, "/") {
		return "", errors.New("pgtest: multi-host DSN: the standby's DSN names no TCP host")
	}
	u.Host += "," + hostPort(cfg)
	q := u.Query()
	q.Set("target_session_attrs", "primary")
	u.RawQuery = q.Encode()
	multi := u.String()
	if _, err := pgconn.ParseConfig(multi); err != nil {
		return "", fmt.Errorf("pgtest: multi-host DSN: %w", redactParse(err))
	}
	return multi, nil
}

func parseURL(dsn string) (*url.URL, error) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return nil, errors.New("pgtest: the primary's DSN must be a postgres:// URL")
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgtest: parse the primary's DSN: %w", redactParse(err))
	}
	return u, nil
}

// redactParse keeps a password out of a parse error (which may quote the
// connection string).
func redactParse(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return errors.New("invalid URL")
	}
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("cannot parse the connection string")
	}
	return err
}

// waitStreaming polls until the standby's walreceiver streams.
func (sb *Standby) waitStreaming(ctx context.Context) error {
	return sb.poll(ctx, "the walreceiver to stream", func(conn *pgx.Conn) (bool, error) {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'").Scan(&n)
		return n > 0, err
	})
}

// poll connects to the standby and runs cond every 10 ms until it holds,
// fails, or ctx ends.
func (sb *Standby) poll(ctx context.Context, what string, cond func(*pgx.Conn) (bool, error)) error {
	if err := sb.checkOpen(); err != nil {
		return err
	}
	conn, err := sb.primary.connect(ctx, sb.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		done, err := cond(conn)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if err := wait(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
	}
}

func (sb *Standby) checkOpen() error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.closed {
		return errors.New("pgtest: standby is closed")
	}
	return nil
}

// Sync waits until the standby has replayed everything the primary had
// written when Sync was called, so that what was committed before is
// visible on the standby. It polls until ctx ends: give it a deadline
// (a standby whose replication was cut never catches up).
func (sb *Standby) Sync(ctx context.Context) error {
	conn, err := sb.primary.connect(ctx, sb.primary.dsn)
	if err != nil {
		return fmt.Errorf("pgtest: standby sync: primary: %w", err)
	}
	var lsn string
	err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("pgtest: standby sync: primary: %w", err)
	}
	err = sb.poll(ctx, "replay up to "+lsn, func(conn *pgx.Conn) (bool, error) {
		var ok bool
		err := conn.QueryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)", lsn).Scan(&ok)
		return ok, err
	})
	if err != nil {
		return fmt.Errorf("pgtest: standby sync: %w", err)
	}
	return nil
}

// CutReplication stops the streaming without stopping either server: the
// standby's primary_conninfo is emptied (ALTER SYSTEM, then
// pg_reload_conf(); PostgreSQL 13 and later then stop the walreceiver and
// start none). It returns once the standby has no walreceiver and, if the
// primary is running, the primary no walsender for it. Both servers go on
// answering; what the primary commits from then on never reaches the
// standby.
func (sb *Standby) CutReplication(ctx context.Context) error {
	t0 := time.Now()
	conn, err := sb.primary.connect(ctx, sb.dsn)
	if err != nil {
		return fmt.Errorf("pgtest: cut replication: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = ''"); err != nil {
		return fmt.Errorf("pgtest: cut replication: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pgtest: cut replication: %w", err)
	}
	err = sb.poll(ctx, "the walreceiver to stop", func(conn *pgx.Conn) (bool, error) {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_wal_receiver").Scan(&n)
		return n == 0, err
	})
	if err != nil {
		return fmt.Errorf("pgtest: cut replication: %w", err)
	}
	if sb.primary.be.pid() != 0 {
		pconn, err := sb.primary.connect(ctx, sb.primary.dsn)
		if err != nil {
			return fmt.Errorf("pgtest: cut replication: primary: %w", err)
		}
		defer pconn.Close(context.WithoutCancel(ctx))
		for {
			var n int
			if err := pconn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1", sb.name).Scan(&n); err != nil {
				return fmt.Errorf("pgtest: cut replication: primary: %w", err)
			}
			if n == 0 {
				break
			}
			if err := wait(ctx, 10*time.Millisecond); err != nil {
				return fmt.Errorf("pgtest: cut replication: the primary still has a walsender for %s: %w", sb.name, err)
			}
		}
	}
	sb.primary.opts.logf("pgtest: replication to standby %s cut in %v", sb.addr, since(t0))
	return nil
}

// Promote makes the standby a primary and returns once it is out of
// recovery and accepts writes (at most a minute): pg_promote, then
// pg_is_in_recovery() polled every 10 ms (pg_promote's own wait checks
// every 100 ms). It writes WAL on a new timeline from then on. Promoting
// it while its old primary runs makes two primaries: Kill the old one
// first. Promoting a standby that was promoted is an error.
func (sb *Standby) Promote(ctx context.Context) error {
	t0 := time.Now()
	if err := sb.checkOpen(); err != nil {
		return err
	}
	conn, err := sb.primary.connect(ctx, sb.dsn)
	if err != nil {
		return fmt.Errorf("pgtest: promote: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var signalled bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&signalled); err != nil {
		return fmt.Errorf("pgtest: promote: %w", err)
	}
	if !signalled {
		return errors.New("pgtest: promote: pg_promote could not signal the postmaster")
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var inRecovery bool
		if err := conn.QueryRow(pctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return fmt.Errorf("pgtest: promote: %w", err)
		}
		if !inRecovery {
			break
		}
		if err := wait(pctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("pgtest: promote: still in recovery: %w\n%s", err, tail(readFrom(sb.be.logPath, 0), 2000))
		}
	}
	sb.primary.opts.logf("pgtest: standby %s promoted in %v", sb.addr, since(t0))
	return nil
}

// Close stops the standby (immediately) and deletes its data. Closing twice
// does nothing.
func (sb *Standby) Close() error {
	sb.mu.Lock()
	if sb.closed {
		sb.mu.Unlock()
		return nil
	}
	sb.closed = true
	sb.mu.Unlock()
	sb.primary.mu.Lock()
	delete(sb.primary.standbys, sb)
	sb.primary.mu.Unlock()
	if err := sb.be.close(); err != nil {
		return fmt.Errorf("pgtest: close standby %s: %w", sb.addr, err)
	}
	return nil
}

// Timeline is the timeline the server at dsn writes WAL on: 1 for a
// cluster that was never promoted, one more with each promotion. It reads
// pg_walfile_name(pg_current_wal_lsn()), which fails on a server in
// recovery.
func Timeline(ctx context.Context, dsn string) (uint32, error) {
	conn, err := (&Server{}).connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("pgtest: timeline: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var file string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&file); err != nil {
		return 0, fmt.Errorf("pgtest: timeline: %w", err)
	}
	if len(file) < 8 {
		return 0, fmt.Errorf("pgtest: timeline: unexpected WAL file name %q", file)
	}
	tli, err := strconv.ParseUint(file[:8], 16, 32)
	if err != nil {
		return 0, fmt.Errorf("pgtest: timeline: WAL file name %q: %w", file, err)
	}
	return uint32(tli), nil
}
