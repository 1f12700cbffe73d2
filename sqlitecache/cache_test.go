package sqlitecache

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

func TestOpenDefaultPathCreatesDirectory(t *testing.T) {
	t.Chdir(t.TempDir())
	c, err := Open("", WithCleanupInterval(0), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Path() != DefaultPath {
		t.Errorf("Path() = %q, want %q", c.Path(), DefaultPath)
	}
	if _, err := os.Stat(DefaultPath); err != nil {
		t.Errorf("default file not created: %v", err)
	}
	if c.VendorTTL() != DefaultTTL || c.WorkItemTTL() != 30*time.Minute {
		t.Errorf("TTLs = %v, %v; want 30m", c.VendorTTL(), c.WorkItemTTL())
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	for _, opt := range []Option{WithTTL(0), WithVendorTTL(-time.Second), WithWorkItemTTL(0), WithMemoSize(-1), WithMaxReaders(0)} {
		c, err := Open(filepath.Join(dir, "x.db"), opt, WithCleanupInterval(0))
		if !errors.Is(err, repository.ErrInvalid) {
			t.Errorf("Open with bad option: err = %v, want ErrInvalid", err)
		}
		if c != nil {
			c.Close()
		}
	}
}

func TestVendorRoundTripAndEntry(t *testing.T) {
	c, clk := openTest(t)
	want := testVendor("acme", 3)
	if err := c.SetVendor(bg, want); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	got, e, err := c.GetVendor(bg, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetVendor = %+v\nwant %+v", got, want)
	}
	if !e.CachedAt.Equal(clk.Now().Add(-time.Minute)) || e.Age != time.Minute || e.Stale {
		t.Errorf("entry = %+v", e)
	}
	if !e.ExpiresAt.Equal(e.CachedAt.Add(DefaultTTL)) {
		t.Errorf("ExpiresAt = %v", e.ExpiresAt)
	}
}

func TestWorkItemRoundTrip(t *testing.T) {
	c, _ := openTest(t)
	parent := uuid.Must(uuid.NewV7())
	del := time.Date(2026, 2, 3, 4, 5, 6, 7000, time.UTC)
	want := testWorkItem(2)
	want.ParentID = &parent
	want.Path = parent.String()
	want.Depth = 1
	want.DeletedAt = &del
	if err := c.SetWorkItem(bg, want); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second Get is served from the memo
		got, _, err := c.GetWorkItem(bg, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("GetWorkItem = %+v\nwant %+v", got, want)
		}
	}
}

func TestMissAndBadKeys(t *testing.T) {
	c, _ := openTest(t)
	if _, _, err := c.GetVendor(bg, "nobody"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("GetVendor miss: %v", err)
	}
	if _, _, err := c.GetWorkItem(bg, uuid.New()); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("GetWorkItem miss: %v", err)
	}
	var ve *repository.ValidationError
	if _, _, err := c.GetVendor(bg, "Bad Name"); !errors.As(err, &ve) || ve.Field != "Name" {
		t.Errorf("GetVendor bad name: %v", err)
	}
	if err := c.DeleteVendor(bg, ""); !errors.Is(err, repository.ErrInvalid) {
		t.Errorf("DeleteVendor bad name: %v", err)
	}
	s, _ := c.Stats(bg)
	if s.Misses != 2 {
		t.Errorf("Misses = %d, want 2", s.Misses)
	}
}

func TestReturnedValuesAreDeepCopies(t *testing.T) {
	c, _ := openTest(t)
	v := testVendor("acme", 1)
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		got, _, err := c.GetVendor(bg, "acme")
		if err != nil {
			t.Fatal(err)
		}
		got.Metadata["region"] = "mutated"
		got.Metadata["owner"].(map[string]any)["team"] = "mutated"
		got.Metadata["tags"].([]any)[0] = "mutated"
	}
	got, _, _ := c.GetVendor(bg, "acme")
	if !reflect.DeepEqual(got.Metadata, v.Metadata) {
		t.Errorf("cached metadata changed through a returned value: %v", got.Metadata)
	}
}

func TestMetadataNormalizedLikeJSON(t *testing.T) {
	c, _ := openTest(t)
	v := testVendor("acme", 1)
	type point struct{ X, Y int }
	v.Metadata = map[string]any{"int": 7, "int64": int64(1) << 40, "struct": point{1, 2}, "strs": []string{"a"}, "neg0": 0.5}
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	got, _, _ := c.GetVendor(bg, "acme")
	want := map[string]any{"int": float64(7), "int64": float64(int64(1) << 40),
		"struct": map[string]any{"X": float64(1), "Y": float64(2)}, "strs": []any{"a"}, "neg0": 0.5}
	if !reflect.DeepEqual(got.Metadata, want) {
		t.Errorf("metadata = %#v\nwant %#v", got.Metadata, want)
	}
	v.Metadata = nil
	v.Version = 2
	_ = c.SetVendor(bg, v)
	if got, _, _ := c.GetVendor(bg, "acme"); got.Metadata != nil {
		t.Errorf("nil metadata came back as %#v", got.Metadata)
	}
	v.Metadata = map[string]any{}
	v.Version = 3
	_ = c.SetVendor(bg, v)
	if got, _, _ := c.GetVendor(bg, "acme"); got.Metadata == nil || len(got.Metadata) != 0 {
		t.Errorf("empty metadata came back as %#v", got.Metadata)
	}
}

