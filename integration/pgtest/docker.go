package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// Docker mode: testcontainers-go's postgres module. The container's port is
// bound to a fixed host port chosen up front, because Docker picks a new
// ephemeral port each time a container starts, and Start must keep the DSN.
// If this process dies, testcontainers' reaper (Ryuk) removes the container.

type dockerBackend struct {
	opts Options
	ctr  *tcpostgres.PostgresContainer
	dsn  string

	mu      sync.Mutex
	stopped bool
}

// tcLogger routes testcontainers' chatter to Options.Logf.
type tcLogger struct{ opts Options }

func (l tcLogger) Printf(format string, args ...any) { l.opts.logf("testcontainers: "+format, args...) }

var _ tclog.Logger = tcLogger{}

func startDocker(ctx context.Context, opts Options) (*Server, error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 3 * time.Minute
	}
	logger := testcontainers.WithLogger(tcLogger{opts})

	// Where no engine runs, this fails in milliseconds ("rootless Docker not
	// found"); an engine that does not answer is given a few seconds.
	t0 := time.Now()
	provider, err := testcontainers.NewDockerProvider(logger)
	if err != nil {
		return nil, modeUnavailable("no Docker engine: %v", err)
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = provider.Health(hctx) // also closes the provider
	cancel()
	if err != nil {
		return nil, modeUnavailable("Docker engine does not answer: %v", err)
	}
	opts.logf("pgtest: Docker engine answered in %v", since(t0))
	if err := ensureImage(ctx, opts); err != nil {
		return nil, err
	}

	ctx, cancel = context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	syncCommit := "off" // see localBackend.serverArgs
	if opts.Controllable {
		syncCommit = "on"
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("pgtest: docker: %w", err)
		}
		t1 := time.Now()
		password := dockerPassword()
		ctr, err := tcpostgres.Run(ctx, opts.DockerImage,
			logger,
			tcpostgres.WithDatabase("postgres"),
			tcpostgres.WithUsername("postgres"),
			tcpostgres.WithPassword(password),
			testcontainers.WithCmdArgs(dockerArgs(opts, syncCommit)...),
			tcpostgres.BasicWaitStrategies(),
			testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
				hc.PortBindings = network.PortMap{
					network.MustParsePort("5432/tcp"): {{HostPort: strconv.Itoa(port)}},
				}
			}),
		)
		if err != nil {
			if ctr != nil {
				_ = ctr.Terminate(context.WithoutCancel(ctx))
			}
			lastErr = err
			if strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "port is already allocated") {
				continue
			}
			return nil, fmt.Errorf("pgtest: docker: %w", err)
		}
		host, err := ctr.Host(ctx)
		if err != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("pgtest: docker: %w", err)
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		b := &dockerBackend{opts: opts, ctr: ctr,
			dsn: (&url.URL{Scheme: "postgres", User: url.UserPassword("postgres", password), Host: addr,
				Path: "/postgres", RawQuery: "sslmode=disable"}).String()}
		if err := b.waitReady(ctx); err != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("pgtest: docker: %w", err)
		}
		opts.logf("pgtest: docker server %s (%s) started in %v", addr, opts.DockerImage, since(t1))
		return newServer(ModeDocker, b.dsn, addr, b, opts), nil
	}
	return nil, fmt.Errorf("pgtest: docker: %w", lastErr)
}

// dockerPassword is a new container's superuser password. Not
// "postgres", the user's name: tests that check a password never shows
// (logs, reports, errors) could not tell one from the other.
func dockerPassword() string {
	return "pgtest-" + randomHex(8)
}

// imagePullTimeout bounds pulling the image when it is not present: an
// engine that cannot reach its registry (offline, a registry outage, a
// proxy) makes Docker mode unavailable, as an absent engine does, rather
// than failing every test.
const imagePullTimeout = 2 * time.Minute

// ensureImage makes sure the engine has opts.DockerImage, pulling it when
// it is absent. Any failure to have it is the mode being unavailable.
func ensureImage(ctx context.Context, opts Options) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return modeUnavailable("Docker engine: %v", err)
	}
	defer cli.Close()
	if _, err := cli.ImageInspect(ctx, opts.DockerImage); err == nil {
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return modeUnavailable("Docker engine cannot inspect image %s: %v", opts.DockerImage, err)
	}
	t0 := time.Now()
	pctx, cancel := context.WithTimeout(ctx, imagePullTimeout)
	defer cancel()
	resp, err := cli.ImagePull(pctx, opts.DockerImage, client.ImagePullOptions{})
	if err == nil {
		err = resp.Wait(pctx)
		_ = resp.Close()
	}
	if err != nil {
		return modeUnavailable("image %s is not on this Docker engine and cannot be pulled (set %s to an image it has): %v",
			opts.DockerImage, EnvImage, err)
	}
	opts.logf("pgtest: pulled %s in %v", opts.DockerImage, since(t0))
	return nil
}

// waitReady polls until the server accepts a connection.
// dockerArgs are localBackend.serverArgs' settings for a container.
func dockerArgs(opts Options, syncCommit string) []string {
	if opts.Durable {
		return append([]string{"-c", "max_connections=200"}, opts.settingArgs()...)
	}
	return append([]string{"-c", "synchronous_commit=" + syncCommit, "-c", "full_page_writes=off", "-c", "max_connections=200"},
		opts.settingArgs()...)
}

func (b *dockerBackend) waitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := (&Server{}).connect(cctx, b.dsn)
		cancel()
		if err == nil {
			return conn.Close(context.Background())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections: %w", errors.Join(err, ctx.Err()))
		case <-tick.C:
		}
	}
}

// stop is an immediate shutdown, as in local mode: SIGQUIT to the
// container's postmaster. Not `docker stop`: it sends the image's
// STOPSIGNAL first (SIGINT in the official image: a fast, clean shutdown),
// and even with no grace period a server that finishes it before the
// SIGKILL has shut down cleanly, keeping its unlogged tables, which a
// crash empties. Seen with PostgreSQL 17: the crash test's change log
// survived the "crash".
func (b *dockerBackend) stop() error { return b.halt("SIGQUIT") }

// kill crashes the server: SIGKILL to the container, whose processes all
// die with its first one.
func (b *dockerBackend) kill() error { return b.halt("SIGKILL") }

// halt sends sig to the container's postmaster and returns once the
// container has exited.
func (b *dockerBackend) halt(sig string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	id := b.ctr.GetContainerID()
	exited := cli.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	if _, err := cli.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: sig}); err != nil {
		return fmt.Errorf("%s: %w", sig, err)
	}
	select {
	case <-exited.Result:
	case err := <-exited.Error:
		return fmt.Errorf("waiting for the container to exit after %s: %w", sig, err)
	}
	// testcontainers learns that it stopped (a no-op for the engine).
	zero := time.Duration(0)
	if err := b.ctr.Stop(ctx, &zero); err != nil {
		return err
	}
	b.stopped = true
	return nil
}

func (b *dockerBackend) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stopped {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.StartTimeout)
	defer cancel()
	if err := b.ctr.Start(ctx); err != nil {
		return err
	}
	b.stopped = false
	return b.waitReady(ctx)
}

func (b *dockerBackend) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return b.ctr.Terminate(ctx)
}

func (b *dockerBackend) pid() int { return 0 } // not a process of this machine's namespace
