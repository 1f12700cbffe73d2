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
// the answer came from), the outage window shaded. The chart is inline SVG
// drawn here; the page loads nothing.
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
	return pageTmpl.Execute(w, r)
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
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>pgfallback drill {{.RunID}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px 32px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 2px}
.sub{color:#5b6477;margin:0 0 14px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;vertical-align:2px}
.pass{background:#1f9d55}.fail{background:#d64545}.skip{background:#8a94a6}
table{border-collapse:collapse;margin:6px 0 4px}
th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #e4e7ee;font-variant-numeric:tabular-nums}
th{font-weight:600;color:#4a5366;background:#f6f7fa} td:first-child,th:first-child{text-align:left}
.facts{color:#39414f;margin:4px 0} .viol{color:#b42323;font-weight:600}
.legend span{margin-right:14px}.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:4px;vertical-align:0}
svg{display:block;margin-top:6px}
</style></head><body>
<h1>pgfallback failover drill <span class="badge {{if .Passed}}pass">PASSED{{else}}fail">FAILED{{end}}</span></h1>
<p class="sub">run {{.RunID}} · {{.Started.Format "2006-01-02 15:04:05 MST"}} · {{.Readers}} readers, {{.Writers}} writers ·
PrimaryTimeout {{dur .PrimaryTimeoutMs}}, OpenTimeout {{dur .OpenTimeoutMs}} · {{if .Embedded}}embedded PostgreSQL{{else}}given PostgreSQL{{end}} · total {{dur .DurationMs}}</p>
<p class="legend"><span><i class="dot" style="background:#3b6fd8"></i>from PostgreSQL</span><span><i class="dot" style="background:#1f9d55"></i>from cache (fresh)</span><span><i class="dot" style="background:#e08a00"></i>from cache (stale)</span><span><i class="dot" style="background:#17a2b8"></i>from cache at the soft timeout (PostgreSQL slow)</span><span><i class="dot" style="background:#d64545"></i>error</span><span>▲ write</span><span><i class="dot" style="background:#8e44ad"></i>read of a key with a queued write (pending)</span><span style="color:#8e44ad">◆ queued write</span><span><i class="dot" style="background:#f3d4d4;border-radius:0"></i>fault injected</span><span><i class="dot" style="background:#e6dcf2;border-radius:0"></i>replay of queued writes</span></p>
{{range .Scenarios}}
<h2>{{.Name}} <span class="badge {{if .Skipped}}skip">SKIPPED{{else if .Passed}}pass">PASS{{else}}fail">FAIL{{end}}</span></h2>
<div class="sub">{{.Description}}</div>
{{if .Skipped}}<p class="facts">{{.Skipped}}</p>{{else}}
{{chart . $.PrimaryTimeoutMs}}
<table><tr><th>phase</th><th>ops</th><th>error rate</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>PostgreSQL</th><th>cache fresh</th><th>cache stale</th><th>slow</th><th>pending</th><th>writes</th></tr>
{{range .Phases}}<tr><td>{{.Name}}</td><td>{{.Ops}}</td><td>{{pct .ErrorRate}}</td><td>{{ms .P50Ms}}</td><td>{{ms .P99Ms}}</td><td>{{ms .MaxMs}}</td><td>{{.Primary}}</td><td>{{.CacheFresh}}</td><td>{{.CacheStale}}</td><td>{{.CacheSlow}}</td><td>{{.QueueReads}}</td><td>{{.Writes}}</td></tr>
{{end}}</table>
<p class="facts">time to trip {{if .Tripped}}{{dur .TimeToTripMs}}{{else}}— (did not trip){{end}} · time to recover {{dur .TimeToRecoverMs}} · warm {{dur .Warm.DurationMs}}, {{.Warm.Refreshed}} entries refreshed, {{.Warm.Removed}} removed<br>
{{with .Promote}}failover: replication cut at {{dur .CutAtMs}}, primary killed at {{dur .KillAtMs}}, standby promoted at {{dur .PromoteAtMs}} (out of recovery {{dur .PromoteMs}} later; timeline {{.TimelineBefore}} → {{.TimelineAfter}}), first write on the new primary {{dur .FirstWriteMs}} after the request · lost to asynchronous replication: {{.LostCreates}} creates and {{.LostUpdates}} updates acknowledged by the old primary ({{.AckedAfterCut}} acknowledged after the cut) · cache: {{.CacheChecked}} vendors compared with the new primary, {{.CacheDiffer}} differ<br>
{{end}}{{with .Brownout}}brownout: +{{dur .LatencyMs}} a round trip, SoftTimeout {{dur .SoftTimeoutMs}} · reads during the fault p99 {{dur .ReadP99Ms}} (bound {{dur .ReadBoundMs}}), {{.SlowReads}} answered at the soft timeout · background calls peak {{.AbandonedPk}} of {{.MaxAbandoned}} · breaker opened on {{.TripCause}}<br>
{{end}}{{with .Queue}}queue: {{.Queued}} writes queued, {{.Direct}} applied directly, {{.NotWritten}} not written · {{.Replayed}} replayed ({{.AlreadyApplied}} already applied), {{.DeadLetters}} dead letters ({{.Conflicts}} conflicts) · the other instance wrote {{.OtherWrites}} times on {{.SharedKeys}} of {{.Keys}} keys{{if .KillAtMs}} · SIGKILL mid-replay after {{.ReplayedBeforeKill}} replayed{{end}}{{else}}writes: {{.Writes.Acknowledged}} acknowledged, {{.Writes.ReportedFailed}} reported failed, {{.Writes.Unknown}} outcome unknown · {{.Writes.MissingAcknowledged}} acknowledged but missing, {{.Writes.PresentButFailed}} reported failed but present{{end}}</p>
{{range .Violations}}<p class="viol">✗ {{.}}</p>{{end}}
{{end}}{{end}}
</body></html>
`))

// chartSVG draws one scenario's timeline: time on x, latency on a log
// scale on y (10 µs to beyond PrimaryTimeout), one mark per call.
func chartSVG(s ScenarioReport, timeoutMs float64) string {
	const W, H, left, right, top, bottom = 960.0, 230.0, 52.0, 12.0, 10.0, 28.0
	end := s.FaultEndMs
	for _, p := range s.Phases {
		end = math.Max(end, p.EndMs)
	}
	if end <= 0 {
		end = 1
	}
	lo, hi := math.Log10(0.01), math.Log10(math.Max(timeoutMs*2, 10))
	x := func(t float64) float64 { return left + (W-left-right)*t/end }
	y := func(v float64) float64 {
		l := math.Log10(math.Max(v, 0.01))
		return top + (H-top-bottom)*(1-(math.Min(l, hi)-lo)/(hi-lo))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg" font-family="system-ui,sans-serif" font-size="11">`, W, H, W, H)
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f3d4d4"/>`, x(s.FaultStartMs), top, x(s.FaultEndMs)-x(s.FaultStartMs), H-top-bottom)
	if q := s.Queue; q != nil && q.ReplayStartMs > 0 {
		// The replay of queued writes: from the heal to the queue found
		// empty (to the end of the chart when it never emptied).
		replayEnd := q.ReplayEndMs
		if replayEnd <= q.ReplayStartMs {
			replayEnd = end
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#e6dcf2"/><text x="%.1f" y="%.1f" fill="#6c3483">replay</text>`,
			x(q.ReplayStartMs), top, math.Max(x(replayEnd)-x(q.ReplayStartMs), 1), H-top-bottom, x(q.ReplayStartMs)+3, H-bottom-4)
	}
	for _, v := range []float64{0.01, 0.1, 1, 10, 100, 1000, 10000} {
		if math.Log10(v) > hi {
			break
		}
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#e4e7ee"/><text x="%.1f" y="%.1f" text-anchor="end" fill="#5b6477">%s</text>`,
			left, W-right, y(v), y(v), left-6, y(v)+4, fmtMs(v))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#d64545" stroke-dasharray="4 3"/><text x="%.1f" y="%.1f" fill="#d64545">PrimaryTimeout</text>`,
		left, W-right, y(timeoutMs), y(timeoutMs), left+4, y(timeoutMs)-4)
	for t := 0.0; t <= end; t += tickStep(end) {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#5b6477">%gs</text>`, x(t), H-10, t/1000)
	}
	colors := map[string]string{"primary": "#3b6fd8", "cache": "#1f9d55", "stale": "#e08a00", "slow": "#17a2b8", "queue": "#8e44ad", "error": "#d64545"}
	for _, p := range s.Timeline {
		c := colors[p.Source]
		if p.Write && p.Source == "queue" {
			// A queued write: a diamond, apart from the triangles of writes
			// PostgreSQL answered.
			fmt.Fprintf(&b, `<path d="M%.1f %.1fl3 4l-3 4l-3-4z" fill="%s" opacity=".8"/>`, x(p.AtMs), y(p.LatencyMs)-4, c)
		} else if p.Write {
			fmt.Fprintf(&b, `<path d="M%.1f %.1fl2.6 4.5h-5.2z" fill="%s" opacity=".75"/>`, x(p.AtMs), y(p.LatencyMs)-3, c)
		} else {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.8" fill="%s" opacity=".6"/>`, x(p.AtMs), y(p.LatencyMs), c)
		}
	}
	mark := func(t float64, label, color string) {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5"/><text x="%.1f" y="%.1f" fill="%s">%s</text>`,
			x(t), x(t), top, H-bottom, color, x(t)+3, top+11, color, label)
	}
	if s.Tripped && s.TimeToTripMs >= 0 {
		mark(s.FaultStartMs+s.TimeToTripMs, "breaker open", "#b42323")
	}
	if s.TimeToRecoverMs >= 0 {
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
			x(q.ReplayEndMs), x(q.ReplayEndMs), top, H-bottom, x(q.ReplayEndMs)-3, top+24)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func fmtMs(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%gs", v/1000)
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
