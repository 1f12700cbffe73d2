// Package pgtest gives tests a real PostgreSQL server: the project's own
// integration tests, and those of applications built on pgfallback.
//
// A server is found or made, in this order:
//
//  1. External: PGFALLBACK_TEST_DSN is set. That server is used as is (it is
//     never stopped); the DSN's user must be allowed to create databases.
//     Several test binaries may share it at once (go test ./... runs packages
//     in parallel): each binary builds its own uniquely named template.
//  2. Local: PostgreSQL server binaries are found (pg_config --bindir, the
//     highest /usr/lib/postgresql/*/bin, then PATH). A throwaway cluster is
//     made in a temporary directory (initdb, trust authentication, fsync off)
//     and its postmaster listens on a free 127.0.0.1 port. When the test
//     binary runs as root, initdb and the server run as the "postgres" user
//     (or "nobody"), because PostgreSQL refuses to run as root.
//  3. Docker: testcontainers-go's postgres module (postgres:16-alpine). When
//     no Docker engine answers, this is detected in milliseconds.
//
// If none works, tests that need a server are skipped with a message that
// lists what was tried and how to fix it, unless PGFALLBACK_REQUIRE_POSTGRES=1
// (CI sets it), in which case they fail: a database test must never pass CI
// by being skipped.
//
// One server is shared by all tests of a test binary, and every test gets a
// fresh database cloned (CREATE DATABASE … TEMPLATE) from a template to which
// the project's migrations were applied once; the database is dropped when
// the test ends. Use it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		dsn := pgtest.NewDatabase(t) // fresh, migrated, dropped at cleanup
//		store, err := pgstore.Open(context.Background(), dsn)
//		...
//	}
//
// Fault tests that stop and start PostgreSQL get a private server of their
// own, closed at the end of the test:
//
//	srv := pgtest.NewServer(t) // skipped (or failed) if only an external DSN exists
//	dsn, drop, err := srv.CreateDatabase(ctx)
//	...
//	srv.Stop()  // immediate shutdown, like a crash
//	srv.Start() // same port, same data
//
// Failover tests give a private local server an asynchronous streaming
// standby, and lose what replication had not carried when they promote it:
//
//	srv := pgtest.NewPrimary(t)     // local whatever the mode: skipped (or failed) without server binaries
//	sb := pgtest.NewStandby(t, srv)
//	multi, err := pgtest.MultiHostDSN(dsn, sb.DSN()) // target_session_attrs=primary
//	sb.CutReplication(ctx) // both servers run on; the primary's commits stop reaching the standby
//	srv.Kill()             // SIGKILL to every server process; it stays down
//	sb.Promote(ctx)        // a primary on timeline 2; clients on multi land on it
//
// Tests of what a connection pooler changes put a real PgBouncer in front
// of a database:
//
//	pooled := pgtest.NewPgBouncer(t, dsn, "transaction", 2) // skipped (or failed) without a pgbouncer binary
//
// Outside tests (the CLI's drill), StartServer picks a mode the same way and
// returns a running server that the caller must Close.
//
// Server processes do not outlive the test binary: Main stops the shared
// server after the tests, Close stops private ones, and a local postmaster is
// started directly (not daemonized through pg_ctl, which would detach it into
// its own session) as a child of the test binary with a parent-death signal
// (SIGKILL), so it also dies when the binary exits through os.Exit, a panic
// or a kill. Temporary cluster directories left behind by a killed binary are
// removed by the next run. With Docker, testcontainers' reaper removes the
// container.
//
// Timings (initdb, start, stop, template, create database) are logged with
// t.Logf, or on stderr with -v for the shared server.
package pgtest
