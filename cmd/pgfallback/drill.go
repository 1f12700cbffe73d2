package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/pgfallback/pgfallback/integration/drill"
)

func drillCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("drill", "drill [flags]", stdout, stderr)
	// Only --dsn names a database to drill, never $DATABASE_URL: a drill
	// writes rows and cuts connections, and an exported variable meant for
	// the application must not point it at a real database.
	dsnFlag := fs.String("dsn", "", "PostgreSQL to drill, schema migrated; the drill writes rows into it (default: an embedded throwaway server; $DATABASE_URL is not used)")
	toxiproxy := fs.String("toxiproxy", "", "URL of an external Toxiproxy API, e.g. http://127.0.0.1:8474 (default: in-process)")
	upstream := fs.String("upstream", "", "address the proxy forwards to (default: the DSN's host:port; postgres:5432 for the compose stack)")
	proxyListen := fs.String("proxy-listen", "", "with --toxiproxy: where the proxy listens inside Toxiproxy (default 0.0.0.0:15432, published by the compose stack)")
	scenario := fs.String("scenario", "all", "scenarios, comma-separated: "+strings.Join(drill.AllScenarios, ", ")+", or all")
	readers := fs.Int("readers", 8, "concurrent readers")
	writers := fs.Int("writers", 2, "concurrent writers")
	duration := fs.Duration("duration", 3*time.Second, "how long each fault lasts")
	baseline := fs.Duration("baseline", time.Second, "healthy load before each fault")
	primaryTimeout := fs.Duration("primary-timeout", 500*time.Millisecond, "the layer's PrimaryTimeout")
	openTimeout := fs.Duration("open-timeout", 300*time.Millisecond, "the layer's OpenTimeout")
	jsonPath := fs.String("json", "", "write the report as JSON to this file")
	htmlPath := fs.String("html", "", "write the report as a self-contained HTML page to this file")
	verbose := fs.Bool("v", false, "log the layer's state changes")
	if err := fs.parseFlags(args); err != nil {
		return err
	}
	scenarios, err := drill.ParseScenarios([]string{*scenario})
	if err != nil {
		return fs.usageError("%v", err)
	}
	if *readers < 1 || *writers < 0 || *duration <= 0 || *primaryTimeout <= 0 || *openTimeout <= 0 {
		return fs.usageError("--readers must be >= 1, --writers >= 0, durations positive")
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelInfo
	}
	cfg := drill.Config{
		DSN: *dsnFlag, ToxiproxyURL: *toxiproxy, Upstream: *upstream, ProxyListen: *proxyListen, Scenarios: scenarios,
		Readers: *readers, Writers: *writers, Duration: *duration, Baseline: *baseline,
		PrimaryTimeout: *primaryTimeout, OpenTimeout: *openTimeout,
		// The layer logs errors, which may quote a connection string.
		Logger:   slog.New(slog.NewTextHandler(redactingWriter{stderr}, &slog.HandlerOptions{Level: level})),
		Progress: stderr, Terminal: isTerminal(stderr),
	}
	if *writers == 0 {
		cfg.Writers = -1 // drill.Config: 0 means the default
	}
	rep, err := drill.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.WriteText(stdout)
	if *jsonPath != "" {
		if err := rep.WriteJSON(*jsonPath); err != nil {
			return fmt.Errorf("write JSON report: %w", err)
		}
	}
	if *htmlPath != "" {
		if err := rep.WriteHTML(*htmlPath); err != nil {
			return fmt.Errorf("write HTML report: %w", err)
		}
	}
	if !rep.Passed {
		return fmt.Errorf("bounds broken; see the report")
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal), where
// the progress line is redrawn in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
