//go:build linux

package sqlitecache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// mountTmpfs mounts a tmpfs on a fresh directory for the test, or skips
// the test where mounting is not allowed (not root, no CAP_SYS_ADMIN).
// Permission bits cannot simulate these conditions: root bypasses them.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): %v", err)
	}
	// Registered after TempDir's cleanup, so it runs before the removal.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func remountReadOnly(t *testing.T, dir string) {
	t.Helper()
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
}

// A new cache on a read-only file system: the error says so (it said "no
// such file or directory") and wraps EROFS.
func TestOpenNewFileOnReadOnlyMount(t *testing.T) {
	dir := mountTmpfs(t, "size=1m")
	remountReadOnly(t, dir)
	path := filepath.Join(dir, "cache.db")
	_, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Open: %v, want EROFS", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "cannot create cache file "+path) || !strings.Contains(msg, "read-only") ||
		strings.Contains(msg, "no such file") {
		t.Errorf("message does not say what is wrong: %q", msg)
	}
	t.Log(err)
}

// An existing cache on a read-only file system: Open says it cannot write
// there; OpenReadOnly reads it.
func TestOpenExistingFileOnReadOnlyMount(t *testing.T) {
	dir := mountTmpfs(t, "size=1m")
	path := filepath.Join(dir, "cache.db")
	c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	remountReadOnly(t, dir)

	_, err = Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), "read-only") ||
		strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Open: %v, want a read-only file system error", err)
	}
	t.Log(err)

	r, err := OpenReadOnly(path, WithLogger(discardLogger()))
	if err != nil {
		t.Fatalf("OpenReadOnly on a read-only mount: %v", err)
	}
	defer r.Close()
	if _, _, err := r.GetVendor(bg, "acme"); err != nil {
		t.Errorf("GetVendor: %v", err)
	}
	if s, err := r.Stats(bg); err != nil || s.VendorsCached != 1 {
		t.Errorf("Stats = %+v, %v", s, err)
	}
}

// A full disk: the error says "no space left on device", wraps ENOSPC, and
// the failed Open leaves no file behind (it left a 0-byte cache file).
func TestOpenOnFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "size=64k")
	path := filepath.Join(dir, "sub", "cache.db")
	_, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Open on a full disk: %v, want ENOSPC", err)
	}
	t.Log(err)
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("the failed Open left %v behind", names)
	}
}

// A full disk met when a damaged cache is replaced: the damaged file stays
// quarantined (evidence), the new one is removed again.
func TestOpenOnFullDiskAfterQuarantine(t *testing.T) {
	dir := mountTmpfs(t, "size=64k")
	path := filepath.Join(dir, "cache.db")
	garbage := bytes.Repeat([]byte{0, 0xff}, 2048)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Open: %v, want ENOSPC", err)
	}
	names := dirNames(t, dir)
	if len(names) != 1 || !strings.HasPrefix(names[0], "cache.db.corrupt-") {
		t.Errorf("files left: %v, want only the quarantined one", names)
	}
}
