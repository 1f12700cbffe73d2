package fallback

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// A primary that cannot apply writes exactly once (no
// repository.WriteApplier) gets no queue: WithWriteQueue changes nothing,
// and the queue's methods answer from the file without failing.
func TestNoQueueWithoutAWriteApplier(t *testing.T) {
	ctx := context.Background()
	db := newFakeDB()
	l, _ := newTestLayer(t, db, Config{ConsecutiveFailures: 1})
	if l.queue != nil {
		t.Fatal("a queue over a primary that is not a WriteApplier")
	}
	db.put(vendor("acme"))
	v, err := l.Vendors().Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	db.down(errRefused)
	l.Vendors().Get(ctx, "other") // trips
	v.Status = repository.VendorBroken
	if _, err := l.Vendors().Update(WithWriteQueue(ctx), v); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("Update with WithWriteQueue and no WriteApplier: %v, want ErrUnavailable", err)
	}
	if q, err := l.Queue(ctx); err != nil || q.Pending != 0 {
		t.Fatalf("Queue: %+v, %v", q, err)
	}
	if d, err := l.DeadLetters(ctx); err != nil || len(d) != 0 {
		t.Fatalf("DeadLetters: %+v, %v", d, err)
	}
	if err := l.Retry(ctx, uuid.New()); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Retry of an unknown write: %v, want ErrNotFound", err)
	}
	if err := l.Discard(ctx, uuid.New()); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Discard of an unknown write: %v, want ErrNotFound", err)
	}
	if st := l.Stats().Queued; st != (QueuedStats{}) {
		t.Fatalf("queue stats %+v without a queue", st)
	}
}
