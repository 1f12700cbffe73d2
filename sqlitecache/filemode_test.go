package sqlitecache

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pgfallback/pgfallback/repository"
)

// modeOf returns the permission bits of path.
func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return fi.Mode().Perm()
}

// openWriteKeepOpen opens a cache at path, writes an entry (so SQLite has
// created the -wal and -shm), and leaves it open until the test ends.
func openWriteKeepOpen(t *testing.T, path string, opts ...Option) *Cache {
	t.Helper()
	c, err := Open(path, append([]Option{WithCleanupInterval(0), WithLogger(discardLogger())}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.SetVendor(bg, testVendor("acme", 1)); err != nil {
		t.Fatal(err)
	}
	return c
}

// withUmask runs the test under umask m (process-wide; these tests do not
// run in parallel).
func withUmask(t *testing.T, m int) {
	old := syscall.Umask(m)
	t.Cleanup(func() { syscall.Umask(old) })
}

// The cache holds business data: by default only its owner may read it,
// whatever the umask.
func TestFileModesDefault(t *testing.T) {
	withUmask(t, 0o022)
	dir := filepath.Join(t.TempDir(), "cache", "sub")
	path := filepath.Join(dir, "cache.db")
	openWriteKeepOpen(t, path)
	for p, want := range map[string]os.FileMode{
		filepath.Dir(dir): 0o700, dir: 0o700,
		path: 0o600, path + "-wal": 0o600, path + "-shm": 0o600,
	} {
		if got := modeOf(t, p); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
}

// WithFileMode grants a group access, exactly as asked: a umask must not
// take group write away again.
func TestFileModesShared(t *testing.T) {
	withUmask(t, 0o077)
	dir := filepath.Join(t.TempDir(), "shared")
	path := filepath.Join(dir, "cache.db")
	openWriteKeepOpen(t, path, WithFileMode(0o660))
	for p, want := range map[string]os.FileMode{
		dir: 0o770, path: 0o660, path + "-wal": 0o660, path + "-shm": 0o660,
	} {
		if got := modeOf(t, p); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
}

// Open does not chmod what it did not create: an operator's choice stays.
func TestFileModesExistingKept(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cache.db")
	c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	openWriteKeepOpen(t, path)
	if got := modeOf(t, dir); got != 0o755 {
		t.Errorf("existing directory: mode %v, want 0755", got)
	}
	if got := modeOf(t, path); got != 0o640 {
		t.Errorf("existing file: mode %v, want 0640", got)
	}
	if got := modeOf(t, path+"-wal"); got != 0o640 {
		t.Errorf("-wal of an existing file: mode %v, want the file's 0640", got)
	}
}

func TestFileModeInvalid(t *testing.T) {
	dir := t.TempDir()
	for _, m := range []os.FileMode{0o400, 0o200, 0o1600, os.ModeDir | 0o600} {
		_, err := Open(filepath.Join(dir, "x.db"), WithFileMode(m), WithCleanupInterval(0))
		var ve *repository.ValidationError
		if !errors.Is(err, repository.ErrInvalid) || !errors.As(err, &ve) || ve.Field != "FileMode" {
			t.Errorf("WithFileMode(%v): %v, want ErrInvalid naming FileMode", m, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a rejected Open created the file: %v", err)
	}
}
