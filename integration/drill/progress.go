package drill

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress reports the running scenario: on a terminal one line rewritten
// four times a second, elsewhere a plain line a second under a header.
// Rates are over the interval since the line before; the error total is
// the scenario's so far. It returns the function that stops it.
func (r *scenarioRun) progress() (stop func()) {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	every := time.Second
	if r.cfg.Terminal {
		every = 250 * time.Millisecond
	} else {
		fmt.Fprintln(w, progressHeader)
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		var last progressSample
		last.at = time.Now()
		for {
			select {
			case <-done:
				if r.cfg.Terminal {
					fmt.Fprint(w, "\r"+strings.Repeat(" ", progressWidth)+"\r")
				}
				return
			case now := <-t.C:
				cur := progressSample{at: now, ops: r.ops.Load(), errs: r.errs.Load()}
				writeProgress(w, r.cfg.Terminal, r.name, phaseName(r.phase.Load()), r.since(), last, cur, r.currentState().String())
				last = cur
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// progressSample is the counters at one tick.
type progressSample struct {
	at        time.Time
	ops, errs int64
}

const (
	progressWidth = 110
	// progressRow is a plain line, under progressHeader.
	progressRow = "%-14s %-15s %6.1fs  %7.0f  %8.0f  %14d  %s"
	// progressLine is the terminal's line, rewritten in place: no header
	// above it, so every number carries its label.
	progressLine = "%-14s %-15s %6.1fs  %7.0f ops/s  %6.0f errors/s (%d in all)  breaker %s"
)

// progressHeader labels progressRow's columns, each right-aligned over
// its numbers. ops/s and errors/s are over the interval since the line
// before; errors (total) since the scenario started.
var progressHeader = fmt.Sprintf("%-14s %-15s %7s  %7s  %8s  %14s  %s", "scenario", "phase", "time", "ops/s", "errors/s", "errors (total)", "breaker")

// writeProgress writes one progress line: ops and errors per second over
// the interval from last to cur, and the scenario's errors so far.
func writeProgress(w io.Writer, terminal bool, name, phase string, elapsed time.Duration, last, cur progressSample, breaker string) {
	secs := cur.at.Sub(last.at).Seconds()
	if secs <= 0 {
		secs = 1
	}
	ops, errs := float64(cur.ops-last.ops)/secs, float64(cur.errs-last.errs)/secs
	if terminal {
		fmt.Fprintf(w, "\r%-*s", progressWidth, fmt.Sprintf(progressLine, name, phase, elapsed.Seconds(), ops, errs, cur.errs, breaker))
		return
	}
	fmt.Fprintf(w, progressRow+"\n", name, phase, elapsed.Seconds(), ops, errs, cur.errs, breaker)
}

func phaseName(v any) string {
	s, _ := v.(string)
	return s
}
