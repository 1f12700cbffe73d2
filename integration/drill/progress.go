package drill

import (
	"fmt"
	"strings"
	"time"
)

// progress reports the running scenario: on a terminal one line rewritten
// four times a second, elsewhere a plain line a second. It returns the
// function that stops it.
func (r *scenarioRun) progress() (stop func()) {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	every := time.Second
	if r.cfg.Terminal {
		every = 250 * time.Millisecond
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		lastOps, last := int64(0), time.Now()
		for {
			select {
			case <-done:
				if r.cfg.Terminal {
					fmt.Fprint(w, "\r"+strings.Repeat(" ", 100)+"\r")
				}
				return
			case now := <-t.C:
				ops := r.ops.Load()
				rate := float64(ops-lastOps) / now.Sub(last).Seconds()
				lastOps, last = ops, now
				line := fmt.Sprintf("%-14s %-9s %6.1fs  %7.0f ops/s  %5d errors  breaker %s",
					r.name, r.phase.Load(), r.since().Seconds(), rate, r.errs.Load(), r.currentState())
				if r.cfg.Terminal {
					fmt.Fprintf(w, "\r%-100s", line)
				} else {
					fmt.Fprintln(w, line)
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
