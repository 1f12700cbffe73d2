package fallback_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/chaos"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// Tests of the durable write queue against a real PostgreSQL, cut by a
// Toxiproxy proxy that only the layer under test goes through; "another
// instance" writes through the direct connection.

type queueFixture struct {
	proxy     *chaos.Proxy
	direct    string // DSN straight to the server
	proxied   string
	cachePath string
	s         *stack
	other     *stack // another instance, never cut
	conflicts *conflictLog
}

type conflictLog struct {
	mu   sync.Mutex
	seen []conflict
}

type conflict struct {
	w   fallback.QueuedWrite
	err error
}

func (c *conflictLog) add(w fallback.QueuedWrite, err error) {
	c.mu.Lock()
	c.seen = append(c.seen, conflict{w, err})
	c.mu.Unlock()
}

func (c *conflictLog) all() []conflict {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]conflict(nil), c.seen...)
}

func queueConfig() fallback.Config {
	return fallback.Config{
		PrimaryTimeout: 500 * time.Millisecond, OpenTimeout: 100 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond,
		ConsecutiveFailures: 1, ReplayInterval: 100 * time.Millisecond,
	}
}

func newQueueFixture(t *testing.T, cfg fallback.Config) *queueFixture {
	t.Helper()
	direct := pgtest.NewDatabase(t)
	p, proxied := chaos.TestProxy(t, direct, "postgres")
	f := &queueFixture{proxy: p, direct: direct, proxied: proxied, cachePath: filepath.Join(t.TempDir(), "cache.db"), conflicts: &conflictLog{}}
	if cfg.OnConflict == nil {
		cfg.OnConflict = f.conflicts.add
	}
	f.s = openStack(t, proxied, f.cachePath, cfg)
	f.other = openStack(t, direct, filepath.Join(t.TempDir(), "other.db"), fallback.Config{DisableChangeFeed: true})
	return f
}

// down cuts the layer's PostgreSQL and waits for its breaker to open.
func (f *queueFixture) down(t *testing.T) {
	t.Helper()
	if err := f.proxy.Down(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the breaker to open", func() bool {
		f.s.layer.Vendors().List(context.Background(), repository.VendorFilter{Limit: 1})
		return f.s.layer.State() == fallback.Open
	})
}

// up heals the cut and waits until the breaker is closed and the queue
// empty.
func (f *queueFixture) up(t *testing.T) {
	t.Helper()
	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	f.waitReplayed(t)
}

func (f *queueFixture) waitReplayed(t *testing.T) {
	t.Helper()
	waitFor(t, 15*time.Second, "recovery and an empty queue", func() bool {
		q, err := f.s.layer.Queue(context.Background())
		return err == nil && q.Pending == 0 && f.s.layer.State() == fallback.Closed
	})
}

// cacheItems reads work items through the layer until the cache holds
// them: a write-through may be skipped when it races an eviction.
func (f *queueFixture) cacheItems(t *testing.T, ids ...uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, 5*time.Second, "work items in the cache", func() bool {
		for _, id := range ids {
			if _, _, err := f.s.cache.GetWorkItem(ctx, id); err != nil {
				f.s.layer.WorkItems().Get(ctx, id)
				f.s.layer.Flush(ctx)
				return false
			}
		}
		return true
	})
}

// queueUpdates marks each vendor broken through l with the queue, during
// an outage: one queued update per name, built on what the cache holds.
func queueUpdates(t *testing.T, l *fallback.Layer, names []string) {
	t.Helper()
	ctx := context.Background()
	qctx := fallback.WithWriteQueue(ctx)
	for _, name := range names {
		v, err := l.Vendors().Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		v.Status = repository.VendorBroken
		if _, err := l.Vendors().Update(qctx, v); err != nil {
			t.Fatal(err)
		}
	}
}