func TestStalenessAndPerTypeTTL(t *testing.T) {
	c, clk := openTest(t, WithVendorTTL(10*time.Minute), WithWorkItemTTL(time.Hour))
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Fatal(err)
	}
	w := testWorkItem(1)
	if err := c.SetWorkItem(bg, w); err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Minute) // exactly the TTL: not yet older than it
	if _, e, _ := c.GetVendor(bg, "acme"); e.Stale {
		t.Error("vendor stale at exactly its TTL")
	}
	clk.Advance(time.Second)
	_, e, err := c.GetVendor(bg, "acme")
	if err != nil || !e.Stale {
		t.Errorf("vendor after TTL: stale=%v err=%v; want stale entry returned", e.Stale, err)
	}
	if _, e, _ := c.GetWorkItem(bg, w.ID); e.Stale {
		t.Error("work item stale before its own TTL")
	}
	if stale, err := c.IsStale(bg, "vendor:acme"); err != nil || !stale {
		t.Errorf("IsStale(vendor) = %v, %v", stale, err)
	}
	if stale, err := c.IsStale(bg, WorkItemKey(w.ID)); err != nil || stale {
		t.Errorf("IsStale(work item) = %v, %v", stale, err)
	}
	s, err := c.Stats(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{TotalEntries: 2, StaleEntries: 1, VendorsCached: 1, WorkItemsCached: 1,
		OldestEntryAge: 10*time.Minute + time.Second, Hits: 2, StaleHits: 1}
	if s != want {
		t.Errorf("Stats = %+v\nwant   %+v", s, want)
	}
	n, err := c.ClearStale(bg)
	if err != nil || n != 1 {
		t.Errorf("ClearStale = %d, %v; want 1", n, err)
	}
	if _, _, err := c.GetVendor(bg, "acme"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("stale vendor survived ClearStale: %v", err)
	}
	clk.Advance(time.Hour)
	if n, _ := c.ClearStale(bg); n != 1 {
		t.Errorf("second ClearStale = %d, want 1", n)
	}
}

func TestIsStaleKeys(t *testing.T) {
	c, _ := openTest(t)
	for _, k := range []string{"", "vendor:", "vendor:Bad", "work_item:nope", "thing:x",
		"work_item:" + uuid.New().String()[:35], "work_item:urn:uuid:" + uuid.New().String()} {
		_, err := c.IsStale(bg, k)
		if !errors.Is(err, ErrInvalidKey) || !errors.Is(err, repository.ErrInvalid) {
			t.Errorf("IsStale(%q) err = %v, want ErrInvalidKey", k, err)
		}
	}
	for _, k := range []string{"vendor:absent", WorkItemKey(uuid.New())} {
		if stale, err := c.IsStale(bg, k); err != nil || !stale {
			t.Errorf("IsStale(%q) = %v, %v; want true (absent is stale)", k, stale, err)
		}
	}
}

func TestClearAll(t *testing.T) {
	c, _ := openTest(t)
	_ = c.SetVendors(bg, []repository.Vendor{testVendor("a", 1), testVendor("b", 1)})
	_ = c.SetWorkItem(bg, testWorkItem(1))
	n, err := c.ClearAll(bg)
	if err != nil || n != 3 {
		t.Fatalf("ClearAll = %d, %v; want 3", n, err)
	}
	if s, _ := c.Stats(bg); s.TotalEntries != 0 || s.OldestEntryAge != 0 {
		t.Errorf("after ClearAll: %+v", s)
	}
}

