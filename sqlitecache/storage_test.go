package sqlitecache

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pgfallback/pgfallback/repository"
)

func storedEncoding(t *testing.T, c *Cache, name string) int {
	t.Helper()
	var enc int
	if err := c.h.Load().r.QueryRow(`SELECT encoding FROM cached_vendors WHERE name = ?`, name).Scan(&enc); err != nil {
		t.Fatal(err)
	}
	return enc
}

func TestCompressionAroundThreshold(t *testing.T) {
	v := testVendor("acme", 1)
	v.Metadata["long"] = strings.Repeat("compressible text ", 300)
	raw, err := encodeVendor(v)
	if err != nil {
		t.Fatal(err)
	}
	n := len(raw)
	for _, tc := range []struct {
		threshold int
		want      int
	}{
		{n + 1, encBinary},
		{n, encBinary}, // at the threshold: not above it
		{n - 1, encBinaryZstd},
		{0, encBinary}, // disabled
	} {
		c, _ := openTest(t, WithCompressionThreshold(tc.threshold))
		if err := c.SetVendor(bg, v); err != nil {
			t.Fatal(err)
		}
		if got := storedEncoding(t, c, "acme"); got != tc.want {
			t.Errorf("threshold %d (entry %d bytes): encoding %d, want %d", tc.threshold, n, got, tc.want)
		}
		got, _, err := c.GetVendor(bg, "acme")
		if err != nil || !reflect.DeepEqual(got, v) {
			t.Errorf("threshold %d: round trip failed: %v", tc.threshold, err)
		}
	}
	// Incompressible data above the threshold is stored raw.
	c, _ := openTest(t, WithCompressionThreshold(16))
	w := testVendor("random", 1)
	w.Metadata = map[string]any{"k": "7fQ2"}
	if err := c.SetVendor(bg, w); err != nil {
		t.Fatal(err)
	}
	if got := storedEncoding(t, c, "random"); got != encBinary {
		t.Errorf("incompressible entry stored with encoding %d", got)
	}
}

func TestTwoCachesOnOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	clk := newFakeClock()
	open := func() *Cache {
		c, err := Open(path, WithClock(clk.Now), WithCleanupInterval(0), WithLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := open(), open()
	v := testVendor("acme", 1)
	if err := a.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	if got, _, err := b.GetVendor(bg, "acme"); err != nil || got.Version != 1 {
		t.Fatalf("b reads a's write: %+v, %v", got, err)
	}
	// b has memoized v1; a rewrites the same version with other data at the
	// same instant: b must see it.
	v.ExtractorVersion = "3.0.0"
	if err := a.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := b.GetVendor(bg, "acme"); got.ExtractorVersion != "3.0.0" {
		t.Errorf("b served its memo over a's newer write: %q", got.ExtractorVersion)
	}
	if err := a.DeleteVendor(bg, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.GetVendor(bg, "acme"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("b after a's delete: %v", err)
	}
	// Concurrent writers through both handles: no "database is locked".
	var wg sync.WaitGroup
	for i := range 8 {
		c := a
		if i%2 == 1 {
			c = b
		}
		wg.Go(func() {
			for j := range 25 {
				w := testWorkItem(int64(j + 1))
				if err := c.SetWorkItem(bg, w); err != nil {
					t.Error(err)
					return
				}
				if _, err := c.ListVendors(bg, repository.VendorFilter{}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if s, _ := b.Stats(bg); s.WorkItemsCached != 200 {
		t.Errorf("work items cached = %d, want 200", s.WorkItemsCached)
	}
}

func TestCorruptFileIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache.db")
	// Binary, as a damaged cache is: a text file is refused instead (see
	// TestOpenRefusesTextFile).
	garbage := bytes.Repeat([]byte("this is not a sqlite database.\x00\xff "), 200)
	if err := os.WriteFile(path, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"-wal", []byte("junk wal"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	clk := newFakeClock()
	c, err := Open(path, WithClock(clk.Now), WithCleanupInterval(0),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatalf("Open on a corrupt file: %v", err)
	}
	defer c.Close()
	if s, err := c.Stats(bg); err != nil || s.TotalEntries != 0 {
		t.Errorf("fresh cache: %+v, %v", s, err)
	}
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Errorf("fresh cache not writable: %v", err)
	}
	moved := path + ".corrupt-" + clk.Now().UTC().Format("20060102T150405.000000000Z")
	if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, garbage) {
		t.Errorf("quarantined file %s: %v", moved, err)
	}
	if _, err := os.Stat(moved + "-wal"); err != nil {
		t.Errorf("quarantined wal: %v", err)
	}
	if !strings.Contains(logs.String(), "corrupt") || !strings.Contains(logs.String(), moved) {
		t.Errorf("log does not report the quarantine: %s", logs.String())
	}
}

// A file with SQLite's header but garbage after it gets past the header
// check; SQLite's own error must trigger the quarantine.
func TestCorruptFileWithValidHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	data := append([]byte("SQLite format 3\x00"), bytes.Repeat([]byte{0xA5}, 8192)...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Errorf("fresh cache not writable: %v", err)
	}
	matches, _ := filepath.Glob(path + ".corrupt-*")
	if len(matches) != 1 {
		t.Errorf("quarantined files: %v", matches)
	}
}

func TestCorruptAndLegacyEntries(t *testing.T) {
	c, _ := openTest(t)
	// A row in the original implementation's JSON format is readable.
	legacy := `{"id":"0195f6d2-0000-7000-8000-000000000001","name":"legacy","status":"operational",
		"version":4,"extractor_version":"1.0.0","metadata":{"a":1},
		"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","created_by":"py"}`
	now := toSec(c.cfg.clock())
	if _, err := c.h.Load().w.Exec(`INSERT INTO cached_vendors (name, data, cached_at) VALUES ('legacy', ?, ?)`, legacy, now); err != nil {
		t.Fatal(err)
	}
	got, _, err := c.GetVendor(bg, "legacy")
	if err != nil || got.Version != 4 || got.Metadata["a"] != float64(1) || got.CreatedBy != "py" {
		t.Errorf("legacy entry = %+v, %v", got, err)
	}
	// Garbage in a row is a miss (with ErrCorruptEntry), never a failure.
	if _, err := c.h.Load().w.Exec(`INSERT INTO cached_vendors (name, data, cached_at, encoding, rev) VALUES ('broken', x'00ff', ?, 1, 5)`, now); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.GetVendor(bg, "broken")
	if !errors.Is(err, repository.ErrNotFound) || !errors.Is(err, ErrCorruptEntry) {
		t.Errorf("corrupt entry: %v", err)
	}
	list, err := c.ListVendors(bg, repository.VendorFilter{})
	if err != nil || len(list) != 1 || list[0].Name != "legacy" {
		t.Errorf("List with a corrupt entry = %v, %v", list, err)
	}
	// An entry whose data names a different vendor is corrupt too.
	if _, err := c.h.Load().w.Exec(`UPDATE cached_vendors SET data = (SELECT data FROM cached_vendors WHERE name = 'legacy'), encoding = 0 WHERE name = 'broken'`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetVendor(bg, "broken"); !errors.Is(err, ErrCorruptEntry) {
		t.Errorf("misplaced entry: %v", err)
	}
}

func TestFailedWriteLeavesEarlierEntriesReadable(t *testing.T) {
	c, _ := openTest(t)
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Fatal(err)
	}
	// Simulate a full disk: cap the file at its current size on the single
	// writer connection.
	var pages int
	if err := c.h.Load().w.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := c.h.Load().w.Exec(`PRAGMA max_page_count = ` + itoa(pages)); err != nil {
		t.Fatal(err)
	}
	big := make([]repository.Vendor, 200)
	for i := range big {
		big[i] = testVendor("filler-"+itoa(i), 1)
		big[i].Metadata["pad"] = strings.Repeat(itoa(i), 2000)
	}
	err := c.SetVendors(bg, big)
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("write into a full database: %v", err)
	}
	if _, _, err := c.GetVendor(bg, "acme"); err != nil {
		t.Errorf("earlier entry unreadable after a failed write: %v", err)
	}
	if _, _, err := c.GetVendor(bg, "filler-0"); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("failed bulk write was partly applied: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestMemoSizeOfCompressedEntry(t *testing.T) {
	raw := bytes.Repeat([]byte("abcdefgh"), 4096)
	z, enc := compress(raw, 1)
	if enc != encBinaryZstd {
		t.Fatal("not compressed")
	}
	if got := memoSize(int64(enc), z); got < 2*int64(len(raw)) {
		t.Errorf("memoSize of %d bytes compressed to %d = %d", len(raw), len(z), got)
	}
}
