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

func TestMain(m *testing.M) {
	drill.ChildMain() // the queued-kill scenario's child process runs here
	pgtest.Main(m)
}

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
// scenario stops and starts it; promote runs a primary and standby of its
// own) and fails on any broken bound: a failed
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
			if s.Skipped != "" && scenario == drill.ScenarioPromote && srv.Mode() != pgtest.ModeLocal {
				// It runs a primary and a standby of its own, from local
				// server binaries, which a Docker-only machine lacks.
				t.Skipf("%s server, no local binaries: %s", srv.Mode(), s.Skipped)
			}
			if s.Skipped != "" {
				t.Fatalf("scenario skipped with a controllable server: %s", s.Skipped)
			}
			if !s.Passed {
				t.Fatalf("bounds broken:\n%s", strings.Join(s.Violations, "\n"))
			}
			checkQueued(t, s)
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

// checkQueued makes the queued scenarios' own assertions: the drill
// exercised what it claims (hundreds of queued writes, real conflicts, a
// restart with writes pending, a kill mid-replay), and the counts add up.
func checkQueued(t *testing.T, s drill.ScenarioReport) {
	t.Helper()
	switch s.Name {
	case drill.ScenarioQueued, drill.ScenarioQueuedRestart, drill.ScenarioQueuedKill:
	default:
		return
	}
	q := s.Queue
	if q == nil {
		t.Fatal("queued scenario without a queue summary")
	}
	if q.Queued < 100 {
		t.Errorf("%d writes queued, want at least 100", q.Queued)
	}
	if q.Replayed+q.DeadLetters != q.Queued {
		t.Errorf("%d replayed + %d dead letters != %d queued", q.Replayed, q.DeadLetters, q.Queued)
	}
	if q.Replayed == 0 {
		t.Error("no queued write was replayed")
	}
	if q.Conflicts == 0 || q.DeadLetters < q.Conflicts {
		t.Errorf("%d conflicts, %d dead letters: the other instance's writes to the same keys must conflict", q.Conflicts, q.DeadLetters)
	}
	if q.ReplayEndMs <= q.ReplayStartMs {
		t.Errorf("replay from %v ms to %v ms: the queue never emptied", q.ReplayStartMs, q.ReplayEndMs)
	}
	queuedPoints := 0
	for _, p := range s.Timeline {
		if p.Write && p.Source == "queue" {
			queuedPoints++
		}
	}
	if queuedPoints != q.Queued {
		t.Errorf("the timeline shows %d queued writes, want %d", queuedPoints, q.Queued)
	}
	switch s.Name {
	case drill.ScenarioQueuedRestart:
		if q.PendingAfterReopen == 0 {
			t.Error("no write pending after the restart: the queue did not survive it")
		}
	case drill.ScenarioQueuedKill:
		if q.KillAtMs <= 0 {
			t.Error("the child was not killed")
		}
		if q.ReplayedBeforeKill <= 0 || q.ReplayedBeforeKill >= q.Queued {
			t.Errorf("the child had replayed %d of %d writes when killed: not mid-replay", q.ReplayedBeforeKill, q.Queued)
		}
		if q.PendingAfterReopen == 0 {
			t.Error("no write pending after the kill")
		}
		if int(q.AlreadyApplied) < q.InFlightAtKill {
			t.Errorf("%d writes in flight at the kill, %d found already applied", q.InFlightAtKill, q.AlreadyApplied)
		}
	}
	var html strings.Builder
	if err := (&drill.Report{Scenarios: []drill.ScenarioReport{s}}).RenderHTML(&html); err != nil {
		t.Fatalf("render HTML: %v", err)
	}
	if !strings.Contains(html.String(), ">replay</text>") || !strings.Contains(html.String(), "l3 4l-3 4l-3-4z") {
		t.Error("the HTML timeline shows neither the replay nor the queued writes' markers")
	}
}