func TestVersionMonotonic(t *testing.T) {
	c, clk := openTest(t)
	v := testVendor("acme", 5)
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	old := v
	old.Version = 4
	old.Status = repository.VendorBroken
	clk.Advance(time.Minute)
	if err := c.SetVendor(bg, old); err != nil {
		t.Fatal(err)
	}
	got, e, _ := c.GetVendor(bg, "acme")
	if got.Version != 5 || got.Status != repository.VendorOperational || e.Age != time.Minute {
		t.Errorf("older version replaced the entry: v%d %s age %v", got.Version, got.Status, e.Age)
	}
	// Equal version: refreshes cached_at and data, even at the same instant
	// as the previous write (the memo must notice).
	same := v
	same.ExtractorVersion = "9.9.9"
	if err := c.SetVendor(bg, same); err != nil {
		t.Fatal(err)
	}
	got, e, _ = c.GetVendor(bg, "acme")
	if got.ExtractorVersion != "9.9.9" || e.Age != 0 {
		t.Errorf("equal version did not refresh: %s age %v", got.ExtractorVersion, e.Age)
	}
	// A different vendor under the same name (deleted and re-created) wins
	// when it was created later, whatever its version.
	re := testVendor("acme", 1)
	re.ID = uuid.New()
	re.CreatedAt = v.CreatedAt.Add(time.Hour)
	if err := c.SetVendor(bg, re); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := c.GetVendor(bg, "acme"); got.ID != re.ID {
		t.Errorf("re-created vendor did not replace the old one")
	}
	// ... and the old one arriving late does not come back.
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := c.GetVendor(bg, "acme"); got.ID != re.ID {
		t.Errorf("late write of the deleted vendor replaced the re-created one")
	}
}

