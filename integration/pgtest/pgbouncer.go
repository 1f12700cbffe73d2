package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// EnvRequirePgBouncer, set to 1, makes a test that needs PgBouncer fail
// instead of skipping when no pgbouncer binary is installed (CI sets it).
const EnvRequirePgBouncer = "PGFALLBACK_REQUIRE_PGBOUNCER"

// EnvPgBouncer names the pgbouncer binary to run instead of the one in PATH:
// another version than the system's (integration/pgtest/pgbouncer/fetch.sh
// fetches Debian 13's 1.24 beside Debian 12's 1.18).
const EnvPgBouncer = "PGFALLBACK_TEST_PGBOUNCER"

// pgbouncerPaths: where NewPgBouncer looks for the binary after PATH
// (Debian's package installs it in /usr/sbin, often not in a user's PATH).
var pgbouncerPaths = []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer"}

// NewPgBouncer starts PgBouncer in front of the database of dsn (a URL, as
// NewDatabase returns), in pool mode mode ("session", "transaction" or
// "statement") with a pool of poolSize server connections, and returns dsn
// with PgBouncer's address: what an application behind a pooler is given.
// settings are more lines of its [pgbouncer] section ("server_login_retry
// = 1"). PgBouncer reaches the server with the DSN's TLS settings; the DSN
// returned has sslmode=disable where dsn sets one. PgBouncer is stopped
// when the test ends. Without a pgbouncer binary the test skips, or fails
// when PGFALLBACK_REQUIRE_PGBOUNCER=1.
func NewPgBouncer(t testing.TB, dsn, mode string, poolSize int, settings ...string) string {
	t.Helper()
	bin := pgbouncerBinary(t)
	out, stop, err := startPgBouncer(bin, dsn, mode, poolSize, settings)
	if err != nil {
		t.Fatalf("pgtest: pgbouncer: %v", err)
	}
	t.Cleanup(stop)
	return out
}

// PgBouncerRelease is a PgBouncer version: 1.24 for PgBouncer 1.24.1.
type PgBouncerRelease struct{ Major, Minor int }

// AtLeast reports whether r is major.minor or later.
func (r PgBouncerRelease) AtLeast(major, minor int) bool {
	return r.Major > major || r.Major == major && r.Minor >= minor
}

func (r PgBouncerRelease) String() string { return fmt.Sprintf("%d.%d", r.Major, r.Minor) }

// PgBouncerVersion is the release of the pgbouncer binary NewPgBouncer
// runs, for a test whose pooler needs a setting only some versions know:
// PgBouncer refuses to start on a setting it does not know
// (max_prepared_statements before 1.21). Without a binary the test skips,
// or fails when PGFALLBACK_REQUIRE_PGBOUNCER=1.
func PgBouncerVersion(t testing.TB) PgBouncerRelease {
	t.Helper()
	bin := pgbouncerBinary(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("pgtest: %s --version: %v: %s", bin, err, tail(string(out), 500))
	}
	r, err := parsePgBouncerVersion(string(out))
	if err != nil {
		t.Fatalf("pgtest: %s --version: %v", bin, err)
	}
	return r
}

// parsePgBouncerVersion reads "PgBouncer 1.24.1" from the first line of
// pgbouncer --version.
func parsePgBouncerVersion(out string) (PgBouncerRelease, error) {
	first, _, _ := strings.Cut(out, "\n")
	v, ok := strings.CutPrefix(strings.TrimSpace(first), "PgBouncer ")
	if ok {
		parts := strings.SplitN(v, ".", 3)
		if len(parts) >= 2 {
			major, err1 := strconv.Atoi(parts[0])
			minor, err2 := strconv.Atoi(parts[1])
			if err1 == nil && err2 == nil {
				return PgBouncerRelease{major, minor}, nil
			}
		}
	}
	return PgBouncerRelease{}, fmt.Errorf("no version in %q", first)
}

// pgbouncerBinary is the pgbouncer to run; without one the test skips, or
// fails when PGFALLBACK_REQUIRE_PGBOUNCER=1.
func pgbouncerBinary(t testing.TB) string {
	t.Helper()
	bin, err := findPgBouncer()
	if err != nil {
		if requireSet(os.Getenv(EnvRequirePgBouncer)) {
			t.Fatalf("pgtest: %v\n%s=1 is set, so this is a failure, not a skip", err, EnvRequirePgBouncer)
		}
		t.Skipf("pgtest: %v (skipped; set %s=1 to make this a failure)", err, EnvRequirePgBouncer)
	}
	return bin
}