// updatedOnce fails unless every vendor in PostgreSQL holds exactly one
// queued update: broken at version 2, not 1 (lost) nor 3 (applied twice).
func (f *queueFixture) updatedOnce(t *testing.T) {
	t.Helper()
	var wrong int
	err := f.other.store.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM vendors WHERE version <> 2 OR status <> 'broken'`).Scan(&wrong)
	if err != nil || wrong != 0 {
		t.Fatalf("%d vendors not broken at version 2 (%v): a write was lost or applied twice", wrong, err)
	}
}

func (f *queueFixture) pending(t *testing.T) int {
	t.Helper()
	q, err := f.s.layer.Queue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return q.Pending
}

// pgVendor reads a vendor straight from PostgreSQL.
func (f *queueFixture) pgVendor(t *testing.T, name string) (repository.Vendor, error) {
	t.Helper()
	return f.other.store.Vendors().Get(context.Background(), name)
}

func TestQueueIsOptIn(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 2)
	v, _ := f.s.layer.Vendors().Get(ctx, names[0])
	f.down(t)

	v.Status = repository.VendorBroken
	_, err := f.s.layer.Vendors().Update(ctx, v)
	if !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("Update without WithWriteQueue during an outage: %v, want ErrUnavailable", err)
	}
	if err := f.s.layer.Vendors().Delete(ctx, names[1]); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("Delete without WithWriteQueue: %v, want ErrUnavailable", err)
	}
	if n := f.pending(t); n != 0 {
		t.Fatalf("%d writes queued without WithWriteQueue", n)
	}
	f.up(t)
	if got, err := f.pgVendor(t, names[0]); err != nil || got.Version != 1 {
		t.Fatalf("PostgreSQL has %+v, %v; want version 1, untouched", got, err)
	}
	if got := f.s.layer.Stats().Queued; got.Queued != 0 || got.Replayed != 0 {
		t.Fatalf("queue stats %+v, want nothing queued", got)
	}
}

func TestQueuedWritesReadYourWritesAndReplay(t *testing.T) {
	closedWithPending := make(chan int, 10)
	var f *queueFixture
	cfg := queueConfig()
	cfg.OnStateChange = func(from, to fallback.State) {
		if to == fallback.Closed && f != nil {
			q, _ := f.s.layer.Cache().QueueStats(context.Background())
			closedWithPending <- q.Pending
		}
	}
	f = newQueueFixture(t, cfg)
	names := seed(t, f.s, 3)
	ctx := context.Background()
	upd, _ := f.s.layer.Vendors().Get(ctx, names[0])
	parent, err := f.s.layer.WorkItems().Create(ctx, repository.WorkItem{Type: repository.WorkItemProject, Title: "p", Status: repository.WorkItemActive})
	if err != nil {
		t.Fatal(err)
	}
	doomed, err := f.s.layer.WorkItems().Create(ctx, repository.WorkItem{Type: repository.WorkItemTask, Title: "d", Status: repository.WorkItemActive, ParentID: &parent.ID})
	if err != nil {
		t.Fatal(err)
	}
	f.cacheItems(t, parent.ID, doomed.ID)
	f.down(t)

	qctx, prov := fallback.WithProvenance(fallback.WithWriteQueue(ctx))
	queued := func(what string) {
		t.Helper()
		if o := prov.Origin(); o.Source != fallback.SourceQueue || !o.Pending {
			t.Fatalf("%s: origin %+v, want SourceQueue and Pending", what, o)
		}
	}

	// Create: ID, version 1, timestamps.
	created, err := f.s.layer.Vendors().Create(qctx, repository.Vendor{Name: "queued-new", Status: repository.VendorOperational})
	if err != nil {
		t.Fatalf("queued Create: %v", err)
	}
	queued("create")
	if created.ID == uuid.Nil || created.Version != 1 || created.CreatedAt.IsZero() || created.UpdatedAt.IsZero() {
		t.Fatalf("queued Create returned %+v, want an ID, version 1 and timestamps", created)
	}
	// Update: version + 1, ID and CreatedAt kept.
	upd.Status = repository.VendorBroken
	updated, err := f.s.layer.Vendors().Update(qctx, upd)
	if err != nil {
		t.Fatalf("queued Update: %v", err)
	}
	queued("update")
	if updated.Version != upd.Version+1 || updated.ID != upd.ID || !updated.CreatedAt.Equal(upd.CreatedAt) || updated.Status != repository.VendorBroken {
		t.Fatalf("queued Update returned %+v, want version %d with ID and CreatedAt kept", updated, upd.Version+1)
	}
	// Delete: nil.
	if err := f.s.layer.Vendors().Delete(qctx, names[1]); err != nil {
		t.Fatalf("queued Delete: %v", err)
	}
	queued("delete")
	item, err := f.s.layer.WorkItems().Create(qctx, repository.WorkItem{Type: repository.WorkItemTask, Title: "child", Status: repository.WorkItemActive, ParentID: &parent.ID})
	if err != nil {
		t.Fatalf("queued work item Create: %v", err)
	}
	if item.Path != parent.ChildPath() || item.Depth != 1 || item.Version != 1 {
		t.Fatalf("queued work item %+v, want path %q depth 1 version 1", item, parent.ChildPath())
	}
	if err := f.s.layer.WorkItems().Delete(qctx, doomed.ID); err != nil {
		t.Fatalf("queued work item Delete: %v", err)
	}

	// Read-your-writes, marked pending.
	rctx, rprov := fallback.WithProvenance(ctx)
	if got, err := f.s.layer.Vendors().Get(rctx, names[0]); err != nil || got.Version != updated.Version || got.Status != repository.VendorBroken {
		t.Fatalf("Get after queued update: %+v, %v; want the pending version %d", got, err, updated.Version)
	}
	if o := rprov.Origin(); o.Source != fallback.SourceQueue || !o.Pending {
		t.Fatalf("Get of a pending key: origin %+v, want SourceQueue and Pending", o)
	}
	if _, err := f.s.layer.Vendors().Get(rctx, names[1]); !errors.Is(err, repository.ErrNotFound) || !rprov.Origin().Pending {
		t.Fatalf("Get after queued delete: %v (origin %+v), want ErrNotFound, pending", err, rprov.Origin())
	}
	if got, err := f.s.layer.Vendors().Get(rctx, "queued-new"); err != nil || got.ID != created.ID {
		t.Fatalf("Get after queued create: %+v, %v", got, err)
	}
	if got, err := f.s.layer.WorkItems().Get(rctx, doomed.ID); err != nil || got.DeletedAt == nil {
		t.Fatalf("Get of a work item with a pending delete: %+v, %v; want DeletedAt set", got, err)
	}
	list, err := f.s.layer.Vendors().List(rctx, repository.VendorFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, v := range list {
		listed = append(listed, v.Name)
	}
	if want := []string{"queued-new", names[0], names[2]}; fmt.Sprint(listed) != fmt.Sprint(want) {
		t.Fatalf("List from the cache: %v, want %v (pending create in, pending delete out)", listed, want)
	}
	if o := rprov.Origin(); !o.Pending {
		t.Fatalf("List with writes queued: origin %+v, want Pending", o)
	}
	if n := f.pending(t); n != 5 {
		t.Fatalf("%d writes pending, want 5", n)
	}

	f.up(t)
	if n := <-closedWithPending; n != 0 {
		t.Fatalf("the breaker closed with %d writes still queued; replay must come first", n)
	}
	if got, err := f.pgVendor(t, names[0]); err != nil || got.Version != updated.Version || got.Status != repository.VendorBroken {
		t.Fatalf("PostgreSQL after replay: %+v, %v; want the update at version %d", got, err, updated.Version)
	}
	if _, err := f.pgVendor(t, names[1]); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("deleted vendor after replay: %v, want ErrNotFound", err)
	}
	if got, err := f.pgVendor(t, "queued-new"); err != nil || got.ID != created.ID || got.Version != 1 {
		t.Fatalf("created vendor after replay: %+v, %v; want ID %s", got, err, created.ID)
	}
	if got, err := f.other.store.WorkItems().Get(ctx, item.ID); err != nil || got.Path != item.Path {
		t.Fatalf("created work item after replay: %+v, %v", got, err)
	}
	if got, err := f.other.store.WorkItems().Get(ctx, doomed.ID); err != nil || got.DeletedAt == nil {
		t.Fatalf("deleted work item after replay: %+v, %v", got, err)
	}
	if got, err := f.s.layer.Vendors().Get(rctx, names[0]); err != nil || rprov.Origin().Source != fallback.SourcePrimary || got.Version != updated.Version {
		t.Fatalf("Get after replay: %+v %v from %v, want the primary's row", got, err, rprov.Origin().Source)
	}
	st := f.s.layer.Stats().Queued
	if st.Queued != 5 || st.Replayed != 5 || st.DeadLettered != 0 {
		t.Fatalf("queue stats %+v, want 5 queued and replayed", st)
	}
	// The cache no longer marks anything pending: the next write-through
	// of a newer version lands.
	if _, e, err := f.s.cache.GetVendor(ctx, names[0]); err != nil || e.Pending {
		t.Fatalf("cache entry after replay: pending=%v, %v", e.Pending, err)
	}
}

func TestQueuedWritesSurviveARestart(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 3)
	f.down(t)
	queueUpdates(t, f.s.layer, names)
	// The application stops during the outage, and starts again.
	f.s.close()
	f.s = openStack(t, f.proxied, f.cachePath, queueConfig())
	if n := f.pending(t); n != 3 {
		t.Fatalf("%d writes pending after the restart, want 3", n)
	}
	if v, err := f.s.layer.Vendors().Get(ctx, names[2]); err != nil || v.Status != repository.VendorBroken {
		t.Fatalf("read-your-writes after the restart: %+v, %v", v, err)
	}
	// Its reads of pending keys never reach PostgreSQL; its replays do,
	// and they open the breaker, so that the prober takes over recovery.
	waitFor(t, 5*time.Second, "the replay's failures to open the breaker", func() bool { return f.s.layer.State() == fallback.Open })
	f.up(t)
	f.updatedOnce(t)
}

func TestReplayConflictsBecomeDeadLetters(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 2)
	contested, _ := f.s.layer.Vendors().Get(ctx, names[0])
	free, _ := f.s.layer.Vendors().Get(ctx, names[1])
	f.down(t)
	qctx := fallback.WithWriteQueue(ctx)

	// Two writes to the contested key, the second built on the first,
	// then one to another key.
	contested.Status = repository.VendorBroken
	first, err := f.s.layer.Vendors().Update(qctx, contested)
	if err != nil {
		t.Fatal(err)
	}
	first.ExtractorVersion = "2.0.0"
	if _, err := f.s.layer.Vendors().Update(qctx, first); err != nil {
		t.Fatal(err)
	}
	free.Status = repository.VendorBroken
	if _, err := f.s.layer.Vendors().Update(qctx, free); err != nil {
		t.Fatal(err)
	}
	// Meanwhile another instance moves the contested row on.
	theirs, _ := f.other.store.Vendors().Get(ctx, names[0])
	theirs.ExtractorVersion = "3.0.0"
	theirs, err = f.other.store.Vendors().Update(ctx, theirs)
	if err != nil {
		t.Fatal(err)
	}

	f.up(t)
	// The other key was not held up.
	if v, err := f.pgVendor(t, names[1]); err != nil || v.Status != repository.VendorBroken || v.Version != 2 {
		t.Fatalf("the uncontested write: %+v, %v; want applied", v, err)
	}
	// Nothing landed over the newer version.
	if v, err := f.pgVendor(t, names[0]); err != nil || v.Version != theirs.Version || v.ExtractorVersion != "3.0.0" {
		t.Fatalf("the contested row: %+v, %v; want theirs untouched", v, err)
	}
	dead, err := f.s.layer.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2 (the conflict and the write behind it): %+v", len(dead), dead)
	}
	if dead[0].Key != names[0] || dead[0].Op != repository.WriteUpdate || dead[0].BaseVersion != 1 ||
		!strings.Contains(dead[0].Err, "conflict") || dead[0].CurrentVendor == nil || dead[0].CurrentVendor.Version != theirs.Version {
		t.Fatalf("first dead letter %+v, want the conflict with PostgreSQL's row", dead[0])
	}
	if !strings.HasPrefix(dead[1].Err, "behind dead-lettered write "+dead[0].ID.String()) || dead[1].BaseVersion != 2 {
		t.Fatalf("second dead letter %+v, want it behind the first", dead[1])
	}
	seen := f.conflicts.all()
	if len(seen) != 2 || !errors.Is(seen[0].err, repository.ErrConflict) || !errors.Is(seen[1].err, repository.ErrConflict) {
		t.Fatalf("OnConflict calls: %+v, want 2 matching ErrConflict", seen)
	}
	var ce *repository.ConflictError
	if !errors.As(seen[0].err, &ce) || ce.Vendor == nil || ce.Vendor.Version != theirs.Version {
		t.Fatalf("OnConflict error %v, want a ConflictError with PostgreSQL's row", seen[0].err)
	}
	// The cache holds PostgreSQL's row, not the rejected write.
	if v, e, err := f.s.cache.GetVendor(ctx, names[0]); err != nil || e.Pending || v.ExtractorVersion != "3.0.0" {
		t.Fatalf("cache after the conflict: %+v pending=%v %v; want PostgreSQL's row", v, e.Pending, err)
	}
	q, _ := f.s.layer.Queue(ctx)
	if q.DeadLetters != 2 || q.Pending != 0 {
		t.Fatalf("queue status %+v", q)
	}
	if st := f.s.layer.Stats().Queued; st.Conflicts != 1 || st.DeadLettered != 2 || st.Replayed != 1 {
		t.Fatalf("queue stats %+v, want 1 conflict, 2 dead letters, 1 replayed", st)
	}

	// An operator discards one and retries the other, which conflicts again.
	if err := f.s.layer.Discard(ctx, dead[1].ID); err != nil {
		t.Fatal(err)
	}
	if err := f.s.layer.Discard(ctx, dead[1].ID); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("second Discard: %v, want ErrNotFound", err)
	}
	if err := f.s.layer.Retry(ctx, dead[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the retried write to be dead-lettered again", func() bool {
		return len(f.conflicts.all()) == 3
	})
	q, _ = f.s.layer.Queue(ctx)
	if q.DeadLetters != 1 || q.Pending != 0 {
		t.Fatalf("after retry: %+v, want the one dead letter back", q)
	}
}

func TestReplayOfCreatesAndDeletesOthersRaced(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 1)
	f.down(t)
	qctx := fallback.WithWriteQueue(ctx)
	if _, err := f.s.layer.Vendors().Create(qctx, repository.Vendor{Name: "taken", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.layer.Vendors().Delete(qctx, names[0]); err != nil {
		t.Fatal(err)
	}
	// Another instance takes the name and deletes the row first.
	theirs, err := f.other.store.Vendors().Create(ctx, repository.Vendor{Name: "taken", Status: repository.VendorBroken})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.other.store.Vendors().Delete(ctx, names[0]); err != nil {
		t.Fatal(err)
	}
	f.up(t)
	dead, _ := f.s.layer.DeadLetters(ctx)
	if len(dead) != 1 || dead[0].Op != repository.WriteCreate || dead[0].CurrentVendor == nil || dead[0].CurrentVendor.ID != theirs.ID {
		t.Fatalf("dead letters %+v, want the create with their row", dead)
	}
	if seen := f.conflicts.all(); len(seen) != 1 || !errors.Is(seen[0].err, repository.ErrAlreadyExists) {
		t.Fatalf("OnConflict: %+v, want one ErrAlreadyExists", seen)
	}
	if v, e, err := f.s.cache.GetVendor(ctx, "taken"); err != nil || e.Pending || v.ID != theirs.ID {
		t.Fatalf("cache: %+v %v %v, want their row", v, e, err)
	}
	// The delete of a row already gone is a success.
	if st := f.s.layer.Stats().Queued; st.Replayed != 1 || st.DeadLettered != 1 {
		t.Fatalf("stats %+v, want the delete replayed", st)
	}
}

func TestQueueLimit(t *testing.T) {
	cfg := queueConfig()
	cfg.MaxQueuedWrites = 3
	f := newQueueFixture(t, cfg)
	ctx := context.Background()
	f.down(t)
	qctx := fallback.WithWriteQueue(ctx)
	for i := range 3 {
		if _, err := f.s.layer.Vendors().Create(qctx, repository.Vendor{Name: fmt.Sprintf("q-%d", i), Status: repository.VendorOperational}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.s.layer.Vendors().Create(qctx, repository.Vendor{Name: "q-3", Status: repository.VendorOperational})
	if !errors.Is(err, repository.ErrUnavailable) || !strings.Contains(err.Error(), "full") {
		t.Fatalf("write past MaxQueuedWrites: %v, want ErrUnavailable saying the queue is full", err)
	}
	if _, err := f.s.layer.Vendors().Get(ctx, "q-3"); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("the refused write is readable: %v", err)
	}
	if n := f.pending(t); n != 3 {
		t.Fatalf("%d pending, want 3", n)
	}
	if st := f.s.layer.Stats().Queued; st.Full != 1 {
		t.Fatalf("stats %+v, want Full 1", st)
	}
	f.up(t)
	if _, err := f.pgVendor(t, "q-3"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("refused write in PostgreSQL: %v", err)
	}
	if _, err := f.pgVendor(t, "q-2"); err != nil {
		t.Fatal(err)
	}
}

// What cannot be queued fails as before, and says why; bad input is
// ErrInvalid and nothing is queued.
func TestWhatIsNotQueued(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 1)
	root, _ := f.s.layer.WorkItems().Create(ctx, repository.WorkItem{Type: repository.WorkItemProject, Title: "r", Status: repository.WorkItemActive})
	other, _ := f.s.layer.WorkItems().Create(ctx, repository.WorkItem{Type: repository.WorkItemProject, Title: "o", Status: repository.WorkItemActive})
	v, _ := f.s.layer.Vendors().Get(ctx, names[0])
	f.cacheItems(t, root.ID, other.ID)
	f.down(t)
	qctx := fallback.WithWriteQueue(ctx)

	if _, err := f.s.layer.Vendors().Create(qctx, repository.Vendor{Name: "BAD NAME"}); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("invalid create: %v, want ErrInvalid", err)
	}
	if _, err := f.s.layer.Vendors().Update(qctx, repository.Vendor{Name: "never-cached", Status: repository.VendorOperational, Version: 1}); !errors.Is(err, repository.ErrUnavailable) ||
		!strings.Contains(err.Error(), "not in the cache") {
		t.Fatalf("update of an uncached key: %v, want ErrUnavailable naming the reason", err)
	} else if nq := (*fallback.NotQueuedError)(nil); !errors.As(err, &nq) || !strings.Contains(nq.Reason, `"never-cached" is not in the cache`) {
		t.Fatalf("update of an uncached key: %v, want a *NotQueuedError with the reason", err)
	}
	moved := root
	moved.ParentID = &other.ID
	if _, err := f.s.layer.WorkItems().Update(qctx, moved); !errors.Is(err, repository.ErrUnavailable) || !strings.Contains(err.Error(), "move") {
		t.Fatalf("queued move: %v, want ErrUnavailable", err)
	}
	stale := v
	stale.Version = 0
	if _, err := f.s.layer.Vendors().Update(qctx, stale); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("version 0: %v, want ErrInvalid", err)
	}
	// A version the cache knows is behind: the store would say conflict.
	v.Status = repository.VendorBroken
	if _, err := f.s.layer.Vendors().Update(qctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.layer.Vendors().Update(qctx, v); !errors.Is(err, repository.ErrConflict) {
		t.Fatalf("second update on the same base: %v, want ErrConflict", err)
	}
	if n := f.pending(t); n != 1 {
		t.Fatalf("%d pending, want only the one good write", n)
	}
}

// A write that may have reached PostgreSQL is ErrOutcomeUnknown and is
// never queued: a queue would apply it a second time.
func TestOutcomeUnknownIsNotQueued(t *testing.T) {
	cfg := queueConfig()
	cfg.PrimaryTimeout = 300 * time.Millisecond
	cfg.ConsecutiveFailures = 100
	f := newQueueFixture(t, cfg)
	ctx := context.Background()
	names := seed(t, f.s, 1)
	v, _ := f.s.layer.Vendors().Get(ctx, names[0])
	// Warm a connection, then make the server's replies late.
	if err := f.proxy.Latency(time.Second, 0); err != nil {
		t.Fatal(err)
	}
	v.Status = repository.VendorBroken
	_, err := f.s.layer.Vendors().Update(fallback.WithWriteQueue(ctx), v)
	if !errors.Is(err, repository.ErrOutcomeUnknown) {
		t.Fatalf("update whose reply was late: %v, want ErrOutcomeUnknown", err)
	}
	if n := f.pending(t); n != 0 {
		t.Fatalf("%d writes queued after ErrOutcomeUnknown, want 0", n)
	}
}

// A replay that cannot be recorded (the applied-writes table is missing)
// keeps every write; the breaker still closes, reads of the pending keys
// still answer the pending state, a later write to such a key queues
// behind instead of overtaking, and the replay resumes once it can.
func TestReplayKeepsWritesOnTransientFailure(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 2)
	v, _ := f.s.layer.Vendors().Get(ctx, names[0])
	f.down(t)
	qctx := fallback.WithWriteQueue(ctx)
	v.Status = repository.VendorBroken
	v2, err := f.s.layer.Vendors().Update(qctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.other.store.Pool().Exec(ctx, `ALTER TABLE pgfallback_applied_writes RENAME TO aw_away`); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the breaker to close without the table", func() bool { return f.s.layer.State() == fallback.Closed })
	waitFor(t, 5*time.Second, "a failed replay", func() bool { return f.s.layer.Stats().Queued.ReplayFailures > 0 })
	if n := f.pending(t); n != 1 {
		t.Fatalf("%d pending after failed replays, want the write kept", n)
	}
	rctx, prov := fallback.WithProvenance(ctx)
	if got, err := f.s.layer.Vendors().Get(rctx, names[0]); err != nil || got.Version != v2.Version || prov.Origin().Source != fallback.SourceQueue {
		t.Fatalf("read of a pending key with the breaker closed: %+v %v from %v; want the pending state", got, err, prov.Origin().Source)
	}
	// The next write to the key queues behind the first.
	v2.ExtractorVersion = "4.0.0"
	if _, err := f.s.layer.Vendors().Update(qctx, v2); err != nil {
		t.Fatal(err)
	}
	if n := f.pending(t); n != 2 {
		t.Fatalf("%d pending, want the second write queued behind the first", n)
	}
	if dead, _ := f.s.layer.DeadLetters(ctx); len(dead) != 0 {
		t.Fatalf("a transient failure made dead letters: %+v", dead)
	}
	if _, err := f.other.store.Pool().Exec(ctx, `ALTER TABLE aw_away RENAME TO pgfallback_applied_writes`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the replay to resume", func() bool { return f.pending(t) == 0 })
	if got, err := f.pgVendor(t, names[0]); err != nil || got.Version != 3 || got.ExtractorVersion != "4.0.0" {
		t.Fatalf("PostgreSQL after the resumed replay: %+v, %v; want both writes in order", got, err)
	}
}

// Two layers on one cache file share its queue: both replay it, and the
// write IDs keep every write applied exactly once.
func TestTwoLayersOnOneQueueApplyEachWriteOnce(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	const n = 40
	names := seed(t, f.s, n)
	second := openStack(t, f.proxied, f.cachePath, queueConfig())
	f.down(t)
	waitFor(t, 5*time.Second, "the second layer's breaker to open", func() bool {
		second.layer.Vendors().List(ctx, repository.VendorFilter{Limit: 1})
		return second.layer.State() == fallback.Open
	})
	qctx := fallback.WithWriteQueue(ctx)
	for i, name := range names {
		l := f.s.layer
		if i%2 == 1 {
			l = second.layer
		}
		v, err := l.Vendors().Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		v.Status = repository.VendorBroken
		if _, err := l.Vendors().Update(qctx, v); err != nil {
			t.Fatal(err)
		}
	}
	f.up(t)
	waitFor(t, 15*time.Second, "the second layer to recover", func() bool { return second.layer.State() == fallback.Closed })
	f.updatedOnce(t)
	var applied int
	if err := f.other.store.Pool().QueryRow(ctx, `SELECT count(*) FROM pgfallback_applied_writes`).Scan(&applied); err != nil || applied != n {
		t.Fatalf("%d writes recorded (%v), want %d", applied, err, n)
	}
	a, b := f.s.layer.Stats().Queued, second.layer.Stats().Queued
	t.Logf("replayed by the first layer: %d (%d already applied), by the second: %d (%d already applied)",
		a.Replayed, a.AlreadyApplied, b.Replayed, b.AlreadyApplied)
}

// Close stops the replayer even in the middle of a slow replay, and
// leaves the rest queued.
func TestCloseDuringReplay(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	names := seed(t, f.s, 30)
	f.down(t)
	queueUpdates(t, f.s.layer, names)
	f.s.close()
	before := layerGoroutines() // the other instance's
	if err := f.proxy.Latency(20*time.Millisecond, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	s := openStack(t, f.proxied, f.cachePath, queueConfig())
	waitFor(t, 10*time.Second, "the replay to start", func() bool { return s.layer.Stats().Queued.Replayed > 0 })
	start := time.Now()
	s.layer.Close()
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %s during a replay", took)
	}
	s.cache.Close()
	s.store.Close()
	waitFor(t, 5*time.Second, "the layer's goroutines to stop", func() bool { return layerGoroutines() <= before })
	if err := f.proxy.Clear(); err != nil {
		t.Fatal(err)
	}
	f.s = openStack(t, f.proxied, f.cachePath, queueConfig())
	f.waitReplayed(t)
	f.updatedOnce(t)
}

// layerGoroutines counts the goroutines running the fallback package's
// code: a leak check that Toxiproxy's and pgx's own goroutines, which come
// and go with connections, cannot disturb.
func layerGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "pgfallback/fallback.(") {
			count++
		}
	}
	return count
}

// A key's whole life during one outage — created, updated, deleted,
// created again (a new vendor under the old name), updated — replays to
// the same end, and a work item created under a parent that is itself
// queued lands under it.
func TestQueuedLifeOfAKey(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	f.down(t)
	qctx := fallback.WithWriteQueue(ctx)
	vendors := f.s.layer.Vendors()
	first, err := vendors.Create(qctx, repository.Vendor{Name: "phoenix", Status: repository.VendorOperational})
	if err != nil {
		t.Fatal(err)
	}
	first.Status = repository.VendorBroken
	if _, err := vendors.Update(qctx, first); err != nil {
		t.Fatal(err)
	}
	if err := vendors.Delete(qctx, "phoenix"); err != nil {
		t.Fatal(err)
	}
	if err := vendors.Delete(qctx, "phoenix"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("deleting it again: %v, want ErrNotFound", err)
	}
	second, err := vendors.Create(qctx, repository.Vendor{Name: "phoenix", Status: repository.VendorOperational, ExtractorVersion: "2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID {
		t.Fatal("the second vendor has the first one's ID")
	}
	second.ExtractorVersion = "2.1.0"
	last, err := vendors.Update(qctx, second)
	if err != nil {
		t.Fatal(err)
	}
	project, err := f.s.layer.WorkItems().Create(qctx, repository.WorkItem{Type: repository.WorkItemProject, Title: "p", Status: repository.WorkItemActive})
	if err != nil {
		t.Fatal(err)
	}
	task, err := f.s.layer.WorkItems().Create(qctx, repository.WorkItem{Type: repository.WorkItemTask, Title: "t", Status: repository.WorkItemActive, ParentID: &project.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := vendors.Get(ctx, "phoenix"); err != nil || got.ID != second.ID || got.Version != 2 {
		t.Fatalf("read during the outage: %+v, %v; want the second vendor at version 2", got, err)
	}
	f.up(t)
	got, err := f.pgVendor(t, "phoenix")
	if err != nil || got.ID != second.ID || got.Version != last.Version || got.ExtractorVersion != "2.1.0" {
		t.Fatalf("PostgreSQL after replay: %+v, %v; want the second vendor at version %d", got, err, last.Version)
	}
	pgTask, err := f.other.store.WorkItems().Get(ctx, task.ID)
	if err != nil || pgTask.ParentID == nil || *pgTask.ParentID != project.ID || pgTask.Path != task.Path || pgTask.Depth != 1 {
		t.Fatalf("task after replay: %+v, %v; want under %s at path %q", pgTask, err, project.ID, task.Path)
	}
	if dead, _ := f.s.layer.DeadLetters(ctx); len(dead) != 0 {
		t.Fatalf("dead letters: %+v", dead)
	}
	if st := f.s.layer.Stats().Queued; st.Replayed != 7 {
		t.Fatalf("stats %+v, want 7 replayed", st)
	}
}

var _ fallback.AppliedWritePruner = (*pgstore.Store)(nil)

// The layer prunes PostgreSQL's record of applied writes past
// AppliedWriteRetention, and keeps the younger ones.
func TestAppliedWritesArePruned(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	pool := f.other.store.Pool()
	old, young := uuid.New(), uuid.New()
	if _, err := pool.Exec(ctx, `INSERT INTO pgfallback_applied_writes (id, entity, key, op, applied_at) VALUES
		($1, 'vendor', 'a', 'update', now() - interval '8 days'), ($2, 'vendor', 'b', 'update', now() - interval '6 days')`, old, young); err != nil {
		t.Fatal(err)
	}
	// A new layer prunes on its replayer's first tick (the fixture's own
	// layers may be first: every instance prunes).
	s := openStack(t, f.proxied, filepath.Join(t.TempDir(), "c.db"), queueConfig())
	waitFor(t, 10*time.Second, "the old record to be pruned", func() bool {
		return s.layer.Stats().Queued.Pruned+f.s.layer.Stats().Queued.Pruned+f.other.layer.Stats().Queued.Pruned >= 1
	})
	var ids []uuid.UUID
	rows, err := pool.Query(ctx, `SELECT id FROM pgfallback_applied_writes`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if rows.Err() != nil || len(ids) != 1 || ids[0] != young {
		t.Fatalf("records left: %v (%v), want only the 6-day-old one", ids, rows.Err())
	}
}

// A queue longer than WarmTimeout can replay does not keep the breaker
// open: it closes with writes still pending, which keep answering their
// pending state, and the replayer finishes in the background.
func TestLongReplayDoesNotHoldTheBreakerOpen(t *testing.T) {
	cfg := queueConfig()
	cfg.WarmTimeout = 300 * time.Millisecond
	cfg.ReplayBatch = 1 // a transaction per write: a replay long enough to outlast WarmTimeout
	f := newQueueFixture(t, cfg)
	ctx := context.Background()
	names := seed(t, f.s, 120)
	f.down(t)
	queueUpdates(t, f.s.layer, names)
	if err := f.proxy.Latency(5*time.Millisecond, 0); err != nil { // ~4 round trips a write: > 2 s in all
		t.Fatal(err)
	}
	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	var pendingAtClose int
	waitFor(t, 10*time.Second, "the breaker to close", func() bool {
		if f.s.layer.State() != fallback.Closed {
			return false
		}
		pendingAtClose = f.pending(t)
		return true
	})
	if pendingAtClose == 0 {
		t.Fatal("the whole queue was replayed before the breaker closed: the test needs a longer one")
	}
	rctx, prov := fallback.WithProvenance(ctx)
	last := names[len(names)-1]
	if v, err := f.s.layer.Vendors().Get(rctx, last); err != nil || v.Version != 2 || v.Status != repository.VendorBroken {
		t.Fatalf("a key read while its write waits: %+v %v (%v)", v, err, prov.Origin().Source)
	}
	t.Logf("breaker closed with %d of %d writes pending", pendingAtClose, len(names))
	waitFor(t, 30*time.Second, "the rest of the replay", func() bool { return f.pending(t) == 0 })
	f.updatedOnce(t)
}

// A batch that outlasts PrimaryTimeout (here one of its rows is locked by
// another session: a slow server, not a dead one) is rolled back, and the
// replay goes on in smaller batches: the writes ahead of the stuck one are
// applied while it waits, each exactly once.
func TestReplayBatchThatOutlastsTheTimeoutShrinks(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 20)
	f.down(t)
	queueUpdates(t, f.s.layer, names)
	const stuck = 15
	lock, err := f.other.store.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, `SELECT 1 FROM vendors WHERE name = $1 FOR UPDATE`, names[stuck]); err != nil {
		t.Fatal(err)
	}
	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	applied := func() int {
		var n int
		if err := f.other.store.Pool().QueryRow(ctx, `SELECT count(*) FROM vendors WHERE version = 2`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, 20*time.Second, "the writes ahead of the locked row", func() bool { return applied() == stuck })
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	f.waitReplayed(t)
	f.updatedOnce(t)
	if q := f.s.layer.Stats().Queued; q.ReplayTimedOut == 0 {
		t.Errorf("Stats().Queued %+v: no write counted in a batch that timed out", q)
	}
}

// A write PostgreSQL rejects as invalid at replay — a work item created
// under a parent another instance deleted meanwhile — is dead-lettered
// like a conflict, with the writes behind it for its key.
func TestReplayRejectedAsInvalid(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	parent, err := f.s.layer.WorkItems().Create(ctx, repository.WorkItem{Type: repository.WorkItemProject, Title: "p", Status: repository.WorkItemActive})
	if err != nil {
		t.Fatal(err)
	}
	f.cacheItems(t, parent.ID)
	f.down(t)
	qctx := fallback.WithWriteQueue(ctx)
	child, err := f.s.layer.WorkItems().Create(qctx, repository.WorkItem{Type: repository.WorkItemTask, Title: "c", Status: repository.WorkItemActive, ParentID: &parent.ID})
	if err != nil {
		t.Fatal(err)
	}
	child.Title = "c2"
	if _, err := f.s.layer.WorkItems().Update(qctx, child); err != nil {
		t.Fatal(err)
	}
	if err := f.other.store.WorkItems().Delete(ctx, parent.ID); err != nil {
		t.Fatal(err)
	}
	f.up(t)
	dead, err := f.s.layer.DeadLetters(ctx)
	if err != nil || len(dead) != 2 || dead[0].Op != repository.WriteCreate || dead[1].Op != repository.WriteUpdate {
		t.Fatalf("dead letters %+v, %v; want the create and the update behind it", dead, err)
	}
	if seen := f.conflicts.all(); len(seen) != 2 || !errors.Is(seen[0].err, repository.ErrInvalid) || !errors.Is(seen[1].err, repository.ErrInvalid) {
		t.Fatalf("OnConflict: %+v, want two matching ErrInvalid", seen)
	}
	if _, err := f.other.store.WorkItems().Get(ctx, child.ID); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("the child in PostgreSQL: %v, want none", err)
	}
	// The cache no longer shows the rejected child.
	if _, _, err := f.s.cache.GetWorkItem(ctx, child.ID); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("the child in the cache: %v, want gone", err)
	}
}
