package fallback

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

type ctxMark struct{}

// The observer sees every call once, with the context its Start returned,
// the call's origin and outcome, and each read from the cache.
func TestObserverSeesEveryCall(t *testing.T) {
	var mu sync.Mutex
	var calls []Call
	var cacheReads []error
	obs := &FuncObserver{
		StartFn: func(ctx context.Context, op Op, e repository.Entity) context.Context {
			return context.WithValue(ctx, ctxMark{}, string(op))
		},
		EndFn: func(ctx context.Context, c Call) {
			if ctx.Value(ctxMark{}) != string(c.Op) {
				t.Errorf("End got a context Start did not return for %s", c.Op)
			}
			mu.Lock()
			calls = append(calls, c)
			mu.Unlock()
		},
		StartCacheReadFn: func(ctx context.Context, op Op, e repository.Entity) (context.Context, func(error)) {
			return ctx, func(err error) { mu.Lock(); cacheReads = append(cacheReads, err); mu.Unlock() }
		},
	}
	db := newFakeDB()
	db.put(vendor("a"))
	l, _ := newTestLayer(t, db, Config{Observer: obs})
	ctx := context.Background()
	if _, err := l.Vendors().Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	if _, err := l.Vendors().Get(ctx, "missing"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := l.Vendors().Get(ctx, "BAD"); !errors.Is(err, repository.ErrInvalid) {
		t.Fatal(err)
	}
	tripBreaker(t, l, db)
	mu.Lock()
	calls, cacheReads = nil, nil
	mu.Unlock()
	if _, err := l.Vendors().Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Vendors().Create(ctx, vendor("b")); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("%d calls observed during the outage, want 2: %+v", len(calls), calls)
	}
	if c := calls[0]; c.Op != OpGet || c.Entity != repository.EntityVendor || c.Outcome != OutcomeOK ||
		c.Origin.Source != SourceCache || c.Breaker != Open || c.Duration <= 0 {
		t.Fatalf("cache-served Get observed as %+v", c)
	}
	if c := calls[1]; c.Op != OpCreate || c.Outcome != OutcomeUnavailable || c.Origin.Source != SourceNone {
		t.Fatalf("failed Create observed as %+v", c)
	}
	if len(cacheReads) != 1 || cacheReads[0] != nil {
		t.Fatalf("cache reads observed: %v, want one hit", cacheReads)
	}
}

func TestOutcomeOf(t *testing.T) {
	for err, want := range map[error]Outcome{
		nil:                          OutcomeOK,
		repository.ErrNotFound:       OutcomeNotFound,
		repository.Invalid("x", "y"): OutcomeInvalid,
		repository.ErrConflict:       OutcomeConflict,
		repository.ErrAlreadyExists:  OutcomeAlreadyExists,
		repository.ErrUnreadable:     OutcomeUnreadable,
		repository.ErrUnavailable:    OutcomeUnavailable,
		repository.ErrOutcomeUnknown: OutcomeOutcomeUnknown,
		ErrClosed:                    OutcomeClosed,
		context.Canceled:             OutcomeCanceled,
		errors.New("boom"):           OutcomeError,
	} {
		if got := OutcomeOf(err); got != want {
			t.Errorf("OutcomeOf(%v) = %s, want %s", err, got, want)
		}
	}
}

// Observers runs each observer: Start in order on the context the last
// returned, End and cache-read ends in reverse, like deferred calls.
func TestObserversRunsEach(t *testing.T) {
	var order []string
	mk := func(name string) *FuncObserver {
		return &FuncObserver{
			StartFn: func(ctx context.Context, op Op, e repository.Entity) context.Context {
				order = append(order, "start "+name)
				return ctx
			},
			EndFn: func(ctx context.Context, c Call) { order = append(order, "end "+name) },
			StartCacheReadFn: func(ctx context.Context, op Op, e repository.Entity) (context.Context, func(error)) {
				order = append(order, "read "+name)
				return ctx, func(error) { order = append(order, "read end "+name) }
			},
		}
	}
	all := Observers{mk("a"), mk("b")}
	ctx := all.Start(context.Background(), OpGet, repository.EntityVendor)
	_, end := all.StartCacheRead(ctx, OpGet, repository.EntityVendor)
	end(nil)
	all.End(ctx, Call{})
	want := "start a,start b,read a,read b,read end b,read end a,end b,end a"
	if got := strings.Join(order, ","); got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
}

// A Get that PostgreSQL answers slower than SoftTimeout reaches End
// answered from the cache and marked Slow, with the breaker closed; the
// Get before it, answered in time, is not marked.
func TestObserverSeesSlowAnswers(t *testing.T) {
	var mu sync.Mutex
	var calls []Call
	obs := &FuncObserver{EndFn: func(ctx context.Context, c Call) {
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
	}}
	db := newFakeDB()
	db.put(vendor("a"))
	var holding sync.Mutex // held: the primary's Get of "a" waits for it
	db.afterRead = func(string) { holding.Lock(); holding.Unlock() }
	l, _ := newTestLayer(t, db, Config{Observer: obs, SoftTimeout: 20 * time.Millisecond, PrimaryTimeout: time.Minute})
	ctx := context.Background()
	if _, err := l.Vendors().Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	holding.Lock()
	held := true
	defer func() {
		if held {
			holding.Unlock()
		}
	}()
	if _, err := l.Vendors().Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	holding.Unlock()
	held = false
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Fatalf("%d calls observed, want 2: %+v", len(calls), calls)
	}
	if c := calls[0]; c.Origin.Source != SourcePrimary || c.Origin.Slow {
		t.Errorf("Get answered in time observed as %+v", c)
	}
	if c := calls[1]; c.Origin.Source != SourceCache || !c.Origin.Slow || c.Outcome != OutcomeOK ||
		c.Breaker != Closed || c.Duration < 20*time.Millisecond {
		t.Errorf("slow Get observed as %+v, want from the cache, slow, ok, breaker closed, after the soft timeout", c)
	}
}
