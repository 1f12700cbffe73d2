package sqlitecache

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openTest opens a cache in a fresh temporary directory with a fake clock
// and no background cleanup, and closes it when the test ends.
func openTest(tb testing.TB, opts ...Option) (*Cache, *fakeClock) {
	tb.Helper()
	clk := newFakeClock()
	path := filepath.Join(tb.TempDir(), "cache.db")
	base := []Option{WithClock(clk.Now), WithCleanupInterval(0), WithLogger(discardLogger())}
	c, err := Open(path, append(base, opts...)...)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c, clk
}

// metadata1K is about 1 KB of JSON metadata of the usual shapes.
func metadata1K() map[string]any {
	m := map[string]any{
		"region":   "eu-west-1",
		"retries":  float64(3),
		"enabled":  true,
		"ratio":    0.75,
		"tags":     []any{"alpha", "beta", "gamma", float64(42)},
		"owner":    map[string]any{"team": "data-platform", "oncall": "alice@example.com"},
		"nothing":  nil,
		"endpoint": "https://vendor.example.com/api/v2/extract",
	}
	for i := range 20 {
		m[fmt.Sprintf("field_%02d", i)] = fmt.Sprintf("value number %d with some padding text", i)
	}
	return m
}

func testVendor(name string, version int64) repository.Vendor {
	t := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	return repository.Vendor{
		ID:               uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)),
		Name:             name,
		Status:           repository.VendorOperational,
		Version:          version,
		ExtractorVersion: "2.3.1",
		Metadata:         metadata1K(),
		CreatedAt:        t,
		UpdatedAt:        t.Add(time.Hour),
		CreatedBy:        "tester",
	}
}

func testWorkItem(version int64) repository.WorkItem {
	t := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	return repository.WorkItem{
		ID:         uuid.Must(uuid.NewV7()),
		Version:    version,
		Type:       repository.WorkItemTask,
		Title:      "Write the cache",
		Status:     repository.WorkItemActive,
		BranchName: "feature/cache",
		CommitHash: "0123456789abcdef0123456789abcdef01234567",
		Metadata:   metadata1K(),
		CreatedAt:  t,
		UpdatedAt:  t,
		CreatedBy:  "tester",
	}
}

var bg = context.Background()
