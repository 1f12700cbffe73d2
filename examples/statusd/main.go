// Command statusd is the reference service of pgfallback: a small HTTP JSON
// API for the project-status domain (vendors and work items) that keeps
// answering reads from its cache while PostgreSQL is down, and says so.
//
//	DATABASE_URL=postgres://... go run ./examples/statusd --addr :8080
//
// See README.md beside this file for the routes, the status codes and the
// headers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil))
}

// layerShutdownTimeout bounds the layer's shutdown after the HTTP server's:
// applying the write-through queue to the cache. With the default
// --shutdown-timeout the whole stays within Kubernetes' default 30 s grace
// period.
const layerShutdownTimeout = 5 * time.Second

// run is the service from start to exit, returning the exit code: 0 after a
// shutdown on SIGINT or SIGTERM, 1 when it cannot serve, 2 for a bad
// command line or environment. Logs go to stderr, spans (--trace) to
// stdout. ready, if set, is called with the address once it listens.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(addr string)) int {
	o, err := parseOptions(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "statusd:", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	a, err := newApp(ctx, o, logger, stdout)
	if err != nil {
		logger.Error("cannot start", "err", err) // newApp's errors never hold the DSN's password
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	code := serve(ctx, a, o, stop, ready)

	sctx, cancel := context.WithTimeout(context.Background(), layerShutdownTimeout)
	defer cancel()
	if err := a.shutdown(sctx); err != nil {
		// What the cache did not get is refetched from PostgreSQL later;
		// not a reason to report the shutdown as failed.
		logger.Warn("shutdown incomplete", "err", err)
	}
	logger.Info("stopped")
	return code
}

// serve runs the HTTP server until ctx ends (a signal) or the server
// fails, then drains it: requests in flight get up to --shutdown-timeout,
// new connections are refused.
func serve(ctx context.Context, a *app, o options, stopSignals func(), ready func(addr string)) int {
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		a.log.Error("cannot listen", "addr", o.addr, "err", err)
		return 1
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	a.log.Info("statusd listening", "addr", ln.Addr().String(), "database", a.database,
		"cache", o.cachePath, "ttl", o.ttl, "trace", o.trace)
	if ready != nil {
		ready(ln.Addr().String())
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	code := 0
	select {
	case <-ctx.Done():
		a.log.Info("shutting down", "cause", context.Cause(ctx))
	case err := <-served:
		a.log.Error("http server failed", "err", err)
		code = 1
	}
	// From here a second signal kills the process the default way: the
	// operator's way out of a shutdown that hangs.
	stopSignals()

	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		a.log.Warn("requests still running at the shutdown deadline were cut", "err", err)
		_ = srv.Close()
	}
	return code
}
