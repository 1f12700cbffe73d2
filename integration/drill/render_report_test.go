package drill

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
)

// The rendering of reports, console and HTML, on reports built by hand:
// no PostgreSQL needed.

// sampleReport is a run of down, stale and queued-kill as the drill
// reports them.
func sampleReport() *Report {
	down := ScenarioReport{
		Name: ScenarioDown, Description: "the proxy refuses connections, then accepts again",
		FaultStartMs: 1000, FaultEndMs: 4000, Tripped: true, TimeToTripMs: 3, TimeToRecoverMs: 17,
		Phases: []PhaseReport{
			{Name: "baseline", StartMs: 0, EndMs: 1000, Ops: 3000, Errors: 1, WriteErrors: 1, ErrorRate: 1.0 / 3000, Primary: 2800, Writes: 199},
			{Name: "fault", StartMs: 1000, EndMs: 4000, Ops: 12000, Errors: 600, WriteErrors: 600, ErrorRate: 0.05, CacheFresh: 11400, Writes: 600},
			{Name: "recovery", StartMs: 4000, EndMs: 4600, Ops: 1600, Errors: 2, WriteErrors: 2, ErrorRate: 2.0 / 1600, Primary: 1500, Writes: 98},
		},
		Warm:   WarmSummary{Refreshed: 1, Removed: 0},
		Writes: WriteCheck{Acknowledged: 277, ReportedFailed: 603, Unknown: 1},
		Timeline: []Point{
			{AtMs: 500, LatencyMs: 0.8, Source: "primary"},
			{AtMs: 1500, LatencyMs: 0.005, Source: "cache"},
			{AtMs: 1501, LatencyMs: 0.005, Source: "error", Write: true},
			{AtMs: 1502, LatencyMs: 0.004, Source: "error"},
		},
		Passed: true,
	}
	stale := ScenarioReport{
		Name: ScenarioStale, Description: "an outage longer than the TTL plus StaleIfError",
		FaultStartMs: 1000, FaultEndMs: 4500, Tripped: true, TimeToTripMs: 2, TimeToRecoverMs: 119,
		Phases: []PhaseReport{
			{Name: "baseline", StartMs: 0, EndMs: 1000, Ops: 3700, Primary: 3500, Writes: 200},
			{Name: "fault", StartMs: 1000, EndMs: 4500, Ops: 13700, Errors: 6900, WriteErrors: 690, ErrorRate: 6900.0 / 13700, CacheFresh: 3600, CacheStale: 3800, Writes: 690},
			{Name: "recovery", StartMs: 4500, EndMs: 5100, Ops: 2000, Errors: 520, WriteErrors: 30, ErrorRate: 0.26, Primary: 1400, Writes: 120},
		},
		Warm:   WarmSummary{Refreshed: 2, Removed: 1},
		Passed: true,
	}
	kill := ScenarioReport{
		Name: ScenarioQueuedKill, Description: "queued, and the process replaying the queue is killed (SIGKILL) mid-replay",
		FaultStartMs: 1100, FaultEndMs: 4100, Tripped: true, TimeToTripMs: 2, TimeToRecoverMs: -1,
		Phases: []PhaseReport{
			{Name: "baseline", StartMs: 0, EndMs: 1100, Ops: 1251, Errors: 2, WriteErrors: 2, ErrorRate: 2.0 / 1251, Primary: 625, Writes: 625},
			{Name: "outage", StartMs: 1100, EndMs: 4100, Ops: 3549, Errors: 23, WriteErrors: 23, ErrorRate: 23.0 / 3549, QueueReads: 1713, Writes: 1775},
			{Name: "replay", StartMs: 4100, EndMs: 6500},
		},
		Queue: &QueueSummary{Keys: 60, SharedKeys: 10, Queued: 1752, Direct: 623, NotWritten: 23, Unknown: 2, OtherWrites: 302,
			Replayed: 1464, AlreadyApplied: 2, Conflicts: 10, DeadLetters: 288, ReplayStartMs: 4100, ReplayEndMs: 6401,
			PendingAfterReopen: 1751, KillAtMs: 4985, ReplayedBeforeKill: 3, InFlightAtKill: 2},
		Passed: true,
	}
	return &Report{RunID: "abc123", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Embedded: true,
		ServerVersion: "17.7 (Debian 17.7-0+deb13u1)", ServerMode: "docker", Readers: 8, Writers: 2,
		PrimaryTimeoutMs: 500, OpenTimeoutMs: 300, Scenarios: []ScenarioReport{down, stale, kill}, Passed: true}
}

