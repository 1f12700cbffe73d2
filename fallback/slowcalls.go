package fallback

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Slow calls (Config.SlowCallDuration, SlowCallRate) trip the breaker as
// failures do. gobreaker calls ReadyToTrip only on a reported failure, and
// its Counts cannot tell a slow answer from an outage, so a slow answer is
// reported to it as errSlow (a failure, so ReadyToTrip runs) and the
// decision is taken from callWindow, the layer's own rolling count of the
// calls reported: outages, slow answers and the rest. Every report goes
// through breaker.Allow, which keeps the window.

// errSlow is what the breaker is told of a call the primary answered, but
// in SlowCallDuration or longer.
var errSlow = errors.New("slow")

// Why the breaker last opened (Stats.LastTripCause).
const (
	TripFailures  = "failures"   // outage failures: in a row, or at FailureRatio
	TripSlowCalls = "slow calls" // slow answers at SlowCallRate
)

// breaker is gobreaker's two-step breaker with the window its ReadyToTrip
// decides from.
type breaker struct {
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
	w  callWindow

	trip atomic.Pointer[tripReport] // the last trip's verdict, for setState
	// slowPingLogged: a slow probe ping was logged since the last trip.
	slowPingLogged atomic.Bool
}

// tripReport is what the window held when it tripped the breaker.
type tripReport struct {
	cause                string
	valid, outages, slow uint32
	consecutiveOutages   uint32
}

func newBreaker(st gobreaker.Settings) *breaker {
	b := &breaker{cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](st)}
	b.w.init(st.Interval, st.BucketPeriod, time.Now())
	return b
}

// Allow is gobreaker's Allow, counting the request in the window; the
// call's done counts its outcome.
func (b *breaker) Allow() (allowedCall, error) {
	cbDone, err := b.cb.Allow()
	if err != nil {
		return allowedCall{}, err
	}
	return allowedCall{b: b, tok: b.w.request(time.Now()), cbDone: cbDone}, nil
}

// allowedCall is a call the breaker let through. A value rather than a
// closure over these, which cost every healthy call an allocation.
type allowedCall struct {
	b      *breaker
	tok    callToken
	cbDone func(error)
}

// done reports the call's outcome: nil for an answer, errSlow for a slow
// answer, errExcluded for a call that counts as nothing, anything else for
// an outage.
func (c allowedCall) done(err error) {
	c.b.w.done(c.tok, err, time.Now())
	c.cbDone(err)
}

// readyToTrip is the breaker's ReadyToTrip: it runs under gobreaker's lock
// when a failure (an outage or a slow answer) was reported while closed.
func (l *Layer) readyToTrip(gobreaker.Counts) bool {
	c := l.cb.w.counts(time.Now())
	valid := c.valid()
	r := tripReport{valid: valid, outages: c.outages, slow: c.slow, consecutiveOutages: c.consecutiveOutages}
	switch {
	case c.consecutiveOutages >= l.cfg.ConsecutiveFailures,
		valid >= l.cfg.MinRequests && float64(c.outages) >= l.cfg.FailureRatio*float64(valid):
		r.cause = TripFailures
	case l.cfg.SlowCallRate >= 0 && valid >= l.cfg.MinRequests && float64(c.slow) >= l.cfg.SlowCallRate*float64(valid):
		r.cause = TripSlowCalls
		var err error = &slowError{calls: valid, slow: c.slow, d: l.cfg.SlowCallDuration}
		l.lastErr.Store(&err)
	default:
		return false
	}
	l.cb.trip.Store(&r)
	l.cb.slowPingLogged.Store(false)
	return true
}

// slowCall reports whether a call that the primary answered in took
// counts as slow toward the breaker (never when SlowCallRate < 0).
func (l *Layer) slowCall(took time.Duration) bool {
	return l.cfg.SlowCallRate >= 0 && took >= l.cfg.SlowCallDuration
}

// slowError is the cause of a trip, or of a failed probe, that was
// slowness, not failure: PostgreSQL answered, but too slowly.
type slowError struct {
	calls, slow uint32        // a trip: slow of calls in the window
	took        time.Duration // a ping: how long it took
	d           time.Duration // SlowCallDuration
}

func (e *slowError) Error() string {
	if e.calls > 0 {
		return fmt.Sprintf("PostgreSQL is slow: %d of the last %d calls took %v or longer", e.slow, e.calls, e.d)
	}
	return fmt.Sprintf("PostgreSQL is slow: a ping took %v (slow from %v)", e.took.Round(time.Millisecond), e.d)
}

func (e *slowError) Unwrap() error { return errSlow }

