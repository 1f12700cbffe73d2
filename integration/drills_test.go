package integration_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/integration/drill"
	"github.com/pgfallback/pgfallback/integration/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// drillConfig is the suite's load: short phases, enough calls to matter.
func drillConfig(srv *pgtest.Server, scenario string) drill.Config {
	return drill.Config{
		Server:         srv,
		Scenarios:      []string{scenario},
		Readers:        6,
		Writers:        2,
		Seed:           100,
		Baseline:       700 * time.Millisecond,
		Duration:       2 * time.Second,
		PrimaryTimeout: 500 * time.Millisecond,
		OpenTimeout:    200 * time.Millisecond,
		Margin:         100 * time.Millisecond, // the bound: PrimaryTimeout + 100 ms
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func runDrill(t *testing.T, cfg drill.Config) *drill.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := drill.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("drill could not run: %v", err)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Log("\n" + text.String())
	return rep
}

// TestDrills runs every scenario against one private server (the kill
// scenario stops and starts it) and fails on any broken bound: a failed
// read of a cached key, a call held past PrimaryTimeout plus the margin, a
// write whose report does not match PostgreSQL, a breaker that does not
// trip, trips when it must not, or does not recover, a cache inconsistent
// with PostgreSQL after recovery, or leaked goroutines.
func TestDrills(t *testing.T) {
	srv := pgtest.NewServer(t)
	for _, scenario := range drill.AllScenarios {
		t.Run(scenario, func(t *testing.T) {
			rep := runDrill(t, drillConfig(srv, scenario))
			if len(rep.Scenarios) != 1 {
				t.Fatalf("report has %d scenarios, want 1", len(rep.Scenarios))
			}
			s := rep.Scenarios[0]
			if s.Skipped != "" {
				t.Fatalf("scenario skipped with a controllable server: %s", s.Skipped)
			}
			if !s.Passed {
				t.Fatalf("bounds broken:\n%s", strings.Join(s.Violations, "\n"))
			}
		})
	}
}

// TestDrillDetectsBrokenBounds proves the suite can fail: with a margin of
// a nanosecond, calls held by a blackholed database for PrimaryTimeout
// break the latency bound, and the drill must say so.
func TestDrillDetectsBrokenBounds(t *testing.T) {
	srv := pgtest.NewServer(t)
	cfg := drillConfig(srv, drill.ScenarioBlackhole)
	cfg.Margin = time.Nanosecond
	rep := runDrill(t, cfg)
	if rep.Passed {
		t.Fatal("a drill with a 1 ns margin passed: the latency bound is not checked")
	}
	found := false
	for _, v := range rep.Scenarios[0].Violations {
		found = found || strings.Contains(v, "longer than PrimaryTimeout")
	}
	if !found {
		t.Fatalf("violations %q do not name the latency bound", rep.Scenarios[0].Violations)
	}
}
