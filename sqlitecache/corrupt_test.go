package sqlitecache

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

// Garbage over every page after the first of a real cache: page 1 (header
// and schema) is intact, the tables are not. Open used to fail after 9.3 s
// with "table goose_db_version already exists" and leave the file in
// place, so every restart failed the same way.
func TestCorruptPagesBehindValidHeader(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache.db")
	c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	vs := make([]repository.Vendor, 300)
	for i := range vs {
		vs[i] = testVendor("v"+itoa(i), 1)
	}
	if err := c.SetVendors(bg, vs); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 100)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	pageSize := int64(binary.BigEndian.Uint16(hdr[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	fi, _ := f.Stat()
	if fi.Size() < 10*pageSize {
		t.Fatalf("cache file is only %d bytes", fi.Size())
	}
	garbage := make([]byte, fi.Size()-pageSize)
	_, _ = rand.Read(garbage)
	if _, err := f.WriteAt(garbage, pageSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	damaged, _ := os.ReadFile(path)

	var logs bytes.Buffer
	start := time.Now()
	c, err = Open(path, WithCleanupInterval(0), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	took := time.Since(start)
	t.Logf("Open took %v", took)
	if err != nil {
		t.Fatalf("Open on a cache with corrupt pages: %v", err)
	}
	defer c.Close()
	if took > 2*time.Second { // a hang guard only; it takes milliseconds
		t.Errorf("Open took %v", took)
	}
	if s, err := c.Stats(bg); err != nil || s.TotalEntries != 0 {
		t.Errorf("fresh cache: %+v, %v", s, err)
	}
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Errorf("fresh cache not writable: %v", err)
	}
	if _, _, err := c.GetVendor(bg, "acme"); err != nil {
		t.Errorf("fresh cache not readable: %v", err)
	}
	matches, _ := filepath.Glob(path + ".corrupt-*")
	if len(matches) != 1 {
		t.Fatalf("quarantined files: %v", matches)
	}
	if got, _ := os.ReadFile(matches[0]); !bytes.Equal(got, damaged) {
		t.Error("the quarantined file is not the damaged one")
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), matches[0]) {
		t.Errorf("quarantine not logged: %s", logs.String())
	}
}
