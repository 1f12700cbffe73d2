package drill

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"strings"
)

// WriteHTML writes a self-contained page: per scenario the phase table and
// a timeline of every sampled call (latency against time, coloured by where
// the answer came from, failed calls in a strip of their own below), the
// outage window shaded. The chart is inline SVG drawn here; the page loads
// nothing.
func (r *Report) WriteHTML(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := r.RenderHTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// RenderHTML writes the page to w.
func (r *Report) RenderHTML(w io.Writer) error {
	r.annotate()
	return pageTmpl.Execute(w, r)
}

// The marks of the chart, shared with the legend. Errors are red marks of
// their own shape in the errors strip, never dots among the answers: fast
// cache reads and fail-fast errors take the same few microseconds.
const (
	colorError = "#d64545"
	// markErrRead and markErrWrite are paths relative to the mark's centre.
	markErrRead  = "m-2.6 -2.6l5.2 5.2m0 -5.2l-5.2 5.2"
	markErrWrite = "m0 -3l2.8 5h-5.6z"
)

var legendIcons = map[string]template.HTML{
	"errRead": template.HTML(fmt.Sprintf(`<svg class="ico" width="10" height="10" viewBox="0 0 10 10"><path d="M5 5%s" stroke="%s" stroke-width="1.6" fill="none"/></svg>`,
		markErrRead, colorError)),
	"errWrite": template.HTML(fmt.Sprintf(`<svg class="ico" width="10" height="10" viewBox="0 0 10 10"><path d="M5 5.5%s" stroke="%s" stroke-width="1.3" fill="none"/></svg>`,
		markErrWrite, colorError)),
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"chart": func(s ScenarioReport, timeoutMs float64) template.HTML { return template.HTML(chartSVG(s, timeoutMs)) },
	"pct":   func(f float64) string { return fmt.Sprintf("%.2f%%", 100*f) },
	"ms":    func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"dur": func(f float64) string {
		if f < 0 {
			return "—"
		}
		return msDur(f).String()
	},
	// n is a count with its noun, singular for 1: {{n .Refreshed "entry"}}.
	"n": func(n any, noun string) string {
		switch n := n.(type) {
		case int:
			return plural(n, noun)
		case int32:
			return plural(n, noun)
		case int64:
			return plural(n, noun)
		case uint64:
			return plural(n, noun)
		}
		return fmt.Sprintf("%v %s", n, pluralNoun(noun))
	},
	"icon":       func(name string) template.HTML { return legendIcons[name] },
	"emptyPhase": func(s ScenarioReport, p PhaseReport) string { return s.emptyPhase(p) },
	"recover":    func(s ScenarioReport) string { return s.recoverText("—") },
	"noteLead":   noteLead,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>pgfallback drill {{.RunID}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 32px 24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px;padding-top:24px} h2{font-size:17px;margin:28px 0 2px;scroll-margin-top:110px}
.sub{color:#5b6477;margin:0 0 14px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;vertical-align:2px}
.pass{background:#1f9d55}.fail{background:#d64545}.skip{background:#8a94a6}
table{border-collapse:collapse;margin:6px 0 4px}
th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #e4e7ee;font-variant-numeric:tabular-nums}
th{font-weight:600;color:#4a5366;background:#f6f7fa} td:first-child,th:first-child{text-align:left}
tr.note td{text-align:left;color:#5b4a1d;background:#fdf8ec;font-size:13px;white-space:normal;max-width:0}
tr.note td:first-child{background:#fff}
tr.empty td{text-align:left;color:#5b6477;font-style:italic;white-space:normal;max-width:0}
td .mark{color:#a06c00;font-weight:600}
.facts{color:#39414f;margin:4px 0} .viol{color:#b42323;font-weight:600}
.legend{position:sticky;top:0;z-index:10;margin:0 -32px;padding:7px 32px;background:#fff;border-bottom:1px solid #e4e7ee;box-shadow:0 2px 4px rgba(29,35,48,.06);font-size:13px}
.legend span{margin-right:14px;white-space:nowrap}.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:4px;vertical-align:0}
.legend .ico{vertical-align:-1px;margin-right:4px}
svg.chart{display:block;margin-top:6px}
</style></head><body>
<h1>pgfallback failover drill <span class="badge {{if .Passed}}pass">PASSED{{else}}fail">FAILED{{end}}</span></h1>
<p class="sub">run {{.RunID}} · {{.Started.Format "2006-01-02 15:04:05 MST"}} · {{n .Readers "reader"}}, {{n .Writers "writer"}} ·
PrimaryTimeout {{dur .PrimaryTimeoutMs}}, OpenTimeout {{dur .OpenTimeoutMs}} · {{.Server}} · total {{dur .DurationMs}}</p>
<div class="legend" id="legend"><span><i class="dot" style="background:#3b6fd8"></i>from PostgreSQL</span><span><i class="dot" style="background:#1f9d55"></i>from cache (fresh)</span><span><i class="dot" style="background:#e08a00"></i>from cache (stale)</span><span><i class="dot" style="background:#17a2b8"></i>from cache at the soft timeout (PostgreSQL slow)</span><span><i class="dot" style="background:#8e44ad"></i>read of a key with a queued write (pending)</span><span>▲ write</span><span style="color:#8e44ad">◆ queued write</span><span>{{icon "errRead"}}failed read</span><span>{{icon "errWrite"}}failed write <span style="color:#5b6477">(errors: the strip under each chart)</span></span><span><i class="dot" style="background:#f3d4d4;border-radius:0"></i>fault injected</span><span><i class="dot" style="background:#e6dcf2;border-radius:0"></i>replay of queued writes</span></div>
{{range .Scenarios}}{{$s := .}}
<h2 id="{{.Name}}">{{.Name}} <span class="badge {{if .Skipped}}skip">SKIPPED{{else if .Passed}}pass">PASS{{else}}fail">FAIL{{end}}</span></h2>
<div class="sub">{{.Description}}</div>
{{if .Skipped}}<p class="facts">{{.Skipped}}</p>{{else}}
{{chart . $.PrimaryTimeoutMs}}
{{if .Phases}}<table><tr><th>phase</th><th>ops</th><th>error rate</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>PostgreSQL</th><th>cache fresh</th><th>cache stale</th><th>slow</th><th>pending</th><th>writes</th></tr>
{{range .Phases}}{{if .Ops}}<tr><td>{{.Name}}</td><td>{{.Ops}}</td><td>{{if .Note}}<span class="mark">*</span> {{end}}{{pct .ErrorRate}}</td><td>{{ms .P50Ms}}</td><td>{{ms .P99Ms}}</td><td>{{ms .MaxMs}}</td><td>{{.Primary}}</td><td>{{.CacheFresh}}</td><td>{{.CacheStale}}</td><td>{{.CacheSlow}}</td><td>{{.QueueReads}}</td><td>{{.Writes}}</td></tr>
{{if .Note}}<tr class="note"><td></td><td colspan="11"><span class="mark">*</span> {{noteLead .}}: {{.Note}}</td></tr>
{{end}}{{else}}<tr class="empty"><td>{{.Name}}</td><td colspan="11">{{emptyPhase $s .}}</td></tr>
{{end}}{{end}}</table>{{end}}
<p class="facts">time to trip {{if .Tripped}}{{dur .TimeToTripMs}}{{else}}— (did not trip){{end}} · time to recover {{recover .}} · warm {{dur .Warm.DurationMs}}, {{n .Warm.Refreshed "entry"}} refreshed, {{.Warm.Removed}} removed<br>
{{with .Promote}}failover: replication cut at {{dur .CutAtMs}}, primary killed at {{dur .KillAtMs}}, standby promoted at {{dur .PromoteAtMs}} (out of recovery {{dur .PromoteMs}} later; timeline {{.TimelineBefore}} → {{.TimelineAfter}}), first write on the new primary {{dur .FirstWriteMs}} after the request · lost to asynchronous replication: {{n .LostCreates "create"}} and {{n .LostUpdates "update"}} acknowledged by the old primary ({{.AckedAfterCut}} acknowledged after the cut) · cache: {{n .CacheChecked "vendor"}} compared with the new primary, {{.CacheDiffer}} differ<br>
{{end}}{{with .Brownout}}brownout: +{{dur .LatencyMs}} a round trip, SoftTimeout {{dur .SoftTimeoutMs}} · reads during the fault p99 {{dur .ReadP99Ms}} (bound {{dur .ReadBoundMs}}), {{n .SlowReads "read"}} answered at the soft timeout · background calls peak {{.AbandonedPk}} of {{.MaxAbandoned}} · breaker opened on {{.TripCause}}<br>
{{end}}{{with .Queue}}queue: {{n .Queued "write"}} queued, {{.Direct}} applied directly, {{.NotWritten}} not written · {{n .Replayed "write"}} replayed ({{.AlreadyApplied}} already applied), {{n .DeadLetters "dead letter"}} ({{n .Conflicts "conflict"}}) · the other instance wrote {{n .OtherWrites "time"}} on {{.SharedKeys}} of {{n .Keys "key"}}{{if .KillAtMs}} · SIGKILL mid-replay after {{.ReplayedBeforeKill}} replayed{{end}}{{else}}writes: {{.Writes.Acknowledged}} acknowledged, {{.Writes.ReportedFailed}} reported failed, {{.Writes.Unknown}} outcome unknown · {{.Writes.MissingAcknowledged}} acknowledged but missing, {{.Writes.PresentButFailed}} reported failed but present{{end}}</p>
{{range .Violations}}<p class="viol">✗ {{.}}</p>{{end}}
{{end}}{{end}}
</body></html>
`))

// The chart's geometry: the answers' panel on top, the errors strip under
// it, both on one time axis and one log latency scale (1 µs to beyond
// PrimaryTimeout).
const (
	chartW, chartLeft, chartRight = 960.0, 70.0, 12.0
	chartTop, chartMainH          = 10.0, 196.0
	chartGap, chartErrH           = 10.0, 64.0
	chartH                        = 330.0
	chartFloorMs                  = 0.001 // 1 µs, the samples' resolution
)

// chartSVG draws one scenario's timeline: time on x, latency on a log
// scale on y, one mark per call. Answered calls are dots (writes
// triangles, queued writes diamonds) in the upper panel; failed calls are
// red crosses (reads) and open triangles (writes) in the errors strip
// below it, whatever their latency.
func chartSVG(s ScenarioReport, timeoutMs float64) string {
	const W, left, right, top = chartW, chartLeft, chartRight, chartTop
	mainBottom := top + chartMainH
	errTop := mainBottom + chartGap
	errBottom := errTop + chartErrH
	end := s.FaultEndMs
	for _, p := range s.Phases {
		end = math.Max(end, p.EndMs)
	}
	if end <= 0 {
		end = 1
	}
	lo, hi := math.Log10(chartFloorMs), math.Log10(math.Max(timeoutMs*2, 10))
	x := func(t float64) float64 { return left + (W-left-right)*t/end }
	scale := func(v, from, to float64) float64 {
		l := math.Log10(math.Max(v, chartFloorMs))
		return from + (to-from)*(1-(math.Min(l, hi)-lo)/(hi-lo))
	}
	y := func(v float64) float64 { return scale(v, top, mainBottom) }
	ye := func(v float64) float64 { return scale(v, errTop+3, errBottom-3) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg" font-family="system-ui,sans-serif" font-size="11">`,
		W, chartH, W, chartH)
	// The panels: the errors strip tinted, so that its red marks read as
	// apart from the answers.
	fmt.Fprintf(&b, `<rect class="errors-strip" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#fbf1f1" stroke="#ecd3d3"/>`, left, errTop, W-left-right, chartErrH)
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f3d4d4"/>`, x(s.FaultStartMs), top, x(s.FaultEndMs)-x(s.FaultStartMs), errBottom-top)
	if q := s.Queue; q != nil && q.ReplayStartMs > 0 {
		// The replay of queued writes: from the heal to the queue found
		// empty (to the end of the chart when it never emptied).
		replayEnd := q.ReplayEndMs
		if replayEnd <= q.ReplayStartMs {
			replayEnd = end
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#e6dcf2"/><text x="%.1f" y="%.1f" fill="#6c3483">replay</text>`,
			x(q.ReplayStartMs), top, math.Max(x(replayEnd)-x(q.ReplayStartMs), 1), errBottom-top, x(q.ReplayStartMs)+3, mainBottom-4)
	}
	for _, v := range []float64{0.001, 0.01, 0.1, 1, 10, 100, 1000, 10000} {
		if math.Log10(v) > hi {
			break
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#e4e7ee"/><text x="%.1f" y="%.1f" text-anchor="end" fill="#5b6477">%s</text>`,
			left, W-right, y(v), y(v), left-6, y(v)+4, fmtMs(v))
	}
	// The strip's scale: three ticks, small.
	for _, v := range []float64{0.01, 1, 100} {
		if math.Log10(v) > hi {
			break
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ecd3d3"/><text x="%.1f" y="%.1f" text-anchor="end" fill="#8a6a6a" font-size="9">%s</text>`,
			left, W-right, ye(v), ye(v), left-6, ye(v)+3, fmtMs(v))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#d64545" stroke-dasharray="4 3"/><text x="%.1f" y="%.1f" fill="#d64545">PrimaryTimeout</text>`,
		left, W-right, y(timeoutMs), y(timeoutMs), left+4, y(timeoutMs)-4)
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#d64545" stroke-dasharray="4 3" opacity=".5"/>`,
		left, W-right, ye(timeoutMs), ye(timeoutMs))
	for t := 0.0; t <= end; t += tickStep(end) {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#5b6477">%gs</text>`, x(t), errBottom+14, t/1000)
	}
	// The axis titles.
	fmt.Fprintf(&b, `<text class="axis-title" x="%.1f" y="%.1f" text-anchor="middle" fill="#39414f" font-size="12">time since the scenario started (s)</text>`,
		left+(W-left-right)/2, errBottom+32)
	fmt.Fprintf(&b, `<text class="axis-title" transform="translate(14 %.1f) rotate(-90)" text-anchor="middle" fill="#39414f" font-size="12">latency of answered calls (log)</text>`,
		(top+mainBottom)/2)
	fmt.Fprintf(&b, `<text class="axis-title" transform="translate(14 %.1f) rotate(-90)" text-anchor="middle" fill="%s" font-size="12" font-weight="600">errors</text>`,
		(errTop+errBottom)/2, colorError)

	colors := map[string]string{"primary": "#3b6fd8", "cache": "#1f9d55", "stale": "#e08a00", "slow": "#17a2b8", "queue": "#8e44ad", "error": colorError}
	var errs strings.Builder
	for _, p := range s.Timeline {
		c := colors[p.Source]
		switch {
		case p.Source == "error" && p.Write:
			fmt.Fprintf(&errs, `<path d="M%.1f %.1f%s"/>`, x(p.AtMs), ye(p.LatencyMs), markErrWrite)
		case p.Source == "error":
			fmt.Fprintf(&errs, `<path d="M%.1f %.1f%s"/>`, x(p.AtMs), ye(p.LatencyMs), markErrRead)
		case p.Write && p.Source == "queue":
			// A queued write: a diamond, apart from the triangles of writes
			// PostgreSQL answered.
			fmt.Fprintf(&b, `<path d="M%.1f %.1fl3 4l-3 4l-3-4z" fill="%s" opacity=".8"/>`, x(p.AtMs), y(p.LatencyMs)-4, c)
		case p.Write:
			fmt.Fprintf(&b, `<path d="M%.1f %.1fl2.6 4.5h-5.2z" fill="%s" opacity=".75"/>`, x(p.AtMs), y(p.LatencyMs)-3, c)
		default:
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.8" fill="%s" opacity=".6"/>`, x(p.AtMs), y(p.LatencyMs), c)
		}
	}
	fmt.Fprintf(&b, `<g class="errors" fill="none" stroke="%s" stroke-width="1.1" opacity=".7">%s</g>`, colorError, errs.String())
	mark := func(t float64, label, color string) {
		// Labelled on its right, or on its left near the chart's end.
		lx, anchor := x(t)+3, "start"
		if lx+6.5*float64(len(label)) > W-right {
			lx, anchor = x(t)-3, "end"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/><text x="%.1f" y="%.1f" text-anchor="%s" fill="%s">%s</text>`,
			x(t), x(t), top, errBottom, color, lx, top+11, anchor, color, label)
	}
	if s.Tripped && s.TimeToTripMs >= 0 {
		mark(s.FaultStartMs+s.TimeToTripMs, "breaker open", "#b42323")
	}
	if s.TimeToRecoverMs >= 0 && s.RecoveredBy == "" {
		mark(s.FaultEndMs+s.TimeToRecoverMs, "closed", "#1f7a45")
	}
	if q := s.Queue; q != nil && q.KillAtMs > 0 {
		mark(q.KillAtMs, "SIGKILL", "#6c3483")
	}
	if p := s.Promote; p != nil {
		if p.CutAtMs > 0 {
			mark(p.CutAtMs, "replication cut", "#6c3483")
		}
		if p.PromoteAtMs > 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#1f7a45">promoted</text>`, x(p.PromoteAtMs)+3, top+24)
		}
	}
	if q := s.Queue; q != nil && q.ReplayEndMs > q.ReplayStartMs && q.ReplayStartMs > 0 {
		// Labelled on its left: it is near the chart's end.
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#6c3483" stroke-width="1.5"/><text x="%.1f" y="%.1f" text-anchor="end" fill="#6c3483">queue empty</text>`,
			x(q.ReplayEndMs), x(q.ReplayEndMs), top, errBottom, x(q.ReplayEndMs)-3, top+24)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%gs", v/1000)
	case v < 1:
		return fmt.Sprintf("%gµs", math.Round(v*1000))
	}
	return fmt.Sprintf("%gms", v)
}

func tickStep(end float64) float64 {
	for _, s := range []float64{500, 1000, 2000, 5000, 10000, 30000, 60000} {
		if end/s <= 12 {
			return s
		}
	}
	return 120000
}
