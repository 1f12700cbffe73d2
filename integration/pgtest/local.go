package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Local mode: a throwaway cluster in a temporary directory.
//
// The postmaster is run directly as a child of this process, not through
// pg_ctl start: pg_ctl forks the postmaster into a new session (setsid) and
// exits, so neither a process-group kill nor a parent-death signal would
// reach it. As a direct child started with Pdeathsig=SIGKILL it is killed by
// the kernel when this process ends, however it ends; its own children
// (backends, checkpointer, …) notice the postmaster's death and exit. Stop
// sends SIGQUIT, which is exactly what pg_ctl stop -m immediate does.

const (
	ownerFile = "pgtest.owner" // in the cluster dir: the pid of the process that made it
	dirPrefix = "pgtest-"
)

type localBackend struct {
	opts    Options
	bin     string
	base    string // temporary directory, removed by close
	data    string
	logPath string
	port    int
	cred    *syscall.Credential // nil: run as ourselves
	sock    string              // unix_socket_directories value
	// extraArgs follow serverArgs' own (a standby's cluster_name).
	extraArgs []string

	mu   sync.Mutex
	proc *proc // the current or last run of the postmaster
}

func startLocal(ctx context.Context, opts Options) (*Server, error) {
	bin, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	cred, runAs, err := serverCredential()
	if err != nil {
		return nil, err
	}
	tmpBase, err := tempBase(cred)
	if err != nil {
		return nil, err
	}
	removeStale(tmpBase, opts)

	b := &localBackend{opts: opts, bin: bin, cred: cred}
	if b.opts.StartTimeout == 0 {
		b.opts.StartTimeout = 60 * time.Second
	}
	b.base, err = os.MkdirTemp(tmpBase, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest: local: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	if err := os.WriteFile(filepath.Join(b.base, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("pgtest: local: %w", err)
	}
	if cred != nil {
		if err := os.Chown(b.base, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: local: %w", err)
		}
	}
	b.data = filepath.Join(b.base, "data")
	b.logPath = filepath.Join(b.base, "postgres.log")
	// A unix socket path is limited to ~107 bytes; without one only TCP is
	// served, which is all the tests use.
	if len(b.base)+len("/.s.PGSQL.65535.lock") < 100 {
		b.sock = b.base
	}

	t0 := time.Now()
	if err := b.initdb(ctx); err != nil {
		return nil, err
	}
	initTime := time.Since(t0)

	t1 := time.Now()
	var startErr error
	for attempt := 0; attempt < 3; attempt++ { // another process may take the free port before the server does
		if b.port, startErr = freePort(); startErr != nil {
			break
		}
		startErr = b.start()
		if startErr == nil || !errors.Is(startErr, errPortTaken) {
			break
		}
	}
	if startErr != nil {
		return nil, fmt.Errorf("pgtest: local: %w", startErr)
	}
	ok = true
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", addr)
	opts.logf("pgtest: local server (%s, run as %s) in %s: initdb %v, start %v",
		bin, runAs, b.base, initTime.Round(time.Millisecond), since(t1))
	return newServer(ModeLocal, dsn, addr, b, opts), nil
}

func (b *localBackend) initdb(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.StartTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "initdb"),
		"-D", b.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	b.setup(cmd)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("pgtest: local: initdb: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("pgtest: local: initdb: %w\n%s", err, tail(out.String(), 2000))
	}
	return nil
}

// setup prepares a command to run as the server user, in the cluster dir,
// killed with this process.
func (b *localBackend) setup(cmd *exec.Cmd) {
	cmd.Dir = b.base
	cmd.Env = serverEnv()
	cmd.SysProcAttr = childAttr(b.cred)
}

var errPortTaken = errors.New("port already in use")

// proc is one run of the postmaster. err is written before done is closed.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs the postmaster and waits until it accepts connections.
func (b *localBackend) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running() {
		return nil
	}
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	logStart, _ := logf.Seek(0, io.SeekEnd)
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(filepath.Join(b.bin, "postgres"), b.serverArgs()...)
	b.setup(cmd)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := spawn(cmd); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	b.proc = p
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	// Poll until the server answers, it exits, or the deadline passes.
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.StartTimeout)
	defer cancel()
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=5", b.port)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := b.checkOurs(ctx, dsn)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			log := readFrom(b.logPath, logStart)
			if strings.Contains(log, "could not bind") || strings.Contains(log, "already in use") {
				return fmt.Errorf("%w: postgres exited: %v\n%s", errPortTaken, p.err, tail(log, 2000))
			}
			return fmt.Errorf("postgres exited during startup: %v\n%s", p.err, tail(log, 2000))
		case <-ctx.Done():
			b.killLocked()
			return fmt.Errorf("postgres did not accept connections within %v: %v\n%s", b.opts.StartTimeout, err, tail(readFrom(b.logPath, logStart), 2000))
		case <-tick.C:
		}
	}
}

