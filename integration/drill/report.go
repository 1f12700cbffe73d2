package drill

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/dsn"
)

// Report is a drill's result. Times are in milliseconds so the JSON reads
// without a unit parser.
type Report struct {
	RunID            string           `json:"run_id"`
	Started          time.Time        `json:"started"`
	DurationMs       float64          `json:"duration_ms"`
	Embedded         bool             `json:"embedded_postgres"`
	ServerVersion    string           `json:"server_version,omitempty"` // its server_version, e.g. "15.18 (Debian 15.18-0+deb12u1)"
	ServerMode       string           `json:"server_mode,omitempty"`    // how an embedded one was started: pgtest's mode (local, docker)
	Readers          int              `json:"readers"`
	Writers          int              `json:"writers"`
	PrimaryTimeoutMs float64          `json:"primary_timeout_ms"`
	OpenTimeoutMs    float64          `json:"open_timeout_ms"`
	MarginMs         float64          `json:"margin_ms"`
	Scenarios        []ScenarioReport `json:"scenarios"`
	Passed           bool             `json:"passed"`
}

// ScenarioReport is one scenario's result.
type ScenarioReport struct {
	Name            string        `json:"name"`
	Description     string        `json:"description"`
	Skipped         string        `json:"skipped,omitempty"`
	Phases          []PhaseReport `json:"phases"`
	FaultStartMs    float64       `json:"fault_start_ms"`
	FaultEndMs      float64       `json:"fault_end_ms"`
	Tripped         bool          `json:"tripped"`
	TimeToTripMs    float64       `json:"time_to_trip_ms"`    // -1: did not trip
	TimeToRecoverMs float64       `json:"time_to_recover_ms"` // -1: n/a
	// RecoveredBy says what TimeToRecoverMs measures when it is not the
	// breaker closing again: RecoveredQueueEmpty for a queued scenario
	// whose breaker was never seen closing (queued-kill: the process that
	// opened it was killed).
	RecoveredBy string           `json:"recovered_by,omitempty"`
	Warm        WarmSummary      `json:"warm"`
	Writes      WriteCheck       `json:"writes"`
	Feed        *FeedSummary     `json:"feed,omitempty"`     // scenarios with several instances
	Queue       *QueueSummary    `json:"queue,omitempty"`    // the queued scenarios
	Promote     *PromoteSummary  `json:"promote,omitempty"`  // the promote scenario
	Brownout    *BrownoutSummary `json:"brownout,omitempty"` // the brownout scenario
	Violations  []string         `json:"violations"`
	Passed      bool             `json:"passed"`
	Timeline    []Point          `json:"timeline"`
}

// redact masks every password in the report's free text.
func (r *Report) redact() {
	for i := range r.Scenarios {
		s := &r.Scenarios[i]
		s.Description, s.Skipped, s.Warm.Err = dsn.Redact(s.Description), dsn.Redact(s.Skipped), dsn.Redact(s.Warm.Err)
		if s.Queue != nil {
			s.Queue.ExampleDeadLetter = dsn.Redact(s.Queue.ExampleDeadLetter)
		}
		if s.Promote != nil {
			s.Promote.CacheExample = dsn.Redact(s.Promote.CacheExample)
			s.Promote.FeedLastError = dsn.Redact(s.Promote.FeedLastError)
		}
		for j, v := range s.Violations {
			s.Violations[j] = dsn.Redact(v)
		}
	}
}

// violate records a broken bound.
func (s *ScenarioReport) violate(format string, args ...any) {
	s.Violations = append(s.Violations, fmt.Sprintf(format, args...))
}