func findPgBouncer() (string, error) {
	if p := os.Getenv(EnvPgBouncer); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s=%s is not an executable file", EnvPgBouncer, p)
		}
		return p, nil
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, p := range pgbouncerPaths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("no pgbouncer binary in PATH or " + strings.Join(pgbouncerPaths, ", ") +
		" (install it, e.g. `apt-get install -y pgbouncer`)")
}

// startPgBouncer runs bin with a configuration of its own, in a temporary
// directory, as the server's user when we are root (PgBouncer refuses to
// run as root, as PostgreSQL does).
func startPgBouncer(bin, dsn, mode string, poolSize int, settings []string) (out string, stop func(), err error) {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return "", nil, errors.New("the database's DSN is not a URL with a host")
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	db := strings.TrimPrefix(u.Path, "/")
	password, _ := u.User.Password()
	cred, _, err := serverCredential()
	if err != nil {
		return "", nil, err
	}
	base, err := tempBase(cred)
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp(base, "pgtest-pgbouncer-")
	if err != nil {
		return "", nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	// Like a cluster dir: a later run removes it if this process dies
	// without cleaning up (removeStale).
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return "", nil, err
	}
	listen, err := freePort()
	if err != nil {
		return "", nil, err
	}
	// auth_type any: clients are not asked for a password; PgBouncer logs
	// in as the database's own user. The file holds that password: 0600.
	target := fmt.Sprintf("host=%s port=%s dbname=%s user=%s", host, port, db, u.User.Username())
	if password != "" {
		target += " password=" + password
	}
	settings = append(serverTLS(u), settings...)
	ini := fmt.Sprintf(`[databases]
%s = %s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = any
pool_mode = %s
default_pool_size = %d
max_client_conn = 500
logfile = %s
%s
`, db, target, listen, mode, poolSize, filepath.Join(dir, "pgbouncer.log"), strings.Join(settings, "\n"))
	conf := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(conf, []byte(ini), 0o600); err != nil {
		return "", nil, err
	}
	if cred != nil {
		for _, p := range []string{dir, conf} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return "", nil, err
			}
		}
	}
	var output bytes.Buffer
	cmd := exec.Command(bin, conf)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, serverEnv(), &output, &output
	cmd.SysProcAttr = childAttr(cred)
	if err := spawn(cmd); err != nil {
		return "", nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop = func() {
		cmd.Process.Kill()
		<-exited
		os.RemoveAll(dir)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(listen))
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			stop()
			return "", nil, fmt.Errorf("exited at start: %s%s", tail(output.String(), 1000), tail(string(log), 1000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("not listening on %s after 10 s", addr)
		}
	}
	ok = true
	u.Host = addr
	q := u.Query()
	for _, k := range tlsParams {
		q.Del(k)
	}
	if q.Has("sslmode") {
		q.Set("sslmode", "disable") // loopback to PgBouncer, which takes no TLS here
	}
	u.RawQuery = q.Encode()
	return u.String(), stop, nil
}

// tlsParams are the DSN's TLS settings, which serverTLS hands to PgBouncer.
var tlsParams = []string{"sslrootcert", "sslcert", "sslkey", "sslpassword"}

// serverTLS is what PgBouncer needs to reach the server as the DSN of u
// does: an external server that takes only TLS (sslmode=verify-full, say)
// refuses PgBouncer's plain connections.
func serverTLS(u *url.URL) []string {
	q := u.Query()
	mode := q.Get("sslmode")
	if mode != "require" && mode != "verify-ca" && mode != "verify-full" {
		return nil
	}
	out := []string{"server_tls_sslmode = " + mode}
	for _, ps := range [][2]string{{"sslrootcert", "server_tls_ca_file"}, {"sslcert", "server_tls_cert_file"}, {"sslkey", "server_tls_key_file"}} {
		if v := q.Get(ps[0]); v != "" {
			out = append(out, ps[1]+" = "+v)
		}
	}
	return out
}