// serverArgs: durability off where only an OS crash could lose data, which
// a throwaway cluster does not care about. fsync=off and full_page_writes=off
// lose nothing when only the server process dies (Stop), because what it
// wrote sits in the OS page cache. synchronous_commit=off would: a commit
// returns before its WAL leaves the server's shared memory, so a Stop right
// after it would lose the row. So it is off only for servers that are not
// meant to be stopped (the shared one).
func (b *localBackend) serverArgs() []string {
	args := []string{
		"-D", b.data,
		"-p", strconv.Itoa(b.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + b.sock,
		"-c", "max_connections=200",
		"-c", "logging_collector=off",
		// A streaming standby (StartStandby) needs wal_level=replica,
		// max_wal_senders > 0 and initdb's pg_hba.conf line for
		// replication from 127.0.0.1: the defaults since PostgreSQL 10.
	}
	if !b.opts.Durable {
		syncCommit := "on"
		if !b.opts.Controllable {
			syncCommit = "off"
		}
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit="+syncCommit, "-c", "full_page_writes=off")
	}
	args = append(args, b.opts.settingArgs()...)
	return append(args, b.extraArgs...)
}

// checkOurs connects and checks that the server answering is ours (another
// one could have taken the port).
func (b *localBackend) checkOurs(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var dir string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
		return err
	}
	if filepath.Clean(dir) != filepath.Clean(b.data) {
		return fmt.Errorf("%w: a server with data directory %s answers on port %d", errPortTaken, dir, b.port)
	}
	return nil
}

// running must be called with b.mu held.
func (b *localBackend) running() bool { return b.proc != nil && !b.proc.exited() }

// stop is an immediate shutdown (SIGQUIT, as pg_ctl stop -m immediate sends);
// it returns when the postmaster has exited, which it does after its
// children, so the port is free and connections are refused.
func (b *localBackend) stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stopLocked(syscall.SIGQUIT, 15*time.Second)
}

func (b *localBackend) stopLocked(sig syscall.Signal, grace time.Duration) error {
	if !b.running() {
		return nil
	}
	p := b.proc
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	// Did not exit in time: kill it; its children notice and exit.
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return fmt.Errorf("postgres did not exit within %v of %v; killed", grace, sig)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("postgres (pid %d) did not exit even after SIGKILL", p.cmd.Process.Pid)
	}
}

// killLocked kills the postmaster and waits for it to exit; b.mu must be
// held.
func (b *localBackend) killLocked() {
	if !b.running() {
		return
	}
	_ = b.proc.cmd.Process.Kill()
	select {
	case <-b.proc.done:
	case <-time.After(10 * time.Second):
	}
}

// kill crashes the server: SIGKILL to the postmaster and to every process
// it started, at once. The postmaster is stopped (SIGSTOP) first, so that
// it starts no child while they are listed. It returns once they have all
// exited.
func (b *localBackend) kill() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.running() {
		return nil
	}
	p := b.proc
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	children := childPIDs(pid)
	for _, c := range children {
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	_ = p.cmd.Process.Kill()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	select {
	case <-p.done:
	case <-deadline.C:
		return fmt.Errorf("postgres (pid %d) did not exit within 10 s of SIGKILL", pid)
	}
	// Its children are no longer ours to wait for (init adopts them): poll.
	for {
		left := alive(children)
		if len(left) == 0 {
			return nil
		}
		select {
		case <-deadline.C:
			return fmt.Errorf("postgres processes %v still alive 10 s after SIGKILL", left)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// childPIDs lists the live processes whose parent is pid.
func childPIDs(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	parent := strconv.Itoa(pid)
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:])) // state, ppid, …
		if len(fields) > 1 && fields[1] == parent && processAlive(child) {
			out = append(out, child)
		}
	}
	return out
}

func (b *localBackend) pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.running() {
		return 0
	}
	return b.proc.cmd.Process.Pid
}