// callCounts are the window's counts, in one bucket or in all of them.
type callCounts struct {
	requests uint32 // allowed, counted when they start (as gobreaker does)
	answered uint32 // answers, slow ones included
	outages  uint32
	excluded uint32 // caller cancellations
	slow     uint32 // slow answers
	// consecutiveOutages: outages since the last answer (a slow answer
	// is an answer: it ends a run of outages).
	consecutiveOutages uint32
}

// valid is gobreaker's validRequests: the requests that were not excluded,
// those still running included.
func (c callCounts) valid() uint32 {
	if c.requests < c.excluded {
		return 0
	}
	return c.requests - c.excluded
}

// callWindow counts the calls reported to the breaker over the rolling
// Window, in buckets of BucketPeriod, exactly as gobreaker's rolling counts
// do (the outcome goes to the bucket in which the call started; a run of
// outages shortens as its oldest bucket rolls out), with slow answers
// apart. It is cleared whenever the breaker changes state; outcomes of
// calls allowed before are ignored, as gobreaker ignores them.
type callWindow struct {
	mu      sync.Mutex
	period  time.Duration
	start   time.Time
	gen     uint64
	age     uint64
	total   callCounts
	buckets []callCounts
}

// callToken identifies a request: the window's generation and bucket age
// when it started.
type callToken struct{ gen, age uint64 }

func (w *callWindow) init(interval, bucket time.Duration, now time.Time) {
	n := int64(1)
	switch {
	case interval <= 0:
		interval = 60 * time.Second // gobreaker's default
		bucket = interval
	case bucket <= 0:
		bucket = interval
	default:
		interval = (interval + bucket - 1) / bucket * bucket
		n = int64(interval / bucket)
	}
	w.period, w.start = bucket, now
	w.buckets = make([]callCounts, n)
}

// reset clears the window: the breaker changed state.
func (w *callWindow) reset(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen++
	w.start, w.age, w.total = now, 0, callCounts{}
	clear(w.buckets)
}

func (w *callWindow) request(now time.Time) callToken {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.grow(now)
	w.total.requests++
	w.buckets[w.index(w.age)].requests++
	return callToken{w.gen, w.age}
}

func (w *callWindow) done(t callToken, err error, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.grow(now)
	if t.gen != w.gen || t.age > w.age || w.age-t.age >= uint64(len(w.buckets)) {
		return // allowed before the breaker last changed state, or rolled out
	}
	b := &w.buckets[w.index(t.age)]
	switch {
	case err == errExcluded:
		w.total.excluded++
		b.excluded++
		return
	case err == nil || errors.Is(err, errSlow):
		w.total.answered++
		b.answered++
		w.total.consecutiveOutages, b.consecutiveOutages = 0, 0
		if err != nil {
			w.total.slow++
			b.slow++
		}
	default:
		w.total.outages++
		b.outages++
		w.total.consecutiveOutages++
		b.consecutiveOutages++
	}
}

func (w *callWindow) counts(now time.Time) callCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.grow(now)
	return w.total
}

func (w *callWindow) index(age uint64) uint64 { return age % uint64(len(w.buckets)) }

// grow rolls the window forward to now.
func (w *callWindow) grow(now time.Time) {
	elapsed := now.Sub(w.start)
	if elapsed < 0 {
		return
	}
	age := uint64(elapsed / w.period)
	if age <= w.age {
		return
	}
	if age-w.age >= uint64(len(w.buckets)) {
		w.total = callCounts{}
		clear(w.buckets)
		w.age = age
		return
	}
	for w.age < age {
		w.age++
		w.rollOut(w.index(w.age))
	}
}

// rollOut drops the oldest bucket, whose slot the new current bucket takes.
func (w *callWindow) rollOut(oldest uint64) {
	b := w.buckets[oldest]
	// A run of outages that began in the oldest bucket loses its part in
	// it; one that began later is left alone (gobreaker's rule).
	run := b.consecutiveOutages
	for i := 1; i < len(w.buckets); i++ {
		run += w.buckets[(oldest+uint64(i))%uint64(len(w.buckets))].outages
	}
	if w.total.consecutiveOutages == run {
		w.total.consecutiveOutages -= min(b.consecutiveOutages, w.total.consecutiveOutages)
	}
	sub := func(total *uint32, v uint32) { *total -= min(v, *total) }
	sub(&w.total.requests, b.requests)
	sub(&w.total.answered, b.answered)
	sub(&w.total.outages, b.outages)
	sub(&w.total.excluded, b.excluded)
	sub(&w.total.slow, b.slow)
	w.buckets[oldest] = callCounts{}
}
