package fallback

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/mock"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// fakeDB is an in-memory primary whose health a test controls: while fail
// holds an error, every call (Ping included) returns it; while hang is set,
// every call blocks until its context ends.
type fakeDB struct {
	mu      sync.Mutex
	vendors map[string]repository.Vendor
	items   map[uuid.UUID]repository.WorkItem

	fail atomic.Pointer[error]
	hang atomic.Bool
	// readOnly: reads answer, writes fail with SQLSTATE 25006, as on a
	// server with default_transaction_read_only on; diskFull: with 53100,
	// as on one whose disk is full.
	readOnly, diskFull atomic.Bool
	// commitsHang: reads answer, writes wait until their deadline, as on
	// a server whose commits wait for a synchronous replica that is gone.
	commitsHang atomic.Bool
	// afterRead, if set (before the calls start), runs in a vendor Get
	// after the row was read and before it is returned.
	afterRead func(name string)
	// afterReadItem is afterRead for a work item Get.
	afterReadItem func(id uuid.UUID)
	calls         atomic.Int64 // repository calls, not pings
	writes        atomic.Int64 // of those, writes
	pings         atomic.Int64
}

func newFakeDB() *fakeDB {
	return &fakeDB{vendors: map[string]repository.Vendor{}, items: map[uuid.UUID]repository.WorkItem{}}
}

func (f *fakeDB) down(err error) { f.fail.Store(&err) }
func (f *fakeDB) up()            { f.fail.Store(nil) }

// enter is called at the start of every fake call.
func (f *fakeDB) enter(ctx context.Context) error {
	if f.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if p := f.fail.Load(); p != nil {
		return *p
	}
	return nil
}

// enterWrite is enter for a call that writes.
func (f *fakeDB) enterWrite(ctx context.Context, what string) error {
	f.writes.Add(1)
	if err := f.enter(ctx); err != nil {
		return err
	}
	switch {
	case f.commitsHang.Load():
		<-ctx.Done()
		return fmt.Errorf("fake: %w", ctx.Err())
	case f.readOnly.Load():
		return fmt.Errorf("fake: %w", &pgconn.PgError{Severity: "ERROR", Code: "25006",
			Message: "cannot execute " + what + " in a read-only transaction"})
	case f.diskFull.Load():
		return fmt.Errorf("fake: %w", &pgconn.PgError{Severity: "ERROR", Code: "53100",
			Message: `could not extend file "base/5/16391": No space left on device`})
	}
	return nil
}

func (f *fakeDB) put(v repository.Vendor) repository.Vendor {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v.Version == 0 {
		v.Version = 1
	}
	if v.ID == uuid.Nil {
		v.ID = uuid.New()
	}
	v.Metadata = map[string]any{}
	f.vendors[v.Name] = v
	return v
}

// putItem stores w at version 1 (an ID when it has none) under parent, if
// given, and returns it.
func (f *fakeDB) putItem(title string, parent *repository.WorkItem) repository.WorkItem {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now().UTC()
	w := repository.WorkItem{ID: uuid.New(), Version: 1, Type: repository.WorkItemTask, Title: title,
		Status: repository.WorkItemActive, CreatedAt: now, UpdatedAt: now}
	if parent != nil {
		w.ParentID, w.Path, w.Depth = &parent.ID, parent.ChildPath(), parent.Depth+1
	}
	f.items[w.ID] = w
	return w
}

