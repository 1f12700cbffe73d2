//go:build linux

package sqlitecache

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// roChildEnv names the cache file a child process, running as an
// unprivileged user, must read (TestReadOnlyStorageIsReadable).
const roChildEnv = "PGFALLBACK_TEST_RO_CACHE"

// A cache copied to storage this user cannot write — the file 0444 in a
// 0555 directory, both its own — is read by the read-only commands
// (queue list, cache stats): SQLite cannot create the -shm a WAL file
// needs there, and it used to fail with "attempt to write a readonly
// database". Root ignores permission bits, so as root the reading runs in
// a child process as nobody.
func TestReadOnlyStorageIsReadable(t *testing.T) {
	if path := os.Getenv(roChildEnv); path != "" {
		readOnlyStorageChild(t, path)
		return
	}
	dir, err := os.MkdirTemp("", "pgfallback-ro-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Chmod(dir, 0o755)
		_ = os.RemoveAll(dir)
	})
	path := filepath.Join(dir, "cache.db")
	c, err := Open(path, WithCleanupInterval(0), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	v := testVendor("acme", 1)
	if err := c.SetVendor(bg, v); err != nil {
		t.Fatal(err)
	}
	w := repository.Write{ID: uuid.New(), Op: repository.WriteUpdate, Entity: repository.EntityVendor, Vendor: v, BaseVersion: 1}
	if _, err := c.Enqueue(bg, w, Row{}, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + "-shm"); err == nil {
		t.Fatal("Close left a -shm: the test needs the file alone")
	}

	uid := os.Getuid()
	if uid == 0 {
		uid = 65534 // nobody
	}
	for _, p := range []string{path, dir} {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() != 0 {
		readOnlyStorageChild(t, path)
		return
	}

	// The test binary, where nobody may run it.
	binDir, err := os.MkdirTemp("", "pgfallback-ro-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "sqlitecache.test")
	copyFile(t, os.Args[0], bin, 0o755)
	cmd := exec.Command(bin, "-test.run=^TestReadOnlyStorageIsReadable$", "-test.v")
	cmd.Env = append(os.Environ(), roChildEnv+"="+path, "HOME="+dir)
	cmd.Dir = binDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	if err != nil && strings.Contains(err.Error(), "operation not permitted") {
		t.Skipf("cannot run a process as nobody here: %v", err)
	}
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("reading as uid %d: %v\n%s", uid, err, out)
	}
	t.Logf("as uid %d:\n%s", uid, out)
}

func readOnlyStorageChild(t *testing.T, path string) {
	ctx := context.Background()
	if err := syscall.Access(filepath.Dir(path), 2 /* W_OK */); err == nil {
		t.Fatalf("%s is writable by uid %d: the test would prove nothing", filepath.Dir(path), os.Getuid())
	}
	c, err := OpenReadOnly(path, WithLogger(discardLogger()))
	if err != nil {
		t.Fatalf("OpenReadOnly on read-only storage: %v", err)
	}
	defer c.Close()
	if _, err := c.Stats(ctx); err != nil {
		t.Fatalf("Stats: %v", err)
	}
	s, err := c.QueueStats(ctx)
	if err != nil || s.Pending != 1 {
		t.Fatalf("QueueStats: %+v, %v; want the queued write", s, err)
	}
	if ps, err := c.PendingWrites(ctx, 0); err != nil || len(ps) != 1 {
		t.Fatalf("PendingWrites: %d, %v", len(ps), err)
	}
	if v, _, err := c.GetVendor(ctx, "acme"); err != nil || v.Name != "acme" {
		t.Fatalf("GetVendor: %+v, %v", v, err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
