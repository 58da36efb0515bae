package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestReadBuildVersion(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "vxrouter", Version: "v0.0.0-20261206023758-e6d9c1d256cf+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "-buildmode", Value: "exe"},
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "e6d9c1d256cf327f085c076be9231b33af320e23"},
			{Key: "vcs.time", Value: "2026-12-06T02:37:58Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, c := range []struct {
		name        string
		bi          *debug.BuildInfo
		line        string
		detailHas   []string
		detailHasnt string
	}{
		{
			name: "built in a checkout",
			bi:   stamped,
			line: "v0.0.0-20261206023758-e6d9c1d256cf+dirty (commit e6d9c1d256cf, 2026-12-06T02:37:58Z, modified)",
			detailHas: []string{
				"vxrouter  v0.0.0-20261206023758-e6d9c1d256cf+dirty\n",
				"commit    e6d9c1d256cf327f085c076be9231b33af320e23\n",
				"time      2026-12-06T02:37:58Z\n",
				"modified  true\n",
				"go        go1.26.8 ",
			},
		},
		{
			// go test, go run, -buildvcs=false, a linked worktree.
			name:      "no VCS stamp",
			bi:        &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "vxrouter", Version: "(devel)"}},
			line:      "(devel) (commit unknown)",
			detailHas: []string{"vxrouter  (devel)\n", "commit    unknown\n", "time      unknown\n", "modified  unknown\n"},
		},
		{
			name:      "no build info at all",
			bi:        nil,
			line:      "(devel) (commit unknown)",
			detailHas: []string{"commit    unknown\n"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := readBuildVersion(c.bi)
			if got := v.String(); got != c.line {
				t.Errorf("String() = %q, want %q", got, c.line)
			}
			d := v.Detail()
			for _, want := range c.detailHas {
				if !strings.Contains(d, want) {
					t.Errorf("Detail() lacks %q:\n%s", want, d)
				}
			}
		})
	}
	clean := *stamped
	clean.Settings = append([]debug.BuildSetting(nil), stamped.Settings...)
	clean.Settings[4].Value = "false"
	if got := readBuildVersion(&clean).String(); strings.Contains(got, "modified") {
		t.Errorf("a clean checkout's version says modified: %q", got)
	}
}

// TestVersionFlagAndCommand: `vxrouter --version`, `-v` and `vxrouter
// version` print this binary's version (a test binary's: no commit).
func TestVersionFlagAndCommand(t *testing.T) {
	want := currentVersion()
	for _, args := range [][]string{{"vxrouter", "--version"}, {"vxrouter", "-v"}} {
		var out bytes.Buffer
		app := newApp()
		app.Writer = &out
		if err := app.Run(args); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if got := out.String(); got != "vxrouter version "+want.String()+"\n" {
			t.Errorf("%q printed %q, want the one-line version %q", args, got, want.String())
		}
	}
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	if err := app.Run([]string{"vxrouter", "version"}); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != want.Detail() || !strings.Contains(got, "commit    ") {
		t.Errorf("version printed %q, want %q", got, want.Detail())
	}
	if err := newApp().Run([]string{"vxrouter", "version", "extra"}); err == nil || !strings.Contains(err.Error(), "no arguments") {
		t.Errorf("version with an argument: err = %v, want one saying it takes none", err)
	}
}

// TestVersionOfACheckoutBuild: a binary built with `go build` in a git
// checkout says which commit it is. The test copies this module into a
// fresh repository, commits it and builds it there with -buildvcs=true (a
// linked worktree, where engineers work, gets no stamp from Go, and the
// tree under test may hold uncommitted changes).
func TestVersionOfACheckoutBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds vxrouter in a fresh git repository")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.CopyFS(src, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	// The copy of a checkout's .git (a file in a worktree) is not ours.
	if err := os.RemoveAll(filepath.Join(src, ".git")); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", src, "-c", "user.name=test", "-c", "user.email=test@example.invalid"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "--quiet")
	git("add", "-A")
	git("commit", "--quiet", "--no-verify", "-m", "version test")
	rev := git("rev-parse", "HEAD")

	bin := filepath.Join(t.TempDir(), "vxrouter")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("vxrouter version: %v\n%s", err, out)
	}
	for _, want := range []string{"commit    " + rev + "\n", "modified  false\n", "vxrouter  v0.0.0-"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("vxrouter version lacks %q:\n%s", want, out)
		}
	}
	short, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(short), "(commit "+rev[:12]+", ") {
		t.Errorf("vxrouter --version = %q (%v), want commit %s", short, err, rev[:12])
	}
}
