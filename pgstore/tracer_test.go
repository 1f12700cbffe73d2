package pgstore_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/pgstore"
)

// countingTracer counts the queries it is told of on the listener's
// connection (the pool's own, one per listener connect, are the pool's).
type countingTracer struct{ n atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	if conn.Config().RuntimeParams["application_name"] == "pgfallback-feed" {
		c.n.Add(1)
	}
	return ctx
}

func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// The pool's query tracer (otelpgx, tracelog) is not the listener's: the
// elected waker reads the log 50 to 200 times a second, which would be as
// many spans or log lines on one instance per database, all of them the
// library's plumbing.
func TestListenerDoesNotUseThePoolsTracer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(pgdsn.Error(err))
	}
	tracer := &countingTracer{}
	pcfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	s := pgstore.New(pool)
	defer s.Close()
	eavesdropper, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(pgdsn.Error(err))
	}
	defer eavesdropper.Close(ctx)
	if _, err := eavesdropper.Exec(ctx, "LISTEN "+pgstore.ChangeChannel); err != nil {
		t.Fatal(err)
	}

	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.WatchChanges(wctx, func(bool) {}) }()
	defer func() { stop(); <-done }()
	// The waker's first look notifies, then it heartbeats every 500 ms:
	// three notifications, and it has looked at the log dozens of times.
	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	defer ncancel()
	for range 3 {
		if _, err := eavesdropper.WaitForNotification(nctx); err != nil {
			t.Fatalf("the store was not elected waker, or did not notify: %v", err)
		}
	}
	if n := tracer.n.Load(); n != 0 {
		t.Errorf("the pool's tracer saw %d queries of the listener's and waker's", n)
	}
}
