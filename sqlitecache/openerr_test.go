package sqlitecache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A parent that is a regular file (ENOTDIR, which root cannot bypass):
// the error names the directory and the cause.
func TestOpenParentIsAFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(filepath.Join(file, "sub", "cache.db"), WithCleanupInterval(0), WithLogger(discardLogger()))
	if !errors.Is(err, syscall.ENOTDIR) || !strings.Contains(err.Error(), "cannot create cache directory") ||
		!strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Open: %v", err)
	}
	_, err = Open(filepath.Join(file, "cache.db"), WithCleanupInterval(0), WithLogger(discardLogger()))
	if !errors.Is(err, syscall.ENOTDIR) || !strings.Contains(err.Error(), "cannot") {
		t.Fatalf("Open: %v", err)
	}
	t.Log(err)
}