func (b *localBackend) close() error {
	b.mu.Lock()
	err := b.stopLocked(syscall.SIGQUIT, 15*time.Second)
	b.mu.Unlock()
	if b.base != "" {
		if rerr := os.RemoveAll(b.base); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// spawner starts every child process from one goroutine locked to its OS
// thread for the life of the process: the kernel sends the parent-death
// signal when the thread that forked the child exits, not the process, and
// Go may otherwise end threads.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range spawner.reqs {
				r.errc <- r.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd, errc}
	return <-errc
}

// findBinDir returns the directory holding initdb and postgres: dir if set,
// else pg_config --bindir, else the highest /usr/lib/postgresql/*/bin, else
// the directory of initdb found in PATH.
func findBinDir(dir string) (string, error) {
	has := func(d string) bool {
		for _, p := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(d, p)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if dir != "" {
		if has(dir) {
			return dir, nil
		}
		return "", modeUnavailable("no initdb and postgres in %s", dir)
	}
	var tried []string
	if pgc, err := exec.LookPath("pg_config"); err == nil {
		out, err := exec.Command(pgc, "--bindir").Output()
		if d := strings.TrimSpace(string(out)); err == nil && d != "" {
			if has(d) {
				return d, nil
			}
			tried = append(tried, "pg_config --bindir ("+d+")")
		}
	} else {
		tried = append(tried, "pg_config (not in PATH)")
	}
	if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
		for _, d := range dirs {
			if has(d) {
				return d, nil
			}
		}
	}
	tried = append(tried, "/usr/lib/postgresql/*/bin")
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	tried = append(tried, "PATH")
	return "", modeUnavailable("no PostgreSQL server binaries (initdb, postgres) found; looked in %s", strings.Join(tried, ", "))
}

// pgVersion turns /usr/lib/postgresql/16/bin into 16 (9.6 into 9.6).
func pgVersion(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// serverCredential: PostgreSQL refuses to run as root, so as root the
// cluster is run by the "postgres" user, or "nobody".
func serverCredential() (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		name := strconv.Itoa(os.Geteuid())
		if err == nil {
			name = u.Username
		}
		return nil, name, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false}, name, nil
	}
	return nil, "", modeUnavailable("running as root, and neither a \"postgres\" nor a \"nobody\" user exists to run the server (PostgreSQL refuses to run as root)")
}

// tempBase picks the directory for cluster dirs: os.TempDir() unless the
// server user cannot traverse it, then /tmp or /var/tmp.
func tempBase(cred *syscall.Credential) (string, error) {
	var reasons []string
	for _, d := range []string{os.TempDir(), "/tmp", "/var/tmp"} {
		if err := traversable(d, cred); err != nil {
			reasons = append(reasons, err.Error())
			continue
		}
		return d, nil
	}
	return "", modeUnavailable("no temporary directory usable by the server user: %s", strings.Join(reasons, "; "))
}

// traversable checks that the user of cred can reach dir (x on every
// ancestor) and that we can create entries in it.
func traversable(dir string, cred *syscall.Credential) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if cred == nil {
		return nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		perm := fi.Mode().Perm()
		okX := perm&0o001 != 0 ||
			(st.Gid == cred.Gid && perm&0o010 != 0) ||
			(st.Uid == cred.Uid && perm&0o100 != 0)
		if !okX {
			return fmt.Errorf("uid %d cannot traverse %s (%v)", cred.Uid, d, perm)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// removeStale deletes cluster dirs left by test binaries that were killed
// (their servers died with them): those whose owner process is gone.
func removeStale(base string, opts Options) {
	dirs, _ := filepath.Glob(filepath.Join(base, dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not ours, or being created
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if pm := postmasterPID(filepath.Join(d, "data")); pm > 0 && processAlive(pm) {
			continue
		}
		if err := os.RemoveAll(d); err == nil {
			opts.logf("pgtest: removed stale cluster dir %s (owner pid %d is gone)", d, pid)
		}
	}
}

// processAlive reports whether pid exists and is not a zombie.
// alive returns those of pids whose processes still run.
func alive(pids []int) []int {
	var left []int
	for _, pid := range pids {
		if processAlive(pid) {
			left = append(left, pid)
		}
	}
	return left
}

func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return !exited(pid)
}

func postmasterPID(data string) int {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// serverEnv is our environment without PG* variables, which could change
// what initdb and postgres do.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return append(env, "LC_ALL=C")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func readFrom(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