func renderText(t *testing.T, r *Report) string {
	t.Helper()
	var b strings.Builder
	r.WriteText(&b)
	return b.String()
}

func renderHTML(t *testing.T, r *Report) string {
	t.Helper()
	var b strings.Builder
	if err := r.RenderHTML(&b); err != nil {
		t.Fatalf("RenderHTML: %v", err)
	}
	return b.String()
}

// scenarioText is the console section of one scenario.
func scenarioText(t *testing.T, text, name string) string {
	t.Helper()
	i := strings.Index(text, "== "+name+" [")
	if i < 0 {
		t.Fatalf("no section for %s in:\n%s", name, text)
	}
	rest := text[i:]
	if j := strings.Index(rest[3:], "\n== "); j >= 0 {
		return rest[:j+3]
	}
	return rest
}

// The report says what the drill ran against: a drill's results depend on
// PostgreSQL's release and on how the server was run.
func TestReportNamesTheServer(t *testing.T) {
	r := sampleReport()
	const want = "embedded PostgreSQL 17.7, docker"
	if text := renderText(t, r); !strings.Contains(strings.SplitN(text, "\n", 2)[0], "("+want+")") {
		t.Errorf("the text's first line does not name the server (%s):\n%s", want, text)
	}
	if html := renderHTML(t, r); !strings.Contains(html, want) {
		t.Errorf("the HTML report does not name the server (%s)", want)
	}
	r.Embedded, r.ServerVersion, r.ServerMode = false, "", ""
	if got := r.Server(); got != "given PostgreSQL" {
		t.Errorf("a given server whose version could not be read: %q", got)
	}
}

func TestPlural(t *testing.T) {
	for _, c := range []struct {
		n    int
		noun string
		want string
	}{
		{0, "entry", "0 entries"}, {1, "entry", "1 entry"}, {2, "entry", "2 entries"},
		{1, "key", "1 key"}, {3, "key", "3 keys"},
		{1, "dead letter", "1 dead letter"}, {288, "dead letter", "288 dead letters"},
		{1, "catch-up", "1 catch-up"}, {2, "catch-up", "2 catch-ups"},
		{1, "time", "1 time"}, {2, "time", "2 times"},
	} {
		if got := plural(c.n, c.noun); got != c.want {
			t.Errorf("plural(%d, %q) = %q, want %q", c.n, c.noun, got, c.want)
		}
	}
	if got := plural(uint64(1), "resync"); got != "1 resync" {
		t.Errorf("plural(uint64 1) = %q", got)
	}
}