// PhaseReport summarises the calls of one phase.
type PhaseReport struct {
	Name       string  `json:"name"`
	StartMs    float64 `json:"start_ms"`
	EndMs      float64 `json:"end_ms"`
	Ops        int     `json:"ops"`
	Errors     int     `json:"errors"`
	ErrorRate  float64 `json:"error_rate"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	Primary    int     `json:"reads_primary"`
	CacheFresh int     `json:"reads_cache_fresh"`
	CacheStale int     `json:"reads_cache_stale"`
	// CacheSlow: reads answered from the cache at the soft timeout
	// because PostgreSQL was slow (Origin.Slow), fresh or stale; not
	// counted in CacheFresh or CacheStale.
	CacheSlow int `json:"reads_cache_slow"`
	// QueueReads: reads of keys with a queued write, answered with its
	// pending state (read-your-writes).
	QueueReads int `json:"reads_queue"`
	Writes     int `json:"writes"`
	// WriteErrors: of Errors, the writes; the rest are reads.
	WriteErrors int `json:"write_errors"`
	// Note says why the phase's errors are within the scenario's bounds,
	// when its error rate is at least noteErrorRate and it passed.
	Note string `json:"note,omitempty"`
}

// BrownoutSummary reports the brownout scenario: the slowness injected,
// the soft timeout that answered reads from the cache meanwhile, the
// primary calls left running in the background, and why the breaker
// opened.
type BrownoutSummary struct {
	LatencyMs          float64 `json:"latency_ms"` // added to every round trip
	SoftTimeoutMs      float64 `json:"soft_timeout_ms"`
	SlowCallDurationMs float64 `json:"slow_call_duration_ms"`
	WindowMs           float64 `json:"window_ms"`
	// ReadP99Ms: reads of cached keys started during the fault; bound
	// SoftTimeout + brownoutReadSlack.
	ReadP99Ms    float64 `json:"read_p99_ms"`
	ReadMaxMs    float64 `json:"read_max_ms"`
	ReadBoundMs  float64 `json:"read_bound_ms"`
	SlowReads    int     `json:"slow_reads"` // reads with Origin.Slow, the whole run
	ServedSlow   uint64  `json:"served_slow"`
	SlowCalls    uint64  `json:"slow_calls"` // Stats.SlowCalls
	AbandonedPk  int64   `json:"abandoned_peak"`
	MaxAbandoned int     `json:"max_abandoned_calls"`
	TripCause    string  `json:"trip_cause"` // Stats.LastTripCause
	// Failures: Stats.PrimaryFailures, outage failures by kind (the
	// breaker's refusals after the trip not counted).
	Failures map[string]uint64 `json:"failures,omitempty"`
	// PoolConns: the pool's size, all opened and prepared before the
	// drill; PoolReopened: connections it opened after that (a canceled
	// call closes its connection).
	PoolConns    int32 `json:"pool_conns"`
	PoolReopened int64 `json:"pool_reopened"`
}

// WarmSummary is the last warm of the scenario's layer.
type WarmSummary struct {
	Runs       uint64  `json:"runs"`
	DurationMs float64 `json:"duration_ms"`
	Refreshed  int     `json:"refreshed"`
	Removed    int     `json:"removed"`
	Err        string  `json:"error,omitempty"`
}

// WriteCheck compares what writers were told with what PostgreSQL holds.
type WriteCheck struct {
	Acknowledged        int `json:"acknowledged"`
	ReportedFailed      int `json:"reported_failed"`
	Unknown             int `json:"outcome_unknown"`
	MissingAcknowledged int `json:"missing_acknowledged"`
	PresentButFailed    int `json:"present_but_reported_failed"`
}

// QueueSummary reports a queued scenario: what the application's writers
// were told, what became of the queued writes, and what the other instance
// wrote meanwhile. Counts of the queue's fate are PostgreSQL's and the
// cache file's (pgfallback_applied_writes, the dead letters), not counters
// of a process that may have been killed.
type QueueSummary struct {
	Keys        int `json:"keys"`        // vendors the writers update
	SharedKeys  int `json:"shared_keys"` // of them, also written by the other instance
	Queued      int `json:"queued"`      // writes answered as queued (Origin SourceQueue)
	Direct      int `json:"direct"`      // writes PostgreSQL took at once
	NotWritten  int `json:"not_written"` // writes refused (a conflict with the cache, ErrUnavailable)
	Unknown     int `json:"outcome_unknown"`
	OtherWrites int `json:"other_writes"` // writes the other instance made on the shared keys
	Replayed    int `json:"replayed"`     // queued writes in PostgreSQL, by their recorded IDs
	// AlreadyApplied counts replays that found their write applied before
	// (after the kill: the one in flight); from the last process's counters.
	AlreadyApplied uint64  `json:"already_applied"`
	Conflicts      int     `json:"conflicts"`    // dead letters rejected because the row had moved on
	DeadLetters    int     `json:"dead_letters"` // conflicts and the writes queued behind them
	ReplayStartMs  float64 `json:"replay_start_ms"`
	ReplayEndMs    float64 `json:"replay_end_ms"` // the queue found empty; 0: never
	// The restart and kill variants: writes pending in the queue right after
	// the application opened the cache file again.
	PendingAfterReopen int `json:"pending_after_reopen,omitempty"`
	// The kill variant: when the replaying child was killed, how many
	// queued writes it had applied, and how many of those were applied in
	// PostgreSQL but still in the queue (the reply in flight).
	KillAtMs           float64 `json:"kill_at_ms,omitempty"`
	ReplayedBeforeKill int     `json:"replayed_before_kill,omitempty"`
	InFlightAtKill     int     `json:"in_flight_at_kill,omitempty"`
	ExampleDeadLetter  string  `json:"example_dead_letter,omitempty"`
}

// Point is one call on the timeline.
type Point struct {
	AtMs      float64 `json:"t"`
	LatencyMs float64 `json:"ms"`
	Write     bool    `json:"w,omitempty"`
	Source    string  `json:"src"` // primary, cache, stale, slow, queue, error
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func phaseReport(name string, samples []sample, from, to time.Duration) PhaseReport {
	p := PhaseReport{Name: name, StartMs: ms(from), EndMs: ms(to)}
	var lat []time.Duration
	for _, s := range samples {
		if s.at < from || s.at >= to {
			continue
		}
		p.Ops++
		lat = append(lat, s.latency)
		if s.outcome != okOutcome {
			p.Errors++
			if s.write {
				p.WriteErrors++
			}
		}
		switch {
		case s.write:
			p.Writes++
		case s.outcome != okOutcome:
		case s.source == fallback.SourcePrimary:
			p.Primary++
		case s.source == fallback.SourceQueue:
			p.QueueReads++
		case s.slow:
			p.CacheSlow++
		case s.stale:
			p.CacheStale++
		default:
			p.CacheFresh++
		}
	}
	if p.Ops > 0 {
		slices.Sort(lat)
		p.ErrorRate = float64(p.Errors) / float64(p.Ops)
		p.P50Ms = ms(lat[len(lat)*50/100])
		p.P99Ms = ms(lat[min(len(lat)-1, len(lat)*99/100)])
		p.MaxMs = ms(lat[len(lat)-1])
	}
	return p
}

// timeline keeps about n points: an even sample of all calls, plus every
// error and every slow call, which are what a reader looks for.
func timeline(samples []sample, n int) []Point {
	step := max(1, len(samples)/n)
	var out []Point
	for i, s := range samples {
		src := "primary"
		switch {
		case s.outcome != okOutcome:
			src = "error"
		case s.source == fallback.SourceQueue:
			src = "queue" // queued, or read back from the queue
		case s.write:
		case s.slow:
			src = "slow" // from the cache at the soft timeout
		case s.source == fallback.SourceCache && s.stale:
			src = "stale"
		case s.source == fallback.SourceCache:
			src = "cache"
		}
		if i%step != 0 && src != "error" && !(src == "queue" && s.write) && s.latency < 50*time.Millisecond {
			continue
		}
		out = append(out, Point{AtMs: ms(s.at), LatencyMs: ms(s.latency), Write: s.write, Source: src})
	}
	return out
}

// RecoveredQueueEmpty is ScenarioReport.RecoveredBy when the recovery
// time runs from the heal to the write queue found empty.
const RecoveredQueueEmpty = "queue empty"

// noteErrorRate is the error rate from which a phase of a scenario that
// passed carries a Note saying why its bounds allow the errors.
const noteErrorRate = 0.01

// annotate fills what the report derives from its own data: the recovery
// time of a queued scenario whose breaker was never seen closing, and the
// phases' notes. It is idempotent: Run calls it, and so do the writers,
// for a Report built by hand.
func (r *Report) annotate() {
	for i := range r.Scenarios {
		r.Scenarios[i].annotate()
	}
}

func (s *ScenarioReport) annotate() {
	if q := s.Queue; s.TimeToRecoverMs < 0 && q != nil && q.ReplayStartMs > 0 && q.ReplayEndMs > q.ReplayStartMs {
		// The breaker that opened was in a process that is gone (the kill
		// variant); the service recovered when the queue was empty.
		s.TimeToRecoverMs, s.RecoveredBy = q.ReplayEndMs-q.ReplayStartMs, RecoveredQueueEmpty
	}
	for i := range s.Phases {
		s.Phases[i].Note = s.errorNote(s.Phases[i])
	}
}

// errorNote says why a phase's errors are within the scenario's bounds, or
// nothing when the rate is low, the scenario failed (its violations say
// why), or no bound of the scenario allows them.
func (s *ScenarioReport) errorNote(p PhaseReport) string {
	if !s.Passed || s.Skipped != "" || p.Errors == 0 || p.ErrorRate < noteErrorRate {
		return ""
	}
	var parts []string
	if reads := p.Errors - p.WriteErrors; reads > 0 {
		if why := s.readErrorsAllowed(); why != "" {
			parts = append(parts, plural(reads, "read")+" "+why)
		}
	}
	if p.WriteErrors > 0 {
		parts = append(parts, plural(p.WriteErrors, "write")+" "+s.writeErrorsAllowed())
	}
	return strings.Join(parts, "; ")
}

// readErrorsAllowed: the scenarios whose bounds allow a read to fail, and
// why; the others fail on any failed read of a cached key.
func (s *ScenarioReport) readErrorsAllowed() string {
	switch s.Name {
	case ScenarioStale:
		return fmt.Sprintf("refused: an entry older than TTL + StaleIfError (%s) is not served, expected from %s into the outage until the breaker closes",
			staleTTL+staleStaleIfError, staleStaleIfError)
	}
	return ""
}

// writeErrorsAllowed: why failed writes are within the bounds. No scenario
// requires writes to succeed while PostgreSQL is unreachable; each requires
// that what the writers were told is true.
func (s *ScenarioReport) writeErrorsAllowed() string {
	switch {
	case s.Queue != nil:
		return "not written or of unknown outcome while the instance had lost PostgreSQL (the bound: every write answered as queued is replayed or dead-lettered)"
	case s.Promote != nil:
		return "failed while there was no primary to take them (the bound: writes resume after the promotion)"
	case s.Name == ScenarioReadOnly:
		return "refused by PostgreSQL while it was read-only, reported not written (the bound: none reported failed is in PostgreSQL)"
	case s.Name == ScenarioCommitStall:
		return "not sent while commits waited for the missing replica (the first few, of unknown outcome, are counted apart), reported not written (the bound: none reported failed is in PostgreSQL)"
	}
	return "failed while PostgreSQL was out of reach or the breaker open (the bound: none reported failed is in PostgreSQL)"
}

// emptyPhase says what a phase in which the application made no call
// measured instead: the queue's replay, in the queued scenarios.
func (s *ScenarioReport) emptyPhase(p PhaseReport) string {
	out := "no application calls in this phase"
	if q := s.Queue; q != nil && q.ReplayStartMs > 0 && q.ReplayStartMs < p.EndMs && (q.ReplayEndMs <= 0 || q.ReplayEndMs > p.StartMs) {
		out += "; the queue's replay: " + q.replayText()
	}
	return out
}

// replayText is what became of the queued writes after the heal.
func (q *QueueSummary) replayText() string {
	empty := "the queue never emptied"
	if q.ReplayEndMs > 0 {
		empty = fmt.Sprintf("queue empty %s after the heal", msDur(q.ReplayEndMs-q.ReplayStartMs))
	}
	return fmt.Sprintf("%s replayed (%d already applied), %s (%s); %s",
		plural(q.Replayed, "write"), q.AlreadyApplied,
		plural(q.DeadLetters, "dead letter"), plural(q.Conflicts, "conflict"), empty)
}

// recoverText is the time to recover with what it measures, or "-".
func (s *ScenarioReport) recoverText(none string) string {
	if s.TimeToRecoverMs < 0 {
		return none
	}
	if s.RecoveredBy != "" {
		return fmt.Sprintf("%s (%s)", msDur(s.TimeToRecoverMs), s.RecoveredBy)
	}
	return msDur(s.TimeToRecoverMs).String()
}

// noteLead introduces a phase's note: its name and error rate.
func noteLead(p PhaseReport) string {
	return fmt.Sprintf("%s: %.2f%% errors (%s), within the bounds", p.Name, 100*p.ErrorRate, plural(p.Errors, "call"))
}

// plural is n with the noun, singular for 1: plural(1, "entry") is
// "1 entry", plural(2, "entry") "2 entries". A plural form given after the
// noun is used as is.
func plural[N ~int | ~int32 | ~int64 | ~uint64](n N, noun string, many ...string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	if len(many) > 0 {
		return fmt.Sprintf("%d %s", n, many[0])
	}
	return fmt.Sprintf("%d %s", n, pluralNoun(noun))
}

// pluralNoun is the plural of an English noun or noun phrase (its last
// word): entry → entries, key → keys, write → writes.
func pluralNoun(noun string) string {
	switch {
	case noun == "":
		return noun
	case strings.HasSuffix(noun, "y") && len(noun) > 1 && !strings.ContainsRune("aeiou", rune(noun[len(noun)-2])):
		return noun[:len(noun)-1] + "ies"
	case strings.HasSuffix(noun, "s"), strings.HasSuffix(noun, "x"), strings.HasSuffix(noun, "ch"), strings.HasSuffix(noun, "sh"):
		return noun + "es"
	}
	return noun + "s"
}

// WriteJSON writes the report as indented JSON to path.
func (r *Report) WriteJSON(path string) error {
	r.annotate()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Server says what the drill ran against: "embedded PostgreSQL 15.18,
// local", "given PostgreSQL 17.7".
func (r *Report) Server() string {
	s := map[bool]string{true: "embedded", false: "given"}[r.Embedded] + " PostgreSQL"
	if v, _, _ := strings.Cut(r.ServerVersion, " "); v != "" {
		s += " " + v
	}
	if r.ServerMode != "" {
		s += ", " + r.ServerMode
	}
	return s
}

// WriteText writes the per-phase tables a person reads at the end of a run.
func (r *Report) WriteText(w io.Writer) {
	r.annotate()
	fmt.Fprintf(w, "pgfallback drill %s: %s, %s, PrimaryTimeout %s, OpenTimeout %s (%s)\n\n",
		r.RunID, plural(r.Readers, "reader"), plural(r.Writers, "writer"), msDur(r.PrimaryTimeoutMs), msDur(r.OpenTimeoutMs), r.Server())
	for _, s := range r.Scenarios {
		verdict := "PASS"
		switch {
		case s.Skipped != "":
			verdict = "SKIP"
		case !s.Passed:
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "== %s [%s] — %s\n", s.Name, verdict, s.Description)
		if s.Skipped != "" {
			fmt.Fprintf(w, "   skipped: %s\n\n", s.Skipped)
			continue
		}
		var notes []string
		replayInTable := false
		if len(s.Phases) > 0 {
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "phase\tops\terr rate\tp50 ms\tp99 ms\tmax ms\tprimary\tcache fresh\tcache stale\tslow\tpending\twrites\t")
			for _, p := range s.Phases {
				if p.Ops == 0 {
					// No calls: a row of zeros would read as a measurement.
					// The text is the row's last cell, out of the columns.
					text := s.emptyPhase(p)
					replayInTable = replayInTable || strings.Contains(text, "replay")
					fmt.Fprintf(tw, "%s\t  %s\n", p.Name, text)
					continue
				}
				rate := fmt.Sprintf("%.2f%%", 100*p.ErrorRate)
				if p.Note != "" {
					notes = append(notes, noteLead(p)+": "+p.Note)
					rate = fmt.Sprintf("[%d] %s", len(notes), rate)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%.1f\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t\n", p.Name, p.Ops, rate,
					p.P50Ms, p.P99Ms, p.MaxMs, p.Primary, p.CacheFresh, p.CacheStale, p.CacheSlow, p.QueueReads, p.Writes)
			}
			tw.Flush()
		}
		for i, n := range notes {
			fmt.Fprintln(w, wrap(fmt.Sprintf("   [%d] %s", i+1, n), noteWidth, "       "))
		}
		trip := "did not trip"
		if s.Tripped {
			trip = msDur(s.TimeToTripMs).String()
		}
		fmt.Fprintf(w, "   time to trip %s, time to recover %s, warm %s (%s refreshed, %d removed)\n", trip, s.recoverText("-"),
			msDur(s.Warm.DurationMs), plural(s.Warm.Refreshed, "entry"), s.Warm.Removed)
		if q := s.Queue; q != nil {
			fmt.Fprintf(w, "   queue: %s queued (%d applied directly, %d not written, %d outcome unknown) on %s; the other instance wrote %s on %d of them\n",
				plural(q.Queued, "write"), q.Direct, q.NotWritten, q.Unknown, plural(q.Keys, "key"), plural(q.OtherWrites, "time"), q.SharedKeys)
			if !replayInTable {
				fmt.Fprintf(w, "   replay: %s\n", q.replayText())
			}
			if q.PendingAfterReopen > 0 || q.KillAtMs > 0 {
				fmt.Fprintf(w, "   reopened with %s pending", plural(q.PendingAfterReopen, "write"))
				if q.KillAtMs > 0 {
					fmt.Fprintf(w, "; SIGKILL at %s, %d replayed before it, %d applied but still queued", msDur(q.KillAtMs), q.ReplayedBeforeKill, q.InFlightAtKill)
				}
				fmt.Fprintln(w)
			}
			if q.ExampleDeadLetter != "" {
				fmt.Fprintf(w, "   a dead letter: %s\n", q.ExampleDeadLetter)
			}
		} else if p := s.Promote; p != nil {
			first := "never"
			if p.FirstWriteMs >= 0 {
				first = msDur(p.FirstWriteMs).String()
			}
			fmt.Fprintf(w, "   failover: set up in %s; replication cut at %s, primary killed (SIGKILL) at %s, standby promoted at %s (out of recovery %s later; timeline %d → %d); first write on the new primary %s after the promotion began\n",
				msDur(p.SetupMs), msDur(p.CutAtMs), msDur(p.KillAtMs), msDur(p.PromoteAtMs), msDur(p.PromoteMs), p.TimelineBefore, p.TimelineAfter, first)
			fmt.Fprintf(w, "   lost to asynchronous replication: %s and %s the old primary acknowledged are not on the new one (%s acknowledged after the cut); %s acknowledged in all, %d reported failed, %d outcome unknown\n",
				plural(p.LostCreates, "create"), plural(p.LostUpdates, "update"), plural(p.AckedAfterCut, "write"), plural(s.Writes.Acknowledged, "create"), s.Writes.ReportedFailed, s.Writes.Unknown)
			matched := fmt.Sprintf("%d differ", p.CacheDiffer)
			if p.CacheMatchedMs >= 0 {
				matched = fmt.Sprintf("all equal %s after the load stopped", msDur(p.CacheMatchedMs))
			}
			fmt.Fprintf(w, "   cache: %s compared with the new primary, %s; change feed %s, %s\n",
				plural(p.CacheChecked, "cached vendor"), matched, p.FeedState, plural(p.FeedResyncs, "resync"))
		} else if b := s.Brownout; b != nil {
			fmt.Fprintf(w, "   brownout: +%s a round trip (slow from %s), SoftTimeout %s: reads during the fault p99 %.1f ms, max %.1f ms (bound %s); %s answered at the soft timeout\n",
				msDur(b.LatencyMs), msDur(b.SlowCallDurationMs), msDur(b.SoftTimeoutMs), b.ReadP99Ms, b.ReadMaxMs, msDur(b.ReadBoundMs), plural(b.SlowReads, "read"))
			fmt.Fprintf(w, "   background calls: peak %d of %d allowed; %s, outage failures %v; breaker opened on %q (window %s); pool of %s, %d reopened\n",
				b.AbandonedPk, b.MaxAbandoned, plural(b.SlowCalls, "slow call"), b.Failures, b.TripCause, msDur(b.WindowMs), plural(b.PoolConns, "connection"), b.PoolReopened)
			fmt.Fprintf(w, "   writes: %d acknowledged, %d reported failed, %d outcome unknown; %d acknowledged missing, %d failed present\n",
				s.Writes.Acknowledged, s.Writes.ReportedFailed, s.Writes.Unknown, s.Writes.MissingAcknowledged, s.Writes.PresentButFailed)
		} else if f := s.Feed; f != nil {
			caught := "-"
			if f.CaughtUpMs >= 0 && s.Name == ScenarioFeedCut {
				caught = msDur(f.CaughtUpMs).String()
			}
			fmt.Fprintf(w, "   change feed (%s): lag at fault %s, caught up after heal %s, %s applied, %s, %s; %s checked, %d deleted checked, %d changed in the last second skipped\n",
				plural(f.Instances, "instance"), msDur(f.LagAtFaultMs), caught, plural(f.ChangesApplied, "change"), plural(f.CatchUps, "catch-up"),
				plural(f.Resyncs, "resync"), plural(f.Checked, "key"), f.DeletedChecked, f.SkippedRecent)
		} else {
			fmt.Fprintf(w, "   writes: %d acknowledged, %d reported failed, %d outcome unknown; %d acknowledged missing, %d failed present\n",
				s.Writes.Acknowledged, s.Writes.ReportedFailed, s.Writes.Unknown, s.Writes.MissingAcknowledged, s.Writes.PresentButFailed)
		}
		for _, v := range s.Violations {
			fmt.Fprintf(w, "   VIOLATION: %s\n", v)
		}
		fmt.Fprintln(w)
	}
	if r.Passed {
		fmt.Fprintf(w, "drill passed: every bound held (%s)\n", msDur(r.DurationMs))
	} else {
		var failed []string
		for _, s := range r.Scenarios {
			if !s.Passed {
				failed = append(failed, s.Name)
			}
		}
		fmt.Fprintf(w, "drill FAILED: bounds broken in %s\n", strings.Join(failed, ", "))
	}
}

// noteWidth is where the console's notes wrap.
const noteWidth = 120

// wrap breaks text at spaces into lines of at most width characters (a
// longer word stays whole), the lines after the first indented.
func wrap(text string, width int, indent string) string {
	var b strings.Builder
	line := 0
	for i, word := range strings.Fields(text) {
		switch {
		case i == 0:
			lead := text[:len(text)-len(strings.TrimLeft(text, " "))]
			b.WriteString(lead + word)
			line = len(lead) + len(word)
			continue
		case line+1+len(word) > width:
			b.WriteString("\n" + indent + word)
			line = len(indent) + len(word)
		default:
			b.WriteString(" " + word)
			line += 1 + len(word)
		}
	}
	return b.String()
}

func msDur(m float64) time.Duration {
	return (time.Duration(m * float64(time.Millisecond))).Round(time.Millisecond)
}
