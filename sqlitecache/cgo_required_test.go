package sqlitecache

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Built without cgo, the package fails, and the first error names the fix
// (it used to be "undefined: sqlite3.ErrNotADB").
func TestBuildWithoutCgoNamesCgo(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command to build with")
		}
	}
	cmd := exec.Command(goBin, "build", "-o", os.DevNull, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatal("the package built without cgo; it cannot work without it")
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 || !strings.Contains(lines[1], "requires_cgo_build_with_CGO_ENABLED_1_and_a_C_compiler") {
		t.Fatalf("the first error does not name cgo:\n%s", out)
	}
}
