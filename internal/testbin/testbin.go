// Package testbin builds the vxrouter binary for tests that run it as a
// user would (the end-to-end tests, the bench): once per test binary, in a
// temporary directory that goes when the tests end.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds vxrouter when running as root (the only way those tests
// run), sets *path to it, runs the tests and exits. Without root *path
// stays "" and the tests that need it skip.
func Main(m *testing.M, path *string) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vxrouter-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*path = filepath.Join(dir, "vxrouter")
	out, err := exec.Command("go", "build", "-o", *path, "vxrouter").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build vxrouter: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
