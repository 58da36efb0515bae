// Package testbin builds the vxrouter binary for tests that run it as a
// user would (the end-to-end tests, the bench): once per test binary, in a
// temporary directory that goes when the tests end.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"vxrouter/internal/nettest"
)

// Build is a nettest.Main setup that builds vxrouter and sets *path to
// it; it runs only as root (the only way those tests run), so without
// root *path stays "" and the tests that need it skip. The directory is
// named after the run (nettest.Base), so every process started from it
// carries the run's base in its command line, and a sweep after a killed
// run finds and kills it, and removes the directory.
func Build(path *string) nettest.Setup {
	return func() (func(), error) {
		dir, err := os.MkdirTemp("", "vxrouter-test-bin-"+nettest.Base()+"-")
		if err != nil {
			return nil, err
		}
		bin := filepath.Join(dir, "vxrouter")
		if out, err := exec.Command("go", "build", "-o", bin, "vxrouter").CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("build vxrouter: %w\n%s", err, out)
		}
		*path = bin
		return func() { os.RemoveAll(dir) }, nil
	}
}
