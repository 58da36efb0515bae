package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"
)

// buildVersion is what a binary knows of its own build, from the build
// info Go writes into it: the main module's version and, when it was built
// with `go build` in a git checkout, the commit. `go run`, `go test`, a
// build with -buildvcs=false and one in a linked git worktree (Go looks for
// a .git directory, and a worktree has a .git file: golang/go#58218) carry
// no commit; those fields then say "unknown".
type buildVersion struct {
	Module   string // "v1.2.3", a pseudo-version, or "(devel)"
	Revision string // the commit's full hash
	Time     string // the commit's time, RFC 3339
	Modified string // "true" when the checkout had uncommitted changes
	Go       string // the toolchain, "go1.26.8"
	Platform string // "linux/amd64", the running binary's
}

const unknown = "unknown"

// readBuildVersion reads bi, the result of debug.ReadBuildInfo (nil when
// the binary has none).
func readBuildVersion(bi *debug.BuildInfo) buildVersion {
	v := buildVersion{
		Module: "(devel)", Revision: unknown, Time: unknown, Modified: unknown,
		Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
	if bi == nil {
		return v
	}
	if bi.Main.Version != "" {
		v.Module = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value
		}
	}
	return v
}

// currentVersion is this binary's buildVersion.
func currentVersion() buildVersion {
	bi, _ := debug.ReadBuildInfo()
	return readBuildVersion(bi)
}

// String is the one line of `vxrouter --version`:
// "v0.0.0-20261206023758-e6d9c1d256cf (commit e6d9c1d256cf, 2026-12-06T02:37:58Z)",
// with ", modified" when the checkout had uncommitted changes, or
// "(devel) (commit unknown)".
func (v buildVersion) String() string {
	if v.Revision == unknown {
		return v.Module + " (commit unknown)"
	}
	rev := v.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	s := fmt.Sprintf("%s (commit %s, %s", v.Module, rev, v.Time)
	if v.Modified == "true" {
		s += ", modified"
	}
	return s + ")"
}

// Detail is what `vxrouter version` prints: one field a line.
func (v buildVersion) Detail() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vxrouter  %s\n", v.Module)
	fmt.Fprintf(&b, "commit    %s\n", v.Revision)
	fmt.Fprintf(&b, "time      %s\n", v.Time)
	fmt.Fprintf(&b, "modified  %s\n", v.Modified)
	fmt.Fprintf(&b, "go        %s %s\n", v.Go, v.Platform)
	return b.String()
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the commit it was built from and the Go toolchain",
		Description: "version prints the main module's version, the git commit (hash and time, and\n" +
			"whether the checkout had uncommitted changes) and the Go toolchain, all from the\n" +
			"build info Go writes into the binary. A binary built with `go run`, with\n" +
			"-buildvcs=false or in a linked git worktree knows no commit: \"unknown\".\n" +
			"`vxrouter --version` prints the same in one line.",
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return fmt.Errorf("version takes no arguments, got %q", c.Args().Slice())
			}
			_, err := fmt.Fprint(c.App.Writer, currentVersion().Detail())
			return err
		},
	}
}