// everyCountOne is a report in which every count is 1: no noun after a 1
// may be plural, in the console or the HTML.
func everyCountOne() *Report {
	r := sampleReport()
	r.Readers, r.Writers = 1, 1
	for i := range r.Scenarios {
		s := &r.Scenarios[i]
		s.Warm = WarmSummary{Refreshed: 1, Removed: 1}
		s.Writes = WriteCheck{Acknowledged: 1, ReportedFailed: 1, Unknown: 1, MissingAcknowledged: 1, PresentButFailed: 1}
		for j := range s.Phases {
			if s.Phases[j].Ops > 0 {
				s.Phases[j].Errors, s.Phases[j].WriteErrors, s.Phases[j].ErrorRate = 1, 1, 0.5
			}
		}
	}
	q := r.Scenarios[2].Queue
	*q = QueueSummary{Keys: 1, SharedKeys: 1, Queued: 1, Direct: 1, NotWritten: 1, Unknown: 1, OtherWrites: 1, Replayed: 1, AlreadyApplied: 1,
		Conflicts: 1, DeadLetters: 1, ReplayStartMs: 4100, ReplayEndMs: 4200, PendingAfterReopen: 1, KillAtMs: 4150, ReplayedBeforeKill: 1, InFlightAtKill: 1}
	r.Scenarios = append(r.Scenarios,
		ScenarioReport{Name: ScenarioPromote, TimeToTripMs: -1, TimeToRecoverMs: -1, Passed: true,
			Promote: &PromoteSummary{FirstWriteMs: 1, LostCreates: 1, LostUpdates: 1, AckedAfterCut: 1, CacheChecked: 1, CacheDiffer: 1, CacheMatchedMs: -1, FeedResyncs: 1}},
		ScenarioReport{Name: ScenarioBrownout, TimeToTripMs: -1, TimeToRecoverMs: -1, Passed: true,
			Brownout: &BrownoutSummary{SlowReads: 1, SlowCalls: 1, PoolConns: 1, PoolReopened: 1, AbandonedPk: 1, MaxAbandoned: 1}},
		ScenarioReport{Name: ScenarioPeers, TimeToTripMs: -1, TimeToRecoverMs: -1, Passed: true,
			Feed: &FeedSummary{Instances: 1, ChangesApplied: 1, CatchUps: 1, Resyncs: 1, Checked: 1, DeletedChecked: 1, SkippedRecent: 1}},
	)
	return r
}

var pluralAfterOne = regexp.MustCompile(`\b1 (entries|writes|keys|times|dead letters|conflicts|readers|writers|creates|updates|reads|slow calls|connections|instances|changes|catch-ups|resyncs|cached vendors|vendors|calls)\b`)

func TestCountsArePluralisedCorrectly(t *testing.T) {
	r := everyCountOne()
	text, html := renderText(t, r), renderHTML(t, r)
	for name, out := range map[string]string{"console": text, "HTML": html} {
		if m := pluralAfterOne.FindAllString(out, -1); len(m) > 0 {
			t.Errorf("%s: plural after 1: %q", name, m)
		}
		if !strings.Contains(out, "1 entry refreshed") {
			t.Errorf("%s: no \"1 entry refreshed\"", name)
		}
	}
	if !strings.Contains(text, "1 reader, 1 writer") || !strings.Contains(html, "1 reader, 1 writer") {
		t.Error("the header does not say \"1 reader, 1 writer\"")
	}

	two := sampleReport()
	text, html = renderText(t, two), renderHTML(t, two)
	for name, out := range map[string]string{"console": text, "HTML": html} {
		if !strings.Contains(out, "2 entries refreshed") {
			t.Errorf("%s: no \"2 entries refreshed\"", name)
		}
		if strings.Contains(out, "1 entries") {
			t.Errorf("%s: \"1 entries\"", name)
		}
	}
}