func (f *fakeDB) primary() *mock.Primary {
	p := &mock.Primary{}
	p.PingFn = func(ctx context.Context) error {
		f.pings.Add(1)
		return f.enter(ctx)
	}
	p.VendorRepo.GetFn = func(ctx context.Context, name string) (repository.Vendor, error) {
		f.calls.Add(1)
		if err := f.enter(ctx); err != nil {
			return repository.Vendor{}, err
		}
		f.mu.Lock()
		v, ok := f.vendors[name]
		f.mu.Unlock()
		if !ok {
			return repository.Vendor{}, repository.ErrNotFound
		}
		if f.afterRead != nil {
			f.afterRead(name)
		}
		return v, nil
	}
	p.VendorRepo.ListFn = func(ctx context.Context, flt repository.VendorFilter) ([]repository.Vendor, error) {
		f.calls.Add(1)
		if err := f.enter(ctx); err != nil {
			return nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		out := []repository.Vendor{}
		for _, v := range f.vendors {
			out = append(out, v)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		out = out[min(flt.Offset, len(out)):]
		if flt.Limit > 0 {
			out = out[:min(flt.Limit, len(out))]
		}
		return out, nil
	}
	p.VendorRepo.CreateFn = func(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
		f.calls.Add(1)
		if err := f.enterWrite(ctx, "INSERT"); err != nil {
			return repository.Vendor{}, err
		}
		f.mu.Lock()
		_, exists := f.vendors[v.Name]
		f.mu.Unlock()
		if exists {
			return repository.Vendor{}, repository.ErrAlreadyExists
		}
		v.Version = 1
		return f.put(v), nil
	}
	p.VendorRepo.UpdateFn = func(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
		f.calls.Add(1)
		if err := f.enterWrite(ctx, "UPDATE"); err != nil {
			return repository.Vendor{}, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		cur, ok := f.vendors[v.Name]
		switch {
		case !ok:
			return repository.Vendor{}, repository.ErrNotFound
		case cur.Version != v.Version:
			return repository.Vendor{}, repository.ErrConflict
		}
		cur.Status, cur.Version = v.Status, cur.Version+1
		f.vendors[v.Name] = cur
		return cur, nil
	}
	p.VendorRepo.DeleteFn = func(ctx context.Context, name string) error {
		f.calls.Add(1)
		if err := f.enterWrite(ctx, "DELETE"); err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.vendors[name]; !ok {
			return repository.ErrNotFound
		}
		delete(f.vendors, name)
		return nil
	}
	p.WorkItemRepo.GetFn = func(ctx context.Context, id uuid.UUID) (repository.WorkItem, error) {
		f.calls.Add(1)
		if err := f.enter(ctx); err != nil {
			return repository.WorkItem{}, err
		}
		f.mu.Lock()
		w, ok := f.items[id]
		f.mu.Unlock()
		if !ok {
			return repository.WorkItem{}, repository.ErrNotFound
		}
		if f.afterReadItem != nil {
			f.afterReadItem(id)
		}
		return w, nil
	}
	p.WorkItemRepo.DeleteFn = func(ctx context.Context, id uuid.UUID) error {
		f.calls.Add(1)
		if err := f.enterWrite(ctx, "UPDATE"); err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.items[id]; !ok {
			return repository.ErrNotFound
		}
		// A soft delete of the item and its live descendants, as the store's.
		now := time.Now().UTC()
		for k, it := range f.items {
			if (k == id || strings.Contains(it.Path, id.String())) && it.DeletedAt == nil {
				it.DeletedAt, it.Version = &now, it.Version+1
				f.items[k] = it
			}
		}
		return nil
	}
	p.WorkItemRepo.ListFn = func(ctx context.Context, flt repository.WorkItemFilter) ([]repository.WorkItem, error) {
		f.calls.Add(1)
		if err := f.enter(ctx); err != nil {
			return nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		out := []repository.WorkItem{}
		for _, w := range f.items {
			out = append(out, w)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID.String() < out[j].ID.String() })
		out = out[min(flt.Offset, len(out)):]
		if flt.Limit > 0 {
			out = out[:min(flt.Limit, len(out))]
		}
		return out, nil
	}
	return p
}

// clock is a settable time source for the cache.
type clock struct{ now atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.now.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.now.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.now.Add(int64(d)) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestLayer builds a Layer over db and a real SQLite cache in a temp
// dir. Unset Config durations get test-friendly values.
func newTestLayer(t testing.TB, db *fakeDB, cfg Config, opts ...sqlitecache.Option) (*Layer, *sqlitecache.Cache) {
	t.Helper()
	opts = append([]sqlitecache.Option{sqlitecache.WithCleanupInterval(0), sqlitecache.WithLogger(nil)}, opts...)
	cache, err := sqlitecache.Open(filepath.Join(t.TempDir(), "cache.db"), opts...)
	if err != nil {
		t.Fatalf("open cache: %v", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = time.Hour // tests that want recovery set it
	}
	l, err := New(db.primary(), cache, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		l.Close()
		cache.Close()
	})
	return l, cache
}

// eventually polls cond every few milliseconds until it holds or the
// deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func flush(t *testing.T, l *Layer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}
