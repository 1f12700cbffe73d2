//go:build linux

package sqlitecache

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/uuid"
)

// A write queued on a full disk fails with the cause, and nothing is left
// half-written: no queued write without its entry, nor the reverse. Once
// there is room again, queueing works.
func TestEnqueueOnFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "size=2m")
	path := filepath.Join(dir, "cache.db")
	c, err := Open(path, WithCleanupInterval(0), WithFileCheckInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v := testVendor("acme", 1)
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	// Fill the file system.
	filler, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := filler.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	filler.Close()

	// Random text does not compress: the entry needs new pages.
	big := make([]byte, 150<<10)
	rand.Read(big)
	v.Metadata = map[string]any{"blob": hex.EncodeToString(big)}
	w, after := vendorUpdate(v, 1)
	_, err = c.Enqueue(bg, w, after, 0)
	if osCause(err) != syscall.ENOSPC {
		t.Fatalf("Enqueue on a full disk: %v, want the disk-full cause", err)
	}
	t.Log(err)
	if n := pendingCount(t, c); n != 0 {
		t.Fatalf("%d writes queued by a failed Enqueue", n)
	}
	wantVendor(t, c, "acme", 1, false)

	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	w.ID = uuid.New()
	if _, err := c.Enqueue(bg, w, after, 0); err != nil {
		t.Fatalf("Enqueue with room again: %v", err)
	}
	wantVendor(t, c, "acme", 2, true)
}