func TestVersionMonotonicConcurrent(t *testing.T) {
	c, _ := openTest(t)
	w := testWorkItem(1)
	const n = 40
	var wg sync.WaitGroup
	for i := n; i >= 1; i-- { // newest first: every later write is older
		wg.Go(func() {
			x := w
			x.Version = int64(i)
			x.Title = "v" + time.Duration(i).String()
			if err := c.SetWorkItem(bg, x); err != nil {
				t.Error(err)
			}
			if _, _, err := c.GetWorkItem(bg, w.ID); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, _, err := c.GetWorkItem(bg, w.ID)
	if err != nil || got.Version != n {
		t.Errorf("after concurrent writes: v%d, %v; want v%d", got.Version, err, n)
	}
}

func TestSetRejectsBadEntities(t *testing.T) {
	c, _ := openTest(t)
	badName := testVendor("acme", 1)
	badName.Name = "Not Valid"
	noVersion := testVendor("acme", 0)
	zeroID := testWorkItem(1)
	zeroID.ID = uuid.Nil
	badTitle := testWorkItem(1)
	badTitle.Title = " "
	wNoVersion := testWorkItem(0)
	cases := []struct {
		name  string
		field string
		err   error
	}{
		{"vendor name", "Name", c.SetVendor(bg, badName)},
		{"vendor version", "Version", c.SetVendor(bg, noVersion)},
		{"bulk vendor", "Name", c.SetVendors(bg, []repository.Vendor{testVendor("ok", 1), badName})},
		{"work item id", "ID", c.SetWorkItem(bg, zeroID)},
		{"work item title", "Title", c.SetWorkItem(bg, badTitle)},
		{"work item version", "Version", c.SetWorkItem(bg, wNoVersion)},
		{"bulk work item", "ID", c.SetWorkItems(bg, []repository.WorkItem{testWorkItem(1), zeroID})},
	}
	for _, tc := range cases {
		var ve *repository.ValidationError
		if !errors.As(tc.err, &ve) || ve.Field != tc.field {
			t.Errorf("%s: err = %v, want ValidationError on %s", tc.name, tc.err, tc.field)
		}
	}
	if s, _ := c.Stats(bg); s.TotalEntries != 0 {
		t.Errorf("rejected input wrote %d entries", s.TotalEntries)
	}
}

func TestBulkSetManyEntries(t *testing.T) {
	c, _ := openTest(t)
	ws := make([]repository.WorkItem, 2000) // above the parallel-prepare threshold
	for i := range ws {
		ws[i] = testWorkItem(1)
		ws[i].Metadata = map[string]any{"i": float64(i)}
	}
	if err := c.SetWorkItems(bg, ws); err != nil {
		t.Fatal(err)
	}
	ids, err := c.WorkItemIDs(bg)
	if err != nil || len(ids) != len(ws) {
		t.Fatalf("WorkItemIDs: %d, %v", len(ids), err)
	}
	got, _, _ := c.GetWorkItem(bg, ws[1234].ID)
	if got.Metadata["i"] != float64(1234) {
		t.Errorf("entry 1234 = %v", got.Metadata)
	}
	// One bad entry late in a large batch: nothing written.
	ws2 := make([]repository.WorkItem, 2000)
	for i := range ws2 {
		ws2[i] = testWorkItem(1)
	}
	ws2[1999].Status = "nope"
	if err := c.SetWorkItems(bg, ws2); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("bad batch: %v", err)
	}
	if s, _ := c.Stats(bg); s.WorkItemsCached != 2000 {
		t.Errorf("bad batch wrote entries: %d cached", s.WorkItemsCached)
	}
}

func TestDeleteEvicts(t *testing.T) {
	c, _ := openTest(t)
	_ = c.SetVendor(bg, testVendor("acme", 1))
	w := testWorkItem(1)
	_ = c.SetWorkItem(bg, w)
	_, _, _ = c.GetVendor(bg, "acme") // memoize
	if err := c.DeleteVendor(bg, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteWorkItem(bg, w.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetVendor(bg, "acme"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("after DeleteVendor: %v", err)
	}
	if _, _, err := c.GetWorkItem(bg, w.ID); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("after DeleteWorkItem: %v", err)
	}
	if err := c.DeleteVendor(bg, "acme"); err != nil {
		t.Errorf("deleting an absent vendor: %v", err)
	}
	if err := c.DeleteWorkItem(bg, w.ID); err != nil {
		t.Errorf("deleting an absent work item: %v", err)
	}
}

func TestClosed(t *testing.T) {
	c, _ := openTest(t)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	w := testWorkItem(1)
	errs := map[string]error{
		"SetVendor":    c.SetVendor(bg, testVendor("a", 1)),
		"SetVendors":   c.SetVendors(bg, nil),
		"SetWorkItem":  c.SetWorkItem(bg, w),
		"SetWorkItems": c.SetWorkItems(bg, nil),
		"DeleteVendor": c.DeleteVendor(bg, "a"),
		"DeleteWI":     c.DeleteWorkItem(bg, w.ID),
		"VendorDelete": c.Vendors().Delete(bg, "a"),
		"WIDelete":     c.WorkItems().Delete(bg, w.ID),
	}
	_, _, errs["GetVendor"] = c.GetVendor(bg, "a")
	_, _, errs["GetWorkItem"] = c.GetWorkItem(bg, w.ID)
	_, errs["IsStale"] = c.IsStale(bg, "vendor:a")
	_, errs["ClearStale"] = c.ClearStale(bg)
	_, errs["ClearAll"] = c.ClearAll(bg)
	_, errs["Stats"] = c.Stats(bg)
	_, errs["ListVendors"] = c.ListVendors(bg, repository.VendorFilter{})
	_, errs["ListWorkItems"] = c.ListWorkItems(bg, repository.WorkItemFilter{})
	_, errs["VendorNames"] = c.VendorNames(bg)
	_, errs["WorkItemIDs"] = c.WorkItemIDs(bg)
	_, errs["VendorCreate"] = c.Vendors().Create(bg, testVendor("a", 1))
	_, errs["WICreate"] = c.WorkItems().Create(bg, w)
	for op, err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "cache.db")
	c, err := Open(path, WithCleanupInterval(0), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	v := testVendor("acme", 2)
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c2, err := Open(path, WithCleanupInterval(0), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got, _, err := c2.GetVendor(bg, "acme")
	if err != nil || !reflect.DeepEqual(got, v) {
		t.Errorf("after reopen: %+v, %v", got, err)
	}
}

func TestBackgroundCleanupAndNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	clk := newFakeClock()
	c, err := Open(filepath.Join(t.TempDir(), "c.db"), WithClock(clk.Now), WithLogger(discardLogger()),
		WithCleanupInterval(5*time.Millisecond), WithStaleRetention(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Fatal(err)
	}
	_, _, _ = c.GetVendor(bg, "acme")
	clk.Advance(time.Hour) // past TTL (30 min) plus retention (10 min)
	waitFor(t, "background cleanup", func() bool {
		s, err := c.Stats(bg)
		return err == nil && s.TotalEntries == 0
	})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// waitFor polls cond until it holds or a deadline passes: no sleeping as a
// synchronization guess.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The background cleanup keeps stale entries for the retention: they are
// what the fallback layer serves during an outage.
func TestCleanupKeepsStaleEntriesForTheRetention(t *testing.T) {
	clk := newFakeClock()
	c, err := Open(filepath.Join(t.TempDir(), "c.db"), WithClock(clk.Now), WithLogger(discardLogger()),
		WithCleanupInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.StaleRetention() != DefaultStaleRetention {
		t.Fatalf("default retention %v", c.StaleRetention())
	}
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultTTL + time.Hour) // stale, well within the retention
	if n, err := c.clearOlderThan(bg, "test", DefaultStaleRetention); err != nil || n != 0 {
		t.Fatalf("cleanup removed %d entries (%v) within the retention", n, err)
	}
	clk.Advance(DefaultStaleRetention)
	if n, err := c.clearOlderThan(bg, "test", DefaultStaleRetention); err != nil || n != 1 {
		t.Fatalf("cleanup removed %d entries (%v) past the retention, want 1", n, err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "d.db"), WithStaleRetention(-time.Second)); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("negative retention: %v", err)
	}
}