// The progress lines: errors per second over the interval, as ops are,
// with the scenario's total in a column of its own, all labelled.
func TestProgressErrorsPerInterval(t *testing.T) {
	t0 := time.Now()
	last := progressSample{at: t0, ops: 1000, errs: 600}
	cur := progressSample{at: t0.Add(time.Second), ops: 5000, errs: 800}

	var plain bytes.Buffer
	plain.WriteString(progressHeader + "\n")
	writeProgress(&plain, false, "stale", "fault", 4400*time.Millisecond, last, cur, "open")
	lines := strings.Split(strings.TrimRight(plain.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a header and a row, got %q", lines)
	}
	header, row := lines[0], lines[1]
	// Each number ends where its label ends.
	for label, want := range map[string]string{"ops/s": "4000", "errors/s": "200", "errors (total)": "800", "time": "4.4s"} {
		end := strings.Index(header, label) + len(label)
		if end < len(label) {
			t.Fatalf("header %q has no %q", header, label)
		}
		if end > len(row) || !strings.HasSuffix(row[:end], " "+want) {
			t.Errorf("under %q the row has %q, want %q ending there\n%s\n%s", label, row[:min(end, len(row))], want, header, row)
		}
	}
	if !strings.HasPrefix(row, "stale") || !strings.Contains(row, "fault") || !strings.HasSuffix(row, "open") {
		t.Errorf("row %q", row)
	}

	var term bytes.Buffer
	writeProgress(&term, true, "stale", "fault", 4400*time.Millisecond, last, cur, "open")
	line := strings.TrimSpace(strings.TrimPrefix(term.String(), "\r"))
	for _, want := range []string{"4000 ops/s", "200 errors/s", "(800 in all)", "breaker open"} {
		if !strings.Contains(line, want) {
			t.Errorf("terminal line %q lacks %q", line, want)
		}
	}
	if len(term.String()) < progressWidth {
		t.Errorf("the terminal line is not padded to %d: it would leave the previous one's tail", progressWidth)
	}
}

// A phase in which the application made no call has no row of zeros: it
// says what happened instead, the queue's replay.
func TestEmptyReplayPhaseIsNotZeros(t *testing.T) {
	r := sampleReport()
	text := scenarioText(t, renderText(t, r), ScenarioQueuedKill)
	if regexp.MustCompile(`(?m)^\s*replay\s+0\s+0\.00%`).MatchString(text) {
		t.Errorf("a replay row of zeros:\n%s", text)
	}
	row := regexp.MustCompile(`(?m)^\s*replay\s+(.*)$`).FindStringSubmatch(text)
	if row == nil || !strings.Contains(row[1], "1464 writes replayed (2 already applied), 288 dead letters (10 conflicts)") {
		t.Errorf("the replay row does not say what the replay did:\n%s", text)
	}
	if strings.Count(text, "1464 writes replayed") != 1 {
		t.Errorf("the replay is told twice:\n%s", text)
	}

	html := renderHTML(t, r)
	if !strings.Contains(html, `<tr class="empty"><td>replay</td><td colspan="11">no application calls in this phase; the queue&#39;s replay: 1464 writes replayed`) {
		t.Error("the HTML replay row does not say what the replay did")
	}
	if strings.Contains(html, "<tr><td>replay</td><td>0</td>") {
		t.Error("the HTML has a replay row of zeros")
	}

	// When the replay phase has calls, it is an ordinary row, and the
	// queue's replay a line of its own.
	r.Scenarios[2].Phases[2] = PhaseReport{Name: "replay", StartMs: 4100, EndMs: 6500, Ops: 10, Primary: 10}
	text = scenarioText(t, renderText(t, r), ScenarioQueuedKill)
	if !regexp.MustCompile(`(?m)^\s*replay\s+10\s+0\.00%`).MatchString(text) || !strings.Contains(text, "   replay: 1464 writes replayed") {
		t.Errorf("a replay phase with calls:\n%s", text)
	}
}

// queued-kill recovers when the queue is empty: its breaker was in the
// killed process.
func TestQueuedKillRecoveryTime(t *testing.T) {
	r := sampleReport()
	text := scenarioText(t, renderText(t, r), ScenarioQueuedKill)
	if !strings.Contains(text, "time to recover 2.301s (queue empty)") {
		t.Errorf("no recovery time:\n%s", text)
	}
	if html := renderHTML(t, r); !strings.Contains(html, "time to recover 2.301s (queue empty)") {
		t.Error("the HTML has no recovery time for queued-kill")
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	var back Report
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if s := back.Scenarios[2]; s.TimeToRecoverMs != 2301 || s.RecoveredBy != RecoveredQueueEmpty {
		t.Errorf("JSON: time to recover %v by %q", s.TimeToRecoverMs, s.RecoveredBy)
	}
	if s := back.Scenarios[0]; s.TimeToRecoverMs != 17 || s.RecoveredBy != "" {
		t.Errorf("JSON: down recovered in %v by %q; want the breaker's 17", s.TimeToRecoverMs, s.RecoveredBy)
	}

	// A queue that never emptied has no recovery time.
	r = sampleReport()
	r.Scenarios[2].Queue.ReplayEndMs = 0
	if text := scenarioText(t, renderText(t, r), ScenarioQueuedKill); !strings.Contains(text, "time to recover -,") {
		t.Errorf("a queue never emptied:\n%s", text)
	}
}

// A passing phase with a high error rate says why the bounds allow it.
func TestStaleErrorsExplained(t *testing.T) {
	r := sampleReport()
	text := scenarioText(t, renderText(t, r), ScenarioStale)
	rec := regexp.MustCompile(`(?m)^\s*recovery\s+2000\s+\[(\d)\] 26\.00%`).FindStringSubmatch(text)
	if rec == nil {
		t.Fatalf("the recovery row's error rate has no note marker:\n%s", text)
	}
	// The note, wrapped under its marker.
	note := regexp.MustCompile(`(?m)^   \[` + rec[1] + `\] (.*(?:\n {7}\S.*)*)$`).FindStringSubmatch(text)
	if note == nil {
		t.Fatalf("no note [%s]:\n%s", rec[1], text)
	}
	for _, l := range strings.Split(note[0], "\n") {
		if len(l) > noteWidth {
			t.Errorf("a note line of %d characters, over %d: %q", len(l), noteWidth, l)
		}
	}
	note[1] = strings.Join(strings.Fields(note[1]), " ")
	for _, want := range []string{"recovery: 26.00% errors", "within the bounds", "490 reads refused", "TTL + StaleIfError (2s)", "30 writes failed while PostgreSQL was out of reach or the breaker open (the bound: none reported failed is in PostgreSQL)"} {
		if !strings.Contains(note[1], want) {
			t.Errorf("note %q lacks %q", note[1], want)
		}
	}
	if r.Scenarios[1].Phases[2].Note == "" || r.Scenarios[1].Phases[0].Note != "" {
		t.Errorf("notes in the report: %+v", r.Scenarios[1].Phases)
	}
	// down: writes refused in the fault; the baseline's 0.03 % has no note.
	down := scenarioText(t, renderText(t, r), ScenarioDown)
	if !strings.Contains(strings.Join(strings.Fields(down), " "), "fault: 5.00% errors (600 calls), within the bounds: 600 writes failed while PostgreSQL was out of reach") || strings.Count(down, "within the bounds") != 1 {
		t.Errorf("down's notes:\n%s", down)
	}

	html := renderHTML(t, r)
	if !strings.Contains(html, `<tr class="note"><td></td><td colspan="11"><span class="mark">*</span> recovery: 26.00% errors (520 calls), within the bounds: 490 reads refused`) {
		t.Error("the HTML has no note under stale's recovery row")
	}

	// A failed scenario's errors are its violations' business.
	r = sampleReport()
	r.Scenarios[1].Passed = false
	r.Scenarios[1].Violations = []string{"5 reads were served from entries older than TTL + StaleIfError"}
	if text := scenarioText(t, renderText(t, r), ScenarioStale); strings.Contains(text, "within the bounds") {
		t.Errorf("a failed scenario's errors explained away:\n%s", text)
	}
}

func TestPhaseReportCountsWriteErrors(t *testing.T) {
	samples := []sample{
		{at: time.Millisecond, write: true, outcome: unavailableOutcome},
		{at: 2 * time.Millisecond, write: true, outcome: okOutcome},
		{at: 3 * time.Millisecond, outcome: unavailableOutcome},
		{at: 4 * time.Millisecond, source: fallback.SourceCache, outcome: okOutcome},
	}
	p := phaseReport("fault", samples, 0, time.Second)
	if p.Ops != 4 || p.Errors != 2 || p.WriteErrors != 1 || p.Writes != 2 {
		t.Errorf("phaseReport = %+v", p)
	}
}

// The HTML's charts: axis titles on each, one legend that stays on
// screen, and errors in a strip of their own, marked apart from answers.
func TestHTMLCharts(t *testing.T) {
	r := sampleReport()
	html := renderHTML(t, r)
	charts := strings.Count(html, `<svg class="chart"`)
	if charts != len(r.Scenarios) {
		t.Fatalf("%d charts for %d scenarios", charts, len(r.Scenarios))
	}
	for _, title := range []string{">time since the scenario started (s)</text>", ">latency of answered calls (log)</text>", ">errors</text>"} {
		if n := strings.Count(html, title); n != charts {
			t.Errorf("axis title %q on %d of %d charts", title, n, charts)
		}
	}

	css := regexp.MustCompile(`\.legend\{([^}]*)\}`).FindStringSubmatch(html)
	if css == nil || !strings.Contains(css[1], "position:sticky") || !strings.Contains(css[1], "top:0") {
		t.Errorf("the legend is not sticky: %v", css)
	}
	if strings.Count(html, `class="legend"`) != 1 || strings.Index(html, `class="legend"`) > strings.Index(html, "<h2") {
		t.Error("want one legend, above the scenarios")
	}
	if !strings.Contains(html, "failed read") || !strings.Contains(html, "failed write") {
		t.Error("the legend does not show the error marks")
	}

	// down's chart: a cache read and two errors at about the same latency.
	chart := chartSVG(r.Scenarios[0], r.PrimaryTimeoutMs)
	if strings.Contains(chart, `fill="`+colorError+`" opacity=".6"`) {
		t.Error("errors drawn as dots, like answers")
	}
	strip := regexp.MustCompile(`<rect class="errors-strip" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"`).FindStringSubmatch(chart)
	if strip == nil {
		t.Fatal("no errors strip")
	}
	stripTop, _ := strconv.ParseFloat(strip[1], 64)
	stripH, _ := strconv.ParseFloat(strip[2], 64)
	g := regexp.MustCompile(`<g class="errors" fill="none" stroke="` + colorError + `"[^>]*>(.*?)</g>`).FindStringSubmatch(chart)
	if g == nil {
		t.Fatal("no group of error marks")
	}
	marks := regexp.MustCompile(`<path d="M([\d.]+) ([\d.]+)(m[^"]*)"/>`).FindAllStringSubmatch(g[1], -1)
	if len(marks) != 2 {
		t.Fatalf("%d error marks, want 2: %s", len(marks), g[1])
	}
	shapes := map[string]bool{}
	for _, m := range marks {
		y, _ := strconv.ParseFloat(m[2], 64)
		if y < stripTop || y > stripTop+stripH {
			t.Errorf("error mark at y %.1f, outside the strip %.1f–%.1f", y, stripTop, stripTop+stripH)
		}
		shapes[m[3]] = true
	}
	if !shapes[markErrRead] || !shapes[markErrWrite] {
		t.Errorf("a failed read is a cross and a failed write an open triangle; got %v", shapes)
	}
	dots := regexp.MustCompile(`<circle cx="[\d.]+" cy="([\d.]+)"`).FindAllStringSubmatch(chart, -1)
	if len(dots) != 2 {
		t.Fatalf("%d dots, want 2", len(dots))
	}
	for _, d := range dots {
		if y, _ := strconv.ParseFloat(d[1], 64); y >= stripTop {
			t.Errorf("an answer drawn at y %.1f, in the errors strip (from %.1f)", y, stripTop)
		}
	}
	// The closed mark is the breaker's: queued-kill, recovered by its
	// queue, has its "queue empty" mark and no "closed".
	kill := chartSVG(r.Scenarios[2], r.PrimaryTimeoutMs)
	if strings.Contains(kill, ">closed</text>") || !strings.Contains(kill, ">queue empty</text>") {
		t.Error("queued-kill's chart: want a queue empty mark, no breaker closed mark")
	}
}
