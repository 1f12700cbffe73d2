package sqlitecache

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The feed position survives a restart (it is in the file), reads back on a
// read-only open, and ClearAll keeps the cursor but ends a mirror.
func TestFeedStateSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cache.db")
	c, err := Open(path, WithCleanupInterval(0), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.FeedState(ctx); err != nil || s != (FeedState{}) {
		t.Fatalf("a new cache's feed state: %+v, %v", s, err)
	}
	asOf := time.Date(2026, 11, 25, 12, 3, 41, 500, time.UTC)
	want := FeedState{Cursor: "c1:42:100:105:101", AsOf: asOf, Mirror: true}
	if err := c.SetFeedState(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := c.SetVendor(ctx, testVendor("acme", 1)); err != nil {
		t.Fatal(err)
	}
	c.Close()

	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ro.FeedState(ctx); err != nil || got != want {
		t.Fatalf("read-only feed state %+v, %v; want %+v", got, err, want)
	}
	ro.Close()

	c, err = Open(path, WithCleanupInterval(0), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, err := c.ClearAll(ctx); err != nil || n != 1 {
		t.Fatalf("ClearAll: %d, %v; want the one entry", n, err)
	}
	got, err := c.FeedState(ctx)
	if err != nil || got.Cursor != want.Cursor || !got.AsOf.Equal(asOf) || got.Mirror {
		t.Fatalf("after ClearAll: %+v, %v; want the cursor kept and no mirror", got, err)
	}
}

// A resync under way is recorded in place of the cursor, and read back
// after a reopen; the state that ends it clears it.
func TestFeedStateRecordsAnUnfinishedResync(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cache.db")
	c, err := Open(path, WithCleanupInterval(0), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 12, 3, 4, 0, 0, 123, time.UTC)
	if err := c.SetFeedState(ctx, FeedState{ResyncSince: since}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c, err = Open(path, WithCleanupInterval(0), WithLogger(nil)); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := c.FeedState(ctx); err != nil || got != (FeedState{ResyncSince: since}) {
		t.Fatalf("after a reopen: %+v, %v; want the resync's start alone", got, err)
	}
	done := FeedState{Cursor: "c1:42:100:105:101"}
	if err := c.SetFeedState(ctx, done); err != nil {
		t.Fatal(err)
	}
	if got, err := c.FeedState(ctx); err != nil || got != done {
		t.Fatalf("after the resync: %+v, %v; want %+v", got, err, done)
	}
}

func TestCachedKeys(t *testing.T) {
	ctx := context.Background()
	c, _ := openTest(t)
	var names []string
	for i := range 1200 { // more than one chunk of parameters
		names = append(names, "v"+uuid.NewString()[:8]+string(rune('a'+i%26)))
	}
	// Keys no vendor may have, as a log written by hand could name: asked
	// about (JSON escapes them), never found.
	names = append(names, `o'brien "q" \ café`, "tab\there", "")
	for _, n := range names[:3] {
		if err := c.SetVendor(ctx, testVendor(n, 1)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.CachedVendorNames(ctx, names)
	slices.Sort(got)
	want := slices.Clone(names[:3])
	slices.Sort(want)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("CachedVendorNames: %v, %v; want %v", got, err, want)
	}
	w := testWorkItem(1)
	if err := c.SetWorkItem(ctx, w); err != nil {
		t.Fatal(err)
	}
	ids, err := c.CachedWorkItemIDs(ctx, []uuid.UUID{uuid.New(), w.ID})
	if err != nil || len(ids) != 1 || ids[0] != w.ID {
		t.Fatalf("CachedWorkItemIDs: %v, %v", ids, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got, err := c.CachedVendorNames(cancelled, names[:1]); !errors.Is(err, context.Canceled) {
		t.Fatalf("CachedVendorNames with a cancelled context: %v, %v; want context.Canceled", got, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.CachedVendorNames(ctx, names[:1]); !errors.Is(err, ErrClosed) {
		t.Fatalf("CachedVendorNames after Close: %v, %v; want ErrClosed", got, err)
	}
}
