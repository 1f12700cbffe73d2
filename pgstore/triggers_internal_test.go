package pgstore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

// The waker goes on while the log is incomplete (triggers.go): it keeps
// its lock and its session, sends plain heartbeats, which no follower
// trusts (so each is woken into a read that says why), and once the
// triggers are repaired it wakes the followers, whose cursors have expired.
func TestWakerWhileTheLogIsIncomplete(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, follower, _ := broadcastStores(t, ctx)
	holders := wakerHolders(t, ctx, waker)
	cur, err := follower.ChangeHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eav := eavesdrop(t, ctx, waker)
	next := func() string {
		t.Helper()
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		n, err := eav.WaitForNotification(nctx)
		if err != nil {
			t.Fatalf("no notification within 5 s: %v", err)
		}
		return n.Payload
	}

	if _, err := waker.pool.Exec(ctx, `ALTER TABLE vendors DISABLE TRIGGER pgfallback_vendors_change`); err != nil {
		t.Fatal(err)
	}
	// What was sent before the waker's next look may still come; then
	// only plain heartbeats, for more than a second.
	for skipped := 0; next() != HeartbeatPayload; skipped++ {
		if skipped == 10 {
			t.Fatal("no plain heartbeat among the 10 notifications after the trigger was disabled")
		}
	}
	for range 3 {
		if p := next(); p != HeartbeatPayload {
			t.Fatalf("while the log is incomplete the waker sent %.40q, want plain heartbeats", p)
		}
	}
	if got := wakerHolders(t, ctx, waker); !slices.Equal(got, holders) {
		t.Fatalf("the waker's lock was held by %v, now by %v: the waker let go while the log was incomplete", holders, got)
	}
	if _, err := follower.ReadChanges(ctx, cur, 10); !errors.Is(err, repository.ErrChangeLogIncomplete) {
		t.Fatalf("the follower's read: %v, want ErrChangeLogIncomplete", err)
	}

	if _, err := waker.pool.Exec(ctx, `ALTER TABLE vendors ENABLE ALWAYS TRIGGER pgfallback_vendors_change`); err != nil {
		t.Fatal(err)
	}
	for p := next(); p != WakePayload; p = next() {
		if p != HeartbeatPayload {
			t.Fatalf("after the repair the waker sent %.40q before a wake-up", p)
		}
	} // each next() is bounded: a waker that never wakes them fails there
	if _, err := follower.ReadChanges(ctx, cur, 10); !errors.Is(err, repository.ErrCursorExpired) {
		t.Fatalf("the follower's read after the repair: %v, want ErrCursorExpired", err)
	}
}
