// Package drill runs scripted failover drills against the fallback layer:
// concurrent readers and writers go through a Layer whose PostgreSQL sits
// behind a Toxiproxy proxy, a scenario injects a fault and heals it, and
// the run is measured and checked against bounds — no failed read of a
// cached key, no call held longer than PrimaryTimeout plus a margin, no
// write reported successful that is missing from PostgreSQL, none reported
// failed that is present, and a breaker that trips and recovers in time.
//
// The `pgfallback drill` command and the drill test suite in integration/
// both run on it.
package drill

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/pgfallback/pgfallback/integration/pgtest"
)

// Scenario names.
const (
	ScenarioKill          = "kill"           // the server is killed (immediate shutdown) and restarted
	ScenarioDown          = "down"           // the proxy refuses connections, then accepts again
	ScenarioBlackhole     = "blackhole"      // the proxy accepts and never answers
	ScenarioLatency       = "latency"        // latency above PrimaryTimeout (must trip)
	ScenarioLatencyBelow  = "latency-below"  // latency below PrimaryTimeout (must not trip)
	ScenarioReadOnly      = "read-only"      // PostgreSQL refuses writes for the whole server, answers reads (must not trip)
	ScenarioCommitStall   = "commit-stall"   // commits wait for a synchronous replica that is gone, reads answer (must not trip)
	ScenarioBrownout      = "brownout"       // latency between SoftTimeout and PrimaryTimeout: soft-timeout answers, a trip on slow calls
	ScenarioReset         = "reset"          // live connections reset mid-query, repeatedly
	ScenarioFlap          = "flap"           // down/up every few hundred ms
	ScenarioStale         = "stale"          // an outage longer than the cache TTL
	ScenarioRestart       = "restart"        // the application restarts during the outage
	ScenarioChanged       = "changed"        // rows change behind the layer during the outage
	ScenarioPeers         = "peers"          // three instances: two write while the third loses PostgreSQL
	ScenarioFeedCut       = "feed-cut"       // only the change feed's listening connection is cut
	ScenarioQueued        = "queued"         // writers opt in to the write queue; another instance writes the same keys
	ScenarioQueuedRestart = "queued-restart" // queued, with the application restarted mid-outage
	ScenarioQueuedKill    = "queued-kill"    // queued, with the replaying process killed (SIGKILL) mid-replay
	ScenarioPromote       = "promote"        // an asynchronous standby promoted after the primary is killed: acknowledged writes lost
)

// AllScenarios is what "all" expands to, in running order.
var AllScenarios = []string{
	ScenarioDown, ScenarioKill, ScenarioBlackhole, ScenarioLatency, ScenarioLatencyBelow, ScenarioReadOnly,
	ScenarioCommitStall, ScenarioBrownout, ScenarioReset, ScenarioFlap, ScenarioStale, ScenarioRestart, ScenarioChanged, ScenarioPeers, ScenarioFeedCut,
	ScenarioQueued, ScenarioQueuedRestart, ScenarioQueuedKill, ScenarioPromote,
}

// Config describes a drill. Zero values take the defaults given.
type Config struct {
	// DSN of the database to drill; its schema must be migrated. Empty: an
	// embedded throwaway PostgreSQL (local server binaries, else Docker).
	DSN string
	// Server, when set, is a PostgreSQL the drill may stop and start (the
	// kill scenario) instead of an embedded one it starts itself; tests pass
	// pgtest.NewServer's. The drill does not close it.
	Server *pgtest.Server
	// ToxiproxyURL of an external Toxiproxy (e.g. http://127.0.0.1:8474).
	// Empty: an in-process one.
	ToxiproxyURL string
	// Upstream is the address the proxy forwards to. Default: the DSN's
	// host:port. Set it when an external Toxiproxy reaches PostgreSQL by
	// another name (postgres:5432 inside a compose network).
	Upstream string
	// ProxyListen is where an external Toxiproxy listens for the drill's
	// proxy, a port it publishes. Default 0.0.0.0:15432 (docker-compose's
	// toxiproxy service). An in-process Toxiproxy picks a free loopback port.
	ProxyListen string

	Scenarios []string // names, or "all"; default all

	Readers  int           // default 8
	Writers  int           // default 2; negative: none
	Seed     int           // vendors seeded and cached before the drill; default 200
	Baseline time.Duration // healthy load before each fault; default 1 s
	Duration time.Duration // how long each fault lasts; default 3 s

	PrimaryTimeout time.Duration // the layer's; default 500 ms
	OpenTimeout    time.Duration // the layer's; default 300 ms
	// Margin is how much longer than PrimaryTimeout a call may take.
	// Default 250 ms.
	Margin time.Duration
	// RecoverWithin bounds the time from healing the fault to the breaker
	// closing. Default 15 s.
	RecoverWithin time.Duration

	CacheDir string // default: a temporary directory

	Logger   *slog.Logger // default: discard
	Progress io.Writer    // live progress; nil: none
	// Terminal makes Progress a single line rewritten in place.
	Terminal bool
}

func (c Config) withDefaults() (Config, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Readers <= 0 {
		c.Readers = 8
	}
	switch {
	case c.Writers < 0:
		c.Writers = 0
	case c.Writers == 0:
		c.Writers = 2
	}
	if c.Seed <= 0 {
		c.Seed = 200
	}
	def(&c.Baseline, time.Second)
	def(&c.Duration, 3*time.Second)
	def(&c.PrimaryTimeout, 500*time.Millisecond)
	def(&c.OpenTimeout, 300*time.Millisecond)
	def(&c.Margin, 250*time.Millisecond)
	def(&c.RecoverWithin, 15*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	scenarios, err := ParseScenarios(c.Scenarios)
	if err != nil {
		return c, err
	}
	c.Scenarios = scenarios
	return c, nil
}

// ParseScenarios expands "all", accepts comma-separated lists, and rejects
// unknown names.
func ParseScenarios(names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		for _, s := range strings.Split(n, ",") {
			s = strings.TrimSpace(s)
			switch {
			case s == "":
			case s == "all":
				out = append(out, AllScenarios...)
			case slices.Contains(AllScenarios, s):
				out = append(out, s)
			default:
				return nil, fmt.Errorf("drill: unknown scenario %q (want one of %s, or all)", s, strings.Join(AllScenarios, ", "))
			}
		}
	}
	if len(out) == 0 {
		out = append(out, AllScenarios...)
	}
	return slices.Compact(out), nil
}
