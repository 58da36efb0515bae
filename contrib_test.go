package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const unitFile = "contrib/systemd/vxrouter.service"

// TestSystemdUnit: the unit file in contrib/ is one systemd accepts
// without a warning (systemd-analyze verify, with ExecStart pointed at an
// executable that exists), and runs `vxrouter run` as Type=notify.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"\nType=notify\n", "\nExecStart=/usr/local/bin/vxrouter run\n", "\nRestart=on-failure\n", "\nCapabilityBoundingSet=CAP_NET_ADMIN\n", "\nEnvironmentFile=-/etc/vxrouter/vxrouter.env\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q", unitFile, strings.TrimSpace(want))
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze (Debian package systemd): the unit file is not verified")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vxrouter.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/vxrouter", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
}

// TestSystemdEnvFile: every VXROUTER_ variable the example environment
// file sets or shows is one `vxrouter run` reads.
func TestSystemdEnvFile(t *testing.T) {
	known := map[string]bool{}
	for _, f := range runCommand().Flags {
		if ev, ok := f.(interface{ GetEnvVars() []string }); ok {
			for _, v := range ev.GetEnvVars() {
				known[v] = true
			}
		}
	}
	f, err := os.Open("contrib/systemd/vxrouter.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	setting := regexp.MustCompile(`^#?(VXROUTER_[A-Z0-9_]+)=`)
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		m := setting.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		n++
		if !known[m[1]] {
			t.Errorf("vxrouter.env names %s, which `vxrouter run` does not read", m[1])
		}
	}
	if n < 5 {
		t.Errorf("vxrouter.env shows %d settings, want the common ones", n)
	}
}
