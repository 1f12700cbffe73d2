// Package readmecheck keeps the README's wiring snippet true: it is the
// program in examples/wiring, byte for byte, and that program builds and
// vets in a module of its own against this repository.
package readmecheck

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	beginMarker = "<!-- wiring:begin -->"
	endMarker   = "<!-- wiring:end -->"
	root        = "../.." // this package's directory is internal/readmecheck
)

// TestREADMEWiringSnippet fails when the Go code between the wiring markers
// in README.md differs from examples/wiring/main.go, or when that module does
// not build or vet.
func TestREADMEWiringSnippet(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	snippet, err := wiringSnippet(string(readme))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	moduleDir := filepath.Join(root, "examples", "wiring")
	program, err := os.ReadFile(filepath.Join(moduleDir, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if d := firstDifference(snippet, string(program)); d != "" {
		t.Fatalf("README.md's wiring snippet differs from examples/wiring/main.go (paste the file between the markers): %s", d)
	}

	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build examples/wiring: %v", err)
	}
	flags, err := exec.Command(goBin, "env", "GOFLAGS").Output()
	if err != nil {
		t.Fatalf("go env GOFLAGS: %v", err)
	}
	env := append(os.Environ(),
		"GOFLAGS="+strings.TrimSpace(string(flags)+" -mod=readonly"), // a stale go.mod there fails, not rewritten
		"GOWORK=off",
	)
	// -o: a build of one main package would leave its binary in the tree.
	for _, args := range [][]string{{"build", "-o", os.DevNull, "./..."}, {"vet", "./..."}} {
		cmd := exec.Command(goBin, args...)
		cmd.Dir = moduleDir
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("go %s in examples/wiring: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// wiringSnippet returns the content of the ```go fence between the wiring
// markers, each of which must appear once.
func wiringSnippet(readme string) (string, error) {
	if n := strings.Count(readme, beginMarker); n != 1 {
		return "", fmt.Errorf("%s appears %d times, want 1", beginMarker, n)
	}
	if n := strings.Count(readme, endMarker); n != 1 {
		return "", fmt.Errorf("%s appears %d times, want 1", endMarker, n)
	}
	_, after, _ := strings.Cut(readme, beginMarker)
	block, _, found := strings.Cut(after, endMarker)
	if !found {
		return "", fmt.Errorf("%s comes before %s", endMarker, beginMarker)
	}
	block = strings.TrimLeft(block, "\n")
	code, ok := strings.CutPrefix(block, "```go\n")
	if !ok {
		return "", fmt.Errorf("no ```go fence right after %s", beginMarker)
	}
	i := strings.LastIndex(code, "\n```")
	if i < 0 || strings.TrimSpace(code[i+len("\n```"):]) != "" {
		return "", fmt.Errorf("no closing ``` right before %s", endMarker)
	}
	return code[:i+1], nil
}

// firstDifference describes the first line where got and want differ, or
// returns "" when they are equal.
func firstDifference(got, want string) string {
	if got == want {
		return ""
	}
	g := strings.SplitAfter(got, "\n")
	w := strings.SplitAfter(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl []byte
		if i < len(g) {
			gl = []byte(g[i])
		}
		if i < len(w) {
			wl = []byte(w[i])
		}
		if !bytes.Equal(gl, wl) {
			return fmt.Sprintf("line %d of the snippet:\n README: %q\n main.go: %q", i+1, gl, wl)
		}
	}
	return "they differ" // unreachable: equal lines make equal strings
}
